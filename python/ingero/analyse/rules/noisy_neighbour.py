"""Noisy neighbour: the GPU workload's cgroup is kept off-CPU far longer than its peers."""

from __future__ import annotations

import polars as pl

from ingero import codes
from ingero.analyse.chain import CausalChain, TimelineEvent, chain_id
from ingero.analyse.gotime import go_duration

_MAX_CONTENTION_NS = 1_000_000_000  # longer than a CFS slice: a voluntary sleep, not contention


def _p99(durations: list[int]) -> int:
    # The original's durationPercentile: index round(0.99 n) - 1.
    ordered = sorted(durations)
    idx = min(max(int(0.99 * len(ordered) + 0.5) - 1, 0), len(ordered) - 1)
    return ordered[idx]


def noisy_neighbour_chain(
    context: pl.DataFrame, target_cgroups: set[int], node: str, at_ns: int
) -> CausalChain | None:
    if not target_cgroups:
        return None
    sched = codes.op_named("sched_switch")
    off = (
        context.filter(
            (pl.col("source") == sched.source)
            & (pl.col("op") == sched.id)
            & (pl.col("cgroup_id") > 1)
            & (pl.col("duration") > 0)
        )
        .group_by("cgroup_id")
        .agg(pl.col("duration").clip(upper_bound=_MAX_CONTENTION_NS).alias("off"), pl.len().alias("n"))
        .filter(pl.col("n") >= 10)
    )
    targets: list[tuple[int, int, int]] = []
    peers: list[tuple[int, int, int]] = []
    for cgroup, durations, n in off.iter_rows():
        (targets if cgroup in target_cgroups else peers).append((int(cgroup), _p99(durations), int(n)))
    if not targets or not peers:
        return None
    peer_p99s = sorted(p for _, p, _ in peers)
    median = peer_p99s[len(peer_p99s) // 2]
    if median == 0:
        return None
    for cgroup, p99, n in sorted(targets):
        ratio = p99 / median
        if ratio < 2.0:
            continue
        severity = "HIGH" if ratio > 5.0 else "MEDIUM"
        return CausalChain(
            id=chain_id(node, f"noisy-neighbor-{severity.lower()}"),
            severity=severity,
            summary=(
                f"noisy neighbor: target cgroup off-CPU p99={go_duration(p99)} "
                f"({ratio:.1f}x peer median {go_duration(median)})"
            ),
            root_cause="another process/cgroup is consuming CPU, starving the GPU workload",
            timeline=[
                TimelineEvent(
                    "HOST",
                    "sched_switch",
                    f"target cgroup {cgroup}: p99 off-CPU={go_duration(p99)} ({n} events)",
                ),
                TimelineEvent(
                    "HOST",
                    "noisy_neighbor",
                    f"peer cgroups median p99={go_duration(median)} ({ratio:.1f}x lower)",
                ),
                TimelineEvent("CUDA", "all", "GPU operations delayed by CPU scheduling starvation"),
            ],
            explanation=(
                f"The target workload's cgroup (ID {cgroup}) has off-CPU p99={go_duration(p99)}, which is "
                f"{ratio:.1f}x higher than the peer median of {go_duration(median)}. This means "
                "another process "
                "or container on this machine is consuming CPU cycles, causing the GPU workload "
                "to be preempted "
                "more than its neighbors."
            ),
            recommendations=[
                "Identify the CPU-heavy neighbor process (top, htop, or 'ps aux --sort=-pcpu')",
                "Pin GPU workload to dedicated CPU cores with taskset or cpuset cgroup",
                "Consider CPU resource limits (cgroup v2 cpu.max) for non-GPU workloads",
            ],
            detected_at=at_ns,
            node=node,
        )
    return None
