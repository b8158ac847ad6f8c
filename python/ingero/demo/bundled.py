"""The simulated CUDA libraries shipped in the package (built by scripts/setup.sh and
before every wheel), and the workload scripts that call them."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SIMCUDA_DIR = HERE / "simcuda"
WORKLOAD = HERE / "workload.py"
TORCH_WORKLOAD = HERE / "torch_workload.py"
# File names by probe family, as discovery names them (capture/discover.py).
# "check" exports cudaMalloc alone: `ingero check` attaches to it (see tests/simcuda/check.c).
SONAMES = {
    "runtime": "libcudart.so.12",
    "driver": "libcuda.so.1",
    "nccl": "libnccl.so.2",
    "check": "libsimcheck.so.1",
}


class NotBundled(Exception):
    """The simulated library is missing (a source checkout not set up yet)."""


def simulated_library(kind: str = "runtime") -> Path:
    """The bundled simulated library of `kind` (a key of SONAMES)."""
    path = SIMCUDA_DIR / SONAMES[kind]
    if not path.is_file():
        raise NotBundled(
            f"the simulated CUDA library {path} is missing: run scripts/setup.sh "
            "(or tests/simcuda/build.sh with SIMCUDA_LINKS=0 into that directory)"
        )
    return path
