"""`ingero trace` end to end: real uprobes on the simulated libcudart, real SQLite.

Every expectation comes from the workload's own account of the calls it made,
never from constants that could agree with a broken tracer by accident.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CUDA_ONLY, WORKLOAD, load_json, run_cli, trace_workload, workload_cmd

# The runtime symbols the foundation traces, and the op names the original
# Ingero stores them under (an independent oracle, not read from ingero).
TRACED = {
    "cudaMalloc": "cudaMalloc",
    "cudaFree": "cudaFree",
    "cudaLaunchKernel": "cudaLaunchKernel",
    "cudaMemcpy": "cudaMemcpy",
    "cudaMemcpyAsync": "cudaMemcpyAsync",
    "cudaStreamSynchronize": "cudaStreamSync",
    "cudaDeviceSynchronize": "cudaDeviceSync",
}
MIB = 1 << 20

pytestmark = pytest.mark.usefixtures("privileged")


def rows_by_op(db_rows: Any, db: Path) -> dict[str, list[tuple[Any, ...]]]:
    rows = db_rows(
        db,
        "SELECT o.name, e.pid, e.tid, e.duration, e.arg0, e.arg1, e.ret_code, e.timestamp, e.comm "
        "FROM events e JOIN ops o ON o.source_id = e.source AND o.op_id = e.op WHERE e.source = 1",
    )
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    return grouped


def stats_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("events:"))


def trace_counts(stdout: str) -> dict[str, int]:
    """The end-of-trace counts by name: received, stored, dropped, sampled out."""
    counts = stats_line(stdout).split(":", 1)[1]
    return {name.strip(): int(n) for name, n in re.findall(r"([a-z ]+) (\d+)", counts)}


def traced_calls(summary: Path) -> int:
    """Calls of the traced runtime symbols the workload says it made."""
    apis = load_json(summary)["apis"]
    return sum(apis[s]["calls"] for s in TRACED if s in apis)


# The probes pair a call's entry and return in a per-thread slot, or in a hash
# map when the slot is another thread's: one shared slot drives that path.
@pytest.mark.parametrize("call_slots", [None, "1"], ids=["own slots", "threads share one slot"])
def test_each_call_becomes_one_row_with_its_arguments(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any, call_slots: str | None
) -> None:
    db, summary = tmp_path / "trace.db", tmp_path / "workload.json"
    malloc_bytes, memcpy_bytes = 4 * MIB, 1 * MIB
    started_ns = time.time_ns()
    env = dict(os.environ, INGERO_CALL_SLOTS=call_slots) if call_slots else None
    run = trace_workload(
        db,
        simcuda_lib,
        summary,
        "--threads=3",
        "--streams=1",
        "--mallocs=7",
        "--frees=5",
        "--launches=30",
        "--memcpys=4",
        "--async-memcpys=3",
        "--syncs=4",
        "--device-syncs=1",
        f"--malloc-bytes={malloc_bytes}",
        f"--memcpy-bytes={memcpy_bytes}",
        "--memcpy-kind=2",
        env=env,
    )
    assert run.returncode == 0, run.stderr
    made = load_json(summary)
    by_op = rows_by_op(db_rows, db)

    assert set(by_op) == set(TRACED.values())
    for symbol, op in TRACED.items():
        api, rows = made["apis"][symbol], by_op[op]
        assert len(rows) == api["calls"], symbol
        assert {r[1] for r in rows} == {made["pid"]}, symbol
        assert Counter(str(r[2]) for r in rows) == Counter(api["tids"]), symbol
        assert Counter(str(r[6]) for r in rows) == Counter(api["rc"]), symbol
        assert all(r[3] > 0 for r in rows), f"{symbol} has a zero duration"
        assert all(r[7] >= started_ns for r in rows), f"{symbol} timestamp is not wall-clock time"
        if "sizes" in api:
            assert Counter(str(r[4]) for r in rows) == Counter(api["sizes"]), symbol
        if "kinds" in api:
            assert Counter(str(r[5]) for r in rows) == Counter(api["kinds"]), symbol

    # Durations are at least the time the simulated device was modelled to take.
    model = made["model"]
    malloc_floor = model["alloc_base_ns"] + (malloc_bytes // MIB) * model["alloc_ns_per_mib"]
    assert min(r[3] for r in by_op["cudaMalloc"]) >= malloc_floor
    copy_floor = model["memcpy_base_ns"] + memcpy_bytes // model["memcpy_bytes_per_us"] * 1000
    assert min(r[3] for r in by_op["cudaMemcpy"]) >= copy_floor

    # cudaMalloc's device pointer is read at return; cudaFree reports the bytes
    # it gave back from the in-kernel allocation map.
    pointers = [r[5] for r in by_op["cudaMalloc"]]
    assert all(p != 0 for p in pointers)
    assert len(set(pointers)) == len(pointers)
    assert {r[4] for r in by_op["cudaFree"]} <= set(pointers)
    assert sum(r[5] for r in by_op["cudaFree"]) == made["allocations"]["freed"] * malloc_bytes

    total = sum(made["apis"][s]["calls"] for s in TRACED)
    assert stats_line(run.stdout) == f"events: received {total}, stored {total}, dropped 0"
    (session,) = db_rows(db, "SELECT started_at, stopped_at, ingero_ver FROM sessions")
    assert session[0] <= session[1]
    assert session[2]
    assert db_rows(db, "SELECT name FROM process_names WHERE pid = ?", made["pid"])


def test_failed_allocation_is_stored_with_its_error_code(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    db, summary = tmp_path / "trace.db", tmp_path / "workload.json"
    too_big = 64 << 30  # beyond the simulated device's 8 GiB
    run = trace_workload(db, simcuda_lib, summary, "--mallocs=2", f"--oom-bytes={too_big}")
    assert run.returncode == 0, run.stderr
    made = load_json(summary)
    assert made["oom"]["rc"] == 2
    failed = db_rows(
        db, "SELECT arg0, arg1, ret_code FROM events WHERE source = 1 AND op = 1 AND ret_code != 0"
    )
    assert failed == [(too_big, 0, made["oom"]["rc"])]


def start_gated_workload(lib: Path, gate: Path, summary: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        workload_cmd(lib, summary, "--mallocs=3", "--launches=12", "--syncs=2", f"--start-gate={gate}"),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY "), line
    return proc, int(line.split()[1])


def test_pid_mode_stores_only_the_target_process(tmp_path: Path, simcuda_lib: Path, db_rows: Any) -> None:
    db, gate = tmp_path / "trace.db", tmp_path / "go"
    target, target_pid = start_gated_workload(simcuda_lib, gate, tmp_path / "target.json")
    other, other_pid = start_gated_workload(simcuda_lib, gate, tmp_path / "other.json")
    tracer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingero",
            "trace",
            *CUDA_ONLY,
            "--pid",
            str(target_pid),
            "-d",
            "60s",
            "--db",
            str(db),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tracer.stderr is not None
        attached = tracer.stderr.readline()
        assert "attached" in attached, attached + tracer.stderr.read()
        gate.touch()
        assert target.wait(timeout=60) == 0
        assert other.wait(timeout=60) == 0
        # The trace ends by itself once its only target has exited.
        out, err = tracer.communicate(timeout=60)
    finally:
        for proc in (target, other, tracer):
            if proc.poll() is None:
                proc.kill()
    assert tracer.returncode == 0, err
    made = load_json(tmp_path / "target.json")
    pids = db_rows(db, "SELECT pid, COUNT(*) FROM events GROUP BY pid")
    expected = sum(made["apis"][s]["calls"] for s in TRACED if s in made["apis"])
    assert pids == [(target_pid, expected)]
    assert other_pid != target_pid
    assert f"stored {expected}, dropped 0" in out


def test_calls_of_the_launched_command_are_seen_from_its_first_instruction(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    # The workload's very first traced call happens right after start-up; a
    # tracer that enrolled the child late would miss it.
    db, summary = tmp_path / "trace.db", tmp_path / "w.json"
    run = trace_workload(db, simcuda_lib, summary, "--mallocs=1")
    assert run.returncode == 0, run.stderr
    assert db_rows(db, "SELECT COUNT(*) FROM events WHERE op = 1") == [(1,)]


def test_exit_code_of_the_traced_command_is_returned(tmp_path: Path, simcuda_lib: Path) -> None:
    run = run_cli(
        "trace", *CUDA_ONLY, "--db", str(tmp_path / "t.db"), "--cuda-lib", str(simcuda_lib), "--",
        sys.executable, "-c", "import sys; sys.exit(7)",
    )  # fmt: skip
    assert run.returncode == 7, run.stderr


def test_library_is_discovered_from_ld_library_path(tmp_path: Path, simcuda_lib: Path, db_rows: Any) -> None:
    env = dict(os.environ, LD_LIBRARY_PATH=str(simcuda_lib.parent))
    db = tmp_path / "t.db"
    run = run_cli(
        "trace", *CUDA_ONLY, "--db", str(db), "--",
        sys.executable, str(WORKLOAD), "--mallocs=2", "--json", str(tmp_path / "w.json"),
        env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert str(simcuda_lib.parent) in run.stderr
    assert db_rows(db, "SELECT COUNT(*) FROM events WHERE op = 1") == [(2,)]


def test_graph_lifecycle_and_stream_handles(tmp_path: Path, simcuda_lib: Path, db_rows: Any) -> None:
    db, summary = tmp_path / "trace.db", tmp_path / "w.json"
    run = trace_workload(
        db, simcuda_lib, summary, "--streams=2", "--launches=12", "--syncs=3", "--graph-launches=4"
    )
    assert run.returncode == 0, run.stderr
    apis = load_json(summary)["apis"]

    def args(source: int, op: str) -> tuple[Counter[str], Counter[str]]:
        rows = db_rows(
            db,
            "SELECT e.arg0, e.arg1 FROM events e JOIN ops o ON o.source_id = e.source AND o.op_id = e.op "
            "WHERE e.source = ? AND o.name = ?",
            source,
            op,
        )
        return Counter(str(r[0]) for r in rows), Counter(str(r[1]) for r in rows)

    # Runtime: the stream each launch and sync was about (7th argument word of
    # cudaLaunchKernel: read from the caller's stack on x86-64).
    assert args(1, "cudaLaunchKernel")[1] == Counter(apis["cudaLaunchKernel"]["handles"])
    assert args(1, "cudaStreamSync")[0] == Counter(apis["cudaStreamSynchronize"]["handles"])

    # Graphs: stream -> graph (read at return) -> executable graph -> launches.
    begin_streams, modes = args(8, "graphBeginCapture")
    assert begin_streams == Counter(apis["cudaStreamBeginCapture"]["handles"])
    assert modes == Counter({"0": apis["cudaStreamBeginCapture"]["calls"]})
    end_streams, graphs = args(8, "graphEndCapture")
    assert end_streams == begin_streams
    assert graphs == Counter(apis["cudaStreamEndCapture"]["handles"])
    instantiated_from, execs = args(8, "graphInstantiate")
    assert instantiated_from == graphs
    assert execs == Counter(apis["cudaGraphInstantiate"]["handles"])
    launched, launch_streams = args(8, "graphLaunch")
    assert launched == Counter(apis["cudaGraphLaunch"]["handles"])
    assert set(launch_streams) == set(begin_streams)


def test_each_call_carries_the_device_its_thread_selected(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    db, summary = tmp_path / "trace.db", tmp_path / "w.json"
    env = dict(os.environ, SIMCUDA_DEVICE_COUNT="2")
    run = run_cli(
        "trace", *CUDA_ONLY, "--db", str(db), "--cuda-lib", str(simcuda_lib), "--",
        *workload_cmd(simcuda_lib, summary, "--device=1", "--mallocs=3", "--launches=4", "--threads=2"),
        env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert load_json(summary)["apis"]["cudaSetDevice"]["rc"] == {"0": 2}
    assert db_rows(db, "SELECT DISTINCT gpu_id FROM events") == [(1,)]


@pytest.mark.parametrize("context", ["cuCtxCreate", "primary context"])
def test_driver_calls_carry_the_device_of_their_current_context(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any, context: str
) -> None:
    # A context made current by creating it, or the runtime's way: retain the
    # device's primary context, then cuCtxSetCurrent.
    db, summary = tmp_path / "trace.db", tmp_path / "w.json"
    driver_lib = simcuda_lib.parent / "libcuda.so.1"
    flags = ["--device=1", "--driver-allocs=2", "--driver-memcpys=2", "--driver-syncs=2"]
    if context == "primary context":
        flags.append("--driver-primary-context")
    run = run_cli(
        "trace", *CUDA_ONLY, "--db", str(db), "--cuda-lib", str(driver_lib), "--",
        *workload_cmd(simcuda_lib, summary, "--driver-lib", str(driver_lib), *flags),
        env=dict(os.environ, SIMCUDA_DEVICE_COUNT="2"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    apis = load_json(summary)["apis"]
    made = sum(apis[s]["calls"] for s in ("cuMemAlloc_v2", "cuMemcpy", "cuCtxSynchronize"))
    assert db_rows(db, "SELECT gpu_id, COUNT(*) FROM events WHERE source = 4 GROUP BY gpu_id") == [(1, made)]


def wait_for_line(stream: Any, needle: str, timeout: float = 30) -> str:
    """Reads `stream` until a line contains `needle` (or fails after `timeout`)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return str(line)
    raise AssertionError(f"{needle!r} not seen in: {''.join(seen)}")


def test_without_a_target_every_process_is_traced_including_later_ones_and_other_copies(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    # A second copy of the library at a path no discovery knows about: it is
    # only found when a process started after the trace maps it.
    copy_dir = tmp_path / "venv-copy"
    shutil.copytree(simcuda_lib.parent, copy_dir, symlinks=True)
    copy = copy_dir / simcuda_lib.name
    db, gate = tmp_path / "trace.db", tmp_path / "go"
    tracer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingero",
            "trace",
            *CUDA_ONLY,
            "--db",
            str(db),
            "--cuda-lib",
            str(simcuda_lib),
            "-d",
            "120s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workloads = []
    try:
        assert tracer.stderr is not None
        wait_for_line(tracer.stderr, f"probes to {simcuda_lib}")
        workloads.append(start_gated_workload(simcuda_lib, gate, tmp_path / "first.json"))
        workloads.append(start_gated_workload(copy, gate, tmp_path / "second.json"))
        wait_for_line(tracer.stderr, str(copy_dir))  # the rescan attached the new copy
        gate.touch()
        for proc, _ in workloads:
            assert proc.wait(timeout=60) == 0
        tracer.terminate()  # SIGTERM: a clean stop that stores everything
        _, err = tracer.communicate(timeout=60)
    finally:
        for proc in [tracer, *(p for p, _ in workloads)]:
            if proc.poll() is None:
                proc.kill()
    assert tracer.returncode == 0, err
    for (_, pid), name in zip(workloads, ["first", "second"], strict=True):
        made = load_json(tmp_path / f"{name}.json")
        expected = sum(made["apis"][s]["calls"] for s in TRACED if s in made["apis"])
        assert db_rows(db, "SELECT COUNT(*) FROM events WHERE pid = ? AND source = 1", pid) == [(expected,)]


def test_driver_api_and_the_remaining_runtime_copies(tmp_path: Path, simcuda_lib: Path, db_rows: Any) -> None:
    db, summary = tmp_path / "trace.db", tmp_path / "w.json"
    driver_lib = simcuda_lib.parent / "libcuda.so.1"
    env = dict(os.environ, SIMCUDA_DEVICE_COUNT="2")
    flags = [
        "--threads=2", "--streams=1", "--memcpy-bytes=409600", "--memcpy-kind=1",
        "--memcpy2d=3", "--memcpy2d-async=2", "--memcpy-peer=2", "--memcpy-peer-async=3",
        "--managed-allocs=2", "--driver-allocs=2", "--driver-launches=5", "--driver-memcpys=2",
        "--driver-async-memcpys=3", "--driver-syncs=2", "--driver-managed-allocs=1",
    ]  # fmt: skip
    run = run_cli(
        "trace", *CUDA_ONLY, "--db", str(db),
        "--cuda-lib", str(simcuda_lib), "--cuda-lib", str(driver_lib), "--",
        *workload_cmd(simcuda_lib, summary, "--driver-lib", str(driver_lib), *flags),
        env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    made = load_json(summary)
    apis = made["apis"]
    rows = db_rows(
        db,
        "SELECT o.name, e.arg0, e.arg1, e.ret_code, e.duration FROM events e "
        "JOIN ops o ON o.source_id = e.source AND o.op_id = e.op",
    )

    def of(op: str) -> list[tuple[Any, ...]]:
        return [r[1:] for r in rows if r[0] == op]

    # Every variant a program can call is one op: cuMemAlloc and cuMemAlloc_v2.
    expected = {
        "cudaMemcpy2D": ["cudaMemcpy2D"],
        "cudaMemcpy2DAsync": ["cudaMemcpy2DAsync"],
        "cudaMemcpyPeer": ["cudaMemcpyPeer"],
        "cudaMemcpyPeerAsync": ["cudaMemcpyPeerAsync"],
        "cudaMallocManaged": ["cudaMallocManaged"],
        "cuMemAlloc": ["cuMemAlloc", "cuMemAlloc_v2"],
        "cuLaunchKernel": ["cuLaunchKernel"],
        "cuMemcpy": ["cuMemcpy"],
        "cuMemcpyAsync": ["cuMemcpyAsync"],
        "cuCtxSynchronize": ["cuCtxSynchronize"],
        "cuMemAllocManaged": ["cuMemAllocManaged"],
    }
    for op, symbols in expected.items():
        calls = sum(apis[s]["calls"] for s in symbols if s in apis)
        assert calls > 0, op
        assert len(of(op)) == calls, op
        assert all(r[2] == 0 and r[3] > 0 for r in of(op)), op
        sizes: Counter[str] = Counter()
        for s in symbols:
            sizes.update(apis.get(s, {}).get("sizes", {}))
        if sizes:
            assert Counter(str(r[0]) for r in of(op)) == sizes, op

    # Second arguments: copy direction, destination device, streams, pointers.
    assert Counter(str(r[1]) for r in of("cudaMemcpy2D")) == Counter(apis["cudaMemcpy2D"]["kinds"])
    assert Counter(str(r[1]) for r in of("cudaMemcpyPeer")) == Counter(apis["cudaMemcpyPeer"]["kinds"])
    assert Counter(str(r[1]) for r in of("cuLaunchKernel")) == Counter(apis["cuLaunchKernel"]["handles"])
    assert {r[0] for r in of("cuLaunchKernel")} == {made["driver"]["function"]}
    assert Counter(str(r[1]) for r in of("cuMemcpyAsync")) == Counter(apis["cuMemcpyAsync"]["handles"])
    assert all(r[1] != 0 for r in of("cuMemAlloc") + of("cudaMallocManaged"))


def test_a_flood_that_overruns_the_ring_buffer_is_counted_exactly(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    db, summary = tmp_path / "trace.db", tmp_path / "w.json"
    run = trace_workload(
        db, simcuda_lib, summary, "--threads=3", "--launches=24000", "--kernel-ns=0",
        trace_flags=("--ringbuf-size", "4096"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    calls = traced_calls(summary)
    counts = trace_counts(run.stdout)
    received, stored, dropped = counts["received"], counts["stored"], counts["dropped"]
    assert "sampled out" not in run.stdout  # the flood ends before sampling adapts
    assert dropped > 0, "a 4 KiB ring buffer should overflow under this flood"
    assert received == stored
    assert stored + dropped == calls
    assert db_rows(db, "SELECT COUNT(*) FROM events") == [(stored,)]


GRAPH_CALLS = ("cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate", "cudaGraphLaunch")


def test_graph_calls_have_their_own_ring_and_survive_a_launch_flood(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    # One process floods cudaLaunchKernel through a 4 KiB runtime ring; a second
    # captures, instantiates and launches graphs while the flood is on.
    db = tmp_path / "trace.db"
    flood = shlex.join(
        workload_cmd(simcuda_lib, tmp_path / "flood.json", "--threads=2", "--launches=60000", "--kernel-ns=0")
    )
    graphs = shlex.join(
        workload_cmd(simcuda_lib, tmp_path / "graphs.json", "--threads=2", "--graph-launches=40")
    )
    run = run_cli(
        "trace", *CUDA_ONLY, "--record-all", "--ringbuf-size", "4096", "--db", str(db),
        "--cuda-lib", str(simcuda_lib), "--", "sh", "-c", f"{flood} & sleep 0.5; {graphs}; wait",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    counts = trace_counts(run.stdout)
    assert counts["dropped"] > 0, "the flood should overrun the 4 KiB runtime ring"

    made = load_json(tmp_path / "graphs.json")
    stored = dict(
        db_rows(db, "SELECT op, COUNT(*) FROM events WHERE source = 8 AND pid = ? GROUP BY op", made["pid"])
    )
    ops = dict(db_rows(db, "SELECT name, op_id FROM ops WHERE source_id = 8"))
    names = {"cudaStreamBeginCapture": "graphBeginCapture", "cudaStreamEndCapture": "graphEndCapture",
             "cudaGraphInstantiate": "graphInstantiate", "cudaGraphLaunch": "graphLaunch"}  # fmt: skip
    for call in GRAPH_CALLS:
        assert stored.get(ops[names[call]], 0) == made["apis"][call]["calls"], call

    # The graph calls were made while the flood was going on.
    flood_pid = load_json(tmp_path / "flood.json")["pid"]
    ((flood_start, flood_end),) = db_rows(
        db, "SELECT MIN(timestamp), MAX(timestamp) FROM events WHERE pid = ?", flood_pid
    )
    ((graph_start, graph_end),) = db_rows(
        db, "SELECT MIN(timestamp), MAX(timestamp) FROM events WHERE source = 8"
    )
    assert flood_start < graph_start
    assert graph_end < flood_end


def test_children_of_the_traced_command_are_traced_from_their_start(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    # A shell that forks two workloads (fork, then exec): neither pid exists
    # when the trace starts, and only the fork tracepoint can enrol them in time.
    db = tmp_path / "trace.db"
    first, second = (
        shlex.join(workload_cmd(simcuda_lib, tmp_path / f"{n}.json", "--mallocs=2", "--launches=7"))
        for n in ("first", "second")
    )
    run = run_cli(
        "trace", *CUDA_ONLY, "--db", str(db), "--cuda-lib", str(simcuda_lib), "--",
        "sh", "-c", f"{first} & {second}; wait",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "warning" not in run.stderr
    for name in ("first", "second"):
        made = load_json(tmp_path / f"{name}.json")
        expected = sum(made["apis"][s]["calls"] for s in TRACED if s in made["apis"])
        assert db_rows(db, "SELECT COUNT(*) FROM events WHERE pid = ?", made["pid"]) == [(expected,)]


def test_nccl_communicators_and_collectives_are_stored_with_their_communicator(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    db, summary = tmp_path / "trace.db", tmp_path / "w.json"
    nccl_lib = simcuda_lib.parent / "libnccl.so.2"
    flags = [
        "--nccl-lib", str(nccl_lib), "--nccl-ranks=2", "--nccl-allreduce=3", "--nccl-allgather=2",
        "--nccl-reducescatter=2", "--nccl-broadcast=2", "--nccl-send=2", "--nccl-recv=2",
        "--nccl-init-all=2", "--nccl-count=65536", "--nccl-dtype=6",
    ]  # fmt: skip
    run = run_cli(
        "trace", *CUDA_ONLY, "--nccl", "--db", str(db),
        "--cuda-lib", str(simcuda_lib), "--cuda-lib", str(nccl_lib), "--",
        *workload_cmd(simcuda_lib, summary, *flags),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    made = load_json(summary)
    apis, nranks = made["apis"], made["nccl"]["nranks"]
    rows = db_rows(
        db,
        "SELECT o.name, e.arg0, e.arg1, e.ret_code FROM events e "
        "JOIN ops o ON o.source_id = e.source AND o.op_id = e.op WHERE e.source = 9",
    )
    counts = Counter(r[0] for r in rows)
    for op in ["ncclCommInitRank", "ncclCommInitAll", "ncclCommDestroy", "ncclAllReduce", "ncclAllGather",
               "ncclReduceScatter", "ncclBroadcast", "ncclSend", "ncclRecv"]:  # fmt: skip
        assert counts[op] == apis[op]["calls"], op
    assert all(r[3] == 0 for r in rows)

    # Every rank hashed the same unique id; each row says which member it was.
    inits = [r for r in rows if r[0] == "ncclCommInitRank"]
    (comm_hash,) = {r[1] for r in inits}
    assert comm_hash != 0
    assert sorted(r[2] for r in inits) == [(rank << 32) | nranks for rank in range(nranks)]
    for op in ["ncclAllReduce", "ncclAllGather", "ncclReduceScatter", "ncclBroadcast"]:
        collective = [r for r in rows if r[0] == op]
        assert {r[2] for r in collective} == {comm_hash}, op
        assert Counter(str(r[1]) for r in collective) == Counter(apis[op]["sizes"]), op
    peers = Counter(r[2] for r in rows if r[0] == "ncclSend")
    assert sum(peers.values()) == apis["ncclSend"]["calls"]
    assert set(peers) <= set(range(nranks))


def test_nccl_is_opt_in(tmp_path: Path, simcuda_lib: Path) -> None:
    nccl_lib = simcuda_lib.parent / "libnccl.so.2"
    run = run_cli("trace", "--db", str(tmp_path / "t.db"), "--cuda-lib", str(nccl_lib), "--", "true")
    assert run.returncode != 0
    assert "add --nccl" in run.stderr


def test_fixed_sampling_keeps_one_call_in_n_and_accounts_for_the_rest(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    db, summary = tmp_path / "trace.db", tmp_path / "w.json"
    run = trace_workload(
        db, simcuda_lib, summary, "--launches=2000", "--kernel-ns=0", trace_flags=("--sampling-rate", "10")
    )
    assert run.returncode == 0, run.stderr
    calls = traced_calls(summary)
    counts = trace_counts(run.stdout)
    received, stored, dropped = counts["received"], counts["stored"], counts["dropped"]
    sampled_out = counts["sampled out"]
    assert received == stored
    assert stored + dropped + sampled_out == calls
    # Each CPU keeps every 10th of the calls it saw.
    cpus = os.cpu_count() or 1
    assert calls // 10 - cpus <= stored + dropped <= calls // 10 + cpus
    assert db_rows(db, "SELECT COUNT(*) FROM events") == [(stored,)]


def test_stacks_are_symbolised_and_hashed_the_same_in_every_run(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    hashes = []
    for run_no in (1, 2):  # two processes, two address-space layouts
        db = tmp_path / f"run{run_no}.db"
        # --hold: the process outlives the drainer's first look at it, which is
        # when its memory map is cached for symbolisation.
        run = trace_workload(
            db, simcuda_lib, tmp_path / "w.json", "--mallocs=3", "--launches=10", "--hold=0.2"
        )
        assert run.returncode == 0, run.stderr
        rows = db_rows(
            db,
            "SELECT o.name, e.stack_hash, s.frames FROM events e "
            "JOIN ops o ON o.source_id = e.source AND o.op_id = e.op "
            "LEFT JOIN stack_traces s ON s.hash = e.stack_hash",
        )
        assert all(frames for _, _, frames in rows), "an event's stack is missing from stack_traces"
        for op, _, frames in rows:
            top = json.loads(frames)[0]
            assert top["s"] == {"cudaStreamSync": "cudaStreamSynchronize"}.get(op, op)
            assert top["m"].endswith("libcudart.so.12")
            assert top["f"].endswith("cudart.c")
            assert top["l"] > 0
        hashes.append(sorted({(op, stack_hash) for op, stack_hash, _ in rows}))
    assert hashes[0] == hashes[1]


def test_no_stack_stores_none(tmp_path: Path, simcuda_lib: Path, db_rows: Any) -> None:
    db = tmp_path / "t.db"
    run = run_cli(
        "trace", *CUDA_ONLY, "--no-stack", "--db", str(db), "--cuda-lib", str(simcuda_lib), "--",
        *workload_cmd(simcuda_lib, tmp_path / "w.json", "--mallocs=2"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert db_rows(db, "SELECT DISTINCT stack_hash FROM events") == [(0,)]
    assert db_rows(db, "SELECT COUNT(*) FROM stack_traces") == [(0,)]


def test_libraries_of_the_commands_conda_env_and_venv_are_found(
    tmp_path: Path, simcuda_lib: Path, db_rows: Any
) -> None:
    # A conda env with the runtime in lib/, and a venv with pip's nvidia wheel
    # layout: ingero must find both copies from the command's environment alone.
    conda, venv = tmp_path / "conda-env", tmp_path / "venv"
    (conda / "lib").mkdir(parents=True)
    shutil.copy2(simcuda_lib, conda / "lib" / simcuda_lib.name)
    wheel_lib = venv / "lib" / "python3.11" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"
    wheel_lib.mkdir(parents=True)
    shutil.copy2(simcuda_lib, wheel_lib / simcuda_lib.name)
    for variable, prefix, lib in [("CONDA_PREFIX", conda, conda / "lib"), ("VIRTUAL_ENV", venv, wheel_lib)]:
        db = tmp_path / f"{variable}.db"
        env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "CONDA_PREFIX")}
        env[variable] = str(prefix)
        run = run_cli(
            "trace", *CUDA_ONLY, "--db", str(db), "--",
            *workload_cmd(lib / simcuda_lib.name, tmp_path / "w.json", "--mallocs=2"),
            env=env,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert str(lib) in run.stderr, run.stderr
        assert db_rows(db, "SELECT COUNT(*) FROM events WHERE op = 1 AND source = 1") == [(2,)]
