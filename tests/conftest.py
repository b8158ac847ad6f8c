"""Shared fixtures: the simulated CUDA library, the workload, and running the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingero.capture.privileges import missing_privileges

ROOT = Path(__file__).resolve().parent.parent
SIMCUDA = ROOT / "tests" / "simcuda"
WORKLOAD = SIMCUDA / "workload.py"
# Traces of CUDA workloads count CUDA events: the kernel-event layers (tested in
# test_host.py) would add the host's own events to every count.
CUDA_ONLY = ("--no-host", "--no-io", "--no-tcp", "--no-net")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
    """Runs the installed `ingero` CLI as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "ingero", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def simcuda_lib() -> Path:
    """Builds the simulated libcudart/libcuda once per session."""
    out = SIMCUDA / "build"
    subprocess.run(["bash", str(SIMCUDA / "build.sh"), str(out)], check=True, capture_output=True)
    return out / "libcudart.so.12"


@pytest.fixture
def privileged() -> None:
    """eBPF tests need root; in CI a missing privilege is a failure, not a skip."""
    reason = missing_privileges()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def workload_cmd(lib: Path, json_out: Path, *flags: str) -> list[str]:
    return [sys.executable, str(WORKLOAD), "--lib", str(lib), "--json", str(json_out), *flags]


def trace_workload(
    db: Path,
    lib: Path,
    summary: Path,
    *flags: str,
    trace_flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    record_all: bool = True,
) -> Run:
    """`ingero trace [trace_flags]` of the workload (with `flags`) over the
    simulated library at `lib`; with `record_all`, every event gets a row, so the
    rows can be compared with the workload's own account of its calls."""
    command = workload_cmd(lib, summary, *flags)
    if record_all:
        trace_flags = ("--record-all", *trace_flags)
    return run_cli(
        "trace", *CUDA_ONLY, *trace_flags, "--db", str(db), "--cuda-lib", str(lib), "--", *command, env=env
    )


def start_idle_trace(db: Path, lib: Path, seconds: float, *flags: str) -> subprocess.Popen[str]:
    """`ingero trace [flags] --node n1` of a command that only sleeps `seconds`,
    returned once that command runs: the trace's writer and audit socket are up."""
    ready = db.with_name(db.name + ".ready")
    trace = subprocess.Popen(
        [
            sys.executable, "-m", "ingero", "trace", *flags, "--node", "n1", "--db", str(db),
            "--cuda-lib", str(lib), "--", "sh", "-c", f"touch {ready}; sleep {seconds}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert trace.poll() is None, trace.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return trace


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture
def db_rows() -> Iterator[Any]:
    """Returns a function reading rows of a finished trace database."""
    opened: list[sqlite3.Connection] = []

    def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        opened.append(conn)
        return conn.execute(sql, params).fetchall()

    yield query
    for conn in opened:
        conn.close()


@pytest.fixture(scope="session", autouse=True)
def published_traces_stay_untouched() -> Iterator[None]:
    """No test may leave anything beside the published databases (as root, even a read-only
    open that is not `immutable` creates -wal/-shm files there)."""
    traces = ROOT.parent / "shared" / "traces"
    before = sorted(traces.iterdir()) if traces.is_dir() else []
    yield
    after = sorted(traces.iterdir()) if traces.is_dir() else []
    assert after == before, f"files appeared beside the published traces: {set(after) - set(before)}"
