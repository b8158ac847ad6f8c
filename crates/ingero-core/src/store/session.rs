//! The `sessions` row that describes one `ingero trace` run.

use anyhow::Result;
use rusqlite::{Connection, params};

/// What a trace run records about itself and the machine it ran on.
#[derive(Debug, Default, Clone)]
pub struct SessionInfo {
    pub started_at_ns: i64,
    pub node: String,
    pub pid_filter: String,
    pub flags: String,
    pub python_ver: String,
    pub ingero_ver: String,
    /// GPU model(s), NVIDIA driver and CUDA runtime versions, where present.
    pub gpu_model: String,
    pub gpu_driver: String,
    pub cuda_ver: String,
    /// Which events get a row of their own.
    pub policy: super::selective::Policy,
    /// Oldest rows are pruned to keep the files under this size; 0 = no cap.
    pub max_db_bytes: u64,
    /// Roll the database over at this size (0 = never), keeping this many rolled files.
    pub rollover_bytes: u64,
    pub rollover_keep: u32,
}

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(line.split_once([':', '=']).map_or("", |(_, v)| v).trim().trim_matches('"').to_owned())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Inserts the session row and returns its id.
pub fn begin(conn: &Connection, info: &SessionInfo) -> Result<i64> {
    let cpu_model = first_line_with("/proc/cpuinfo", "model name").unwrap_or_default();
    let mem_total_mb = first_line_with("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb / 1024);
    let os_release = first_line_with("/etc/os-release", "PRETTY_NAME").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get() as i64);
    conn.execute(
        "INSERT INTO sessions (started_at, cpu_model, cpu_cores, mem_total, kernel, os_release, \
         python_ver, ingero_ver, pid_filter, flags, node, gpu_model, gpu_driver, cuda_ver) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            info.started_at_ns,
            cpu_model,
            cores,
            mem_total_mb,
            kernel_release(),
            os_release,
            info.python_ver,
            info.ingero_ver,
            info.pid_filter,
            info.flags,
            info.node,
            info.gpu_model,
            info.gpu_driver,
            info.cuda_ver,
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Marks the session stopped.
pub fn end(conn: &Connection, id: i64, stopped_at_ns: i64) -> Result<()> {
    conn.execute("UPDATE sessions SET stopped_at = ?2 WHERE id = ?1", params![id, stopped_at_ns])?;
    Ok(())
}
