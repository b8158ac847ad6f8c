"""Kernel readiness: version, BTF, tracefs, ptrace scope."""

from __future__ import annotations

import platform
import re
from collections.abc import Iterator
from pathlib import Path

from ingero.check.result import FAIL, INFO, OK, Check

# BPF ring buffers (every probe family's event channel) arrived in 5.8.
MIN_KERNEL = (5, 8)
TESTED_KERNEL = (5, 15)
BTF = Path("/sys/kernel/btf/vmlinux")
TRACEFS_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
PTRACE_SCOPE = Path("/proc/sys/kernel/yama/ptrace_scope")
PTRACE_MEANINGS = {
    "0": "classic: any process of the same user",
    "1": "restricted: only descendants",
    "2": "admin-only: CAP_SYS_PTRACE",
    "3": "no attach at all",
}


def kernel_version(release: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match[1]), int(match[2])) if match else None


def kernel() -> Check:
    release = platform.release()
    version = kernel_version(release)
    if version is None:
        return Check("Kernel", INFO, f"{release} (version not recognised)")
    if version < MIN_KERNEL:
        return Check(
            "Kernel", FAIL, f"{release}: BPF ring buffers need 5.8 or newer", "upgrade to a 5.15+ kernel"
        )
    if version < TESTED_KERNEL:
        return Check("Kernel", INFO, f"{release} (5.15 or newer is what ingero is tested on)")
    return Check("Kernel", OK, release)


def btf() -> Check:
    if BTF.is_file():
        return Check("BTF", OK, str(BTF))
    return Check(
        "BTF",
        INFO,
        f"{BTF} not found: CUDA uprobes work without it, kernel-structure probes may not",
        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (the default on current distributions)",
    )


def tracefs_root() -> Path | None:
    return next((d for d in TRACEFS_DIRS if (d / "events").is_dir()), None)


def tracefs() -> Check:
    root = tracefs_root()
    if root is not None:
        return Check("tracefs", OK, str(root))
    return Check(
        "tracefs",
        FAIL,
        "not mounted: tracepoints (following a traced command's children) cannot attach",
        "mount -t tracefs nodev /sys/kernel/tracing",
    )


def ptrace_scope() -> Check:
    try:
        value = PTRACE_SCOPE.read_text().strip()
    except OSError:
        return Check("ptrace scope", INFO, "no Yama LSM (no ptrace restriction)")
    meaning = PTRACE_MEANINGS.get(value, "unknown")
    return Check("ptrace scope", INFO, f"{value} ({meaning}); ingero reads /proc as root either way")


def checks() -> Iterator[Check]:
    yield kernel()
    yield btf()
    yield tracefs()
    yield ptrace_scope()


__all__ = ["checks", "kernel_version", "tracefs_root"]
