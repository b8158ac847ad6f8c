"""Lazy readers: only the columns, sources and time range an analysis needs, into Polars.

Rows come through ADBC's SQLite driver as Arrow (no per-row Python), on a second read-only
connection opened the way `open_readonly` opens the file: immutable unless a writer is
live, so a published database is never touched. Big reads are split by rowid over two
threads. A connection without a file behind it (e.g. in memory) is read through sqlite3.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import adbc_driver_sqlite.dbapi as adbc
import polars as pl

from ingero import codes
from ingero.store.database import table_columns

# Below this many rows one reader is as fast as two.
_SPLIT_ROWS = 400_000
_CONTEXT_COLUMNS = ("timestamp", "pid", "tid", "source", "op", "duration", "arg0", "arg1", "ret_code")
_OPTIONAL_COLUMNS = ("cgroup_id", "rank")


@dataclass(frozen=True)
class Window:
    """The events to analyse: [start_ns, end_ns) in unix nanoseconds; None is open-ended."""

    start_ns: int | None = None
    end_ns: int | None = None

    def sql(self, column: str = "timestamp") -> tuple[str, list[int]]:
        parts, args = [], []
        if self.start_ns is not None:
            parts.append(f"{column} >= ?")
            args.append(self.start_ns)
        if self.end_ns is not None:
            parts.append(f"{column} < ?")
            args.append(self.end_ns)
        return " AND ".join(parts) or "1", args

    def contains(self, ns: int) -> bool:
        return (self.start_ns is None or ns >= self.start_ns) and (self.end_ns is None or ns < self.end_ns)


def gpu_sources() -> tuple[int, int]:
    return codes.source_named("CUDA").id, codes.source_named("DRIVER").id


def database_file(conn: sqlite3.Connection) -> Path | None:
    for _, name, file in conn.execute("PRAGMA database_list"):
        if name == "main" and file:
            return Path(file)
    return None


def is_live(path: Path) -> bool:
    """A writer has the file open and has written to it: its WAL holds frames."""
    wal = Path(f"{path}-wal")
    return wal.exists() and wal.stat().st_size > 0


class Source:
    """Where rows are read from: ADBC on the connection's file, else the connection itself."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.path = database_file(conn)
        self.columns = set(table_columns(conn, "events"))
        self._uri: str | None = None
        if self.path is not None:
            quoted = str(self.path.resolve()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
            self._uri = f"file:{quoted}?mode=ro" + ("" if is_live(self.path) else "&immutable=1")

    def _adbc(self, sql: str, args: Sequence[Any]) -> pl.DataFrame:
        assert self._uri is not None
        with adbc.connect(self._uri) as conn, conn.cursor() as cur:
            cur.execute(sql, list(args))
            return pl.DataFrame(pl.from_arrow(cur.fetch_arrow_table()))

    def _sqlite(self, sql: str, args: Sequence[Any]) -> pl.DataFrame:
        cur = self.conn.execute(sql, list(args))
        names = [d[0] for d in cur.description]
        return pl.DataFrame(cur.fetchall(), schema=names, orient="row", infer_schema_length=None)

    def query(self, sql: str, args: Sequence[Any] = ()) -> pl.DataFrame:
        if self._uri is None:
            return self._sqlite(sql, args)
        return self._adbc(sql, args)

    def query_split(self, sql: str, args: Sequence[Any]) -> pl.DataFrame:
        """`sql` (with a trailing WHERE clause) read in two rowid halves at once."""
        lo, hi = self.conn.execute("SELECT min(rowid), max(rowid) FROM events").fetchone()
        if self._uri is None or lo is None or hi - lo < _SPLIT_ROWS:
            return self.query(sql, args)
        mid = (lo + hi) // 2
        halves = [(f"{sql} AND rowid <= {mid}", args), (f"{sql} AND rowid > {mid}", args)]
        with ThreadPoolExecutor(2) as pool:
            parts = list(pool.map(lambda q: self.query(*q), halves))
        return pl.concat([p for p in parts if p.height] or parts[:1], how="vertical_relaxed", rechunk=False)


def _pid_filter(pids: Sequence[int] | None, with_target: bool) -> str:
    if not pids:
        return ""
    listed = ",".join(str(int(p)) for p in pids)
    if with_target:
        # A sched_switch names the process it switched to in arg1: the victim's view counts too.
        sched = codes.op_named("sched_switch")
        return (
            f" AND (pid IN ({listed})"
            f" OR (source = {sched.source} AND op = {sched.id} AND arg1 IN ({listed})))"
        )
    return f" AND pid IN ({listed})"


def _empty(columns: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame({c: pl.Series(c, [], dtype=pl.Int64) for c in columns})


def read_gpu_calls(
    src: Source, window: Window, pids: Sequence[int] | None, *, with_cgroups: bool = False
) -> pl.DataFrame:
    """CUDA runtime and driver calls: timestamp, pid, source, op, duration (and cgroup_id), by time."""
    cols = ["timestamp", "pid", "source", "op", "duration"]
    if with_cgroups and "cgroup_id" in src.columns:
        cols.append("cgroup_id")
    where, args = window.sql()
    listed = ",".join(str(s) for s in gpu_sources())
    # `+source` keeps SQLite on a sequential scan: the (source, op) index would turn a
    # read of most of the table into millions of random lookups.
    sql = (
        f"SELECT {', '.join(cols)} FROM events"
        f" WHERE +source IN ({listed}) AND {where}{_pid_filter(pids, False)}"
    )
    df = src.query_split(sql, args)
    df = _empty(cols) if df.height == 0 else df.select([pl.col(c).cast(pl.Int64) for c in cols])
    if "cgroup_id" not in df.columns:
        df = df.with_columns(pl.lit(0, dtype=pl.Int64).alias("cgroup_id"))
    return df if df["timestamp"].is_sorted() else df.sort("timestamp")


def read_context_events(src: Source, window: Window, pids: Sequence[int] | None) -> pl.DataFrame:
    """Every non-GPU event (host, block I/O, TCP, socket, CUDA Graph, NCCL), all columns.

    MCP tool calls are left out: they are the agent's reading of the trace, not part of
    it, and may come long after it ended."""
    cols = list(_CONTEXT_COLUMNS) + [c for c in _OPTIONAL_COLUMNS if c in src.columns]
    excluded = {*gpu_sources(), codes.source_named("MCP").id}
    others = [s.id for s in codes.sources() if s.id not in excluded]
    where, args = window.sql()
    sql = (
        f"SELECT {', '.join(cols)} FROM events WHERE source IN ({','.join(map(str, others))})"
        f" AND {where}{_pid_filter(pids, True)}"
    )
    df = src.query(sql, args)
    if df.height == 0:
        df = _empty(cols)
    df = df.select([pl.col(c).cast(pl.Int64) for c in cols])
    for c in _OPTIONAL_COLUMNS:
        if c not in df.columns:
            df = df.with_columns(pl.lit(None if c == "rank" else 0, dtype=pl.Int64).alias(c))
    return df.sort("timestamp")


def read_snapshots(src: Source, window: Window) -> pl.DataFrame:
    cols = ("timestamp", "cpu_pct", "mem_pct", "mem_avail", "swap_mb", "load_avg")
    tables = {r[0] for r in src.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "system_snapshots" not in tables:
        return pl.DataFrame(schema=dict.fromkeys(cols, pl.Float64))
    where, args = window.sql()
    rows = src.conn.execute(f"SELECT {', '.join(cols)} FROM system_snapshots WHERE {where}", args).fetchall()
    return pl.DataFrame(rows, schema=list(cols), orient="row", infer_schema_length=None)


def process_names(conn: sqlite3.Connection, pids: Sequence[int]) -> dict[int, str]:
    """pid -> name: the kernel's comm at event time where recorded, else process_names."""
    wanted = sorted({int(p) for p in pids})
    names: dict[int, str] = {}
    if not wanted:
        return names
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "process_names" in tables:
        for pid, name in conn.execute("SELECT pid, name FROM process_names"):
            if pid in wanted and name:
                names[int(pid)] = str(name)
    if "comm" in table_columns(conn, "events"):
        for pid in wanted:
            if pid in names:
                continue
            row = conn.execute(
                "SELECT comm FROM events WHERE pid = ? AND comm != '' LIMIT 1", (pid,)
            ).fetchone()
            if row:
                names[pid] = str(row[0])
    return names


def time_bounds(conn: sqlite3.Connection) -> tuple[int | None, int | None]:
    row = conn.execute("SELECT min(timestamp), max(timestamp) FROM events").fetchone()
    return (row[0], row[1]) if row else (None, None)


def start_of_last(conn: sqlite3.Connection, n: int) -> int | None:
    """The timestamp from which the newest `n` events start (`--last N`)."""
    row = conn.execute(
        "SELECT timestamp FROM events ORDER BY timestamp DESC LIMIT 1 OFFSET ?", (n - 1,)
    ).fetchone()
    return int(row[0]) if row else None
