"""`ingero check`: is this machine ready to trace? Every line ok, fail or info, with
what to do about each failure; exits non-zero when tracing cannot work."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from ingero.check import FAIL, INFO, OK, Check, all_checks, tracing_works
from ingero.cli.output import stdout

MARKS = {OK: r"[green]\[ok][/]", FAIL: r"[bold red]\[fail][/]", INFO: r"[cyan]\[info][/]"}


def _line(c: Check) -> None:
    stdout.print(f"{MARKS[c.status]} {c.name}: {escape(c.value)}")
    if c.recommendation and c.status == FAIL:
        stdout.print(f"       recommendation: {escape(c.recommendation)}")


def check(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object: the checks and the verdict.")
    ] = False,
) -> None:
    """Check that tracing works here: probes seen firing for real, kernel, GPU, CUDA libraries."""
    results: list[Check] = []
    for c in all_checks():
        results.append(c)
        if not as_json:
            _line(c)
    ready = tracing_works(results)
    if as_json:
        print(json.dumps({"ready": ready, "checks": [c.to_dict() for c in results]}, indent=2))
    elif ready:
        stdout.print("\nready to trace")
    else:
        failed = sum(c.status == FAIL for c in results)
        stdout.print(f"\n[bold red]{failed} check(s) failed[/]: tracing will not work until they pass")
    if not ready:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("check")(check)


__all__ = ["check", "register"]
