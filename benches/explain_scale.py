"""Wall time and peak memory of `ingero explain` on synthetic traces of 1M and 10M events.

    .venv/bin/python benches/explain_scale.py [--events 1000000 10000000] [--rounds 3]

Each database (tests/synthdb.py, scenario "sched-tail": a training loop with a 25x
cudaLaunchKernel tail and a CPU hog) is built once under benches/build/ and reused. The
command runs as a user would (`python -m ingero explain --db X --json`), pinned to two
cores with taskset; peak memory is the child's max RSS from wait4. The page cache is warm
(the database was just written or read), as it is right after a trace. Goal: 10M events
under 10 s and under 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.synthdb import write_synthetic_db  # noqa: E402 - the repository root is on the path only now

BUILD = ROOT / "benches" / "build"
RESULTS = ROOT / "benches" / "results"
SCENARIO = "sched-tail"
CORES = "0,1"


def database(n_events: int) -> Path:
    path = BUILD / f"explain-{SCENARIO}-{n_events}.db"
    if not path.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_synthetic_db(path, n_events, scenario=SCENARIO)
        print(f"  built {path.name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


def run_explain(db: Path) -> tuple[float, int, dict[str, object]]:
    """(wall seconds, peak RSS bytes, the JSON report) of one `ingero explain --json`."""
    command = [sys.executable, "-m", "ingero", "explain", "--db", str(db), "--json"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", CORES, *command]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"explain failed on {db}: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_maxrss * 1024, json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for n in args.events:
        db = database(n)
        walls, peaks = [], []
        report: dict[str, object] = {}
        for _ in range(args.rounds):
            wall, peak, report = run_explain(db)
            walls.append(wall)
            peaks.append(peak)
        chains = report["chains"]
        assert isinstance(chains, list)
        result = {
            "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} cpus, taskset -c {CORES}",
            "events": report["events"],
            "database_bytes": db.stat().st_size,
            "rounds": args.rounds,
            "wall_s": {"median": round(statistics.median(walls), 2), "min": round(min(walls), 2)},
            "peak_rss_mb": round(max(peaks) / 2**20),
            "chains": sorted(str(c["id"]) for c in chains if isinstance(c, dict)),
            "goal": "10M events under 10 s and under 2 GB",
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"explain_{n}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result))


if __name__ == "__main__":
    main()
