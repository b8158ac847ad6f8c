#!/usr/bin/env bash
# Build the simulated CUDA libraries (libcudart.so.12, libcuda.so.1), the
# simulated NCCL (libnccl.so.2) and libsimcheck.so.1 (`ingero check`'s target).
# Usage: tests/simcuda/build.sh [OUT_DIR]   (default: tests/simcuda/build)
# Rebuilds a library only when a source (or this script) is newer than it;
# SIMCUDA_REBUILD=1 forces a rebuild; SIMCUDA_LINKS=0 makes no libX.so symlinks
# (a wheel cannot hold them).  Prints one line per library.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/build}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

CC="${CC:-cc}"
# -fno-ipa-icf: never fold two identical API functions (e.g. cuMemAlloc and
# cuMemAlloc_v2) into one body, which would make one symbol jump into the
# other and fire the wrong uprobe.
cflags=(-shared -fPIC -O2 -g -pthread -std=gnu11 -Wall -Wextra
        -fvisibility=hidden -fno-ipa-icf)

build() { # build <source> <soname> <linkname>
    local src="$here/$1" soname="$2" link="$3" lib="$out/$2" status="up to date"
    if [[ "${SIMCUDA_REBUILD:-0}" == 1 || ! -e "$lib" || "$src" -nt "$lib" ||
          "$here/simcuda.h" -nt "$lib" || "${BASH_SOURCE[0]}" -nt "$lib" ]]; then
        "$CC" "${cflags[@]}" -Wl,-soname,"$soname" -o "$lib.tmp.$$" "$src"
        mv -f "$lib.tmp.$$" "$lib"
        status="built"
    fi
    if [[ "${SIMCUDA_LINKS:-1}" != 0 && "$(readlink "$out/$link" 2>/dev/null)" != "$soname" ]]; then
        ln -sfn "$soname" "$out/$link.tmp.$$"
        mv -fT "$out/$link.tmp.$$" "$out/$link"
    fi
    echo "simcuda: $status $lib"
}

build cudart.c libcudart.so.12 libcudart.so
build cuda.c libcuda.so.1 libcuda.so
build nccl.c libnccl.so.2 libnccl.so
build check.c libsimcheck.so.1 libsimcheck.so
