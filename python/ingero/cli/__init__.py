"""The `ingero` command line."""

from __future__ import annotations

import typer

from ingero.cli import check, demo, explain, mcp, query, trace

app = typer.Typer(
    name="ingero",
    help="MCP-native GPU causal observability: trace CUDA and the host with eBPF, explain, serve to agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
trace.register(app)
mcp.register(app)
check.register(app)
demo.register(app)
query.register(app)
explain.register(app)


@app.callback()
def _root() -> None:
    """Keeps `ingero` a group of subcommands even while it has only one."""


def main() -> None:
    app()
