"""Where the CLI writes: results to stdout, progress and errors to stderr."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

stdout = Console(highlight=False, soft_wrap=True, emoji=False)
stderr = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def table_console() -> Console:
    """stdout for tables: a pipe or file gets full-width rows instead of 80 wrapped columns."""
    return stdout if stdout.is_terminal else Console(highlight=False, width=400, emoji=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit: how every bad input ends."""
    # The message may quote paths and names the user gave: data, not markup.
    stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)
