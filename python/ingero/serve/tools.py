"""The tool implementations: arguments in, a structured result and its compact text out."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingero import codes
from ingero.serve import budget, chains, check, graphs, schema_doc, stacks, stats
from ingero.serve.models import Result, SchemaResult, SqlResultModel
from ingero.serve.sanitize import OPEN, PREAMBLE, clean, wrap_value
from ingero.serve.scope import Scope, ToolInputError, analysis, scope
from ingero.serve.sql_sandbox import Sandbox, SqlRefused
from ingero.store.database import open_readonly

MAX_TEXT_BYTES = 24_000
ANALYSES_KEPT = 8


@dataclass
class Answer:
    """One tool's answer: the structured result, its text form, and the rows it counts."""

    result: Result
    text: str
    rows: int


def _open(db: Path) -> sqlite3.Connection:
    conn = open_readonly(db)
    # Traced strings are not always valid UTF-8: show what can be read instead of failing.
    conn.text_factory = lambda b: b.decode("utf-8", "replace")
    return conn


def _file_state(db: Path) -> tuple[int, int, bool]:
    st = db.stat()
    return st.st_mtime_ns, st.st_size, Path(f"{db}-wal").exists()


def _cap_text(text: str) -> str:
    data = text.encode()
    if len(data) <= MAX_TEXT_BYTES:
        return text
    # Cut at a character boundary; never inside a delimiter pair's closing tag.
    cut = data[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
    cut = cut[: cut.rfind("\n")] if "\n" in cut else cut
    if cut.count(OPEN) > cut.count("[/traced-data]"):
        cut = cut[: cut.rfind(OPEN)]
    return cut + "\n... (text cut to the response budget; the structured result has the rest)"


def _trim(result: Result, field: str, narrow: str) -> None:
    """Cuts the list `field` of `result` so the whole result fits the byte budget."""
    items = getattr(result, field)
    others = result.model_dump(mode="json")
    others[field] = []
    kept, cut = budget.fit(items, budget.MAX_RESULT_BYTES - budget.size_of(others) - 200)
    if cut:
        setattr(result, field, kept)
        result.truncated = True
        note = budget.cut_note(len(kept), len(items), narrow)
        result.note = f"{result.note} {note}".strip()


class Service:
    """The served database and what answers about it."""

    def __init__(self, db: Path, audit_where: Callable[[], str]) -> None:
        self.db = db
        self._conn = _open(db)
        self._state = _file_state(db)
        self._lock = threading.Lock()
        self._analyses: dict[Scope, Any | None] = {}
        self.sandbox = Sandbox(lambda: _open(db))
        self._audit_where = audit_where

    def _fresh(self) -> sqlite3.Connection:
        """The tools' connection, reopened when the file changed since it was opened: an
        immutable connection must not read a file that audit events (or a trace) changed."""
        state = _file_state(self.db)
        if state != self._state:
            self._conn.close()
            self._conn = _open(self.db)
            self.sandbox.close()
            self._state = state
        return self._conn

    def _analysis(self, conn: sqlite3.Connection, sc: Scope) -> Any | None:
        """The engine's Analysis of `sc`, computed once per scope: stats and chains come from
        the same one, and an agent asks for both. A scope ends at the newest workload event,
        so new events make a new scope while audit events appended by our calls do not."""
        key = sc
        if key not in self._analyses:
            if len(self._analyses) >= ANALYSES_KEPT:
                self._analyses.pop(next(iter(self._analyses)))
            self._analyses[key] = analysis(conn, sc)
        return self._analyses[key]

    def warm_up(self) -> None:
        """Analyses the whole trace ahead of the first question (seconds on 10M events)."""

        def run() -> None:
            with self._lock:
                conn = self._fresh()
                self._analysis(conn, scope(conn, None))

        threading.Thread(target=run, name="ingero-mcp-warm-up", daemon=True).start()

    def _finish(self, result: Result, text: str, rows: int) -> Answer:
        result.audit = self._audit_where()
        body = f"{PREAMBLE}\n\n{text}"
        if result.note:
            body += f"\n\nNote: {result.note}"
        return Answer(result, _cap_text(body), rows)

    def get_check(self) -> Answer:
        r = check.facts()
        return self._finish(r, check.check_text(r), len(r.facts))

    def get_trace_stats(self, since: str | None) -> Answer:
        with self._lock:
            conn = self._fresh()
            sc = scope(conn, since)
            r = stats.trace_stats(conn, sc, self._analysis(conn, sc))
        _trim(r, "ops", "Pass since to look at a shorter window.")
        return self._finish(r, stats.stats_text(r), len(r.ops))

    def get_causal_chains(self, top_n: int, pids: list[int] | None, since: str | None) -> Answer:
        with self._lock:
            conn = self._fresh()
            sc = scope(conn, since, pids)
            r = chains.causal_chains(conn, sc, top_n, self._analysis(conn, sc))
        _trim(r, "chains", "Lower top_n or filter by pids or since.")
        return self._finish(r, chains.chains_text(r), len(r.chains))

    def get_stacks(
        self, source: int | None, op: str | None, pid: int | None, since: str | None, limit: int
    ) -> Answer:
        op_code = None
        if op:
            try:
                found = codes.op_named(op)
            except KeyError:
                raise ToolInputError(f"op: no op named {op!r} (get_schema lists them)") from None
            op_code = (found.source, found.id)
        with self._lock:
            conn = self._fresh()
            r = stacks.stacks(conn, scope(conn, since, [pid] if pid else None), source, op_code, limit)
        _trim(r, "stacks", "Lower limit, or filter by op, pid or since.")
        return self._finish(r, stacks.stacks_text(r), len(r.stacks))

    def graph_lifecycle(self, pid: int, since: str | None) -> Answer:
        with self._lock:
            conn = self._fresh()
            r = graphs.lifecycle(conn, scope(conn, since, [pid]))
        _trim(r, "events", "Pass since to see a shorter window.")
        return self._finish(r, graphs.lifecycle_text(r), len(r.events))

    def graph_frequency(self, pid: int, window_seconds: float, since: str | None) -> Answer:
        with self._lock:
            conn = self._fresh()
            r = graphs.frequency(conn, scope(conn, since, [pid]), window_seconds)
        _trim(r, "handles", "Pass since to see a shorter window.")
        return self._finish(r, graphs.frequency_text(r), len(r.handles))

    def get_schema(self) -> Answer:
        with self._lock:
            doc = schema_doc.schema(self._fresh())
        r = SchemaResult.model_validate(doc)
        return self._finish(r, schema_doc.schema_text(doc), len(r.tables))

    def run_sql(self, query: str, limit: int) -> Answer:
        if _file_state(self.db) != self._state:
            # Only then wait for the tools' lock (which a start-up analysis may hold for seconds).
            with self._lock:
                self._fresh()
        out = self.sandbox.run(query, limit)
        rows = [[wrap_value(v) for v in row] for row in out.rows]
        r = SqlResultModel(
            columns=[clean(c) for c in out.columns],
            rows=rows,
            row_count=len(rows),
            duration_ms=round(out.duration_ms, 3),
            truncated=out.truncated,
            note=f"More than {len(rows)} rows: add a WHERE, GROUP BY or LIMIT." if out.truncated else "",
        )
        _trim(r, "rows", "Select fewer columns or rows, or aggregate with GROUP BY.")
        r.row_count = len(r.rows)
        return self._finish(r, sql_text(r), len(r.rows))

    def close(self) -> None:
        self.sandbox.close()
        self._conn.close()


def sql_text(r: SqlResultModel) -> str:
    lines = [" | ".join(r.columns)]
    lines.extend(" | ".join("NULL" if v is None else str(v) for v in row) for row in r.rows)
    lines.append(f"({r.row_count} rows, {r.duration_ms:.1f} ms{', truncated' if r.truncated else ''})")
    return "\n".join(lines)


REFUSALS: tuple[type[Exception], ...] = (ToolInputError, SqlRefused)
