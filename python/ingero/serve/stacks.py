"""get_stacks: events grouped by call stack, with native and Python frames."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ingero.serve.models import ProcessCount, StackGroup, StacksResult
from ingero.serve.sanitize import TEXT_MAX, wrap
from ingero.serve.scope import Scope, comm_column, name_of, op_names, process_names

MAX_FRAMES_JSON = 64 * 1024  # a bigger frames column is ignored, not parsed
MAX_FRAMES = 24
MAX_PROCESSES = 5


def _frames(text: str) -> tuple[list[str], list[str], bool]:
    """Native and Python frame lines of a stack, and whether any were left out."""
    if len(text) > MAX_FRAMES_JSON:
        return [], [], True
    try:
        frames = json.loads(text) if text else []
    except ValueError:
        return [], [], False
    native: list[str] = []
    python: list[str] = []
    for frame in frames if isinstance(frames, list) else []:
        if not isinstance(frame, dict):
            continue
        py_func = frame.get("pfn") or frame.get("py_func")
        # A Python frame merged into the native stack has no native part.
        if not py_func or frame.get("s") or frame.get("i"):
            symbol = str(frame.get("s") or frame.get("i") or "?")
            where = str(frame.get("f") or frame.get("m") or "")
            if frame.get("l"):
                where += f":{frame['l']}"
            native.append(symbol + (f" at {where}" if where else ""))
        if py_func:
            py_file = frame.get("pf") or frame.get("py_file") or ""
            py_line = frame.get("pl") or frame.get("py_line") or ""
            python.append(f"{py_func} ({py_file}:{py_line})")
    cut = len(native) > MAX_FRAMES or len(python) > MAX_FRAMES
    return native[:MAX_FRAMES], python[:MAX_FRAMES], cut


def stacks(
    conn: sqlite3.Connection, scope: Scope, source: int | None, op: tuple[int, int] | None, limit: int
) -> StacksResult:
    if conn.execute("SELECT 1 FROM stack_traces LIMIT 1").fetchone() is None:
        return StacksResult(
            total_stacks=0, stacks=[], note="This trace has no stacks (traced without --stack)."
        )
    where, params = scope.where("e")
    # Two ranges rather than != 0, so the (source, op, stack_hash) index can skip stackless events.
    conds: list[str] = [where, "(e.stack_hash < 0 OR e.stack_hash > 0)"]
    args: list[Any] = list(params)
    if op is not None:
        conds.append("e.source = ? AND e.op = ?")
        args.extend(op)
    elif source is not None:
        conds.append("e.source = ?")
        args.append(source)
    condition = " AND ".join(conds)
    total = conn.execute(
        f"SELECT count(DISTINCT e.stack_hash) FROM events e WHERE {condition}", args
    ).fetchone()[0]
    groups = conn.execute(
        f"SELECT e.stack_hash, count(*) AS n, avg(e.duration), min(e.duration), max(e.duration), sum(e.arg0) "
        f"FROM events e WHERE {condition} GROUP BY e.stack_hash ORDER BY n DESC LIMIT ?",
        [*args, limit],
    ).fetchall()
    names = op_names()
    names_by_pid = process_names(conn)
    comm = comm_column(conn, "e")
    result: list[StackGroup] = []
    any_cut = False
    for stack_hash, n, avg, lo, hi, sum_arg0 in groups:
        row = conn.execute("SELECT frames, ips FROM stack_traces WHERE hash = ?", (stack_hash,)).fetchone()
        native, python, cut = _frames(str(row[0]) if row else "")
        if not native and row and row[1]:
            native = [ip for ip in str(row[1]).split(",")[:MAX_FRAMES] if ip]
        any_cut = any_cut or cut
        ops = [
            name_of(s, o, names)[1]
            for s, o in conn.execute(
                f"SELECT DISTINCT e.source, e.op FROM events e WHERE {condition} AND e.stack_hash = ?",
                [*args, stack_hash],
            )
        ]
        procs = [
            ProcessCount(pid=pid, name=wrap(str(names_by_pid.get(pid) or comm or "")), events=count)
            for pid, comm, count in conn.execute(
                f"SELECT e.pid, max({comm}), count(*) AS c FROM events e "
                f"WHERE {condition} AND e.stack_hash = ? GROUP BY e.pid ORDER BY c DESC LIMIT ?",
                [*args, stack_hash, MAX_PROCESSES],
            )
        ]
        result.append(
            StackGroup(
                hash=stack_hash,
                count=n,
                avg_us=(avg or 0) / 1000,
                min_us=(lo or 0) / 1000,
                max_us=(hi or 0) / 1000,
                sum_arg0=int(sum_arg0 or 0),
                ops=ops,
                processes=procs,
                native_frames=[wrap(f, TEXT_MAX) for f in native],
                python_frames=[wrap(f, TEXT_MAX) for f in python],
            )
        )
    note = ""
    if any_cut:
        note = (
            f"Some stacks show only their first {MAX_FRAMES} frames (or none, when the frames exceed 64 KiB)."
        )
    if total > len(result):
        note = (note + " " if note else "") + (
            f"Showing the {len(result)} most frequent of {total} stacks; "
            "filter by op, pid or since, or raise limit."
        )
    return StacksResult(
        total_stacks=total, stacks=result, truncated=total > len(result) or any_cut, note=note
    )


def stacks_text(r: StacksResult) -> str:
    if not r.stacks:
        return "No stacks recorded for this filter (events need stack capture: `ingero trace --stack`)."
    lines = [f"{len(r.stacks)} of {r.total_stacks} stacks, most frequent first:"]
    for s in r.stacks:
        procs = ", ".join(f"{p.pid} {p.name}" for p in s.processes)
        lines.append(
            f"#{s.hash}: {s.count} calls of {', '.join(s.ops)}; "
            f"avg {s.avg_us:.1f} us, max {s.max_us:.1f} us; {procs}"
        )
        lines.extend(f"    {f}" for f in s.native_frames)
        lines.extend(f"    py {f}" for f in s.python_frames)
    return "\n".join(lines)
