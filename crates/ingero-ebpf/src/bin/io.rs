//! Block I/O requests, machine-wide: a disk held by any process can starve a
//! data loader. Each request is timed from issue to completion and reported
//! under the task that issued it (completion runs in interrupt context).
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use ingero_common::{
    codes::{io_op, source},
    event::COMM_LEN,
};
use ingero_ebpf::kernel::{
    KernelEvent, current, current_cgroup, current_comm, field, global, now_ns, submit,
};

#[repr(C)]
#[derive(Clone, Copy)]
struct RequestKey {
    dev: u32,
    _pad: u32,
    sector: u64,
}

/// What the issue tracepoint saw, kept until the request completes.
#[repr(C)]
#[derive(Clone, Copy)]
struct Issued {
    timestamp_ns: u64,
    cgroup_id: u64,
    pid: u32,
    tid: u32,
    sectors: u32,
    op: u8,
    _pad: [u8; 3],
    comm: [u8; COMM_LEN],
}

#[map]
static IN_FLIGHT: HashMap<RequestKey, Issued> = HashMap::with_max_entries(8192, 0);

// Field offsets of block_rq_issue and block_rq_complete (the same in both on
// the kernels we know; read separately to be safe).
#[unsafe(no_mangle)]
static ISSUE_DEV: u32 = 0;
#[unsafe(no_mangle)]
static ISSUE_SECTOR: u32 = 0;
#[unsafe(no_mangle)]
static ISSUE_NR_SECTOR: u32 = 0;
#[unsafe(no_mangle)]
static ISSUE_RWBS: u32 = 0;
#[unsafe(no_mangle)]
static COMPLETE_DEV: u32 = 0;
#[unsafe(no_mangle)]
static COMPLETE_SECTOR: u32 = 0;
#[unsafe(no_mangle)]
static COMPLETE_ERROR: u32 = 0;

/// The op of a request from its `rwbs` flags ("R", "WS", "FWS", "D", ...);
/// None for requests that move no data (a bare flush). Scans every byte with
/// no early exit: simple enough for the verifier to follow.
#[inline(always)]
fn classify(rwbs: &[u8; 8]) -> Option<u8> {
    let (mut discard, mut write, mut read) = (false, false, false);
    for &c in rwbs {
        discard |= c == b'D';
        write |= c == b'W';
        read |= c == b'R';
    }
    if discard {
        Some(io_op::DISCARD)
    } else if write {
        Some(io_op::WRITE)
    } else if read {
        Some(io_op::READ)
    } else {
        None
    }
}

#[tracepoint]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    let Some(rwbs) = field::<[u8; 8]>(&ctx, global(&ISSUE_RWBS)) else { return 0 };
    let Some(op) = classify(&rwbs) else { return 0 };
    let (Some(dev), Some(sector)) =
        (field::<u32>(&ctx, global(&ISSUE_DEV)), field::<u64>(&ctx, global(&ISSUE_SECTOR)))
    else {
        return 0;
    };
    let (pid, tid) = current();
    let issued = Issued {
        timestamp_ns: now_ns(),
        cgroup_id: current_cgroup(),
        pid,
        tid,
        sectors: field::<u32>(&ctx, global(&ISSUE_NR_SECTOR)).unwrap_or(0),
        op,
        _pad: [0; 3],
        comm: current_comm(),
    };
    let _ = IN_FLIGHT.insert(RequestKey { dev, _pad: 0, sector }, issued, 0);
    0
}

#[tracepoint]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    let (Some(dev), Some(sector)) =
        (field::<u32>(&ctx, global(&COMPLETE_DEV)), field::<u64>(&ctx, global(&COMPLETE_SECTOR)))
    else {
        return 0;
    };
    let key = RequestKey { dev, _pad: 0, sector };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(issued) = (unsafe { IN_FLIGHT.get(key) }).copied() else { return 0 };
    let _ = IN_FLIGHT.remove(key);
    submit(&KernelEvent {
        timestamp_ns: issued.timestamp_ns,
        pid: issued.pid,
        tid: issued.tid,
        source: source::IO,
        op: issued.op,
        cgroup_id: issued.cgroup_id,
        comm: issued.comm,
        duration_ns: now_ns().saturating_sub(issued.timestamp_ns),
        arg0: u64::from(issued.sectors),
        arg1: sector,
        // The block layer's status as a negative errno (0: success).
        ret_code: field::<i32>(&ctx, global(&COMPLETE_ERROR)).unwrap_or(0),
    });
    0
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
