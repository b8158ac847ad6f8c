"""Which events a tool looks at: a time window ending at the newest event, and pids."""

from __future__ import annotations

import importlib
import sqlite3
from dataclasses import dataclass
from typing import Any

from ingero import codes
from ingero.durations import parse_duration
from ingero.store.database import table_columns


class ToolInputError(Exception):
    """A bad tool argument; the message says what to send instead."""


@dataclass(frozen=True)
class Scope:
    start_ns: int | None = None
    end_ns: int | None = None
    pids: tuple[int, ...] = ()
    # The audit source: MCP calls are events of the trace, but not of the traced workload.
    exclude_source: int | None = None

    def where(self, alias: str = "") -> tuple[str, list[int]]:
        """An SQL condition (always valid after WHERE) and its parameters."""
        p = f"{alias}." if alias else ""
        parts, params = ["1"], []
        if self.start_ns is not None:
            parts.append(f"{p}timestamp >= ?")
            params.append(self.start_ns)
        if self.end_ns is not None:
            parts.append(f"{p}timestamp <= ?")
            params.append(self.end_ns)
        if self.pids:
            parts.append(f"{p}pid IN ({','.join('?' * len(self.pids))})")
            params.extend(self.pids)
        if self.exclude_source is not None:
            parts.append(f"{p}source != ?")
            params.append(self.exclude_source)
        return " AND ".join(parts), params


def newest_timestamp(conn: sqlite3.Connection, exclude_source: int | None) -> int | None:
    """The newest event of the traced workload (audit events of MCP calls come later)."""
    if exclude_source is None:
        row = conn.execute("SELECT max(timestamp) FROM events").fetchone()
    else:
        # Newest first by the timestamp index, skipping the few audit events at the end.
        row = conn.execute(
            "SELECT timestamp FROM events WHERE source != ? ORDER BY timestamp DESC LIMIT 1",
            (exclude_source,),
        ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def scope(conn: sqlite3.Connection, since: str | None, pids: list[int] | None = None) -> Scope:
    """The events of the last `since` of the trace (a recorded trace has no 'now'), for `pids`,
    without the audit events of MCP calls."""
    seconds = None
    if since:
        try:
            seconds = parse_duration(since)
        except ValueError as e:
            raise ToolInputError(f"since: {e}") from None
    mcp = mcp_source()
    newest = newest_timestamp(conn, mcp)
    start = newest - int(seconds * 1e9) if newest is not None and seconds is not None else None
    # Ends at the newest workload event, so audit events appended later do not stretch it.
    end = newest if mcp is not None and newest is not None else None
    return Scope(start_ns=start, end_ns=end, pids=tuple(pids or ()), exclude_source=mcp)


def op_names() -> dict[tuple[int, int], tuple[str, str]]:
    """(source, op) -> (source name, op name), from the code table."""
    sources = {s.id: s.name for s in codes.sources()}
    return {(o.source, o.id): (sources.get(o.source, str(o.source)), o.name) for o in codes.ops()}


def name_of(source: int, op: int, names: dict[tuple[int, int], tuple[str, str]]) -> tuple[str, str]:
    return names.get((source, op), (str(source), f"op{op}"))


def mcp_source() -> int | None:
    """The code of the MCP audit source, once the code table has it."""
    try:
        return codes.source_named("MCP").id
    except KeyError:
        return None


def comm_column(conn: sqlite3.Connection, alias: str = "") -> str:
    """The events column naming the process, or '' in databases written before it existed."""
    return f"{alias + '.' if alias else ''}comm" if "comm" in table_columns(conn, "events") else "''"


def process_names(conn: sqlite3.Connection) -> dict[int, str]:
    if not table_columns(conn, "process_names"):
        return {}
    return {int(pid): str(name) for pid, name in conn.execute("SELECT pid, name FROM process_names")}


def analysis(conn: sqlite3.Connection, scope: Scope) -> Any | None:
    """The analysis engine's `Analysis` of `scope`, or None while the engine is not installed."""
    try:
        module = importlib.import_module("ingero.analyse")
        analyse, window_type = module.analyse, module.Window
    except (ImportError, AttributeError):
        return None
    window = None
    if scope.start_ns is not None or scope.end_ns is not None:
        # Window ends are exclusive; ours are inclusive.
        window = window_type(scope.start_ns, None if scope.end_ns is None else scope.end_ns + 1)
    return analyse(conn, window=window, pids=list(scope.pids) or None)
