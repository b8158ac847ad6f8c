//! One trace run: probe families loaded and attached, targets enrolled, the
//! drainer and writer running, and the counts that say whether anything was lost.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
};

use anyhow::{Result, anyhow};
use aya::maps::{Array, HashMap, IterableMap as _, MapData, PerCpuArray, RingBuf, StackTraceMap};
use ingero_common::{codes::source, event::counter};

use crate::{
    capture::{
        host::{self, Layer, LayerMaps, LayerProbes, TargetEnroller},
        host_readers::{HostReaders, Totals},
        programs::{Attachment, Library, ProbeFamily},
    },
    clock,
    drain::{DrainExtras, DrainStats, Drainer},
    jsonl::JsonLines,
    live::{LiveStats, OpLive},
    pyframes::{PythonProcesses, Watcher},
    snapshot::SnapshotRow,
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
    /// Exec/exit/fork/OOM records lost in the kernel (never expected; part of `dropped`).
    pub critical_dropped: u64,
}

/// One layer's line of the live view.
#[derive(Debug, Clone)]
pub struct LayerCounts {
    pub name: &'static str,
    pub received: u64,
    pub stored: u64,
    pub dropped: u64,
}

/// What the live view of `ingero trace` shows each second.
#[derive(Debug, Clone)]
pub struct LiveView {
    pub system: Option<SnapshotRow>,
    pub layers: Vec<LayerCounts>,
    pub ops: Vec<OpLive>,
    pub critical_dropped: u64,
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
    /// Ring buffers of the probe families (the runtime's two), each with its
    /// family's index; handed to the drainer at start.
    events: Vec<(usize, RingBuf<MapData>)>,
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
    /// Kernel-event layers (host, io, tcp, net); dropping one detaches it.
    layers: Vec<LayerProbes>,
    layer_maps: Vec<LayerMaps>,
    /// Layers that could not be loaded, worded for the user.
    layer_errors: Vec<String>,
    host_readers: Option<HostReaders>,
    live: Arc<LiveStats>,
    /// Write every event as a JSON line on stdout (`--json`).
    json: bool,
    /// Every CUDA process is traced (no targets given).
    trace_all: bool,
    /// The database and session of a started trace.
    db: Option<(PathBuf, SessionInfo)>,
}

impl Tracer {
    /// Loads the probe families of `libraries` (nothing attached yet) and the
    /// kernel-event `layers` (attached at once: tracepoints need no library).
    /// A layer that cannot load is a warning: CUDA tracing goes on without it.
    pub fn new(libraries: &[Library], trace_all: bool, ringbuf_bytes: u32, layers: &[Layer]) -> Result<Self> {
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
            // Each ring goes with its family's index, which names its stack maps.
            events.push((stacks.len(), family.take_events()?));
            events.extend(family.take_graph_events()?.map(|ring| (stacks.len(), ring)));
            stacks.push(family.take_stacks()?);
            probes.push(family);
        }
        let (mut loaded, mut layer_maps, mut layer_errors) = (Vec::new(), Vec::new(), Vec::new());
        for &layer in layers {
            match host::load(layer, ringbuf_bytes) {
                Ok((probes, maps)) => {
                    loaded.push(probes);
                    layer_maps.push(maps);
                }
                Err(err) => layer_errors.push(format!("{} events are not traced: {err:#}", layer.name())),
            }
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
            layers: loaded,
            layer_maps,
            layer_errors,
            host_readers: None,
            live: Arc::default(),
            json: false,
            trace_all,
            db: None,
        })
    }

    /// Writes every event as one JSON line on stdout, from `start` on.
    pub fn set_json(&mut self, on: bool) {
        self.json = on;
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
        warnings.extend(self.layer_errors.iter().cloned());
        warnings.extend(self.layers.iter().flat_map(|l| l.warnings.iter().cloned()));
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
        for maps in &mut self.layer_maps {
            let stale: Vec<u32> =
                maps.targets.keys().flatten().filter(|&pid| !is_live_process(pid)).collect();
            for pid in &stale {
                let _ = maps.targets.remove(pid);
            }
        }
        remaining
    }

    /// Records the calls of process `pid` in every family.
    pub fn add_target(&mut self, pid: u32) -> Result<()> {
        for maps in &mut self.maps {
            maps.targets.insert(pid, 1, 0).map_err(|e| anyhow!("cannot enrol pid {pid}: {e}"))?;
        }
        for maps in &mut self.layer_maps {
            maps.targets.insert(pid, 1, 0).map_err(|e| anyhow!("cannot enrol pid {pid}: {e}"))?;
        }
        // A running Python's interpreter is found now, not when the watcher
        // starts with the trace: its first traced calls get their Python frames.
        if let Some(Ok(mut processes)) = self.python.as_ref().map(|p| p.processes.lock()) {
            processes.examine(pid);
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
        if self.drainer.is_some() {
            return Err(anyhow!("the trace was already started"));
        }
        let conn = store::open_for_write(db)?;
        let socket = audit::Bound::bind(db)?;
        let writer = Writer::spawn(conn, session)?;
        self.writer_stats = writer.stats();
        if let Some(sender) = writer.sender() {
            self.audit = Some(socket.serve(sender)?);
        }
        let mut rings = std::mem::take(&mut self.events);
        // Kernel-event layers carry no user stacks: no family.
        rings.extend(
            self.layer_maps.iter_mut().filter_map(|m| m.events.take()).map(|ring| (usize::MAX, ring)),
        );
        let stacks = std::mem::take(&mut self.stacks);
        let python = self.python.take();
        if let (Some(python), Some(family)) = (&python, self.maps.first()) {
            let targets = HashMap::try_from(aya::maps::Map::HashMap(MapData::from_id(
                family.targets.map().info()?.id(),
            )?))?;
            self.python_watcher = Some(Watcher::spawn(Arc::clone(&python.processes), targets)?);
        }
        let wall_offset = clock::monotonic_to_wall_offset();
        let (host_rows, host_rx) = std::sync::mpsc::channel();
        let host = self.layer_maps.iter_mut().find(|m| m.layer == Layer::Host);
        let (critical, totals) = match host {
            Some(m) => (
                m.critical.take(),
                m.switch_totals
                    .take()
                    .zip(m.alloc_totals.take())
                    .map(|(switches, allocations)| Totals { switches, allocations }),
            ),
            None => (None, None),
        };
        self.host_readers = Some(HostReaders::spawn(critical, totals, wall_offset, host_rows)?);
        let extras = DrainExtras {
            host_rows: Some(host_rx),
            live: Arc::clone(&self.live),
            json: if self.json { Some(JsonLines::stdout()?) } else { None },
            enroller: if self.trace_all { Some(TargetEnroller::new(&self.layer_maps)?) } else { None },
        };
        self.db = Some((db.to_owned(), session.clone()));
        let drainer = Drainer::spawn(rings, stacks, python, writer, wall_offset, extras)?;
        self.drain_stats = drainer.stats();
        self.drainer = Some(drainer);
        Ok(())
    }

    /// A per-CPU counter, summed over CPUs and families (kernel-event layers included).
    fn kernel_counter(&self, index: u32) -> u64 {
        let sum = |c: &PerCpuArray<MapData, u64>| c.get(&index, 0).map_or(0, |v| v.iter().sum::<u64>());
        self.maps.iter().map(|m| sum(&m.counters)).sum::<u64>()
            + self.layer_maps.iter().map(|m| sum(&m.counters)).sum::<u64>()
    }

    /// Per-layer counts, per-op percentiles and the latest system snapshot.
    pub fn live(&self) -> LiveView {
        let count =
            |c: &PerCpuArray<MapData, u64>, index: u32| c.get(&index, 0).map_or(0, |v| v.iter().sum::<u64>());
        // Each layer is one source with its own ring buffer.
        let layer = |name: &'static str, source: u8, dropped: u64| LayerCounts {
            name,
            received: self.live.received(source),
            stored: self.writer_stats.stored_by_source[usize::from(source) % 16].load(Ordering::Relaxed),
            dropped,
        };
        let mut layers = Vec::new();
        for m in &self.maps {
            let (name, source) = match m.library {
                Library::Runtime => ("cuda", source::CUDA),
                Library::Driver => ("driver", source::DRIVER),
                Library::Nccl => ("nccl", source::NCCL),
            };
            layers.push(layer(name, source, count(&m.counters, counter::RINGBUF_FULL)));
            if m.library == Library::Runtime {
                layers.push(layer("graph", source::CUDA_GRAPH, count(&m.counters, counter::GRAPH_FULL)));
            }
        }
        for m in &self.layer_maps {
            let dropped =
                count(&m.counters, counter::RINGBUF_FULL) + count(&m.counters, counter::CRITICAL_FULL);
            layers.push(layer(m.layer.name(), m.layer.source(), dropped));
        }
        LiveView {
            system: self.live.system(),
            layers,
            ops: self.live.ops(),
            critical_dropped: self.kernel_counter(counter::CRITICAL_FULL),
        }
    }

    pub fn stats(&self) -> TraceStats {
        let write_error = self.writer_stats.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        TraceStats {
            received: self.drain_stats.received.load(Ordering::Relaxed),
            stored: self.writer_stats.stored.load(Ordering::Relaxed),
            aggregated: self.writer_stats.aggregated.load(Ordering::Relaxed),
            dropped: self.kernel_counter(counter::RINGBUF_FULL)
                + self.kernel_counter(counter::GRAPH_FULL)
                + self.kernel_counter(counter::CRITICAL_FULL),
            unpaired: self.kernel_counter(counter::UNPAIRED_RETURN),
            sampled_out: self.kernel_counter(counter::SAMPLED_OUT),
            malformed: self.drain_stats.malformed.load(Ordering::Relaxed),
            write_failed: self.writer_stats.failed.load(Ordering::Relaxed),
            write_error,
            critical_dropped: self.kernel_counter(counter::CRITICAL_FULL),
        }
    }

    /// Detaches the probes, drains and stores what they produced, closes the database.
    pub fn stop(&mut self) -> Result<TraceStats> {
        // Detach first: nothing produced after this point can be missed by the
        // final drain. Each uprobe removal waits for the kernel's RCU grace
        // periods, serialised (~0.1 s per probe in the test VM, far less on
        // bare metal), so a trace with many attachments takes a moment to stop.
        self.probes.clear();
        self.layers.clear();
        self.python_watcher = None;
        // The listener holds a way into the writer, which ends only once it is gone.
        self.audit = None;
        // The host readers' last rows go through the drainer: stop them first.
        if let Some(readers) = self.host_readers.take() {
            readers.finish();
        }
        if let Some(drainer) = self.drainer.take() {
            drainer.finish()?;
        }
        let stats = self.stats();
        if stats.critical_dropped > 0
            && let Some((db, session)) = &self.db
        {
            store::record_critical_drops(db, session, stats.critical_dropped)?;
        }
        Ok(stats)
    }
}
