"""Type stubs for the native module built from crates/ingero-core."""

from os import PathLike
from typing import TypedDict, final

__all__ = [
    "IngeroError",
    "Tracer",
    "__version__",
    "ops",
    "record_tool_call",
    "rolled_siblings",
    "sources",
    "wait_child",
]

__version__: str

class IngeroError(Exception): ...

# Shapes of the dicts the module returns (typing only; not runtime names).
class Attachment(TypedDict):
    library: str
    kind: str
    symbols: list[str]
    missing: list[str]

class TraceStats(TypedDict):
    received: int
    stored: int
    aggregated: int
    dropped: int
    unpaired: int
    sampled_out: int
    malformed: int
    write_failed: int
    write_error: str | None
    critical_dropped: int

class SystemSnapshot(TypedDict):
    timestamp: int
    cpu_pct: float
    mem_pct: float
    mem_avail_mb: int
    swap_mb: int
    load_avg: float

class LiveView(TypedDict):
    system: SystemSnapshot | None
    # (layer, received, stored, dropped)
    layers: list[tuple[str, int, int, int]]
    # (source, op, count, p50_ns, p95_ns, p99_ns, max_ns, spikes)
    ops: list[tuple[int, int, int, int, int, int, int, int]]
    critical_dropped: int

@final
class Tracer:
    def __new__(
        cls,
        trace_all: bool = ...,
        ringbuf_bytes: int = ...,
        nccl: bool = ...,
        layers: list[str] = ...,
    ) -> Tracer: ...
    def attach(self, library: str | PathLike[str], kind: str = ...) -> Attachment: ...
    def add_target(self, pid: int) -> None: ...
    def start(
        self,
        db_path: str | PathLike[str],
        node: str,
        pid_filter: str = ...,
        flags: str = ...,
        python_ver: str = ...,
        ingero_ver: str = ...,
        record_all: bool = ...,
        stack_samples: int = ...,
        max_db_bytes: int = ...,
        rollover_bytes: int = ...,
        rollover_keep: int = ...,
        gpu_model: str = ...,
        gpu_driver: str = ...,
        cuda_ver: str = ...,
    ) -> None: ...
    def launch(self, argv: list[str]) -> int: ...
    def set_sampling_rate(self, rate: int) -> None: ...
    def set_capture_stacks(self, on: bool) -> None: ...
    def warnings(self) -> list[str]: ...
    def prune_targets(self) -> int: ...
    def set_json(self, on: bool) -> None: ...
    def live(self) -> LiveView: ...
    def stats(self) -> TraceStats: ...
    def stop(self) -> TraceStats: ...

def sources() -> list[tuple[int, str, str]]: ...
def ops() -> list[tuple[int, int, str, str, str, str]]: ...
def wait_child(pid: int, timeout_ms: int | None = ...) -> int | None: ...
def record_tool_call(
    db: str | PathLike[str],
    node: str,
    tool: str,
    arguments: str,
    status: str,
    error: str,
    rows: int,
    bytes: int,
    started_ns: int,
    duration_ns: int,
    transport: str,
    principal: str,
) -> str:
    """Record one MCP request as an event (source MCP): through the running trace
    writing `db` if any, else appended to `db`. Returns "trace" or the path."""

def rolled_siblings(db: str | PathLike[str]) -> list[str]:
    """Rolled-over files of the database at `db` (NAME.<unix ns>.db), oldest first."""
