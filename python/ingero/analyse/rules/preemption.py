"""Who preempted the GPU processes: the pids and names behind a scheduler-caused chain."""

from __future__ import annotations

import polars as pl

from ingero import codes
from ingero.analyse.chain import CausalChain, TimelineEvent, chain_id
from ingero.analyse.gotime import go_round_ms
from ingero.analyse.rules.base import SCHED_SWITCH_THRESHOLD

_TOP = 5


def preempter_chain(
    context: pl.DataFrame,
    gpu_pids: set[int],
    *,
    names: dict[int, str],
    symptoms: list[CausalChain],
    wall_ns: int,
    node: str,
    at_ns: int,
) -> CausalChain | None:
    """Fires beside a chain whose cause is sched_switch, when the switches name who ran instead."""
    caused = [c for c in symptoms if "sched_switch" in c.root_cause and c.cuda_op]
    if not caused or not gpu_pids:
        return None
    sched = codes.op_named("sched_switch")
    switched = context.filter(
        (pl.col("source") == sched.source)
        & (pl.col("op") == sched.id)
        & pl.col("pid").is_in(list(gpu_pids))
        & (pl.col("arg1") != 0)
        & (pl.col("arg1") != pl.col("pid"))
    )
    if switched.height < SCHED_SWITCH_THRESHOLD:
        return None
    by = (
        switched.group_by(["arg1", "pid"])
        .agg(pl.len().alias("n"), pl.col("duration").sum().alias("off"))
        .sort(["off", "n"], descending=True)
    )
    off_total = int(switched["duration"].sum())

    def who(pid: int) -> str:
        return f"pid {pid} ({names[pid]})" if pid in names else f"pid {pid}"

    top = by.head(_TOP).to_dicts()
    hogs = []
    for row in top:
        if row["arg1"] not in hogs:
            hogs.append(int(row["arg1"]))
    share = off_total / wall_ns if wall_ns > 0 else 0.0
    severity = "HIGH" if share >= 0.10 else "MEDIUM"
    worst = max(caused, key=lambda c: c.rank)
    timeline = [
        TimelineEvent(
            "HOST",
            "sched_switch",
            f"{who(int(r['arg1']))} preempted {who(int(r['pid']))} {r['n']} times "
            f"({go_round_ms(int(r['off']))} off-CPU)",
            int(r["off"]) // 1000,
        )
        for r in top
    ]
    timeline.append(
        TimelineEvent("CUDA", "preempted", f"{', '.join(c.cuda_op for c in caused)}: {worst.summary}")
    )
    named = ", ".join(who(p) for p in hogs)
    return CausalChain(
        id=chain_id(node, "preempted-by-" + "-".join(str(p) for p in hogs)),
        severity=severity,
        summary=(
            f"GPU processes preempted {switched.height} times by {named} ({go_round_ms(off_total)} off-CPU)"
        ),
        root_cause=f"CPU preemption by {named}",
        timeline=timeline,
        explanation=(
            f"The GPU processes were switched out {switched.height} times for {named}, losing "
            f"{go_round_ms(off_total)} of CPU time ({share * 100:.1f}% of the window) while CUDA "
            "calls were in "
            f"flight or due. That is the scheduler evidence behind: {worst.summary}."
        ),
        recommendations=[
            f"Move {named} off the GPU process's cores, or lower its priority (nice -n 19 / cgroup "
            "cpu.weight)",
            "Pin the GPU process to dedicated cores with taskset or a cpuset cgroup",
        ],
        detected_at=at_ns,
        node=node,
    )
