"""Python frames in the stored stacks: real probes on the simulated libcudart,
the workload run by a real CPython, expectations read from the workload's source."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CUDA_ONLY, WORKLOAD, run_cli
from tests.python.mcp_session import run as mcp_run
from tests.python.mcp_session import structured

pytestmark = pytest.mark.usefixtures("privileged")

# A minimal Debian trixie with its CPython 3.13, which `make setup` creates with
# debootstrap (scripts/setup.sh): the workload runs chrooted into it.
TRIXIE_ROOT = Path(
    os.environ.get("INGERO_TRIXIE_ROOT")
    or Path(os.environ.get("INGERO_CACHE_DIR") or Path.home() / ".cache" / "ingero") / "trixie-root"
)

# The interpreter running the tests (pyenv's, libpython shared), and where the
# machine has them, Debian's (libpython linked into the executable): bookworm's
# 3.11, and trixie's 3.13 in its own root. Name -> (root or None, executable).
INTERPRETERS: dict[str, tuple[Path | None, str]] = {
    "tests' python": (None, sys.executable),
    "debian python3.11": (None, "/usr/bin/python3.11"),
    "trixie python3.13": (TRIXIE_ROOT, "/usr/bin/python3.13"),
}


@dataclass
class Workload:
    """The workload as one interpreter runs it: in this machine's root, or
    copied (with the simulated library) into another root and chrooted into.
    Paths are as this machine reaches them; `seen_*` as the process sees them."""

    python: str
    root: Path | None
    lib: Path
    summary: Path
    # The workload's file as its frames name it.
    file: str
    seen_lib: str
    seen_summary: str

    def command(self, *flags: str, python_args: tuple[str, ...] = ()) -> list[str]:
        chroot = ["chroot", str(self.root)] if self.root else []
        args = python_args or (self.file, "--lib", self.seen_lib, "--json", self.seen_summary, *flags)
        return [*chroot, self.python, *args]

    def module_file(self, module: str) -> str:
        """A standard library module's file, as this interpreter names it."""
        code = f"import {module}; print({module}.__file__)"
        out = subprocess.run(
            self.command(python_args=("-c", code)), capture_output=True, text=True, check=True
        )
        return out.stdout.strip()


def missing_from(root: Path, python: str) -> str | None:
    """Why `python` cannot run in `root`, or None."""
    if (root / python.lstrip("/")).is_file():
        return None
    return (
        f"no {python} in {root}: `make setup` creates that root with debootstrap "
        "(its output says why it could not), or set INGERO_TRIXIE_ROOT"
    )


def other_root_dir(root: Path) -> Path:
    """A fresh directory under `root`'s /tmp, for one test's files."""
    directory = root / "tmp" / f"ingero-test-{uuid.uuid4().hex[:12]}"
    directory.mkdir(parents=True)
    return directory


@pytest.fixture(params=list(INTERPRETERS))
def workload(request: pytest.FixtureRequest, tmp_path: Path, simcuda_lib: Path) -> Iterator[Workload]:
    root, python = INTERPRETERS[request.param]
    if root is None:
        if shutil.which(python) is None:
            pytest.skip(f"{python} is not installed")
        summary = tmp_path / "w.json"
        yield Workload(python, None, simcuda_lib, summary, str(WORKLOAD), str(simcuda_lib), str(summary))
        return
    missing = missing_from(root, python)
    if missing:
        pytest.skip(missing)
    directory = other_root_dir(root)
    seen = Path("/") / directory.relative_to(root)
    try:
        shutil.copy(WORKLOAD, directory)
        shutil.copy(simcuda_lib, directory)
        yield Workload(
            python,
            root,
            lib=directory / simcuda_lib.name,
            summary=directory / "w.json",
            file=str(seen / WORKLOAD.name),
            seen_lib=str(seen / simcuda_lib.name),
            seen_summary=str(seen / "w.json"),
        )
    finally:
        shutil.rmtree(directory)


def call_lines(function: str, callee: str) -> list[int]:
    """Lines in the workload where `function` calls `callee` (a name, or a
    subscript like ctx.rt["cudaMalloc"] given as that string)."""
    callee = ast.unparse(ast.parse(callee, mode="eval"))
    tree = ast.parse(WORKLOAD.read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    lines = []
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        named = ast.unparse(call.func) == callee
        wraps = ast.unparse(call.func) == "timed" and call.args and ast.unparse(call.args[0]) == callee
        if named or wraps:
            lines.append(call.lineno)
    return lines


def python_frames(frames_json: str) -> list[tuple[str, str, int]]:
    frames: list[dict[str, Any]] = json.loads(frames_json)
    return [(f["pf"], f["pfn"], f.get("pl", 0)) for f in frames if "pfn" in f]


def test_stacks_show_the_python_file_function_and_executing_line_of_the_call(
    tmp_path: Path, workload: Workload, db_rows: Any
) -> None:
    db = tmp_path / "t.db"
    run = run_cli(
        "trace", "--record-all", "--db", str(db), "--cuda-lib", str(workload.lib), "--",
        *workload.command("--mallocs=3", "--launches=4", "--hold=0.2"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = db_rows(
        db,
        "SELECT o.name, s.frames FROM events e JOIN ops o ON o.source_id = e.source AND o.op_id = e.op "
        "JOIN stack_traces s ON s.hash = e.stack_hash",
    )
    (timed_line,) = call_lines("timed", "fn")
    callers = {
        "cudaMalloc": ("allocate", call_lines("allocate", 'ctx.rt["cudaMalloc"]')),
        "cudaLaunchKernel": ("launch", call_lines("launch", 'ctx.rt["cudaLaunchKernel"]')),
    }
    file = workload.file
    seen = set()
    for op, frames in rows:
        if op not in callers:
            continue
        function, (line,) = callers[op]
        stack = python_frames(frames)
        # Innermost first: the ctypes call in timed(), then the function that called timed().
        assert stack[:2] == [(file, "timed", timed_line), (file, function, line)], frames
        assert stack[-1][1] == "<module>"
        seen.add(op)
    assert seen == set(callers)


def test_different_python_call_sites_are_different_stacks(
    tmp_path: Path, workload: Workload, db_rows: Any
) -> None:
    # cudaMalloc through allocate() from two lines of worker() (the buffers,
    # and the one allocation too big to succeed): one native stack, two Python
    # call sites.
    db = tmp_path / "t.db"
    run = run_cli(
        "trace", "--record-all", "--db", str(db), "--cuda-lib", str(workload.lib), "--",
        *workload.command("--mallocs=2", f"--oom-bytes={1 << 50}", "--hold=0.2"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = db_rows(
        db,
        "SELECT DISTINCT e.stack_hash, s.frames FROM events e JOIN stack_traces s ON s.hash = e.stack_hash "
        "JOIN ops o ON o.source_id = e.source AND o.op_id = e.op WHERE o.name = 'cudaMalloc'",
    )
    worker_lines = {
        line for _, function, line in (python_frames(f)[2] for _, f in rows) if function == "worker"
    }
    assert worker_lines == set(call_lines("worker", "allocate")), rows
    assert len(rows) == len(worker_lines)


def test_get_stacks_shows_the_python_frames_of_a_call(tmp_path: Path, simcuda_lib: Path) -> None:
    db = tmp_path / "t.db"
    command = [sys.executable, str(WORKLOAD), "--lib", str(simcuda_lib), "--json", str(tmp_path / "w.json")]
    run = run_cli(
        "trace", "--record-all", "--db", str(db), "--cuda-lib", str(simcuda_lib), "--",
        *command, "--mallocs=2", "--hold=0.2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (line,) = call_lines("allocate", 'ctx.rt["cudaMalloc"]')
    shown: dict[str, Any] = {}

    async def body(client: Any) -> None:
        shown.update(structured(await client.call_tool("get_stacks", {"op": "cudaMalloc"})))

    mcp_run(db, tmp_path / "audit.db", body)
    (stack,) = shown["stacks"]
    assert f"allocate ({WORKLOAD}:{line})" in "\n".join(stack["python_frames"])
    # Python frames are not shown again as native frames of unknown symbol.
    assert not any(frame.startswith("?") for frame in stack["native_frames"])


def test_each_thread_gets_its_own_python_frames(tmp_path: Path, workload: Workload, db_rows: Any) -> None:
    # Worker threads: each call must be walked from its own thread's state,
    # whose outermost frame is threading's bootstrap, not the main module.
    db = tmp_path / "t.db"
    run = run_cli(
        "trace", "--record-all", "--db", str(db), "--cuda-lib", str(workload.lib), "--",
        *workload.command("--mallocs=3", "--threads=3", "--hold=0.2"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(workload.summary.read_text())
    rows = db_rows(
        db,
        "SELECT e.tid, s.frames FROM events e JOIN stack_traces s ON s.hash = e.stack_hash "
        "JOIN ops o ON o.source_id = e.source AND o.op_id = e.op WHERE o.name = 'cudaMalloc'",
    )
    (line,) = call_lines("allocate", 'ctx.rt["cudaMalloc"]')
    workers = {t["tid"] for t in summary["threads"]}
    assert {tid for tid, _ in rows} == workers
    threading_file = workload.module_file("threading")
    for _, frames in rows:
        stack = python_frames(frames)
        assert stack[1] == (workload.file, "allocate", line), frames
        assert stack[-1][:2] == (threading_file, "Thread._bootstrap"), frames


# Run in a mount namespace of its own with `root` as its /, as a container
# runtime does (pivot_root, the old root unmounted): /proc/PID/maps then names
# its files by their paths inside `root`.
IN_MOUNT_NAMESPACE = """
set -e
root=$1; shift
mount --make-rprivate /
mount --bind "$root" "$root"
cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
exec /usr/sbin/chroot . /bin/sh -c 'mount -t proc proc /proc && umount -l /.oldroot && exec "$@"' sh "$@"
"""


@pytest.mark.parametrize("isolation", ["chroot", "mount namespace"])
def test_a_python_process_in_another_root_is_traced_by_pid_with_its_frames(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any, isolation: str
) -> None:
    # /proc/PID/maps names a chrooted process's files by their path here, and a
    # namespaced one's by its path in its own root: discovery (--pid), the
    # native symbols and the interpreter must each read the mapped file itself.
    # A different library lies at the other reading of the library's path.
    root, python = INTERPRETERS["trixie python3.13"]
    assert root is not None
    missing = missing_from(root, python)
    if missing:
        pytest.skip(missing)
    if isolation == "mount namespace" and shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    directory = other_root_dir(root)
    seen = Path("/") / directory.relative_to(root)
    decoy = Path(f"{root}{directory}") if isolation == "chroot" else seen
    # The outermost directory made for the decoy, to remove afterwards.
    made = next(p for p in reversed([decoy, *decoy.parents]) if not p.exists())
    try:
        shutil.copy(WORKLOAD, directory)
        shutil.copy(simcuda_lib, directory)
        decoy.mkdir(parents=True)
        shutil.copy(simcuda_lib.parent / "libcuda.so.1", decoy / simcuda_lib.name)
        workload = [
            python, str(seen / WORKLOAD.name), "--lib", str(seen / simcuda_lib.name), "--json",
            str(seen / "w.json"), f"--start-gate={seen / 'go'}", "--mallocs=3", "--hold=0.5",
        ]  # fmt: skip
        if isolation == "chroot":
            command = ["chroot", str(root), *workload]
        else:
            command = ["unshare", "--mount", "sh", "-c", IN_MOUNT_NAMESPACE, "sh", str(root), *workload]
        target = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert target.stdout is not None
        ready = target.stdout.readline()
        assert ready.startswith("READY "), ready
        pid = int(ready.split()[1])
        db = tmp_path / "t.db"
        tracer = subprocess.Popen(
            [sys.executable, "-m", "ingero", "trace", *CUDA_ONLY, "--record-all", "--pid", str(pid),
             "-d", "60s", "--db", str(db)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert tracer.stderr is not None
            attached = tracer.stderr.readline()
            assert "attached" in attached, attached + tracer.stderr.read()
            # The database appears when the trace starts, after the target was
            # enrolled and its interpreter found: every call then has frames.
            deadline = time.monotonic() + 30
            while not db.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            (directory / "go").touch()
            assert target.wait(timeout=60) == 0
            _, err = tracer.communicate(timeout=60)
        finally:
            for proc in (target, tracer):
                if proc.poll() is None:
                    proc.kill()
        assert tracer.returncode == 0, err
        rows = db_rows(
            db,
            "SELECT e.pid, s.frames FROM events e JOIN stack_traces s ON s.hash = e.stack_hash "
            "JOIN ops o ON o.source_id = e.source AND o.op_id = e.op WHERE o.name = 'cudaMalloc'",
        )
    finally:
        for path in (directory, made):
            shutil.rmtree(path, ignore_errors=True)
    (timed_line,) = call_lines("timed", "fn")
    (line,) = call_lines("allocate", 'ctx.rt["cudaMalloc"]')
    file = str(seen / WORKLOAD.name)
    # The module keeps the name the process's maps give it.
    module = str((directory if isolation == "chroot" else seen) / simcuda_lib.name)
    assert len(rows) == 3, rows
    for event_pid, frames in rows:
        assert event_pid == pid
        native = [f for f in json.loads(frames) if "m" in f]
        assert (native[0]["s"], native[0]["m"]) == ("cudaMalloc", module), frames
        assert python_frames(frames)[:2] == [(file, "timed", timed_line), (file, "allocate", line)], frames
