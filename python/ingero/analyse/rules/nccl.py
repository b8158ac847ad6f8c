"""NCCL stragglers: the rank that enters collectives last, so that every other rank waits."""

from __future__ import annotations

import polars as pl

from ingero import codes
from ingero.analyse.chain import CausalChain, TimelineEvent, chain_id
from ingero.analyse.gotime import go_round_ms, go_round_us

_COLLECTIVES = ("ncclAllReduce", "ncclAllGather", "ncclReduceScatter", "ncclBroadcast")
_MS = 1_000_000
# A straggler is last in at least half of the rounds it joins, by at least a millisecond
# at the median; ten milliseconds at the median is a HIGH.
LAST_SHARE = 0.5
MIN_LATENESS_NS = _MS
HIGH_LATENESS_NS = 10 * _MS
MIN_ROUNDS = 10


def straggler_chains(
    context: pl.DataFrame, names: dict[int, str], node: str, at_ns: int
) -> list[CausalChain]:
    nccl = codes.source_named("NCCL").id
    ops = {codes.op_named(n).id: codes.op_named(n).name for n in _COLLECTIVES}
    calls = context.filter((pl.col("source") == nccl) & pl.col("op").is_in(list(ops)))
    if calls.height == 0:
        return []
    # The k-th call of a collective on a communicator is the same round on every rank.
    rounds = calls.with_columns(
        pl.int_range(pl.len()).over(["op", "arg1", "pid"]).alias("round")
    ).with_columns(
        (pl.col("timestamp") - pl.col("timestamp").min().over(["op", "arg1", "round"])).alias("late"),
        (pl.col("timestamp") == pl.col("timestamp").max().over(["op", "arg1", "round"])).alias("last"),
        pl.col("pid").n_unique().over(["op", "arg1", "round"]).alias("ranks"),
        (pl.col("timestamp").max().over(["op", "arg1", "round"]) - pl.col("timestamp")).alias("waited"),
    )
    rounds = rounds.filter(pl.col("ranks") >= 2)
    per_rank = (
        rounds.group_by(["op", "arg1", "pid"])
        .agg(
            pl.len().alias("rounds"),
            pl.col("last").sum().alias("times_last"),
            pl.col("late").median().alias("median_late"),
            pl.col("rank").drop_nulls().first().alias("rank"),
        )
        .filter(pl.col("rounds") >= MIN_ROUNDS)
    )
    waited = rounds.group_by(["op", "arg1"]).agg(
        pl.col("waited").sum().alias("waited_total"), pl.col("pid").n_unique().alias("nranks")
    )
    found = per_rank.join(waited, on=["op", "arg1"]).filter(
        (pl.col("times_last") >= pl.col("rounds") * LAST_SHARE) & (pl.col("median_late") >= MIN_LATENESS_NS)
    )
    chains = []
    for row in found.sort("median_late", descending=True).to_dicts():
        pid, op_name, late = int(row["pid"]), ops[int(row["op"])], int(row["median_late"])
        who = f"pid {pid}" + (f" ({names[pid]})" if pid in names else "")
        rank = f"rank {row['rank']}, {who}" if row["rank"] is not None else who
        severity = "HIGH" if late >= HIGH_LATENESS_NS else "MEDIUM"
        share = row["times_last"] / row["rounds"] * 100
        chains.append(
            CausalChain(
                id=chain_id(node, f"nccl-straggler-{op_name}-{pid}"),
                severity=severity,
                summary=(
                    f"NCCL straggler: {rank} enters {op_name} last in {share:.0f}% of "
                    f"{row['rounds']} rounds, median {go_round_us(late)} behind the first rank"
                ),
                root_cause=f"NCCL straggler {rank} makes the other ranks wait in {op_name}",
                timeline=[
                    TimelineEvent(
                        "NCCL",
                        op_name,
                        f"{rank} last in {row['times_last']} of {row['rounds']} rounds, "
                        f"median {go_round_us(late)} late",
                        late // 1000,
                    ),
                    TimelineEvent(
                        "NCCL",
                        "wait",
                        f"{row['nranks'] - 1} other rank(s) waited "
                        f"{go_round_ms(int(row['waited_total']))} in total",
                        int(row["waited_total"]) // 1000,
                    ),
                ],
                explanation=(
                    f"On communicator 0x{int(row['arg1']):x}, {rank} enters {op_name} "
                    "after the other "
                    f"ranks in {share:.0f}% of {row['rounds']} rounds, a median "
                    f"{go_round_us(late)} after the first. "
                    "A collective completes only when every rank has joined, so the early ranks "
                    "spin inside NCCL "
                    f"for that long each round: {go_round_ms(int(row['waited_total']))} of GPU "
                    "time in total. The "
                    "cause is on the straggler's side: its input pipeline, CPU contention on its "
                    "host, or uneven work."
                ),
                recommendations=[
                    f"Look at what {who} does between collectives: data loading, CPU contention "
                    f"(ingero explain --pid {pid})",
                    "Balance the work per rank (uneven sequence lengths or batch shapes make one rank late)",
                    "Check the straggler's host for preemption, thermal throttling or a slower GPU",
                ],
                detected_at=at_ns,
                node=node,
            )
        )
    return chains
