"""The GPU side: NVIDIA driver, GPUs, every CUDA library copy, CUDA processes. None
of these stops tracing (the demo runs on the bundled simulated library), so they are
ok or info, never fail."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from ingero.capture.discover import DiscoveryError, candidate_libraries, mapped_libraries
from ingero.check.result import INFO, OK, Check

DRIVER_VERSION = Path("/proc/driver/nvidia/version")
GPUS_DIR = Path("/proc/driver/nvidia/gpus")
# The original Ingero's floor, for the CUDA 12 libraries it was tested with.
MIN_DRIVER = 550


def driver_version() -> str | None:
    try:
        text = DRIVER_VERSION.read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return match[1] if match else text.splitlines()[0].strip()


def nvidia_gpus() -> list[str]:
    """Model names of the GPUs the NVIDIA driver knows, by bus id."""
    found = []
    for info in sorted(GPUS_DIR.glob("*/information")):
        try:
            text = info.read_text()
        except OSError:
            continue
        match = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
        found.append(f"{match[1].strip() if match else 'unknown model'} ({info.parent.name})")
    return found


def driver() -> Check:
    version = driver_version()
    if version is None:
        return Check(
            "NVIDIA driver", INFO, "not loaded: `ingero demo` runs on the bundled simulated CUDA library"
        )
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if major and major < MIN_DRIVER:
        return Check(
            "NVIDIA driver", INFO, f"{version} (older than {MIN_DRIVER}; untested)", "upgrade the driver"
        )
    return Check("NVIDIA driver", OK, version)


def gpus() -> Check:
    found = nvidia_gpus()
    if not found:
        return Check("GPU", INFO, "none found")
    return Check("GPU", OK, "; ".join(found))


def libraries() -> Iterator[Check]:
    found = candidate_libraries()
    for kind, label in (("runtime", "CUDA runtime"), ("driver", "CUDA driver"), ("nccl", "NCCL")):
        paths = found.get(kind, [])
        if paths:
            yield Check(f"{label} libraries", OK, ", ".join(map(str, paths)))
        else:
            yield Check(
                f"{label} libraries",
                INFO,
                "none found on this machine's search paths",
                "" if kind == "nccl" else "pass --cuda-lib PATH to `ingero trace`, or set LD_LIBRARY_PATH",
            )


def cuda_processes() -> Check:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            mapped = mapped_libraries(int(entry.name))
        except DiscoveryError:
            continue
        if any(mapped.values()):
            pids.append(int(entry.name))
    if not pids:
        return Check("CUDA processes", INFO, "none running")
    shown = ", ".join(map(str, sorted(pids)[:20])) + (" ..." if len(pids) > 20 else "")
    return Check("CUDA processes", OK, f"{len(pids)}: {shown} (trace them with `ingero trace --pid`)")


def checks() -> Iterator[Check]:
    yield driver()
    yield gpus()
    yield from libraries()
    yield cuda_processes()
