//! Selective storage: which events get a row of their own. Every event, kept or
//! not, is counted in the aggregates, so `count - stored` is exactly what was
//! left out.
//!
//! The rules are the original Go Ingero's (`shouldStore`), with one change:
//! `--record-all` keeps every event, where the original still capped events per
//! stack under it.

use std::collections::{HashMap, HashSet};

use ingero_common::codes::{cuda_op, driver_op, host_op, source};

use super::EventRow;

/// Everything is kept while the trace is this young, to give a baseline.
const BASELINE_NS: i64 = 10_000_000_000;
/// Block I/O slower than this is kept.
const SLOW_IO_NS: i64 = 10_000_000;
/// An event is anomalous past this multiple of its op's median...
const ANOMALY_FACTOR: i64 = 3;
/// ...once the op has been seen this often.
const ANOMALY_MIN_COUNT: u64 = 10;
/// Durations kept per op for the running median.
const MEDIAN_WINDOW: usize = 1024;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub record_all: bool,
    /// Events kept per distinct stack (anomalies excepted); 0 = no cap.
    pub stack_samples: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self { record_all: false, stack_samples: 100 }
    }
}

/// A running median over the last `MEDIAN_WINDOW` durations of one op.
#[derive(Default)]
struct Median {
    recent: Vec<i64>,
    next: usize,
    seen: u64,
    median: i64,
}

impl Median {
    fn add(&mut self, duration: i64) {
        if self.recent.len() < MEDIAN_WINDOW {
            self.recent.push(duration);
        } else {
            self.recent[self.next] = duration;
            self.next = (self.next + 1) % MEDIAN_WINDOW;
        }
        self.seen += 1;
        // Recomputed on a schedule, not per event: a select over 1024 values
        // per event would cost more than the insert it decides about.
        if self.seen <= 64 || self.seen.is_multiple_of(64) {
            let mut sorted = self.recent.clone();
            let mid = (sorted.len() - 1) / 2;
            self.median = *sorted.select_nth_unstable(mid).1;
        }
    }
}

pub struct Selector {
    policy: Policy,
    started_at_ns: i64,
    medians: HashMap<(u8, u8), Median>,
    per_stack: HashMap<i64, u32>,
    /// Processes with GPU activity: only their context switches are kept.
    gpu_pids: HashSet<u32>,
}

fn is_gpu_source(s: u8) -> bool {
    matches!(s, source::CUDA | source::DRIVER | source::CUDA_GRAPH | source::NCCL)
}

impl Selector {
    pub fn new(policy: Policy, started_at_ns: i64) -> Self {
        Self {
            policy,
            started_at_ns,
            medians: HashMap::new(),
            per_stack: HashMap::new(),
            gpu_pids: HashSet::new(),
        }
    }

    /// Whether `e` gets its own row. Call once per event, in order.
    pub fn keep(&mut self, e: &EventRow) -> bool {
        if is_gpu_source(e.source) {
            self.gpu_pids.insert(e.pid);
        }
        let anomalous = self.observe(e);
        if self.policy.record_all {
            return true;
        }
        // Page allocations are only ever summed: one row per 4 KiB page is noise.
        if e.source == source::HOST && e.op == host_op::MM_PAGE_ALLOC {
            return false;
        }
        if self.policy.stack_samples > 0 && e.stack_hash != 0 {
            let seen = self.per_stack.entry(e.stack_hash).or_default();
            if *seen >= self.policy.stack_samples && !anomalous {
                return false;
            }
            *seen += 1;
        }
        if e.timestamp_ns - self.started_at_ns < BASELINE_NS {
            return true;
        }
        match (e.source, e.op) {
            (
                source::HOST,
                host_op::PROCESS_EXEC
                | host_op::PROCESS_EXIT
                | host_op::PROCESS_FORK
                | host_op::OOM_KILL
                | host_op::POD_RESTART
                | host_op::POD_EVICTION
                | host_op::POD_OOM_KILL,
            ) => true,
            (source::HOST, host_op::SCHED_SWITCH) => self.gpu_pids.is_empty() || self.gpu_pids.contains(&e.pid),
            (source::CUDA, cuda_op::STREAM_SYNC | cuda_op::DEVICE_SYNC)
            | (source::DRIVER, driver_op::CTX_SYNC)
            | (source::TCP, _)
            // The audit of an agent's requests is never thinned out.
            | (source::MCP, _) => true,
            (source::IO, _) if e.duration_ns > SLOW_IO_NS => true,
            _ => anomalous,
        }
    }

    /// Adds `e` to its op's median; true if it was anomalous against it.
    fn observe(&mut self, e: &EventRow) -> bool {
        let median = self.medians.entry((e.source, e.op)).or_default();
        let anomalous = median.seen >= ANOMALY_MIN_COUNT
            && median.median > 0
            && e.duration_ns > ANOMALY_FACTOR * median.median;
        median.add(e.duration_ns);
        anomalous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: u8, op: u8, t_ns: i64, duration_ns: i64, stack_hash: i64) -> EventRow {
        EventRow {
            timestamp_ns: t_ns,
            pid: 1,
            tid: 1,
            source,
            op,
            duration_ns,
            gpu_id: 0,
            arg0: 0,
            arg1: 0,
            ret_code: 0,
            cgroup_id: 0,
            comm: [0; 16],
            stack_id: -1,
            stack_hash,
        }
    }

    const LATE: i64 = 60_000_000_000;

    #[test]
    fn after_the_baseline_only_anomalies_and_syncs_are_kept() {
        let mut s = Selector::new(Policy::default(), 0);
        let launches: Vec<bool> = (0..50)
            .map(|i| s.keep(&event(source::CUDA, cuda_op::LAUNCH_KERNEL, LATE + i, 1000, 0)))
            .collect();
        assert!(launches.iter().all(|k| !k));
        assert!(s.keep(&event(source::CUDA, cuda_op::LAUNCH_KERNEL, LATE + 99, 5000, 0)));
        assert!(s.keep(&event(source::CUDA, cuda_op::STREAM_SYNC, LATE + 100, 1, 0)));
        assert!(!s.keep(&event(source::HOST, host_op::MM_PAGE_ALLOC, LATE, 1, 0)));
        assert!(s.keep(&event(source::HOST, host_op::PROCESS_EXIT, LATE, 1, 0)));
    }

    #[test]
    fn stacks_are_capped_but_record_all_keeps_everything() {
        let policy = Policy { record_all: false, stack_samples: 3 };
        let mut s = Selector::new(policy, 0);
        let kept = (0..10).filter(|&i| s.keep(&event(source::CUDA, cuda_op::MALLOC, i, 100, 42))).count();
        assert_eq!(kept, 3);
        let mut all = Selector::new(Policy { record_all: true, ..policy }, 0);
        assert!((0..10).all(|i| all.keep(&event(source::CUDA, cuda_op::MALLOC, LATE + i, 100, 42))));
    }
}
