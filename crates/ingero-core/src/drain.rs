//! The drainer thread: empties the ring buffer, turns records into rows and hands
//! them to the writer in batches.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf, StackTraceMap};
use ingero_common::event::CallEvent;

use crate::{
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

/// Parses one ring-buffer record.
fn parse(record: &[u8], wall_offset_ns: i64) -> Option<EventRow> {
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

fn drain_loop(
    mut rings: Vec<RingBuf<MapData>>,
    mut stacks: StackResolver,
    writer: Writer,
    wall_offset_ns: i64,
    stop: &AtomicBool,
    stats: &DrainStats,
) -> Result<()> {
    let mut pollfds: Vec<libc::pollfd> =
        rings.iter().map(|r| libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let mut batch = Batch::with_capacity(BATCH_ROWS);
    let mut batch_started = Instant::now();
    loop {
        // Read the flag before draining, so a stop requested after the last
        // event was produced still sees that event drained.
        let stopping = stop.load(Ordering::Acquire);
        for (family, ring) in rings.iter_mut().enumerate() {
            while let Some(record) = ring.next() {
                stats.received.fetch_add(1, Ordering::Relaxed);
                let Some(mut row) = parse(&record, wall_offset_ns) else {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (stack_hash, new_stack) =
                    stacks.resolve(family, row.stack_id, py_stack_id(&record), row.pid);
                row.stack_hash = stack_hash;
                batch.stacks.extend(new_stack);
                batch.events.push(row);
                if batch.events.len() >= BATCH_ROWS {
                    writer.send(std::mem::replace(&mut batch, Batch::with_capacity(BATCH_ROWS)))?;
                    batch_started = Instant::now();
                }
            }
        }
        if !batch.events.is_empty() && (stopping || batch_started.elapsed() >= BATCH_AGE) {
            writer.send(std::mem::replace(&mut batch, Batch::with_capacity(BATCH_ROWS)))?;
            batch_started = Instant::now();
        }
        if stopping {
            break;
        }
        wait_readable(&mut pollfds)?;
        if batch.events.is_empty() {
            batch_started = Instant::now();
        }
    }
    writer.finish()
}

impl Drainer {
    pub fn spawn(
        rings: Vec<RingBuf<MapData>>,
        stack_maps: Vec<StackTraceMap<MapData>>,
        python: Option<PythonStacks>,
        writer: Writer,
        wall_offset_ns: i64,
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
