"""Bad input to `ingero trace`: one clear line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run, run_cli, trace_workload


def assert_one_line_error(run: Run, expected: str) -> None:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert len(lines) == 1, run.stderr
    assert expected in lines[0], lines[0]


@pytest.fixture
def idle_process() -> Iterator[int]:
    """A live process that has no CUDA library mapped."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.usefixtures("privileged")
def test_pid_that_does_not_exist(tmp_path: Path) -> None:
    run = run_cli("trace", "--pid", "4194300", "--db", str(tmp_path / "t.db"), "--duration", "1s")
    assert_one_line_error(run, "no process with pid 4194300")


@pytest.mark.usefixtures("privileged")
def test_pid_without_cuda_library(tmp_path: Path, idle_process: int) -> None:
    run = run_cli("trace", "--pid", str(idle_process), "--db", str(tmp_path / "t.db"), "--duration", "1s")
    assert_one_line_error(run, f"process {idle_process} has no CUDA library")


@pytest.mark.usefixtures("privileged")
def test_command_that_does_not_exist(tmp_path: Path, simcuda_lib: Path) -> None:
    db = tmp_path / "t.db"
    run = run_cli("trace", "--db", str(db), "--cuda-lib", str(simcuda_lib), "--", "no-such-command-xyz")
    assert_one_line_error(run, "command not found: no-such-command-xyz")


@pytest.mark.usefixtures("privileged")
def test_database_in_missing_directory(tmp_path: Path, simcuda_lib: Path) -> None:
    db = tmp_path / "missing" / "t.db"
    run = run_cli("trace", "--db", str(db), "--cuda-lib", str(simcuda_lib), "--", "true")
    assert_one_line_error(run, "does not exist")
    assert not db.parent.exists()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only mount: unwritable even for root."""
    target = tmp_path / "ro"
    target.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], check=False
    ).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    yield target
    subprocess.run(["umount", str(target)], check=True)


@pytest.mark.usefixtures("privileged")
def test_database_in_read_only_directory(read_only_dir: Path, simcuda_lib: Path) -> None:
    run = run_cli("trace", "--db", str(read_only_dir / "t.db"), "--cuda-lib", str(simcuda_lib), "--", "true")
    assert_one_line_error(run, "is not writable")


@pytest.mark.usefixtures("privileged")
def test_existing_database_is_untouched_by_a_failed_trace_and_extended_by_the_next(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    db = tmp_path / "t.db"

    def trace_mallocs(mallocs: int) -> None:
        run = trace_workload(db, simcuda_lib, tmp_path / "w.json", f"--mallocs={mallocs}")
        assert run.returncode == 0, run.stderr

    trace_mallocs(2)
    before = db.read_bytes()
    run = run_cli("trace", "--db", str(db), "--cuda-lib", str(simcuda_lib), "--", "no-such-command-xyz")
    assert_one_line_error(run, "command not found")
    assert db.read_bytes() == before
    trace_mallocs(3)
    ids = [row[0] for row in db_rows(db, "SELECT id FROM events WHERE op = 1")]
    assert len(ids) == 5
    assert len(set(ids)) == 5
    assert db_rows(db, "SELECT COUNT(*) FROM sessions") == [(2,)]


def test_without_privileges(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to drop to an unprivileged user")
    tmp_path.chmod(0o777)
    proc = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         sys.executable, "-m", "ingero", "trace", "--db", str(tmp_path / "t.db"), "--", "true"],
        capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, HOME=str(tmp_path)),
    )  # fmt: skip
    assert_one_line_error(Run(proc.returncode, proc.stdout, proc.stderr), "tracing needs root")


def test_bad_duration_and_pid_values(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("trace", "--pid", "12,abc", "--db", str(tmp_path / "t.db")), "--pid")
    assert_one_line_error(
        run_cli("trace", "--pid", "1", "--duration", "soon", "--db", str(tmp_path / "t.db")), "--duration"
    )
    missing_lib = run_cli("trace", "--db", str(tmp_path / "t.db"), "--cuda-lib", "/nonexistent/libcudart.so")
    assert_one_line_error(missing_lib, "no such file")
