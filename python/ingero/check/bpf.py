"""eBPF readiness, tried for real: load the CUDA runtime probes, attach them to the
bundled one-symbol simulated libcudart (libsimcheck), launch a child that calls it once and forks a grandchild
that calls it again, and see both calls come back through the ring buffer."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ingero import _core
from ingero.capture.privileges import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, effective_capabilities
from ingero.capture.run import default_node
from ingero.check.result import FAIL, OK, Check
from ingero.check.system import tracefs_root
from ingero.codes import op_named
from ingero.demo.bundled import NotBundled, simulated_library
from ingero.store.database import open_readonly

# One cudaMalloc in the child, one in a forked grandchild (enrolled only by the
# sched_process_fork tracepoint).
CHILD = """
import ctypes, os, sys
lib = ctypes.CDLL(sys.argv[1])
lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
def call(size):
    p = ctypes.c_void_p()
    if lib.cudaMalloc(ctypes.byref(p), size) != 0:
        sys.exit(3)
call(4096)
pid = os.fork()
if pid == 0:
    call(8192)
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
CHILD_TIMEOUT_MS = 20_000
RECOMMEND_ROOT = "run it as root (sudo), or grant CAP_BPF and CAP_PERFMON"


def permission() -> Check:
    caps = effective_capabilities()
    held = [
        name
        for bit, name in (
            (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
            (CAP_BPF, "CAP_BPF"),
            (CAP_PERFMON, "CAP_PERFMON"),
        )
        if caps >> bit & 1
    ]
    if "CAP_SYS_ADMIN" in held or {"CAP_BPF", "CAP_PERFMON"} <= set(held):
        return Check("BPF permission", OK, ", ".join(held))
    return Check(
        "BPF permission", FAIL, f"missing capabilities (have: {', '.join(held) or 'none'})", RECOMMEND_ROOT
    )


def _stored_mallocs(db: Path) -> list[tuple[int, int]]:
    """(pid, bytes) of each stored cudaMalloc."""
    malloc = op_named("cudaMalloc")
    conn = open_readonly(db)
    try:
        rows = conn.execute(
            "SELECT pid, arg0 FROM events WHERE source = ? AND op = ? ORDER BY timestamp",
            (malloc.source, malloc.id),
        )
        return [(int(pid), int(size)) for pid, size in rows]
    finally:
        conn.close()


def exercise() -> Iterator[Check]:
    """The BPF programs, uprobe and tracepoint lines."""
    try:
        lib = simulated_library("check")
    except NotBundled as err:
        yield Check("BPF programs", FAIL, f"cannot try: {err}", "run scripts/setup.sh, or reinstall ingero")
        return
    try:
        tracer = _core.Tracer(trace_all=False, ringbuf_bytes=1 << 16, nccl=False)
    except _core.IngeroError as err:
        yield Check("BPF programs", FAIL, f"the kernel refused to load them: {err}", RECOMMEND_ROOT)
        return
    yield Check("BPF programs", OK, "loaded")
    fork_warnings = tracer.warnings()
    with tempfile.TemporaryDirectory(prefix="ingero-check-") as tmp:
        db = Path(tmp) / "check.db"
        try:
            attachment = tracer.attach(lib, "runtime")
            tracer.start(db, default_node())
            pid = tracer.launch([sys.executable, "-c", CHILD, str(lib)])
            code = _core.wait_child(pid, CHILD_TIMEOUT_MS)
            tracer.stop()
        except _core.IngeroError as err:
            yield Check(
                "uprobe attach", FAIL, str(err), "see the error; `ingero trace` will fail the same way"
            )
            return
        calls = _stored_mallocs(db)
    if code != 0:
        yield Check("uprobe attach", FAIL, f"the test child exited with {code}", "see its output above")
        return
    child = [c for c in calls if c[0] == pid]
    if not child:
        yield Check(
            "uprobe attach",
            FAIL,
            f"{len(attachment['symbols'])} probes on {lib}, but the child's cudaMalloc never arrived",
            "check that the kernel has CONFIG_UPROBE_EVENTS=y and that nothing else detaches uprobes",
        )
        return
    yield Check(
        "uprobe attach",
        OK,
        f"entry and return probes on {', '.join(attachment['symbols'])}: a traced child's "
        f"cudaMalloc({child[0][1]}) came back through the ring buffer",
    )
    grandchild = [c for c in calls if c[0] != pid]
    if fork_warnings or not grandchild:
        why = "; ".join(fork_warnings) or "the forked grandchild's call was not seen"
        fix = (
            "mount -t tracefs nodev /sys/kernel/tracing"
            if tracefs_root() is None
            else "use a kernel with CONFIG_TRACEPOINTS (the sched_process_fork tracepoint)"
        )
        yield Check("tracepoint attach", FAIL, f"sched_process_fork: {why}", fix)
        return
    yield Check(
        "tracepoint attach",
        OK,
        f"sched_process_fork: a forked grandchild's cudaMalloc({grandchild[0][1]}) was stored",
    )


def checks() -> Iterator[Check]:
    yield permission()
    yield from exercise()
