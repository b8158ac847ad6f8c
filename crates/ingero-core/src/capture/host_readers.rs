//! The host layer's own readers, beside the drainer: one empties the critical
//! ring (exec/exit/fork/OOM) and never waits on anything else, so those
//! records cannot be lost to a slow disk or a flooded layer; the other, once a
//! second, turns the in-kernel totals of untraced processes into summary rows
//! and takes the system snapshot.

use std::{
    collections::HashMap as StdHashMap,
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::Sender,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, PerCpuHashMap, RingBuf};
use ingero_common::{
    codes::{host_op, source},
    event::COMM_LEN,
};

use crate::{clock, drain::parse_record, snapshot::Sampler, snapshot::SnapshotRow, store::EventRow};

/// What the host readers hand the drainer, which merges it into its batches.
#[derive(Debug)]
pub enum HostRow {
    Event(EventRow),
    Snapshot(SnapshotRow),
}

/// How often the untraced totals become summary rows, and snapshots are taken.
pub const TICK: Duration = Duration::from_secs(1);
const CRITICAL_POLL_MS: i32 = 10;

pub struct HostReaders {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The untraced-process totals of the host layer.
pub struct Totals {
    pub switches: PerCpuHashMap<MapData, u64, [u64; 2]>,
    pub allocations: PerCpuHashMap<MapData, u32, [u64; 2]>,
}

impl HostReaders {
    /// Starts the critical reader (if the host layer is loaded) and the ticker.
    pub fn spawn(
        critical: Option<RingBuf<MapData>>,
        totals: Option<Totals>,
        wall_offset_ns: i64,
        rows: Sender<HostRow>,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        if let Some(ring) = critical {
            let (stop, rows) = (Arc::clone(&stop), rows.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("ingero-critical".into())
                    .spawn(move || read_critical(ring, wall_offset_ns, &stop, &rows))
                    .context("cannot start the critical-event reader")?,
            );
        }
        let stop_ticker = Arc::clone(&stop);
        threads.push(
            std::thread::Builder::new()
                .name("ingero-host-tick".into())
                .spawn(move || tick(totals, &stop_ticker, &rows))
                .context("cannot start the host ticker")?,
        );
        Ok(Self { stop, threads })
    }

    /// Reads what is left, then stops: call after the programs are detached.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for HostReaders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn read_critical(mut ring: RingBuf<MapData>, wall_offset_ns: i64, stop: &AtomicBool, rows: &Sender<HostRow>) {
    let mut pollfd = libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    loop {
        let stopping = stop.load(Ordering::Acquire);
        while let Some(record) = ring.next() {
            // The channel is unbounded: this thread never waits on the writer.
            if let Some(row) = parse_record(&record, wall_offset_ns) {
                let _ = rows.send(HostRow::Event(row));
            }
        }
        if stopping {
            return;
        }
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pollfd, 1, CRITICAL_POLL_MS) };
    }
}

fn tick(mut totals: Option<Totals>, stop: &AtomicBool, rows: &Sender<HostRow>) {
    let mut sampler = Sampler::default();
    let mut names = ProcessNames::default();
    let mut next = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if stopping || Instant::now() >= next {
            let now = clock::wall_now_ns();
            if let Some(totals) = totals.as_mut() {
                for row in summary_rows(totals, now, &mut names) {
                    let _ = rows.send(HostRow::Event(row));
                }
            }
            if let Some(snapshot) = sampler.sample(now) {
                let _ = rows.send(HostRow::Snapshot(snapshot));
            }
            next += TICK;
        }
        if stopping {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Process names for summary rows, read once per pid from /proc.
#[derive(Default)]
struct ProcessNames {
    known: StdHashMap<u32, [u8; COMM_LEN]>,
}

impl ProcessNames {
    fn comm(&mut self, pid: u32) -> [u8; COMM_LEN] {
        if self.known.len() > 65536 {
            self.known.clear();
        }
        *self.known.entry(pid).or_insert_with(|| {
            let mut comm = [0u8; COMM_LEN];
            if let Ok(name) = std::fs::read(format!("/proc/{pid}/comm")) {
                let name = name.strip_suffix(b"\n").unwrap_or(&name);
                let n = name.len().min(COMM_LEN - 1);
                comm[..n].copy_from_slice(&name[..n]);
            }
            comm
        })
    }
}

fn summary(
    timestamp_ns: i64,
    pid: u32,
    tid: u32,
    op: u8,
    arg0: u64,
    arg1: u64,
    comm: [u8; COMM_LEN],
) -> EventRow {
    EventRow {
        timestamp_ns,
        pid,
        tid,
        source: source::HOST,
        op,
        duration_ns: 0,
        gpu_id: 0,
        arg0,
        arg1,
        ret_code: 0,
        cgroup_id: 0,
        comm,
        stack_id: -1,
        stack_hash: 0,
    }
}

/// Empties both totals maps into one summary row per key, summed over CPUs.
/// Counts added between reading a key and removing it are lost (a few per
/// second at most): the price of not stopping the kernel side.
fn summary_rows(totals: &mut Totals, now: i64, names: &mut ProcessNames) -> Vec<EventRow> {
    let mut rows = Vec::new();
    let switches: Vec<(u64, [u64; 2])> = totals
        .switches
        .iter()
        .flatten()
        .map(|(key, per_cpu)| (key, per_cpu.iter().fold([0, 0], |a, v| [a[0] + v[0], a[1] + v[1]])))
        .collect();
    for (key, [count, off_cpu_ns]) in switches {
        let _ = totals.switches.remove(&key);
        let (prev, next) = ((key >> 32) as u32, key as u32);
        // The original's layout: pid = the thread switched in, tid = the one switched out.
        rows.push(summary(
            now,
            next,
            prev,
            host_op::SCHED_SWITCH_SUMMARY,
            count,
            off_cpu_ns,
            names.comm(next),
        ));
    }
    let allocations: Vec<(u32, [u64; 2])> = totals
        .allocations
        .iter()
        .flatten()
        .map(|(pid, per_cpu)| (pid, per_cpu.iter().fold([0, 0], |a, v| [a[0] + v[0], a[1] + v[1]])))
        .collect();
    for (pid, [count, bytes]) in allocations {
        let _ = totals.allocations.remove(&pid);
        rows.push(summary(now, pid, 0, host_op::MM_PAGE_ALLOC_SUMMARY, count, bytes, names.comm(pid)));
    }
    rows
}
