"""Cost of one traced CUDA call: ingero against an empty uprobe+uretprobe pair
and against bpftrace doing comparable work, on the same symbol, in one run.

    sudo .venv/bin/python benches/uprobe_overhead.py [--calls N] [--rounds R]

A C loop (benches/call_loop.c) calls the simulated cudaLaunchKernel, made to do
no work (SIMCUDA_LAUNCH_NS=0, SIMCUDA_KERNEL_NS=0), so what is measured is the
probe path. Figures are ratios of the added cost per call over the bare call;
absolute times vary with the machine (a VM's uprobe trap costs ~10x bare metal).
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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "benches" / "build"
LIB = ROOT / "tests" / "simcuda" / "build" / "libcudart.so.12"
ENV = dict(os.environ, SIMCUDA_LAUNCH_NS="0", SIMCUDA_KERNEL_NS="0", SIMCUDA_SPIN_NS="0")

# An empty pair: the floor any uprobe-based tracer pays per call.
EMPTY_PAIR = "uprobe:{lib}:cudaLaunchKernel {{ }} uretprobe:{lib}:cudaLaunchKernel {{ }}"
# bpftrace doing what ingero does in kernel: pair by thread, time the call, keep the result.
BPFTRACE_LATENCY = (
    "uprobe:{lib}:cudaLaunchKernel {{ @start[tid] = nsecs; }} "
    "uretprobe:{lib}:cudaLaunchKernel /@start[tid]/ "
    "{{ @ns = hist(nsecs - @start[tid]); delete(@start[tid]); }}"
)
# The same, keyed by the caller's user stack, as ingero keeps one per call by default.
BPFTRACE_LATENCY_BY_STACK = (
    "uprobe:{lib}:cudaLaunchKernel {{ @start[tid] = nsecs; }} "
    "uretprobe:{lib}:cudaLaunchKernel /@start[tid]/ "
    "{{ @ns[ustack] = hist(nsecs - @start[tid]); delete(@start[tid]); }}"
)


def build_call_loop() -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    binary = BUILD / "call_loop"
    subprocess.run(
        ["cc", "-O2", "-o", str(binary), str(ROOT / "benches" / "call_loop.c"), "-ldl"], check=True
    )
    subprocess.run(["bash", str(ROOT / "tests" / "simcuda" / "build.sh")], check=True, capture_output=True)
    return binary


def call_loop(binary: Path, calls: int, wrap: list[str] | None = None) -> float:
    out = subprocess.run(
        [*(wrap or []), str(binary), str(LIB), str(calls)],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def with_bpftrace(program: str, run: Callable[[], float]) -> float:
    proc = subprocess.Popen(
        ["bpftrace", "-e", program.format(lib=LIB)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "Attaching" not in line:
            raise RuntimeError(f"bpftrace did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.5)
        return run()
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=60)  # bpftrace prints its maps on exit: drain the pipes
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def with_ingero(binary: Path, calls: int, *flags: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        trace = ["trace", *flags, "--db", f"{tmp}/bench.db", "--cuda-lib", str(LIB), "--"]
        command = [sys.executable, "-m", "ingero", *trace, str(binary), str(LIB), str(calls)]
        out = subprocess.run(command, env=ENV, capture_output=True, text=True, check=True).stdout
        numbers = [line for line in out.splitlines() if line.replace(".", "", 1).isdigit()]
        if "dropped 0" not in out:
            print(f"note: ingero dropped events in this round: {out.strip()}", file=sys.stderr)
        return float(numbers[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("uprobe_overhead: needs root")
    if shutil.which("bpftrace") is None:
        sys.exit("uprobe_overhead: bpftrace is not installed (apt-get install bpftrace)")
    binary = build_call_loop()

    configs: dict[str, Callable[[], float]] = {
        "bare call": lambda: call_loop(binary, args.calls),
        "empty uprobe pair": lambda: with_bpftrace(EMPTY_PAIR, lambda: call_loop(binary, args.calls)),
        "bpftrace (pair + latency map)": lambda: with_bpftrace(
            BPFTRACE_LATENCY, lambda: call_loop(binary, args.calls)
        ),
        "bpftrace (pair + latency by stack)": lambda: with_bpftrace(
            BPFTRACE_LATENCY_BY_STACK, lambda: call_loop(binary, args.calls)
        ),
        "ingero trace": lambda: with_ingero(binary, args.calls),
        "ingero trace --no-stack": lambda: with_ingero(binary, args.calls, "--no-stack"),
    }
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):  # interleaved, so drift hits every config alike
        for name, measure in configs.items():
            samples[name].append(measure())
    ns = {name: statistics.median(values) for name, values in samples.items()}
    bare = ns["bare call"]
    added = {name: ns[name] - bare for name in ns}
    print(f"{'configuration':<36} {'ns/call':>9} {'added ns':>9}")
    for name in configs:
        print(f"{name:<36} {ns[name]:>9.1f} {added[name]:>9.1f}")
    # Like for like: stacks against bpftrace keyed by stack, no stacks against plain latency.
    stacks, no_stack = added["ingero trace"], added["ingero trace --no-stack"]
    empty = added["empty uprobe pair"]
    ratios = {
        "ingero_vs_empty_pair": stacks / empty,
        "ingero_no_stack_vs_empty_pair": no_stack / empty,
        "ingero_vs_bpftrace_by_stack": stacks / added["bpftrace (pair + latency by stack)"],
        "ingero_no_stack_vs_bpftrace": no_stack / added["bpftrace (pair + latency map)"],
    }
    for name, ratio in ratios.items():
        print(f"{name:<36} {ratio:>9.3f}x")
    if args.json:
        result = {
            "machine": f"{platform.node()} {platform.release()} {os.cpu_count()} cpus",
            "calls": args.calls,
            "rounds": args.rounds,
            "ns_per_call": ns,
            **ratios,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
