//! Rows the host side adds beside events: `system_snapshots` and `cgroup_metadata`.

use anyhow::Result;
use rusqlite::{Transaction, params};

use crate::{capture::cgroup::CgroupRow, snapshot::SnapshotRow};

pub fn insert(tx: &Transaction<'_>, snapshots: &[SnapshotRow], cgroups: &[CgroupRow]) -> Result<()> {
    let mut snapshot = tx.prepare_cached(
        "INSERT OR IGNORE INTO system_snapshots (timestamp, cpu_pct, mem_pct, mem_avail, swap_mb, load_avg) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for s in snapshots {
        snapshot.execute(params![
            s.timestamp_ns,
            s.cpu_pct,
            s.mem_pct,
            s.mem_avail_mb,
            s.swap_mb,
            s.load_avg
        ])?;
    }
    let mut cgroup = tx.prepare_cached(
        "INSERT OR REPLACE INTO cgroup_metadata (cgroup_id, container_id, cgroup_path, pod_name, namespace) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for c in cgroups {
        cgroup.execute(params![
            c.cgroup_id as i64,
            c.container_id,
            c.cgroup_path,
            c.pod_name,
            c.namespace
        ])?;
    }
    Ok(())
}

/// Notes in the trace's `sessions` row that exec/exit/fork/OOM records were
/// lost, so whoever reads the file later knows the lifecycle is incomplete.
pub fn record_critical_drops(db: &std::path::Path, session: &super::SessionInfo, dropped: u64) -> Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute(
        "UPDATE sessions SET flags = ltrim(flags || ' critical_dropped=' || ?1) WHERE started_at = ?2 AND node = ?3",
        params![dropped as i64, session.started_at_ns, session.node],
    )?;
    Ok(())
}
