//! Building blocks of the kernel-event families (host, block I/O, TCP, socket
//! syscalls): reading tracepoint fields at offsets the loader found in tracefs,
//! and reporting one finished event into a ring buffer.
//!
//! These records reuse [`CallEvent`], so the drainer reads every family alike;
//! `stack_id` is always -1 (host events carry no user stack).

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id},
    maps::RingBuf,
    programs::TracePointContext,
};
use ingero_common::event::{COMM_LEN, CallEvent, EventHeader};

use crate::{EVENTS, WAKEUP_BYTES, bump};
pub use crate::{TARGET_PIDS, now_ns};

/// Reads a global the loader patched (a field offset, a size); volatile so the
/// compiler cannot fold the default away.
#[inline(always)]
pub fn global<T: Copy>(value: &T) -> T {
    // SAFETY: a read-only global of plain data.
    unsafe { core::ptr::read_volatile(value) }
}

/// The field of the tracepoint record at `offset` (from its format file); None
/// when the loader found no such field (offset 0 is the common header).
#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == 0 {
        return None;
    }
    // SAFETY: the offset comes from the tracepoint's own format description.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// Whether process `tgid` is traced (a target or a child of one).
#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    // SAFETY: presence check only.
    unsafe { TARGET_PIDS.get(tgid) }.is_some()
}

/// The calling task as (tgid, tid).
#[inline(always)]
pub fn current() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

#[inline(always)]
pub fn current_cgroup() -> u64 {
    // SAFETY: a helper with no arguments, valid in tracepoint programs.
    unsafe { bpf_get_current_cgroup_id() }
}

#[inline(always)]
pub fn current_comm() -> [u8; COMM_LEN] {
    bpf_get_current_comm().unwrap_or([0; COMM_LEN])
}

/// One finished kernel event, before it becomes a ring-buffer record.
pub struct KernelEvent {
    pub timestamp_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub source: u8,
    pub op: u8,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    pub duration_ns: u64,
    pub arg0: u64,
    pub arg1: u64,
    pub ret_code: i32,
}

impl KernelEvent {
    /// An event of the calling task, happening now, with no duration or arguments.
    #[inline(always)]
    pub fn of_current(source: u8, op: u8) -> Self {
        let (pid, tid) = current();
        Self {
            timestamp_ns: now_ns(),
            pid,
            tid,
            source,
            op,
            cgroup_id: current_cgroup(),
            comm: current_comm(),
            duration_ns: 0,
            arg0: 0,
            arg1: 0,
            ret_code: 0,
        }
    }

    #[inline(always)]
    fn record(&self) -> CallEvent {
        CallEvent {
            header: EventHeader {
                timestamp_ns: self.timestamp_ns,
                pid: self.pid,
                tid: self.tid,
                source: self.source,
                op: self.op,
                flags: 0,
                _reserved: 0,
                cgroup_id: self.cgroup_id,
                comm: self.comm,
            },
            duration_ns: self.duration_ns,
            arg0: self.arg0,
            arg1: self.arg1,
            ret_code: self.ret_code,
            gpu_id: 0,
            stack_id: -1,
            py_stack_id: 0,
        }
    }
}

/// Writes `event` into `ring`, counting it under `full_counter` if there is no
/// room; wakes the reader once `wakeup_bytes` are waiting.
#[inline(always)]
pub fn submit_to(ring: &RingBuf, event: &KernelEvent, full_counter: u32, wakeup_bytes: u64) {
    let Some(mut slot) = ring.reserve::<CallEvent>(0) else {
        bump(full_counter);
        return;
    };
    slot.write(event.record());
    let pending = ring.query(BPF_RB_AVAIL_DATA.into());
    slot.submit(if pending >= wakeup_bytes { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP }.into());
}

/// Writes `event` into the family's EVENTS ring.
#[inline(always)]
pub fn submit(event: &KernelEvent) {
    submit_to(&EVENTS, event, ingero_common::event::counter::RINGBUF_FULL, global(&WAKEUP_BYTES));
}
