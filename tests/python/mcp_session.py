"""A real MCP client session with the installed `ingero mcp` over stdio, for the MCP tests."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent

ROOT = Path(__file__).resolve().parents[2]
INGERO = Path(sys.executable).parent / "ingero"
SHARED_TRACES = ROOT.parent / "shared" / "traces"
# The protocol revisions a client may speak: the handshake era and the current one.
MODES = ("legacy", "2026-07-28")
TOOLS = {
    "get_check",
    "get_trace_stats",
    "get_causal_chains",
    "run_sql",
    "get_stacks",
    "graph_lifecycle",
    "graph_frequency",
    "get_schema",
}
OPEN, CLOSE = "[traced-data]", "[/traced-data]"


def shared_databases() -> list[Path]:
    return sorted(SHARED_TRACES.glob("*.db"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@asynccontextmanager
async def session(db: Path, audit_db: Path, mode: str = "legacy", *args: str) -> AsyncIterator[Client]:
    """A client connected to `ingero mcp --db db` whose default database (the audit of
    read-only databases) is `audit_db`."""
    params = StdioServerParameters(
        command=str(INGERO), args=["mcp", "--db", str(db), *args], env={"INGERO_DB": str(audit_db)}
    )
    async with Client(params, mode=mode, read_timeout_seconds=60) as client:
        yield client


def run(db: Path, audit_db: Path, body: Callable[[Client], Awaitable[None]], mode: str = "legacy") -> None:
    async def main() -> None:
        async with session(db, audit_db, mode) as client:
            await body(client)

    anyio.run(main)


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def outside_delimiters(text: str) -> str:
    """`text` with every delimited span of traced data removed."""
    return re.sub(re.escape(OPEN) + r".*?" + re.escape(CLOSE), "", text, flags=re.DOTALL)


def everything_shown(result: CallToolResult) -> str:
    """What the model sees of a result: its text and its structured content."""
    return text_of(result) + "\n" + json.dumps(result.structured_content or {}, ensure_ascii=False)


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content
