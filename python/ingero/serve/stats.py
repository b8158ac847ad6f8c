"""get_trace_stats: per-op latency and counts, aggregate first."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from typing import Any

from ingero.serve.models import OpStat, ProcessCount, TraceStatsResult
from ingero.serve.sanitize import wrap
from ingero.serve.scope import Scope, comm_column, mcp_source, name_of, op_names, process_names

# Above this many events percentiles come from the analysis engine or not at all:
# reading every duration would not fit the latency goal.
EXACT_LIMIT = 500_000
TOP_PROCESSES = 10


def _percentile(sorted_values: list[int], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index] / 1000


def _exact_ops(conn: sqlite3.Connection, where: str, params: list[int], wall_ns: int) -> list[OpStat]:
    durations: dict[tuple[int, int], list[int]] = defaultdict(list)
    for source, op, duration in conn.execute(
        f"SELECT source, op, duration FROM events WHERE {where} ORDER BY source, op, duration", params
    ):
        durations[(source, op)].append(int(duration))
    names = op_names()
    stats = []
    for (source, op), values in durations.items():
        p50 = _percentile(values, 0.50)
        total = sum(values)
        source_name, op_name = name_of(source, op, names)
        stats.append(
            OpStat(
                source=source,
                op=op,
                source_name=source_name,
                op_name=op_name,
                count=len(values),
                p50_us=p50,
                p95_us=_percentile(values, 0.95),
                p99_us=_percentile(values, 0.99),
                min_us=values[0] / 1000,
                max_us=values[-1] / 1000,
                total_ms=total / 1e6,
                wall_share=min(1.0, total / wall_ns) if wall_ns > 0 else None,
                anomalies=sum(1 for v in values if v > 3 * p50 * 1000) if p50 > 0 else 0,
            )
        )
    return stats


def _aggregate_ops(conn: sqlite3.Connection, where: str, params: list[int], wall_ns: int) -> list[OpStat]:
    names = op_names()
    stats = []
    for source, op, count, lo, hi, total in conn.execute(
        f"SELECT source, op, count(*), min(duration), max(duration), sum(duration) FROM events "
        f"WHERE {where} GROUP BY source, op",
        params,
    ):
        source_name, op_name = name_of(source, op, names)
        stats.append(
            OpStat(
                source=source,
                op=op,
                source_name=source_name,
                op_name=op_name,
                count=count,
                p50_us=None,
                p95_us=None,
                p99_us=None,
                min_us=(lo or 0) / 1000,
                max_us=(hi or 0) / 1000,
                total_ms=(total or 0) / 1e6,
                wall_share=min(1.0, (total or 0) / wall_ns) if wall_ns > 0 else None,
                anomalies=None,
            )
        )
    return stats


def _analysed_ops(result: Any) -> list[OpStat] | None:
    """Per-op stats from the analysis engine's result, when there is one."""
    if result is None:
        return None
    stats = []
    for row in result.op_stats.iter_rows(named=True):
        stats.append(
            OpStat(
                source=int(row["source"]),
                op=int(row["op"]),
                source_name=str(row["source_name"]),
                op_name=str(row["op_name"]),
                count=int(row["count"]),
                p50_us=row["p50_ns"] / 1000,
                p95_us=row["p95_ns"] / 1000,
                p99_us=row["p99_ns"] / 1000,
                min_us=row["min_ns"] / 1000,
                max_us=row["max_ns"] / 1000,
                total_ms=row["total_ns"] / 1e6,
                wall_share=row["wall_share"],
                anomalies=int(row["anomalies"]),
            )
        )
    return stats


def trace_stats(conn: sqlite3.Connection, scope: Scope, analysed: Any | None) -> TraceStatsResult:
    """Stats of `scope`: from `analysed` (the engine's Analysis of it) when given, else by SQL."""
    where, params = scope.where()
    if analysed is not None:
        total, first, last = analysed.events, analysed.first_ns, analysed.last_ns
    else:
        total, first, last = conn.execute(
            f"SELECT count(*), min(timestamp), max(timestamp) FROM events WHERE {where}", params
        ).fetchone()
    wall_ns = (last - first) if first is not None and last is not None else 0
    ops = _analysed_ops(analysed)
    mode = "analysis"
    note = ""
    if ops is None:
        if total <= EXACT_LIMIT:
            ops, mode = _exact_ops(conn, where, params, wall_ns), "exact"
        else:
            ops, mode = _aggregate_ops(conn, where, params, wall_ns), "aggregate"
            note = (
                f"{total} events: percentiles are skipped above {EXACT_LIMIT}; pass since (e.g. '30s') "
                "or use run_sql on a narrower window for p50/p95/p99."
            )
    ops.sort(key=lambda s: (-(s.total_ms), -s.count))
    processes = _busiest(conn, scope, where, params)
    chains = (
        conn.execute("SELECT count(*) FROM causal_chains").fetchone()[0] if _has(conn, "causal_chains") else 0
    )
    mcp = mcp_source()
    mcp_calls = 0
    if mcp is not None:
        mcp_calls = conn.execute("SELECT count(*) FROM events WHERE source = ?", [mcp]).fetchone()[0]
    return TraceStatsResult(
        mode=mode,
        total_events=total,
        first_ns=first,
        last_ns=last,
        seconds=wall_ns / 1e9,
        ops=ops,
        processes=processes,
        stored_chains=chains,
        mcp_calls=mcp_calls,
        note=note,
    )


def _busiest(conn: sqlite3.Connection, scope: Scope, where: str, params: list[int]) -> list[ProcessCount]:
    """The processes with the most events in `scope`."""
    if scope.start_ns is None and not scope.pids:
        # The whole trace: counted from the pid index alone, less the audit events.
        counts = dict(conn.execute("SELECT pid, count(*) FROM events GROUP BY pid").fetchall())
        if scope.exclude_source is not None:
            for pid, n in conn.execute(
                "SELECT pid, count(*) FROM events WHERE source = ? GROUP BY pid", (scope.exclude_source,)
            ):
                counts[pid] -= n
        top = sorted(((n, pid) for pid, n in counts.items() if n > 0), reverse=True)[:TOP_PROCESSES]
    else:
        top = conn.execute(
            f"SELECT count(*) AS n, pid FROM events WHERE {where} GROUP BY pid ORDER BY n DESC LIMIT ?",
            [*params, TOP_PROCESSES],
        ).fetchall()
    names = process_names(conn)
    comm = comm_column(conn)
    result = []
    for n, pid in top:
        name = names.get(pid)
        if name is None:
            row = conn.execute(f"SELECT {comm} FROM events WHERE pid = ? LIMIT 1", (pid,)).fetchone()
            name = str(row[0]) if row else ""
        result.append(ProcessCount(pid=pid, name=wrap(name), events=n))
    return result


def _has(conn: sqlite3.Connection, table: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
        is not None
    )


def stats_text(r: TraceStatsResult) -> str:
    lines = [
        f"{r.total_events} events over {r.seconds:.1f}s ({r.mode}); {r.stored_chains} stored causal chains.",
        "op (source): count, p50/p95/p99 us, max us, total ms, wall%, anomalies",
    ]
    for s in r.ops:
        pct = "-" if s.p50_us is None else f"{s.p50_us:.1f}/{s.p95_us:.1f}/{s.p99_us:.1f}"
        wall = "-" if s.wall_share is None else f"{100 * s.wall_share:.1f}%"
        lines.append(
            f"  {s.op_name} ({s.source_name}): {s.count}, {pct}, {s.max_us:.1f}, {s.total_ms:.2f}, {wall}, "
            f"{'-' if s.anomalies is None else s.anomalies}"
        )
    if r.processes:
        lines.append("processes: " + ", ".join(f"{p.pid} {p.name} ({p.events})" for p in r.processes))
    return "\n".join(lines)
