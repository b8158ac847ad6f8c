//! MCP tool calls as trace events: delivered to the `ingero trace` writing the
//! database when one runs (so they take their place in its `{node}:{seq}` stream),
//! appended to the database directly when none does.
//!
//! A running trace listens on an abstract Unix socket named after the database's
//! canonical path; abstract names need no file to clean up after a crash, and the
//! listener checks the peer's uid itself since they carry no permissions.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::{
        fd::AsRawFd as _,
        linux::net::SocketAddrExt as _,
        unix::{
            fs::MetadataExt as _,
            net::{SocketAddr, UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::SyncSender,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use ingero_common::codes::{OPS, mcp_op, mcp_status, source};
use rusqlite::{Connection, TransactionBehavior, params};

use super::{Batch, next_event_seq, open_for_write};

/// One served MCP request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    pub started_ns: i64,
    pub duration_ns: i64,
    pub pid: u32,
    pub tid: u32,
    pub tool: String,
    pub arguments: String,
    /// `ok`, `refused` or `error`.
    pub status: String,
    pub error: String,
    pub rows: u64,
    pub bytes: u64,
    pub transport: String,
    pub principal: String,
}

impl ToolCall {
    pub fn op(&self) -> u8 {
        OPS.iter().find(|o| o.source == source::MCP && o.name == self.tool).map_or(mcp_op::OTHER, |o| o.id)
    }

    pub fn ret_code(&self) -> i32 {
        match self.status.as_str() {
            "ok" => mcp_status::OK,
            "refused" => mcp_status::REFUSED,
            _ => mcp_status::ERROR,
        }
    }

    fn to_json(&self) -> String {
        serde_json::json!({
            "started_ns": self.started_ns, "duration_ns": self.duration_ns, "pid": self.pid,
            "tid": self.tid, "tool": self.tool, "arguments": self.arguments, "status": self.status,
            "error": self.error, "rows": self.rows, "bytes": self.bytes, "transport": self.transport,
            "principal": self.principal,
        })
        .to_string()
    }

    fn from_json(line: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let int = |k: &str| v[k].as_i64().ok_or_else(|| anyhow!("field {k} missing"));
        Ok(Self {
            started_ns: int("started_ns")?,
            duration_ns: int("duration_ns")?,
            pid: int("pid")? as u32,
            tid: int("tid")? as u32,
            tool: text("tool"),
            arguments: text("arguments"),
            status: text("status"),
            error: text("error"),
            rows: int("rows")? as u64,
            bytes: int("bytes")? as u64,
            transport: text("transport"),
            principal: text("principal"),
        })
    }
}

/// Inserts the call's `events` and `mcp_calls` rows under `id`.
pub(super) fn insert(conn: &Connection, id: &str, node: &str, call: &ToolCall) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (id, timestamp, pid, tid, source, op, duration, arg0, arg1, ret_code, node, comm) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'ingero-mcp')",
    )?
    .execute(params![
        id,
        call.started_ns,
        call.pid,
        call.tid,
        source::MCP,
        call.op(),
        call.duration_ns,
        call.rows as i64,
        call.bytes as i64,
        call.ret_code(),
        node,
    ])?;
    conn.prepare_cached(
        "INSERT INTO mcp_calls (event_id, tool, arguments, status, error, transport, principal) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        call.tool,
        call.arguments,
        call.status,
        call.error,
        call.transport,
        call.principal
    ])?;
    Ok(())
}

fn socket_name(db: &Path) -> Result<Vec<u8>> {
    let canonical = db.canonicalize().with_context(|| format!("no database at {}", db.display()))?;
    // FNV-1a: stable across runs and processes, which std's hasher is not.
    let hash = canonical
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    Ok(format!("ingero-trace-{hash:016x}").into_bytes())
}

/// Where a call was recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Into the stream of the `ingero trace` writing the database.
    Trace,
    Database(PathBuf),
}

/// Sends `call` to the trace writing `db`, if one listens.
fn send_to_trace(db: &Path, call: &ToolCall) -> Result<Option<Delivered>> {
    let addr = SocketAddr::from_abstract_name(socket_name(db)?)?;
    let Ok(mut stream) = UnixStream::connect_addr(&addr) else { return Ok(None) };
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{}\n", call.to_json()).as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    match answer.trim() {
        "ok" => Ok(Some(Delivered::Trace)),
        refusal => {
            Err(anyhow!("the ingero trace writing {} refused the audit event: {refusal}", db.display()))
        }
    }
}

/// Records `call` in the database at `db`: through a running trace if one writes
/// it, else directly (creating the database if needed).
pub fn record(db: &Path, node: &str, call: &ToolCall) -> Result<Delivered> {
    if db.exists()
        && let Some(delivered) = send_to_trace(db, call)?
    {
        return Ok(delivered);
    }
    if let Ok(meta) = std::fs::metadata(db)
        && meta.mode() & 0o222 == 0
    {
        // Root could write it anyway; a file nobody may write is a published
        // record, and stays as it is.
        return Err(anyhow!("{} is read-only on disk; its audit must go elsewhere", db.display()));
    }
    let mut conn = open_for_write(db)?;
    // IMMEDIATE: the sequence number is taken under the write lock, so two
    // servers appending at once cannot pick the same id...
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // ...and a trace that started meanwhile has bound its socket before it took
    // its own numbers under that lock: ask again, and let it number this call.
    if let Some(delivered) = send_to_trace(db, call)? {
        return Ok(delivered);
    }
    let id = format!("{node}:{}", next_event_seq(&tx, node)?);
    insert(&tx, &id, node, call)?;
    tx.commit()?;
    Ok(Delivered::Database(db.to_path_buf()))
}

/// Accepts tool calls for the database a trace writes, and queues them for its writer.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The trace's socket, bound before its writer numbers anything, so every MCP
/// call either finds it or committed before the writer took its numbers.
pub struct Bound {
    listener: UnixListener,
    allowed: [u32; 3],
}

impl Bound {
    pub fn bind(db: &Path) -> Result<Self> {
        let addr = SocketAddr::from_abstract_name(socket_name(db)?)?;
        let listener = UnixListener::bind_addr(&addr).with_context(|| {
            format!("another ingero trace is already writing {} (its audit socket is taken)", db.display())
        })?;
        listener.set_nonblocking(true)?;
        // Whoever owns the database may append to it anyway; root always may.
        let allowed = [0, unsafe { libc::geteuid() }, std::fs::metadata(db)?.uid()];
        Ok(Self { listener, allowed })
    }

    /// Starts serving calls (queued in the socket's backlog until now) into `writer`.
    pub fn serve(self, writer: SyncSender<Batch>) -> Result<Listener> {
        let Self { listener, allowed } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ingero-audit".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &allowed, &writer),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .context("cannot start the audit listener")?;
        Ok(Listener { stop, thread: Some(thread) })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the length given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn serve(stream: UnixStream, allowed: &[u32], writer: &SyncSender<Batch>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let answer = if peer_uid(&stream).is_none_or(|uid| !allowed.contains(&uid)) {
        "not allowed: the caller's user does not own this database".to_owned()
    } else {
        let mut line = String::new();
        match BufReader::new(&stream).read_line(&mut line).map_err(anyhow::Error::from).and_then(|_| {
            let call = ToolCall::from_json(&line)?;
            writer
                .send(Batch { tool_calls: vec![call], ..Batch::default() })
                .map_err(|_| anyhow!("the trace is stopping"))
        }) {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("{e:#}"),
        }
    };
    let _ = (&stream).write_all(format!("{answer}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_field() {
        let call = ToolCall {
            started_ns: 1_700_000_000_000_000_000,
            duration_ns: 1234,
            pid: 7,
            tid: 8,
            tool: "run_sql".into(),
            arguments: "SELECT \"x\"\n".into(),
            status: "refused".into(),
            error: "writes are not allowed".into(),
            rows: 3,
            bytes: 99,
            transport: "http".into(),
            principal: "token:ab12".into(),
        };
        assert_eq!(ToolCall::from_json(&call.to_json()).unwrap(), call);
        assert_eq!(call.op(), mcp_op::RUN_SQL);
        assert_eq!(call.ret_code(), mcp_status::REFUSED);
    }

    #[test]
    fn direct_record_appends_numbered_rows() {
        let dir = std::env::temp_dir().join(format!("ingero-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("a.db");
        let _ = std::fs::remove_file(&db);
        let call = ToolCall { tool: "get_schema".into(), status: "ok".into(), ..ToolCall::default() };
        for _ in 0..3 {
            assert_eq!(record(&db, "n1", &call).unwrap(), Delivered::Database(db.clone()));
        }
        let conn = Connection::open(&db).unwrap();
        let ids: Vec<String> = conn
            .prepare("SELECT e.id FROM events e JOIN mcp_calls m ON m.event_id = e.id WHERE e.source = 10 ORDER BY e.rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(ids, ["n1:1", "n1:2", "n1:3"]);
    }
}
