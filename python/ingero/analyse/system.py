"""The host's CPU, memory, swap and load from `system_snapshots`, at their worst in the window."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class SystemContext:
    cpu_pct: float
    mem_pct: float
    mem_avail_mb: int
    swap_mb: int
    load_avg: float


def peak_system_context(snapshots: pl.DataFrame) -> SystemContext | None:
    """Each metric at its own worst (CPU may peak at t=5 and swap at t=30); None without snapshots."""
    if snapshots.height == 0:
        return None
    row = snapshots.select(
        pl.col("cpu_pct").max(),
        pl.col("mem_pct").max(),
        pl.col("mem_avail").first(),
        pl.col("mem_avail").min().alias("mem_avail_min"),
        pl.col("swap_mb").max(),
        pl.col("load_avg").max(),
    ).row(0, named=True)
    return SystemContext(
        cpu_pct=float(row["cpu_pct"]),
        mem_pct=float(row["mem_pct"]),
        mem_avail_mb=int(row["mem_avail_min"]),
        swap_mb=int(row["swap_mb"]),
        load_avg=float(row["load_avg"]),
    )
