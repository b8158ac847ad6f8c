//! The kernel-event families: host (scheduler, page allocator, OOM, process
//! lifecycle), block I/O, TCP retransmits and socket syscalls. Tracepoints
//! only; each layer is its own object with its own ring buffer, so a flood in
//! one never costs another its events, and drops are counted per layer.

use std::os::fd::AsFd as _;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, IterableMap as _, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use ingero_common::codes::source;

use super::btf;

/// A kernel-event layer, named as in `--no-io` / `--no-tcp` / `--no-net`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Host,
    Io,
    Tcp,
    Net,
}

/// A program and the tracepoint it attaches to (`category` None: a raw
/// tracepoint, which hands the program the kernel's own arguments).
struct Program {
    name: &'static str,
    category: Option<&'static str>,
    event: &'static str,
}

const fn tp(name: &'static str, category: &'static str, event: &'static str) -> Program {
    Program { name, category: Some(category), event }
}

/// A global the loader sets to a tracepoint field's offset.
struct FieldOffset {
    global: &'static str,
    category: &'static str,
    event: &'static str,
    field: &'static str,
}

const fn at(
    global: &'static str,
    category: &'static str,
    event: &'static str,
    field: &'static str,
) -> FieldOffset {
    FieldOffset { global, category, event, field }
}

const HOST_PROGRAMS: &[Program] = &[
    tp("sched_switch", "sched", "sched_switch"),
    tp("sched_wakeup", "sched", "sched_wakeup"),
    tp("mm_page_alloc", "kmem", "mm_page_alloc"),
    tp("oom_mark_victim", "oom", "mark_victim"),
    tp("process_exec", "sched", "sched_process_exec"),
    tp("process_exit", "sched", "sched_process_exit"),
    Program { name: "process_fork", category: None, event: "sched_process_fork" },
];

const HOST_FIELDS: &[FieldOffset] = &[
    at("SWITCH_PREV_PID", "sched", "sched_switch", "prev_pid"),
    at("SWITCH_NEXT_PID", "sched", "sched_switch", "next_pid"),
    at("SWITCH_NEXT_COMM", "sched", "sched_switch", "next_comm"),
    at("WAKEUP_PID", "sched", "sched_wakeup", "pid"),
    at("PAGE_ALLOC_ORDER", "kmem", "mm_page_alloc", "order"),
    at("VICTIM_PID", "oom", "mark_victim", "pid"),
    at("VICTIM_COMM", "oom", "mark_victim", "comm"),
    at("EXIT_GROUP_DEAD", "sched", "sched_process_exit", "group_dead"),
];

const IO_PROGRAMS: &[Program] =
    &[tp("block_rq_issue", "block", "block_rq_issue"), tp("block_rq_complete", "block", "block_rq_complete")];

const IO_FIELDS: &[FieldOffset] = &[
    at("ISSUE_DEV", "block", "block_rq_issue", "dev"),
    at("ISSUE_SECTOR", "block", "block_rq_issue", "sector"),
    at("ISSUE_NR_SECTOR", "block", "block_rq_issue", "nr_sector"),
    at("ISSUE_RWBS", "block", "block_rq_issue", "rwbs"),
    at("COMPLETE_DEV", "block", "block_rq_complete", "dev"),
    at("COMPLETE_SECTOR", "block", "block_rq_complete", "sector"),
    at("COMPLETE_ERROR", "block", "block_rq_complete", "error"),
];

const TCP_PROGRAMS: &[Program] = &[tp("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb")];

const TCP_FIELDS: &[FieldOffset] = &[
    at("RETRANSMIT_SPORT", "tcp", "tcp_retransmit_skb", "sport"),
    at("RETRANSMIT_DPORT", "tcp", "tcp_retransmit_skb", "dport"),
    at("RETRANSMIT_FAMILY", "tcp", "tcp_retransmit_skb", "family"),
    at("RETRANSMIT_SADDR", "tcp", "tcp_retransmit_skb", "saddr"),
    at("RETRANSMIT_DADDR", "tcp", "tcp_retransmit_skb", "daddr"),
    at("RETRANSMIT_SADDR_V6", "tcp", "tcp_retransmit_skb", "saddr_v6"),
    at("RETRANSMIT_DADDR_V6", "tcp", "tcp_retransmit_skb", "daddr_v6"),
    at("RETRANSMIT_STATE", "tcp", "tcp_retransmit_skb", "state"),
];

const NET_PROGRAMS: &[Program] = &[
    tp("sys_enter_sendto", "syscalls", "sys_enter_sendto"),
    tp("sys_exit_sendto", "syscalls", "sys_exit_sendto"),
    tp("sys_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    tp("sys_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
    tp("enrol_forked_child", "sched", "sched_process_fork"),
];

const NET_FIELDS: &[FieldOffset] = &[
    at("SENDTO_FD", "syscalls", "sys_enter_sendto", "fd"),
    at("RECVFROM_FD", "syscalls", "sys_enter_recvfrom", "fd"),
    at("SYSCALL_RET", "syscalls", "sys_exit_sendto", "ret"),
    at("FORK_CHILD_PID_OFFSET", "sched", "sched_process_fork", "child_pid"),
];

/// The critical ring's size: exec/exit/fork/OOM records (88 bytes) are rare,
/// and their reader never waits on anything, so 2 MiB is seconds of a fork storm.
pub const CRITICAL_RINGBUF_BYTES: u32 = 2 << 20;

impl Layer {
    pub const ALL: [Layer; 4] = [Layer::Host, Layer::Io, Layer::Tcp, Layer::Net];

    pub fn name(self) -> &'static str {
        match self {
            Layer::Host => "host",
            Layer::Io => "io",
            Layer::Tcp => "tcp",
            Layer::Net => "net",
        }
    }

    /// The `events.source` of what this layer records.
    pub fn source(self) -> u8 {
        match self {
            Layer::Host => source::HOST,
            Layer::Io => source::IO,
            Layer::Tcp => source::TCP,
            Layer::Net => source::NET,
        }
    }

    fn object(self) -> &'static [u8] {
        static HOST: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingero-host"));
        static IO: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingero-io"));
        static TCP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingero-tcp"));
        static NET: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingero-net"));
        match self {
            Layer::Host => HOST,
            Layer::Io => IO,
            Layer::Tcp => TCP,
            Layer::Net => NET,
        }
    }

    fn programs(self) -> &'static [Program] {
        match self {
            Layer::Host => HOST_PROGRAMS,
            Layer::Io => IO_PROGRAMS,
            Layer::Tcp => TCP_PROGRAMS,
            Layer::Net => NET_PROGRAMS,
        }
    }

    fn fields(self) -> &'static [FieldOffset] {
        match self {
            Layer::Host => HOST_FIELDS,
            Layer::Io => IO_FIELDS,
            Layer::Tcp => TCP_FIELDS,
            Layer::Net => NET_FIELDS,
        }
    }

    /// Ring size: the host layer's follows `--ringbuf-size`; the others see
    /// far fewer events (the original's sizes).
    fn ringbuf_bytes(self, requested: u32) -> u32 {
        match self {
            Layer::Host => requested,
            Layer::Io | Layer::Net => requested.min(1 << 20),
            Layer::Tcp => requested.min(256 << 10),
        }
    }
}

/// Offset of `field` in the records of tracepoint `category/event`, from its
/// format file; None if the tracepoint or the field does not exist here.
pub fn tracepoint_field_offset(category: &str, event: &str, field: &str) -> Option<u32> {
    let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| std::fs::read_to_string(format!("{root}/events/{category}/{event}/format")).ok())?;
    format.lines().find_map(|line| {
        let mut parts = line.split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        // "char next_comm[16]" / "pid_t next_pid" / "__data_loc char[] comm"
        let name = declaration.rsplit(' ').next()?.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:")).and_then(|o| o.trim().parse().ok())
    })
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// One loaded layer: its programs stay attached while this lives.
pub struct LayerProbes {
    pub layer: Layer,
    /// Dropping it detaches the programs.
    _ebpf: Ebpf,
    /// Programs that could not be attached, worded for the user.
    pub warnings: Vec<String>,
}

/// The maps user space keeps working with, after the programs are detached.
pub struct LayerMaps {
    pub layer: Layer,
    pub targets: HashMap<MapData, u32, u8>,
    pub counters: PerCpuArray<MapData, u64>,
    pub events: Option<RingBuf<MapData>>,
    /// Host layer only: exec/exit/fork/OOM.
    pub critical: Option<RingBuf<MapData>>,
    /// Host layer only: switches and page allocations of untraced processes.
    pub switch_totals: Option<PerCpuHashMap<MapData, u64, [u64; 2]>>,
    pub alloc_totals: Option<PerCpuHashMap<MapData, u32, [u64; 2]>>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf.take_map(name).ok_or_else(|| anyhow!("eBPF object lacks map {name}"))?;
    Ok(T::try_from(map)?)
}

/// Loads and attaches `layer`. Tracepoints this kernel lacks become warnings;
/// a layer none of whose programs attach is an error.
pub fn load(layer: Layer, ringbuf_bytes: u32) -> Result<(LayerProbes, LayerMaps)> {
    let object = layer.object();
    if object.is_empty() {
        bail!("this build of ingero has no eBPF programs embedded (built with AYA_BUILD_SKIP)");
    }
    let ring = layer.ringbuf_bytes(ringbuf_bytes);
    let wakeup_bytes = u64::from(ring / 4);
    let critical_wakeup = u64::from(CRITICAL_RINGBUF_BYTES / 8);
    let offsets: Vec<(&str, u32)> = layer
        .fields()
        .iter()
        .map(|f| (f.global, tracepoint_field_offset(f.category, f.event, f.field).unwrap_or(0)))
        .collect();
    let task = if layer == Layer::Host {
        btf::kernel_member_offsets("task_struct", &["pid", "tgid", "exit_code"])
    } else {
        Ok(Vec::new())
    };
    let mut warnings = Vec::new();
    let task_offsets = match &task {
        Ok(found) => found.iter().map(|o| o.unwrap_or(0)).collect(),
        Err(err) => {
            warnings.push(format!("fork events and exit codes are unavailable: {err:#}"));
            vec![0, 0, 0]
        }
    };
    let page = page_size();
    let mut loader = EbpfLoader::new();
    loader.override_global("WAKEUP_BYTES", &wakeup_bytes, true).map_max_entries("EVENTS", ring);
    for (global, offset) in &offsets {
        loader.override_global(global, offset, true);
    }
    if layer == Layer::Host {
        loader
            .override_global("CRITICAL_WAKEUP_BYTES", &critical_wakeup, true)
            .override_global("PAGE_SIZE", &page, true)
            .override_global("TASK_PID", &task_offsets[0], true)
            .override_global("TASK_TGID", &task_offsets[1], true)
            .override_global("TASK_EXIT_CODE", &task_offsets[2], true)
            .map_max_entries("CRITICAL", CRITICAL_RINGBUF_BYTES);
    }
    let mut ebpf = loader
        .load(object)
        .map_err(|err| anyhow!("cannot load the {} eBPF programs: {err}", layer.name()))?;
    let mut attached = 0;
    for program in layer.programs() {
        match attach(&mut ebpf, program) {
            Ok(()) => attached += 1,
            Err(err) => {
                warnings.push(format!("{} layer: {} is not traced: {err:#}", layer.name(), program.event))
            }
        }
    }
    if attached == 0 {
        bail!("none of the {} tracepoints could be attached: {}", layer.name(), warnings.join("; "));
    }
    let host = layer == Layer::Host;
    let maps = LayerMaps {
        layer,
        targets: take(&mut ebpf, "TARGET_PIDS")?,
        counters: take(&mut ebpf, "COUNTERS")?,
        events: Some(take(&mut ebpf, "EVENTS")?),
        critical: if host { Some(take(&mut ebpf, "CRITICAL")?) } else { None },
        switch_totals: if host { Some(take(&mut ebpf, "SWITCH_TOTALS")?) } else { None },
        alloc_totals: if host { Some(take(&mut ebpf, "ALLOC_TOTALS")?) } else { None },
    };
    Ok((LayerProbes { layer, _ebpf: ebpf, warnings }, maps))
}

/// Enrols, in the kernel-event layers, every process seen making CUDA calls
/// when the trace follows every CUDA process (no `--pid`, no command): their
/// scheduling, lifecycle and sockets are then recorded like a target's.
pub struct TargetEnroller {
    maps: Vec<HashMap<MapData, u32, u8>>,
    seen: std::collections::HashSet<u32>,
}

impl TargetEnroller {
    /// Second handles on the layers' target maps, for the drainer thread.
    pub fn new(layers: &[LayerMaps]) -> Result<Self> {
        let mut maps = Vec::new();
        for layer in layers.iter().filter(|l| matches!(l.layer, Layer::Host | Layer::Net)) {
            let fd = layer.targets.map().fd().as_fd().try_clone_to_owned()?;
            maps.push(HashMap::try_from(aya::maps::Map::HashMap(MapData::from_fd(fd)?))?);
        }
        Ok(Self { maps, seen: std::collections::HashSet::new() })
    }

    /// Enrols the process of an event from a CUDA library, once.
    pub fn saw(&mut self, source_id: u8, pid: u32) {
        let from_cuda =
            matches!(source_id, source::CUDA | source::DRIVER | source::CUDA_GRAPH | source::NCCL);
        if from_cuda && self.seen.insert(pid) {
            for map in &mut self.maps {
                let _ = map.insert(pid, 1, 0);
            }
        }
    }
}

fn attach(ebpf: &mut Ebpf, program: &Program) -> Result<()> {
    let prog = ebpf.program_mut(program.name).ok_or_else(|| anyhow!("eBPF object lacks {}", program.name))?;
    match program.category {
        Some(category) => {
            let tp: &mut TracePoint = prog.try_into()?;
            tp.load().with_context(|| format!("the kernel rejected program {}", program.name))?;
            tp.attach(category, program.event)?;
        }
        None => {
            let raw: &mut RawTracePoint = prog.try_into()?;
            raw.load().with_context(|| format!("the kernel rejected program {}", program.name))?;
            raw.attach(program.event)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offsets_are_read_from_the_format_files() {
        if tracepoint_field_offset("sched", "sched_switch", "prev_pid").is_none() {
            return; // tracefs not mounted here
        }
        let prev = tracepoint_field_offset("sched", "sched_switch", "prev_comm").unwrap();
        let prev_pid = tracepoint_field_offset("sched", "sched_switch", "prev_pid").unwrap();
        assert_eq!(prev_pid, prev + 16, "prev_pid follows the 16-byte prev_comm");
        assert_eq!(tracepoint_field_offset("sched", "sched_switch", "no_such_field"), None);
        assert_eq!(tracepoint_field_offset("sched", "no_such_event", "pid"), None);
    }
}
