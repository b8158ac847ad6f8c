#!/usr/bin/env python3
"""Drive the simulated CUDA libraries with a known mix of calls.

Loads libcudart (and, for any ``--driver-*`` flag, libcuda; for any ``--nccl-*`` count,
libnccl) through ctypes and makes
an exactly known number of CUDA calls from small, named Python functions
(``allocate``, ``copy_to_device``, ``launch``, ``step`` ...), so a stack walk sees
distinct Python frames, as with PyTorch.  At the end it writes a JSON summary
of every call it made (counts, return codes, sizes, kinds, threads, timings),
for tests to compare against what a tracer recorded.

Stdlib only.  See README.md next to this file.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024

# cudaMemcpyKind
MEMCPY_KINDS = {0: "HtoH", 1: "HtoD", 2: "DtoH", 3: "DtoD", 4: "Default"}


class Dim3(ctypes.Structure):
    """CUDA ``dim3``: passed by value to cudaLaunchKernel."""

    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


# --------------------------------------------------------------------------
# Model parameters (mirrors simcuda.h, so the summary can state the
# simulated time each call was asked to take).
# --------------------------------------------------------------------------


def env_u64(name: str, default: int) -> int:
    """Parse an env knob the way simcuda.h does (0x.. ok, K/M/G suffixes)."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    shift = {"k": 10, "m": 20, "g": 30}.get(raw[-1].lower(), 0)
    digits = raw[:-1] if shift else raw
    try:
        return int(digits, 0) << shift
    except ValueError:
        return default


@dataclass(frozen=True)
class Model:
    alloc_ns_per_mib: int
    alloc_base_ns: int
    device_bytes: int
    free_ns: int
    memcpy_bytes_per_us: int
    memcpy_base_ns: int
    async_ns: int
    launch_ns: int
    kernel_ns: int
    spin_ns: int
    device_count: int

    @staticmethod
    def from_env() -> Model:
        return Model(
            alloc_ns_per_mib=env_u64("SIMCUDA_ALLOC_NS_PER_MIB", 20000),
            alloc_base_ns=env_u64("SIMCUDA_ALLOC_BASE_NS", 20000),
            device_bytes=env_u64("SIMCUDA_DEVICE_BYTES", 8 << 30),
            free_ns=env_u64("SIMCUDA_FREE_NS", 10000),
            memcpy_bytes_per_us=max(1, env_u64("SIMCUDA_MEMCPY_BYTES_PER_US", 10000)),
            memcpy_base_ns=env_u64("SIMCUDA_MEMCPY_BASE_NS", 5000),
            async_ns=env_u64("SIMCUDA_ASYNC_NS", 2000),
            launch_ns=env_u64("SIMCUDA_LAUNCH_NS", 5000),
            kernel_ns=env_u64("SIMCUDA_KERNEL_NS", 50000),
            spin_ns=env_u64("SIMCUDA_SPIN_NS", 60000),
            device_count=min(16, env_u64("SIMCUDA_DEVICE_COUNT", 1)),
        )

    def alloc_ns(self, size: int) -> int:
        return self.alloc_base_ns + size * self.alloc_ns_per_mib // MIB

    def copy_ns(self, nbytes: int) -> int:
        return self.memcpy_base_ns + nbytes * 1000 // self.memcpy_bytes_per_us


# --------------------------------------------------------------------------
# Call recording.
# --------------------------------------------------------------------------


@dataclass
class ApiStats:
    calls: int = 0
    rc: dict[str, int] = field(default_factory=dict)
    tids: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    # The handle each call is about (stream, graph, executable graph, kernel),
    # 0 for the default stream: what a tracer should report alongside.
    handles: dict[str, int] = field(default_factory=dict)
    model_ns: int = 0
    device_ns: int = 0
    wall_ns: int = 0
    wall_ns_min: int | None = None
    wall_ns_max: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "calls": self.calls,
            "rc": self.rc,
            "tids": self.tids,
            "model_ns": self.model_ns,
            "device_ns": self.device_ns,
            "wall_ns": self.wall_ns,
            "wall_ns_min": self.wall_ns_min,
            "wall_ns_max": self.wall_ns_max,
        }
        if self.sizes:
            out["bytes"] = self.bytes
            out["sizes"] = self.sizes
        if self.kinds:
            out["kinds"] = self.kinds
        if self.handles:
            out["handles"] = self.handles
        return out


def _bump(d: dict[str, int], key: object, n: int = 1) -> None:
    k = str(key)
    d[k] = d.get(k, 0) + n


class Recorder:
    """Thread-safe record of every CUDA call the workload makes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.apis: dict[str, ApiStats] = {}
        self.tids: set[int] = set()

    def record(
        self,
        api: str,
        rc: int,
        wall_ns: int,
        *,
        size: int | None = None,
        kind: int | None = None,
        handle: int | None = None,
        model_ns: int = 0,
        device_ns: int = 0,
    ) -> None:
        tid = threading.get_native_id()
        with self._lock:
            st = self.apis.setdefault(api, ApiStats())
            self.tids.add(tid)
            st.calls += 1
            _bump(st.rc, rc)
            _bump(st.tids, tid)
            if size is not None:
                st.bytes += size
                _bump(st.sizes, size)
            if kind is not None:
                _bump(st.kinds, kind)
            if handle is not None:
                _bump(st.handles, handle)
            st.model_ns += model_ns
            st.device_ns += device_ns
            st.wall_ns += wall_ns
            st.wall_ns_min = wall_ns if st.wall_ns_min is None else min(st.wall_ns_min, wall_ns)
            st.wall_ns_max = wall_ns if st.wall_ns_max is None else max(st.wall_ns_max, wall_ns)


REC = Recorder()


def timed(fn: Any, *args: Any) -> tuple[int, int]:
    """Call a ctypes function; return (return code, wall ns)."""
    t0 = time.monotonic_ns()
    rc = int(fn(*args))
    return rc, time.monotonic_ns() - t0


# --------------------------------------------------------------------------
# Library loading.
# --------------------------------------------------------------------------

c_void_pp = ctypes.POINTER(ctypes.c_void_p)
c_int_p = ctypes.POINTER(ctypes.c_int)
c_u64_p = ctypes.POINTER(ctypes.c_ulonglong)

RUNTIME_SIGS: dict[str, tuple[Any, list[Any]]] = {
    "cudaMalloc": (ctypes.c_int, [c_void_pp, ctypes.c_size_t]),
    "cudaMallocManaged": (ctypes.c_int, [c_void_pp, ctypes.c_size_t, ctypes.c_uint]),
    "cudaFree": (ctypes.c_int, [ctypes.c_void_p]),
    "cudaMemcpy": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]),
    "cudaMemcpyAsync": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p],
    ),
    "cudaMemcpy2D": (
        ctypes.c_int,
        [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_size_t,
            ctypes.c_size_t,
            ctypes.c_int,
        ],
    ),
    "cudaMemcpy2DAsync": (
        ctypes.c_int,
        [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_size_t,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_void_p,
        ],
    ),
    "cudaMemcpyPeer": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t],
    ),
    "cudaMemcpyPeerAsync": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p],
    ),
    "cudaLaunchKernel": (
        ctypes.c_int,
        [ctypes.c_void_p, Dim3, Dim3, c_void_pp, ctypes.c_size_t, ctypes.c_void_p],
    ),
    "cudaStreamCreate": (ctypes.c_int, [c_void_pp]),
    "cudaStreamDestroy": (ctypes.c_int, [ctypes.c_void_p]),
    "cudaStreamSynchronize": (ctypes.c_int, [ctypes.c_void_p]),
    "cudaDeviceSynchronize": (ctypes.c_int, []),
    "cudaGetDeviceCount": (ctypes.c_int, [c_int_p]),
    "cudaSetDevice": (ctypes.c_int, [ctypes.c_int]),
    "cudaGetLastError": (ctypes.c_int, []),
    "cudaGetErrorName": (ctypes.c_char_p, [ctypes.c_int]),
    "cudaStreamBeginCapture": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "cudaStreamEndCapture": (ctypes.c_int, [ctypes.c_void_p, c_void_pp]),
    "cudaGraphInstantiate": (ctypes.c_int, [c_void_pp, ctypes.c_void_p, ctypes.c_ulonglong]),
    "cudaGraphLaunch": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
    "cudaGraphDestroy": (ctypes.c_int, [ctypes.c_void_p]),
    "cudaGraphExecDestroy": (ctypes.c_int, [ctypes.c_void_p]),
    "cudaRuntimeGetVersion": (ctypes.c_int, [c_int_p]),
    "simcudaSetKernelTime": (None, [ctypes.c_void_p, ctypes.c_ulonglong]),
}

DRIVER_SIGS: dict[str, tuple[Any, list[Any]]] = {
    "cuInit": (ctypes.c_int, [ctypes.c_uint]),
    "cuDeviceGet": (ctypes.c_int, [c_int_p, ctypes.c_int]),
    "cuCtxCreate_v2": (ctypes.c_int, [c_void_pp, ctypes.c_uint, ctypes.c_int]),
    "cuCtxDestroy_v2": (ctypes.c_int, [ctypes.c_void_p]),
    "cuDevicePrimaryCtxRetain": (ctypes.c_int, [c_void_pp, ctypes.c_int]),
    "cuDevicePrimaryCtxRelease_v2": (ctypes.c_int, [ctypes.c_int]),
    "cuCtxSetCurrent": (ctypes.c_int, [ctypes.c_void_p]),
    "cuCtxSynchronize": (ctypes.c_int, []),
    "cuMemAlloc_v2": (ctypes.c_int, [c_u64_p, ctypes.c_size_t]),
    "cuMemAllocManaged": (ctypes.c_int, [c_u64_p, ctypes.c_size_t, ctypes.c_uint]),
    "cuMemFree_v2": (ctypes.c_int, [ctypes.c_ulonglong]),
    "cuMemcpy": (ctypes.c_int, [ctypes.c_ulonglong, ctypes.c_ulonglong, ctypes.c_size_t]),
    "cuMemcpyAsync": (
        ctypes.c_int,
        [ctypes.c_ulonglong, ctypes.c_ulonglong, ctypes.c_size_t, ctypes.c_void_p],
    ),
    "cuLaunchKernel": (
        ctypes.c_int,
        [
            ctypes.c_void_p,  # CUfunction f
            ctypes.c_uint,  # gridDimX
            ctypes.c_uint,  # gridDimY
            ctypes.c_uint,  # gridDimZ
            ctypes.c_uint,  # blockDimX
            ctypes.c_uint,  # blockDimY
            ctypes.c_uint,  # blockDimZ
            ctypes.c_uint,  # sharedMemBytes
            ctypes.c_void_p,  # CUstream hStream
            c_void_pp,  # void **kernelParams
            c_void_pp,  # void **extra
        ],
    ),
    "cuStreamCreate": (ctypes.c_int, [c_void_pp, ctypes.c_uint]),
    "cuStreamDestroy_v2": (ctypes.c_int, [ctypes.c_void_p]),
    "cuStreamSynchronize": (ctypes.c_int, [ctypes.c_void_p]),
}


class NcclUniqueId(ctypes.Structure):
    """``ncclUniqueId``: 128 bytes, passed by value to ncclCommInitRank (in memory, on the stack)."""

    _fields_ = [("internal", ctypes.c_ubyte * 128)]


NCCL_SIGS: dict[str, tuple[Any, list[Any]]] = {
    "ncclGetUniqueId": (ctypes.c_int, [ctypes.POINTER(NcclUniqueId)]),
    "ncclCommInitRank": (ctypes.c_int, [c_void_pp, ctypes.c_int, NcclUniqueId, ctypes.c_int]),
    "ncclCommInitAll": (ctypes.c_int, [c_void_pp, ctypes.c_int, c_int_p]),
    "ncclCommDestroy": (ctypes.c_int, [ctypes.c_void_p]),
    "ncclAllReduce": (
        ctypes.c_int,
        [
            ctypes.c_void_p,  # const void *sendbuff
            ctypes.c_void_p,  # void *recvbuff
            ctypes.c_size_t,  # size_t count
            ctypes.c_int,  # ncclDataType_t datatype
            ctypes.c_int,  # ncclRedOp_t op
            ctypes.c_void_p,  # ncclComm_t comm
            ctypes.c_void_p,  # cudaStream_t stream
        ],
    ),
    "ncclAllGather": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p],
    ),
    "ncclReduceScatter": (
        ctypes.c_int,
        [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,  # size_t recvcount
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ],
    ),
    "ncclBroadcast": (
        ctypes.c_int,
        [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,  # int root
            ctypes.c_void_p,
            ctypes.c_void_p,
        ],
    ),
    "ncclSend": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p],
    ),
    "ncclRecv": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p],
    ),
}


class CudaLib:
    """A loaded library whose functions have their C signatures declared."""

    def __init__(self, path: str, sigs: dict[str, tuple[Any, list[Any]]]) -> None:
        self.path = path
        self._dll = ctypes.CDLL(path)
        self._fns: dict[str, Any] = {}
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(self._dll, name)
            fn.restype = restype
            fn.argtypes = argtypes
            self._fns[name] = fn

    def __getitem__(self, name: str) -> Any:
        return self._fns[name]

    def mapped_path(self) -> str:
        """The file actually mapped (resolved via /proc/self/maps)."""
        base = os.path.basename(self.path)
        try:
            with open("/proc/self/maps", encoding="utf-8") as maps:
                for line in maps:
                    parts = line.split()
                    if len(parts) >= 6 and os.path.basename(parts[5]) == base:
                        return parts[5]
        except OSError:
            pass
        return self.path


def load(path: str, sigs: dict[str, tuple[Any, list[Any]]], what: str) -> CudaLib:
    try:
        return CudaLib(path, sigs)
    except (OSError, AttributeError) as exc:
        print(f"workload: cannot load {what} library {path!r}: {exc}", file=sys.stderr)
        sys.exit(2)


# --------------------------------------------------------------------------
# The workload: small named functions, one CUDA call each.
# --------------------------------------------------------------------------

HOST_BUF = ctypes.create_string_buffer(64)  # stand-in host pointer; never read
KERNELS = {
    name: ctypes.create_string_buffer(name.encode())
    for name in ("gemm_kernel", "relu_kernel", "softmax_kernel")
}


def kernel_addr(name: str) -> int:
    return ctypes.addressof(KERNELS[name])


# cudaMemcpy2D geometry: rows of COPY2D_WIDTH bytes, pitch == width.
COPY2D_WIDTH = 4096
MEM_ATTACH_GLOBAL = 1  # cudaMemAttachGlobal / CU_MEM_ATTACH_GLOBAL


def copy2d_height(memcpy_bytes: int) -> int:
    return max(1, memcpy_bytes // COPY2D_WIDTH)


@dataclass
class Ctx:
    rt: CudaLib
    model: Model
    args: argparse.Namespace
    kernel_ns: dict[str, int]
    # cudaMemcpyPeer* devices: (source, destination).
    peer: tuple[int, int] = (0, 0)


@dataclass
class Share:
    """What one thread must do (its share of the totals)."""

    index: int
    mallocs: int
    frees: int
    launches: int
    memcpys: int
    async_memcpys: int
    syncs: int
    device_syncs: int
    graph_launches: int
    streams: int
    memcpy2ds: int = 0
    memcpy2d_asyncs: int = 0
    peer_memcpys: int = 0
    peer_async_memcpys: int = 0
    managed_allocs: int = 0

    def device_copies(self) -> int:
        """Copies that need a device pointer of this thread (2D and peer)."""
        return max(self.memcpy2ds, self.memcpy2d_asyncs, self.peer_memcpys, self.peer_async_memcpys)


@dataclass
class ThreadResult:
    tid: int
    allocated: int = 0
    freed: int = 0
    frees_requested: int = 0
    oom_rc: int | None = None
    streams_created: int = 0
    captured_kernels: int = 0
    managed_allocated: int = 0
    managed_freed: int = 0
    scratch_allocated: int = 0
    scratch_freed: int = 0
    errors: list[str] = field(default_factory=list)


def set_device(ctx: Ctx, device: int) -> int:
    rc, ns = timed(ctx.rt["cudaSetDevice"], device)
    REC.record("cudaSetDevice", rc, ns)
    return rc


def create_stream(ctx: Ctx) -> int | None:
    handle = ctypes.c_void_p()
    rc, ns = timed(ctx.rt["cudaStreamCreate"], ctypes.byref(handle))
    REC.record("cudaStreamCreate", rc, ns, model_ns=ctx.model.async_ns if rc == 0 else 0)
    return handle.value if rc == 0 else None


def destroy_stream(ctx: Ctx, stream: int) -> int:
    rc, ns = timed(ctx.rt["cudaStreamDestroy"], stream)
    REC.record("cudaStreamDestroy", rc, ns)
    return rc


def allocate(ctx: Ctx, nbytes: int) -> tuple[int, int | None]:
    ptr = ctypes.c_void_p()
    rc, ns = timed(ctx.rt["cudaMalloc"], ctypes.byref(ptr), nbytes)
    model = ctx.model.alloc_ns(nbytes) if rc == 0 and nbytes else ctx.model.alloc_base_ns
    REC.record("cudaMalloc", rc, ns, size=nbytes, model_ns=model)
    return rc, ptr.value


def allocate_managed(ctx: Ctx, nbytes: int) -> tuple[int, int | None]:
    ptr = ctypes.c_void_p()
    rc, ns = timed(ctx.rt["cudaMallocManaged"], ctypes.byref(ptr), nbytes, MEM_ATTACH_GLOBAL)
    model = ctx.model.alloc_ns(nbytes) if rc == 0 and nbytes else ctx.model.alloc_base_ns
    REC.record("cudaMallocManaged", rc, ns, size=nbytes, model_ns=model)
    return rc, ptr.value


def release(ctx: Ctx, ptr: int | None) -> int:
    rc, ns = timed(ctx.rt["cudaFree"], ptr)
    model = ctx.model.free_ns if rc == 0 and ptr else 0
    REC.record("cudaFree", rc, ns, model_ns=model)
    return rc


def copy_to_device(ctx: Ctx, dst: int | None, nbytes: int, kind: int) -> int:
    """Synchronous cudaMemcpy (named for the common HtoD case)."""
    src = ctypes.addressof(HOST_BUF)
    rc, ns = timed(ctx.rt["cudaMemcpy"], dst, src, nbytes, kind)
    cost = ctx.model.copy_ns(nbytes) if rc == 0 else 0
    REC.record("cudaMemcpy", rc, ns, size=nbytes, kind=kind, model_ns=cost, device_ns=cost)
    return rc


def copy_async(ctx: Ctx, dst: int | None, nbytes: int, kind: int, stream: int | None) -> int:
    src = ctypes.addressof(HOST_BUF)
    rc, ns = timed(ctx.rt["cudaMemcpyAsync"], dst, src, nbytes, kind, stream)
    ok = rc == 0
    REC.record(
        "cudaMemcpyAsync",
        rc,
        ns,
        size=nbytes,
        kind=kind,
        model_ns=ctx.model.async_ns if ok else 0,
        device_ns=ctx.model.copy_ns(nbytes) if ok else 0,
    )
    return rc


def copy_ends(kind: int, dev: int, dev2: int) -> tuple[int, int]:
    """(dst, src) of a copy of `kind`: device pointers where the kind says device."""
    host = ctypes.addressof(HOST_BUF)
    return {0: (host, host), 2: (host, dev), 3: (dev, dev2)}.get(kind, (dev, host))


def copy_2d(ctx: Ctx, dev: int, dev2: int, kind: int) -> int:
    """cudaMemcpy2D of copy2d_height() rows of COPY2D_WIDTH bytes (pitch = width)."""
    dst, src = copy_ends(kind, dev, dev2)
    width, height = COPY2D_WIDTH, copy2d_height(ctx.args.memcpy_bytes)
    rc, ns = timed(ctx.rt["cudaMemcpy2D"], dst, width, src, width, width, height, kind)
    nbytes = width * height
    cost = ctx.model.copy_ns(nbytes) if rc == 0 else 0
    REC.record("cudaMemcpy2D", rc, ns, size=nbytes, kind=kind, model_ns=cost, device_ns=cost)
    return rc


def copy_2d_async(ctx: Ctx, dev: int, dev2: int, kind: int, stream: int | None) -> int:
    dst, src = copy_ends(kind, dev, dev2)
    width, height = COPY2D_WIDTH, copy2d_height(ctx.args.memcpy_bytes)
    rc, ns = timed(ctx.rt["cudaMemcpy2DAsync"], dst, width, src, width, width, height, kind, stream)
    nbytes = width * height
    ok = rc == 0
    REC.record(
        "cudaMemcpy2DAsync",
        rc,
        ns,
        size=nbytes,
        kind=kind,
        handle=stream or 0,
        model_ns=ctx.model.async_ns if ok else 0,
        device_ns=ctx.model.copy_ns(nbytes) if ok else 0,
    )
    return rc


def copy_peer(ctx: Ctx, dst: int, src: int, nbytes: int) -> int:
    """cudaMemcpyPeer from ctx.peer[0] to ctx.peer[1]; recorded with kind = the destination device."""
    src_dev, dst_dev = ctx.peer
    rc, ns = timed(ctx.rt["cudaMemcpyPeer"], dst, dst_dev, src, src_dev, nbytes)
    cost = ctx.model.copy_ns(nbytes) if rc == 0 else 0
    REC.record("cudaMemcpyPeer", rc, ns, size=nbytes, kind=dst_dev, model_ns=cost, device_ns=cost)
    return rc


def copy_peer_async(ctx: Ctx, dst: int, src: int, nbytes: int, stream: int | None) -> int:
    src_dev, dst_dev = ctx.peer
    rc, ns = timed(ctx.rt["cudaMemcpyPeerAsync"], dst, dst_dev, src, src_dev, nbytes, stream)
    ok = rc == 0
    REC.record(
        "cudaMemcpyPeerAsync",
        rc,
        ns,
        size=nbytes,
        kind=dst_dev,
        handle=stream or 0,
        model_ns=ctx.model.async_ns if ok else 0,
        device_ns=ctx.model.copy_ns(nbytes) if ok else 0,
    )
    return rc


def launch(ctx: Ctx, kernel: str, stream: int | None, arg_ptr: int | None) -> int:
    grid, block = Dim3(128, 1, 1), Dim3(256, 1, 1)
    a = ctypes.c_void_p(arg_ptr)
    n = ctypes.c_int(1024)
    params = (ctypes.c_void_p * 2)(ctypes.addressof(a), ctypes.addressof(n))
    rc, ns = timed(
        ctx.rt["cudaLaunchKernel"],
        kernel_addr(kernel),
        grid,
        block,
        ctypes.cast(params, c_void_pp),
        0,
        stream,
    )
    ok = rc == 0
    REC.record(
        "cudaLaunchKernel",
        rc,
        ns,
        handle=stream or 0,
        model_ns=ctx.model.launch_ns if ok else 0,
        device_ns=ctx.kernel_ns[kernel] if ok else 0,
    )
    return rc


def synchronize(ctx: Ctx, stream: int | None) -> int:
    rc, ns = timed(ctx.rt["cudaStreamSynchronize"], stream)
    REC.record("cudaStreamSynchronize", rc, ns, handle=stream or 0)
    return rc


def device_synchronize(ctx: Ctx) -> int:
    rc, ns = timed(ctx.rt["cudaDeviceSynchronize"])
    REC.record("cudaDeviceSynchronize", rc, ns)
    return rc


def step(
    ctx: Ctx,
    i: int,
    share: Share,
    streams: list[int | None],
    ptrs: list[int],
    *,
    dev_ptrs: list[int] | None = None,
) -> None:
    """One training-like step: maybe a copy, maybe an async copy, maybe a kernel,
    maybe a 2D copy and a peer copy (on `dev_ptrs`: the thread's buffers, or its scratch one)."""
    a = ctx.args
    dst = ptrs[i % len(ptrs)] if ptrs else None
    stream = streams[i % len(streams)]
    if i < share.memcpys:
        copy_to_device(ctx, dst, a.memcpy_bytes, a.memcpy_kind)
    if i < share.async_memcpys:
        copy_async(ctx, dst, a.memcpy_bytes, a.memcpy_kind, stream)
    if i < share.launches:
        kernel = list(KERNELS)[i % len(KERNELS)]
        launch(ctx, kernel, stream, dst)
    if dev_ptrs:
        dev, dev2 = dev_ptrs[i % len(dev_ptrs)], dev_ptrs[(i + 1) % len(dev_ptrs)]
        if i < share.memcpy2ds:
            copy_2d(ctx, dev, dev2, a.memcpy_kind)
        if i < share.memcpy2d_asyncs:
            copy_2d_async(ctx, dev, dev2, a.memcpy_kind, stream)
        if i < share.peer_memcpys:
            copy_peer(ctx, dev, dev2, a.memcpy_bytes)
        if i < share.peer_async_memcpys:
            copy_peer_async(ctx, dev, dev2, a.memcpy_bytes, stream)


def capture_graph(ctx: Ctx, stream: int, kernels: int, res: ThreadResult) -> int | None:
    """Capture `kernels` launches on `stream` into a graph; return the graph."""
    rc, ns = timed(ctx.rt["cudaStreamBeginCapture"], stream, 0)
    REC.record("cudaStreamBeginCapture", rc, ns, handle=stream)
    if rc != 0:
        return None
    for k in range(kernels):
        # Recorded into the graph rather than queued on the stream.
        kernel = list(KERNELS)[k % len(KERNELS)]
        grid, block = Dim3(64, 1, 1), Dim3(128, 1, 1)
        rc_l, ns_l = timed(ctx.rt["cudaLaunchKernel"], kernel_addr(kernel), grid, block, None, 0, stream)
        REC.record(
            "cudaLaunchKernel", rc_l, ns_l, handle=stream, model_ns=ctx.model.launch_ns if rc_l == 0 else 0
        )
        if rc_l == 0:
            res.captured_kernels += 1
    graph = ctypes.c_void_p()
    rc, ns = timed(ctx.rt["cudaStreamEndCapture"], stream, ctypes.byref(graph))
    REC.record("cudaStreamEndCapture", rc, ns, handle=graph.value or 0)
    return graph.value if rc == 0 else None


def run_graphs(ctx: Ctx, share: Share, res: ThreadResult) -> None:
    """Capture once, instantiate, launch the graph N times, sync, clean up."""
    stream = create_stream(ctx)
    if stream is None:
        res.errors.append("cudaStreamCreate failed for graph capture")
        return
    res.streams_created += 1
    kernels = ctx.args.graph_kernels
    graph = capture_graph(ctx, stream, kernels, res)
    if graph is not None:
        exec_h = ctypes.c_void_p()
        rc, ns = timed(ctx.rt["cudaGraphInstantiate"], ctypes.byref(exec_h), graph, 0)
        REC.record(
            "cudaGraphInstantiate",
            rc,
            ns,
            handle=exec_h.value or 0,
            model_ns=ctx.model.launch_ns if rc == 0 else 0,
        )
        if rc == 0:
            graph_ns = sum(ctx.kernel_ns[list(KERNELS)[k % len(KERNELS)]] for k in range(kernels))
            for _ in range(share.graph_launches):
                rc_g, ns_g = timed(ctx.rt["cudaGraphLaunch"], exec_h.value, stream)
                ok = rc_g == 0
                REC.record(
                    "cudaGraphLaunch",
                    rc_g,
                    ns_g,
                    handle=exec_h.value,
                    model_ns=ctx.model.launch_ns if ok else 0,
                    device_ns=graph_ns if ok else 0,
                )
            synchronize(ctx, stream)
            rc, ns = timed(ctx.rt["cudaGraphExecDestroy"], exec_h.value)
            REC.record("cudaGraphExecDestroy", rc, ns)
        rc, ns = timed(ctx.rt["cudaGraphDestroy"], graph)
        REC.record("cudaGraphDestroy", rc, ns)
    destroy_stream(ctx, stream)


def allocate_managed_share(ctx: Ctx, share: Share, res: ThreadResult) -> list[int]:
    """The thread's cudaMallocManaged calls; returns the pointers (freed at the end)."""
    managed: list[int] = []
    for _ in range(share.managed_allocs):
        rc, ptr = allocate_managed(ctx, ctx.args.malloc_bytes)
        if rc == 0 and ptr is not None:
            managed.append(ptr)
    res.managed_allocated = len(managed)
    return managed


def scratch_bytes(args: argparse.Namespace) -> int:
    """Size of the scratch buffer 2D/peer copies use when a thread allocated nothing."""
    nbytes: int = args.memcpy_bytes
    return max(1, nbytes, COPY2D_WIDTH * copy2d_height(nbytes))


def device_buffers(
    ctx: Ctx, share: Share, ptrs: list[int], res: ThreadResult
) -> tuple[list[int], int | None]:
    """Device pointers for 2D/peer copies: the thread's --mallocs buffers, else one
    scratch cudaMalloc (returned second, freed at the end)."""
    if not share.device_copies() or ptrs:
        return ptrs, None
    rc, ptr = allocate(ctx, scratch_bytes(ctx.args))
    if rc != 0 or ptr is None:
        return [0], None  # still make every copy asked for (on NULL): the counts stay exact
    res.scratch_allocated += 1
    return [ptr], ptr


def sync_points(steps: int, syncs: int) -> list[int]:
    """Step indices after which to synchronise, spread evenly over the steps."""
    if steps == 0:
        return [0] * syncs
    return [max(0, (j + 1) * steps // syncs - 1) for j in range(syncs)]


def worker(ctx: Ctx, share: Share, res: ThreadResult) -> None:
    """Everything one thread does, in order."""
    a = ctx.args
    set_device(ctx, a.device)

    streams: list[int | None] = []
    for _ in range(share.streams):
        s = create_stream(ctx)
        if s is not None:
            streams.append(s)
            res.streams_created += 1
    created = [s for s in streams if s is not None]
    if not streams:
        streams = [None]  # default stream

    ptrs: list[int] = []
    for _ in range(share.mallocs):
        rc, ptr = allocate(ctx, a.malloc_bytes)
        if rc == 0 and ptr is not None:
            ptrs.append(ptr)
    res.allocated = len(ptrs)

    if share.index == 0 and a.oom_bytes is not None:
        res.oom_rc, _ = allocate(ctx, a.oom_bytes)

    managed = allocate_managed_share(ctx, share, res)
    dev_ptrs, scratch = device_buffers(ctx, share, ptrs, res)

    steps = max(share.memcpys, share.async_memcpys, share.launches, share.device_copies())
    points = sync_points(steps, share.syncs)
    done = 0
    for i in range(steps):
        step(ctx, i, share, streams, ptrs, dev_ptrs=dev_ptrs)
        while done < len(points) and points[done] == i:
            synchronize(ctx, streams[done % len(streams)])
            done += 1
    while done < len(points):
        synchronize(ctx, streams[done % len(streams)])
        done += 1

    if share.graph_launches:
        run_graphs(ctx, share, res)

    for _ in range(share.device_syncs):
        device_synchronize(ctx)

    res.frees_requested = share.frees
    for ptr in ptrs[: share.frees]:
        if release(ctx, ptr) == 0:
            res.freed += 1
    for ptr in managed:
        if release(ctx, ptr) == 0:
            res.managed_freed += 1
    if scratch is not None and release(ctx, scratch) == 0:
        res.scratch_freed += 1

    for s in created:
        destroy_stream(ctx, s)


# --------------------------------------------------------------------------
# The driver section (libcuda), on the main thread after the workers.
# --------------------------------------------------------------------------

DRIVER_KERNEL = ctypes.create_string_buffer(b"driver_kernel")  # stand-in CUfunction; never read
DRIVER_GRID = (64, 1, 1)
DRIVER_BLOCK = (128, 1, 1)


def driver_function() -> int:
    return ctypes.addressof(DRIVER_KERNEL)


def wants_driver(args: argparse.Namespace) -> bool:
    """Whether any --driver-* flag asks for libcuda calls."""
    return any(
        getattr(args, name)
        for name in (
            "driver_allocs",
            "driver_launches",
            "driver_memcpys",
            "driver_async_memcpys",
            "driver_syncs",
            "driver_managed_allocs",
        )
    )


def drec(api: str, rc: int, ns: int, **kw: Any) -> int:
    """Record a driver call; return its rc."""
    REC.record(api, rc, ns, **kw)
    return rc


def driver_primary_context(drv: CudaLib, device: int) -> int | None:
    """cuDevicePrimaryCtxRetain, then cuCtxSetCurrent; the context, or None."""
    cu_ctx = ctypes.c_void_p()
    retain = drv["cuDevicePrimaryCtxRetain"]
    if drec("cuDevicePrimaryCtxRetain", *timed(retain, ctypes.byref(cu_ctx), device)) != 0:
        return None
    if drec("cuCtxSetCurrent", *timed(drv["cuCtxSetCurrent"], cu_ctx)) != 0:
        return None
    return cu_ctx.value


def driver_context(drv: CudaLib, model: Model, device: int, primary: bool) -> int | None:
    """cuInit, cuDeviceGet, then cuCtxCreate_v2 (which makes it current) or, with
    `primary`, cuDevicePrimaryCtxRetain and cuCtxSetCurrent as the runtime does;
    the context, or None."""
    if drec("cuInit", *timed(drv["cuInit"], 0)) != 0:
        return None
    dev = ctypes.c_int()
    if drec("cuDeviceGet", *timed(drv["cuDeviceGet"], ctypes.byref(dev), device)) != 0:
        return None
    if primary:
        return driver_primary_context(drv, dev.value)
    cu_ctx = ctypes.c_void_p()
    rc, ns = timed(drv["cuCtxCreate_v2"], ctypes.byref(cu_ctx), 0, dev.value)
    if drec("cuCtxCreate_v2", rc, ns, model_ns=model.alloc_base_ns if rc == 0 else 0) != 0:
        return None
    return cu_ctx.value


def driver_alloc(drv: CudaLib, model: Model, nbytes: int) -> int | None:
    p = ctypes.c_ulonglong()
    rc, ns = timed(drv["cuMemAlloc_v2"], ctypes.byref(p), nbytes)
    model_ns = model.alloc_ns(nbytes) if rc == 0 else model.alloc_base_ns
    drec("cuMemAlloc_v2", rc, ns, size=nbytes, model_ns=model_ns)
    return p.value if rc == 0 else None


def driver_alloc_managed(drv: CudaLib, model: Model, nbytes: int) -> int | None:
    p = ctypes.c_ulonglong()
    rc, ns = timed(drv["cuMemAllocManaged"], ctypes.byref(p), nbytes, MEM_ATTACH_GLOBAL)
    model_ns = model.alloc_ns(nbytes) if rc == 0 else model.alloc_base_ns
    drec("cuMemAllocManaged", rc, ns, size=nbytes, model_ns=model_ns)
    return p.value if rc == 0 else None


def driver_free(drv: CudaLib, model: Model, ptr: int) -> int:
    rc, ns = timed(drv["cuMemFree_v2"], ptr)
    return drec("cuMemFree_v2", rc, ns, model_ns=model.free_ns if rc == 0 else 0)


def driver_allocs(drv: CudaLib, model: Model, n: int, nbytes: int, out: dict[str, Any]) -> None:
    """n x cuMemAlloc_v2, then n x cuMemFree_v2 of what was allocated."""
    ptrs = [p for p in (driver_alloc(drv, model, nbytes) for _ in range(n)) if p is not None]
    out["allocated"] = len(ptrs)
    for p in ptrs:
        if driver_free(drv, model, p) == 0:
            out["freed"] += 1


def driver_stream_create(drv: CudaLib, model: Model) -> int | None:
    h = ctypes.c_void_p()
    rc, ns = timed(drv["cuStreamCreate"], ctypes.byref(h), 0)
    drec("cuStreamCreate", rc, ns, handle=h.value or 0, model_ns=model.async_ns if rc == 0 else 0)
    return h.value if rc == 0 else None


def driver_stream_destroy(drv: CudaLib, stream: int) -> int:
    return drec("cuStreamDestroy_v2", *timed(drv["cuStreamDestroy_v2"], stream), handle=stream)


def driver_launch(drv: CudaLib, model: Model, stream: int | None, arg_ptr: int | None) -> int:
    a = ctypes.c_ulonglong(arg_ptr or 0)
    n = ctypes.c_int(1024)
    params = (ctypes.c_void_p * 2)(ctypes.addressof(a), ctypes.addressof(n))
    rc, ns = timed(
        drv["cuLaunchKernel"],
        driver_function(),
        *DRIVER_GRID,
        *DRIVER_BLOCK,
        0,
        stream,
        ctypes.cast(params, c_void_pp),
        None,
    )
    ok = rc == 0
    return drec(
        "cuLaunchKernel",
        rc,
        ns,
        handle=stream or 0,
        model_ns=model.launch_ns if ok else 0,
        device_ns=model.kernel_ns if ok else 0,
    )


def driver_copy(drv: CudaLib, model: Model, dst: int, src: int, nbytes: int) -> int:
    """Synchronous device-to-device cuMemcpy."""
    rc, ns = timed(drv["cuMemcpy"], dst, src, nbytes)
    cost = model.copy_ns(nbytes) if rc == 0 else 0
    return drec("cuMemcpy", rc, ns, size=nbytes, model_ns=cost, device_ns=cost)


def driver_copy_async(
    drv: CudaLib, model: Model, dst: int, src: int, nbytes: int, *, stream: int | None
) -> int:
    rc, ns = timed(drv["cuMemcpyAsync"], dst, src, nbytes, stream)
    ok = rc == 0
    return drec(
        "cuMemcpyAsync",
        rc,
        ns,
        size=nbytes,
        handle=stream or 0,
        model_ns=model.async_ns if ok else 0,
        device_ns=model.copy_ns(nbytes) if ok else 0,
    )


def driver_stream_synchronize(drv: CudaLib, stream: int | None) -> int:
    return drec("cuStreamSynchronize", *timed(drv["cuStreamSynchronize"], stream), handle=stream or 0)


def driver_ctx_synchronize(drv: CudaLib) -> int:
    return drec("cuCtxSynchronize", *timed(drv["cuCtxSynchronize"]))


def driver_step(
    drv: CudaLib,
    model: Model,
    args: argparse.Namespace,
    i: int,
    *,
    stream: int | None,
    bufs: list[int],
) -> None:
    """One driver step: maybe a kernel, maybe a cuMemcpy, maybe a cuMemcpyAsync."""
    if i < args.driver_launches:
        driver_launch(drv, model, stream, bufs[0] if bufs else None)
    if bufs and i < args.driver_memcpys:
        driver_copy(drv, model, bufs[0], bufs[1], args.memcpy_bytes)
    if bufs and i < args.driver_async_memcpys:
        driver_copy_async(drv, model, bufs[1], bufs[0], args.memcpy_bytes, stream=stream)


def driver_copy_buffers(drv: CudaLib, model: Model, nbytes: int, out: dict[str, Any]) -> list[int]:
    """The two cuMemAlloc_v2 buffers (dst, src) the driver copies go between."""
    bufs = [p for p in (driver_alloc(drv, model, nbytes) for _ in range(2)) if p is not None]
    out["copy_buffers"]["allocated"] = len(bufs)
    out["copy_buffers"]["ptrs"] = list(bufs)
    # On a failed allocation, still make every copy asked for (on 0): the counts stay exact.
    return bufs + [0] * (2 - len(bufs))


def run_driver(drv: CudaLib, model: Model, args: argparse.Namespace) -> dict[str, Any]:
    """The driver section: one context on --device for every --driver-* flag.

    cuInit, cuDeviceGet, cuCtxCreate_v2; --driver-allocs x cuMemAlloc_v2 then as
    many cuMemFree_v2; --driver-managed-allocs x cuMemAllocManaged; cuStreamCreate
    and 2 copy buffers when needed; the launches/copies in steps; one
    cuStreamSynchronize; --driver-syncs x cuCtxSynchronize; frees;
    cuStreamDestroy_v2; cuCtxDestroy_v2.
    """
    copy_bytes = max(1, args.memcpy_bytes)
    out: dict[str, Any] = {
        "allocated": 0,
        "freed": 0,
        "context": None,
        "function": None,
        "stream": None,
        "managed_allocated": 0,
        "managed_freed": 0,
        "copy_buffers": {"bytes": copy_bytes, "allocated": 0, "freed": 0, "ptrs": []},
    }
    cu_ctx = driver_context(drv, model, args.device, args.driver_primary_context)
    if cu_ctx is None:
        return out
    out["context"] = cu_ctx
    driver_allocs(drv, model, args.driver_allocs, args.malloc_bytes, out)

    managed = [driver_alloc_managed(drv, model, args.malloc_bytes) for _ in range(args.driver_managed_allocs)]
    managed_ok = [p for p in managed if p is not None]
    out["managed_allocated"] = len(managed_ok)

    uses_stream = bool(args.driver_launches or args.driver_async_memcpys)
    stream = driver_stream_create(drv, model) if uses_stream else None
    out["stream"] = stream
    if args.driver_launches:
        out["function"] = driver_function()
    copies = max(args.driver_memcpys, args.driver_async_memcpys)
    bufs = driver_copy_buffers(drv, model, copy_bytes, out) if copies else []

    for i in range(max(args.driver_launches, copies)):
        driver_step(drv, model, args, i, stream=stream, bufs=bufs)
    if uses_stream:
        driver_stream_synchronize(drv, stream)
    for _ in range(args.driver_syncs):
        driver_ctx_synchronize(drv)

    for p in managed_ok:
        if driver_free(drv, model, p) == 0:
            out["managed_freed"] += 1
    for p in out["copy_buffers"]["ptrs"]:
        if driver_free(drv, model, p) == 0:
            out["copy_buffers"]["freed"] += 1
    if stream is not None:
        driver_stream_destroy(drv, stream)
    if args.driver_primary_context:
        drec("cuDevicePrimaryCtxRelease_v2", *timed(drv["cuDevicePrimaryCtxRelease_v2"], args.device))
    else:
        drec("cuCtxDestroy_v2", *timed(drv["cuCtxDestroy_v2"], cu_ctx))
    return out


# --------------------------------------------------------------------------
# The NCCL section (libnccl), on the main thread after the runtime and driver work.
# --------------------------------------------------------------------------

# ncclDataType_t -> bytes per element (ncclInt8=0 .. ncclBfloat16=9); others are invalid.
NCCL_DTYPE_SIZES = {0: 1, 1: 1, 2: 4, 3: 4, 4: 8, 5: 8, 6: 2, 7: 4, 8: 8, 9: 2}
NCCL_FLOAT32 = 7
NCCL_SUM = 0  # ncclRedOp_t
NCCL_ROOT = 0  # ncclBroadcast root
NCCL_SEND_BUF = ctypes.create_string_buffer(64)  # stand-in sendbuff; never read
NCCL_RECV_BUF = ctypes.create_string_buffer(64)  # stand-in recvbuff; never written


def env_rank(name: str) -> int | None:
    """Parse a rank knob the way nccl.c does (strtol base 0); None when unset or invalid."""
    raw = os.environ.get(name, "").strip()
    octal = len(raw) > 1 and raw[0] == "0" and raw[1] not in "xXbBoO"
    try:
        value = int(raw, 8) if octal else int(raw, 0)
    except ValueError:
        return None
    return value if 0 <= value <= 0x7FFFFFFF else None


@dataclass(frozen=True)
class NcclModel:
    """The SIMNCCL_* knobs (mirrors nccl.c)."""

    init_ns: int
    bytes_per_us: int
    base_ns: int
    straggler_rank: int | None
    straggler_ns: int

    @staticmethod
    def from_env() -> NcclModel:
        return NcclModel(
            init_ns=env_u64("SIMNCCL_INIT_NS", 100000),
            bytes_per_us=max(1, env_u64("SIMNCCL_BYTES_PER_US", 5000)),
            base_ns=env_u64("SIMNCCL_BASE_NS", 20000),
            straggler_rank=env_rank("SIMNCCL_STRAGGLER_RANK"),
            straggler_ns=env_u64("SIMNCCL_STRAGGLER_NS", 0),
        )

    def collective_ns(self, nbytes: int, rank: int) -> int:
        extra = self.straggler_ns if rank == self.straggler_rank else 0
        return self.base_ns + nbytes * 1000 // self.bytes_per_us + extra


@dataclass(frozen=True)
class NcclComm:
    """One communicator of the workload: its handle (None if init failed) and rank."""

    handle: int | None
    rank: int
    nranks: int

    @property
    def peer(self) -> int:
        return (self.rank + 1) % self.nranks


def wants_nccl(args: argparse.Namespace) -> bool:
    """Whether any --nccl-* count asks for libnccl calls."""
    return bool(args.nccl_ranks or args.nccl_init_all or any(getattr(args, a) for a in NCCL_OPS))


def nccl_unique_id(nccl: CudaLib) -> NcclUniqueId:
    """ncclGetUniqueId (the id is all zeros if it failed)."""
    uid = NcclUniqueId()
    drec("ncclGetUniqueId", *timed(nccl["ncclGetUniqueId"], ctypes.byref(uid)))
    return uid


def nccl_init_rank(nccl: CudaLib, model: NcclModel, uid: NcclUniqueId, nranks: int, rank: int) -> NcclComm:
    """ncclCommInitRank(&comm, nranks, uid, rank): uid goes by value."""
    comm = ctypes.c_void_p()
    rc, ns = timed(nccl["ncclCommInitRank"], ctypes.byref(comm), nranks, uid, rank)
    handle = comm.value if rc == 0 else None
    drec("ncclCommInitRank", rc, ns, kind=rank, handle=handle or 0, model_ns=model.init_ns if rc == 0 else 0)
    return NcclComm(handle=handle, rank=rank, nranks=nranks)


def nccl_init_all(nccl: CudaLib, model: NcclModel, ndev: int) -> list[int | None]:
    """ncclCommInitAll(comms, ndev, NULL); the handles (None each if it failed)."""
    comms = (ctypes.c_void_p * ndev)()
    rc, ns = timed(nccl["ncclCommInitAll"], comms, ndev, None)
    drec("ncclCommInitAll", rc, ns, size=ndev, model_ns=model.init_ns if rc == 0 else 0)
    return [c if rc == 0 else None for c in comms]


def nccl_destroy(nccl: CudaLib, handle: int | None) -> int:
    """ncclCommDestroy (of NULL when the init failed: the counts stay exact)."""
    return drec("ncclCommDestroy", *timed(nccl["ncclCommDestroy"], handle), handle=handle or 0)


def nccl_rec(api: str, rc: int, ns: int, comm: NcclComm, *, model: NcclModel, count: int, dtype: int) -> int:
    """Record a collective or point-to-point call; return its rc."""
    nbytes = count * NCCL_DTYPE_SIZES.get(dtype, 0)
    cost = model.collective_ns(nbytes, comm.rank) if rc == 0 else 0
    return drec(api, rc, ns, size=nbytes, kind=dtype, handle=comm.handle or 0, model_ns=cost)


def nccl_all_reduce(nccl: CudaLib, model: NcclModel, comm: NcclComm, count: int, dtype: int) -> int:
    send, recv = ctypes.addressof(NCCL_SEND_BUF), ctypes.addressof(NCCL_RECV_BUF)
    rc, ns = timed(nccl["ncclAllReduce"], send, recv, count, dtype, NCCL_SUM, comm.handle, None)
    return nccl_rec("ncclAllReduce", rc, ns, comm, model=model, count=count, dtype=dtype)


def nccl_all_gather(nccl: CudaLib, model: NcclModel, comm: NcclComm, count: int, dtype: int) -> int:
    send, recv = ctypes.addressof(NCCL_SEND_BUF), ctypes.addressof(NCCL_RECV_BUF)
    rc, ns = timed(nccl["ncclAllGather"], send, recv, count, dtype, comm.handle, None)
    return nccl_rec("ncclAllGather", rc, ns, comm, model=model, count=count, dtype=dtype)


def nccl_reduce_scatter(nccl: CudaLib, model: NcclModel, comm: NcclComm, count: int, dtype: int) -> int:
    send, recv = ctypes.addressof(NCCL_SEND_BUF), ctypes.addressof(NCCL_RECV_BUF)
    rc, ns = timed(nccl["ncclReduceScatter"], send, recv, count, dtype, NCCL_SUM, comm.handle, None)
    return nccl_rec("ncclReduceScatter", rc, ns, comm, model=model, count=count, dtype=dtype)


def nccl_broadcast(nccl: CudaLib, model: NcclModel, comm: NcclComm, count: int, dtype: int) -> int:
    send, recv = ctypes.addressof(NCCL_SEND_BUF), ctypes.addressof(NCCL_RECV_BUF)
    rc, ns = timed(nccl["ncclBroadcast"], send, recv, count, dtype, NCCL_ROOT, comm.handle, None)
    return nccl_rec("ncclBroadcast", rc, ns, comm, model=model, count=count, dtype=dtype)


def nccl_send(nccl: CudaLib, model: NcclModel, comm: NcclComm, count: int, dtype: int) -> int:
    send = ctypes.addressof(NCCL_SEND_BUF)
    rc, ns = timed(nccl["ncclSend"], send, count, dtype, comm.peer, comm.handle, None)
    return nccl_rec("ncclSend", rc, ns, comm, model=model, count=count, dtype=dtype)


def nccl_recv(nccl: CudaLib, model: NcclModel, comm: NcclComm, count: int, dtype: int) -> int:
    recv = ctypes.addressof(NCCL_RECV_BUF)
    rc, ns = timed(nccl["ncclRecv"], recv, count, dtype, comm.peer, comm.handle, None)
    return nccl_rec("ncclRecv", rc, ns, comm, model=model, count=count, dtype=dtype)


# The flags counting collective and point-to-point calls: args attribute -> (symbol, caller),
# in the order a step makes them.
NCCL_OPS: dict[str, tuple[str, Callable[[CudaLib, NcclModel, NcclComm, int, int], int]]] = {
    "nccl_allreduce": ("ncclAllReduce", nccl_all_reduce),
    "nccl_allgather": ("ncclAllGather", nccl_all_gather),
    "nccl_reducescatter": ("ncclReduceScatter", nccl_reduce_scatter),
    "nccl_broadcast": ("ncclBroadcast", nccl_broadcast),
    "nccl_send": ("ncclSend", nccl_send),
    "nccl_recv": ("ncclRecv", nccl_recv),
}


def nccl_step(
    nccl: CudaLib, model: NcclModel, args: argparse.Namespace, i: int, comms: list[NcclComm]
) -> None:
    """One NCCL step on comms[i % nranks]: one call of each kind with i < its count, in NCCL_OPS order."""
    comm = comms[i % len(comms)]
    for flag, (_, call) in NCCL_OPS.items():
        if i < getattr(args, flag):
            call(nccl, model, comm, args.nccl_count, args.nccl_dtype)


def run_nccl(nccl: CudaLib, model: NcclModel, args: argparse.Namespace) -> dict[str, Any]:
    """The NCCL section, one process playing every rank.

    With --nccl-ranks N: ncclGetUniqueId, N x ncclCommInitRank (ranks 0..N-1), the
    collective/p2p calls in steps; with --nccl-init-all M: ncclCommInitAll(comms, M,
    NULL) and M x ncclCommDestroy of those; then N x ncclCommDestroy (rank order).
    """
    n = args.nccl_ranks
    dtype_bytes = NCCL_DTYPE_SIZES.get(args.nccl_dtype, 0)
    out: dict[str, Any] = {
        "unique_id": None,
        "nranks": n,
        "comms": [],
        "count": args.nccl_count,
        "dtype": args.nccl_dtype,
        "dtype_bytes": dtype_bytes,
        "bytes": args.nccl_count * dtype_bytes,
        "init_all": None,
        "destroyed": 0,
        "model": model.__dict__,
    }
    comms: list[NcclComm] = []
    if n:
        uid = nccl_unique_id(nccl)
        out["unique_id"] = bytes(uid.internal[:16]).hex()
        comms = [nccl_init_rank(nccl, model, uid, n, rank) for rank in range(n)]
        out["comms"] = [c.handle for c in comms]
        steps = max(getattr(args, flag) for flag in NCCL_OPS)
        for i in range(steps):
            nccl_step(nccl, model, args, i, comms)
    if args.nccl_init_all:
        handles = nccl_init_all(nccl, model, args.nccl_init_all)
        out["init_all"] = {"ndev": args.nccl_init_all, "comms": handles}
        for h in handles:
            if nccl_destroy(nccl, h) == 0 and h is not None:
                out["destroyed"] += 1
    for c in comms:
        if nccl_destroy(nccl, c.handle) == 0 and c.handle is not None:
            out["destroyed"] += 1
    return out


# --------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------


def split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def wait_for_gate(path: str, timeout_s: float = 30.0) -> None:
    print(f"READY {os.getpid()}", flush=True)
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            print(f"workload: start gate {path!r} did not appear within {timeout_s:.0f}s", file=sys.stderr)
            sys.exit(3)
        time.sleep(0.01)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lib", default=None, help="libcudart path (default: $SIMCUDA_LIB or libcudart.so.12)")
    p.add_argument(
        "--driver-lib",
        default=None,
        help="libcuda path for the --driver-* flags (default: $SIMCUDA_DRIVER_LIB, else libcuda.so.1 "
        "next to --lib, else libcuda.so.1)",
    )
    p.add_argument("--mallocs", type=int, default=0, help="cudaMalloc calls (total over threads)")
    p.add_argument("--frees", type=int, default=0, help="cudaFree calls (capped at what was allocated)")
    p.add_argument("--launches", type=int, default=0, help="cudaLaunchKernel calls outside graph capture")
    p.add_argument("--memcpys", type=int, default=0, help="synchronous cudaMemcpy calls")
    p.add_argument("--async-memcpys", type=int, default=0, help="cudaMemcpyAsync calls")
    p.add_argument("--syncs", type=int, default=0, help="cudaStreamSynchronize calls (spread over the steps)")
    p.add_argument(
        "--device-syncs", type=int, default=0, help="cudaDeviceSynchronize calls (per thread, at the end)"
    )
    p.add_argument(
        "--memcpy2d", type=int, default=0, help="cudaMemcpy2D calls (4096-byte rows, --memcpy-bytes total)"
    )
    p.add_argument("--memcpy2d-async", type=int, default=0, help="cudaMemcpy2DAsync calls")
    p.add_argument(
        "--memcpy-peer", type=int, default=0, help="cudaMemcpyPeer calls (to the next device, if any)"
    )
    p.add_argument("--memcpy-peer-async", type=int, default=0, help="cudaMemcpyPeerAsync calls")
    p.add_argument(
        "--managed-allocs", type=int, default=0, help="cudaMallocManaged calls (freed with cudaFree)"
    )
    p.add_argument("--malloc-bytes", type=int, default=MIB, help="bytes per cudaMalloc")
    p.add_argument("--memcpy-bytes", type=int, default=MIB, help="bytes per memcpy")
    p.add_argument("--memcpy-kind", type=int, default=1, help="cudaMemcpyKind (0..4; 1 = HtoD)")
    p.add_argument(
        "--oom-bytes", type=int, default=None, help="one extra cudaMalloc of this size (expected to fail)"
    )
    p.add_argument(
        "--streams", type=int, default=1, help="streams created per thread (0 = default stream only)"
    )
    p.add_argument("--threads", type=int, default=1, help="worker threads (1 = run on the main thread)")
    p.add_argument("--graph-launches", type=int, default=0, help="cudaGraphLaunch calls (total)")
    p.add_argument("--graph-kernels", type=int, default=3, help="kernels captured into each graph")
    p.add_argument(
        "--kernel-ns", type=int, default=None, help="set every kernel's time via simcudaSetKernelTime"
    )
    p.add_argument(
        "--driver-allocs", type=int, default=0, help="cuMemAlloc_v2 (+ cuMemFree_v2) calls via libcuda"
    )
    p.add_argument(
        "--driver-launches", type=int, default=0, help="cuLaunchKernel calls on a cuStreamCreate stream"
    )
    p.add_argument("--driver-memcpys", type=int, default=0, help="device-to-device cuMemcpy calls")
    p.add_argument("--driver-async-memcpys", type=int, default=0, help="cuMemcpyAsync calls on the stream")
    p.add_argument("--driver-syncs", type=int, default=0, help="cuCtxSynchronize calls")
    p.add_argument(
        "--driver-primary-context",
        action="store_true",
        help="use the device's primary context (retain + cuCtxSetCurrent) instead of cuCtxCreate_v2",
    )
    p.add_argument(
        "--driver-managed-allocs",
        type=int,
        default=0,
        help="cuMemAllocManaged calls (freed with cuMemFree_v2)",
    )
    p.add_argument(
        "--nccl-lib",
        default=None,
        help="libnccl path for the --nccl-* flags (default: $SIMNCCL_LIB, else libnccl.so.2 next to "
        "--lib, else libnccl.so.2)",
    )
    p.add_argument(
        "--nccl-ranks",
        type=int,
        default=0,
        help="ncclCommInitRank calls: one process plays ranks 0..N-1 of one communicator",
    )
    for flag, (api, _) in NCCL_OPS.items():
        p.add_argument(
            f"--{flag.replace('_', '-')}",
            type=int,
            default=0,
            help=f"{api} calls, round-robin over the --nccl-ranks communicators",
        )
    p.add_argument(
        "--nccl-count", type=int, default=MIB, help="elements per NCCL collective/p2p call (1048576)"
    )
    p.add_argument(
        "--nccl-dtype", type=int, default=NCCL_FLOAT32, help="ncclDataType_t of those calls (7 = ncclFloat32)"
    )
    p.add_argument(
        "--nccl-init-all", type=int, default=0, help="one ncclCommInitAll of N comms (then N ncclCommDestroy)"
    )
    p.add_argument("--device", type=int, default=0, help="device passed to cudaSetDevice")
    p.add_argument("--start-gate", default=None, help="print READY <pid>, wait for FILE before any CUDA call")
    p.add_argument("--hold", type=float, default=0.0, help="seconds to sleep before exiting")
    p.add_argument("--json", default=None, help="write the summary here instead of stdout")
    args = p.parse_args(argv)
    for name in (
        "mallocs",
        "frees",
        "launches",
        "memcpys",
        "async_memcpys",
        "syncs",
        "device_syncs",
        "malloc_bytes",
        "memcpy_bytes",
        "streams",
        "graph_launches",
        "graph_kernels",
        "driver_allocs",
        "memcpy2d",
        "memcpy2d_async",
        "memcpy_peer",
        "memcpy_peer_async",
        "managed_allocs",
        "driver_launches",
        "driver_memcpys",
        "driver_async_memcpys",
        "driver_syncs",
        "driver_managed_allocs",
        "nccl_ranks",
        *NCCL_OPS,
        "nccl_count",
        "nccl_dtype",
        "nccl_init_all",
    ):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    for name in NCCL_OPS:
        if getattr(args, name) and args.nccl_ranks < 1:
            p.error(f"--{name.replace('_', '-')} needs --nccl-ranks >= 1 (the communicators it runs on)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = Model.from_env()
    lib_path = args.lib or os.environ.get("SIMCUDA_LIB") or "libcudart.so.12"
    rt = load(lib_path, RUNTIME_SIGS, "CUDA runtime")
    drv: CudaLib | None = None
    if wants_driver(args):
        drv_path = args.driver_lib or os.environ.get("SIMCUDA_DRIVER_LIB")
        if drv_path is None:
            sibling = os.path.join(os.path.dirname(lib_path), "libcuda.so.1")
            drv_path = sibling if os.path.dirname(lib_path) and os.path.exists(sibling) else "libcuda.so.1"
        drv = load(drv_path, DRIVER_SIGS, "CUDA driver")
    nccl: CudaLib | None = None
    if wants_nccl(args):
        nccl_path = args.nccl_lib or os.environ.get("SIMNCCL_LIB")
        if nccl_path is None:
            sibling = os.path.join(os.path.dirname(lib_path), "libnccl.so.2")
            nccl_path = sibling if os.path.dirname(lib_path) and os.path.exists(sibling) else "libnccl.so.2"
        nccl = load(nccl_path, NCCL_SIGS, "NCCL")

    if args.start_gate:
        wait_for_gate(args.start_gate)

    t_start = time.monotonic_ns()
    kernel_ns = dict.fromkeys(KERNELS, model.kernel_ns)
    if args.kernel_ns is not None:
        for k in KERNELS:
            t0 = time.monotonic_ns()
            rt["simcudaSetKernelTime"](kernel_addr(k), args.kernel_ns)  # returns void
            REC.record("simcudaSetKernelTime", 0, time.monotonic_ns() - t0)
            kernel_ns[k] = args.kernel_ns

    version = ctypes.c_int()
    rc, ns = timed(rt["cudaRuntimeGetVersion"], ctypes.byref(version))
    REC.record("cudaRuntimeGetVersion", rc, ns)
    count = ctypes.c_int()
    rc, ns = timed(rt["cudaGetDeviceCount"], ctypes.byref(count))
    REC.record("cudaGetDeviceCount", rc, ns)
    peer = (args.device, (args.device + 1) % count.value if count.value >= 2 else args.device)
    ctx = Ctx(rt=rt, model=model, args=args, kernel_ns=kernel_ns, peer=peer)

    t = args.threads
    shares = [
        Share(
            index=i,
            mallocs=split(args.mallocs, t, i),
            frees=split(args.frees, t, i),
            launches=split(args.launches, t, i),
            memcpys=split(args.memcpys, t, i),
            async_memcpys=split(args.async_memcpys, t, i),
            syncs=split(args.syncs, t, i),
            device_syncs=args.device_syncs,
            graph_launches=split(args.graph_launches, t, i),
            streams=args.streams,
            memcpy2ds=split(args.memcpy2d, t, i),
            memcpy2d_asyncs=split(args.memcpy2d_async, t, i),
            peer_memcpys=split(args.memcpy_peer, t, i),
            peer_async_memcpys=split(args.memcpy_peer_async, t, i),
            managed_allocs=split(args.managed_allocs, t, i),
        )
        for i in range(t)
    ]
    results = [ThreadResult(tid=0) for _ in range(t)]

    def run(i: int) -> None:
        results[i].tid = threading.get_native_id()
        try:
            worker(ctx, shares[i], results[i])
        except (ctypes.ArgumentError, OSError, TypeError, ValueError) as exc:  # keep the summary
            results[i].errors.append(repr(exc))

    if t == 1:
        run(0)
    else:
        threads = [threading.Thread(target=run, args=(i,), name=f"simcuda-worker-{i}") for i in range(t)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    driver: dict[str, Any] | None = None
    if drv is not None:
        driver = run_driver(drv, model, args)
        driver["lib"] = drv.mapped_path()

    nccl_out: dict[str, Any] | None = None
    if nccl is not None:
        nccl_out = run_nccl(nccl, NcclModel.from_env(), args)
        nccl_out["lib"] = nccl.mapped_path()

    rc, ns = timed(rt["cudaGetLastError"])
    REC.record("cudaGetLastError", rc, ns)
    last_error = rc
    elapsed = time.monotonic_ns() - t_start

    allocated = sum(r.allocated for r in results)
    freed = sum(r.freed for r in results)
    frees_requested = sum(r.frees_requested for r in results)
    summary: dict[str, Any] = {
        "pid": os.getpid(),
        "main_tid": threading.get_native_id(),
        "tids": sorted(REC.tids),
        "lib": rt.mapped_path(),
        "runtime_version": version.value,
        "device_count": count.value,
        "model": model.__dict__,
        "args": dict(vars(args)),
        "apis": {name: st.to_json() for name, st in sorted(REC.apis.items())},
        "allocations": {
            "allocated": allocated,
            "freed": freed,
            "frees_requested": frees_requested,
            "frees_skipped": sum(max(0, r.frees_requested - r.allocated) for r in results),
            "leaked": allocated - freed,
        },
        "oom": None
        if args.oom_bytes is None
        else {
            "bytes": args.oom_bytes,
            "rc": results[0].oom_rc,
            "name": None if results[0].oom_rc is None else rt["cudaGetErrorName"](results[0].oom_rc).decode(),
        },
        "graphs": {"captured_kernels": sum(r.captured_kernels for r in results)},
        "managed": {
            "allocated": sum(r.managed_allocated for r in results),
            "freed": sum(r.managed_freed for r in results),
        },
        "scratch": {
            "bytes": scratch_bytes(args),
            "allocated": sum(r.scratch_allocated for r in results),
            "freed": sum(r.scratch_freed for r in results),
        },
        "copies": {
            "memcpy2d": {
                "width": COPY2D_WIDTH,
                "pitch": COPY2D_WIDTH,
                "height": copy2d_height(args.memcpy_bytes),
                "bytes": COPY2D_WIDTH * copy2d_height(args.memcpy_bytes),
            },
            "peer": {"src_device": peer[0], "dst_device": peer[1], "bytes": args.memcpy_bytes},
        },
        "streams_created": sum(r.streams_created for r in results),
        "driver": driver,
        "nccl": nccl_out,
        "last_error": last_error,
        "threads": [
            {"tid": r.tid, "allocated": r.allocated, "freed": r.freed, "errors": r.errors} for r in results
        ],
        "totals": {
            "calls": sum(st.calls for st in REC.apis.values()),
            "model_ns": sum(st.model_ns for st in REC.apis.values()),
            "device_ns": sum(st.device_ns for st in REC.apis.values()),
            "wall_ns": sum(st.wall_ns for st in REC.apis.values()),
        },
        "elapsed_ns": elapsed,
    }
    text = json.dumps(summary, indent=2, sort_keys=False)
    if args.json and os.path.exists(args.json) and not os.path.isfile(args.json):
        # A device or pipe (/dev/null, a FIFO): write through it. Renaming over
        # it, as below, would replace /dev/null itself with a regular file.
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    elif args.json:
        tmp = f"{args.json}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        os.replace(tmp, args.json)
    else:
        print(text, flush=True)

    if args.hold > 0:
        time.sleep(args.hold)
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
