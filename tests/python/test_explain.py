"""`ingero explain` on synthetic traces: each rule fires on its own scenario, none on a clean one."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from pathlib import Path

import pytest

from ingero.analyse import Window, analyse, cause_kinds, stored_chains
from ingero.analyse.live import store_live_chains
from ingero.store.database import open_readonly
from tests import synthdb
from tests.conftest import run_cli

N_EVENTS = 20_000

# Scenario -> (chain id descriptors that must appear, kinds of cause the first must name).
EXPECTED: dict[str, tuple[tuple[str, ...], set[str]]] = {
    "sched-tail": (("tail-medium-cudaLaunchKernel", f"preempted-by-{synthdb.HOG_PID}"), {"scheduler"}),
    "io-tail": (("tail-high-cudaLaunchKernel",), {"io"}),
    "net-tail": (("tail-medium-cudaLaunchKernel",), {"network"}),
    "page-alloc-tail": (("tail-medium-cudaLaunchKernel",), {"memory"}),
    "cpu-tail": (("tail-high-cudaLaunchKernel",), {"scheduler"}),
    "swap-tail": (("tail-high-cudaLaunchKernel",), {"memory"}),
    "tcp-burst": (("tcp-retransmit-high",), {"network"}),
    "throughput-drop": (("drop-high-cudaLaunchKernel",), {"scheduler"}),
    "oom": (("oom",), {"memory"}),
    "noisy-neighbour": (("noisy-neighbor-high",), {"scheduler"}),
    "graph-capture-oom": (("graph-capture-oom",), {"memory"}),
    "graph-launch-contention": (("graph-launch-cpu-contention",), {"scheduler"}),
    "graph-freq-drop": (("graph-freq-anomaly-0xe0",), set()),
    "graph-never-launched": (("graph-never-launched-0xdead",), set()),
    "graph-capture-warmup": (("graph-capture-warmup",), set()),
    "nccl-straggler": (
        (f"nccl-straggler-ncclAllReduce-{synthdb.NCCL_PIDS[synthdb.STRAGGLER_RANK]}",),
        set(),
    ),
}


@pytest.fixture(scope="module")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    return {s: synthdb.write_synthetic_db(root / f"{s}.db", N_EVENTS, scenario=s) for s in synthdb.SCENARIOS}


def descriptors(db: Path) -> list[str]:
    with open_readonly(db) as conn:
        return [c.id.removeprefix("synth:") for c in analyse(conn).chains]


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_rule_fires_on_its_scenario_and_nothing_else_does(dbs: dict[str, Path], scenario: str) -> None:
    wanted, kinds = EXPECTED[scenario]
    with open_readonly(dbs[scenario]) as conn:
        chains = analyse(conn).chains
    found = {c.id.removeprefix("synth:"): c for c in chains}
    for descriptor in wanted:
        assert descriptor in found, (scenario, list(found))
    assert kinds <= cause_kinds(found[wanted[0]].root_cause + " " + found[wanted[0]].summary)
    # Other rules keep quiet; the tail of a throughput drop may show on every op it slowed.
    extra = [
        d for d in found if d not in wanted and not (scenario == "throughput-drop" and d.startswith("drop-"))
    ]
    assert extra == [] or (scenario == "throughput-drop" and extra == [f"preempted-by-{synthdb.HOG_PID}"]), (
        extra
    )


@pytest.mark.parametrize("scenario", ["clean", "multi-process"])
def test_no_chain_on_a_healthy_trace(dbs: dict[str, Path], scenario: str) -> None:
    assert descriptors(dbs[scenario]) == []


def test_named_preempter(dbs: dict[str, Path]) -> None:
    with open_readonly(dbs["sched-tail"]) as conn:
        names = dict(conn.execute("SELECT pid, name FROM process_names"))
        chain = next(c for c in analyse(conn).chains if c.id.endswith(f"preempted-by-{synthdb.HOG_PID}"))
    assert f"pid {synthdb.HOG_PID} ({names[synthdb.HOG_PID]})" in chain.summary
    assert f"pid {synthdb.TRAIN_PID} ({names[synthdb.TRAIN_PID]})" in chain.timeline[0].detail


def _nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def test_op_stats_match_a_plain_computation(dbs: dict[str, Path]) -> None:
    db = dbs["sched-tail"]
    raw = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    by_op: dict[tuple[int, int], list[int]] = {}
    for source, op, duration in raw.execute(
        "SELECT source, op, duration FROM events ORDER BY timestamp, rowid"
    ):
        by_op.setdefault((source, op), []).append(duration)
    with open_readonly(db) as conn:
        stats = {(r["source"], r["op"]): r for r in analyse(conn).op_stats.iter_rows(named=True)}
    assert set(stats) == set(by_op)
    for key, durations in by_op.items():
        row = stats[key]
        p50 = _nearest_rank(durations, 0.5)
        assert row["count"] == len(durations)
        assert (row["p50_ns"], row["p95_ns"], row["p99_ns"]) == (
            p50,
            _nearest_rank(durations, 0.95),
            _nearest_rank(durations, 0.99),
        )
        assert (row["min_ns"], row["max_ns"], row["total_ns"]) == (
            min(durations),
            max(durations),
            sum(durations),
        )
        flagged = [i + 1 for i, d in enumerate(durations) if i + 1 > 10 and d > 3 * p50]
        assert row["anomalies"] == len(flagged)
        if len(flagged) > 2:
            gaps = sorted(b - a for a, b in itertools.pairwise(flagged))
            assert row["spike_period"] == gaps[len(gaps) // 2]


def test_window_and_pid_limit_the_events(dbs: dict[str, Path]) -> None:
    with open_readonly(dbs["multi-process"]) as conn:
        (start,) = conn.execute("SELECT min(timestamp) FROM events").fetchone()
        (in_first_10s,) = conn.execute(
            "SELECT count(*) FROM events WHERE timestamp < ?", (start + 10_000_000_000,)
        ).fetchone()
        (of_pid,) = conn.execute(
            "SELECT count(*) FROM events WHERE pid = ? AND source IN (1, 4)", (synthdb.TRAIN_PID,)
        ).fetchone()
        assert analyse(conn, Window(end_ns=start + 10_000_000_000)).events == in_first_10s
        assert analyse(conn, pids=[synthdb.TRAIN_PID]).gpu_calls == of_pid


def test_cli_json_and_last(dbs: dict[str, Path]) -> None:
    run = run_cli("explain", "--db", str(dbs["io-tail"]), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    chain = report["chains"][0]
    assert chain["severity"] == "HIGH"
    assert chain["cuda_op"] == "cudaLaunchKernel"
    assert {"layer", "op", "detail"} <= set(chain["timeline"][0])
    assert chain["timeline"][-1]["layer"] == "CUDA"
    run = run_cli("explain", "--db", str(dbs["io-tail"]), "--last", "500", "--json")
    assert json.loads(run.stdout)["events"] == 500


def test_cli_report_and_per_process(dbs: dict[str, Path]) -> None:
    run = run_cli("explain", "--db", str(dbs["cpu-tail"]))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("INCIDENT REPORT — 1 causal chain(s) found (1 HIGH)")
    assert "[SYSTEM]  CPU 97%" in run.stdout
    assert "Root cause: high CPU utilization" in run.stdout
    run = run_cli("explain", "--db", str(dbs["multi-process"]), "--per-process")
    assert f"PID {synthdb.TRAIN_PID} (python3)" in run.stdout
    assert "GPU CONTENTION: 2 processes" in run.stdout


def test_live_chains_are_upserted(dbs: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    db.write_bytes(dbs["sched-tail"].read_bytes())
    assert store_live_chains(db, synthdb.BASE_NS, "node-a") == 2
    assert store_live_chains(db, synthdb.BASE_NS, "node-a") == 2  # found again: replaced, not added
    with open_readonly(db) as conn:
        stored = stored_chains(conn)
    assert sorted(c.id for c in stored) == ["node-a:preempted-by-5151", "node-a:tail-medium-cudaLaunchKernel"]
    run = run_cli("explain", "--db", str(db), "--chains", "--json")
    assert sorted(c["id"] for c in json.loads(run.stdout)) == sorted(c.id for c in stored)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--db", "/nonexistent/x.db"], "no database at /nonexistent/x.db"),
        (["--db", "/etc/hostname"], "not an ingero database"),
        (["--since", "soon"], "--since: not a duration"),
        (["--from", "yesterday"], "--from: not a time"),
        (["--last", "0"], "--last: must be a positive number"),
        (["--pid", "x"], "--pid: not a process id"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(dbs: dict[str, Path], args: list[str], expected: str) -> None:
    if "--db" not in args:
        args = ["--db", str(dbs["clean"]), *args]
    run = run_cli("explain", *args)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert len(lines) == 1, run.stderr
    assert expected in lines[0]
