"""Latency of each MCP tool, through a real client over stdio, on the published databases
and on a 10M-event synthetic one.

    .venv/bin/python benches/mcp_latency.py [--events N] [--rounds R] [--json PATH]

Each database is served by `ingero mcp` (the installed CLI) and every tool is called once
cold, then R times; times are client-side round trips (JSON-RPC included). The server
starts analysing the trace when it starts, so "first" includes whatever of that analysis
is still running. Goals: p95 under 200 ms on the published databases, under 2 s on 10M.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.synthdb import write_synthetic_db  # noqa: E402

INGERO = Path(sys.executable).parent / "ingero"
SHARED = ROOT.parent / "shared" / "traces"


def calls(db: Path) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    pid = conn.execute(
        "SELECT pid FROM events INDEXED BY idx_events_pid GROUP BY pid ORDER BY count(*) DESC"
    ).fetchone()[0]
    conn.close()
    return {
        "get_trace_stats": {},
        "get_causal_chains": {},
        "get_stacks": {"limit": 10},
        "run_sql": {"query": "SELECT source, op, count(*) AS n FROM events GROUP BY source, op"},
        "graph_lifecycle": {"pid": pid},
        "graph_frequency": {"pid": pid},
        "get_schema": {},
        "get_check": {},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(db: Path, audit: Path, rounds: int) -> dict[str, Any]:
    params = StdioServerParameters(
        command=str(INGERO), args=["mcp", "--db", str(db)], env={"INGERO_DB": str(audit)}
    )
    started = time.perf_counter()
    tools: dict[str, Any] = {}
    async with Client(params, mode="legacy", read_timeout_seconds=600) as client:
        connected = time.perf_counter() - started
        for name, arguments in calls(db).items():
            times = []
            for _ in range(rounds + 1):
                t0 = time.perf_counter()
                result = await client.call_tool(name, arguments)
                times.append(time.perf_counter() - t0)
                assert not result.is_error, (name, result.content)
            warm = times[1:]
            tools[name] = {
                "first_ms": round(times[0] * 1000, 1),
                "p50_ms": round(statistics.median(warm) * 1000, 1),
                "p95_ms": round(percentile(warm, 0.95) * 1000, 1),
                "max_ms": round(max(warm) * 1000, 1),
            }
    return {"connect_ms": round(connected * 1000, 1), "tools": tools}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events in the synthetic database")
    parser.add_argument("--rounds", type=int, default=20, help="warm calls per tool")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} cpus",
        "rounds": args.rounds,
        "goal": "p95 under 200 ms on the published databases, under 2 s on 10M events",
        "databases": {},
    }
    with tempfile.TemporaryDirectory(prefix="mcp-bench-") as tmp:
        audit = Path(tmp) / "audit.db"
        databases = sorted(SHARED.glob("*.db"))
        synthetic = Path(tmp) / f"synthetic-{args.events}.db"
        t0 = time.perf_counter()
        write_synthetic_db(synthetic, args.events, scenario="sched-tail")
        print(f"wrote {synthetic.name} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        synthetic.chmod(0o444)  # the audit goes to the temporary default database
        for db in [*databases, synthetic]:
            measured = anyio.run(measure, db, audit, args.rounds)
            events = (
                sqlite3.connect(f"file:{db}?immutable=1", uri=True)
                .execute("SELECT count(*) FROM events")
                .fetchone()[0]
            )
            measured["events"] = events
            results["databases"][db.name] = measured
            worst = max(t["p95_ms"] for t in measured["tools"].values())
            print(f"{db.name}: {events} events, worst p95 {worst} ms", file=sys.stderr)
            for name, t in measured["tools"].items():
                print(
                    f"  {name:18} first {t['first_ms']:8.1f}  "
                    f"p50 {t['p50_ms']:7.1f}  p95 {t['p95_ms']:7.1f} ms",
                    file=sys.stderr,
                )
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
