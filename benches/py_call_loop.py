"""Calls the simulated cudaLaunchKernel through ctypes N times from DEPTH nested
Python frames and prints the mean ns per call (for benches/pyframes_overhead.py).

    python benches/py_call_loop.py LIBCUDART CALLS DEPTH
"""

from __future__ import annotations

import ctypes
import sys
import time
from typing import Any


class Dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


def loop(launch: Any, calls: int) -> float:
    kernel = ctypes.create_string_buffer(1)
    grid, block = Dim3(1, 1, 1), Dim3(32, 1, 1)
    for _ in range(calls // 10):  # warm-up
        launch(kernel, grid, block, None, 0, None)
    start = time.perf_counter_ns()
    for _ in range(calls):
        launch(kernel, grid, block, None, 0, None)
    return (time.perf_counter_ns() - start) / calls


def nested(depth: int, launch: Any, calls: int) -> float:
    # Python frames above the call site, as a framework's layers would be.
    return loop(launch, calls) if depth <= 1 else nested(depth - 1, launch, calls)


def main() -> None:
    lib, calls, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    launch = ctypes.CDLL(lib).cudaLaunchKernel
    launch.restype = ctypes.c_int
    launch.argtypes = [ctypes.c_void_p, Dim3, Dim3, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    print(f"{nested(depth, launch, calls):.1f}")


if __name__ == "__main__":
    main()
