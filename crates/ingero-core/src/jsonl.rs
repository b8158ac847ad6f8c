//! `ingero trace --json`: one JSON object per event per line on stdout,
//! written by the drainer as events arrive (Python never sees each event).

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    os::fd::{AsFd as _, OwnedFd},
};

use anyhow::{Context as _, Result};
use ingero_common::codes::{SOURCES, find_op};
use serde_json::json;

use crate::store::EventRow;

/// The JSON line of one event: the original's fields, with the code names
/// beside the stored integers so a reader needs no lookup table.
pub fn event_json(row: &EventRow) -> serde_json::Value {
    let source = SOURCES.iter().find(|s| s.id == row.source).map_or("", |s| s.name);
    let op = find_op(row.source, row.op).map_or("", |o| o.name);
    json!({
        "timestamp": row.timestamp_ns,
        "pid": row.pid,
        "tid": row.tid,
        "process_name": row.comm_str(),
        "source": source,
        "source_id": row.source,
        "op": op,
        "op_id": row.op,
        "duration_ns": row.duration_ns,
        "gpu_id": row.gpu_id,
        "args": [row.arg0, row.arg1],
        "return_code": row.ret_code,
        "cgroup_id": row.cgroup_id,
    })
}

/// A buffered writer on a duplicate of stdout, flushed after each drain pass.
pub struct JsonLines {
    out: BufWriter<File>,
}

impl JsonLines {
    pub fn stdout() -> Result<Self> {
        let fd: OwnedFd =
            std::io::stdout().as_fd().try_clone_to_owned().context("cannot duplicate stdout")?;
        Ok(Self { out: BufWriter::with_capacity(1 << 16, File::from(fd)) })
    }

    pub fn write(&mut self, row: &EventRow) -> Result<()> {
        serde_json::to_writer(&mut self.out, &event_json(row))?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        Ok(self.out.flush()?)
    }
}
