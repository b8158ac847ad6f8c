//! Drainer -> SQLite writer throughput, with the probes bypassed: a generator
//! makes the batches the drainer would and the real writer stores them.
//!
//! `writer_throughput DB SECONDS [--selective] [--eager-indexes]` prints one JSON object: events
//! sent and stored, events/s, bytes on disk per event, the writer's peak RSS.
//! Run through `benches/writer_throughput.py`, which records the results.

use std::{
    path::PathBuf,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use _core::store::{self, Batch, EventRow, SessionInfo, Writer, selective::Policy};
use ingero_common::codes::{cuda_op, driver_op, source};

/// As the drainer batches (4096 events or 100 ms, whichever comes first).
const BATCH: usize = 4096;

/// A deterministic mix resembling a training step: mostly launches, some
/// copies, a sync per step, a few stacks, a few threads.
fn event(i: u64, t0: i64) -> EventRow {
    let (src, op, dur, arg0) = match i % 20 {
        0 => (source::CUDA, cuda_op::STREAM_SYNC, 900_000 + (i % 7) as i64 * 1_000, 0x5000),
        1 | 2 => (source::CUDA, cuda_op::MEMCPY_ASYNC, 4_000, 1 << 20),
        3 => (source::DRIVER, driver_op::LAUNCH_KERNEL, 3_000, 0x7f00_0000_1000 + i % 64),
        _ => (source::CUDA, cuda_op::LAUNCH_KERNEL, 2_500 + (i % 13) as i64 * 10, 0x7f00_0000_2000 + i % 64),
    };
    let mut comm = [0u8; 16];
    comm[..6].copy_from_slice(b"python");
    EventRow {
        timestamp_ns: t0 + i as i64 * 1_000,
        pid: 4242,
        tid: 4242 + (i % 4) as u32,
        source: src,
        op,
        duration_ns: dur,
        gpu_id: (i % 2) as u32,
        arg0,
        arg1: 0x5000,
        ret_code: 0,
        cgroup_id: 12345,
        comm,
        stack_id: -1,
        stack_hash: 1_000_003 * (1 + (i % 32) as i64),
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let db = PathBuf::from(args.get(1).map_or("/tmp/ingero-writer-bench.db", String::as_str));
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let record_all = !args.iter().any(|a| a == "--selective");
    // The original's layout: every index kept current row by row.
    let eager_indexes = args.iter().any(|a| a == "--eager-indexes");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let t0 = _core::clock::wall_now_ns();
    let info = SessionInfo {
        started_at_ns: t0,
        node: "bench".into(),
        policy: Policy { record_all, stack_samples: if record_all { 0 } else { 100 } },
        ..SessionInfo::default()
    };
    let conn = store::open_for_write(&db)?;
    if eager_indexes {
        store::build_event_indexes(&conn)?;
    }
    let writer = Writer::spawn(conn, &info)?;
    let stats = writer.stats();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let mut batch = Batch::with_capacity(BATCH);
        batch.events.extend((sent..sent + BATCH as u64).map(|i| event(i, t0)));
        sent += BATCH as u64;
        writer.send(batch)?;
    }
    // Rows written: the writer has stored (or counted) every event sent.
    while stats.stored.load(Ordering::Relaxed)
        + stats.aggregated.load(Ordering::Relaxed)
        + stats.failed.load(Ordering::Relaxed)
        < sent
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Then the end of the trace: the deferred indexes and the WAL checkpoint.
    let finishing = Instant::now();
    writer.finish()?;
    let finish_seconds = finishing.elapsed().as_secs_f64();
    let stored = stats.stored.load(Ordering::Relaxed);
    let aggregated = stats.aggregated.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    let bytes = std::fs::metadata(&db)?.len();
    println!(
        "{}",
        serde_json::json!({
            "record_all": record_all,
            "layout": if eager_indexes { "original (indexes kept current per row)" } else { "ingero (indexes built at the end)" },
            "seconds": elapsed,
            "finish_seconds": finish_seconds,
            "sent": sent,
            "stored": stored,
            "aggregated": aggregated,
            "failed": failed,
            "lost": sent - stored - aggregated,
            "events_per_s": sent as f64 / elapsed,
            "db_bytes": bytes,
            "bytes_per_stored_event": if stored > 0 { bytes as f64 / stored as f64 } else { 0.0 },
            "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
        })
    );
    Ok(())
}
