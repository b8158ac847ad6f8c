"""Every MCP request recorded as an event of the trace (source MCP), in one place.

The served database receives the audit when this process may write it; a published,
read-only database is never modified, so its audit goes to the default database and
each result says where.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingero import _core
from ingero.capture.run import default_node
from ingero.store.database import DatabaseError, open_readonly, table_columns
from ingero.store.paths import default_db_path

log = logging.getLogger(__name__)

SQL_CAP = 2_000
DIGEST_CAP = 4_096


def digest(arguments: dict[str, Any] | None) -> str:
    """The arguments as compact JSON, each string capped, the whole capped."""
    capped = {
        k: (v[:SQL_CAP] + "..." if isinstance(v, str) and len(v) > SQL_CAP else v)
        for k, v in (arguments or {}).items()
    }
    text = json.dumps(capped, separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= DIGEST_CAP else text[: DIGEST_CAP - 3] + "..."


def _writable(db: Path) -> bool:
    """Whether `db` may receive audit events: it and its directory must be writable by
    their mode bits, not only by our privileges (root may write anything, but a file
    published read-only must stay byte-identical)."""
    directory = db.parent if str(db.parent) else Path(".")
    try:
        file_mode, dir_mode = db.stat().st_mode, directory.stat().st_mode
    except OSError:
        return False
    writable_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return (
        bool(file_mode & writable_bits)
        and bool(dir_mode & writable_bits)
        and os.access(db, os.W_OK)
        and os.access(directory, os.W_OK)
    )


def _has_node_column(db: Path) -> bool:
    # Databases of early versions of the original have no events.node: audit rows, which are
    # numbered per node, cannot go there without changing the file's schema.
    try:
        conn = open_readonly(db)
    except DatabaseError:
        return False
    try:
        return "node" in table_columns(conn, "events")
    finally:
        conn.close()


def audit_target(served: Path) -> Path:
    """Where audit events of calls on `served` go: itself when writable and of a schema that
    holds them, else the default database."""
    return served if _writable(served) and _has_node_column(served) else default_db_path(create_dir=True)


@dataclass
class Call:
    """What one request did, filled in while it runs."""

    tool: str
    arguments: str
    started_ns: int
    status: str = "ok"
    error: str = ""
    rows: int = 0
    bytes: int = 0


class Auditor:
    def __init__(self, served: Path, transport: str) -> None:
        self.target = audit_target(served)
        self.transport = transport
        self.node = default_node()
        self._record = getattr(_core, "record_tool_call", None)
        self._failure: str | None = None

    @property
    def where(self) -> str:
        if self._record is None:
            return "not recorded: this ingero build has no audit recorder (ingero._core.record_tool_call)"
        if self._failure is not None:
            return f"being recorded in {self.target}, but the last attempt failed: {self._failure}"
        return f"recorded as an MCP event (source MCP) in {self.target}"

    def start(self, tool: str, arguments: dict[str, Any] | None) -> Call:
        return Call(tool=tool, arguments=digest(arguments), started_ns=time.time_ns())

    def finish(self, call: Call, principal: str) -> str | None:
        """Records `call`; returns where it went, or None when it could not be recorded."""
        if self._record is None:
            return None
        duration = max(0, time.time_ns() - call.started_ns)
        try:
            where = str(
                self._record(
                    str(self.target),
                    self.node,
                    call.tool,
                    call.arguments,
                    call.status,
                    call.error[:1000],
                    call.rows,
                    call.bytes,
                    call.started_ns,
                    duration,
                    self.transport,
                    principal,
                )
            )
        except Exception as e:  # an audit failure must not take the server down
            log.warning("could not record the %s call in %s: %s", call.tool, self.target, e)
            self._failure = str(e)[:300]
            return None
        self._failure = None
        return where
