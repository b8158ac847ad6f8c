"""Per-process CUDA/driver breakdown, and how long processes shared the GPU."""

from __future__ import annotations

import sqlite3

import polars as pl

from ingero.analyse import load
from ingero.analyse.load import Window
from ingero.analyse.stats import per_process


def per_process_table(
    conn: sqlite3.Connection, window: Window | None = None, pids: list[int] | None = None
) -> pl.DataFrame:
    """One row per (pid, op): count, p50/p95/p99, max, total, first/last call and the process name."""
    gpu = load.read_gpu_calls(load.Source(conn), window or Window(), pids)
    table = per_process(gpu)
    if table.height == 0:
        return table
    names = load.process_names(conn, table["pid"].unique().to_list())
    return table.with_columns(
        pl.col("pid").replace_strict(names, default="", return_dtype=pl.String).alias("name")
    )


def contention(table: pl.DataFrame) -> tuple[int, int]:
    """(processes calling CUDA, nanoseconds during which two or more of them were active)."""
    if table.height == 0:
        return 0, 0
    spans = table.group_by("pid").agg(pl.col("first_ns").min(), pl.col("last_ns").max())
    edges = sorted([(int(f), 1) for f in spans["first_ns"]] + [(int(last), -1) for last in spans["last_ns"]])
    active, since, overlap = 0, 0, 0
    for at, step in edges:
        if active >= 2:
            overlap += at - since
        active += step
        since = at
    return spans.height, overlap
