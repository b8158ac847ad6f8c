"""Opening an ingero database for reading, without ever changing it.

Every reader (query, sql, explain, the MCP server) goes through `open_readonly`, so the
rules live in one place: databases written by the original Go Ingero (user_version 0 to
10) are read as they are, a published file stays byte-identical, and anything that is not
an ingero database gets one clear line.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

# The newest `PRAGMA user_version` this ingero understands (the original v0.17 writes 10).
NEWEST_USER_VERSION = 10

_SQLITE_MAGIC = b"SQLite format 3\x00"


class DatabaseError(Exception):
    """A database that cannot be read; the message is one line meant for the user."""


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DatabaseError(f"no database at {path}")
    if path.is_dir():
        raise DatabaseError(f"{path} is a directory, not an ingero database")
    try:
        with path.open("rb") as f:
            header = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise DatabaseError(f"cannot read {path}: {e.strerror}") from None
    if header != _SQLITE_MAGIC:
        raise DatabaseError(f"{path} is not an ingero database (not an SQLite file)")


def _uri(path: Path, immutable: bool) -> str:
    # Percent-escape what URI parsing would otherwise swallow in a file name.
    quoted = str(path.resolve()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?mode=ro" + ("&immutable=1" if immutable else "")


def _is_live(path: Path) -> bool:
    # A -wal with frames beside the file means a writer has (or had) it open: read
    # through the WAL so rows committed by a running `ingero trace` are seen. Otherwise
    # the file is read as immutable, which takes no locks and creates no -shm: the file
    # and its directory stay exactly as they were (published databases are often
    # read-only, and root is not stopped by file modes).
    wal = Path(f"{path}-wal")
    return wal.exists() and wal.stat().st_size > 0


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to the ingero database at `path`.

    Raises `DatabaseError` (one line) for a missing file, a file that is not SQLite or
    not an ingero database, and a database newer than this ingero understands.
    """
    db = Path(path).expanduser()
    _check_file(db)
    conn: sqlite3.Connection | None = None
    if _is_live(db):
        try:
            conn = sqlite3.connect(_uri(db, immutable=False), uri=True, check_same_thread=False)
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error:
            # No permission to open the WAL index (another user's live trace): the
            # committed main file is still readable as it stands.
            if conn is not None:
                conn.close()
            conn = None
    if conn is None:
        conn = sqlite3.connect(_uri(db, immutable=True), uri=True, check_same_thread=False)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as e:
        conn.close()
        raise DatabaseError(f"{db} is not a readable ingero database ({e})") from None
    if "events" not in tables:
        conn.close()
        raise DatabaseError(f"{db} is not an ingero database (it has no events table)")
    if version > NEWEST_USER_VERSION:
        conn.close()
        raise DatabaseError(
            f"{db} was written by a newer ingero (user_version {version}; "
            f"this one reads up to {NEWEST_USER_VERSION}): upgrade ingero to read it"
        )
    return conn


def table_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """The columns `table` has in this file (older databases lack later columns)."""
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
