"""`ingero explain`: the incident report (causal chains) of a recorded trace."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ingero.analyse import Analysis, Window, analyse, stored_chains
from ingero.analyse import load as loader
from ingero.analyse.processes import contention, per_process_table
from ingero.analyse.report import incident_report, per_process_text, stored_report
from ingero.cli.output import fail, stderr, stdout
from ingero.durations import parse_duration
from ingero.store.database import DatabaseError, open_readonly
from ingero.store.paths import default_db_path

BAD_INPUT = 2
LIVE_DEFAULT_SINCE = "5m"


def _parse_pids(values: list[str]) -> list[int]:
    pids = []
    for value in values:
        for raw in value.split(","):
            part = raw.strip()
            if not part.isdigit() or int(part) <= 0:
                fail(f"--pid: not a process id: {part!r}", BAD_INPUT)
            pids.append(int(part))
    return pids


def _parse_time(flag: str, text: str) -> int:
    """Unix nanoseconds of `text`: an ISO date-time, HH:MM[:SS] today (local time), or unix seconds."""
    value = text.strip()
    try:
        if value.replace(".", "", 1).isdigit():
            number = float(value)
            return int(number) if number > 1e15 else int(number * 1e9)
        if len(value) <= 8 and ":" in value:
            clock = dt.time.fromisoformat(value)
            moment = dt.datetime.combine(dt.date.today(), clock)
        else:
            moment = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"{flag}: not a time: {text!r} (examples: '2026-02-20 15:40', '15:40', 1771600800)", BAD_INPUT)
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return int(moment.timestamp() * 1e9)


def _window(
    conn: sqlite3.Connection, since: str | None, start: str | None, end: str | None, last: int | None
) -> Window:
    live = (path := loader.database_file(conn)) is not None and loader.is_live(path)
    if last is not None:
        if last <= 0:
            fail("--last: must be a positive number of events", BAD_INPUT)
        return Window(start_ns=loader.start_of_last(conn, last))
    if start or end:
        lo = _parse_time("--from", start) if start else None
        hi = _parse_time("--to", end) if end else None
        if lo is not None and hi is not None and hi <= lo:
            fail("--to: must be later than --from", BAD_INPUT)
        # --to names the last moment wanted, so it is included.
        return Window(lo, None if hi is None else hi + 1)
    if since is None and not live:
        return Window()  # a saved database: all of it
    try:
        seconds = parse_duration(since or LIVE_DEFAULT_SINCE)
    except ValueError as e:
        fail(f"--since: {e}", BAD_INPUT)
    # Live: the last minutes of the clock. Saved: the last minutes of the trace.
    anchor = time.time_ns() if live else (loader.time_bounds(conn)[1] or time.time_ns()) + 1
    return Window(start_ns=anchor - int(seconds * 1e9), end_ns=None if live else anchor)


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=stderr, transient=True
    ) as bar:
        task = bar.add_task("analysing", total=1.0)

        def update(stage: str, fraction: float) -> None:
            bar.update(task, description=stage, completed=fraction)

        yield update


def _json_analysis(a: Analysis) -> dict[str, Any]:
    return {
        "window": {"start_ns": a.window.start_ns, "end_ns": a.window.end_ns},
        "first_ns": a.first_ns,
        "last_ns": a.last_ns,
        "events": a.events,
        "gpu_calls": a.gpu_calls,
        "node": a.node,
        "system": None if a.system is None else a.system.__dict__,
        "chains": [c.to_dict() for c in a.chains],
        "op_stats": a.op_stats.to_dicts(),
    }


def explain(  # noqa: PLR0917 - Typer maps each parameter to an option
    db: Annotated[
        Path | None, typer.Option("--db", help="Database to read ($INGERO_DB, else ~/.ingero/ingero.db).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only the last DURATION (e.g. 5m): of the clock while a trace is writing, else of the "
            "trace. Default: 5m while writing, else the whole database."
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Start time ('2026-02-20 15:40', '15:40' or unix seconds).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="End time, included (same forms as --from).")
    ] = None,
    last: Annotated[int | None, typer.Option("--last", help="Only the N most recent events.")] = None,
    pid: Annotated[
        list[str] | None,
        typer.Option("--pid", "-p", help="Only these processes: PID or PID,PID (repeatable)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the full chain objects and op stats as JSON.")
    ] = False,
    per_process: Annotated[
        bool, typer.Option("--per-process", help="Per-process CUDA/driver calls and GPU contention.")
    ] = False,
    chains: Annotated[
        bool, typer.Option("--chains", help="Show the chains stored during the trace, without re-analysis.")
    ] = False,
) -> None:
    """Explain a recorded trace: causal chains from the host to the CUDA calls they slowed, with fixes."""
    pids = _parse_pids(pid or [])
    path = db or default_db_path()
    try:
        conn = open_readonly(path)
    except DatabaseError as e:
        fail(str(e), BAD_INPUT)
    with conn:
        window = _window(conn, since, start, end, last)
        if chains:
            found = stored_chains(conn, window if window.start_ns or window.end_ns else None)
            if as_json:
                stdout.print_json(json.dumps([c.to_dict() for c in found], ensure_ascii=False))
            else:
                stdout.print(stored_report(found), markup=False, end="")
            return
        if per_process:
            table = per_process_table(conn, window, pids or None)
            if as_json:
                procs, overlap = contention(table)
                rows = table.drop("pid_calls").to_dicts() if table.height else []
                stdout.print_json(json.dumps({"processes": procs, "overlap_ns": overlap, "ops": rows}))
            else:
                stdout.print(per_process_text(table), markup=False, end="")
            return
        with _progress(stderr.is_terminal and not as_json) as progress:
            analysis = analyse(conn, window, pids or None, progress)
    if as_json:
        stdout.print_json(json.dumps(_json_analysis(analysis), ensure_ascii=False))
    else:
        stdout.print(incident_report(analysis), markup=False, end="")


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)


__all__ = ["explain", "register"]
