"""Finding the CUDA runtime libraries a process has mapped or is about to load."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

RUNTIME_NAME = re.compile(r"^libcudart\.so(\.\d+)*$")


class DiscoveryError(Exception):
    """A target or library that cannot be traced, worded for the user."""


def _is_runtime(path: str) -> bool:
    return RUNTIME_NAME.match(os.path.basename(path)) is not None


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


def mapped_runtime_libraries(pid: int) -> list[Path]:
    """The libcudart copies mapped by `pid`, as paths through its root (so a
    containerised process's library resolves from the host)."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except FileNotFoundError as err:
        raise DiscoveryError(f"no process with pid {pid}") from err
    except PermissionError as err:
        raise DiscoveryError(f"cannot read /proc/{pid}/maps (permission denied)") from err
    mapped = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/") and _is_runtime(fields[5]):
            mapped.append(f"/proc/{pid}/root{fields[5]}")
    return _unique_files(mapped)


def _ldconfig_paths() -> Iterator[str]:
    try:
        out = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return
    for line in out.splitlines():
        if "=>" in line:
            path = line.split("=>", 1)[1].strip()
            if _is_runtime(path):
                yield path


def _search_dirs(env: dict[str, str]) -> Iterator[str]:
    for entry in env.get("LD_LIBRARY_PATH", "").split(":"):
        if entry:
            yield entry
    yield from sorted(glob.glob("/usr/local/cuda*/lib64")) + sorted(glob.glob("/usr/local/cuda*/lib"))
    # pip's nvidia-cuda-runtime-cu12 wheel, in this interpreter's environment.
    for site in sys.path:
        yield os.path.join(site, "nvidia", "cuda_runtime", "lib")


def candidate_runtime_libraries(env: dict[str, str] | None = None) -> list[Path]:
    """libcudart copies a command started with `env` could load, most specific first."""
    env = dict(os.environ) if env is None else env
    paths: list[str] = []
    for directory in _search_dirs(env):
        paths.extend(sorted(p for p in glob.glob(os.path.join(directory, "libcudart.so*")) if _is_runtime(p)))
    paths.extend(_ldconfig_paths())
    return _unique_files(paths)


def explicit_libraries(paths: Iterable[Path]) -> list[Path]:
    """`--cuda-lib` paths, checked to exist."""
    checked = []
    for path in paths:
        if not path.is_file():
            raise DiscoveryError(f"--cuda-lib {path}: no such file")
        checked.append(path)
    return _unique_files(str(p) for p in checked)
