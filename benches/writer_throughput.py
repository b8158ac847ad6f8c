"""Events per second from the drainer into SQLite, the probes bypassed, for 60 s.

Runs `crates/ingero-core/examples/writer_throughput.rs` (a generator feeding the real
writer the batches the drainer makes, with --record-all) twice: with ingero's layout
(event indexes built when the trace ends) and with the original's (every index kept
current row by row). Reports events/s, loss, bytes on disk per event, the time the end of
the trace takes, and the writer's peak memory. Usage: python benches/writer_throughput.py
[--seconds 60] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run(seconds: int, eager: bool, db: Path) -> dict[str, Any]:
    command = ["cargo", "run", "-q", "--release", "-p", "ingero-core", "--example", "writer_throughput"]
    command += ["--", str(db), str(seconds), *(["--eager-indexes"] if eager else [])]
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for eager in (False, True):
            result = run(args.seconds, eager, Path(tmp) / "bench.db")
            results.append(result)
            print(
                f"{result['layout']}: {result['events_per_s']:,.0f} events/s for {result['seconds']:.0f} s, "
                f"lost {result['lost']}, {result['bytes_per_stored_event']:.0f} bytes/event on disk, "
                f"end of trace {result['finish_seconds']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB"
            )
    if args.json:
        machine = f"{platform.node()} {platform.machine()} Linux {platform.release()}"
        args.json.write_text(json.dumps({"machine": machine, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
