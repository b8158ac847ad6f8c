"""What an agent needs to write SQL: tables and columns of the served file, and the
source/op codes with their argument meanings from the code table (so never stale)."""

from __future__ import annotations

import sqlite3
from typing import Any

from ingero import codes
from ingero.store.database import table_columns

# What the less obvious columns hold; a column not named here speaks for itself.
COLUMN_NOTES: dict[str, dict[str, str]] = {
    "events": {
        "id": "'{node}:{seq}'",
        "timestamp": "unix ns when the call was entered",
        "duration": "ns",
        "source": "source code (see sources)",
        "op": "op code within its source (see ops)",
        "arg0": "op-specific (see ops.arg0)",
        "arg1": "op-specific (see ops.arg1)",
        "ret_code": "return code (0 = success); for MCP audit events 0 ok, 1 refused, 2 error",
        "stack_hash": "stack_traces.hash, 0 = no stack",
        "comm": "process name at the time of the event",
    },
    "stack_traces": {"frames": "JSON list of frames {i: ip, s: symbol, f: file, l: line, pf/pfn/pl: Python}"},
    "causal_chains": {
        "detected_at": "unix ns",
        "recommendations": "JSON list of strings",
        "timeline": "JSON list of {layer, op, detail, dur_us}",
    },
    "event_aggregates": {"bucket": "unix ns of the minute", "sum_dur": "ns", "count": "calls seen"},
    "event_aggregates_5s": {"bucket": "unix ns of the 5 s window"},
    "mcp_calls": {"event_id": "events.id of the audit event", "arguments": "argument digest (SQL capped)"},
}

TIPS = [
    "Durations are nanoseconds: duration/1000.0 is microseconds.",
    "Name ops with JOIN ops o ON o.source_id = e.source AND o.op_id = e.op, or filter on the codes below.",
    "Aggregate first (GROUP BY source, op, pid) and filter on timestamp, pid or source/op: "
    "results are capped.",
    "Only one SELECT per call; PRAGMA, ATTACH, temp objects, recursive CTEs and table-valued functions "
    "are refused.",
]


def schema(conn: sqlite3.Connection) -> dict[str, Any]:
    """The schema of the served database as a structured result."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    tables = []
    for name in names:
        notes = COLUMN_NOTES.get(name, {})
        columns = [{"name": c, "note": notes.get(c, "")} for c in table_columns(conn, name)]
        tables.append({"name": name, "columns": columns})
    return {
        "tables": tables,
        "sources": [{"id": s.id, "name": s.name, "description": s.description} for s in codes.sources()],
        "ops": op_codes(),
        "tips": TIPS,
    }


def op_codes() -> list[dict[str, Any]]:
    names = {s.id: s.name for s in codes.sources()}
    return [
        {
            "source": o.source,
            "source_name": names.get(o.source, str(o.source)),
            "op": o.id,
            "name": o.name,
            "description": o.description,
            "arg0": o.arg0,
            "arg1": o.arg1,
        }
        for o in codes.ops()
    ]


def schema_text(doc: dict[str, Any]) -> str:
    lines = ["Tables (columns; notes in parentheses):"]
    for t in doc["tables"]:
        cols = ", ".join(c["name"] + (f" ({c['note']})" if c["note"] else "") for c in t["columns"])
        lines.append(f"- {t['name']}: {cols}")
    lines.append("Sources: " + ", ".join(f"{s['id']}={s['name']}" for s in doc["sources"]))
    lines.append(op_codes_text(doc["ops"]))
    lines.extend(f"Tip: {tip}" for tip in doc["tips"])
    return "\n".join(lines)


def op_codes_text(ops: list[dict[str, Any]]) -> str:
    lines = ["Ops (source.op name: arg0 | arg1):"]
    for o in ops:
        lines.append(f"  {o['source']}.{o['op']} {o['name']}: {o['arg0'] or '-'} | {o['arg1'] or '-'}")
    return "\n".join(lines)
