"""Cost of Python frames in traced calls' stacks: a Python loop calling the
simulated cudaLaunchKernel through ctypes (benches/py_call_loop.py), untraced,
traced without stacks, and traced with stacks (native and Python frames), at
a shallow and a deep Python call stack.

    sudo .venv/bin/python benches/pyframes_overhead.py [--calls N] [--rounds R] [--json FILE]

Figures are ns per call (medians over rounds, interleaved); what stacks add is
the traced-with-stacks time less the traced-without-stacks time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "tests" / "simcuda" / "build" / "libcudart.so.12"
LOOP = ROOT / "benches" / "py_call_loop.py"
ENV = dict(os.environ, SIMCUDA_LAUNCH_NS="0", SIMCUDA_KERNEL_NS="0", SIMCUDA_SPIN_NS="0")


def measure(calls: int, depth: int, *trace_flags: str, traced: bool = True) -> float:
    loop = [sys.executable, str(LOOP), str(LIB), str(calls), str(depth)]
    with tempfile.TemporaryDirectory() as tmp:
        trace = [
            sys.executable,
            "-m",
            "ingero",
            "trace",
            *trace_flags,
            "--db",
            f"{tmp}/b.db",
            "--cuda-lib",
            str(LIB),
        ]
        command = [*trace, "--", *loop] if traced else loop
        out = subprocess.run(command, env=ENV, capture_output=True, text=True, check=True).stdout
    numbers = [line for line in out.splitlines() if line.replace(".", "", 1).isdigit()]
    return float(numbers[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("pyframes_overhead: needs root")
    subprocess.run(["bash", str(ROOT / "tests" / "simcuda" / "build.sh")], check=True, capture_output=True)
    configs = {
        f"{name}, {depth} Python frames": (depth, flags, traced)
        for depth in (3, 30)
        for name, flags, traced in (
            ("untraced", (), False),
            ("ingero trace --no-stack", ("--no-stack",), True),
            ("ingero trace (stacks + Python frames)", (), True),
        )
    }
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):  # interleaved, so drift hits every config alike
        for name, (depth, flags, traced) in configs.items():
            samples[name].append(measure(args.calls, depth, *flags, traced=traced))
    ns = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in ns.items():
        print(f"{name:<52} {value:>9.1f} ns/call")
    stacks_add = {
        depth: ns[f"ingero trace (stacks + Python frames), {depth} Python frames"]
        - ns[f"ingero trace --no-stack, {depth} Python frames"]
        for depth in (3, 30)
    }
    for depth, added in stacks_add.items():
        print(f"stacks with Python frames add {added:.1f} ns/call at {depth} Python frames")
    if args.json:
        result = {
            "machine": f"{platform.node()} {platform.release()} {os.cpu_count()} cpus",
            "python": platform.python_version(),
            "calls": args.calls,
            "rounds": args.rounds,
            "ns_per_call": ns,
            "stacks_add_ns": {str(depth): added for depth, added in stacks_add.items()},
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
