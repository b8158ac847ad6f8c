//! The SQLite database in the original Go Ingero's format: opening it, and the
//! batched writer that stores drained events.

mod aggregates;
pub mod audit;
mod host_rows;
mod retention;
pub mod rollover;
pub mod selective;
pub mod session;
mod writer;

pub use host_rows::record_critical_drops;
pub use session::SessionInfo;
pub use writer::{Batch, EventRow, Writer, WriterStats};

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use ingero_common::codes::{OPS, SOURCES};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

/// The `PRAGMA user_version` the original v0.17 writes; newer files are refused.
pub const USER_VERSION: i64 = 10;

const SCHEMA: &str = include_str!("schema.sql");
const EVENT_INDEXES: &str = include_str!("indexes.sql");

/// Builds the indexes of `events` that are missing (the writer defers them).
pub fn build_event_indexes(conn: &Connection) -> Result<()> {
    // One at a time, each folded out of the WAL before the next: the WAL then
    // holds one index at most, not all five (about 0.95x the rows' bytes).
    for statement in EVENT_INDEXES.split(';').filter(|s| s.contains("CREATE")) {
        conn.execute_batch(statement).context("cannot index the events table")?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    }
    Ok(())
}

/// Whether the events table has its indexes (built, or kept current).
pub fn has_event_indexes(conn: &Connection) -> Result<bool> {
    let found = conn
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'idx_events_id'", [], |_| {
            Ok(())
        })
        .optional()?;
    Ok(found.is_some())
}

/// Notes stored in `schema_info`, read by agents that meet the file cold.
const SCHEMA_NOTES: &[(&str, &str)] = &[
    ("version", "0.10"),
    ("writer", concat!("ingero-rs ", env!("CARGO_PKG_VERSION"))),
    ("timestamp_unit", "nanoseconds (Unix epoch); for traced calls, the time the call was entered"),
    ("duration_unit", "nanoseconds"),
    ("arg0_note", "Operation-specific; schema_info.arg_meanings gives it for every op"),
    ("arg1_note", "Operation-specific; schema_info.arg_meanings gives it for every op"),
    ("ret_code_note", "The call's return value (cudaError_t / CUresult, 0 = success). Host events: 0."),
    ("id_note", "events.id is '{node}:{seq}', unique across merged node databases"),
    (
        "example_query",
        "SELECT e.id, s.name AS source, o.name AS op, e.duration/1000 AS dur_us, e.pid FROM events e \
         JOIN sources s ON e.source = s.id JOIN ops o ON e.source = o.source_id AND e.op = o.op_id \
         ORDER BY e.timestamp DESC LIMIT 20",
    ),
    ("sessions_note", "One row per 'ingero trace' invocation. Correlate with events via time range."),
    (
        "mcp_calls_note",
        "One row per MCP request served by `ingero mcp`; events.source = 10 (MCP) holds its time, \
         duration, status code (ret_code 0 ok, 1 refused, 2 error), rows (arg0) and bytes (arg1).",
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
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
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
    let id_type: Option<String> = conn
        .query_row("SELECT type FROM pragma_table_info('events') WHERE name = 'id'", [], |r| r.get(0))
        .ok();
    if id_type.is_some_and(|t| t.eq_ignore_ascii_case("INTEGER")) {
        bail!(
            "{} has the first original's integer event ids; ingero appends only to databases with \
             '{{node}}:{{seq}}' ids: write to a new database (--db NEW.db)",
            path.display()
        );
    }
    // Only takes effect on a new, empty file: lets `--max-db` shrink it later.
    conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .with_context(|| format!("cannot write to database {}", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("{} cannot use WAL journaling (got {mode})", path.display());
    }
    // WAL + NORMAL: a committed batch survives a crash of ingero; only a power
    // loss can take back the last transactions.
    conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
    apply_schema(&conn).with_context(|| format!("cannot write the schema to {}", path.display()))?;
    Ok(conn)
}

/// `{"<op name>": {"arg0": "...", "arg1": "..."}, ...}` from the code table,
/// so an agent meeting the file cold knows what each argument column holds.
fn arg_meanings_json() -> String {
    let meanings: serde_json::Map<String, serde_json::Value> = OPS
        .iter()
        .map(|o| (o.name.to_owned(), serde_json::json!({ "arg0": o.arg0, "arg1": o.arg1 })))
        .collect();
    serde_json::Value::Object(meanings).to_string()
}

/// Columns of `table` in `conn`, with their declarations as `ADD COLUMN` wants them.
fn column_decls(conn: &Connection, table: &str) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let rows = stmt.query_map([], |r| {
        let (name, kind, not_null, default): (String, String, bool, Option<String>) =
            (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
        let mut decl = format!("{name} {kind}");
        if not_null {
            decl.push_str(" NOT NULL");
        }
        if let Some(default) = default {
            decl.push_str(&format!(" DEFAULT {default}"));
        }
        Ok((name, decl))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Adds the columns an older database lacks (the original added them by ALTER
/// TABLE over its versions: node, comm, cgroup_id, stack_ips, rank, ...), so a
/// trace can append to a file the original wrote.
fn add_missing_columns(tx: &Connection) -> Result<()> {
    let reference = Connection::open_in_memory()?;
    reference.execute_batch(SCHEMA)?;
    let tables: Vec<String> = reference
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for table in tables {
        let present: Vec<String> = column_decls(tx, &table)?.into_iter().map(|(name, _)| name).collect();
        if present.is_empty() {
            continue; // created whole by the schema
        }
        for (name, decl) in column_decls(&reference, &table)? {
            if !present.contains(&name) {
                tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {decl};"))?;
            }
        }
    }
    Ok(())
}

fn apply_schema(conn: &Connection) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    add_missing_columns(&tx)?;
    tx.execute_batch(SCHEMA)?;
    {
        let mut source =
            tx.prepare("INSERT OR REPLACE INTO sources (id, name, description) VALUES (?1, ?2, ?3)")?;
        for s in SOURCES {
            source.execute(params![s.id, s.name, s.description])?;
        }
        let mut op = tx.prepare(
            "INSERT OR REPLACE INTO ops (source_id, op_id, name, description) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for o in OPS {
            op.execute(params![o.source, o.id, o.name, o.description])?;
        }
        let mut note = tx.prepare("INSERT OR REPLACE INTO schema_info (key, value) VALUES (?1, ?2)")?;
        for (key, value) in SCHEMA_NOTES {
            note.execute(params![key, value])?;
        }
        note.execute(params!["arg_meanings", arg_meanings_json()])?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ingero-store-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn new_database_has_the_schema_and_every_code() {
        let path = temp_db("schema");
        let conn = open_for_write(&path).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, USER_VERSION);
        let ops: i64 = conn.query_row("SELECT COUNT(*) FROM ops", [], |r| r.get(0)).unwrap();
        assert_eq!(ops as usize, OPS.len());
        let graph: String = conn
            .query_row("SELECT name FROM ops WHERE source_id = 8 AND op_id = 4", [], |r| r.get(0))
            .unwrap();
        assert_eq!(graph, "graphLaunch");
        let meanings: String = conn
            .query_row("SELECT value FROM schema_info WHERE key = 'arg_meanings'", [], |r| r.get(0))
            .unwrap();
        let meanings: serde_json::Value = serde_json::from_str(&meanings).unwrap();
        assert_eq!(meanings["cudaMemcpy"]["arg0"], "bytes");
        assert_eq!(meanings.as_object().unwrap().len(), OPS.len());
        for table in
            ["events", "stack_traces", "causal_chains", "system_snapshots", "sessions", "event_aggregates_5s"]
        {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 1, "{table} missing");
        }
    }

    #[test]
    fn reopening_keeps_rows_and_continues_ids() {
        let path = temp_db("reopen");
        let conn = open_for_write(&path).unwrap();
        conn.execute(
            "INSERT INTO events (id, timestamp, pid, tid, source, op, duration, node) VALUES ('n:41', 1, 2, 2, 1, 1, 5, 'n')",
            [],
        )
        .unwrap();
        drop(conn);
        let conn = open_for_write(&path).unwrap();
        assert_eq!(next_event_seq(&conn, "n").unwrap(), 42);
        assert_eq!(next_event_seq(&conn, "other").unwrap(), 1);
    }

    #[test]
    fn newer_database_is_refused_untouched() {
        let path = temp_db("newer");
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99;").unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = open_for_write(&path).unwrap_err().to_string();
        assert!(err.contains("newer ingero"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn file_that_is_not_a_database_is_refused_untouched() {
        let path = temp_db("garbage");
        std::fs::write(&path, b"this is not sqlite, just text that is long enough to have a header.....")
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        assert!(open_for_write(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_database_of_an_older_original_gets_the_later_columns() {
        let path = temp_db("old");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE events (id TEXT PRIMARY KEY, timestamp INTEGER NOT NULL, pid INTEGER NOT NULL, \
                 tid INTEGER NOT NULL, source INTEGER NOT NULL, op INTEGER NOT NULL, duration INTEGER NOT NULL, \
                 gpu_id INTEGER NOT NULL DEFAULT 0, arg0 INTEGER NOT NULL DEFAULT 0, arg1 INTEGER NOT NULL \
                 DEFAULT 0, ret_code INTEGER NOT NULL DEFAULT 0, stack_hash INTEGER NOT NULL DEFAULT 0); \
                 INSERT INTO events (id, timestamp, pid, tid, source, op, duration) VALUES ('h:1', 1, 2, 2, 1, 1, 5);",
            )
            .unwrap();
        let conn = open_for_write(&path).unwrap();
        let (node, comm, cgroup): (String, String, i64) = conn
            .query_row("SELECT node, comm, cgroup_id FROM events WHERE id = 'h:1'", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((node.as_str(), comm.as_str(), cgroup), ("", "", 0));
    }

    #[test]
    fn missing_directory_is_named() {
        let err = open_for_write(Path::new("/nonexistent-ingero-dir/t.db")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent-ingero-dir does not exist"), "{err}");
    }
}
