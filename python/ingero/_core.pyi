"""Type stubs for the native module built from crates/ingero-core."""

from os import PathLike
from typing import TypedDict

__version__: str

class IngeroError(Exception): ...

class Attachment(TypedDict):
    library: str
    symbols: list[str]
    missing: list[str]

class TraceStats(TypedDict):
    received: int
    stored: int
    dropped: int
    unpaired: int
    malformed: int
    write_failed: int
    write_error: str | None

class Tracer:
    def __init__(self, trace_all: bool = False, ringbuf_bytes: int = ...) -> None: ...
    def attach(self, library: str | PathLike[str]) -> Attachment: ...
    def add_target(self, pid: int) -> None: ...
    def start(
        self,
        db_path: str | PathLike[str],
        node: str,
        pid_filter: str = "",
        flags: str = "",
        python_ver: str = "",
        ingero_ver: str = "",
    ) -> None: ...
    def launch(self, argv: list[str]) -> int: ...
    def stats(self) -> TraceStats: ...
    def stop(self) -> TraceStats: ...

def sources() -> list[tuple[int, str, str]]: ...
def ops() -> list[tuple[int, int, str, str, str, str]]: ...
def wait_child(pid: int, timeout_ms: int | None = None) -> int | None: ...
