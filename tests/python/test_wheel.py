"""The wheel is the product: built once, installed into a fresh virtual
environment, it traces with every Rust and LLVM toolchain hidden from view."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CUDA_ONLY, ROOT, SIMCUDA, WORKLOAD

# Everything a build needs and a user must not: hidden by empty mounts.
TOOLCHAIN_DIRS = [
    Path.home() / ".cargo",
    Path.home() / ".rustup",
    Path.home() / ".cache" / "ingero",
    Path("/usr/lib/rustlib"),
    *Path("/usr/lib").glob("llvm-*"),
]
TOOLCHAIN_BINARIES = [Path("/usr/bin/rustc"), Path("/usr/bin/cargo")]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only the built wheel (and its PyPI deps)."""
    work = tmp_path_factory.mktemp("wheel")
    maturin = shutil.which("maturin")
    assert maturin, "maturin is installed by `make setup`"
    # The simulated CUDA libraries the wheel carries for `ingero check` and `ingero demo`.
    subprocess.run(
        ["bash", str(SIMCUDA / "build.sh"), str(ROOT / "python" / "ingero" / "demo" / "simcuda")],
        env=dict(os.environ, SIMCUDA_LINKS="0"),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [maturin, "build", "--release", "--quiet", "--out", str(work / "dist")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = (work / "dist").glob("ingero-*-abi3-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    subprocess.run(
        [str(work / "venv" / "bin" / "pip"), "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    return work / "venv"


@pytest.mark.usefixtures("privileged")
def test_wheel_traces_without_any_toolchain(installed_wheel: Path, simcuda_lib: Path, tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to hide the toolchains")
    hide = [f"mount -t tmpfs none {d}" for d in TOOLCHAIN_DIRS if d.is_dir()]
    hide += [f"mount --bind /dev/null {b}" for b in TOOLCHAIN_BINARIES if b.exists()]
    venv_bin = installed_wheel / "bin"
    db = tmp_path / "t.db"
    script = "; ".join(
        [
            "set -e",
            *hide,
            # Prove the hiding worked before trusting the result.
            "! command -v cargo && ! command -v rustc && ! command -v bpf-linker",
            "! ls /usr/lib/llvm-*/bin/llvm-config 2>/dev/null",
            f"{venv_bin}/ingero trace {' '.join(CUDA_ONLY)} --db {db} --cuda-lib {simcuda_lib} -- "
            f"{venv_bin}/python {WORKLOAD} --lib {simcuda_lib} --mallocs=3 --launches=5 --json /dev/null",
            # The front door works from the wheel alone: its own simulated libraries and workloads.
            f"{venv_bin}/ingero check",
            f"{venv_bin}/ingero demo memcpy-bottleneck --db {tmp_path / 'demo.db'}",
        ]
    )
    env = dict(os.environ, PATH=f"{venv_bin}:/usr/local/bin:/usr/bin:/bin")
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "events: received 8, stored 8, dropped 0" in proc.stdout
    assert "[ok] uprobe attach:" in proc.stdout
    assert "[1/1] memcpy-bottleneck" in proc.stdout
    assert f"ingero mcp --db {tmp_path / 'demo.db'}" in proc.stdout
