//! The writer thread: batches of drained events become one SQLite transaction each.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
};

use anyhow::{Context as _, Result, anyhow};
use ingero_common::event::COMM_LEN;
use rusqlite::{Connection, params};

use super::{
    SessionInfo, aggregates::Deltas, audit, audit::ToolCall, build_event_indexes, next_event_seq,
    open_for_write, retention::Retention, rollover::Rollover, selective::Selector, session,
};
use crate::symbolize::StackRow;

/// One row of `events`, already converted to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct EventRow {
    pub timestamp_ns: i64,
    pub pid: u32,
    pub tid: u32,
    pub source: u8,
    pub op: u8,
    pub duration_ns: i64,
    pub gpu_id: u32,
    pub arg0: u64,
    pub arg1: u64,
    pub ret_code: i32,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    /// The event's stack id in its family's stack map, or -1 (drainer-side only).
    pub stack_id: i32,
    /// `stack_traces.hash` (0 = no stack).
    pub stack_hash: i64,
}

/// What the writer stores in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<EventRow>,
    /// Stacks first seen in this batch, inserted before the events that use them.
    pub stacks: Vec<StackRow>,
    /// MCP requests served while the trace runs, numbered after `events`.
    pub tool_calls: Vec<ToolCall>,
    /// System snapshots and cgroup names from the host side.
    pub snapshots: Vec<crate::snapshot::SnapshotRow>,
    pub cgroups: Vec<crate::capture::cgroup::CgroupRow>,
}

impl Batch {
    pub fn with_capacity(events: usize) -> Self {
        Self { events: Vec::with_capacity(events), ..Self::default() }
    }
}

impl EventRow {
    pub fn comm_str(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }
}

/// What the writer has done so far; shared with whoever reports progress.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub stored: AtomicU64,
    /// Events counted in the aggregates only (selective storage).
    pub aggregated: AtomicU64,
    pub failed: AtomicU64,
    /// The first write error, kept so the end-of-trace report can name it.
    pub first_error: Mutex<Option<String>>,
    /// `stored`, by `events.source` (for the per-layer counts of the live view).
    pub stored_by_source: [AtomicU64; 16],
}

/// Handle to the writer thread. Dropping the last sender ends the thread after
/// it has written everything already queued.
pub struct Writer {
    sender: Option<SyncSender<Batch>>,
    thread: Option<JoinHandle<Result<()>>>,
    stats: Arc<WriterStats>,
}

/// Batches queued ahead of the writer before the drainer waits; the wait is
/// what turns a slow disk into counted ring-buffer drops instead of memory growth.
const QUEUE_DEPTH: usize = 64;

const INSERT_EVENT: &str = "INSERT INTO events \
    (id, timestamp, pid, tid, source, op, duration, gpu_id, arg0, arg1, ret_code, node, comm, cgroup_id, \
    stack_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

impl Writer {
    /// Starts the writer on `conn`, numbering ids after those already in the file.
    pub fn spawn(mut conn: Connection, info: &SessionInfo) -> Result<Self> {
        let node = info.node.clone();
        // Under the write lock: an MCP server appending directly either committed
        // before (and is counted) or waits, finds the trace's audit socket bound,
        // and sends its event here instead.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let next_seq = next_event_seq(&tx, &node)?;
        tx.commit()?;
        let session_id = session::begin(&conn, info)?;
        let retention = (info.max_db_bytes > 0).then(|| Retention::new(info.max_db_bytes));
        if info.max_db_bytes > 0 {
            // SQLite folds the WAL back only past 1,000 pages (4 MiB) by
            // default, and only then can its file shrink: under a small cap the
            // WAL alone would outgrow it. Fold it at half the WAL's share.
            let wal_limit = Retention::wal_limit(info.max_db_bytes);
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = (wal_limit / 2 / page.max(512) as u64).max(16);
            conn.execute_batch(&format!(
                "PRAGMA journal_size_limit = {wal_limit}; PRAGMA wal_autocheckpoint = {pages};"
            ))?;
        }
        let selector = Selector::new(info.policy, info.started_at_ns);
        let rollover = (info.rollover_bytes > 0)
            .then_some(Rollover { size_bytes: info.rollover_bytes, keep: info.rollover_keep });
        let path = PathBuf::from(conn.path().unwrap_or_default());
        let state = State {
            conn,
            path,
            info: info.clone(),
            node,
            next_seq,
            named_pids: HashSet::new(),
            selector,
            retention,
            rollover,
        };
        let (sender, receiver) = sync_channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("ingero-writer".into())
            .spawn(move || write_loop(state, session_id, receiver, &thread_stats))
            .context("cannot start the writer thread")?;
        Ok(Self { sender: Some(sender), thread: Some(thread), stats })
    }

    /// Another way in for batches (the audit listener); the writer ends only
    /// once every sender is dropped.
    pub fn sender(&self) -> Option<SyncSender<Batch>> {
        self.sender.clone()
    }

    pub fn stats(&self) -> Arc<WriterStats> {
        Arc::clone(&self.stats)
    }

    /// Queues a batch, waiting while the writer is `QUEUE_DEPTH` batches behind.
    pub fn send(&self, batch: Batch) -> Result<()> {
        let sender = self.sender.as_ref().ok_or_else(|| anyhow!("writer already finished"))?;
        sender.send(batch).map_err(|_| anyhow!("the writer thread stopped"))
    }

    /// Writes everything queued, then closes the database.
    pub fn finish(mut self) -> Result<()> {
        self.sender = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(anyhow!("the writer thread panicked")),
            None => Ok(()),
        }
    }
}

/// What the writer thread carries from batch to batch.
struct State {
    conn: Connection,
    path: PathBuf,
    info: SessionInfo,
    node: String,
    next_seq: u64,
    named_pids: HashSet<u32>,
    selector: Selector,
    retention: Option<Retention>,
    rollover: Option<Rollover>,
}

/// Builds the deferred event indexes, first making room for them under
/// `--max-db` (they grow the file by about as much as the rows take).
fn index_events(st: &State) -> Result<()> {
    if let Some(retention) = &st.retention {
        retention.make_room_for_indexes(&st.conn)?;
    }
    build_event_indexes(&st.conn)
}

/// Closes the database complete, renames it aside, and continues in a fresh one
/// at the same path; returns the new session's id.
fn roll_over(st: &mut State, session_id: i64) -> Result<i64> {
    let Some(rollover) = st.rollover.as_ref() else { return Ok(session_id) };
    session::end(&st.conn, session_id, crate::clock::wall_now_ns())?;
    index_events(st)?;
    st.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    let fresh = {
        // The old connection must be closed before the rename, so its -wal and
        // -shm go with it; a placeholder takes its place for that moment.
        let old = std::mem::replace(&mut st.conn, Connection::open_in_memory()?);
        old.close().map_err(|(_, err)| err)?;
        rollover.roll(&st.path)?;
        open_for_write(&st.path)?
    };
    st.conn = fresh;
    // Process names are per file: every pid is named again in the new one.
    st.named_pids.clear();
    session::begin(&st.conn, &st.info)
}

fn write_loop(
    mut st: State,
    mut session_id: i64,
    receiver: Receiver<Batch>,
    stats: &WriterStats,
) -> Result<()> {
    for batch in receiver {
        let keep: Vec<bool> = batch.events.iter().map(|e| st.selector.keep(e)).collect();
        match write_batch(&mut st, &batch, &keep) {
            Ok(stored) => {
                st.next_seq += stored + batch.tool_calls.len() as u64;
                stats.stored.fetch_add(stored, Ordering::Relaxed);
                stats.aggregated.fetch_add(batch.events.len() as u64 - stored, Ordering::Relaxed);
                for (row, _) in batch.events.iter().zip(&keep).filter(|(_, kept)| **kept) {
                    stats.stored_by_source[usize::from(row.source) % 16].fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(err) => {
                stats.failed.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                let mut first = stats.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| format!("{err:#}"));
            }
        }
        if let Some(retention) = st.retention.as_mut()
            && let Err(err) = retention.enforce(&st.conn)
        {
            let mut first = stats.first_error.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| format!("keeping the database under its size cap: {err:#}"));
        }
        if st.rollover.as_ref().is_some_and(|r| r.due(&st.conn).unwrap_or(false)) {
            match roll_over(&mut st, session_id) {
                Ok(id) => session_id = id,
                Err(err) => {
                    // Without a database there is nowhere to write: stop here,
                    // loudly, rather than count every later event as failed.
                    return Err(err.context("rolling the database over failed"));
                }
            }
        }
    }
    session::end(&st.conn, session_id, crate::clock::wall_now_ns())?;
    index_events(&st)?;
    // Fold the WAL back so the file is complete on its own when copied elsewhere.
    st.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    st.conn.close().map_err(|(_, err)| err)?;
    Ok(())
}

/// Writes one batch in one transaction; returns how many events got a row.
fn write_batch(st: &mut State, batch: &Batch, keep: &[bool]) -> Result<u64> {
    let known = st.named_pids.clone();
    let result = write_batch_tx(st, batch, keep);
    if result.is_err() {
        // The names went nowhere: the next try must write them again.
        st.named_pids = known;
    }
    result
}

fn write_batch_tx(st: &mut State, batch: &Batch, keep: &[bool]) -> Result<u64> {
    let State { conn, node, next_seq, named_pids, .. } = st;
    let node: &str = node;
    let tx = conn.transaction()?;
    let mut seq = *next_seq;
    {
        let mut stack =
            tx.prepare_cached("INSERT OR IGNORE INTO stack_traces (hash, ips, frames) VALUES (?1, ?2, ?3)")?;
        for row in &batch.stacks {
            stack.execute(params![row.hash, row.ips, row.frames])?;
        }
        let mut insert = tx.prepare_cached(INSERT_EVENT)?;
        let mut name = tx.prepare_cached(
            "INSERT OR REPLACE INTO process_names (pid, name, seen_at) VALUES (?1, ?2, ?3)",
        )?;
        let mut deltas = Deltas::default();
        let mut id = String::with_capacity(node.len() + 21);
        for (row, &kept) in batch.events.iter().zip(keep) {
            deltas.add(row, kept);
            let comm = row.comm_str();
            if named_pids.insert(row.pid) {
                name.execute(params![row.pid, comm, row.timestamp_ns])?;
            }
            if !kept {
                continue;
            }
            id.clear();
            id.push_str(node);
            id.push(':');
            id.push_str(&seq.to_string());
            seq += 1;
            insert.execute(params![
                id,
                row.timestamp_ns,
                row.pid,
                row.tid,
                row.source,
                row.op,
                row.duration_ns,
                row.gpu_id,
                row.arg0 as i64,
                row.arg1 as i64,
                row.ret_code,
                node,
                comm,
                row.cgroup_id as i64,
                row.stack_hash,
            ])?;
        }
        deltas.flush(&tx)?;
        for call in &batch.tool_calls {
            audit::insert(&tx, &format!("{node}:{seq}"), node, call)?;
            seq += 1;
        }
        super::host_rows::insert(&tx, &batch.snapshots, &batch.cgroups)?;
    }
    tx.commit()?;
    Ok(seq - *next_seq - batch.tool_calls.len() as u64)
}
