//! The embedded eBPF objects, one per probe family, and the uprobes each
//! attaches to its CUDA library.

use std::io;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TracePoint, UProbe, uprobe::UProbeScope},
};

/// The library a family of probes attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// libcudart: the runtime API and CUDA Graphs.
    Runtime,
    /// libcuda: the driver API.
    Driver,
    /// libnccl: communicators and collectives (opt-in).
    Nccl,
}

impl Library {
    pub const ALL: [Library; 3] = [Library::Runtime, Library::Driver, Library::Nccl];

    pub fn name(self) -> &'static str {
        match self {
            Library::Runtime => "runtime",
            Library::Driver => "driver",
            Library::Nccl => "nccl",
        }
    }

    /// The object built from `crates/ingero-ebpf/src/bin/*.rs`.
    fn object(self) -> &'static [u8] {
        static CUDA: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingero-cuda"));
        static DRIVER: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingero-driver"));
        static NCCL: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingero-nccl"));
        match self {
            Library::Runtime => CUDA,
            Library::Driver => DRIVER,
            Library::Nccl => NCCL,
        }
    }

    fn probes(self) -> &'static [Probe] {
        match self {
            Library::Runtime => RUNTIME_PROBES,
            Library::Driver => DRIVER_PROBES,
            Library::Nccl => NCCL_PROBES,
        }
    }
}

/// One traced function: every exported variant found is attached (the
/// per-thread-stream `_ptsz` entry points and the driver's versioned `_v2`
/// symbols are separate functions a program may call). The return program is
/// the entry program's name with `_ret`.
struct Probe {
    symbols: &'static [&'static str],
    program: &'static str,
}

const fn probe(symbols: &'static [&'static str], program: &'static str) -> Probe {
    Probe { symbols, program }
}

const RUNTIME_PROBES: &[Probe] = &[
    probe(&["cudaMalloc"], "cuda_malloc"),
    probe(&["cudaMallocManaged"], "cuda_malloc_managed"),
    probe(&["cudaFree"], "cuda_free"),
    probe(&["cudaLaunchKernel", "cudaLaunchKernel_ptsz"], "cuda_launch_kernel"),
    probe(&["cudaMemcpy", "cudaMemcpy_ptds"], "cuda_memcpy"),
    probe(&["cudaMemcpyAsync", "cudaMemcpyAsync_ptsz"], "cuda_memcpy_async"),
    probe(&["cudaMemcpy2D", "cudaMemcpy2D_ptds"], "cuda_memcpy_2d"),
    probe(&["cudaMemcpy2DAsync", "cudaMemcpy2DAsync_ptsz"], "cuda_memcpy_2d_async"),
    probe(&["cudaMemcpyPeer"], "cuda_memcpy_peer"),
    probe(&["cudaMemcpyPeerAsync"], "cuda_memcpy_peer_async"),
    probe(&["cudaStreamSynchronize", "cudaStreamSynchronize_ptsz"], "cuda_stream_synchronize"),
    probe(&["cudaDeviceSynchronize"], "cuda_device_synchronize"),
    probe(&["cudaStreamBeginCapture", "cudaStreamBeginCapture_ptsz"], "cuda_stream_begin_capture"),
    probe(&["cudaStreamEndCapture", "cudaStreamEndCapture_ptsz"], "cuda_stream_end_capture"),
    probe(&["cudaGraphInstantiate"], "cuda_graph_instantiate"),
    probe(&["cudaGraphLaunch", "cudaGraphLaunch_ptsz"], "cuda_graph_launch"),
    probe(&["cudaSetDevice"], "cuda_set_device"),
];

const DRIVER_PROBES: &[Probe] = &[
    probe(&["cuLaunchKernel", "cuLaunchKernel_ptsz"], "cu_launch_kernel"),
    probe(&["cuMemcpy", "cuMemcpy_ptds"], "cu_memcpy"),
    probe(&["cuMemcpyAsync", "cuMemcpyAsync_ptsz"], "cu_memcpy_async"),
    probe(&["cuCtxSynchronize"], "cu_ctx_synchronize"),
    probe(&["cuMemAlloc", "cuMemAlloc_v2"], "cu_mem_alloc"),
    probe(&["cuMemAllocManaged"], "cu_mem_alloc_managed"),
    // Bookkeeping for gpu_id, never stored: which device each context is on,
    // and each thread's current context.
    probe(&["cuCtxCreate", "cuCtxCreate_v2"], "cu_ctx_create"),
    probe(&["cuDevicePrimaryCtxRetain"], "cu_device_primary_ctx_retain"),
    probe(&["cuCtxSetCurrent", "cuCtxPushCurrent", "cuCtxPushCurrent_v2"], "cu_ctx_set_current"),
];

const NCCL_PROBES: &[Probe] = &[
    probe(&["ncclCommInitRank"], "nccl_comm_init_rank"),
    probe(&["ncclCommInitAll"], "nccl_comm_init_all"),
    probe(&["ncclCommDestroy"], "nccl_comm_destroy"),
    probe(&["ncclAllReduce"], "nccl_all_reduce"),
    probe(&["ncclAllGather"], "nccl_all_gather"),
    probe(&["ncclReduceScatter"], "nccl_reduce_scatter"),
    probe(&["ncclBroadcast"], "nccl_broadcast"),
    probe(&["ncclSend"], "nccl_send"),
    probe(&["ncclRecv"], "nccl_recv"),
];

/// What attaching to one library file achieved.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub library: String,
    pub kind: Library,
    /// Every symbol a probe pair now sits on.
    pub symbols: Vec<&'static str>,
    /// Traced functions with no variant in this file.
    pub missing: Vec<&'static str>,
}

/// One loaded probe family: its programs, and the maps user space works with.
pub struct ProbeFamily {
    pub library: Library,
    ebpf: Ebpf,
    /// Why children of targets are not followed, if they are not.
    pub fork_following_error: Option<String>,
}

/// Offset of `child_pid` in a sched_process_fork record, from the tracepoint's
/// format file: it differs between kernels (6.x made the comm fields dynamic).
fn fork_child_pid_offset() -> Result<u32> {
    let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| {
            std::fs::read_to_string(format!("{root}/events/sched/sched_process_fork/format")).ok()
        })
        .context("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")?;
    let line = format
        .lines()
        .find(|l| l.contains(" child_pid;"))
        .context("sched_process_fork has no child_pid field")?;
    let offset = line.split(';').find_map(|f| f.trim().strip_prefix("offset:")).context("no offset")?;
    Ok(offset.trim().parse()?)
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

/// Per-thread call slots the probes use before their hash map (see the eBPF
/// crate's CALL_SLOTS): all of them, unless `INGERO_CALL_SLOTS` asks for
/// fewer so that tests can make threads share slots.
fn call_slots() -> Result<u32> {
    const ALL: u32 = ingero_common::event::CALL_SLOTS;
    let Ok(value) = std::env::var("INGERO_CALL_SLOTS") else { return Ok(ALL) };
    match value.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && n <= ALL => Ok(n),
        _ => bail!("INGERO_CALL_SLOTS={value}: not a power of two from 1 to {ALL}"),
    }
}

/// The CUDA Graph ring: an eighth of the main one, at least 64 KiB (graph
/// calls are rare; a ring can only be a power-of-two number of pages).
fn graph_ringbuf_bytes(ringbuf_bytes: u32) -> u32 {
    (ringbuf_bytes / 8).max(64 << 10)
}

fn raise_memlock_limit() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones use the
    // memory cgroup, where this is a harmless no-op.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit struct; failure leaves the limit as it was.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

impl ProbeFamily {
    /// Loads the family's programs into the kernel. `trace_all` records every
    /// process that calls a traced library instead of only the target pids.
    pub fn load(library: Library, trace_all: bool, ringbuf_bytes: u32) -> Result<Self> {
        let object = library.object();
        if object.is_empty() {
            bail!("this build of ingero has no eBPF programs embedded (built with AYA_BUILD_SKIP)");
        }
        raise_memlock_limit();
        let fork_offset = fork_child_pid_offset();
        let child_pid_offset = *fork_offset.as_ref().unwrap_or(&0);
        let trace_all = u8::from(trace_all);
        // Wake the drainer once a quarter of the ring is waiting; otherwise it
        // polls (drain.rs), so a burst never fills the ring before it is read.
        let wakeup_bytes = u64::from(ringbuf_bytes / 4);
        let call_slot_mask = call_slots()? - 1;
        let mut ebpf = EbpfLoader::new()
            .override_global("CALL_SLOT_MASK", &call_slot_mask, true)
            .override_global("TRACE_ALL", &trace_all, true)
            .override_global("FORK_CHILD_PID_OFFSET", &child_pid_offset, true)
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .map_max_entries("EVENTS", ringbuf_bytes)
            .map_max_entries("GRAPH_EVENTS", graph_ringbuf_bytes(ringbuf_bytes))
            .load(object)
            .map_err(|err| {
                if permission_hint(&err) {
                    anyhow!("loading eBPF programs needs root (or CAP_BPF and CAP_PERFMON): {err}")
                } else {
                    anyhow!("cannot load the {} eBPF programs: {err}", library.name())
                }
            })?;
        for probe in library.probes() {
            for name in [probe.program.to_owned(), format!("{}_ret", probe.program)] {
                uprobe(&mut ebpf, &name)?
                    .load()
                    .with_context(|| format!("the kernel rejected program {name}"))?;
            }
        }
        let fork_following_error = match fork_offset {
            Ok(_) => follow_forks(&mut ebpf).err().map(|e| format!("{e:#}")),
            Err(e) => Some(format!("{e:#}")),
        };
        Ok(Self { library, ebpf, fork_following_error })
    }

    /// Attaches every probe whose symbol `path` exports. A file with none of
    /// them is an error; a few missing symbols are not.
    pub fn attach(&mut self, path: &Path) -> Result<Attachment> {
        let mut attachment = Attachment {
            library: path.display().to_string(),
            kind: self.library,
            symbols: Vec::new(),
            missing: Vec::new(),
        };
        for probe in self.library.probes() {
            let mut found = false;
            for &symbol in probe.symbols {
                if attach_pair(&mut self.ebpf, probe.program, symbol, path).is_ok() {
                    attachment.symbols.push(symbol);
                    found = true;
                }
            }
            if !found {
                attachment.missing.push(probe.symbols[0]);
            }
        }
        if attachment.symbols.is_empty() {
            bail!(
                "{} exports none of the CUDA {} functions ingero traces",
                path.display(),
                self.library.name()
            );
        }
        Ok(attachment)
    }

    pub fn take_targets(&mut self) -> Result<HashMap<MapData, u32, u8>> {
        Ok(HashMap::try_from(self.take_map("TARGET_PIDS")?)?)
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        Ok(RingBuf::try_from(self.take_map("EVENTS")?)?)
    }

    /// The CUDA Graph ring, which only the runtime family fills.
    pub fn take_graph_events(&mut self) -> Result<Option<RingBuf<MapData>>> {
        if self.library != Library::Runtime {
            return Ok(None);
        }
        Ok(Some(RingBuf::try_from(self.take_map("GRAPH_EVENTS")?)?))
    }

    pub fn take_stacks(&mut self) -> Result<aya::maps::StackTraceMap<MapData>> {
        Ok(aya::maps::StackTraceMap::try_from(self.take_map("STACKS")?)?)
    }

    /// The Python processes the probes walk.
    pub fn take_py_procs(&mut self) -> Result<HashMap<MapData, u32, ingero_common::python::PyProcess>> {
        Ok(HashMap::try_from(self.take_map("PY_PROCS")?)?)
    }

    /// The Python frames the probes captured.
    pub fn take_py_stacks(&mut self) -> Result<HashMap<MapData, u32, ingero_common::python::PyStack>> {
        Ok(HashMap::try_from(self.take_map("PY_STACKS")?)?)
    }

    pub fn take_settings(&mut self) -> Result<aya::maps::Array<MapData, u32>> {
        Ok(aya::maps::Array::try_from(self.take_map("SETTINGS")?)?)
    }

    pub fn take_counters(&mut self) -> Result<PerCpuArray<MapData, u64>> {
        Ok(PerCpuArray::try_from(self.take_map("COUNTERS")?)?)
    }

    fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf.take_map(name).ok_or_else(|| anyhow!("eBPF object lacks map {name}"))
    }
}

fn follow_forks(ebpf: &mut Ebpf) -> Result<()> {
    let program: &mut TracePoint = ebpf
        .program_mut("enrol_forked_child")
        .ok_or_else(|| anyhow!("eBPF object lacks enrol_forked_child"))?
        .try_into()?;
    program.load()?;
    program.attach("sched", "sched_process_fork")?;
    Ok(())
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    Ok(ebpf.program_mut(name).ok_or_else(|| anyhow!("eBPF object lacks program {name}"))?.try_into()?)
}

/// Attaches the entry and return programs of `program` to `symbol` in `path`.
fn attach_pair(ebpf: &mut Ebpf, program: &str, symbol: &str, path: &Path) -> Result<()> {
    let entry = uprobe(ebpf, program)?.attach(symbol, path, UProbeScope::AllProcesses)?;
    let ret = uprobe(ebpf, &format!("{program}_ret"))?.attach(symbol, path, UProbeScope::AllProcesses);
    if let Err(err) = ret {
        // An entry without its return would only fill the pairing map.
        uprobe(ebpf, program)?.detach(entry)?;
        return Err(err.into());
    }
    Ok(())
}
