"""Finding the CUDA libraries (runtime libcudart, driver libcuda) a process has
mapped or is about to load."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

RUNTIME = "runtime"
DRIVER = "driver"
NCCL = "nccl"
LIBRARY_NAMES = {
    RUNTIME: re.compile(r"^libcudart\.so(\.\d+)*$"),
    DRIVER: re.compile(r"^libcuda\.so(\.\d+)*$"),
    NCCL: re.compile(r"^libnccl\.so(\.\d+)*$"),
}
# Where the driver is installed outside the dynamic loader's cache.
DRIVER_DIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib"]


class DiscoveryError(Exception):
    """A target or library that cannot be traced, worded for the user."""


def library_kind(path: str | Path) -> str | None:
    """RUNTIME or DRIVER for a CUDA library file name, else None."""
    name = os.path.basename(str(path))
    return next((kind for kind, pattern in LIBRARY_NAMES.items() if pattern.match(name)), None)


def _unique_files(paths: Iterable[str]) -> list[Path]:
    """Existing files, one per inode: a uprobe on a file covers all its names."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    for raw in paths:
        try:
            st = os.stat(raw)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            found.append(Path(raw))
    return found


def process_exists(pid: int) -> bool:
    return pid > 0 and os.path.isdir(f"/proc/{pid}")


def mapped_file(pid: int, line: str) -> str | None:
    """A path this process can open for the file a line of /proc/PID/maps maps.

    The line names the file from our root where it is reachable from it (a
    chrooted process's files show their host path), else from the process's
    own root (a container in its mount namespace); the device and inode on
    the line tell which. The mapping itself (/proc/PID/map_files) stands in
    when neither path is that file (deleted or replaced since)."""
    fields = line.split(maxsplit=5)
    if len(fields) != 6 or not fields[5].startswith("/"):
        return None
    span, _, _, dev, inode, path = fields
    try:
        major, minor = (int(part, 16) for part in dev.split(":"))
        wanted = (major, minor, int(inode))
    except ValueError:
        return None
    found: list[tuple[str, tuple[int, int, int]]] = []
    for candidate in (path, f"/proc/{pid}/root{path}"):
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        found.append((candidate, (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)))
    # The same device and inode first; then the same inode on another device
    # number, which still is the file (btrfs subvolumes stat as devices of their own).
    for candidate, got in sorted(found, key=lambda item: item[1] != wanted):
        if got[2] == wanted[2]:
            return candidate
    mapping = f"/proc/{pid}/map_files/{span}"
    return mapping if os.path.exists(mapping) else None


def mapped_libraries(pid: int) -> dict[str, list[Path]]:
    """The CUDA libraries mapped by `pid` by kind, as paths this process can
    open (see mapped_file: a chrooted or containerised process's library
    resolves from the host)."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except FileNotFoundError as err:
        raise DiscoveryError(f"no process with pid {pid}") from err
    except PermissionError as err:
        raise DiscoveryError(f"cannot read /proc/{pid}/maps (permission denied)") from err
    mapped: dict[str, list[str]] = {kind: [] for kind in LIBRARY_NAMES}
    for line in lines:
        fields = line.split(maxsplit=5)
        kind = library_kind(fields[5]) if len(fields) == 6 else None
        path = mapped_file(pid, line) if kind else None
        if kind and path:
            mapped[kind].append(path)
    return {kind: _unique_files(paths) for kind, paths in mapped.items()}


def all_mapped_libraries() -> dict[str, list[Path]]:
    """The CUDA libraries mapped by any process now running, by kind."""
    found: dict[str, list[str]] = {kind: [] for kind in LIBRARY_NAMES}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            mapped = mapped_libraries(int(entry.name))
        except DiscoveryError:
            continue  # exited meanwhile, or not ours to read
        for kind, paths in mapped.items():
            found[kind].extend(str(p) for p in paths)
    return {kind: _unique_files(paths) for kind, paths in found.items()}


def _ldconfig_paths(kind: str) -> Iterator[str]:
    try:
        out = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return
    for line in out.splitlines():
        if "=>" in line:
            path = line.split("=>", 1)[1].strip()
            if library_kind(path) == kind:
                yield path


# Where conda keeps environments (each has its own lib/ with cudatoolkit/nccl).
CONDA_ROOTS = ["~/miniconda3", "~/anaconda3", "~/miniforge3", "~/mambaforge", "/opt/conda", "/opt/miniconda3"]


def _pip_nvidia_dirs(site_packages: str) -> Iterator[str]:
    """pip's nvidia-cuda-runtime-cu12 / nvidia-nccl-cu12 wheels in one site-packages."""
    yield os.path.join(site_packages, "nvidia", "cuda_runtime", "lib")
    yield os.path.join(site_packages, "nvidia", "nccl", "lib")


def _search_dirs(env: dict[str, str]) -> Iterator[str]:
    for entry in env.get("LD_LIBRARY_PATH", "").split(":"):
        if entry:
            yield entry
    # The command's own environments first: an active conda env or venv.
    for prefix in filter(None, [env.get("CONDA_PREFIX"), env.get("VIRTUAL_ENV")]):
        yield os.path.join(prefix, "lib")
        for site in sorted(glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages"))):
            yield from _pip_nvidia_dirs(site)
    yield from sorted(glob.glob("/usr/local/cuda*/lib64")) + sorted(glob.glob("/usr/local/cuda*/lib"))
    for site in sys.path:
        yield from _pip_nvidia_dirs(site)
    for root in map(os.path.expanduser, CONDA_ROOTS):
        yield os.path.join(root, "lib")
        yield from sorted(glob.glob(os.path.join(root, "envs", "*", "lib")))


def candidate_libraries(env: dict[str, str] | None = None) -> dict[str, list[Path]]:
    """CUDA library copies a command started with `env` could load, by kind, most
    specific first."""
    env = dict(os.environ) if env is None else env
    found: dict[str, list[Path]] = {}
    for kind in LIBRARY_NAMES:
        paths: list[str] = []
        dirs = list(_search_dirs(env)) + (DRIVER_DIRS if kind == DRIVER else [])
        for directory in dirs:
            matches = glob.glob(os.path.join(directory, "lib*.so*"))
            paths.extend(sorted(p for p in matches if library_kind(p) == kind))
        paths.extend(_ldconfig_paths(kind))
        found[kind] = _unique_files(paths)
    return found


def explicit_libraries(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """`--cuda-lib` paths by kind (a name that is not libcuda.so* is taken for a
    runtime), checked to exist."""
    checked: dict[str, list[str]] = {kind: [] for kind in LIBRARY_NAMES}
    for path in paths:
        if not path.is_file():
            raise DiscoveryError(f"--cuda-lib {path}: no such file")
        checked[library_kind(path) or RUNTIME].append(str(path))
    return {kind: _unique_files(p) for kind, p in checked.items()}
