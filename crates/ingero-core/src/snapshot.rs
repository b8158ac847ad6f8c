//! The 1 Hz system snapshot (`system_snapshots`): CPU and memory pressure,
//! swap and load, read from /proc. Causal chains use it to tell "the GPU
//! waited because the host was saturated" from everything else.

use std::fs;

/// One row of `system_snapshots`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotRow {
    /// Unix nanoseconds.
    pub timestamp_ns: i64,
    /// Busy share of all CPUs since the previous snapshot, 0–100.
    pub cpu_pct: f64,
    /// Memory in use (total − available), 0–100.
    pub mem_pct: f64,
    /// MemAvailable in MiB.
    pub mem_avail_mb: i64,
    /// Swap in use, MiB.
    pub swap_mb: i64,
    /// 1-minute load average.
    pub load_avg: f64,
}

/// CPU time counters of /proc/stat's first line: (busy, total) jiffies.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn meminfo_kb(meminfo: &str, key: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.split(':').next() == Some(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Takes snapshots, keeping the previous CPU counters to turn them into a rate.
#[derive(Debug, Default)]
pub struct Sampler {
    previous: Option<(u64, u64)>,
}

impl Sampler {
    /// A snapshot now; the first one's CPU share covers the time since boot.
    pub fn sample(&mut self, timestamp_ns: i64) -> Option<SnapshotRow> {
        let times = cpu_times(&fs::read_to_string("/proc/stat").ok()?)?;
        let (busy, total) = match self.previous.replace(times) {
            Some((busy0, total0)) => (times.0.saturating_sub(busy0), times.1.saturating_sub(total0)),
            None => times,
        };
        let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
        let mem_total = meminfo_kb(&meminfo, "MemTotal")?;
        let mem_avail = meminfo_kb(&meminfo, "MemAvailable").unwrap_or(0);
        let swap_used =
            meminfo_kb(&meminfo, "SwapTotal").unwrap_or(0) - meminfo_kb(&meminfo, "SwapFree").unwrap_or(0);
        let load_avg = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Some(SnapshotRow {
            timestamp_ns,
            cpu_pct: if total == 0 { 0.0 } else { 100.0 * busy as f64 / total as f64 },
            mem_pct: if mem_total == 0 {
                0.0
            } else {
                100.0 * (mem_total - mem_avail) as f64 / mem_total as f64
            },
            mem_avail_mb: mem_avail / 1024,
            swap_mb: swap_used.max(0) / 1024,
            load_avg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_share_counts_iowait_as_idle() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_times(stat), Some((150, 1000)));
    }

    #[test]
    fn snapshot_agrees_with_proc() {
        let mut sampler = Sampler::default();
        sampler.sample(1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let row = sampler.sample(2).unwrap();
        assert!((0.0..=100.0).contains(&row.cpu_pct), "{row:?}");
        assert!(row.mem_pct > 0.0 && row.mem_pct < 100.0, "{row:?}");
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
        let total_mb = meminfo_kb(&meminfo, "MemTotal").unwrap() / 1024;
        assert!(row.mem_avail_mb > 0 && row.mem_avail_mb <= total_mb, "{row:?}");
        assert!(row.load_avg >= 0.0);
    }
}
