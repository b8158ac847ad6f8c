//! The embedded eBPF objects and the uprobes they attach to CUDA libraries.

use std::{io, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{UProbe, uprobe::UProbeScope},
};

/// The CUDA runtime family, built from `crates/ingero-ebpf/src/bin/cuda.rs`.
static CUDA_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingero-cuda"));

/// Runtime API symbols and the entry program for each; the return program is
/// the same name with `_ret`.
const RUNTIME_PROBES: &[(&str, &str)] = &[
    ("cudaMalloc", "cuda_malloc"),
    ("cudaMallocManaged", "cuda_malloc_managed"),
    ("cudaFree", "cuda_free"),
    ("cudaLaunchKernel", "cuda_launch_kernel"),
    ("cudaMemcpy", "cuda_memcpy"),
    ("cudaMemcpyAsync", "cuda_memcpy_async"),
    ("cudaStreamSynchronize", "cuda_stream_synchronize"),
    ("cudaDeviceSynchronize", "cuda_device_synchronize"),
];

/// The loaded CUDA runtime programs and the maps user space works with.
pub struct CudaProbes {
    ebpf: Ebpf,
}

/// What attaching to one library achieved.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub library: String,
    pub symbols: Vec<&'static str>,
    pub missing: Vec<&'static str>,
}

fn permission_hint(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return true;
        }
        cause = e.source();
    }
    false
}

fn raise_memlock_limit() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones use the
    // memory cgroup, where this is a harmless no-op.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct; failure leaves the limit as it was.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

impl CudaProbes {
    /// Loads the programs into the kernel. `trace_all` records every process
    /// that calls a traced library instead of only the target pids.
    pub fn load(trace_all: bool, ringbuf_bytes: u32) -> Result<Self> {
        if CUDA_OBJECT.is_empty() {
            bail!("this build of ingero has no eBPF programs embedded (built with AYA_BUILD_SKIP)");
        }
        raise_memlock_limit();
        let trace_all = u8::from(trace_all);
        let mut ebpf = EbpfLoader::new()
            .override_global("TRACE_ALL", &trace_all, true)
            .map_max_entries("EVENTS", ringbuf_bytes)
            .load(CUDA_OBJECT)
            .map_err(|err| {
                if permission_hint(&err) {
                    anyhow!("loading eBPF programs needs root (or CAP_BPF and CAP_PERFMON): {err}")
                } else {
                    anyhow!("cannot load the eBPF programs: {err}")
                }
            })?;
        for (_, program) in RUNTIME_PROBES {
            for name in [program.to_string(), format!("{program}_ret")] {
                let probe: &mut UProbe = ebpf
                    .program_mut(&name)
                    .ok_or_else(|| anyhow!("eBPF object lacks program {name}"))?
                    .try_into()?;
                probe
                    .load()
                    .with_context(|| format!("the kernel rejected program {name}"))?;
            }
        }
        Ok(Self { ebpf })
    }

    /// Attaches every runtime probe whose symbol `library` exports. A library
    /// without any of them is an error; a few missing symbols are not.
    pub fn attach(&mut self, library: &Path) -> Result<Attachment> {
        let mut attachment = Attachment {
            library: library.display().to_string(),
            symbols: Vec::new(),
            missing: Vec::new(),
        };
        for &(symbol, program) in RUNTIME_PROBES {
            let mut attached = true;
            for name in [program.to_string(), format!("{program}_ret")] {
                let probe: &mut UProbe = self
                    .ebpf
                    .program_mut(&name)
                    .ok_or_else(|| anyhow!("eBPF object lacks program {name}"))?
                    .try_into()?;
                if probe
                    .attach(symbol, library, UProbeScope::AllProcesses)
                    .is_err()
                {
                    attached = false;
                    break;
                }
            }
            if attached {
                attachment.symbols.push(symbol);
            } else {
                attachment.missing.push(symbol);
            }
        }
        if attachment.symbols.is_empty() {
            bail!(
                "{} exports none of the CUDA runtime functions ingero traces",
                library.display()
            );
        }
        Ok(attachment)
    }

    pub fn take_targets(&mut self) -> Result<HashMap<MapData, u32, u8>> {
        let map = self
            .ebpf
            .take_map("TARGET_PIDS")
            .ok_or_else(|| anyhow!("eBPF object lacks TARGET_PIDS"))?;
        Ok(HashMap::try_from(map)?)
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow!("eBPF object lacks EVENTS"))?;
        Ok(RingBuf::try_from(map)?)
    }

    pub fn take_counters(&mut self) -> Result<PerCpuArray<MapData, u64>> {
        let map = self
            .ebpf
            .take_map("COUNTERS")
            .ok_or_else(|| anyhow!("eBPF object lacks COUNTERS"))?;
        Ok(PerCpuArray::try_from(map)?)
    }
}
