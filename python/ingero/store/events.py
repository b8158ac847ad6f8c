"""Selecting stored events for `ingero query`: filters in SQL, names from the code table."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ingero import codes
from ingero.store.database import table_columns


@dataclass(frozen=True)
class EventFilter:
    start_ns: int | None = None
    end_ns: int | None = None
    pids: list[int] = field(default_factory=list)
    op: codes.Op | None = None
    limit: int = 100


@dataclass(frozen=True)
class Selection:
    events: list[dict[str, Any]]
    matched: int


def _where(f: EventFilter) -> tuple[str, list[int]]:
    parts, args = [], []
    if f.start_ns is not None:
        parts.append("e.timestamp >= ?")
        args.append(f.start_ns)
    if f.end_ns is not None:
        parts.append("e.timestamp < ?")
        args.append(f.end_ns)
    if f.pids:
        parts.append(f"e.pid IN ({','.join('?' * len(f.pids))})")
        args.extend(f.pids)
    if f.op is not None:
        parts.append("e.source = ? AND e.op = ?")
        args.extend((f.op.source, f.op.id))
    return " AND ".join(parts) or "1", args


def select_events(conn: sqlite3.Connection, f: EventFilter) -> Selection:
    """The newest `f.limit` matching events, oldest first, and how many matched in all."""
    columns = set(table_columns(conn, "events"))
    # Databases before the original's v0.10 have no comm column: fall back to process_names.
    comm = "e.comm" if "comm" in columns else "''"
    comm = f"COALESCE(NULLIF({comm}, ''), (SELECT name FROM process_names p WHERE p.pid = e.pid), '')"
    where, args = _where(f)
    matched = int(conn.execute(f"SELECT COUNT(*) FROM events e WHERE {where}", args).fetchone()[0])
    rows = conn.execute(
        f"SELECT e.id, e.timestamp, e.pid, e.tid, {comm}, e.source, e.op, e.duration, e.gpu_id, "
        f"e.arg0, e.arg1, e.ret_code, e.stack_hash FROM events e WHERE {where} "
        "ORDER BY e.timestamp DESC, e.rowid DESC LIMIT ?",
        [*args, f.limit],
    ).fetchall()
    names = {(o.source, o.id): o.name for o in codes.ops()}
    sources = {s.id: s.name for s in codes.sources()}
    events = [
        {
            "id": r[0],
            "timestamp": r[1],
            "pid": r[2],
            "tid": r[3],
            "comm": r[4],
            "source": sources.get(r[5], str(r[5])),
            "op": names.get((r[5], r[6]), f"op{r[6]}"),
            "duration_ns": r[7],
            "gpu_id": r[8],
            "arg0": r[9],
            "arg1": r[10],
            "ret_code": r[11],
            "stack_hash": r[12],
        }
        for r in reversed(rows)
    ]
    return Selection(events=events, matched=matched)


def merge_selections(selections: list[Selection], limit: int) -> Selection:
    """One selection from several files (rolled-over databases): the newest `limit`, oldest first."""
    if len(selections) == 1:
        return selections[0]
    merged = sorted((e for s in selections for e in s.events), key=lambda e: e["timestamp"])
    return Selection(events=merged[-limit:], matched=sum(s.matched for s in selections))
