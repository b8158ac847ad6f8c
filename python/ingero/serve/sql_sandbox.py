"""Read-only SQL for agents, enforced by SQLite itself.

The engine refuses anything but reads: an authorizer allows only SELECT, reading
columns and a whitelist of pure functions (so no ATTACH, PRAGMA, writes, temp objects,
transactions, load_extension or blob bombs), limits cap lengths and attached databases,
a progress handler ends a query at its deadline, the sqlite3 module runs one statement
only, and rows stop at a cap. The keyword checks below only turn common refusals into
friendlier words; they are not what keeps the database safe.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_SQL_CHARS = 10_000
DEFAULT_ROWS = 200
MAX_ROWS = 5_000
DEADLINE_S = 10.0
MAX_VALUE_BYTES = 1_000_000

# Pure functions that read: scalar, aggregate, window, date and JSON. Anything that
# makes big or random blobs, touches files, or reveals or changes engine state is out.
ALLOWED_FUNCTIONS = frozenset(
    """
    abs avg ceil ceiling char coalesce concat concat_ws count cume_dist date datetime
    dense_rank exp first_value floor glob group_concat hex ifnull iif instr
    julianday lag last_value lead length like likely ln log log10 log2 lower ltrim max
    min mod nth_value ntile nullif percent_rank pow power quote rank replace round
    row_number rtrim sign sqrt string_agg strftime substr substring sum time timediff
    total trim trunc typeof unhex unicode unixepoch unlikely upper
    json json_array json_array_length json_extract json_group_array json_group_object
    json_object json_quote json_type json_valid
    """.split()  # noqa: SIM905 - a word list reads better than 80 quoted names
)
# printf/format are out: a width such as '%.*c' with 2e9 makes SQLite format for seconds
# before the length limit applies. The functions below can still build a value far larger
# than their input; Python before 3.11 cannot cap value lengths (Connection.setlimit), so
# there they are refused too.
_AMPLIFIERS = frozenset({"replace", "concat", "concat_ws", "group_concat", "string_agg"})

_LIMITS = {
    "SQLITE_LIMIT_ATTACHED": 0,
    "SQLITE_LIMIT_SQL_LENGTH": MAX_SQL_CHARS,
    "SQLITE_LIMIT_LENGTH": MAX_VALUE_BYTES,
    "SQLITE_LIMIT_EXPR_DEPTH": 100,
    "SQLITE_LIMIT_COMPOUND_SELECT": 32,
    "SQLITE_LIMIT_FUNCTION_ARG": 32,
    "SQLITE_LIMIT_LIKE_PATTERN_LENGTH": 1_000,
    "SQLITE_LIMIT_TRIGGER_DEPTH": 1,
    "SQLITE_LIMIT_WORKER_THREADS": 0,
}

_WRITE_WORDS = re.compile(
    r"^\s*(insert|update|delete|replace|create|drop|alter|attach|detach|pragma|vacuum|reindex|"
    r"analyze|begin|commit|rollback|savepoint|release)\b",
    re.IGNORECASE,
)


class SqlRefused(Exception):
    """A query the sandbox will not run; the message says why in one line."""


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    duration_ms: float


def _authorizer(
    functions: frozenset[str],
) -> Callable[[int, str | None, str | None, str | None, str | None], int]:
    def authorize(action: int, _arg1: str | None, arg2: str | None, _db: str | None, _src: str | None) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and arg2 is not None and arg2.lower() in functions:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    return authorize


def _friendly_refusal(sql: str) -> str | None:
    stripped = re.sub(r"^(\s|--[^\n]*\n|/\*.*?\*/)*", "", sql, flags=re.DOTALL)
    match = _WRITE_WORDS.match(stripped)
    if match:
        return f"only SELECT queries are allowed ({match.group(1).upper()} is refused)"
    return None


def _explain(error: sqlite3.Error, sql: str) -> str:
    text = str(error)
    if "interrupted" in text:
        return (
            f"query stopped at its {DEADLINE_S:.0f} s deadline: narrow it (a WHERE on timestamp, pid, "
            "source/op), aggregate with GROUP BY, or add a LIMIT"
        )
    if "one statement at a time" in text:
        return "only one SQL statement per call is allowed"
    if "not authorized to use function" in text:
        return f"{text}: only pure read functions are allowed (see get_schema)"
    if "not authorized" in text or "authorization denied" in text:
        return _friendly_refusal(sql) or (
            "refused: only reads of the trace tables are allowed (no PRAGMA, ATTACH, temp objects, "
            "recursive CTEs or table-valued functions)"
        )
    if "too big" in text:
        return f"a value exceeded the {MAX_VALUE_BYTES} byte cap: select fewer or shorter values"
    return f"SQL error: {text}"


class Sandbox:
    """One read-only connection, used by one query at a time."""

    def __init__(self, open_conn: Callable[[], sqlite3.Connection]) -> None:
        self._open = open_conn
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = self._open()
            conn.execute("PRAGMA query_only = 1")
            setlimit = getattr(conn, "setlimit", None)
            functions = ALLOWED_FUNCTIONS
            if setlimit is None:
                functions = ALLOWED_FUNCTIONS - _AMPLIFIERS
            else:
                for name, value in _LIMITS.items():
                    setlimit(getattr(sqlite3, name), value)
            conn.set_authorizer(_authorizer(functions))
            self._conn = conn
        return self._conn

    def run(self, sql: str, limit: int = DEFAULT_ROWS) -> SqlResult:
        """Rows of `sql` (at most `limit`), or `SqlRefused` with the reason."""
        if not sql.strip():
            raise SqlRefused("empty query")
        if len(sql) > MAX_SQL_CHARS:
            raise SqlRefused(f"query is {len(sql)} characters; at most {MAX_SQL_CHARS} are allowed")
        if "\x00" in sql:
            raise SqlRefused("query contains a NUL character")
        limit = max(1, min(limit, MAX_ROWS))
        with self._lock:
            conn = self._connection()
            started = time.monotonic()
            deadline = started + DEADLINE_S
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
            try:
                cursor = conn.execute(sql)
                rows = cursor.fetchmany(limit + 1)
                columns = [d[0] for d in cursor.description or ()]
                cursor.close()
            except sqlite3.Warning as e:  # multiple statements
                raise SqlRefused(_explain(sqlite3.Error(str(e)), sql)) from None
            except (sqlite3.Error, OverflowError, MemoryError) as e:
                error = e if isinstance(e, sqlite3.Error) else sqlite3.Error(str(e))
                raise SqlRefused(_explain(error, sql)) from None
            finally:
                conn.set_progress_handler(None, 0)
                if conn.in_transaction:
                    conn.rollback()
        return SqlResult(
            columns=columns,
            rows=[list(r) for r in rows[:limit]],
            truncated=len(rows) > limit,
            duration_ms=(time.monotonic() - started) * 1000,
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
