"""What one scenario's trace holds, measured straight from its rows: per op, calls,
share of traced time and latency percentiles; and whether host events were captured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ingero.codes import source_named
from ingero.store.database import open_readonly

HOST_SOURCE = source_named("HOST").id


@dataclass(frozen=True)
class OpSummary:
    op: str
    calls: int
    total_ns: int
    p50_ns: int
    p99_ns: int
    max_ns: int


def _percentile(sorted_values: list[int], q: float) -> int:
    # Nearest rank, as the original's stats engine: ceil(q * n) - 1.
    rank = max(0, -(-int(q * 1000) * len(sorted_values) // 1000) - 1)
    return sorted_values[min(rank, len(sorted_values) - 1)]


def op_summaries(db: Path, pids: list[int]) -> list[OpSummary]:
    """Ops of `pids`, the largest total time first."""
    if not pids:
        return []
    marks = ",".join("?" * len(pids))
    conn = open_readonly(db)
    try:
        rows = conn.execute(
            "SELECT o.name, e.duration FROM events e JOIN ops o ON o.source_id = e.source AND o.op_id = e.op "
            f"WHERE e.pid IN ({marks}) AND e.source != {HOST_SOURCE}",
            pids,
        ).fetchall()
    finally:
        conn.close()
    by_op: dict[str, list[int]] = {}
    for name, duration in rows:
        by_op.setdefault(str(name), []).append(int(duration))
    out = []
    for name, durations in by_op.items():
        durations.sort()
        out.append(
            OpSummary(
                name,
                len(durations),
                sum(durations),
                _percentile(durations, 0.50),
                _percentile(durations, 0.99),
                durations[-1],
            )
        )
    return sorted(out, key=lambda s: -s.total_ns)


def host_event_count(db: Path, pids: list[int]) -> int:
    if not pids:
        return 0
    marks = ",".join("?" * len(pids))
    conn = open_readonly(db)
    try:
        (n,) = conn.execute(
            f"SELECT COUNT(*) FROM events WHERE source = {HOST_SOURCE} AND pid IN ({marks})", pids
        ).fetchone()
    finally:
        conn.close()
    return int(n)
