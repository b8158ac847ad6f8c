"""The demo's training loop on PyTorch and a real GPU (`ingero demo --gpu`): the same
flags as workload.py, the same stressors (CPU hogs and memory churn are workload.py's
own roles; the second GPU process is a PyTorch one).

Run by path: `python torch_workload.py --steps 300 ...`. Needs torch with CUDA.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20


def _torch() -> Any:
    # Only this mode needs torch, and only on a GPU machine.
    return importlib.import_module("torch")


def spawn_role(role: str, *args: str, cpu: int | None) -> subprocess.Popen[bytes]:
    script = os.path.join(HERE, "workload.py") if role in {"hog", "memory"} else os.path.abspath(__file__)
    command = [sys.executable, script, "--role", role, *args]
    if cpu is not None:
        command += ["--pin-cpu", str(cpu)]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def competitor(kernel_us: int) -> None:
    """A second process on the same GPU: matrix products sized to take about `kernel_us`."""
    torch = _torch()
    n = 1024 if kernel_us < 1000 else 4096
    a = torch.randn(n, n, device="cuda")
    while True:
        torch.mm(a, a)
        torch.cuda.synchronize()


def train(args: argparse.Namespace) -> None:
    torch = _torch()
    dev = torch.device("cuda")
    weights = torch.randn(1024, 1024, device=dev)  # the first call creates the context
    host = torch.empty(max(args.copy_bytes // 4, 1), dtype=torch.float32)
    procs: list[subprocess.Popen[bytes]] = []
    stressed = args.hogs or args.memory_mib or args.competitor_kernel_us

    def start() -> None:
        procs.extend(spawn_role("hog", cpu=args.pin_cpu) for _ in range(args.hogs))
        if args.memory_mib:
            procs.append(spawn_role("memory", "--memory-mib", str(args.memory_mib), cpu=args.pin_cpu))
        if args.competitor_kernel_us:
            procs.append(
                spawn_role("competitor", "--competitor-kernel-us", str(args.competitor_kernel_us), cpu=None)
            )
        if args.pid_file:
            with open(args.pid_file, "a", encoding="ascii") as out:
                out.writelines(f"{p.pid}\n" for p in procs)
        time.sleep(args.stress_settle_ms / 1000)

    def stop() -> None:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        procs.clear()

    try:
        for step in range(args.steps):
            if stressed and step == args.stress_from:
                start()
            if stressed and step == args.stress_to:
                stop()
            scratch = None
            if args.alloc_bytes:
                big = args.spike_every and step % args.spike_every == args.spike_every - 1
                if big:
                    torch.cuda.empty_cache()  # the next allocation must come from cudaMalloc
                size = args.spike_bytes if big else args.alloc_bytes
                scratch = torch.empty(max(size // 4, 1), dtype=torch.float32, device=dev)
            if args.copy_bytes:
                host.to(dev, non_blocking=False)
            for _ in range(args.kernels):
                weights = torch.tanh(weights @ weights * 1e-3)
            torch.cuda.synchronize()
            del scratch
            end = time.thread_time_ns() + int(args.cpu_work_us * 1000)
            while time.thread_time_ns() < end:
                pass
    finally:
        stop()


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--role", choices=["train", "competitor"], default="train")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--kernels", type=int, default=4)
    p.add_argument("--kernel-us", type=int, default=100, help="ignored: real kernels take what they take")
    p.add_argument("--copy-bytes", type=int, default=256 << 10)
    p.add_argument("--alloc-bytes", type=int, default=0)
    p.add_argument("--spike-every", type=int, default=0)
    p.add_argument("--spike-bytes", type=int, default=0)
    p.add_argument("--cpu-work-us", type=float, default=200)
    p.add_argument("--hogs", type=int, default=0)
    p.add_argument("--memory-mib", type=int, default=0)
    p.add_argument("--competitor-kernel-us", type=int, default=0)
    p.add_argument("--stress-from", type=int, default=0)
    p.add_argument("--stress-to", type=int, default=-1)
    p.add_argument("--stress-settle-ms", type=int, default=100)
    p.add_argument("--pin-cpu", type=int, default=None)
    p.add_argument("--pid-file", default=None)
    args = p.parse_args(argv)
    if args.stress_to < 0:
        args.stress_to = args.steps
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    if args.role == "competitor":
        competitor(args.competitor_kernel_us)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
