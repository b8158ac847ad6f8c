"""`ingero mcp` over stdio with a real MCP client: tools, schemas and results on every
published database, in both the handshake-era and the current protocol revision."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from mcp import Client

from ingero import codes
from ingero.serve.budget import MAX_RESULT_BYTES
from ingero.serve.tools import MAX_TEXT_BYTES
from tests.python.mcp_session import (
    INGERO,
    MODES,
    TOOLS,
    digest,
    run,
    shared_databases,
    structured,
    text_of,
)
from tests.synthdb import write_synthetic_db

DATABASES = shared_databases()


def size(content: dict[str, Any]) -> int:
    return len(json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode())


def read(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture(params=[str(p) for p in DATABASES] or [""], ids=[p.name for p in DATABASES] or ["none"])
def shared_db(request: pytest.FixtureRequest) -> Path:
    if not request.param:
        pytest.skip("no published databases in ../shared/traces")
    return Path(request.param)


@pytest.mark.parametrize("mode", MODES)
def test_every_tool_answers_to_its_schema(shared_db: Path, mode: str, tmp_path: Path) -> None:
    before = digest(shared_db)
    events = read(shared_db, "SELECT count(*) FROM events")[0][0]
    stored_chains = read(shared_db, "SELECT count(*) FROM causal_chains")[0][0]
    busiest_pid = read(shared_db, "SELECT pid FROM events GROUP BY pid ORDER BY count(*) DESC LIMIT 1")[0][0]
    audit = tmp_path / "audit.db"

    async def body(client: Client) -> None:
        listed = (await client.list_tools()).tools
        assert {t.name for t in listed} == TOOLS
        schemas = {t.name: t.output_schema for t in listed}
        for tool in listed:
            assert tool.input_schema["type"] == "object"
            assert tool.output_schema is not None
            assert tool.output_schema["type"] == "object"
            assert tool.description

        calls: dict[str, dict[str, Any]] = {
            "get_check": {},
            "get_trace_stats": {},
            "get_causal_chains": {"top_n": 0},
            "run_sql": {"query": "SELECT source, op, count(*) AS n FROM events GROUP BY source, op"},
            "get_stacks": {"limit": 5},
            "graph_lifecycle": {"pid": busiest_pid},
            "graph_frequency": {"pid": busiest_pid},
            "get_schema": {},
        }
        results = {}
        for name, arguments in calls.items():
            result = await client.call_tool(name, arguments)
            content = structured(result)
            jsonschema.validate(content, schemas[name])
            assert text_of(result).strip()
            assert size(content) <= MAX_RESULT_BYTES
            assert len(text_of(result).encode()) <= MAX_TEXT_BYTES + 200
            assert str(audit) in content["audit"]
            results[name] = content

        stats = results["get_trace_stats"]
        assert stats["total_events"] == events
        assert sum(op["count"] for op in stats["ops"]) == events
        assert stats["stored_chains"] == stored_chains
        by_op = {(r[0], r[1]): r[2] for r in results["run_sql"]["rows"]}
        assert by_op == {
            (s, o): n for s, o, n in read(shared_db, "SELECT source, op, count(*) FROM events GROUP BY 1, 2")
        }
        chains = results["get_causal_chains"]
        assert 0 < chains["total"] <= stored_chains
        assert [c["severity"] for c in chains["chains"]] == sorted(
            (c["severity"] for c in chains["chains"]), key=["HIGH", "MEDIUM", "LOW"].index
        )
        tables = {t["name"] for t in results["get_schema"]["tables"]}
        assert tables == {
            r[0] for r in read(shared_db, "SELECT name FROM sqlite_master WHERE type = 'table'")
        } - {"sqlite_sequence"}

    run(shared_db, audit, body, mode)
    assert digest(shared_db) == before


@pytest.mark.parametrize("mode", MODES)
def test_investigate_prompt_and_resources(mode: str, tmp_path: Path) -> None:
    db = write_synthetic_db(tmp_path / "t.db", 2_000, scenario="sched-tail")

    async def body(client: Client) -> None:
        prompts = (await client.list_prompts()).prompts
        assert [p.name for p in prompts] == ["investigate"]
        prompt = await client.get_prompt("investigate")
        text = prompt.messages[0].content.text  # type: ignore[union-attr]
        for tool in ("get_trace_stats", "get_causal_chains", "get_stacks", "run_sql"):
            assert tool in text
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert resources == {"ingero://schema", "ingero://ops"}
        schema = (await client.read_resource("ingero://schema")).contents[0]
        assert "events:" in schema.text  # type: ignore[union-attr]
        ops = json.loads((await client.read_resource("ingero://ops")).contents[0].text)  # type: ignore[union-attr]
        listed = {(o["source"], o["op"], o["name"]) for o in ops["ops"]}
        assert listed == {(o.source, o.id, o.name) for o in codes.ops()}

    run(db, tmp_path / "audit.db", body, mode)


def test_big_results_are_cut_with_a_way_to_narrow(tmp_path: Path) -> None:
    db = write_synthetic_db(tmp_path / "t.db", 20_000, scenario="sched-tail")

    async def body(client: Client) -> None:
        result = structured(
            await client.call_tool("run_sql", {"query": "SELECT * FROM events", "limit": 5000})
        )
        assert result["truncated"]
        assert 0 < result["row_count"] == len(result["rows"]) < 5000
        assert "Truncated" in result["note"]
        assert "GROUP BY" in result["note"]
        assert size(result) <= MAX_RESULT_BYTES
        small = structured(await client.call_tool("run_sql", {"query": "SELECT id FROM events", "limit": 10}))
        assert small["truncated"]
        assert small["row_count"] == 10
        assert "WHERE" in small["note"]

    run(db, tmp_path / "audit.db", body)


def test_since_narrows_to_the_end_of_the_trace(tmp_path: Path) -> None:
    db = write_synthetic_db(tmp_path / "t.db", 5_000, scenario="clean")
    first, last = read(db, "SELECT min(timestamp), max(timestamp) FROM events")[0]
    half = (last - first) / 2e9
    expected = read(db, f"SELECT count(*) FROM events WHERE timestamp >= {last} - {int(half * 1e9)}")[0][0]

    async def body(client: Client) -> None:
        stats = structured(await client.call_tool("get_trace_stats", {"since": f"{half}s"}))
        assert stats["total_events"] == expected < 5_000
        refused = await client.call_tool("get_trace_stats", {"since": "yesterday"})
        assert refused.is_error
        assert "since" in text_of(refused)

    run(db, tmp_path / "audit.db", body)


def test_missing_database_is_one_line(tmp_path: Path) -> None:
    command = [str(INGERO), "mcp", "--db", str(tmp_path / "nope.db")]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "no database at" in proc.stderr
