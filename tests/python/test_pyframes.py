"""Python frames in the stored stacks: real probes on the simulated libcudart,
the workload run by a real CPython, expectations read from the workload's source."""

from __future__ import annotations

import ast
import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WORKLOAD, run_cli
from tests.python.mcp_session import run as mcp_run
from tests.python.mcp_session import structured

pytestmark = pytest.mark.usefixtures("privileged")

# The interpreter running the tests (pyenv's, libpython shared) and, where
# the machine has it, Debian's (libpython linked into the executable).
INTERPRETERS = {"tests' python": sys.executable, "debian python3.11": "/usr/bin/python3.11"}


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


@pytest.mark.parametrize("interpreter", list(INTERPRETERS))
def test_stacks_show_the_python_file_function_and_executing_line_of_the_call(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any, interpreter: str
) -> None:
    python = INTERPRETERS[interpreter]
    if shutil.which(python) is None:
        pytest.skip(f"{python} is not installed")
    db = tmp_path / "t.db"
    command = [python, str(WORKLOAD), "--lib", str(simcuda_lib), "--json", str(tmp_path / "w.json")]
    run = run_cli(
        "trace", "--record-all", "--db", str(db), "--cuda-lib", str(simcuda_lib), "--",
        *command, "--mallocs=3", "--launches=4", "--hold=0.2",
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
    workload = str(WORKLOAD)
    seen = set()
    for op, frames in rows:
        if op not in callers:
            continue
        function, (line,) = callers[op]
        stack = python_frames(frames)
        # Innermost first: the ctypes call in timed(), then the function that called timed().
        assert stack[:2] == [(workload, "timed", timed_line), (workload, function, line)], frames
        assert stack[-1][1] == "<module>"
        seen.add(op)
    assert seen == set(callers)


def test_different_python_call_sites_are_different_stacks(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    # cudaMalloc through allocate() from two lines of worker() (the buffers,
    # and the one allocation too big to succeed): one native stack, two Python
    # call sites.
    db = tmp_path / "t.db"
    command = [sys.executable, str(WORKLOAD), "--lib", str(simcuda_lib), "--json", str(tmp_path / "w.json")]
    run = run_cli(
        "trace", "--record-all", "--db", str(db), "--cuda-lib", str(simcuda_lib), "--",
        *command, "--mallocs=2", f"--oom-bytes={1 << 50}", "--hold=0.2",
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


def test_each_thread_gets_its_own_python_frames(tmp_path: Path, simcuda_lib: Path, db_rows: Any) -> None:
    # Worker threads: each call must be walked from its own thread's state,
    # whose outermost frame is threading's bootstrap, not the main module.
    db = tmp_path / "t.db"
    command = [sys.executable, str(WORKLOAD), "--lib", str(simcuda_lib), "--json", str(tmp_path / "w.json")]
    run = run_cli(
        "trace", "--record-all", "--db", str(db), "--cuda-lib", str(simcuda_lib), "--",
        *command, "--mallocs=3", "--threads=3", "--hold=0.2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "w.json").read_text())
    rows = db_rows(
        db,
        "SELECT e.tid, s.frames FROM events e JOIN stack_traces s ON s.hash = e.stack_hash "
        "JOIN ops o ON o.source_id = e.source AND o.op_id = e.op WHERE o.name = 'cudaMalloc'",
    )
    (line,) = call_lines("allocate", 'ctx.rt["cudaMalloc"]')
    workers = {t["tid"] for t in summary["threads"]}
    assert {tid for tid, _ in rows} == workers
    for _, frames in rows:
        stack = python_frames(frames)
        assert stack[1] == (str(WORKLOAD), "allocate", line), frames
        assert stack[-1][:2] == (threading.__file__, "Thread._bootstrap"), frames
