//! The SQLite database in the original Go Ingero's format: opening it, and the
//! batched writer that stores drained events.

pub mod session;
mod writer;

pub use session::SessionInfo;
pub use writer::{EventRow, Writer, WriterStats};

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use ingero_common::codes::{OPS, SOURCES};
use rusqlite::{Connection, OpenFlags, params};

/// The `PRAGMA user_version` the original v0.17 writes; newer files are refused.
pub const USER_VERSION: i64 = 10;

const SCHEMA: &str = include_str!("schema.sql");

/// Notes stored in `schema_info`, read by agents that meet the file cold.
const SCHEMA_NOTES: &[(&str, &str)] = &[
    ("version", "0.10"),
    ("writer", concat!("ingero-rs ", env!("CARGO_PKG_VERSION"))),
    (
        "timestamp_unit",
        "nanoseconds (Unix epoch); for traced calls, the time the call was entered",
    ),
    ("duration_unit", "nanoseconds"),
    (
        "arg0_note",
        "Operation-specific; see the ops table and `ingero schema` for each op's meaning",
    ),
    (
        "arg1_note",
        "Operation-specific; see the ops table and `ingero schema` for each op's meaning",
    ),
    (
        "ret_code_note",
        "The call's return value (cudaError_t / CUresult, 0 = success). Host events: 0.",
    ),
    (
        "id_note",
        "events.id is '{node}:{seq}', unique across merged node databases",
    ),
    (
        "example_query",
        "SELECT e.id, s.name AS source, o.name AS op, e.duration/1000 AS dur_us, e.pid FROM events e \
         JOIN sources s ON e.source = s.id JOIN ops o ON e.source = o.source_id AND e.op = o.op_id \
         ORDER BY e.timestamp DESC LIMIT 20",
    ),
    (
        "sessions_note",
        "One row per 'ingero trace' invocation. Correlate with events via time range.",
    ),
    (
        "process_names_note",
        "PID-to-name mapping populated during trace. JOIN with events.pid for query enrichment.",
    ),
];

/// Opens (creating if needed) a database for writing, in WAL mode, with the full
/// schema and the lookup tables seeded from the one code table.
pub fn open_for_write(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!("database directory {} does not exist", dir.display());
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open database {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let on_disk: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .with_context(|| format!("{} is not an SQLite database", path.display()))?;
    if on_disk > USER_VERSION {
        bail!(
            "{} was written by a newer ingero (user_version {on_disk}, this one understands up to {USER_VERSION}); refusing to write to it",
            path.display()
        );
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .with_context(|| format!("cannot write to database {}", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("{} cannot use WAL journaling (got {mode})", path.display());
    }
    // WAL + NORMAL: a committed batch survives a crash of ingero; only a power
    // loss can take back the last transactions.
    conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
    apply_schema(&conn)
        .with_context(|| format!("cannot write the schema to {}", path.display()))?;
    Ok(conn)
}

fn apply_schema(conn: &Connection) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    {
        let mut source = tx.prepare(
            "INSERT OR REPLACE INTO sources (id, name, description) VALUES (?1, ?2, ?3)",
        )?;
        for s in SOURCES {
            source.execute(params![s.id, s.name, s.description])?;
        }
        let mut op = tx.prepare(
            "INSERT OR REPLACE INTO ops (source_id, op_id, name, description) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for o in OPS {
            op.execute(params![o.source, o.id, o.name, o.description])?;
        }
        let mut note =
            tx.prepare("INSERT OR REPLACE INTO schema_info (key, value) VALUES (?1, ?2)")?;
        for (key, value) in SCHEMA_NOTES {
            note.execute(params![key, value])?;
        }
    }
    tx.execute_batch(&format!("PRAGMA user_version = {USER_VERSION};"))?;
    tx.commit()?;
    Ok(())
}

/// The next free sequence number of `{node}:{seq}` ids, so a database that is
/// traced into again keeps its ids unique.
pub fn next_event_seq(conn: &Connection, node: &str) -> Result<u64> {
    let max: Option<i64> = conn.query_row(
        "SELECT MAX(CAST(substr(id, ?2) AS INTEGER)) FROM events WHERE node = ?1",
        params![node, node.len() as i64 + 2],
        |r| r.get(0),
    )?;
    Ok(max.map_or(1, |m| m.max(0) as u64 + 1))
}
