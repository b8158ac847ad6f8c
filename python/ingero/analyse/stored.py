"""Chains stored in `causal_chains` (found live during a trace), read back as CausalChain."""

from __future__ import annotations

import json
import sqlite3

from ingero.analyse.chain import CausalChain, TimelineEvent, cause_kinds
from ingero.analyse.load import Window
from ingero.store.database import table_columns


def _list(text: str) -> list[str]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return [part.strip() for part in text.split(";") if part.strip()]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _timeline(text: str) -> list[TimelineEvent]:
    try:
        items = json.loads(text) if text else []
    except json.JSONDecodeError:
        return []
    return [
        TimelineEvent(
            str(t.get("layer", "")), str(t.get("op", "")), str(t.get("detail", "")), int(t.get("dur_us", 0))
        )
        for t in items
        if isinstance(t, dict)
    ]


def stored_chains(conn: sqlite3.Connection, window: Window | None = None) -> list[CausalChain]:
    """The rows of `causal_chains` (detected within `window`), newest first."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "causal_chains" not in tables:
        return []
    have = set(table_columns(conn, "causal_chains"))
    wanted = (
        "id", "detected_at", "severity", "summary", "root_cause", "explanation", "recommendations",
        "cuda_op", "cuda_p99_us", "cuda_p50_us", "tail_ratio", "timeline", "node",
    )  # fmt: skip
    select = ", ".join(c if c in have else "NULL" for c in wanted)
    where, args = (window or Window()).sql("detected_at")
    rows = conn.execute(f"SELECT {select} FROM causal_chains WHERE {where} ORDER BY detected_at DESC", args)
    chains = []
    for r in rows:
        chains.append(
            CausalChain(
                id=str(r[0]),
                detected_at=int(r[1] or 0),
                severity=str(r[2] or ""),
                summary=str(r[3] or ""),
                root_cause=str(r[4] or ""),
                explanation=str(r[5] or ""),
                recommendations=_list(r[6] or ""),
                cuda_op=str(r[7] or ""),
                cuda_p99_us=int(r[8] or 0),
                cuda_p50_us=int(r[9] or 0),
                tail_ratio=float(r[10] or 0.0),
                timeline=_timeline(r[11] or ""),
                node=str(r[12] or ""),
                origin="stored",
            )
        )
    return chains


def _signature(chain: CausalChain) -> tuple[str, str, frozenset[str]]:
    return chain.cuda_op or chain.key, chain.severity, frozenset(cause_kinds(chain.root_cause))


def merge_stored(found: list[CausalChain], stored: list[CausalChain]) -> list[CausalChain]:
    """`found` plus one stored chain per (node, op, severity, kind of cause) the replay did not find.

    A live trace sees every event; the database keeps a sample. What the live correlator
    concluded is kept as evidence where the stored sample can no longer show it.
    """
    covered = {(c.cuda_op or c.key, c.severity): cause_kinds(c.root_cause) for c in found}
    kept: dict[tuple[str, str, str, frozenset[str]], CausalChain] = {}
    for chain in stored:  # newest first: the newest of each kind stands for the rest
        op, severity, kinds = _signature(chain)
        if kinds <= covered.get((op, severity), set()) and (op, severity) in covered:
            continue
        kept.setdefault((chain.node, op, severity, kinds), chain)
    return found + list(kept.values())
