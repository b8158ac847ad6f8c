"""`ingero demo`: run the scenarios, traced for real, and say whether the analysis
found each one's expected root cause."""

from __future__ import annotations

import importlib.util
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ingero.check.gpu import nvidia_gpus
from ingero.cli.output import fail, stderr, stdout
from ingero.demo.bundled import NotBundled, simulated_library
from ingero.demo.findings import analysis_available
from ingero.demo.runner import DemoError, DemoSession, ScenarioRun, explain
from ingero.demo.scenarios import SCENARIOS, Scenario, find, names
from ingero.demo.summary import host_event_count, op_summaries
from ingero.store.paths import default_db_path

INDENT = "      "


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.2f} ms" if ns >= 1_000_000 else f"{ns / 1e3:.0f} us"


def _print_measured(run: ScenarioRun) -> None:
    ops = op_summaries(run.db, run.pids)
    total = sum(o.total_ns for o in ops) or 1
    stdout.print(
        f"{INDENT}traced {run.stored} events from {len(run.pids)} process(es) in {run.seconds:.1f} s"
        + (f", {run.dropped} dropped" if run.dropped else "")
    )
    for o in ops[:3]:
        stdout.print(
            f"{INDENT}  {o.op:<18} {o.calls:>5} calls {100 * o.total_ns / total:>4.0f}% of time  "
            f"p50 {_ms(o.p50_ns)}  p99 {_ms(o.p99_ns)}  max {_ms(o.max_ns)}"
        )


def _print_verdict(run: ScenarioRun, analysed: bool) -> bool | None:
    """Prints whether the chains found the expected cause; None when not checked."""
    s = run.scenario
    stdout.print(f"{INDENT}expected: {s.expected}")
    if s.needs_host_events and host_event_count(run.db, run.pids) == 0:
        stdout.print(
            f"{INDENT}[yellow]not checked[/]: the evidence is host events (sched_switch, page "
            "allocations) and this build captured none"
        )
        return None
    if not analysed:
        stdout.print(f"{INDENT}[yellow]not checked[/]: the analysis (ingero.analyse) is not in this build")
        return None
    explain(run)
    assert run.verdict is not None
    mark = "[green]found[/]" if run.verdict.found else "[red]not found[/]"
    # The detail names processes of this machine: data, not markup.
    stdout.print(f"{INDENT}{mark}: {escape(run.verdict.detail)}")
    return run.verdict.found


def _fresh(db: Path) -> None:
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.unlink(missing_ok=True)


def demo(
    scenario: Annotated[
        str | None,
        typer.Argument(help=f"One scenario ({', '.join(names())}); default: all.", show_default=False),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Database to append to (default: ~/.ingero/demo.db, started afresh)."),
    ] = None,
    gpu: Annotated[
        bool, typer.Option("--gpu", help="Run the scenarios on PyTorch and the real GPU instead.")
    ] = False,
    control: Annotated[
        bool, typer.Option("--control", help="Run without the stressors: the causes must not appear.")
    ] = False,
) -> None:
    """Reproduce six GPU problems on the bundled simulated CUDA library, trace them, find the causes."""
    chosen: list[Scenario] = list(SCENARIOS)
    if scenario is not None:
        one = find(scenario)
        if one is None:
            fail(f"no scenario {scenario!r}; choose from: {', '.join(names())}")
        chosen = [one]
    if gpu:
        if not nvidia_gpus():
            fail("--gpu: no NVIDIA GPU found (run without --gpu to use the simulated CUDA library)")
        if importlib.util.find_spec("torch") is None:
            fail("--gpu: PyTorch is not installed in this Python (pip install torch)")
    else:
        try:
            simulated_library()
        except NotBundled as err:
            fail(str(err))
    if db is None:
        database = default_db_path(create_dir=True).with_name("demo.db")
        _fresh(database)
    else:
        database = db
    analysed = analysis_available()
    where = "PyTorch on the GPU" if gpu else "the bundled simulated CUDA library"
    stdout.print(f"ingero demo: {len(chosen)} scenario(s) on {where}, traced into {database}")
    outcomes: list[bool | None] = []
    try:
        with DemoSession(database, gpu=gpu, on_warning=_warn) as session:
            for i, s in enumerate(chosen, 1):
                stdout.print(f"\n[bold]\\[{i}/{len(chosen)}] {s.name}[/]: {s.title}")
                stdout.print(f"{INDENT}stressor: {'none (control run)' if control else s.stressor}")
                status = (
                    stderr.status(f"running {s.name}", spinner="dots")
                    if stderr.is_terminal
                    else nullcontext()
                )
                with status:
                    run = session.run(s, stressed=not control)
                _print_measured(run)
                outcomes.append(_print_verdict(run, analysed))
            stdout.print("\nstopping the trace (removing the probes)")
    except DemoError as err:
        fail(str(err))
    checked = [o for o in outcomes if o is not None]
    stdout.print(
        f"expected cause found in {sum(checked)} of {len(checked)} checked scenario(s)"
        + (f", {len(outcomes) - len(checked)} not checked" if len(checked) < len(outcomes) else "")
    )
    stdout.print(f"database: {database}")
    stdout.print(f"investigate it with an AI agent: claude mcp add ingero -- ingero mcp --db {database}")


def _warn(message: str) -> None:
    stderr.print(f"[bold yellow]warning:[/] {escape(message)}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


__all__ = ["demo", "register"]
