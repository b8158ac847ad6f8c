//! The drainer thread: empties the ring buffer, turns records into rows and hands
//! them to the writer in batches.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::Receiver,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf, StackTraceMap};
use ingero_common::event::CallEvent;

use crate::{
    capture::{cgroup::CgroupResolver, host::TargetEnroller, host_readers::HostRow},
    jsonl::JsonLines,
    live::LiveStats,
    store::{Batch, EventRow, Writer},
    symbolize::{PythonStacks, StackResolver, py_stack_id},
};

/// Rows per batch: large enough that each SQLite transaction amortises its
/// commit, small enough that a quiet trace still lands on disk promptly.
const BATCH_ROWS: usize = 4096;
const BATCH_AGE: Duration = Duration::from_millis(100);
/// How long events may wait in the ring when the probes do not wake the
/// drainer (they do once a quarter of the ring is used).
const POLL_TIMEOUT_MS: i32 = 10;

/// Counters the drainer keeps, readable while it runs.
#[derive(Debug, Default)]
pub struct DrainStats {
    pub received: AtomicU64,
    /// Records too short or of an unknown kind (a version mismatch, never expected).
    pub malformed: AtomicU64,
}

pub struct Drainer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    stats: Arc<DrainStats>,
}

/// What the drainer does besides storing: rows the host readers hand it,
/// the live view's counts, and the `--json` stream.
pub struct DrainExtras {
    pub host_rows: Option<Receiver<HostRow>>,
    pub live: Arc<LiveStats>,
    pub json: Option<JsonLines>,
    /// Set when tracing every CUDA process: enrols them in the host layers.
    pub enroller: Option<TargetEnroller>,
}

/// Parses one ring-buffer record.
pub(crate) fn parse_record(record: &[u8], wall_offset_ns: i64) -> Option<EventRow> {
    if record.len() < size_of::<CallEvent>() {
        return None;
    }
    // SAFETY: length checked; CallEvent is plain integers, valid for any bytes.
    let event: CallEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let h = event.header;
    Some(EventRow {
        timestamp_ns: h.timestamp_ns as i64 + wall_offset_ns,
        pid: h.pid,
        tid: h.tid,
        source: h.source,
        op: h.op,
        duration_ns: event.duration_ns as i64,
        gpu_id: event.gpu_id,
        arg0: event.arg0,
        arg1: event.arg1,
        ret_code: event.ret_code,
        cgroup_id: h.cgroup_id,
        comm: h.comm,
        stack_id: event.stack_id,
        stack_hash: 0,
    })
}

fn wait_readable(pollfds: &mut [libc::pollfd]) -> Result<()> {
    // SAFETY: a valid slice of pollfds.
    if unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, POLL_TIMEOUT_MS) } < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err).context("polling the ring buffer");
        }
    }
    Ok(())
}

/// Everything after a row is parsed: host rows merged in, cgroups named,
/// the live view and the JSON stream fed.
fn take_extras(
    batch: &mut Batch,
    first_new: usize,
    extras: &mut DrainExtras,
    cgroups: &mut CgroupResolver,
    stats: &DrainStats,
) -> Result<()> {
    if let Some(host_rows) = &extras.host_rows {
        for row in host_rows.try_iter() {
            match row {
                HostRow::Event(event) => {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    batch.events.push(event);
                }
                HostRow::Snapshot(snapshot) => {
                    extras.live.record_system(snapshot);
                    batch.snapshots.push(snapshot);
                }
            }
        }
    }
    let new = &batch.events[first_new.min(batch.events.len())..];
    for row in new {
        batch.cgroups.extend(cgroups.resolve(row.cgroup_id, row.pid));
        if let Some(enroller) = extras.enroller.as_mut() {
            enroller.saw(row.source, row.pid);
        }
    }
    extras.live.record(new);
    if let Some(json) = extras.json.as_mut() {
        for row in new {
            json.write(row)?;
        }
        json.flush()?;
    }
    Ok(())
}

fn has_rows(batch: &Batch) -> bool {
    !batch.events.is_empty() || !batch.snapshots.is_empty()
}

fn drain_loop(
    mut rings: Vec<(usize, RingBuf<MapData>)>,
    mut stacks: StackResolver,
    writer: Writer,
    wall_offset_ns: i64,
    stop: &AtomicBool,
    stats: &DrainStats,
    mut extras: DrainExtras,
) -> Result<()> {
    let mut cgroups = CgroupResolver::default();
    let mut pollfds: Vec<libc::pollfd> = rings
        .iter()
        .map(|(_, r)| libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    let mut batch = Batch::with_capacity(BATCH_ROWS);
    let mut batch_started = Instant::now();
    loop {
        // Read the flag before draining, so a stop requested after the last
        // event was produced still sees that event drained.
        let stopping = stop.load(Ordering::Acquire);
        let mut first_new = batch.events.len();
        for (family, ring) in &mut rings {
            while let Some(record) = ring.next() {
                stats.received.fetch_add(1, Ordering::Relaxed);
                let Some(mut row) = parse_record(&record, wall_offset_ns) else {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (stack_hash, new_stack) =
                    stacks.resolve(*family, row.stack_id, py_stack_id(&record), row.pid);
                row.stack_hash = stack_hash;
                batch.stacks.extend(new_stack);
                batch.events.push(row);
                if batch.events.len() >= BATCH_ROWS {
                    take_extras(&mut batch, first_new, &mut extras, &mut cgroups, stats)?;
                    writer.send(std::mem::replace(&mut batch, Batch::with_capacity(BATCH_ROWS)))?;
                    batch_started = Instant::now();
                    first_new = 0;
                }
            }
        }
        take_extras(&mut batch, first_new, &mut extras, &mut cgroups, stats)?;
        if has_rows(&batch) && (stopping || batch_started.elapsed() >= BATCH_AGE) {
            writer.send(std::mem::replace(&mut batch, Batch::with_capacity(BATCH_ROWS)))?;
            batch_started = Instant::now();
        }
        if stopping {
            break;
        }
        wait_readable(&mut pollfds)?;
        if !has_rows(&batch) {
            batch_started = Instant::now();
        }
    }
    writer.finish()
}

impl Drainer {
    /// `rings` pairs each ring buffer with the index of its family's stack
    /// maps in `stack_maps` (any other index for rings without stacks).
    pub fn spawn(
        rings: Vec<(usize, RingBuf<MapData>)>,
        stack_maps: Vec<StackTraceMap<MapData>>,
        python: Option<PythonStacks>,
        writer: Writer,
        wall_offset_ns: i64,
        extras: DrainExtras,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DrainStats::default());
        let (thread_stop, thread_stats) = (Arc::clone(&stop), Arc::clone(&stats));
        let thread = std::thread::Builder::new()
            .name("ingero-drain".into())
            .spawn(move || {
                drain_loop(
                    rings,
                    StackResolver::new(stack_maps, python),
                    writer,
                    wall_offset_ns,
                    &thread_stop,
                    &thread_stats,
                    extras,
                )
            })
            .context("cannot start the drainer thread")?;
        Ok(Self { stop, thread: Some(thread), stats })
    }

    pub fn stats(&self) -> Arc<DrainStats> {
        Arc::clone(&self.stats)
    }

    /// Drains what is left, waits for the writer to store it, and returns.
    pub fn finish(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(anyhow!("the drainer thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
