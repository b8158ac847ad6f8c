"""Running one trace: resolve targets and libraries, attach, record, stop cleanly."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from ingero import _core
from ingero.analyse.live import LiveChains
from ingero.capture.discover import (
    DRIVER,
    NCCL,
    RUNTIME,
    DiscoveryError,
    all_mapped_libraries,
    candidate_libraries,
    explicit_libraries,
    mapped_libraries,
    process_exists,
)
from ingero.capture.privileges import missing_privileges
from ingero.capture.sampling import AdaptiveSampling

POLL_SECONDS = 0.2
# How often the live view is refreshed.
LIVE_SECONDS = 1.0
# The kernel-event layers, all traced unless turned off (--no-host, --no-io, ...).
KERNEL_LAYERS = ("host", "io", "tcp", "net")
# How often a trace of every process looks for library copies loaded since.
RESCAN_SECONDS = 2.0


class TraceError(Exception):
    """A trace that cannot start, worded for the user."""


@dataclass
class TraceRequest:
    db: Path
    node: str
    pids: list[int] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    duration: float | None = None
    cuda_libs: list[Path] = field(default_factory=list)
    ringbuf_bytes: int = 8 << 20
    nccl: bool = False
    # 1-in-N recording of runtime/driver calls; None adapts to ring-buffer drops.
    sampling_rate: int | None = None
    stacks: bool = True
    # Selective storage: False keeps every event; stack_samples caps rows per stack.
    record_all: bool = False
    stack_samples: int = 100
    # Oldest rows are pruned to keep the database under this many bytes; 0 = no cap.
    max_db_bytes: int = 0
    # Roll the database over at this size (0 = never), keeping the newest N rolled files.
    rollover_bytes: int = 0
    rollover_keep: int = 6
    layers: list[str] = field(default_factory=lambda: list(KERNEL_LAYERS))
    # Every event as a JSON line on stdout.
    json: bool = False


@dataclass
class TraceResult:
    stats: _core.TraceStats
    attachments: list[_core.Attachment]
    command_pid: int | None = None
    exit_code: int | None = None
    interrupted: bool = False
    # Causal chains found in the trace and stored in `causal_chains`.
    chains: int = 0


class _Stop(Exception):
    """Raised by the SIGTERM handler so a terminated trace still flushes."""


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_node() -> str:
    # ':' separates node from sequence number in event ids.
    return socket.gethostname().replace(":", "-") or "localhost"


def check_db_path(db: Path) -> None:
    directory = db.parent if str(db.parent) else Path(".")
    if not directory.is_dir():
        raise TraceError(f"cannot write database {db}: directory {directory} does not exist")
    if db.exists() and not os.access(db, os.W_OK):
        raise TraceError(f"cannot write database {db}: the file is read-only")
    if not db.exists() and not os.access(directory, os.W_OK):
        raise TraceError(f"cannot write database {db}: directory {directory} is not writable")


def resolve_libraries(request: TraceRequest) -> list[tuple[str, Path]]:
    """(kind, path) of each CUDA library to attach to, or a TraceError saying why
    there are none."""
    try:
        if request.cuda_libs:
            found = explicit_libraries(request.cuda_libs)
        elif not request.pids and not request.command:
            found = candidate_libraries()
            for kind, paths in all_mapped_libraries().items():
                found[kind] = found.get(kind, []) + paths
            if not any(found.values()):
                raise TraceError(
                    "no CUDA library (libcudart.so or libcuda.so) found on this machine; pass --cuda-lib PATH"
                )
        elif request.command:
            found = candidate_libraries()
            if not any(found.values()):
                raise TraceError(
                    "no CUDA library (libcudart.so or libcuda.so) found for the command; "
                    "pass --cuda-lib PATH or set LD_LIBRARY_PATH"
                )
        else:
            found = {}
            for pid in request.pids:
                if not process_exists(pid):
                    raise TraceError(f"no process with pid {pid}")
                mapped = mapped_libraries(pid)
                if not any(mapped.values()):
                    raise TraceError(f"process {pid} has no CUDA library (libcudart.so or libcuda.so) mapped")
                for kind, paths in mapped.items():
                    found.setdefault(kind, []).extend(paths)
    except DiscoveryError as err:
        raise TraceError(str(err)) from err
    if not request.nccl and request.cuda_libs and found.get(NCCL):
        raise TraceError(f"--cuda-lib {found[NCCL][0]} is an NCCL library: add --nccl to trace it")
    if not request.nccl:
        found.pop(NCCL, None)
    return [(kind, path) for kind, paths in found.items() for path in paths]


def _wait_for_command(pid: int, deadline: float | None, tick: Callable[[], None]) -> int | None:
    while deadline is None or time.monotonic() < deadline:
        code = _core.wait_child(pid, int(POLL_SECONDS * 1000))
        if code is not None:
            return code
        tick()
    return None


def _wait_for_pids(pids: list[int], deadline: float | None, tick: Callable[[], None]) -> None:
    while deadline is None or time.monotonic() < deadline:
        if not any(process_exists(pid) for pid in pids):
            return
        time.sleep(POLL_SECONDS)
        tick()


def _wait_until(deadline: float | None, tick: Callable[[], None]) -> None:
    while deadline is None or time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        tick()


class _Attacher:
    """Attaches each library file once (a uprobe on a file covers every process
    that maps it), remembering what it attached."""

    def __init__(self, tracer: _core.Tracer, on_attach: Callable[[_core.Attachment], None]) -> None:
        self.tracer = tracer
        self.on_attach = on_attach
        self.attachments: list[_core.Attachment] = []
        self._seen: set[tuple[int, int]] = set()

    def attach(self, kind: str, path: Path, *, required: bool = True) -> None:
        try:
            st = path.stat()
        except OSError:
            if required:
                raise
            return
        if (st.st_dev, st.st_ino) in self._seen:
            return
        self._seen.add((st.st_dev, st.st_ino))
        try:
            attachment = self.tracer.attach(path, kind)
        except _core.IngeroError:
            if required:
                raise
            return  # a library seen later that exports nothing we trace
        self.attachments.append(attachment)
        self.on_attach(attachment)

    def rescan(self, kinds: set[str]) -> None:
        for kind, paths in all_mapped_libraries().items():
            for path in paths if kind in kinds else []:
                self.attach(kind, path, required=False)


def _cuda_version(attachments: list[_core.Attachment]) -> str:
    """The CUDA runtime's version from the attached libcudart's real file name
    (libcudart.so.12.4.127 -> 12.4.127)."""
    for a in attachments:
        if a["kind"] == "runtime":
            name = Path(a["library"]).resolve().name
            return name.partition(".so.")[2]
    return ""


def run_trace(
    request: TraceRequest,
    *,
    on_attach: Callable[[_core.Attachment], None] = lambda a: None,
    on_progress: Callable[[_core.TraceStats], None] = lambda s: None,
    on_warning: Callable[[str], None] = lambda w: None,
    on_live: Callable[[_core.LiveView], None] | None = None,
    on_stopping: Callable[[_core.TraceStats], None] = lambda s: None,
) -> TraceResult:
    """Traces `request` until its command exits, its pids are gone, the duration
    ends, or SIGINT/SIGTERM arrives; everything received is stored before returning."""
    if request.command and request.pids:
        raise TraceError("give either --pid or a command after --, not both")
    trace_all = not request.command and not request.pids
    reason = missing_privileges()
    if reason:
        raise TraceError(reason)
    check_db_path(request.db)
    if request.command and shutil.which(request.command[0]) is None:
        raise TraceError(f"command not found: {request.command[0]}")
    libraries = resolve_libraries(request)

    try:
        tracer = _core.Tracer(
            trace_all=trace_all, ringbuf_bytes=request.ringbuf_bytes, nccl=request.nccl, layers=request.layers
        )
        attacher = _Attacher(tracer, on_attach)
        for kind, path in libraries:
            attacher.attach(kind, path)
    except _core.IngeroError as err:
        raise TraceError(str(err)) from err
    for warning in [] if trace_all else tracer.warnings():
        on_warning(warning)
    for pid in request.pids:
        tracer.add_target(pid)
    tracer.set_capture_stacks(request.stacks)
    tracer.set_json(request.json)
    if request.sampling_rate is not None:
        tracer.set_sampling_rate(request.sampling_rate)
    sampling = AdaptiveSampling(time.monotonic()) if request.sampling_rate is None else None
    flags = (
        f"duration={request.duration or 0} all_processes={int(trace_all)} nccl={int(request.nccl)} "
        f"sampling={request.sampling_rate or 'adaptive'} record_all={int(request.record_all)} "
        f"stack_samples={request.stack_samples} max_db={request.max_db_bytes} "
        f"rollover={request.rollover_bytes}/{request.rollover_keep} "
        f"layers={','.join(request.layers) or 'none'}"
    )
    # Imported here: ingero.check imports this module, and importing it first
    # (the demo, the tests) would otherwise find it half initialised.
    from ingero.check.gpu import driver_version, nvidia_gpus  # noqa: PLC0415

    trace_start_ns = time.time_ns()
    try:
        tracer.start(
            request.db,
            request.node,
            pid_filter=",".join(map(str, request.pids)),
            flags=flags,
            python_ver=platform.python_version(),
            ingero_ver=_core.__version__,
            record_all=request.record_all,
            stack_samples=request.stack_samples,
            max_db_bytes=request.max_db_bytes,
            rollover_bytes=request.rollover_bytes,
            rollover_keep=request.rollover_keep,
            gpu_model="; ".join(nvidia_gpus()),
            gpu_driver=driver_version() or "",
            cuda_ver=_cuda_version(attacher.attachments),
        )
    except _core.IngeroError as err:
        raise TraceError(str(err)) from err

    result = TraceResult(stats=tracer.stats(), attachments=attacher.attachments)
    chains = LiveChains(request.db, trace_start_ns, request.node, on_warning)
    chains.start()
    deadline = None if request.duration is None else time.monotonic() + request.duration
    next_rescan = time.monotonic() + RESCAN_SECONDS
    next_live = time.monotonic()

    def tick() -> None:
        nonlocal next_rescan, next_live
        if on_live is not None and time.monotonic() >= next_live:
            on_live(tracer.live())
            next_live = time.monotonic() + LIVE_SECONDS
        if time.monotonic() >= next_rescan:
            if trace_all:
                attacher.rescan({RUNTIME, DRIVER} | ({NCCL} if request.nccl else set()))
            else:
                tracer.prune_targets()
            next_rescan = time.monotonic() + RESCAN_SECONDS
        stats = tracer.stats()
        new_rate = sampling.observe(stats["dropped"], time.monotonic()) if sampling else None
        if new_rate is not None:
            tracer.set_sampling_rate(new_rate)
            on_warning(
                f"recording 1 call in {new_rate}: the ring buffers overflow"
                if new_rate > 1
                else "recording every call again"
            )
        on_progress(stats)

    try:
        with _stop_on_sigterm():
            if request.command:
                result.command_pid = tracer.launch(request.command)
                result.exit_code = _wait_for_command(result.command_pid, deadline, tick)
            elif request.pids:
                _wait_for_pids(request.pids, deadline, tick)
            else:
                _wait_until(deadline, tick)
    except (KeyboardInterrupt, _Stop):
        result.interrupted = True
        if result.command_pid is not None:
            # The command got the same SIGINT from the terminal; give it a moment
            # to finish its last calls so they are stored too.
            result.exit_code = _core.wait_child(result.command_pid, 2000)
    except _core.IngeroError as err:
        raise TraceError(str(err)) from err
    finally:
        on_stopping(tracer.stats())
        try:
            result.stats = tracer.stop()
        except _core.IngeroError as err:
            raise TraceError(f"stopping the trace failed: {err}") from err
    result.chains = chains.finish()
    return result
