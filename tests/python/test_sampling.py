"""The adaptive sampling policy, driven by drop counts as the trace loop feeds them."""

from __future__ import annotations

from ingero.capture.sampling import OVERLOAD_DROPS, QUIET_WINDOWS, WINDOW_SECONDS, AdaptiveSampling


def feed(policy: AdaptiveSampling, drops_per_window: list[int], start: float = 0.0) -> list[int | None]:
    """Feeds one observation per window; returns what each one changed."""
    changes, total = [], 0
    for i, drops in enumerate(drops_per_window, start=1):
        total += drops
        changes.append(policy.observe(total, start + i * WINDOW_SECONDS))
    return changes


def test_sustained_drops_step_up_to_100_and_no_further() -> None:
    policy = AdaptiveSampling(0.0)
    heavy = OVERLOAD_DROPS + 1
    assert feed(policy, [heavy] * 6) == [None, 10, None, 100, None, None]
    assert policy.rate == 100


def test_one_overloaded_window_is_not_enough() -> None:
    policy = AdaptiveSampling(0.0)
    assert feed(policy, [OVERLOAD_DROPS + 1, 0, OVERLOAD_DROPS + 1, 5]) == [None] * 4
    assert policy.rate == 1


def test_back_to_every_call_only_after_quiet_windows() -> None:
    policy = AdaptiveSampling(0.0)
    feed(policy, [OVERLOAD_DROPS + 1] * 2)
    assert policy.rate == 10
    changes = feed(policy, [0] * (QUIET_WINDOWS - 1) + [3] + [0] * QUIET_WINDOWS, start=2 * WINDOW_SECONDS)
    assert changes[:QUIET_WINDOWS] == [None] * QUIET_WINDOWS  # a drop resets the quiet streak
    assert changes[-1] == 1
    assert policy.rate == 1


def test_observations_inside_a_window_change_nothing() -> None:
    policy = AdaptiveSampling(0.0)
    assert policy.observe(10**9, WINDOW_SECONDS / 2) is None
    assert policy.rate == 1
