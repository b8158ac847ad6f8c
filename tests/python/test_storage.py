"""Storage: published databases read as they are, selective storage accounted for exactly,
a database that survives SIGKILL, and a size cap that holds."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, WORKLOAD, load_json, run_cli, trace_workload

TRACES = sorted((ROOT.parent / "shared" / "traces").glob("*.db"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("db", TRACES, ids=[p.name for p in TRACES])
def test_published_databases_answer_query_and_sql_and_stay_byte_identical(db: Path) -> None:
    before, siblings = sha256(db), sorted(db.parent.iterdir())
    with sqlite3.connect(f"file:{db}?immutable=1", uri=True) as conn:
        total = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        newest = conn.execute("SELECT id FROM events ORDER BY timestamp DESC, rowid DESC LIMIT 1").fetchone()
    listed = run_cli("query", "--db", str(db), "--limit", "5", "--json")
    assert listed.returncode == 0, listed.stderr
    events = json.loads(listed.stdout)
    assert len(events) == min(5, total)
    assert events[-1]["id"] == newest[0]
    counted = run_cli("sql", "SELECT COUNT(*) AS n FROM events", "--db", str(db), "--json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout)["rows"] == [{"n": total}]
    refused = run_cli("sql", "DELETE FROM events", "--db", str(db))
    assert refused.returncode != 0
    assert "DELETE is refused" in refused.stderr
    assert sha256(db) == before
    assert sorted(db.parent.iterdir()) == siblings  # no -wal or -shm left behind


def test_query_filters_by_op_pid_and_recorded_time() -> None:
    db = next(p for p in TRACES if p.name == "sample-cluster.db")
    with sqlite3.connect(f"file:{db}?immutable=1", uri=True) as conn:
        op, pid, n_pid = conn.execute(
            "SELECT o.name, e.pid, COUNT(*) FROM events e JOIN ops o ON o.source_id = e.source "
            "AND o.op_id = e.op WHERE e.source IN (1, 4) GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 1"
        ).fetchone()
        newest = conn.execute("SELECT MAX(timestamp) FROM events").fetchone()[0]
        n_recent = conn.execute(
            "SELECT COUNT(*) FROM events WHERE timestamp >= ?", (newest - 2_000_000_000,)
        ).fetchone()[0]
    run = run_cli(
        "query", "--db", str(db), "--op", op.upper(), "--pid", str(pid), "--limit", "100000", "--json"
    )
    events = json.loads(run.stdout)
    assert len(events) == n_pid
    assert {(e["op"], e["pid"]) for e in events} == {(op, pid)}
    listed = run_cli("query", "--db", str(db), "--since", "2s", "--limit", "100000", "--json")
    recent = json.loads(listed.stdout)
    assert len(recent) == n_recent
    assert 0 < n_recent < 600


@pytest.mark.usefixtures("privileged")
def test_without_record_all_the_aggregates_account_for_every_event(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    db, summary = tmp_path / "t.db", tmp_path / "w.json"
    # One call site makes 400 launches: the per-stack cap keeps 25 of them.
    run = trace_workload(
        db, simcuda_lib, summary, "--launches", "400", "--mallocs", "5", "--syncs", "3",
        trace_flags=("--stack-samples", "25"), record_all=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    apis = load_json(summary)["apis"]
    made = sum(apis[name]["calls"] for name in ("cudaLaunchKernel", "cudaMalloc", "cudaStreamSynchronize"))
    stored = db_rows(db, "SELECT COUNT(*) FROM events WHERE source = 1")[0][0]
    for table in ("event_aggregates", "event_aggregates_5s"):
        counted, kept = db_rows(db, f"SELECT SUM(count), SUM(stored) FROM {table} WHERE source = 1")[0]
        assert kept == stored
        assert counted == made
    counted = db_rows(db, "SELECT SUM(count) FROM event_aggregates WHERE source = 1")[0][0]
    assert f"stored {stored}," in run.stdout
    assert f"aggregated only {counted - stored}" in run.stdout
    assert stored < counted  # the cap really left launches out...
    assert db_rows(db, "SELECT COUNT(*) FROM events WHERE source = 1 AND op = 5")[0][0] == 3  # ...not syncs


def _flood(db: Path, lib: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "ingero", "trace", "--record-all", *flags, "--db", str(db),
            "--cuda-lib", str(lib), "--", sys.executable, str(WORKLOAD), "--lib", str(lib),
            "--launches", "50000000", "--json", os.devnull,
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


_PREFIX = "SELECT COUNT(*), MIN(id), MAX(id), SUM(timestamp) FROM events WHERE rowid <= ?"


def _committed(db: Path) -> tuple[Any, ...] | None:
    """What a reader sees committed: the last rowid and a digest of every row up to it."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            last = conn.execute("SELECT MAX(rowid) FROM events").fetchone()[0]
            return None if last is None else (last, *conn.execute(_PREFIX, (last,)).fetchone())
    except sqlite3.OperationalError:
        return None


@pytest.mark.usefixtures("privileged")
def test_sigkill_at_random_moments_never_corrupts_or_loses_committed_rows(
    tmp_path: Path, simcuda_lib: Path
) -> None:
    rng = random.Random(20261124)
    for attempt in range(20):
        db = tmp_path / f"k{attempt}.db"
        trace = _flood(db, simcuda_lib)
        seen: tuple[Any, ...] | None = None
        # Some kills land while the schema is written, most while batches are.
        started = time.monotonic()
        while not db.exists() and time.monotonic() - started < 30:
            time.sleep(0.01)
        kill_at = time.monotonic() + rng.uniform(0.0, 1.5)
        while time.monotonic() < kill_at:
            seen = _committed(db) or seen
            time.sleep(rng.uniform(0.02, 0.2))
        os.killpg(trace.pid, signal.SIGKILL)
        trace.wait()
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",), f"attempt {attempt}"
            if seen is not None:
                after = (seen[0], *conn.execute(_PREFIX, (seen[0],)).fetchone())
                assert after == seen, f"attempt {attempt}: rows committed before the kill changed or went"


@pytest.mark.usefixtures("privileged")
def test_max_db_keeps_the_files_under_the_cap(tmp_path: Path, simcuda_lib: Path) -> None:
    db, cap = tmp_path / "capped.db", 4 << 20
    trace = _flood(db, simcuda_lib, "--max-db", "4m")
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    peak = 0
    deadline = time.monotonic() + 20
    written: list[str] = []
    stopping = False
    # Sizes are sampled until the trace has exited: its end builds the indexes.
    while trace.poll() is None:
        peak = max(peak, sum(f.stat().st_size for f in files if f.exists()))
        if not stopping and time.monotonic() > deadline:
            os.killpg(trace.pid, signal.SIGINT)
            stopping = True
        assert time.monotonic() < deadline + 120, "the trace did not stop"
        time.sleep(0.02)
    _, err = trace.communicate()
    peak = max(peak, sum(f.stat().st_size for f in files if f.exists()))
    with sqlite3.connect(db) as conn:
        written = [r[0] for r in conn.execute("SELECT id FROM events ORDER BY rowid LIMIT 1")]
        kept = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        newest_seq = conn.execute("SELECT MAX(CAST(substr(id, instr(id, ':') + 1) AS INTEGER)) FROM events")
        total = newest_seq.fetchone()[0]
    assert peak <= cap, f"the files reached {peak} bytes under a {cap} byte cap"
    # Far more was written than kept: the oldest rows went.
    assert total > 3 * kept, (total, kept, err)
    assert written
    assert not written[0].endswith(":1")


@pytest.mark.usefixtures("privileged")
def test_rollover_keeps_the_newest_files_and_query_reads_them_all(tmp_path: Path, simcuda_lib: Path) -> None:
    db = tmp_path / "rolling.db"
    trace = _flood(db, simcuda_lib, "--db-rollover-size", "1m", "--db-rollover-keep", "2")
    deadline = time.monotonic() + 60
    seen: set[str] = set()
    while len(seen) < 3 and time.monotonic() < deadline:
        seen |= {p.name for p in tmp_path.glob("rolling.db.*.db")}
        time.sleep(0.02)
    os.killpg(trace.pid, signal.SIGINT)
    _, err = trace.communicate(timeout=120)
    assert "error:" not in err
    rolled = sorted(tmp_path.glob("rolling.db.*.db"))
    assert len(seen) >= 3
    assert len(rolled) == 2, rolled  # more were rolled; the oldest went
    ids: list[str] = []
    in_current = 0
    for path in [*rolled, db]:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            ids += [r[0] for r in conn.execute("SELECT id FROM events ORDER BY rowid")]
            in_current = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    seqs = [int(i.split(":")[1]) for i in ids]
    # The files continue one numbering, oldest file first, with no id repeated.
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    everything = run_cli("query", "--db", str(db), "--include-rolled", "--limit", "10000000", "--json")
    assert len(json.loads(everything.stdout)) == len(ids)
    current = run_cli("query", "--db", str(db), "--limit", "10000000", "--json")
    assert len(json.loads(current.stdout)) == in_current < len(ids)


def test_traced_names_are_printed_as_data_not_markup(tmp_path: Path) -> None:
    db = tmp_path / "names.db"
    db.write_bytes(next(p for p in TRACES if p.name == "sample-cluster.db").read_bytes())
    with sqlite3.connect(db) as conn:
        # This older file names processes in process_names only (no events.comm).
        conn.execute("UPDATE process_names SET name = '[/oops] [bold]x'")
    listed = run_cli("query", "--db", str(db), "--limit", "3")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("[/oops] [bold]x") == 3
    selected = run_cli("sql", "SELECT DISTINCT name FROM process_names", "--db", str(db))
    assert "[/oops] [bold]x" in selected.stdout
