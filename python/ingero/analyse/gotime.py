"""Durations written the way the original's texts write them (Go's time.Duration)."""

from __future__ import annotations

_UNITS = ((1_000_000_000, "s", 9), (1_000_000, "ms", 6), (1_000, "µs", 3))


def _decimal(ns: int, unit: int, digits: int) -> str:
    whole, frac = divmod(ns, unit)
    tail = str(frac).rjust(digits, "0").rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def go_duration(ns: int) -> str:
    """``25.799899ms``, ``714.336µs``, ``1m2.5s``: Go's Duration.String()."""
    ns = int(ns)
    if ns == 0:
        return "0s"
    if ns < 0:
        return "-" + go_duration(-ns)
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 60_000_000_000:
        for unit, suffix, digits in _UNITS:
            if ns >= unit:
                return _decimal(ns, unit, digits) + suffix
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{minutes}m{_decimal(rest, 1_000_000_000, 9)}s"
    return f"{hours}h{text}" if hours else text


def round_to(ns: int, unit_ns: int) -> int:
    """Go's Duration.Round: halves away from zero."""
    return (int(ns) + unit_ns // 2) // unit_ns * unit_ns


def go_round_ms(ns: int) -> str:
    return go_duration(round_to(ns, 1_000_000))


def go_round_us(ns: int) -> str:
    return go_duration(round_to(ns, 1_000))
