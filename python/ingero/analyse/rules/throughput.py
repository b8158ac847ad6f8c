"""Throughput drop: a CUDA/driver op's call rate falls under 60% of its peak, with host evidence."""

from __future__ import annotations

from ingero.analyse.chain import CausalChain, TimelineEvent, chain_id, dedup
from ingero.analyse.gotime import go_duration, go_round_ms
from ingero.analyse.rules.base import SCHED_SWITCH_THRESHOLD, Context, OpView, add_scheduler_cause


def has_evidence(ctx: Context) -> bool:
    ev = ctx.evidence
    return ev.sched_count >= SCHED_SWITCH_THRESHOLD or ev.io_count >= 50 or ev.tcp_retransmits > 5


def drop_chain(op: OpView, peak: float, current: float, ctx: Context) -> CausalChain | None:
    drop = (1.0 - current / peak) * 100
    ev, sys = ctx.evidence, ctx.system
    timeline: list[TimelineEvent] = []
    causes: list[str] = []
    fixes: list[str] = []
    severity = "HIGH" if drop > 60 else "MEDIUM"
    if sys is not None:
        if sys.cpu_pct > 90:
            timeline.append(TimelineEvent("SYSTEM", "cpu", f"CPU {sys.cpu_pct:.0f}%"))
            causes.append("high CPU utilization")
            severity = "HIGH"
        if sys.mem_pct > 95:
            timeline.append(
                TimelineEvent(
                    "SYSTEM", "memory", f"Memory {sys.mem_pct:.0f}% used ({sys.mem_avail_mb} MB available)"
                )
            )
            causes.append("memory pressure")
    if ev.sched_count >= SCHED_SWITCH_THRESHOLD:
        add_scheduler_cause(ev, timeline, causes, fixes)
    if ev.io_count >= 50:
        timeline.append(
            TimelineEvent("INFRA", "block_io", f"{ev.io_count} I/O ops ({go_round_ms(ev.io_total_ns)} total)")
        )
        causes.append(f"{ev.io_count} block I/O operations")
    if ev.tcp_retransmits > 5:
        timeline.append(TimelineEvent("NET", "tcp_retransmit", f"{ev.tcp_retransmits} retransmits"))
        causes.append(f"{ev.tcp_retransmits} TCP retransmits")
        fixes.append("Check network health: switch errors, NIC stats (ethtool -S), MTU mismatches")
    if not causes:
        return None
    timeline.append(
        TimelineEvent(op.layer, op.name, f"throughput dropped {drop:.0f}% ({peak:.0f} → {current:.0f} ops/s)")
    )
    cause = " + ".join(causes)
    text = (
        f"{op.name} throughput dropped {drop:.0f}% from {peak:.0f} to {current:.0f} ops/s. "
        f"Per-call latency (p50={go_duration(op.p50_ns)}, p99={go_duration(op.p99_ns)}) remained low, "
        f"but aggregate throughput declined due to {' and '.join(causes)}. "
    )
    if sys is not None and sys.cpu_pct > 90:
        text += (
            f"The system CPU is at {sys.cpu_pct:.0f}%, causing the host-side CUDA dispatch path "
            "to be delayed between calls. "
        )
    text += (
        "This pattern is typical on fast GPUs where individual calls complete quickly but the CPU "
        "cannot dispatch them fast enough under contention."
    )
    return CausalChain(
        id=chain_id(ctx.node, f"drop-{severity.lower()}-{op.name}"),
        severity=severity,
        summary=f"{op.name} throughput dropped {drop:.0f}% — {cause}",
        root_cause=cause,
        explanation=text,
        recommendations=dedup(fixes),
        timeline=timeline,
        cuda_op=op.name,
        detected_at=ctx.at_ns,
        node=ctx.node,
    )
