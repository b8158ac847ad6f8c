//! What the live view of `ingero trace` shows: per-op counts and rolling
//! percentiles of the events drained so far, and the latest system snapshot.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
};

use crate::{snapshot::SnapshotRow, store::EventRow};

/// Durations kept per op for its percentiles: the recent past, not the
/// whole trace, so a spike shows while it happens.
const WINDOW: usize = 2048;
/// An event this many times its op's median is a spike (the original's rule).
const SPIKE_RATIO: u64 = 3;

#[derive(Debug, Default)]
struct OpWindow {
    count: u64,
    recent: VecDeque<u64>,
}

#[derive(Debug, Default)]
struct State {
    ops: BTreeMap<(u8, u8), OpWindow>,
    received_by_source: BTreeMap<u8, u64>,
    system: Option<SnapshotRow>,
}

/// One op's line of the live table (durations in nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpLive {
    pub source: u8,
    pub op: u8,
    pub count: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
    /// Events of the window above `SPIKE_RATIO` x p50.
    pub spikes: u64,
}

/// Shared between the drainer (which records) and whoever shows the view.
#[derive(Debug, Default)]
pub struct LiveStats {
    state: Mutex<State>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl LiveStats {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, rows: &[EventRow]) {
        if rows.is_empty() {
            return;
        }
        let mut state = self.state();
        for row in rows {
            *state.received_by_source.entry(row.source).or_default() += 1;
            let window = state.ops.entry((row.source, row.op)).or_default();
            window.count += 1;
            if window.recent.len() == WINDOW {
                window.recent.pop_front();
            }
            window.recent.push_back(row.duration_ns.max(0) as u64);
        }
    }

    pub fn record_system(&self, snapshot: SnapshotRow) {
        self.state().system = Some(snapshot);
    }

    pub fn system(&self) -> Option<SnapshotRow> {
        self.state().system
    }

    /// Events received so far from `source`.
    pub fn received(&self, source: u8) -> u64 {
        self.state().received_by_source.get(&source).copied().unwrap_or(0)
    }

    pub fn ops(&self) -> Vec<OpLive> {
        let windows: Vec<((u8, u8), u64, Vec<u64>)> = self
            .state()
            .ops
            .iter()
            .map(|(&key, w)| (key, w.count, w.recent.iter().copied().collect()))
            .collect();
        windows
            .into_iter()
            .map(|((source, op), count, mut recent)| {
                recent.sort_unstable();
                let p50 = percentile(&recent, 0.50);
                OpLive {
                    source,
                    op,
                    count,
                    p50,
                    p95: percentile(&recent, 0.95),
                    p99: percentile(&recent, 0.99),
                    max: recent.last().copied().unwrap_or(0),
                    spikes: if p50 == 0 {
                        0
                    } else {
                        recent.iter().filter(|&&d| d > SPIKE_RATIO * p50).count() as u64
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(source: u8, op: u8, duration_ns: i64) -> EventRow {
        EventRow {
            timestamp_ns: 0,
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
            stack_hash: 0,
        }
    }

    #[test]
    fn percentiles_and_spikes_follow_the_nearest_rank_rule() {
        let live = LiveStats::default();
        let rows: Vec<EventRow> = (1..=100).map(|d| row(3, 1, d)).collect();
        live.record(&rows);
        live.record(&[row(5, 1, 7)]);
        let ops = live.ops();
        assert_eq!(ops.len(), 2);
        let switch = &ops[0];
        assert_eq!((switch.count, switch.p50, switch.p95, switch.p99, switch.max), (100, 50, 95, 99, 100));
        assert_eq!(switch.spikes, 0, "nothing above 3 x 50");
        assert_eq!(live.received(3), 100);
        assert_eq!(live.received(5), 1);
        live.record(&[row(3, 1, 1000)]);
        assert_eq!(live.ops()[0].spikes, 1);
    }
}
