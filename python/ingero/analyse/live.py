"""Chains found while a trace runs, stored in `causal_chains` as the original stores them."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable

from ingero.analyse.chains import analyse
from ingero.analyse.load import Window
from ingero.store.database import DatabaseError, open_readonly

BUSY_TIMEOUT_MS = 5000
_UPSERT = """
INSERT INTO causal_chains (id, detected_at, severity, summary, root_cause, explanation, recommendations,
                           cuda_op, cuda_p99_us, cuda_p50_us, tail_ratio, timeline, node)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET
    detected_at = excluded.detected_at, severity = excluded.severity, summary = excluded.summary,
    root_cause = excluded.root_cause, explanation = excluded.explanation,
    recommendations = excluded.recommendations, cuda_op = excluded.cuda_op,
    cuda_p99_us = excluded.cuda_p99_us, cuda_p50_us = excluded.cuda_p50_us,
    tail_ratio = excluded.tail_ratio, timeline = excluded.timeline, node = excluded.node
"""


def store_live_chains(db_path: str | os.PathLike[str], trace_start_ns: int, node: str) -> int:
    """Analyses the trace so far (from `trace_start_ns`) and upserts its chains; returns how many.

    Ids are ``{node}:{descriptor}``, so a chain found again replaces its earlier row. The write
    goes through its own short connection that waits for the trace's writer (WAL: readers and
    this one writer do not block the event writer for long).
    """
    reader = open_readonly(db_path)
    try:
        found = analyse(reader, Window(start_ns=trace_start_ns), include_stored=False, node=node).chains
    finally:
        reader.close()
    if not found:
        return 0
    writer = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        writer.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        with writer:
            writer.executemany(_UPSERT, [chain.row() for chain in found])
    finally:
        writer.close()
    return len(found)


class LiveChains:
    """Stores the trace's chains every `period_s` on a thread of its own, and once more at the end.

    Analysis failures become warnings: a trace never stops because its analysis did.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        trace_start_ns: int,
        node: str,
        on_warning: Callable[[str], None],
        period_s: float = 30.0,
    ) -> None:
        self._args = (db_path, trace_start_ns, node)
        self._on_warning = on_warning
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ingero-live-chains", daemon=True)
        self.stored = 0

    def start(self) -> None:
        self._thread.start()

    def _run_once(self, final: bool) -> None:
        try:
            self.stored = store_live_chains(*self._args)
        except DatabaseError as err:
            # Mid-trace the file may be a moment old (just rolled over): the next run sees it whole.
            if final:
                self._on_warning(f"causal-chain analysis failed: {err}")
        except Exception as err:  # any analysis failure is reported, never fatal
            self._on_warning(f"causal-chain analysis failed: {err}")

    def _loop(self) -> None:
        while not self._stop.wait(self._period_s):
            self._run_once(final=False)

    def finish(self) -> int:
        """Stops the periodic runs and analyses the whole trace once more; returns chains stored."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._run_once(final=True)
        return self.stored
