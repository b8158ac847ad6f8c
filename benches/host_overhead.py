"""Drops and CPU cost of the host layers under a scheduler-heavy load.

    sudo .venv/bin/python benches/host_overhead.py [--seconds S] [--rounds R] [--json OUT]

`stress-ng --cpu 2 --switch 2` runs three ways: untraced (the baseline), beside
a trace whose target is an idle process (every switch of stress-ng is summed
in kernel: the cost every machine pays), and as the traced command itself
(every context switch of stress-ng becomes an event: the worst case). For each:
stress-ng's bogo-ops rate against the baseline, the CPU time of the ingero
process, the time spent in the eBPF programs (kernel.bpf_stats_enabled), and
the events received, stored and dropped. A VM's figures vary from run to run:
every round is kept, with the median of each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "tests" / "simcuda" / "build" / "libcudart.so.12"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stress_cmd(seconds: float, metrics: Path) -> list[str]:
    return [
        "stress-ng", "--cpu", "2", "--switch", "2", "--timeout", f"{seconds}s",
        "--metrics", "--yaml", str(metrics),
    ]  # fmt: skip


def bogo_rates(metrics: Path) -> dict[str, float]:
    """bogo-ops/s (real time) per stressor, from stress-ng's YAML report."""
    rates: dict[str, float] = {}
    stressor = None
    for line in metrics.read_text().splitlines():
        if m := re.match(r"\s+- stressor: (\S+)", line):
            stressor = m.group(1)
        elif stressor and (m := re.match(r"\s+bogo-ops-per-second-real-time: ([\d.e+]+)", line)):
            rates[stressor] = float(m.group(1))
    return rates


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def bpf_run_ns(pid: int) -> int:
    """Time the kernel spent in the eBPF programs whose fds `pid` holds."""
    total = 0
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue
        if "prog_type:" in text and (m := re.search(r"run_time_ns:\s+(\d+)", text)):
            total += int(m.group(1))
    return total


def counts(report: str) -> dict[str, int]:
    line = next(line for line in report.splitlines() if line.startswith("events:"))
    return {name.strip(): int(n) for name, n in re.findall(r"([a-z ]+) (\d+)", line.split(":", 1)[1])}


def traced(seconds: float, tmp: Path, *, stress_is_target: bool) -> dict[str, Any]:
    metrics, db = tmp / f"metrics-{stress_is_target}.yaml", tmp / f"trace-{stress_is_target}.db"
    command = stress_cmd(seconds, metrics) if stress_is_target else ["sleep", str(seconds + 2)]
    trace = subprocess.Popen(
        [sys.executable, "-m", "ingero", "trace", "--db", str(db), "--cuda-lib", str(LIB),
         "--no-io", "--no-tcp", "--no-net", "--", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert trace.stderr is not None
    attached = trace.stderr.readline()
    if "attached" not in attached:
        raise RuntimeError(f"ingero did not start: {attached}{trace.stderr.read()}")
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:  # the process's counters vanish with it: keep the latest
        while not done.is_set():
            try:
                samples.append((cpu_seconds(trace.pid), bpf_run_ns(trace.pid)))
            except OSError:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    cpu0 = cpu_seconds(trace.pid)
    if not stress_is_target:
        subprocess.run(stress_cmd(seconds, metrics), check=True, capture_output=True)
    out, err = trace.communicate(timeout=seconds + 120)
    done.set()
    sampler.join()
    if trace.returncode != 0:
        raise RuntimeError(f"ingero trace failed: {err}")
    # Programs are closed as the trace stops, a moment before the process ends:
    # the largest reading is the total.
    cpu, bpf_ns = max(s[0] for s in samples), max(s[1] for s in samples)
    return {
        "bogo_ops_per_s": bogo_rates(metrics),
        "ingero_cpu_s": round(cpu - cpu0, 2),
        "bpf_program_s": round(bpf_ns / 1e9, 2),
        "events": counts(out),
    }


def one_round(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        metrics = tmp / "baseline.yaml"
        subprocess.run(stress_cmd(seconds, metrics), check=True, capture_output=True)
        baseline = bogo_rates(metrics)
        runs = {
            "load_untraced_beside_a_trace": traced(seconds, tmp, stress_is_target=False),
            "load_traced": traced(seconds, tmp, stress_is_target=True),
        }
    for run in runs.values():
        run["throughput_vs_baseline"] = {
            name: round(rate / baseline[name], 3) for name, rate in run["bogo_ops_per_s"].items()
        }
    return {"baseline_bogo_ops_per_s": baseline, **runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("host_overhead.py: error: needs root (eBPF)")
    if shutil.which("stress-ng") is None:
        sys.exit("host_overhead.py: error: stress-ng is not installed (apt-get install stress-ng)")
    subprocess.run(["bash", str(ROOT / "tests" / "simcuda" / "build.sh")], check=True, capture_output=True)
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    stats_before = stats_path.read_text().strip()
    stats_path.write_text("1")
    try:
        rounds = [one_round(args.seconds) for _ in range(args.rounds)]
    finally:
        stats_path.write_text(stats_before)
    results = {
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "load": "stress-ng --cpu 2 --switch 2",
        "seconds": args.seconds,
        "median": {
            mode: {
                "throughput_vs_baseline": {
                    name: statistics.median(r[mode]["throughput_vs_baseline"][name] for r in rounds)
                    for name in rounds[0][mode]["throughput_vs_baseline"]
                },
                **{
                    key: statistics.median(r[mode][key] for r in rounds)
                    for key in ("ingero_cpu_s", "bpf_program_s")
                },
                "events": {
                    key: statistics.median(r[mode]["events"].get(key, 0) for r in rounds)
                    for key in ("received", "stored", "dropped")
                },
            }
            for mode in ("load_untraced_beside_a_trace", "load_traced")
        },
        "rounds": rounds,
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
