//! Builds the eBPF programs and leaves them in OUT_DIR for `include_bytes_aligned!`.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};

/// Object files ingero-core embeds, one per `[[bin]]` of ingero-ebpf.
const OBJECTS: &[&str] =
    &["ingero-cuda", "ingero-driver", "ingero-nccl", "ingero-host", "ingero-io", "ingero-tcp", "ingero-net"];

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=INGERO_BPF_TOOLCHAIN");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // Lets `cargo check`/`clippy` run without the eBPF toolchain; such a
        // build refuses to trace (see CudaProbes::load).
        for name in OBJECTS {
            std::fs::write(out_dir.join(name), [])?;
        }
        return Ok(());
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let ebpf_dir = manifest.join("../ingero-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // The eBPF crate needs a compiler with the prebuilt `core` for
    // bpfel-unknown-none (Debian's rustc-web), linked into rustup under this
    // name by `make setup`; without rustup, aya-build uses the cargo on PATH.
    let toolchain = env::var("INGERO_BPF_TOOLCHAIN").unwrap_or_else(|_| "ingero-bpf".to_owned());
    prepare_child_env()?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "ingero-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context("building the eBPF programs failed (run `make setup` to install the eBPF toolchain)")
}

/// The cache `make setup` installs bpf-linker into (see scripts/setup.sh).
fn cache_dir() -> Option<PathBuf> {
    env::var_os("INGERO_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ingero")))
}

/// Sets what the nested eBPF cargo inherits: the unstable feature gates of
/// aya-ebpf and ingero-ebpf (atomic compare-and-swap), and bpf-linker on PATH when it lives only in ingero's cache.
fn prepare_child_env() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=INGERO_CACHE_DIR");
    // SAFETY: build scripts are single-threaded until aya-build spawns cargo.
    if env::var_os("RUSTC_BOOTSTRAP").is_none() {
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf,ingero_ebpf") };
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let on_path = env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file());
    if !on_path {
        let cached = cache_dir().map(|c| c.join("bpf-linker/bin")).filter(|d| d.join("bpf-linker").is_file());
        let Some(dir) = cached else {
            return Err(anyhow!("bpf-linker is not installed (run `make setup`)"));
        };
        let joined = env::join_paths(std::iter::once(dir).chain(env::split_paths(&path)))?;
        unsafe { env::set_var("PATH", joined) };
    }
    Ok(())
}
