"""Statistics per (source, op): count, nearest-rank percentiles, share of wall time, anomalies, spikes."""

from __future__ import annotations

import itertools
from functools import cache

import polars as pl

from ingero import codes

ANOMALY_FACTOR = 3.0  # a call slower than 3x its op's p50 is an anomaly ...
ANOMALY_MIN_COUNT = 10  # ... once the op has been seen more than 10 times
SPIKE_MIN = 3
SPIKE_TOLERANCE = 0.3
SPIKE_CONSISTENT = 0.6
MAX_SPIKE_POSITIONS = 1000


def nearest_rank(column: str, q: float) -> pl.Expr:
    """The original's percentile: the value at index ceil(q * n) - 1 of the sorted sample."""
    index = ((pl.len() * q).ceil().cast(pl.Int64) - 1).clip(lower_bound=0)
    return pl.col(column).sort().get(index)


def nearest_rank_of(sorted_values: pl.Series, q: float) -> int:
    n = sorted_values.len()
    idx = min(max(int(-(-q * n // 1)) - 1, 0), n - 1)
    return int(sorted_values[idx])


@cache
def _names() -> tuple[dict[int, str], dict[tuple[int, int], str]]:
    sources = {s.id: s.name for s in codes.sources()}
    ops = {(o.source, o.id): o.name for o in codes.ops()}
    return sources, ops


def source_name(source: int) -> str:
    return _names()[0].get(source, f"source{source}")


def op_name(source: int, op: int) -> str:
    return _names()[1].get((source, op), f"op{op}")


def spike_period(positions: list[int]) -> int | None:
    """The original's periodic-spike test: >= 60% of gaps between anomalies within 30% of the median gap."""
    if len(positions) < SPIKE_MIN:
        return None
    gaps = [b - a for a, b in itertools.pairwise(positions)]
    median = sorted(gaps)[len(gaps) // 2]
    if median <= 0:
        return None
    consistent = sum(1 for g in gaps if abs(g - median) <= median * SPIKE_TOLERANCE)
    return median if consistent / len(gaps) >= SPIKE_CONSISTENT else None


SCHEMA = {
    "source": pl.Int64,
    "op": pl.Int64,
    "source_name": pl.String,
    "op_name": pl.String,
    "count": pl.Int64,
    "p50_ns": pl.Int64,
    "p95_ns": pl.Int64,
    "p99_ns": pl.Int64,
    "min_ns": pl.Int64,
    "max_ns": pl.Int64,
    "total_ns": pl.Int64,
    "wall_share": pl.Float64,
    "anomalies": pl.Int64,
    "spike_period": pl.Int64,
}


def split_by_op(events: pl.DataFrame) -> dict[tuple[int, int], pl.DataFrame]:
    """(source, op) -> that op's rows, in the order they came (time order)."""
    parts = events.partition_by(["source", "op"], as_dict=True, maintain_order=True)
    return {(int(k[0]), int(k[1])): v for k, v in parts.items()}


def _one_op(source: int, op: int, durations: pl.Series, wall_ns: int) -> dict[str, object]:
    ordered = durations.sort()
    p50 = nearest_rank_of(ordered, 0.50)
    # An anomaly's position is the op's running count when it happened: "every ~N events".
    positions = (
        ((durations > p50 * ANOMALY_FACTOR).arg_true() + 1) if p50 > 0 else pl.Series([], dtype=pl.UInt32)
    )
    positions = positions.filter(positions > ANOMALY_MIN_COUNT)
    total = int(durations.sum())
    return {
        "source": source,
        "op": op,
        "source_name": source_name(source),
        "op_name": op_name(source, op),
        "count": ordered.len(),
        "p50_ns": p50,
        "p95_ns": nearest_rank_of(ordered, 0.95),
        "p99_ns": nearest_rank_of(ordered, 0.99),
        "min_ns": int(ordered[0]),
        "max_ns": int(ordered[-1]),
        "total_ns": total,
        "wall_share": total / max(wall_ns, 1),
        "anomalies": positions.len(),
        "spike_period": spike_period([int(p) for p in positions.head(MAX_SPIKE_POSITIONS)]),
    }


def op_stats_of(parts: dict[tuple[int, int], pl.DataFrame], wall_ns: int) -> pl.DataFrame:
    """One row per (source, op) from `split_by_op` parts, the most time spent first."""
    rows = [_one_op(s, o, part["duration"], wall_ns) for (s, o), part in parts.items() if part.height]
    if not rows:
        return pl.DataFrame(schema=SCHEMA)
    return pl.DataFrame(rows, schema=SCHEMA).sort(["total_ns", "count"], descending=True)


def op_stats(events: pl.DataFrame, wall_ns: int) -> pl.DataFrame:
    """One row per (source, op) of `events` (timestamp, source, op, duration, in time order)."""
    return op_stats_of(split_by_op(events), wall_ns)


def per_process(gpu: pl.DataFrame) -> pl.DataFrame:
    """CUDA/driver calls per (pid, source, op) with percentiles, busiest processes first."""
    keys = ["pid", "source", "op"]
    if gpu.height == 0:
        return pl.DataFrame(schema={"pid": pl.Int64, "source": pl.Int64, "op": pl.Int64})
    stats = gpu.group_by(keys).agg(
        pl.len().alias("count"),
        nearest_rank("duration", 0.50).alias("p50_ns"),
        nearest_rank("duration", 0.95).alias("p95_ns"),
        nearest_rank("duration", 0.99).alias("p99_ns"),
        pl.col("duration").max().alias("max_ns"),
        pl.col("duration").sum().alias("total_ns"),
        pl.col("timestamp").min().alias("first_ns"),
        pl.col("timestamp").max().alias("last_ns"),
    )
    return stats.with_columns(
        pl.struct(["source", "op"])
        .map_elements(lambda k: op_name(k["source"], k["op"]), return_dtype=pl.String)
        .alias("op_name"),
        pl.col("count").sum().over("pid").alias("pid_calls"),
    ).sort(["pid_calls", "pid", "count"], descending=[True, False, True])
