"""Chains that host events raise on their own: OOM kills, TCP retransmit bursts, pod restarts."""

from __future__ import annotations

from ingero.analyse.chain import CausalChain, TimelineEvent, chain_id
from ingero.analyse.rules.base import Context


def _chain(ctx: Context, descriptor: str, severity: str, **fields: object) -> CausalChain:
    return CausalChain(
        id=chain_id(ctx.node, descriptor),
        severity=severity,
        detected_at=ctx.at_ns,
        node=ctx.node,
        **fields,  # type: ignore[arg-type]
    )


def host_chains(ctx: Context) -> list[CausalChain]:
    ev = ctx.evidence
    chains: list[CausalChain] = []
    if ev.oom_count > 0:
        n = ev.oom_count
        chains.append(
            _chain(
                ctx,
                "oom",
                "HIGH",
                summary=f"OOM killer triggered {n} time(s)",
                root_cause="host memory exhaustion triggered OOM killer",
                timeline=[
                    TimelineEvent("HOST", "oom_kill", f"OOM killer invoked {n} time(s)"),
                    TimelineEvent("CUDA", "all", "all GPU operations affected by memory pressure"),
                ],
                explanation=(
                    f"The Linux OOM killer was invoked {n} time(s), indicating severe host memory "
                    "exhaustion. "
                    "This directly impacts CUDA operations that require host-side memory allocation."
                ),
                recommendations=[
                    "Reduce host memory usage",
                    "Add swap space as a buffer",
                    "Increase system RAM",
                ],
            )
        )
    if ev.tcp_retransmits > 10:
        n = ev.tcp_retransmits
        severity = "HIGH" if n > 100 else "MEDIUM"
        chains.append(
            _chain(
                ctx,
                f"tcp-retransmit-{severity.lower()}",
                severity,
                summary=f"{n} TCP retransmits during trace window",
                root_cause="TCP retransmit burst indicates network congestion or packet loss",
                timeline=[
                    TimelineEvent("NET", "tcp_retransmit", f"{n} retransmits"),
                    TimelineEvent(
                        "CUDA", "all", "GPU operations may stall waiting for network data (NCCL, gRPC)"
                    ),
                ],
                explanation=(
                    f"{n} TCP retransmissions detected. This indicates network congestion, packet "
                    "loss, or NIC "
                    "issues. For distributed training (NCCL/DDP), retransmits cause all-reduce stalls. For "
                    "inference serving, retransmits add latency to client responses."
                ),
                recommendations=[
                    "Check network switch errors and congestion",
                    "Verify NIC link speed and errors (ethtool -S)",
                    "For NCCL: consider NCCL_SOCKET_IFNAME and NCCL_IB_DISABLE tuning",
                ],
            )
        )
    if ev.pod_restarts > 0:
        n = ev.pod_restarts
        chains.append(
            _chain(
                ctx,
                "pod-restart",
                "HIGH",
                summary=f"K8s pod restart detected ({n} restart(s))",
                root_cause="pod container restart concurrent with GPU workload",
                timeline=[
                    TimelineEvent("HOST", "pod_restart", f"{n} container restart(s) detected"),
                    TimelineEvent("CUDA", "all", "GPU operations may have been interrupted by pod restart"),
                ],
                explanation=(
                    f"A K8s pod container restarted {n} time(s) during the trace window. Container restarts "
                    "cause process termination and re-initialization, resulting in GPU event gaps and lost "
                    "in-flight work. Common causes: OOM kills, liveness probe failures, application crashes."
                ),
                recommendations=[
                    "Check pod events: kubectl describe pod <name>",
                    "Review container logs: kubectl logs <pod> --previous",
                    "Check for OOM: kubectl get events --field-selector reason=OOMKilling",
                ],
            )
        )
    if ev.pod_evictions > 0:
        n = ev.pod_evictions
        chains.append(
            _chain(
                ctx,
                "pod-eviction",
                "HIGH",
                summary=f"K8s pod eviction detected ({n} eviction(s))",
                root_cause="pod evicted by K8s scheduler during GPU workload",
                timeline=[
                    TimelineEvent("HOST", "pod_eviction", f"{n} pod eviction(s) detected"),
                    TimelineEvent("CUDA", "all", "GPU workload terminated by eviction"),
                ],
                explanation=(
                    f"A K8s pod was evicted {n} time(s) during the trace window. Evictions are triggered by "
                    "resource pressure (CPU, memory, disk) or preemption by higher-priority pods."
                ),
                recommendations=[
                    "Check node resource pressure: kubectl describe node",
                    "Review pod resource requests and limits",
                    "Set PriorityClass for GPU workloads",
                ],
            )
        )
    return chains
