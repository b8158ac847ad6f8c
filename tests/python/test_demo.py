"""`ingero demo` end to end: each scenario's workload traced by the real probes over the
bundled simulated CUDA library, with and without its stressor.

Two kinds of evidence. The stored calls themselves, read here with plain SQL against
what the scenario says its stressor does (its knobs and flags): the problem is really
there with the stressor and absent without it. Then the analysis: its chains (or op
statistics) name the expected root cause with the stressor, and do not without it, so
no expectation can be met by a trace that lacks the problem.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingero import codes
from ingero.capture.privileges import missing_privileges
from ingero.demo.findings import analysis_available
from ingero.demo.runner import DemoSession, ScenarioRun, explain
from ingero.demo.scenarios import SCENARIOS, Scenario, find
from ingero.demo.summary import host_event_count
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("privileged")


class Runs:
    """Each (scenario, stressed) run once per module, under one trace session (each
    session's probe removal costs the kernel seconds)."""

    def __init__(self, session: DemoSession) -> None:
        self.session = session
        self.done: dict[tuple[str, bool], ScenarioRun] = {}

    def get(self, name: str, *, stressed: bool) -> ScenarioRun:
        key = (name, stressed)
        if key not in self.done:
            scenario = find(name)
            assert scenario is not None
            self.done[key] = self.session.run(scenario, stressed=stressed)
        return self.done[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    reason = missing_privileges()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    with DemoSession(db) as session:
        yield Runs(session)


def calls(run: ScenarioRun, op: str, pid: int | None = None) -> list[tuple[int, int, int]]:
    """(duration, arg0, pid) of the run's calls of `op`, in time order."""
    conn = sqlite3.connect(f"file:{run.db}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(run.pids))
        rows = conn.execute(
            "SELECT e.duration, e.arg0, e.pid FROM events e JOIN ops o ON o.source_id = e.source "
            f"AND o.op_id = e.op WHERE o.name = ? AND e.pid IN ({marks}) ORDER BY e.timestamp",
            (op, *run.pids),
        ).fetchall()
    finally:
        conn.close()
    return [(int(d), int(a), int(p)) for d, a, p in rows if pid is None or p == pid]


def flag(scenario: Scenario, name: str, *, stressed: bool = True) -> int:
    flags = list(scenario.workload) + (list(scenario.stress) if stressed else [])
    return int(flags[flags.index(name) + 1])


def median(values: list[int]) -> int:
    return sorted(values)[len(values) // 2]


def test_cold_start_is_in_the_first_calls_only_with_its_stressor(runs: Runs) -> None:
    scenario = find("cold-start")
    assert scenario is not None
    context_ns = int(scenario.stress_env["SIMCUDA_CONTEXT_INIT_NS"])
    module_ns = int(scenario.stress_env["SIMCUDA_MODULE_LOAD_NS"])
    stressed, control = runs.get("cold-start", stressed=True), runs.get("cold-start", stressed=False)
    mallocs = calls(stressed, "cudaMalloc")
    assert mallocs[0][0] >= context_ns
    assert max(d for d, _, _ in mallocs[1:]) < context_ns
    launches = calls(stressed, "cudaLaunchKernel")
    first_of_each: dict[int, int] = {}
    for duration, kernel, _ in launches:
        first_of_each.setdefault(kernel, duration)
    assert len(first_of_each) == flag(scenario, "--kernels")
    assert all(d >= module_ns for d in first_of_each.values())
    assert calls(control, "cudaMalloc")[0][0] < context_ns
    assert all(d < module_ns for d, _, _ in calls(control, "cudaLaunchKernel"))


def test_memcpy_dominates_only_with_its_stressor(runs: Runs) -> None:
    def memcpy_share(run: ScenarioRun) -> float:
        ops = ("cudaMemcpy", "cudaLaunchKernel", "cudaStreamSync", "cudaMalloc", "cudaFree")
        totals = {op: sum(d for d, _, _ in calls(run, op)) for op in ops}
        return totals["cudaMemcpy"] / sum(totals.values())

    scenario = find("memcpy-bottleneck")
    assert scenario is not None
    stressed = runs.get("memcpy-bottleneck", stressed=True)
    assert {a for _, a, _ in calls(stressed, "cudaMemcpy")} == {flag(scenario, "--copy-bytes")}
    assert memcpy_share(stressed) > 0.5
    assert memcpy_share(runs.get("memcpy-bottleneck", stressed=False)) < 0.5


def test_allocation_spikes_come_at_the_stated_interval_only_with_their_stressor(runs: Runs) -> None:
    scenario = find("periodic-spike")
    assert scenario is not None
    every, big = flag(scenario, "--spike-every"), flag(scenario, "--spike-bytes")
    mallocs = calls(runs.get("periodic-spike", stressed=True), "cudaMalloc")[1:]  # after the weights
    spikes = [i for i, (_, size, _) in enumerate(mallocs) if size == big]
    assert spikes == list(range(every - 1, len(mallocs), every))
    ordinary = [d for d, size, _ in mallocs if size != big]
    assert min(mallocs[i][0] for i in spikes) > 10 * median(ordinary)
    control = calls(runs.get("periodic-spike", stressed=False), "cudaMalloc")
    assert all(size != big for _, size, _ in control)


def test_a_second_process_shares_the_device_only_with_its_stressor(runs: Runs) -> None:
    scenario = find("gpu-steal")
    assert scenario is not None
    stressed, control = runs.get("gpu-steal", stressed=True), runs.get("gpu-steal", stressed=False)
    assert len(stressed.pids) == 2
    assert len(control.pids) == 1
    trainer = stressed.pids[0]
    competitor_kernel_ns = flag(scenario, "--competitor-kernel-us") * 1000
    syncs = [d for d, _, _ in calls(stressed, "cudaStreamSync", trainer)]
    # Once the competitor runs, the trainer's syncs wait behind its kernels.
    start = flag(scenario, "--stress-from")
    assert median(syncs[start:]) > competitor_kernel_ns // 2
    assert median(syncs[start:]) > 3 * median([d for d, _, _ in calls(control, "cudaStreamSync")])


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_the_analysis_finds_the_expected_cause_only_with_the_stressor(runs: Runs, name: str) -> None:
    if not analysis_available():
        pytest.skip("the analysis (ingero.analyse) is not in this build")
    scenario = find(name)
    assert scenario is not None
    stressed = runs.get(name, stressed=True)
    if scenario.needs_host_events:
        assert host_event_count(stressed.db, stressed.pids) > 0, "the host layer captured nothing"

    explain(stressed)
    assert stressed.verdict is not None
    assert stressed.verdict.found, f"{name}: {stressed.verdict.detail}; chains: {chain_summaries(stressed)}"
    control = explain(runs.get(name, stressed=False))
    assert control.verdict is not None
    assert not control.verdict.found, f"{name} without its stressor: {control.verdict.detail}"


def chain_summaries(run: ScenarioRun) -> list[Any]:
    return [c.get("summary") for c in run.findings.chains] if run.findings else []


def test_demo_command_runs_a_scenario_and_leaves_the_database_with_the_mcp_line(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    run = run_cli("demo", "memcpy-bottleneck", "--db", str(db))
    assert run.returncode == 0, run.stdout + run.stderr
    scenario = find("memcpy-bottleneck")
    assert scenario is not None
    assert f"expected: {scenario.expected}" in run.stdout
    assert f"claude mcp add ingero -- ingero mcp --db {db}" in run.stdout
    assert "[1/1] memcpy-bottleneck" in run.stdout
    traced = next(line.strip() for line in run.stdout.splitlines() if line.strip().startswith("traced "))
    stored = int(traced.split("traced ", 1)[1].split()[0])
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        # Summaries of untraced processes' switches and allocations keep coming after
        # the scenario's calls, which are what the demo reports.
        summaries = [codes.op_named(n).id for n in ("sched_switch_summary", "mm_page_alloc_summary")]
        (rows,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE NOT (source = ? AND op IN (?, ?))",
            (codes.source_named("HOST").id, *summaries),
        ).fetchone()
        (everything,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    finally:
        conn.close()
    # The scenario's rows are all in the count it reported; only summaries may differ.
    assert 0 < rows <= stored <= everything


def test_demo_rejects_an_unknown_scenario_in_one_line() -> None:
    run = run_cli("demo", "no-such-scenario")
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0
    assert "no-such-scenario" in run.stderr
    assert "gpu-steal" in run.stderr
    assert "Traceback" not in run.stderr
