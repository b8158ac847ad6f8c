#!/usr/bin/env bash
# Installs everything ingero needs to build and test, on a fresh Debian machine.
# Idempotent: each step checks first and says what it did; a second run is quick.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${INGERO_CACHE_DIR:-$HOME/.cache/ingero}
VENV=${INGERO_VENV:-$ROOT/.venv}
BPF_LINKER_VERSION=0.13.0
BPF_TOOLCHAIN=${INGERO_BPF_TOOLCHAIN:-ingero-bpf}
# A minimal Debian trixie with its python3.13, for the Python-frames tests
# (tests/python/test_pyframes.py finds it at the same place).
TRIXIE_ROOT=${INGERO_TRIXIE_ROOT:-$CACHE/trixie-root}
DEBIAN_MIRROR=${INGERO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Debian's rustc-web ships a prebuilt `core` for bpfel-unknown-none, so the eBPF
# crate needs no nightly and no build-std; llvm-22-dev is what bpf-linker links.
APT_PACKAGES=(rustc-web cargo-web libstd-rust-web-dev-bpf llvm-22-dev libpolly-22-dev
              libzstd-dev zlib1g-dev gcc make python3-venv)

step() { printf '==> %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

started=$(date +%s)

step "Debian packages"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "    installing: ${missing[*]}"
    $SUDO apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
else
    echo "    all present"
fi
[ -d /usr/lib/rustlib/bpfel-unknown-none ] || die "libstd-rust-web-dev-bpf did not provide /usr/lib/rustlib/bpfel-unknown-none"

step "host Rust toolchain"
command -v cargo >/dev/null || die "cargo not found on PATH"
echo "    $(cargo --version)"

step "eBPF toolchain ($BPF_TOOLCHAIN -> Debian's rustc $(/usr/bin/rustc --version | cut -d' ' -f2))"
if command -v rustup >/dev/null; then
    # aya-build runs `rustup run <toolchain> cargo build` for the eBPF crate.
    if ! rustup run "$BPF_TOOLCHAIN" rustc --version 2>/dev/null | grep -q .; then
        rustup toolchain link "$BPF_TOOLCHAIN" /usr || die "rustup toolchain link $BPF_TOOLCHAIN /usr failed"
        echo "    linked rustup toolchain $BPF_TOOLCHAIN to /usr"
    else
        echo "    present"
    fi
else
    echo "    no rustup: aya-build will use the cargo on PATH"
fi

step "bpf-linker $BPF_LINKER_VERSION (LLVM 22)"
linker=$CACHE/bpf-linker/bin/bpf-linker
if [ -x "$linker" ] && "$linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    echo "    cached at $linker"
else
    echo "    building from crates.io (about a minute)"
    LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
        cargo install --quiet --locked "bpf-linker@$BPF_LINKER_VERSION" --no-default-features \
        --features llvm-22 --root "$CACHE/bpf-linker" || die "cargo install bpf-linker failed"
fi

step "Python virtual environment ($VENV)"
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed"
    echo "    created"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip 'maturin>=1.7,<2' || die "pip install maturin failed"

step "ingero (eBPF objects + ingero._core) into the virtual environment"
export PATH="$CACHE/bpf-linker/bin:$PATH"
VIRTUAL_ENV=$VENV "$VENV/bin/maturin" develop --quiet --release --extras dev \
    || die "maturin develop failed (see the output above)"

step "simulated CUDA library (tests, and the copy the package carries for check and demo)"
bash tests/simcuda/build.sh "$ROOT/tests/simcuda/build" || die "tests/simcuda/build.sh failed"
SIMCUDA_LINKS=0 bash tests/simcuda/build.sh "$ROOT/python/ingero/demo/simcuda" || die "tests/simcuda/build.sh failed"

# Optional: the Python-frames tests also run the workload under Debian trixie's
# CPython 3.13 (this machine's Debian has only 3.11), chrooted into a minimal
# trixie root. Without it those tests skip and say why; setup goes on.
step "Debian trixie root with CPython 3.13, for the Python-frames tests ($TRIXIE_ROOT)"
if chroot "$TRIXIE_ROOT" python3.13 -c '' 2>/dev/null; then
    echo "    cached"
elif [ -n "${INGERO_NO_TRIXIE_ROOT:-}" ]; then
    echo "    skipped (INGERO_NO_TRIXIE_ROOT is set): the python3.13 tests will skip"
elif [ "$(id -u)" -ne 0 ]; then
    echo "    skipped: debootstrap and chroot need root; the python3.13 tests will skip"
else
    echo "    creating with debootstrap from $DEBIAN_MIRROR (about 30 s, 220 MB; log in $CACHE/trixie-root.log)"
    mkdir -p "$CACHE"
    rm -rf "$TRIXIE_ROOT.partial"
    if { command -v debootstrap >/dev/null || { apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap; }; } \
            >"$CACHE/trixie-root.log" 2>&1 \
        && debootstrap --variant=minbase --include=python3.13 trixie "$TRIXIE_ROOT.partial" "$DEBIAN_MIRROR" \
            >>"$CACHE/trixie-root.log" 2>&1 \
        && chroot "$TRIXIE_ROOT.partial" python3.13 -c '' >>"$CACHE/trixie-root.log" 2>&1; then
        rm -f "$TRIXIE_ROOT.partial"/var/cache/apt/archives/*.deb
        rm -rf "$TRIXIE_ROOT"
        mv "$TRIXIE_ROOT.partial" "$TRIXIE_ROOT"
        echo "    created: $(chroot "$TRIXIE_ROOT" python3.13 -VV | head -1)"
    else
        rm -rf "$TRIXIE_ROOT.partial"
        echo "    could not create it (debootstrap failed, see $CACHE/trixie-root.log): the python3.13 tests will skip"
    fi
fi

if [ "$(id -u)" -eq 0 ] && [ ! -e /sys/kernel/tracing/trace_pipe ] && [ -d /sys/kernel/tracing ]; then
    step "tracefs"
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null && echo "    mounted" || echo "    could not mount (tracepoints will be unavailable)"
fi

echo "setup done in $(( $(date +%s) - started ))s"
