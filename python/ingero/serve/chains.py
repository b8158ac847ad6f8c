"""get_causal_chains: the top chains, from the analysis engine or the stored rows."""

from __future__ import annotations

import json
import sqlite3
from functools import cache
from typing import Any

from ingero import codes
from ingero.serve.models import Chain, ChainsResult, TimelineEntry
from ingero.serve.sanitize import NAME_MAX, TEXT_MAX, wrap
from ingero.serve.scope import Scope

_SEVERITY_RANK = {"HIGH": 0, "MEDIUM": 1, "LOW": 2}


def _json_list(text: Any) -> list[Any]:
    if isinstance(text, list):
        return text
    try:
        value = json.loads(text) if isinstance(text, str) and text else []
    except ValueError:
        return [text]
    return value if isinstance(value, list) else [value]


def _chain(d: dict[str, Any]) -> Chain:
    timeline = []
    for entry in _json_list(d.get("timeline", "")):
        if isinstance(entry, dict):
            timeline.append(
                TimelineEntry(
                    layer=_known(entry.get("layer", "")),
                    op=_known(entry.get("op", "")),
                    detail=wrap(str(entry.get("detail", "")), TEXT_MAX),
                    dur_us=float(entry.get("dur_us") or 0),
                )
            )
    return Chain(
        id=wrap(str(d.get("id", ""))),
        severity=_severity(d.get("severity", "")),
        summary=wrap(str(d.get("summary", "")), TEXT_MAX),
        root_cause=wrap(str(d.get("root_cause", "")), TEXT_MAX),
        explanation=wrap(str(d.get("explanation", "")), TEXT_MAX),
        recommendations=[wrap(str(r), TEXT_MAX) for r in _json_list(d.get("recommendations", ""))],
        cuda_op=_known(d.get("cuda_op", "")),
        cuda_p99_us=float(d.get("cuda_p99_us") or 0),
        cuda_p50_us=float(d.get("cuda_p50_us") or 0),
        tail_ratio=float(d.get("tail_ratio") or 0),
        detected_at=int(d.get("detected_at") or 0),
        node=wrap(str(d.get("node", ""))),
        timeline=timeline,
    )


def _known(value: Any) -> str:
    """A layer or op name as it is when it is one of ours (fewer tokens), else wrapped as data."""
    text = str(value)
    return text if text in _vocabulary() else wrap(text, NAME_MAX)


@cache
def _vocabulary() -> frozenset[str]:
    layers = {s.name for s in codes.sources()} | {"SYSTEM", "IO", "NET", "CGROUP", "K8S"}
    return frozenset(layers | {o.name for o in codes.ops()} | {"cpu", "mem", "swap", "load"})


def _severity(value: Any) -> str:
    text = str(value).upper()
    return text if text in _SEVERITY_RANK else wrap(str(value))


def _rank(d: dict[str, Any]) -> tuple[int, float]:
    return (_SEVERITY_RANK.get(str(d.get("severity", "")).upper(), 3), -float(d.get("tail_ratio") or 0))


def _stored(conn: sqlite3.Connection, scope: Scope) -> list[dict[str, Any]]:
    where, params = "1", []
    if scope.start_ns is not None:
        where, params = "detected_at >= ?", [scope.start_ns]
    cursor = conn.execute(f"SELECT * FROM causal_chains WHERE {where}", params)
    columns = [d[0] for d in cursor.description]
    rows = [dict(zip(columns, r, strict=True)) for r in cursor]
    # The original stores one row per detection: keep the strongest per (op, severity).
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (str(row.get("cuda_op", "")), str(row.get("severity", "")))
        if key not in best or float(row.get("tail_ratio") or 0) > float(best[key].get("tail_ratio") or 0):
            best[key] = row
    return list(best.values())


def causal_chains(conn: sqlite3.Connection, scope: Scope, top_n: int, analysed: Any | None) -> ChainsResult:
    """Chains of `scope`: from `analysed` (the engine's Analysis of it) when given, else stored."""
    found = None if analysed is None else [c.to_dict() for c in analysed.chains]
    source, note = "analysis", ""
    if found is None:
        source = "stored"
        found = _stored(conn, scope)
        if scope.pids:
            note = "Stored chains are not per process: the pid filter needs the analysis engine."
    found.sort(key=_rank)
    shown = found if top_n <= 0 else found[:top_n]
    return ChainsResult(
        source=source,
        total=len(found),
        chains=[_chain(d) for d in shown],
        truncated=len(shown) < len(found),
        note=note,
    )


def chains_text(r: ChainsResult) -> str:
    if not r.chains:
        return f"No causal chains ({r.source})."
    lines = [f"{len(r.chains)} of {r.total} causal chains ({r.source}), most severe first:"]
    for c in r.chains:
        lines.append(f"[{c.severity}] {c.summary}")
        lines.append(f"  root cause: {c.root_cause}")
        for t in c.timeline:
            lines.append(f"  {t.layer} {t.op}: {t.detail} ({t.dur_us:.0f} us)")
        if c.recommendations:
            lines.append("  fix: " + "; ".join(c.recommendations))
    return "\n".join(lines)
