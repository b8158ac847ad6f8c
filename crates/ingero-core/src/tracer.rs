//! One trace run: probe families loaded and attached, targets enrolled, the
//! drainer and writer running, and the counts that say whether anything was lost.

use std::{path::Path, sync::Arc, sync::atomic::Ordering};

use anyhow::{Result, anyhow};
use aya::maps::{Array, HashMap, IterableMap as _, MapData, PerCpuArray, RingBuf, StackTraceMap};
use ingero_common::event::counter;

use crate::{
    capture::programs::{Attachment, Library, ProbeFamily},
    clock,
    drain::{DrainStats, Drainer},
    pyframes::{PythonProcesses, Watcher},
    store::{self, SessionInfo, Writer, WriterStats, audit},
    symbolize::PythonStacks,
};

/// Where every event went: `received == stored + aggregated + write_failed` once stopped, and
/// `dropped` events never reached user space.
#[derive(Debug, Default, Clone)]
pub struct TraceStats {
    pub received: u64,
    pub stored: u64,
    /// Counted in the aggregates only (selective storage): `received ==
    /// stored + aggregated + write_failed` once stopped.
    pub aggregated: u64,
    /// Lost in the kernel: a ring buffer was full.
    pub dropped: u64,
    /// Returns with no recorded entry (the call began before tracing started).
    pub unpaired: u64,
    /// Calls skipped by 1-in-N sampling: `received + dropped + sampled_out`
    /// is every call the targets made.
    pub sampled_out: u64,
    pub malformed: u64,
    pub write_failed: u64,
    pub write_error: Option<String>,
}

/// A family's maps, kept after its programs are detached.
struct FamilyMaps {
    library: Library,
    targets: HashMap<MapData, u32, u8>,
    settings: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
}

pub struct Tracer {
    /// Dropping a family detaches its probes.
    probes: Vec<ProbeFamily>,
    maps: Vec<FamilyMaps>,
    /// Handed to the drainer at start, one of each per family, in order.
    events: Vec<RingBuf<MapData>>,
    stacks: Vec<StackTraceMap<MapData>>,
    /// Python frames: handed to the drainer at start, with a watcher that
    /// registers the targets that run Python.
    python: Option<PythonStacks>,
    python_watcher: Option<Watcher>,
    drainer: Option<Drainer>,
    /// Takes MCP tool calls into the trace while it runs.
    audit: Option<audit::Listener>,
    drain_stats: Arc<DrainStats>,
    writer_stats: Arc<WriterStats>,
}

impl Tracer {
    /// Loads the probe families of `libraries`; nothing is attached yet.
    pub fn new(libraries: &[Library], trace_all: bool, ringbuf_bytes: u32) -> Result<Self> {
        let (mut probes, mut maps, mut events, mut stacks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut py_procs, mut py_stacks) = (Vec::new(), Vec::new());
        for &library in libraries {
            let mut family = ProbeFamily::load(library, trace_all, ringbuf_bytes)?;
            py_procs.push(family.take_py_procs()?);
            py_stacks.push(family.take_py_stacks()?);
            maps.push(FamilyMaps {
                library,
                targets: family.take_targets()?,
                settings: family.take_settings()?,
                counters: family.take_counters()?,
            });
            events.push(family.take_events()?);
            stacks.push(family.take_stacks()?);
            probes.push(family);
        }
        Ok(Self {
            probes,
            maps,
            events,
            stacks,
            python: Some(PythonStacks { maps: py_stacks, processes: PythonProcesses::new(py_procs) }),
            python_watcher: None,
            drainer: None,
            audit: None,
            drain_stats: Arc::default(),
            writer_stats: Arc::default(),
        })
    }

    pub fn attach(&mut self, path: &Path, library: Library) -> Result<Attachment> {
        let family = self
            .probes
            .iter_mut()
            .find(|f| f.library == library)
            .ok_or_else(|| anyhow!("the {} probes are not loaded in this trace", library.name()))?;
        family.attach(path)
    }

    /// What does not work in this trace, worded for the user (deduplicated).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .probes
            .iter()
            .filter_map(|f| f.fork_following_error.as_ref())
            .map(|e| format!("children of traced processes will not be followed: {e}"))
            .collect();
        warnings.dedup();
        warnings
    }

    /// Removes targets that are gone or are threads (the fork tracepoint enrols
    /// every new task it cannot tell apart); returns how many remain.
    pub fn prune_targets(&mut self) -> usize {
        let is_live_process = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
                status.lines().any(|l| l.strip_prefix("Tgid:").is_some_and(|t| t.trim() == pid.to_string()))
            })
        };
        let mut remaining = 0;
        for maps in &mut self.maps {
            let stale: Vec<u32> =
                maps.targets.keys().flatten().filter(|&pid| !is_live_process(pid)).collect();
            for pid in &stale {
                let _ = maps.targets.remove(pid);
            }
            remaining = maps.targets.keys().count();
        }
        remaining
    }

    /// Records the calls of process `pid` in every family.
    pub fn add_target(&mut self, pid: u32) -> Result<()> {
        for maps in &mut self.maps {
            maps.targets.insert(pid, 1, 0).map_err(|e| anyhow!("cannot enrol pid {pid}: {e}"))?;
        }
        Ok(())
    }

    /// Records 1 call in `rate` (1: every call) of the runtime and driver
    /// APIs; NCCL collectives are rare and always kept.
    pub fn set_sampling_rate(&mut self, rate: u32) -> Result<()> {
        for maps in self.maps.iter_mut().filter(|m| m.library != Library::Nccl) {
            maps.settings.set(0, rate.max(1), 0).map_err(|e| anyhow!("cannot set the sampling rate: {e}"))?;
        }
        Ok(())
    }

    /// Captures the caller's user stack at every traced call (on by default).
    pub fn set_capture_stacks(&mut self, on: bool) -> Result<()> {
        for maps in &mut self.maps {
            maps.settings
                .set(1, u32::from(on), 0)
                .map_err(|e| anyhow!("cannot switch stack capture: {e}"))?;
        }
        Ok(())
    }

    /// Opens the database and starts draining into it.
    pub fn start(&mut self, db: &Path, session: &SessionInfo) -> Result<()> {
        if self.events.is_empty() {
            return Err(anyhow!("the trace was already started"));
        }
        let conn = store::open_for_write(db)?;
        let socket = audit::Bound::bind(db)?;
        let writer = Writer::spawn(conn, session)?;
        self.writer_stats = writer.stats();
        if let Some(sender) = writer.sender() {
            self.audit = Some(socket.serve(sender)?);
        }
        let rings = std::mem::take(&mut self.events);
        let stacks = std::mem::take(&mut self.stacks);
        let python = self.python.take();
        if let (Some(python), Some(family)) = (&python, self.maps.first()) {
            let targets = HashMap::try_from(aya::maps::Map::HashMap(MapData::from_id(
                family.targets.map().info()?.id(),
            )?))?;
            self.python_watcher = Some(Watcher::spawn(Arc::clone(&python.processes), targets)?);
        }
        let drainer = Drainer::spawn(rings, stacks, python, writer, clock::monotonic_to_wall_offset())?;
        self.drain_stats = drainer.stats();
        self.drainer = Some(drainer);
        Ok(())
    }

    /// A per-CPU counter, summed over CPUs and families.
    fn kernel_counter(&self, index: u32) -> u64 {
        self.maps.iter().map(|m| m.counters.get(&index, 0).map_or(0, |v| v.iter().sum::<u64>())).sum()
    }

    pub fn stats(&self) -> TraceStats {
        let write_error = self.writer_stats.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        TraceStats {
            received: self.drain_stats.received.load(Ordering::Relaxed),
            stored: self.writer_stats.stored.load(Ordering::Relaxed),
            aggregated: self.writer_stats.aggregated.load(Ordering::Relaxed),
            dropped: self.kernel_counter(counter::RINGBUF_FULL),
            unpaired: self.kernel_counter(counter::UNPAIRED_RETURN),
            sampled_out: self.kernel_counter(counter::SAMPLED_OUT),
            malformed: self.drain_stats.malformed.load(Ordering::Relaxed),
            write_failed: self.writer_stats.failed.load(Ordering::Relaxed),
            write_error,
        }
    }

    /// Detaches the probes, drains and stores what they produced, closes the database.
    pub fn stop(&mut self) -> Result<TraceStats> {
        // Detach first: nothing produced after this point can be missed by the
        // final drain. Each uprobe removal waits for the kernel's RCU grace
        // periods, serialised (~0.1 s per probe in the test VM, far less on
        // bare metal), so a trace with many attachments takes a moment to stop.
        self.probes.clear();
        self.python_watcher = None;
        // The listener holds a way into the writer, which ends only once it is gone.
        self.audit = None;
        if let Some(drainer) = self.drainer.take() {
            drainer.finish()?;
        }
        Ok(self.stats())
    }
}
