"""Adaptive sampling: record fewer calls while the ring buffers overflow."""

from __future__ import annotations

WINDOW_SECONDS = 5.0
# A window with more drops than this counts as overloaded.
OVERLOAD_DROPS = 1000
# Step up after this many overloaded windows in a row...
OVERLOADED_WINDOWS = 2
# ...and back to every call after this many windows without a drop.
QUIET_WINDOWS = 6
RATES = (1, 10, 100)


class AdaptiveSampling:
    """1 -> 10 -> 100 under sustained drops, back to 1 after 30 quiet seconds
    (the original Ingero's policy). Only the kernel counts sampled-out calls, so
    accounting stays exact: received + dropped + sampled_out = calls made."""

    def __init__(self, start: float) -> None:
        self.rate = 1
        self._window_end = start + WINDOW_SECONDS
        self._dropped_at_window_start = 0
        self._overloaded = 0
        self._quiet = 0

    def observe(self, dropped_total: int, now: float) -> int | None:
        """Feeds the running drop count; returns the new rate when it changes."""
        if now < self._window_end:
            return None
        dropped = dropped_total - self._dropped_at_window_start
        self._dropped_at_window_start = dropped_total
        self._window_end = now + WINDOW_SECONDS
        self._overloaded = self._overloaded + 1 if dropped > OVERLOAD_DROPS else 0
        self._quiet = self._quiet + 1 if dropped == 0 else 0
        step = RATES.index(self.rate)
        if self._overloaded >= OVERLOADED_WINDOWS and step + 1 < len(RATES):
            self.rate, self._overloaded = RATES[step + 1], 0
            return self.rate
        if self._quiet >= QUIET_WINDOWS and self.rate != 1:
            self.rate, self._quiet = 1, 0
            return self.rate
        return None
