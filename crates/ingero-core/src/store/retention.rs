//! `--max-db`: the oldest rows go so the database and its WAL stay under a size.
//!
//! Checked after every batch (two PRAGMAs and a stat, microseconds). Pruning
//! takes the oldest events (rowid order is arrival order) with everything that
//! only describes them (stacks stay: the drainer sends each once per run), then hands the freed pages back to the file system.

use std::path::PathBuf;

use anyhow::Result;
use rusqlite::Connection;

/// Pruning brings the database down to this share of the cap, so it does not
/// prune again at the very next batch.
const LOW_WATER: f64 = 0.75;

pub struct Retention {
    cap_bytes: u64,
    wal: Option<PathBuf>,
    /// The largest WAL seen: one batch's pages land there before a checkpoint
    /// moves them, so that much room is kept free of the database proper.
    wal_peak: u64,
}

impl Retention {
    pub fn new(cap_bytes: u64) -> Self {
        Self { cap_bytes, wal: None, wal_peak: 0 }
    }

    /// The WAL may hold this much; it counts against the cap.
    pub fn wal_limit(cap_bytes: u64) -> u64 {
        (cap_bytes / 8).clamp(64 << 10, 64 << 20)
    }

    pub fn enforce(&mut self, conn: &Connection) -> Result<()> {
        let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
        let page = pragma("page_size")? as u64;
        let file = pragma("page_count")? as u64 * page;
        let live = file - pragma("freelist_count")? as u64 * page;
        // A file made before auto_vacuum=INCREMENTAL cannot shrink: there, only
        // what is in use can be held under the cap (freed pages are reused).
        let size = if pragma("auto_vacuum")? == 2 { file } else { live };
        let wal = self.wal.get_or_insert_with(|| PathBuf::from(format!("{}-wal", conn.path().unwrap_or(""))));
        self.wal_peak = self.wal_peak.max(std::fs::metadata(wal).map_or(0, |m| m.len()));
        // The WAL index (-shm) is a few 32 KiB pages.
        let reserve = Self::wal_limit(self.cap_bytes).max(self.wal_peak + self.wal_peak / 4) + (128 << 10);
        let budget = self.cap_bytes.saturating_sub(reserve);
        if size <= budget {
            return Ok(());
        }
        let events: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        let excess = 1.0 - (budget as f64 * LOW_WATER) / live as f64;
        let prune = ((events as f64 * excess).ceil() as i64).clamp(1, events.max(1));
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events ORDER BY rowid LIMIT ?1)",
            [prune],
        )?;
        // What described only the pruned time goes with it.
        let oldest: Option<i64> = tx.query_row("SELECT MIN(timestamp) FROM events", [], |r| r.get(0))?;
        if let Some(oldest) = oldest {
            for sql in [
                "DELETE FROM event_aggregates WHERE bucket + 60000000000 <= ?1",
                "DELETE FROM event_aggregates_5s WHERE bucket + 5000000000 <= ?1",
                "DELETE FROM system_snapshots WHERE timestamp < ?1",
                "DELETE FROM causal_chains WHERE detected_at < ?1",
            ] {
                tx.execute(sql, [oldest])?;
            }
        }
        tx.execute("DELETE FROM mcp_calls WHERE event_id NOT IN (SELECT id FROM events)", [])?;
        tx.commit()?;
        // Give the pages back (auto_vacuum=INCREMENTAL on databases we created),
        // then let the WAL restart from its beginning.
        conn.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}
