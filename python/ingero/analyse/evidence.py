"""What the host, disks and network did up to each moment of the replay.

The original keeps every host/I/O/network event of the window (explain never prunes), so
the evidence at a snapshot is a running total from the start of the window: here, one
cumulative sum per measure, read at every snapshot time with a binary search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from ingero import codes


@dataclass(frozen=True)
class Evidence:
    sched_count: int = 0
    off_cpu_ns: int = 0
    page_alloc_count: int = 0
    alloc_bytes: int = 0
    oom_count: int = 0
    pod_restarts: int = 0
    pod_evictions: int = 0
    io_count: int = 0
    io_total_ns: int = 0
    io_max_ns: int = 0
    io_reads: int = 0
    io_writes: int = 0
    io_bytes: int = 0
    tcp_retransmits: int = 0
    net_count: int = 0
    net_bytes: int = 0


def _op(name: str) -> tuple[int, int]:
    op = codes.op_named(name)
    return op.source, op.id


def _is(name: str) -> pl.Expr:
    source, op = _op(name)
    return (pl.col("source") == source) & (pl.col("op") == op)


def _source(name: str) -> pl.Expr:
    return pl.col("source") == codes.source_named(name).id


def _measures(filtered_by_pid: bool) -> dict[str, pl.Expr]:
    zero = pl.lit(0, dtype=pl.Int64)
    summary_ok = pl.lit(not filtered_by_pid)
    sched_sum, alloc_sum = _is("sched_switch_summary") & summary_ok, _is("mm_page_alloc_summary") & summary_ok
    return {
        "sched_count": pl.when(_is("sched_switch"))
        .then(1)
        .when(sched_sum)
        .then(pl.col("arg0"))
        .otherwise(zero),
        "off_cpu_ns": pl.when(_is("sched_switch"))
        .then(pl.col("duration"))
        .when(sched_sum)
        .then(pl.col("arg1"))
        .otherwise(zero),
        "page_alloc_count": pl.when(_is("mm_page_alloc"))
        .then(1)
        .when(alloc_sum)
        .then(pl.col("arg0"))
        .otherwise(zero),
        "alloc_bytes": pl.when(_is("mm_page_alloc"))
        .then(pl.col("arg0"))
        .when(alloc_sum)
        .then(pl.col("arg1"))
        .otherwise(zero),
        "oom_count": (_is("oom_kill") | _is("pod_oom_kill")).cast(pl.Int64),
        "pod_restarts": _is("pod_restart").cast(pl.Int64),
        "pod_evictions": _is("pod_eviction").cast(pl.Int64),
        "io_count": _source("IO").cast(pl.Int64),
        "io_total_ns": pl.when(_source("IO")).then(pl.col("duration")).otherwise(zero),
        "io_reads": _is("block_read").cast(pl.Int64),
        "io_writes": _is("block_write").cast(pl.Int64),
        "io_bytes": pl.when(_source("IO")).then(pl.col("arg0") * 512).otherwise(zero),
        "tcp_retransmits": _source("TCP").cast(pl.Int64),
        "net_count": _source("NET").cast(pl.Int64),
        "net_bytes": pl.when(_source("NET")).then(pl.col("arg1")).otherwise(zero),
    }


def evidence_at(context: pl.DataFrame, times: Sequence[int], filtered_by_pid: bool) -> list[Evidence]:
    """The evidence accumulated up to (and including) each of `times`, in order."""
    if not times:
        return []
    if context.height == 0:
        return [Evidence() for _ in times]
    measures = _measures(filtered_by_pid)
    running = context.select(
        pl.col("timestamp"),
        *[expr.cum_sum().alias(name) for name, expr in measures.items()],
        pl.when(_source("IO")).then(pl.col("duration")).otherwise(0).cum_max().alias("io_max_ns"),
    )
    at = running["timestamp"].search_sorted(pl.Series(list(times), dtype=pl.Int64), side="right").to_list()
    names = [c for c in running.columns if c != "timestamp"]
    # Only the rows the snapshots land on become Python values.
    picked = running.select(names)[[max(k - 1, 0) for k in at]].rows()
    return [
        Evidence(**{n: int(v) for n, v in zip(names, row, strict=True)}) if k else Evidence()
        for k, row in zip(at, picked, strict=True)
    ]
