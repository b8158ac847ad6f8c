"""graph_lifecycle and graph_frequency: CUDA Graph capture, instantiation and replay."""

from __future__ import annotations

import sqlite3
import statistics

from ingero import codes
from ingero.serve.models import ExecHandleRate, GraphEvent, GraphFrequencyResult, GraphLifecycleResult
from ingero.serve.scope import Scope

MAX_TIMELINE = 200
_MODES = {0: "global", 1: "thread_local", 2: "relaxed"}


def _graph_ops() -> tuple[int, dict[int, str]]:
    source = codes.source_named("CUDA_GRAPH").id
    return source, {o.id: o.name for o in codes.ops() if o.source == source}


def _events(conn: sqlite3.Connection, scope: Scope) -> list[tuple[int, int, int, int, int, int]]:
    source, _ = _graph_ops()
    where, params = scope.where()
    return conn.execute(
        f"SELECT timestamp, op, duration, arg0, arg1, ret_code FROM events WHERE {where} AND source = ? "
        "ORDER BY timestamp",
        [*params, source],
    ).fetchall()


def lifecycle(conn: sqlite3.Connection, scope: Scope) -> GraphLifecycleResult:
    _, names = _graph_ops()
    rows = _events(conn, scope)
    entries: list[GraphEvent] = []
    counts = {"graphBeginCapture": 0, "graphInstantiate": 0, "graphLaunch": 0}
    for ts, op, duration, arg0, arg1, ret in rows:
        name = names.get(op, f"op{op}")
        if name in counts:
            counts[name] += 1
        event = GraphEvent(t_ns=ts, op=name, duration_us=duration / 1000, ret_code=ret)
        if name == "graphBeginCapture":
            event.stream, event.mode = hex(arg0), _MODES.get(arg1, str(arg1))
        elif name == "graphEndCapture":
            event.stream, event.graph = hex(arg0), hex(arg1)
        elif name == "graphInstantiate":
            event.graph, event.exec = hex(arg0), hex(arg1)
        elif name == "graphLaunch":
            event.exec, event.stream = hex(arg0), hex(arg1)
        entries.append(event)
    captures = counts["graphBeginCapture"]
    cut = len(entries) > MAX_TIMELINE
    return GraphLifecycleResult(
        pid=scope.pids[0],
        captures=captures,
        instantiations=counts["graphInstantiate"],
        launches=counts["graphLaunch"],
        launches_per_capture=counts["graphLaunch"] / captures if captures else None,
        events=entries[:MAX_TIMELINE],
        truncated=cut,
        note=(
            f"Timeline shows the first {MAX_TIMELINE} of {len(entries)} graph events; pass since to see "
            "the latest, or graph_frequency for per-handle rates."
            if cut
            else ("" if entries else "No CUDA Graph events for this pid.")
        ),
    )


def frequency(conn: sqlite3.Connection, scope: Scope, window_seconds: float) -> GraphFrequencyResult:
    _, names = _graph_ops()
    rows = _events(conn, scope)
    pool: list[int] = []
    launches: dict[int, list[int]] = {}
    captures = instantiations = 0
    for ts, op, _duration, arg0, arg1, _ret in rows:
        name = names.get(op, "")
        if name == "graphBeginCapture":
            captures += 1
        elif name == "graphInstantiate":
            instantiations += 1
            if arg1 not in pool:
                pool.append(arg1)
        elif name == "graphLaunch":
            launches.setdefault(arg0, []).append(ts)
            if arg0 not in pool:
                pool.append(arg0)
    end = rows[-1][0] if rows else 0
    start = end - int(window_seconds * 1e9)
    rates = {h: sum(1 for t in launches.get(h, []) if t >= start) / window_seconds for h in pool}
    median = statistics.median(rates.values()) if rates else 0.0
    handles = []
    for h in sorted(pool, key=lambda h: -rates[h]):
        n = len(launches.get(h, []))
        klass = "never-launched" if n == 0 else ("HOT" if rates[h] >= max(median, 1.0) else "cold")
        handles.append(ExecHandleRate(exec=hex(h), launches=n, rate_per_s=round(rates[h], 3), klass=klass))
    return GraphFrequencyResult(
        pid=scope.pids[0],
        window_seconds=window_seconds,
        pool_size=len(pool),
        captures=captures,
        instantiations=instantiations,
        recaptures=max(0, instantiations - len(pool)),
        handles=handles,
        note="" if rows else "No CUDA Graph events for this pid.",
    )


def lifecycle_text(r: GraphLifecycleResult) -> str:
    lines = [
        f"pid {r.pid}: {r.captures} captures, {r.instantiations} instantiations, {r.launches} launches"
        + (f" ({r.launches_per_capture:.1f} per capture)" if r.launches_per_capture is not None else "")
    ]
    for e in r.events:
        detail = " ".join(
            f"{k}={v}"
            for k, v in (("stream", e.stream), ("graph", e.graph), ("exec", e.exec), ("mode", e.mode))
            if v
        )
        status = "ok" if e.ret_code == 0 else f"err={e.ret_code}"
        lines.append(f"  {e.t_ns} {e.op} {detail} {e.duration_us:.1f}us {status}")
    return "\n".join(lines)


def frequency_text(r: GraphFrequencyResult) -> str:
    lines = [
        f"pid {r.pid}: pool {r.pool_size} exec handles, {r.captures} captures, {r.instantiations} "
        f"instantiations, re-captures {r.recaptures}; rates over the last {r.window_seconds:g}s:"
    ]
    lines.extend(f"  {h.exec}: {h.launches} launches, {h.rate_per_s}/s {h.klass}" for h in r.handles)
    return "\n".join(lines)
