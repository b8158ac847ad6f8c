"""`ingero query` (filtered events) and `ingero sql` (read-only SQL) on a database."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ingero import _core, codes
from ingero.cli.output import fail, stdout, table_console
from ingero.serve.sql_sandbox import MAX_ROWS, Sandbox, SqlRefused
from ingero.store import timerange
from ingero.store.database import DatabaseError, open_readonly
from ingero.store.events import EventFilter, merge_selections, select_events
from ingero.store.paths import default_db_path

DbOption = Annotated[
    Path | None, typer.Option("--db", help="Database to read ($INGERO_DB, else ~/.ingero/ingero.db).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def _open(db: Path | None) -> sqlite3.Connection:
    try:
        return open_readonly(db if db is not None else default_db_path())
    except DatabaseError as err:
        fail(str(err))


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).isoformat(sep=" ", timespec="microseconds")


def query(  # noqa: PLR0917 - Typer maps each parameter to an option
    db: DbOption = None,
    since: Annotated[
        str | None, typer.Option(help="Only the last span recorded (e.g. 30s, 5m), up to the newest event.")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="From this time (2026-11-24 15:04, ISO, or 15:04 today).")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Up to this time.")] = None,
    pid: Annotated[
        list[int] | None, typer.Option("--pid", "-p", help="Only this process (repeatable).")
    ] = None,
    op: Annotated[str | None, typer.Option(help="Only this op, e.g. cudaMalloc (case-insensitive).")] = None,
    limit: Annotated[int, typer.Option(help="Show at most the newest N matching events.")] = 100,
    include_rolled: Annotated[
        bool, typer.Option("--include-rolled", help="Also read the rolled-over files (NAME.<ns>.db).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List stored events, oldest first, with filters."""
    if limit <= 0:
        fail("--limit: must be a positive number")
    wanted = None
    if op is not None:
        try:
            wanted = codes.op_named(op)
        except KeyError:
            fail(f'--op: no op named {op!r} (see `ingero sql "SELECT name FROM ops"`)')
    path = db if db is not None else default_db_path()
    conn = _open(path)
    rolled = [_open(Path(p)) for p in _core.rolled_siblings(path)] if include_rolled else []
    try:
        # --since counts back from the newest event of all the files read.
        newest = next((c for c in [conn, *reversed(rolled)] if timerange.newest_event_ns(c)), conn)
        lo, hi = timerange.resolve(newest, since, start, end)
    except ValueError as err:
        fail(str(err))
    wanted_events = EventFilter(start_ns=lo, end_ns=hi, pids=list(pid or []), op=wanted, limit=limit)
    selection = merge_selections([select_events(c, wanted_events) for c in [*rolled, conn]], limit)
    if as_json:
        stdout.out(json.dumps(selection.events), highlight=False)
        return
    table = Table("time", "pid", "comm", "source", "op", "dur_us", "gpu", "arg0", "arg1", "ret", box=None)
    for e in selection.events:
        table.add_row(
            _clock(e["timestamp"]), str(e["pid"]), Text(e["comm"]), e["source"], e["op"],
            f"{e['duration_ns'] / 1000:.1f}", str(e["gpu_id"]), str(e["arg0"]), str(e["arg1"]),
            str(e["ret_code"]),
        )  # fmt: skip
    table_console().print(table)
    stdout.print(f"{len(selection.events)} of {selection.matched} matching events")


def sql(
    statement: Annotated[str, typer.Argument(help="One SELECT statement.", show_default=False)],
    db: DbOption = None,
    limit: Annotated[int, typer.Option(help=f"At most N rows (up to {MAX_ROWS}).")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Run one read-only SELECT on a database (the file is never modified)."""
    conn = _open(db)
    try:
        result = Sandbox(lambda: conn).run(statement, limit=limit)
    except SqlRefused as err:
        fail(str(err))
    if as_json:
        rows: list[dict[str, Any]] = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
        stdout.out(json.dumps({"rows": rows, "truncated": result.truncated}, default=repr), highlight=False)
        return
    table = Table(*result.columns, box=None)
    for r in result.rows:
        # Text, not markup: a traced name such as "[/x]" is data.
        table.add_row(*(Text("NULL" if v is None else str(v)) for v in r))
    table_console().print(table)
    more = f" (cut at {len(result.rows)}: raise --limit or narrow the query)" if result.truncated else ""
    stdout.print(f"{len(result.rows)} rows{more}")


def register(app: typer.Typer) -> None:
    app.command("query")(query)
    app.command("sql")(sql)


__all__ = ["query", "register", "sql"]
