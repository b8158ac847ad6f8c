//! `--max-db`: the oldest rows go so the database and its WAL stay under a size.
//!
//! Checked after every batch (a few PRAGMAs and a stat, microseconds). Pruning
//! takes the oldest events (rowid order is arrival order) with everything that
//! only describes them (stacks stay: the drainer sends each once per run), then hands the freed pages back to the file system.

use std::path::PathBuf;

use anyhow::Result;
use rusqlite::Connection;

/// Pruning brings the database down to this share of the cap, so it does not
/// prune again at the very next batch.
const LOW_WATER: f64 = 0.75;

/// Room for the WAL index (-shm): a few 32 KiB pages.
const SHM_ROOM: u64 = 128 << 10;

/// The database file's size and the bytes of its pages in use.
struct Sizes {
    file: u64,
    live: u64,
    /// auto_vacuum=INCREMENTAL: freed pages can be given back.
    shrinks: bool,
}

impl Sizes {
    fn of(conn: &Connection) -> Result<Self> {
        let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
        let page = pragma("page_size")? as u64;
        let file = pragma("page_count")? as u64 * page;
        let live = file - pragma("freelist_count")? as u64 * page;
        Ok(Self { file, live, shrinks: pragma("auto_vacuum")? == 2 })
    }

    /// What the cap holds: the file, or, for a file made before
    /// auto_vacuum=INCREMENTAL that cannot shrink, what is in use (freed pages
    /// are reused).
    fn held(&self) -> u64 {
        if self.shrinks { self.file } else { self.live }
    }
}

pub struct Retention {
    cap_bytes: u64,
    wal: Option<PathBuf>,
    /// The largest WAL seen: one batch's pages land there before a checkpoint
    /// moves them, so that much room is kept free of the database proper.
    wal_peak: u64,
    /// The file's size at the last check, and the most it grew between two:
    /// a batch lands before the check that prunes for it, so that much room
    /// is kept free too.
    last_size: u64,
    growth_peak: u64,
}

impl Retention {
    pub fn new(cap_bytes: u64) -> Self {
        Self { cap_bytes, wal: None, wal_peak: 0, last_size: 0, growth_peak: 0 }
    }

    /// The WAL may hold this much; it counts against the cap.
    pub fn wal_limit(cap_bytes: u64) -> u64 {
        (cap_bytes / 8).clamp(64 << 10, 64 << 20)
    }

    pub fn enforce(&mut self, conn: &Connection) -> Result<()> {
        let sizes = Sizes::of(conn)?;
        let size = sizes.held();
        let wal = self.wal.get_or_insert_with(|| PathBuf::from(format!("{}-wal", conn.path().unwrap_or(""))));
        self.wal_peak = self.wal_peak.max(std::fs::metadata(wal).map_or(0, |m| m.len()));
        self.growth_peak = self.growth_peak.max(size.saturating_sub(self.last_size));
        self.last_size = size;
        let wal_room = Self::wal_limit(self.cap_bytes).max(self.wal_peak + self.wal_peak / 4);
        let budget = self.cap_bytes.saturating_sub(wal_room + self.growth_peak + SHM_ROOM);
        if size <= budget {
            return Ok(());
        }
        prune_to(conn, sizes.live, budget as f64 * LOW_WATER, Self::wal_limit(self.cap_bytes))?;
        self.last_size = Sizes::of(conn)?.held();
        Ok(())
    }

    /// Before the indexes are built at the end of a trace (or a roll-over):
    /// prunes the oldest rows until the rows, their indexes and the largest
    /// index passing through the WAL fit under the cap.
    pub fn make_room_for_indexes(&self, conn: &Connection) -> Result<()> {
        if super::has_event_indexes(conn)? {
            return Ok(()); // kept current row by row, already counted
        }
        let live = Sizes::of(conn)?.live;
        let peak_per_byte = 1.0 + INDEX_BYTES_PER_ROW_BYTE + LARGEST_INDEX_BYTES_PER_ROW_BYTE;
        let allowed = self.cap_bytes.saturating_sub(SHM_ROOM) as f64 / (peak_per_byte * INDEX_MARGIN);
        if live as f64 <= allowed {
            return Ok(());
        }
        prune_to(conn, live, allowed, Self::wal_limit(self.cap_bytes))
    }
}

/// The indexes of `events` take about this many bytes per byte of the rows,
/// the largest of the five this many (measured: 300k traced calls, 79 bytes
/// a row). Built one at a time, only the largest is ever in the WAL at once.
const INDEX_BYTES_PER_ROW_BYTE: f64 = 0.95;
const LARGEST_INDEX_BYTES_PER_ROW_BYTE: f64 = 0.26;
/// Room for page rounding and rows that index larger than the measured ones.
const INDEX_MARGIN: f64 = 1.1;

/// Deletes the oldest events (and what only described their time) until the
/// database's `live` bytes come down to about `target`, then gives the pages
/// back. In steps of about `wal_room / 4` bytes, each folded out of the WAL
/// before the next: a step's deletions and the pages vacuum moves pass through
/// the WAL, which must stay inside the room kept for it.
fn prune_to(conn: &Connection, live: u64, target: f64, wal_room: u64) -> Result<()> {
    let events: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
    let excess = 1.0 - target / live as f64;
    let prune = ((events as f64 * excess).ceil() as i64).clamp(1, events.max(1));
    let bytes_per_event = live as f64 / events.max(1) as f64;
    let step = ((wal_room as f64 / 4.0 / bytes_per_event) as i64).max(64);
    let mut left = prune;
    while left > 0 {
        let rows = left.min(step);
        conn.execute(
            "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events ORDER BY rowid LIMIT ?1)",
            [rows],
        )?;
        // Give the pages back (auto_vacuum=INCREMENTAL on databases we
        // created), then let the WAL restart from its beginning.
        conn.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")?;
        left -= rows;
    }
    // What described only the pruned time goes with it.
    let tx = conn.unchecked_transaction()?;
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
    conn.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}
