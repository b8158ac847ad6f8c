//! Per-minute and per-5-second counts of every event, kept or not
//! (`event_aggregates`, `event_aggregates_5s`).
//!
//! Each batch adds its deltas in the same transaction as its events, so after a
//! crash the aggregates still agree with the rows that were committed.

use std::collections::HashMap;

use anyhow::Result;
use ingero_common::codes::find_op;
use rusqlite::{Transaction, params};

use super::EventRow;

const MINUTE_NS: i64 = 60_000_000_000;
const FIVE_S_NS: i64 = 5_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Cell {
    count: i64,
    stored: i64,
    sum_dur: i64,
    min_dur: i64,
    max_dur: i64,
    sum_arg0: i64,
}

type Key = (i64, u8, u8, u32);

#[derive(Default)]
pub struct Deltas {
    minute: HashMap<Key, Cell>,
    five_s: HashMap<Key, Cell>,
}

/// Byte-valued first arguments are summed; pointers and handles are not.
fn sums_arg0(source: u8, op: u8) -> bool {
    find_op(source, op).is_some_and(|o| o.arg0.starts_with("bytes"))
}

fn add(cells: &mut HashMap<Key, Cell>, bucket_ns: i64, e: &EventRow, stored: bool) {
    let bucket = e.timestamp_ns - e.timestamp_ns.rem_euclid(bucket_ns);
    let arg0 = if sums_arg0(e.source, e.op) { e.arg0 as i64 } else { 0 };
    cells
        .entry((bucket, e.source, e.op, e.pid))
        .and_modify(|c| {
            c.count += 1;
            c.stored += i64::from(stored);
            c.sum_dur += e.duration_ns;
            c.min_dur = c.min_dur.min(e.duration_ns);
            c.max_dur = c.max_dur.max(e.duration_ns);
            c.sum_arg0 = c.sum_arg0.wrapping_add(arg0);
        })
        .or_insert(Cell {
            count: 1,
            stored: i64::from(stored),
            sum_dur: e.duration_ns,
            min_dur: e.duration_ns,
            max_dur: e.duration_ns,
            sum_arg0: arg0,
        });
}

impl Deltas {
    pub fn add(&mut self, e: &EventRow, stored: bool) {
        add(&mut self.minute, MINUTE_NS, e, stored);
        add(&mut self.five_s, FIVE_S_NS, e, stored);
    }

    /// Adds the deltas to the tables.
    pub fn flush(&self, tx: &Transaction<'_>) -> Result<()> {
        for (table, cells) in [("event_aggregates", &self.minute), ("event_aggregates_5s", &self.five_s)] {
            let mut upsert = tx.prepare_cached(&format!(
                "INSERT INTO {table} (bucket, source, op, pid, count, stored, sum_dur, min_dur, max_dur, sum_arg0) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (bucket, source, op, pid) DO UPDATE SET \
                 count = count + excluded.count, stored = stored + excluded.stored, \
                 sum_dur = sum_dur + excluded.sum_dur, min_dur = min(min_dur, excluded.min_dur), \
                 max_dur = max(max_dur, excluded.max_dur), sum_arg0 = sum_arg0 + excluded.sum_arg0"
            ))?;
            for (&(bucket, source, op, pid), c) in cells {
                upsert.execute(params![
                    bucket, source, op, pid, c.count, c.stored, c.sum_dur, c.min_dur, c.max_dur, c.sum_arg0
                ])?;
            }
        }
        Ok(())
    }
}
