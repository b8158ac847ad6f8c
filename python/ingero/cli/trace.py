"""`ingero trace`: record CUDA calls of a command or running processes into SQLite."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.status import Status

from ingero import _core
from ingero.capture.run import KERNEL_LAYERS, TraceError, TraceRequest, TraceResult, default_node, run_trace
from ingero.cli import live
from ingero.cli.output import fail, stderr, stdout
from ingero.durations import parse_duration
from ingero.sizes import parse_size
from ingero.store.paths import default_db_path


def _parse_pids(text: str) -> list[int]:
    pids = []
    for raw in text.split(","):
        part = raw.strip()
        if not part.isdigit() or int(part) <= 0:
            fail(f"--pid: not a process id: {part!r}")
        pids.append(int(part))
    return pids


def _report(result: TraceResult, db: Path, out: Console) -> None:
    s = result.stats
    lost = s["dropped"] + s["write_failed"]
    out.print(
        f"events: received {s['received']}, stored {s['stored']}, dropped {s['dropped']}"
        + (f", aggregated only {s['aggregated']}" if s["aggregated"] else "")
        + (f", sampled out {s['sampled_out']}" if s["sampled_out"] else "")
        + (f", write failures {s['write_failed']}" if s["write_failed"] else "")
    )
    if s["unpaired"]:
        out.print(f"note: {s['unpaired']} calls were already in progress when tracing began")
    if s["write_error"]:
        stderr.print(f"[bold red]warning:[/] writing failed: {s['write_error']}")
    if lost:
        stderr.print(f"[bold yellow]warning:[/] {lost} events were lost")
    if result.chains:
        out.print(f"causal chains: {result.chains} stored (see them with `ingero explain --db {db}`)")
    if s["critical_dropped"]:
        stderr.print(
            f"[bold red]CRITICAL:[/] {s['critical_dropped']} exec/exit/fork/OOM events were dropped "
            "(noted in the session's flags) -- this should never happen"
        )
    out.print(f"database: {db}")


def trace(  # noqa: PLR0917 - Typer maps each parameter to an option
    command: Annotated[
        list[str] | None, typer.Argument(help="Command to launch and trace (after --).", show_default=False)
    ] = None,
    pid: Annotated[
        str | None, typer.Option("--pid", "-p", help="Trace running process(es): PID or PID,PID,...")
    ] = None,
    duration: Annotated[
        str | None, typer.Option("--duration", "-d", help="Stop after this long (e.g. 10s, 2m).")
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option("--db", help="SQLite database to write ($INGERO_DB, else ~/.ingero/ingero.db)."),
    ] = None,
    cuda_lib: Annotated[
        list[Path] | None,
        typer.Option(
            "--cuda-lib", help="libcudart / libcuda / libnccl to attach to (repeatable); skips discovery."
        ),
    ] = None,
    node: Annotated[str | None, typer.Option(help="Node name for event ids (default: hostname).")] = None,
    nccl: Annotated[
        bool, typer.Option("--nccl", help="Also trace NCCL communicators and collectives (libnccl).")
    ] = False,
    sampling_rate: Annotated[
        int,
        typer.Option(help="Record 1 call in N of the runtime and driver APIs; 0 adapts to overload."),
    ] = 0,
    stack: Annotated[
        bool, typer.Option("--stack/--no-stack", help="Capture the caller's user stack of each call.")
    ] = True,
    ringbuf_size: Annotated[
        int,
        typer.Option(help="Bytes of each probe family's ring buffer (a power of two, at least 4096)."),
    ] = 8 << 20,
    record_all: Annotated[
        bool,
        typer.Option(
            "--record-all",
            help="Store every event. Otherwise, after a 10 s baseline, routine calls are only counted in "
            "the aggregates; anomalies, syncs, process events and slow I/O are always stored.",
        ),
    ] = False,
    stack_samples: Annotated[
        int, typer.Option(help="Events stored per distinct call stack (anomalies excepted); 0 = no cap.")
    ] = 100,
    max_db: Annotated[
        str | None,
        typer.Option(
            help="Prune the oldest rows to keep the database under this size (e.g. 500m, 10g; default 10g "
            "unless rolling over); 0 = no cap.",
            show_default=False,
        ),
    ] = None,
    db_rollover_size: Annotated[
        str | None,
        typer.Option(
            help="Roll the database over at this size: it is renamed NAME.<ns>.db and a new one begun."
        ),
    ] = None,
    db_rollover_keep: Annotated[
        int, typer.Option(help="Rolled-over files kept (the oldest are deleted).")
    ] = 6,
    json_lines: Annotated[
        bool, typer.Option("--json", help="Write every event as one JSON object per line on stdout.")
    ] = False,
    no_host: Annotated[
        bool, typer.Option("--no-host", help="Skip scheduler, page-allocation and process-lifecycle events.")
    ] = False,
    no_io: Annotated[bool, typer.Option("--no-io", help="Skip block I/O events.")] = False,
    no_tcp: Annotated[bool, typer.Option("--no-tcp", help="Skip TCP retransmit events.")] = False,
    no_net: Annotated[bool, typer.Option("--no-net", help="Skip socket send/recv events.")] = False,
) -> None:
    """Trace CUDA calls into SQLite: `ingero trace -- CMD`, `ingero trace --pid N`, or, with
    neither, every process that maps a CUDA library (until --duration or Ctrl+C)."""
    seconds = None
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as err:
            fail(f"--duration: {err}")
    if node is not None and (":" in node or not node):
        fail("--node: must be non-empty and contain no ':'")
    if sampling_rate < 0:
        fail("--sampling-rate: must be 0 (adaptive) or a positive N")
    if ringbuf_size < 4096 or ringbuf_size & (ringbuf_size - 1):
        fail(f"--ringbuf-size: {ringbuf_size} is not a power of two of at least 4096")
    if stack_samples < 0:
        fail("--stack-samples: must be 0 (no cap) or a positive N")
    if max_db is not None and db_rollover_size is not None:
        fail("--max-db and --db-rollover-size cannot be combined: choose pruning or rolling over")
    try:
        max_db_bytes = parse_size(max_db or ("0" if db_rollover_size else "10g"))
    except ValueError as err:
        fail(f"--max-db: {err}")
    if 0 < max_db_bytes < 1 << 20:
        fail("--max-db: must be at least 1m (or 0 for no cap)")
    rollover_bytes = 0
    if db_rollover_size is not None:
        try:
            rollover_bytes = parse_size(db_rollover_size)
        except ValueError as err:
            fail(f"--db-rollover-size: {err}")
        if rollover_bytes < 1 << 20:
            fail("--db-rollover-size: must be at least 1m")
    if db_rollover_keep < 1:
        fail("--db-rollover-keep: must be at least 1")
    database = db if db is not None else default_db_path(create_dir=True)
    request = TraceRequest(
        db=database,
        node=node or default_node(),
        pids=_parse_pids(pid) if pid else [],
        command=list(command or []),
        duration=seconds,
        cuda_libs=list(cuda_lib or []),
        ringbuf_bytes=ringbuf_size,
        nccl=nccl,
        sampling_rate=sampling_rate or None,
        stacks=stack,
        record_all=record_all,
        stack_samples=stack_samples,
        max_db_bytes=max_db_bytes,
        rollover_bytes=rollover_bytes,
        rollover_keep=db_rollover_keep,
        layers=[
            layer
            for layer, off in zip(KERNEL_LAYERS, (no_host, no_io, no_tcp, no_net), strict=True)
            if not off
        ],
        json=json_lines,
    )

    def attached(a: _core.Attachment) -> None:
        missing = f" (absent: {', '.join(a['missing'])})" if a["missing"] else ""
        stderr.print(f"attached {len(a['symbols'])} CUDA {a['kind']} probes to {a['library']}{missing}")

    target = f"pid {pid}" if pid else Path(request.command[0]).name if request.command else "all processes"
    # The live table takes a terminal's stdout; JSON lines own stdout otherwise.
    table = Live(console=stdout, auto_refresh=False) if stdout.is_terminal and not json_lines else None
    status: AbstractContextManager[object] = (
        table
        if table is not None
        else stderr.status(f"tracing {target}", spinner="dots")
        if stderr.is_terminal
        else nullcontext()
    )

    def show(view: _core.LiveView) -> None:
        if table is not None:
            table.update(live.render(view), refresh=True)

    def progress(s: _core.TraceStats) -> None:
        if isinstance(status, Status):
            status.update(f"tracing {target}: {s['stored']} events stored, {s['dropped']} dropped")

    def stopping(s: _core.TraceStats) -> None:
        # Removing probes takes a moment each, and a long trace's indexes are built now.
        if stderr.is_terminal or s["stored"] >= 1_000_000:
            stderr.print(f"stopping: removing the probes, then storing and indexing {s['stored']:,} events")

    try:
        with status:
            result = run_trace(
                request,
                on_attach=attached,
                on_progress=progress,
                on_warning=lambda w: stderr.print(f"[bold yellow]warning:[/] {escape(w)}"),
                on_live=show if table is not None else None,
                on_stopping=stopping,
            )
    except TraceError as err:
        fail(str(err))
    _report(result, database, stderr if json_lines else stdout)
    if result.exit_code is not None and request.command:
        raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    app.command(
        "trace",
        context_settings={"allow_interspersed_args": False},
    )(trace)


__all__ = ["register", "trace"]
