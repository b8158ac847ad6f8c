"""get_check: whether this machine could trace, read from facts without attaching anything."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from ingero.capture.discover import candidate_libraries
from ingero.capture.privileges import missing_privileges
from ingero.serve.models import CheckFact, CheckResult

MIN_KERNEL = (5, 15)


def _kernel() -> CheckFact:
    release = platform.release()
    try:
        major, minor = (int(p) for p in release.split(".")[:2])
        ok: bool | None = (major, minor) >= MIN_KERNEL
    except ValueError:
        ok = None
    return CheckFact(name="kernel", ok=ok, value=release, detail="needs 5.15 or newer")


def _tracefs() -> CheckFact:
    for path in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if Path(path, "events").is_dir():
            return CheckFact(name="tracefs", ok=True, value=path)
    return CheckFact(
        name="tracefs", ok=False, value="not mounted", detail="mount -t tracefs nodev /sys/kernel/tracing"
    )


def facts() -> CheckResult:
    btf = Path("/sys/kernel/btf/vmlinux")
    missing = missing_privileges()
    found = candidate_libraries()
    result = [
        _kernel(),
        CheckFact(name="BTF", ok=btf.exists(), value=str(btf) if btf.exists() else "absent"),
        _tracefs(),
        CheckFact(
            name="privileges",
            ok=missing is None,
            value="can load eBPF" if missing is None else "cannot load eBPF",
            detail=missing or f"uid {os.geteuid()}",
        ),
    ]
    for kind, paths in found.items():
        result.append(
            CheckFact(
                name=f"{kind} libraries",
                ok=bool(paths) or None,
                value=f"{len(paths)} found",
                detail=", ".join(str(p) for p in paths[:5]),
            )
        )
    return CheckResult(facts=result)


def check_text(r: CheckResult) -> str:
    mark = {True: "PASS", False: "FAIL", None: "INFO"}
    return "\n".join(
        f"[{mark[f.ok]}] {f.name}: {f.value}" + (f" ({f.detail})" if f.detail else "") for f in r.facts
    )
