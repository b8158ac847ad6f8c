"""What every rule is given: the node, the host's worst state, and the op being judged."""

from __future__ import annotations

from dataclasses import dataclass

from ingero.analyse.chain import TimelineEvent
from ingero.analyse.evidence import Evidence
from ingero.analyse.gotime import go_round_ms
from ingero.analyse.system import SystemContext

# The original's thresholds (internal/correlate): a p99/p50 of 3 is a tail, five
# context switches are preemption, and a rate under 60% of its peak is a drop.
TAIL_RATIO = 3.0
SCHED_SWITCH_THRESHOLD = 5
MIN_CALLS = 10
DROP_RATIO = 0.6
MIN_PEAK_RATE = 10.0
BASELINE_SNAPSHOTS = 5
GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class OpView:
    """One CUDA/driver op as a snapshot saw it."""

    name: str
    layer: str  # "CUDA" or "DRIVER"
    p50_ns: int
    p99_ns: int
    count: int


@dataclass(frozen=True)
class Context:
    node: str
    system: SystemContext | None
    evidence: Evidence
    at_ns: int


def add_scheduler_cause(
    ev: Evidence, timeline: list[TimelineEvent], causes: list[str], fixes: list[str]
) -> None:
    """The scheduler part of a chain, worded as the original words it (tail latency and throughput drop)."""
    timeline.append(
        TimelineEvent(
            "HOST",
            "sched_switch",
            f"{ev.sched_count} context switches ({go_round_ms(ev.off_cpu_ns)} off-CPU)",
            ev.off_cpu_ns // 1000,
        )
    )
    causes.append(f"{ev.sched_count} sched_switch events")
    fixes += [
        "Pin training process to dedicated cores with taskset",
        "Add nice -n 19 to background jobs (logrotate, cron)",
    ]
