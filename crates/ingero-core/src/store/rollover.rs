//! `--db-rollover-size`: when the database reaches a size, it is closed complete
//! (WAL folded in, session row ended) and renamed `NAME.<unix ns>.db`; a fresh one
//! takes its path, with ids continuing, so rolled files merge without clashes.
//! Only the newest `keep` rolled files are kept.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rusqlite::Connection;

pub struct Rollover {
    pub size_bytes: u64,
    pub keep: u32,
}

impl Rollover {
    pub fn due(&self, conn: &Connection) -> Result<bool> {
        let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
        let file = pragma("page_count")? as u64 * pragma("page_size")? as u64;
        let wal = std::fs::metadata(format!("{}-wal", conn.path().unwrap_or(""))).map_or(0, |m| m.len());
        Ok(file + wal >= self.size_bytes)
    }

    /// Renames the closed database at `path` aside and prunes old rolled files;
    /// returns the rolled file's path.
    pub fn roll(&self, path: &Path) -> Result<PathBuf> {
        let rolled = PathBuf::from(format!("{}.{}.db", path.display(), crate::clock::wall_now_ns()));
        std::fs::rename(path, &rolled)
            .with_context(|| format!("cannot roll {} over to {}", path.display(), rolled.display()))?;
        let mut siblings = rolled_siblings(path);
        siblings.sort();
        let excess = siblings.len().saturating_sub(self.keep as usize);
        for old in &siblings[..excess] {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", old.display()));
            }
        }
        Ok(rolled)
    }
}

/// Rolled files of the database at `path` (`NAME.<digits>.db`), in no order.
pub fn rolled_siblings(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| {
            e.file_name().to_str().is_some_and(|f| {
                f.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|rest| rest.strip_suffix(".db"))
                    .is_some_and(|stamp| !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .map(|e| e.path())
        .collect()
}
