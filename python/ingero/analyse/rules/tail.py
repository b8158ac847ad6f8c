"""Tail latency of a CUDA/driver op (p99 >= 3x p50) and the host causes beside it."""

from __future__ import annotations

from ingero.analyse.chain import CausalChain, TimelineEvent, chain_id, dedup
from ingero.analyse.gotime import go_duration, go_round_ms, go_round_us
from ingero.analyse.rules.base import SCHED_SWITCH_THRESHOLD, Context, GiB, MiB, OpView, add_scheduler_cause

_MS = 1_000_000
_S = 1_000_000_000


def _io_relevant(ctx: Context, p99_ns: int) -> bool:
    # journald-style background I/O should not join every chain: it needs volume, a
    # second of total time, or a peak of at least 1% of the CUDA p99.
    ev = ctx.evidence
    return (
        ev.io_count >= 200
        or ev.io_total_ns >= _S
        or (ev.io_max_ns > 0 and p99_ns > 0 and ev.io_max_ns >= p99_ns // 100)
    )


def _io_detail(ctx: Context) -> str:
    ev = ctx.evidence
    detail = f"{ev.io_count} I/O ops"
    if ev.io_reads or ev.io_writes:
        detail += f" ({ev.io_reads} reads, {ev.io_writes} writes)"
    detail += f", {go_round_ms(ev.io_total_ns)} total"
    if ev.io_bytes:
        detail += f", {ev.io_bytes / MiB:.1f} MB"
    if ev.io_max_ns:
        detail += f", peak {go_round_us(ev.io_max_ns)}"
    return detail


def explanation(op: OpView, ratio: float, causes: list[str], ctx: Context) -> str:
    ev, sys = ctx.evidence, ctx.system
    text = (
        f"{op.name} tail latency is {ratio:.1f}x higher than typical "
        f"(p99={go_duration(op.p99_ns)} vs p50={go_duration(op.p50_ns)}). "
    )
    if sys is not None and sys.cpu_pct > 90:
        text += f"The system CPU is at {sys.cpu_pct:.0f}%, indicating heavy contention for CPU resources. "
    if sys is not None and sys.swap_mb > 0:
        text += f"The system is using {sys.swap_mb} MB of swap, causing memory access latency spikes. "
    if ev.io_count > 50 or ev.io_total_ns > 500 * _MS:
        text += (
            f"Block I/O activity ({ev.io_count} ops, {go_round_ms(ev.io_total_ns)} total, "
            f"{ev.io_bytes / MiB:.1f} MB) is concurrent with GPU stalls. "
        )
        if ev.io_max_ns > 20 * _MS:
            text += (
                f"Peak I/O latency of {go_round_ms(ev.io_max_ns)} indicates spinning disk or "
                "network-attached "
                "storage; NVMe SSD typically achieves <1ms. "
            )
        elif ev.io_max_ns > 2 * _MS:
            text += (
                f"Peak I/O latency of {go_round_us(ev.io_max_ns)} suggests SATA SSD; NVMe would halve this. "
            )
        if ev.io_reads > ev.io_writes * 2:
            text += "Read-dominant I/O pattern suggests DataLoader or model loading from disk. "
        elif ev.io_writes > ev.io_reads * 2:
            text += "Write-dominant I/O pattern suggests checkpoint saves or logging during GPU work. "
    if ev.tcp_retransmits > 5:
        text += f"{ev.tcp_retransmits} TCP retransmissions indicate network congestion or packet loss. "
        if ev.tcp_retransmits > 50:
            text += (
                "This volume of retransmits can add seconds of latency to distributed training "
                "(NCCL AllReduce) or inference serving. "
            )
    if ev.net_count > 100 and ev.net_bytes > MiB:
        text += (
            f"Heavy network socket I/O ({ev.net_count} ops, {ev.net_bytes / MiB:.1f} MB) concurrent with GPU "
            "stalls — GPU may be idle waiting for HTTP/gRPC responses or NCCL data transfers. "
        )
    quiet = {"high CPU utilization", "swap activity", "heavy block I/O", "heavy network socket I/O"}
    for cause in causes:
        if cause not in quiet and "TCP retransmit" not in cause:
            text += f"Contributing factor: {cause}. "
    return text


def tail_chain(op: OpView, ctx: Context) -> CausalChain | None:
    """The original's buildChain: None when no host cause stands beside the tail."""
    ratio = op.p99_ns / op.p50_ns
    ev, sys = ctx.evidence, ctx.system
    timeline: list[TimelineEvent] = []
    causes: list[str] = []
    fixes: list[str] = []
    severity = "MEDIUM"
    if sys is not None:
        if sys.cpu_pct > 90:
            timeline.append(TimelineEvent("SYSTEM", "cpu", f"CPU {sys.cpu_pct:.0f}%"))
            causes.append("high CPU utilization")
            severity = "HIGH"
        if sys.mem_pct > 95:
            timeline.append(
                TimelineEvent(
                    "SYSTEM", "memory", f"Memory {sys.mem_pct:.0f}% ({sys.mem_avail_mb} MB available)"
                )
            )
            causes.append("memory pressure")
            severity = "HIGH"
        if sys.swap_mb > 0:
            timeline.append(TimelineEvent("SYSTEM", "swap", f"Swap {sys.swap_mb} MB in use"))
            causes.append("swap activity")
            severity = "HIGH"
            fixes.append("Investigate memory consumers, consider adding RAM")
        if sys.load_avg > 10:
            timeline.append(TimelineEvent("SYSTEM", "load", f"Load average {sys.load_avg:.1f}"))
            causes.append("high system load")
    if ev.sched_count >= SCHED_SWITCH_THRESHOLD:
        add_scheduler_cause(ev, timeline, causes, fixes)
    if ev.alloc_bytes > GiB:
        timeline.append(
            TimelineEvent(
                "HOST", "mm_page_alloc", f"{ev.page_alloc_count} allocations ({ev.alloc_bytes / GiB:.1f} GB)"
            )
        )
        causes.append("large host memory allocations")
        fixes.append("Identify the process allocating host memory during GPU work")
    if _io_relevant(ctx, op.p99_ns):
        timeline.append(TimelineEvent("IO", "block_io", _io_detail(ctx), ev.io_total_ns // 1000))
        causes.append("heavy block I/O")
        if ev.io_max_ns > 50 * _MS or ev.io_total_ns > 2 * _S:
            severity = "HIGH"
        if ev.io_max_ns > 20 * _MS:
            fixes.append(
                f"Block I/O peak latency {go_round_ms(ev.io_max_ns)} suggests spinning disk or "
                "network storage — "
                "NVMe SSD reduces this to <1ms"
            )
        if ev.io_writes > ev.io_reads:
            fixes.append(
                "Write-heavy I/O during GPU work: check checkpoint saves, use async checkpointing "
                "or a separate fast volume"
            )
        elif ev.io_reads > ev.io_writes:
            fixes.append(
                "Read-heavy I/O during GPU work: DataLoader bottleneck — pre-load data to /dev/shm, "
                "increase RAM for page cache, or use NVMe"
            )
        else:
            fixes.append("Check for checkpoint writes, model loads, or DataLoader disk reads during GPU work")
    if ev.tcp_retransmits > 5:
        timeline.append(TimelineEvent("NET", "tcp_retransmit", f"{ev.tcp_retransmits} retransmits"))
        causes.append(f"{ev.tcp_retransmits} TCP retransmits")
        if ev.tcp_retransmits > 50:
            severity = "HIGH"
        fixes.append("Check network health: switch errors, NIC stats (ethtool -S), MTU mismatches")
    if ev.net_count > 100 and ev.net_bytes > MiB:
        timeline.append(
            TimelineEvent("NET", "socket_io", f"{ev.net_count} socket ops ({ev.net_bytes / MiB:.1f} MB)")
        )
        causes.append("heavy network socket I/O")
        fixes.append(
            "Profile network calls — GPU may be idle waiting for HTTP/gRPC responses or NCCL transfers"
        )
    if not causes:
        return None
    timeline.append(
        TimelineEvent(
            op.layer,
            op.name,
            f"p99={go_duration(op.p99_ns)} ({ratio:.1f}x p50={go_duration(op.p50_ns)})",
            op.p99_ns // 1000,
        )
    )
    cause = " + ".join(causes)
    return CausalChain(
        id=chain_id(ctx.node, f"tail-{severity.lower()}-{op.name}"),
        severity=severity,
        summary=f"{op.name} p99={go_duration(op.p99_ns)} ({ratio:.1f}x p50) — {cause}",
        root_cause=cause,
        explanation=explanation(op, ratio, causes, ctx),
        recommendations=dedup(fixes),
        timeline=timeline,
        cuda_op=op.name,
        cuda_p99_us=op.p99_ns // 1000,
        cuda_p50_us=op.p50_ns // 1000,
        tail_ratio=ratio,
        detected_at=ctx.at_ns,
        node=ctx.node,
    )
