"""`ingero explain` on the original's published databases: it reports what their stored chains found."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from ingero.analyse import analyse, cause_kinds
from ingero.store.database import open_readonly
from tests.conftest import ROOT, run_cli

TRACES = ROOT.parent / "shared" / "traces"
DATABASES = sorted(TRACES.glob("*.db"))


def stored_expectations(db: Path) -> set[tuple[str, str, frozenset[str]]]:
    """(op, severity, kinds of cause) of every row the database's own `causal_chains` holds."""
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    rows = conn.execute("SELECT cuda_op, severity, root_cause FROM causal_chains").fetchall()
    conn.close()
    return {(op, severity, frozenset(cause_kinds(cause))) for op, severity, cause in rows}


@pytest.mark.skipif(not DATABASES, reason=f"no published databases in {TRACES}")
@pytest.mark.parametrize("db", DATABASES, ids=[d.stem for d in DATABASES])
def test_reports_every_stored_op_and_severity(db: Path) -> None:
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    run = run_cli("explain", "--db", str(db), "--json")
    assert run.returncode == 0, run.stderr
    chains = json.loads(run.stdout)["chains"]
    reported: dict[tuple[str, str], set[str]] = {}
    for chain in chains:
        reported.setdefault((chain["cuda_op"], chain["severity"]), set()).update(
            cause_kinds(chain["root_cause"])
        )
    expected = stored_expectations(db)
    assert expected, "a published database without stored chains"
    for op, severity, kinds in expected:
        assert (op, severity) in reported, (op, severity, sorted(reported))
        assert kinds <= reported[(op, severity)], (op, severity, kinds, reported[(op, severity)])
    # The text report names the same chains.
    text = run_cli("explain", "--db", str(db)).stdout
    for op, severity, _ in expected:
        assert any(line.startswith(f"[{severity}] {op}") for line in text.splitlines()), (op, severity)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_replay_alone_finds_the_dataloader_stall() -> None:
    """Where the stored sample still holds the calls, the replay finds the chains by itself."""
    db = TRACES / "pytorch-dataloader-starvation.db"
    if not db.exists():
        pytest.skip("pytorch-dataloader-starvation.db is not published here")
    with open_readonly(db) as conn:
        found = {(c.cuda_op, c.severity) for c in analyse(conn, include_stored=False).chains}
    high = {(op, sev) for op, sev, kinds in stored_expectations(db) if sev == "HIGH" and "scheduler" in kinds}
    assert high
    assert high <= found
