"""The time range a reader looks at, from `--since`, `--from` and `--to`.

`--since` counts back from the newest event in the database, not from now: on a live
trace the two are the same, and on a saved database "the last 5 minutes" then means the
last 5 minutes that were recorded (the original counted from now, so its defaults showed
nothing on any database older than that).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, time, timezone

from ingero.durations import parse_duration


def parse_time(text: str) -> int:
    """Unix ns of `text`: ISO 8601 (`2026-11-24T15:04:05Z`, `2026-11-24 15:04`), or `15:04[:05]`
    for today. Without an offset, local time. Raises ValueError."""
    raw = text.strip()
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        try:
            clock = time.fromisoformat(raw)
        except ValueError:
            raise ValueError(
                f"not a time: {text!r} (examples: 2026-11-24 15:04, 2026-11-24T15:04:05Z, 15:04)"
            ) from None
        moment = datetime.combine(datetime.now().date(), clock)
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the local zone
    return int(moment.astimezone(timezone.utc).timestamp() * 1_000_000_000)


def newest_event_ns(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT MAX(timestamp) FROM events").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def resolve(
    conn: sqlite3.Connection, since: str | None, start: str | None, end: str | None
) -> tuple[int | None, int | None]:
    """[start_ns, end_ns) for the options given; None is open. Raises ValueError naming the option."""
    if since is not None and (start is not None or end is not None):
        raise ValueError("--since cannot be combined with --from/--to")
    if since is not None:
        try:
            seconds = parse_duration(since)
        except ValueError as err:
            raise ValueError(f"--since: {err}") from None
        newest = newest_event_ns(conn)
        if newest is None:
            return None, None
        return newest - int(seconds * 1e9), None
    lo = hi = None
    try:
        if start is not None:
            lo = parse_time(start)
    except ValueError as err:
        raise ValueError(f"--from: {err}") from None
    try:
        if end is not None:
            hi = parse_time(end)
    except ValueError as err:
        raise ValueError(f"--to: {err}") from None
    if lo is not None and hi is not None and hi <= lo:
        raise ValueError("--to must be after --from")
    return lo, hi
