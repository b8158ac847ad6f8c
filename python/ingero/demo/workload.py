"""A small training loop over a CUDA runtime library, with the stressors of the demo
scenarios: CPU hogs, host memory pressure, a second process on the same GPU.

Run by path (stdlib only, so the traced process loads nothing of ingero):
`python workload.py --lib libcudart.so.12 --steps 300 ...`. Each step launches
`--kernels` kernels, copies `--copy-bytes` host to device, optionally allocates and
frees, synchronises, then does `--cpu-work-us` of host work (the data loading a
real loop does between steps). Stressors run as child processes from step
`--stress-from` to `--stress-to`, so a trace that follows children sees them.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

MIB = 1 << 20
CUDA_MEMCPY_HOST_TO_DEVICE = 1
KERNEL_NAMES = ("embedding_fwd", "gemm_fwd", "gemm_bwd", "adam_step")


class Dim3(ctypes.Structure):
    """CUDA `dim3`, passed by value to cudaLaunchKernel."""

    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


class Runtime:
    """The few CUDA runtime entry points a training step uses."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        self.malloc = lib.cudaMalloc
        self.malloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        self.free = lib.cudaFree
        self.free.argtypes = [ctypes.c_void_p]
        self.memcpy = lib.cudaMemcpy
        self.memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.launch = lib.cudaLaunchKernel
        self.launch.argtypes = [
            ctypes.c_void_p,
            Dim3,
            Dim3,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_size_t,
            ctypes.c_void_p,
        ]
        self.sync = lib.cudaStreamSynchronize
        self.sync.argtypes = [ctypes.c_void_p]
        # Only the simulated library has it; a real libcudart runs real kernels.
        self.set_kernel_time = getattr(lib, "simcudaSetKernelTime", None)
        if self.set_kernel_time is not None:
            self.set_kernel_time.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
            self.set_kernel_time.restype = None
        for fn in (self.malloc, self.free, self.memcpy, self.launch, self.sync):
            fn.restype = ctypes.c_int


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"{what} returned {rc}")


def burn_cpu(us: float) -> None:
    """Host work of `us` microseconds of CPU time (not wall time: a preempted
    loop takes longer, as real data loading does)."""
    end = time.thread_time_ns() + int(us * 1000)
    while time.thread_time_ns() < end:
        pass


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A stressor must not outlive a workload that was killed.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(role: str, *args: str, cpu: int | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, os.path.abspath(__file__), "--role", role, *args]
    if cpu is not None:
        command += ["--pin-cpu", str(cpu)]
    # The workload is single-threaded, so preexec_fn is safe here.
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)  # noqa: PLW1509


def hog() -> None:
    """A CPU-bound background job: spins until terminated."""
    while True:
        pass


def memory_pressure(chunk_mib: int) -> None:
    """Host memory churn: allocates and touches `chunk_mib` MiB over and over, so
    the kernel keeps handing out fresh pages."""
    while True:
        block = b"\x01" * (chunk_mib * MIB)
        del block


def competitor(lib: str, kernel_us: int) -> None:
    """A second process on the same GPU: back-to-back long kernels, synchronised."""
    rt = Runtime(lib)
    kernel = ctypes.create_string_buffer(b"competitor_gemm")
    if rt.set_kernel_time is not None:
        rt.set_kernel_time(ctypes.addressof(kernel), kernel_us * 1000)
    one = Dim3(1, 1, 1)
    while True:
        _check(rt.launch(ctypes.addressof(kernel), one, one, None, 0, None), "cudaLaunchKernel")
        _check(rt.sync(None), "cudaStreamSynchronize")


class Stressors:
    """The stressor processes of one run, started and stopped together."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        a = self.args
        self.procs += [spawn("hog", cpu=a.pin_cpu) for _ in range(a.hogs)]
        if a.memory_mib:
            self.procs.append(spawn("memory", "--memory-mib", str(a.memory_mib), cpu=a.pin_cpu))
        if a.competitor_kernel_us:
            comp = spawn(
                "competitor", "--lib", a.lib, "--competitor-kernel-us", str(a.competitor_kernel_us), cpu=None
            )
            self.procs.append(comp)
        if a.pid_file:
            # Who the stressors are, so the demo can tell them among the preempters.
            with open(a.pid_file, "a", encoding="ascii") as out:
                out.writelines(f"{proc.pid}\n" for proc in self.procs)
        # Let them get going before the steps they are meant to disturb.
        time.sleep(a.stress_settle_ms / 1000)

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait()
        self.procs.clear()


def train(args: argparse.Namespace) -> None:
    rt = Runtime(args.lib)
    kernels = [ctypes.create_string_buffer(name.encode()) for name in KERNEL_NAMES[: args.kernels]]
    if rt.set_kernel_time is not None:
        for k in kernels:
            rt.set_kernel_time(ctypes.addressof(k), args.kernel_us * 1000)
    host = ctypes.create_string_buffer(64)  # never read by the simulated library
    grid, block = Dim3(64, 1, 1), Dim3(256, 1, 1)
    ptr = ctypes.c_void_p()
    _check(rt.malloc(ctypes.byref(ptr), args.weights_mib * MIB), "cudaMalloc")
    weights = ptr.value
    stressors = Stressors(args)
    stressed = args.hogs or args.memory_mib or args.competitor_kernel_us
    try:
        for step in range(args.steps):
            if stressed and step == args.stress_from:
                stressors.start()
            if stressed and step == args.stress_to:
                stressors.stop()
            scratch = ctypes.c_void_p()
            if args.alloc_bytes:
                big = args.spike_every and step % args.spike_every == args.spike_every - 1
                size = args.spike_bytes if big else args.alloc_bytes
                _check(rt.malloc(ctypes.byref(scratch), size), "cudaMalloc")
            if args.copy_bytes:
                _check(rt.memcpy(weights, host, args.copy_bytes, CUDA_MEMCPY_HOST_TO_DEVICE), "cudaMemcpy")
            for k in kernels:
                _check(rt.launch(ctypes.addressof(k), grid, block, None, 0, None), "cudaLaunchKernel")
            _check(rt.sync(None), "cudaStreamSynchronize")
            if scratch.value:
                _check(rt.free(scratch), "cudaFree")
            burn_cpu(args.cpu_work_us)
    finally:
        stressors.stop()
    _check(rt.free(weights), "cudaFree")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--role", choices=["train", "hog", "memory", "competitor"], default="train")
    p.add_argument("--lib", default="libcudart.so.12", help="the CUDA runtime library to load")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--kernels", type=int, default=4, choices=range(1, len(KERNEL_NAMES) + 1))
    p.add_argument("--kernel-us", type=int, default=100, help="simulated device time of each kernel")
    p.add_argument("--weights-mib", type=int, default=8)
    p.add_argument("--copy-bytes", type=int, default=256 << 10, help="cudaMemcpy H2D per step (0: none)")
    p.add_argument("--alloc-bytes", type=int, default=0, help="cudaMalloc+cudaFree per step (0: none)")
    p.add_argument("--spike-every", type=int, default=0, help="every Nth step allocates --spike-bytes")
    p.add_argument("--spike-bytes", type=int, default=0)
    p.add_argument("--cpu-work-us", type=float, default=200, help="host work per step")
    p.add_argument("--hogs", type=int, default=0, help="CPU-bound processes during the stress steps")
    p.add_argument("--memory-mib", type=int, default=0, help="memory churn process, MiB per allocation")
    p.add_argument("--competitor-kernel-us", type=int, default=0, help="second GPU process, its kernel time")
    p.add_argument("--stress-from", type=int, default=0)
    p.add_argument("--stress-to", type=int, default=-1, help="default: the last step")
    p.add_argument("--stress-settle-ms", type=int, default=100)
    p.add_argument("--pin-cpu", type=int, default=None, help="run on this CPU only (hogs too)")
    p.add_argument("--pid-file", default=None, help="append the stressor processes' pids here")
    args = p.parse_args(argv)
    if args.stress_to < 0:
        args.stress_to = args.steps
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    if args.role == "hog":
        hog()
    elif args.role == "memory":
        memory_pressure(args.memory_mib)
    elif args.role == "competitor":
        competitor(args.lib, args.competitor_kernel_us)
    else:
        try:
            train(args)
        except (OSError, RuntimeError) as err:
            print(f"workload: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
