"""Running scenarios: one trace session (probes attached once: removing uprobes costs
the kernel a grace period each), each scenario's workload launched under it in turn,
then the analysis of that workload's processes judged against its expected cause."""

from __future__ import annotations

import os
import platform
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ingero import _core
from ingero.capture.privileges import missing_privileges
from ingero.capture.run import TraceError, TraceRequest, check_db_path, default_node, resolve_libraries
from ingero.codes import source_named
from ingero.demo.bundled import TORCH_WORKLOAD, WORKLOAD, simulated_library
from ingero.demo.findings import Findings, Verdict, analyse_pids, judge
from ingero.demo.scenarios import Scenario
from ingero.store.database import open_readonly

# A workload that hangs must not hang the demo.
WORKLOAD_TIMEOUT_S = 120
# Events wait at most 10 ms in the ring and 100 ms in a batch: quiet this long, all
# of a finished workload's calls are in the database.
QUIET_S = 0.4


class DemoError(Exception):
    """A scenario that could not run, worded for the user."""


@dataclass
class ScenarioRun:
    scenario: Scenario
    stressed: bool
    db: Path
    # Every process of the run that made a CUDA call (the trainer, a competitor).
    pids: list[int]
    # The processes the workload started as its stressor.
    stressor_pids: list[int]
    stored: int
    dropped: int
    seconds: float
    findings: Findings | None = None
    verdict: Verdict | None = None


def last_cpu() -> int:
    return max(os.sched_getaffinity(0))


def workload_command(
    scenario: Scenario, *, stressed: bool, gpu: bool, shared_file: Path | None, pid_file: Path
) -> list[str]:
    """The traced command: the workload with the scenario's flags, under `env` when the
    simulated library takes knobs."""
    flags = (
        list(scenario.workload) + (list(scenario.stress) if stressed else []) + ["--pid-file", str(pid_file)]
    )
    if scenario.pin_cpu:
        flags += ["--pin-cpu", str(last_cpu())]
    if gpu:
        return [sys.executable, str(TORCH_WORKLOAD), *flags]
    knobs = dict(scenario.env) | (dict(scenario.stress_env) if stressed else {})
    if shared_file is not None:
        knobs["SIMCUDA_SHARED_DEVICE"] = str(shared_file)
    prefix = ["env", *(f"{k}={v}" for k, v in sorted(knobs.items()))] if knobs else []
    return [*prefix, sys.executable, str(WORKLOAD), "--lib", str(simulated_library()), *flags]


def _gpu_pids_between(db: Path, start_ns: int, stop_ns: int) -> list[int]:
    """The processes with CUDA calls in the window, first caller first."""
    sources = ",".join(str(source_named(name).id) for name in ("CUDA", "DRIVER", "CUDA_GRAPH"))
    conn = open_readonly(db)
    try:
        rows = conn.execute(
            f"SELECT pid FROM events WHERE timestamp BETWEEN ? AND ? AND source IN ({sources}) "
            "GROUP BY pid ORDER BY MIN(timestamp)",
            (start_ns, stop_ns),
        ).fetchall()
    except sqlite3.Error as err:
        raise DemoError(f"cannot read back {db}: {err}") from err
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


class DemoSession:
    """One trace into `db` that scenario workloads are launched under, one at a time.
    Use as a context manager: the trace stops (and the database is complete) on exit."""

    def __init__(
        self,
        db: Path,
        *,
        gpu: bool = False,
        on_attach: Callable[[_core.Attachment], None] = lambda a: None,
        on_warning: Callable[[str], None] = lambda w: None,
    ) -> None:
        self.db = db
        self.gpu = gpu
        self.on_attach = on_attach
        self.on_warning = on_warning
        self._tracer: _core.Tracer | None = None

    def _libraries(self) -> list[tuple[str, Path]]:
        if not self.gpu:
            return [("runtime", simulated_library())]
        request = TraceRequest(db=self.db, node="", command=[sys.executable, str(TORCH_WORKLOAD)])
        try:
            return resolve_libraries(request)
        except TraceError as err:
            raise DemoError(str(err)) from err

    def __enter__(self) -> DemoSession:
        reason = missing_privileges()
        if reason:
            raise DemoError(reason)
        try:
            check_db_path(self.db)
        except TraceError as err:
            raise DemoError(str(err)) from err
        libraries = self._libraries()
        try:
            # The host layer: the CPU-contention and incident scenarios are explained by it.
            tracer = _core.Tracer(trace_all=False, ringbuf_bytes=8 << 20, nccl=False, layers=["host"])
            for kind, path in libraries:
                self.on_attach(tracer.attach(path, kind))
            for warning in tracer.warnings():
                self.on_warning(warning)
            tracer.set_sampling_rate(1)
            tracer.start(
                self.db,
                default_node(),
                flags=f"demo=1 gpu={int(self.gpu)} sampling=1 record_all=1",
                python_ver=platform.python_version(),
                ingero_ver=_core.__version__,
                # Small workloads, and the expectation check must see every call: the
                # statistics of a selective sample would over-weigh the anomalies.
                record_all=True,
            )
        except _core.IngeroError as err:
            raise DemoError(str(err)) from err
        self._tracer = tracer
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tracer is not None:
            tracer, self._tracer = self._tracer, None
            try:
                tracer.stop()
            except _core.IngeroError as err:
                if exc is None:
                    raise DemoError(f"stopping the trace failed: {err}") from err

    def _wait(self, pid: int) -> int | None:
        assert self._tracer is not None
        deadline = time.monotonic() + WORKLOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            code = _core.wait_child(pid, 500)
            if code is not None:
                return code
            self._tracer.prune_targets()
        os.kill(pid, signal.SIGKILL)  # its stressors die with it (PR_SET_PDEATHSIG)
        _core.wait_child(pid, 5000)
        return None

    def _settle(self) -> _core.TraceStats:
        """Waits until every call of the finished workload is stored."""
        assert self._tracer is not None
        stats = self._tracer.stats()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < QUIET_S:
            time.sleep(0.05)
            now = self._tracer.stats()
            if now["received"] != stats["received"] or now["stored"] != stats["stored"]:
                quiet_since = time.monotonic()
            stats = now
        return stats

    def run(self, scenario: Scenario, *, stressed: bool = True) -> ScenarioRun:
        """Launches the scenario's workload under the trace and waits for it."""
        if self._tracer is None:
            raise RuntimeError("DemoSession.run outside its `with` block")
        before = self._tracer.stats()
        with tempfile.TemporaryDirectory(prefix="ingero-demo-") as tmp:
            shared = Path(tmp) / "device" if scenario.shared_device and not self.gpu else None
            pid_file = Path(tmp) / "stressors"
            command = workload_command(
                scenario, stressed=stressed, gpu=self.gpu, shared_file=shared, pid_file=pid_file
            )
            started_ns, t0 = time.time_ns(), time.monotonic()
            try:
                pid = self._tracer.launch(command)
            except _core.IngeroError as err:
                raise DemoError(str(err)) from err
            code = self._wait(pid)
            seconds = time.monotonic() - t0
            stressors = [int(p) for p in pid_file.read_text().split()] if pid_file.exists() else []
        if code != 0:
            why = f"did not finish in {WORKLOAD_TIMEOUT_S} s" if code is None else f"exited with {code}"
            raise DemoError(f"the {scenario.name} workload {why}")
        after = self._settle()
        pids = _gpu_pids_between(self.db, started_ns, time.time_ns())
        return ScenarioRun(
            scenario,
            stressed,
            self.db,
            pids,
            stressors,
            stored=after["stored"] - before["stored"],
            dropped=after["dropped"] - before["dropped"],
            seconds=seconds,
        )


def explain(run: ScenarioRun) -> ScenarioRun:
    """Analyses the run's processes and judges the result against the scenario."""
    run.findings = analyse_pids(run.db, run.pids)
    run.verdict = judge(run.findings, run.scenario.expectation, run.stressor_pids)
    return run
