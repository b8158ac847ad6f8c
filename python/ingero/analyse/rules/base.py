"""What every rule is given: the node, the host's worst state, and the op being judged."""

from __future__ import annotations

from dataclasses import dataclass

from ingero.analyse.evidence import Evidence
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
