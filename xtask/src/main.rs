//! `cargo xtask ebpf [OUT_DIR]`: builds the eBPF objects exactly as the wheel
//! embeds them (through ingero-core's build script, so there is one build path),
//! copies them to OUT_DIR (default `target/ebpf`) and lists their programs, ready
//! for `bpftool prog loadall` or `llvm-objdump`.

use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// The objects ingero-core's build script leaves in its OUT_DIR.
const OBJECTS: &[&str] = &["ingero-cuda", "ingero-driver", "ingero-nccl"];

fn core_out_dir() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["build", "--release", "--package", "ingero-core", "--message-format=json"])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let stdout = child.stdout.take().context("no cargo output")?;
    let mut out_dir = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let message: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
        let is_core = message["package_id"].as_str().is_some_and(|id| id.contains("ingero-core"));
        if message["reason"] == "build-script-executed" && is_core {
            out_dir = message["out_dir"].as_str().map(PathBuf::from);
        }
    }
    if !child.wait()?.success() {
        bail!("cargo build --package ingero-core failed");
    }
    out_dir.context("cargo did not report ingero-core's build script output directory")
}

fn describe(path: &Path) -> Result<Vec<String>> {
    let data = std::fs::read(path)?;
    let file =
        object::File::parse(&*data).with_context(|| format!("{} is not an ELF object", path.display()))?;
    let mut programs = Vec::new();
    for symbol in file.symbols() {
        let Some(section) = symbol.section_index().and_then(|i| file.section_by_index(i).ok()) else {
            continue;
        };
        let kind = section.name().unwrap_or_default();
        if symbol.is_global() && matches!(kind, "uprobe" | "uretprobe" | "tracepoint" | "tp_btf") {
            programs.push(format!("{kind:<10} {}", symbol.name().unwrap_or_default()));
        }
    }
    programs.sort();
    Ok(programs)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd] if cmd == "ebpf" => build(Path::new("target/ebpf")),
        [cmd, out] if cmd == "ebpf" => build(Path::new(out)),
        _ => bail!("usage: cargo xtask ebpf [OUT_DIR]"),
    }
}

fn build(out: &Path) -> Result<()> {
    let from = core_out_dir()?;
    std::fs::create_dir_all(out)?;
    for name in OBJECTS {
        let dst = out.join(format!("{name}.o"));
        std::fs::copy(from.join(name), &dst).with_context(|| format!("copying {name}"))?;
        let programs = describe(&dst)?;
        println!("{} ({} bytes, {} programs)", dst.display(), std::fs::metadata(&dst)?.len(), programs.len());
        for program in programs {
            println!("  {program}");
        }
    }
    Ok(())
}
