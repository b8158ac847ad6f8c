"""MCP tool calls recorded as trace events: into a running trace's stream, or appended directly."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from ingero import _core
from tests.conftest import CUDA_ONLY, start_idle_trace


def record(db: Path, tool: str, status: str = "ok", rows: int = 3) -> str:
    return _core.record_tool_call(
        db, "n1", tool, '{"limit": 5}', status, "", rows, 120, time.time_ns(), 1500, "stdio", ""
    )


def test_calls_without_a_trace_are_appended_with_their_details(tmp_path: Path, db_rows: Any) -> None:
    db = tmp_path / "audit.db"
    assert record(db, "get_trace_stats") == str(db)
    assert record(db, "run_sql", status="refused", rows=0) == str(db)
    assert record(db, "a_tool_from_the_future", status="error") == str(db)
    rows = db_rows(
        db,
        "SELECT e.id, o.name, e.ret_code, e.arg0, e.arg1, m.tool, m.status, m.transport "
        "FROM events e JOIN mcp_calls m ON m.event_id = e.id "
        "JOIN ops o ON o.source_id = e.source AND o.op_id = e.op "
        "WHERE e.source = (SELECT id FROM sources WHERE name = 'MCP') ORDER BY e.rowid",
    )
    assert rows == [
        ("n1:1", "get_trace_stats", 0, 3, 120, "get_trace_stats", "ok", "stdio"),
        ("n1:2", "run_sql", 1, 0, 120, "run_sql", "refused", "stdio"),
        ("n1:3", "other_tool", 2, 3, 120, "a_tool_from_the_future", "error", "stdio"),
    ]


@pytest.mark.usefixtures("privileged")
def test_calls_during_a_trace_join_its_stream(tmp_path: Path, simcuda_lib: Path, db_rows: Any) -> None:
    db = tmp_path / "live.db"
    trace = start_idle_trace(db, simcuda_lib, 2, *CUDA_ONLY)
    delivered = [record(db, "get_causal_chains") for _ in range(5)]
    _, err = trace.communicate(timeout=120)
    assert trace.returncode == 0, err
    assert delivered == ["trace"] * 5
    ids = [r[0] for r in db_rows(db, "SELECT event_id FROM mcp_calls ORDER BY event_id")]
    assert sorted(ids) == sorted(f"n1:{seq}" for seq in range(1, 6))
    # The events came through the trace's writer, which wrote nothing else here.
    assert db_rows(db, "SELECT COUNT(*) FROM events") == [(5,)]


def test_read_only_and_integer_id_databases_are_refused_untouched(tmp_path: Path) -> None:
    published = Path(__file__).resolve().parents[3] / "shared" / "traces" / "pytorch-dataloader-starvation.db"
    read_only, writable = tmp_path / "ro.db", tmp_path / "rw.db"
    shutil.copyfile(published, read_only)
    shutil.copyfile(published, writable)
    read_only.chmod(0o444)
    before = read_only.read_bytes()
    with pytest.raises(_core.IngeroError, match="read-only on disk"):
        record(read_only, "get_schema")
    assert read_only.read_bytes() == before
    # The first original numbered events with integers: nothing can be appended in our id form.
    with pytest.raises(_core.IngeroError, match="integer event ids"):
        record(writable, "get_schema")
    assert writable.read_bytes() == before
