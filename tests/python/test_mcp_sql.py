"""run_sql refuses every attempt to write or escape, at the engine: the database stays
byte-identical, no file appears, and the server keeps answering."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
from mcp import Client

from tests.python.mcp_session import digest, run, shared_databases, structured, text_of
from tests.synthdb import write_synthetic_db


def attacks(tmp: Path) -> list[str]:
    new = tmp / "new.db"
    return [
        f"ATTACH DATABASE '{new}' AS x",
        f"ATTACH '{new}' AS x",
        f"SELECT 1; ATTACH '{new}' AS x",
        f"ATTACH '{new}' AS x; CREATE TABLE x.t(a)",
        "PRAGMA query_only = 0",
        "PRAGMA query_only = OFF",
        "PRAGMA writable_schema = 1",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 99",
        "SELECT * FROM pragma_compile_options",
        "WITH x AS (SELECT 1) DELETE FROM events",
        "WITH x AS (SELECT 1) INSERT INTO events (id, timestamp, pid, tid, source, op, duration) "
        "SELECT 'x', 0, 0, 0, 0, 0, 0",
        "WITH x AS (DELETE FROM events RETURNING *) SELECT * FROM x",
        "UPDATE events SET pid = 0",
        "INSERT INTO events (id, timestamp, pid, tid, source, op, duration) VALUES ('x', 0, 0, 0, 0, 0, 0)",
        "REPLACE INTO process_names (pid, name) VALUES (1, 'x')",
        "DELETE FROM events",
        "DROP TABLE events",
        "CREATE TABLE t (a)",
        "CREATE TEMP TABLE t AS SELECT * FROM events",
        "CREATE TEMP VIEW v AS SELECT 1",
        "CREATE TEMP TRIGGER tr AFTER INSERT ON events BEGIN SELECT 1; END",
        f"VACUUM INTO '{tmp / 'copy.db'}'",
        "VACUUM",
        "REINDEX",
        "ANALYZE",
        "BEGIN IMMEDIATE",
        "SAVEPOINT s",
        "DETACH main",
        "SELECT load_extension('/nonexistent/evil.so')",
        "SELECT randomblob(1000000000)",
        "SELECT zeroblob(1000000000)",
        "SELECT length(randomblob(2147483647))",
        "SELECT printf('%.*c', 2000000000, 'x')",
        "SELECT hex(zeroblob(100000000))",
        "SELECT fts3_tokenizer('simple')",
        "SELECT sqlite_version()",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        "SELECT 1; DROP TABLE events",
        "SELECT count(*) FROM events; SELECT 1",
        "SELECT * FROM events WHERE " + " OR ".join(["1 = 1"] * 3000),
        "SELECT " + "(" * 300 + "1" + ")" * 300,
        " UNION ALL ".join(["SELECT 1"] * 100),
        "",
        # Never ends: a cross join the progress-handler deadline stops.
        "SELECT count(*) FROM events a, events b, events c, events d",
    ]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_writes_and_escapes_are_refused(tmp_path: Path, mode: str) -> None:
    served = tmp_path / "served"
    served.mkdir()
    db = write_synthetic_db(served / "t.db", 3_000, scenario="sched-tail")
    # Read-only on disk, so the audit goes elsewhere and the file must not change at all.
    db.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    before, files = digest(db), sorted(served.iterdir())
    corpus = attacks(served)
    assert len(corpus) >= 30

    async def body(client: Client) -> None:
        for sql in corpus:
            result = await client.call_tool("run_sql", {"query": sql})
            assert result.is_error, f"not refused: {sql[:80]!r}: {text_of(result)[:200]}"
            message = text_of(result)
            assert message.startswith("refused: "), message
            assert len(message.splitlines()) == 1
            assert "Traceback" not in message
        assert "deadline" in message  # the last attack runs until stopped
        alive = structured(await client.call_tool("run_sql", {"query": "SELECT count(*) AS n FROM events"}))
        assert alive["rows"] == [[3_000]]

    run(db, tmp_path / "audit.db", body, mode)
    assert digest(db) == before
    assert sorted(served.iterdir()) == files


def test_refusals_say_why(tmp_path: Path) -> None:
    db = write_synthetic_db(tmp_path / "t.db", 1_000)
    db.chmod(0o444)
    expected = {
        "DELETE FROM events": "only SELECT queries are allowed (DELETE is refused)",
        "PRAGMA query_only = 0": "PRAGMA is refused",
        "SELECT 1; SELECT 2": "only one SQL statement per call",
        "SELECT randomblob(10)": "not authorized to use function: randomblob",
        "SELECT nope FROM events": "no such column: nope",
    }

    async def body(client: Client) -> None:
        for sql, words in expected.items():
            assert words in text_of(await client.call_tool("run_sql", {"query": sql}))

    run(db, tmp_path / "audit.db", body)


def test_published_databases_are_read_as_they_are(tmp_path: Path) -> None:
    published = shared_databases()
    if not published:
        pytest.skip("no published databases in ../shared/traces")
    db = tmp_path / published[0].name
    shutil.copyfile(published[0], db)
    db.chmod(0o444)
    tables = ["events", "causal_chains", "stack_traces", "process_names", "sessions"]

    async def body(client: Client) -> None:
        for table in tables:
            result = structured(
                await client.call_tool("run_sql", {"query": f"SELECT * FROM {table}", "limit": 5})
            )
            assert result["columns"]

    run(db, tmp_path / "audit.db", body)
    assert digest(db) == digest(published[0])
