"""Whether this process may load and attach eBPF programs."""

from __future__ import annotations

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_capabilities() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_privileges() -> str | None:
    """A one-line reason tracing cannot work, or None when it can."""
    caps = effective_capabilities()

    def has(cap: int) -> bool:
        return bool(caps & (1 << cap))

    if has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON)):
        return None
    return "tracing needs root (or the CAP_BPF and CAP_PERFMON capabilities); run it with sudo"
