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
from ingero.capture.discover import (
    DiscoveryError,
    candidate_libraries,
    explicit_libraries,
    mapped_libraries,
    process_exists,
)
from ingero.capture.privileges import missing_privileges

POLL_SECONDS = 0.2


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


@dataclass
class TraceResult:
    stats: _core.TraceStats
    attachments: list[_core.Attachment]
    command_pid: int | None = None
    exit_code: int | None = None
    interrupted: bool = False


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


def run_trace(
    request: TraceRequest,
    on_attach: Callable[[_core.Attachment], None] = lambda a: None,
    on_progress: Callable[[_core.TraceStats], None] = lambda s: None,
) -> TraceResult:
    """Traces `request` until its command exits, its pids are gone, the duration
    ends, or SIGINT/SIGTERM arrives; everything received is stored before returning."""
    if request.command and request.pids:
        raise TraceError("give either --pid or a command after --, not both")
    if not request.command and not request.pids:
        raise TraceError("nothing to trace: give --pid PID or a command after --")
    reason = missing_privileges()
    if reason:
        raise TraceError(reason)
    check_db_path(request.db)
    if request.command and shutil.which(request.command[0]) is None:
        raise TraceError(f"command not found: {request.command[0]}")
    libraries = resolve_libraries(request)

    try:
        tracer = _core.Tracer()
        attachments = [tracer.attach(path, kind) for kind, path in libraries]
    except _core.IngeroError as err:
        raise TraceError(str(err)) from err
    for attachment in attachments:
        on_attach(attachment)
    for pid in request.pids:
        tracer.add_target(pid)
    flags = f"duration={request.duration or 0}"
    try:
        tracer.start(
            request.db,
            request.node,
            pid_filter=",".join(map(str, request.pids)),
            flags=flags,
            python_ver=platform.python_version(),
            ingero_ver=_core.__version__,
        )
    except _core.IngeroError as err:
        raise TraceError(str(err)) from err

    result = TraceResult(stats=tracer.stats(), attachments=attachments)
    deadline = None if request.duration is None else time.monotonic() + request.duration

    def tick() -> None:
        on_progress(tracer.stats())

    try:
        with _stop_on_sigterm():
            if request.command:
                result.command_pid = tracer.launch(request.command)
                result.exit_code = _wait_for_command(result.command_pid, deadline, tick)
            else:
                _wait_for_pids(request.pids, deadline, tick)
    except (KeyboardInterrupt, _Stop):
        result.interrupted = True
        if result.command_pid is not None:
            # The command got the same SIGINT from the terminal; give it a moment
            # to finish its last calls so they are stored too.
            result.exit_code = _core.wait_child(result.command_pid, 2000)
    except _core.IngeroError as err:
        raise TraceError(str(err)) from err
    finally:
        result.stats = tracer.stop()
    return result
