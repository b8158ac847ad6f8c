"""Every MCP request becomes one audit event (source MCP) with its tool, status, rows and
bytes: in the served database when it may be written, else in the default database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from ingero import codes
from tests.conftest import start_idle_trace
from tests.python.mcp_session import digest, run, structured, text_of
from tests.synthdb import write_synthetic_db

# (tool, arguments, expected status); None arguments mean a prompt fetch / resource read.
CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("get_trace_stats", {}, "ok"),
    ("run_sql", {"query": "SELECT count(*) FROM events"}, "ok"),
    ("run_sql", {"query": "DROP TABLE events"}, "refused"),
    ("get_stacks", {"op": "noSuchOp"}, "refused"),
    ("get_causal_chains", {"top_n": 3}, "ok"),
    ("no_such_tool", {}, "refused"),
    ("run_sql", {"query": "SELECT 1", "limit": 0}, "refused"),
    ("get_schema", {}, "ok"),
    ("get_prompt", {"name": "investigate"}, "ok"),
    ("read_resource", {"uri": "ingero://ops"}, "ok"),
]


async def make_calls(client: Client) -> None:
    await client.list_tools()  # listing is not a call of anything: not audited
    for tool, arguments, status in CALLS:
        if tool == "get_prompt":
            await client.get_prompt(arguments["name"])
        elif tool == "read_resource":
            await client.read_resource(arguments["uri"])
        else:
            result = await client.call_tool(tool, arguments)
            assert result.is_error == (status != "ok"), text_of(result)


def audit_rows(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT o.name, m.tool, m.status, e.ret_code, e.arg0, e.arg1, m.transport, m.arguments "
            "FROM events e JOIN mcp_calls m ON m.event_id = e.id "
            "JOIN ops o ON o.source_id = e.source AND o.op_id = e.op "
            "WHERE e.source = ? ORDER BY e.timestamp",
            (codes.source_named("MCP").id,),
        ).fetchall()
    finally:
        conn.close()


def check_rows(rows: list[tuple[Any, ...]]) -> None:
    assert len(rows) == len(CALLS)
    ret_codes = {"ok": 0, "refused": 1, "error": 2}
    for (op, tool, status, ret, _rows, size, transport, _args), (name, _, expected) in zip(
        rows, CALLS, strict=True
    ):
        assert tool == name
        assert op == (name if name != "no_such_tool" else "other_tool")
        assert (status, ret) == (expected, ret_codes[expected])
        assert transport == "stdio"
        assert size > 0
    assert "DROP TABLE events" in rows[2][7]


def test_calls_on_a_read_only_database_are_audited_in_the_default_one(tmp_path: Path) -> None:
    db = write_synthetic_db(tmp_path / "t.db", 1_000)
    db.chmod(0o444)
    before = digest(db)
    audit = tmp_path / "audit.db"

    async def body(client: Client) -> None:
        where = structured(await client.call_tool("get_check", {}))["audit"]
        assert str(audit) in where
        await make_calls(client)

    run(db, audit, body)
    assert digest(db) == before
    rows = audit_rows(audit)
    assert rows[0][1] == "get_check"
    check_rows(rows[1:])


def test_calls_on_a_writable_database_are_queryable_in_it(tmp_path: Path) -> None:
    db = write_synthetic_db(tmp_path / "t.db", 1_000)
    default = tmp_path / "default.db"
    seen: list[list[Any]] = []

    async def body(client: Client) -> None:
        await make_calls(client)
        query = (
            "SELECT m.tool, m.status FROM events e JOIN mcp_calls m ON m.event_id = e.id ORDER BY e.timestamp"
        )
        result = structured(await client.call_tool("run_sql", {"query": query}))
        assert str(db) in result["audit"]
        seen.extend(result["rows"])
        stats = structured(await client.call_tool("get_trace_stats", {}))
        assert stats["total_events"] == 1_000  # audit events are not workload events
        assert stats["mcp_calls"] == len(CALLS) + 1

    run(db, default, body)
    assert not default.exists()
    # Strings read back from the database are traced data like any other.
    assert seen == [
        [f"[traced-data]{t}[/traced-data]", f"[traced-data]{s}[/traced-data]"] for t, _, s in CALLS
    ]
    check_rows(audit_rows(db)[: len(CALLS)])


@pytest.mark.usefixtures("privileged")
def test_calls_while_a_trace_writes_join_its_stream(tmp_path: Path, simcuda_lib: Path) -> None:
    db = tmp_path / "live.db"
    trace = start_idle_trace(db, simcuda_lib, 8)
    names = ["get_trace_stats", "get_schema", "run_sql"]

    async def body(client: Client) -> None:
        for name in names:
            arguments = {"query": "SELECT count(*) FROM events"} if name == "run_sql" else {}
            assert str(db) in structured(await client.call_tool(name, arguments))["audit"]

    run(db, tmp_path / "default.db", body)
    _, err = trace.communicate(timeout=120)
    assert trace.returncode == 0, err
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT m.event_id, m.tool FROM mcp_calls m JOIN events e ON e.id = m.event_id"
    ).fetchall()
    conn.close()
    assert [tool for _, tool in sorted(rows, key=lambda r: int(r[0].split(":")[1]))] == names
    # Delivered through the trace's writer: ids in its own node's sequence.
    assert all(event_id.startswith("n1:") for event_id, _ in rows)
    assert not (tmp_path / "default.db").exists()
