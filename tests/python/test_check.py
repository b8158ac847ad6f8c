"""`ingero check` on the real kernel: it passes here, and fails with the right line when
tracefs is unmounted or the BPF programs cannot load (both provoked for real, in a
private mount namespace and with the capabilities dropped)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("privileged")

# Every place a kernel mounts tracefs; debugfs's copy goes with debugfs.
TRACEFS_MOUNTS = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing", "/sys/kernel/debug"]
CHECK = f"{shlex.quote(sys.executable)} -m ingero check"


def by_name(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


def run_shell(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_check_passes_and_sees_its_probes_fire() -> None:
    run = run_cli("check", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    checks = by_name(report)
    assert report["ready"] is True
    for name in ("BPF permission", "BPF programs", "uprobe attach", "tracepoint attach", "tracefs"):
        assert checks[name]["status"] == "ok", checks[name]
    # The events really came back: the sizes the test child allocated are quoted.
    assert "cudaMalloc(4096)" in checks["uprobe attach"]["value"]
    assert "cudaMalloc(8192)" in checks["tracepoint attach"]["value"]
    assert {c["status"] for c in report["checks"]} <= {"ok", "info"}

    text = run_cli("check")
    assert text.returncode == 0
    assert text.stdout.splitlines()[0].startswith("[ok] Kernel: ")
    assert "[ok] uprobe attach:" in text.stdout


def test_check_fails_with_the_tracefs_line_when_tracefs_is_unmounted() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to unmount tracefs privately")
    unmount = "; ".join(f"umount -l {m} 2>/dev/null" for m in TRACEFS_MOUNTS)
    script = f"{unmount}; test ! -d /sys/kernel/tracing/events || exit 99; {CHECK}"
    run = run_shell(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    assert run.returncode != 99, "tracefs could not be unmounted in the namespace"
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("[fail] tracefs: not mounted") for line in lines), run.stdout
    assert any(line.startswith("[fail] tracepoint attach:") for line in lines), run.stdout
    # Uprobes do not go through tracefs: that line still passes, so the failure is pinned down.
    assert any(line.startswith("[ok] uprobe attach:") for line in lines), run.stdout
    assert "recommendation: mount -t tracefs nodev /sys/kernel/tracing" in run.stdout


def test_check_fails_with_the_bpf_lines_when_the_capabilities_are_dropped() -> None:
    if shutil.which("capsh") is None:
        pytest.skip("capsh (libcap2-bin) is needed to drop capabilities")
    run = run_shell(["capsh", "--drop=cap_sys_admin,cap_bpf,cap_perfmon", "--", "-c", f"{CHECK} --json"])
    assert run.returncode == 1, run.stdout + run.stderr
    report = json.loads(run.stdout)
    checks = by_name(report)
    assert report["ready"] is False
    assert checks["BPF permission"]["status"] == "fail"
    assert checks["BPF programs"]["status"] == "fail"
    assert "refused to load" in checks["BPF programs"]["value"]
    assert "uprobe attach" not in checks
    assert all(c["recommendation"] for c in report["checks"] if c["status"] == "fail")
