//! Building blocks shared by ingero's eBPF programs: the target filter, the
//! entry/return pairing of traced calls, and the ring buffer they report into.
//!
//! Each program family (`src/bin/*.rs`) links its own copy of these maps, so the
//! families stay independent objects that user space loads one by one.
#![no_std]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_get_current_cgroup_id,
    },
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use ingero_common::event::{CallEvent, EventHeader, counter};

/// Processes (tgids) whose calls are recorded. User space fills it with the
/// `--pid` targets or the launched command before that command runs.
#[map]
pub static TARGET_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Set to 1 by the loader to record every process that calls the library.
#[unsafe(no_mangle)]
static TRACE_ALL: u8 = 0;

/// One outstanding call per (thread, op), keyed so that a call into another
/// traced op from inside this one (the runtime calling itself) keeps both.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallKey {
    pub pid_tgid: u64,
    pub op: u64,
}

/// What the entry probe saw, kept until the matching return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallEntry {
    pub timestamp_ns: u64,
    pub arg0: u64,
    pub arg1: u64,
    /// User address of an out-parameter to read at return (0 = none).
    pub out_ptr: u64,
}

#[map]
static CALLS: HashMap<CallKey, CallEntry> = HashMap::with_max_entries(16384, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and eBPF programs do not migrate mid-run.
        unsafe { *slot += 1 };
    }
}

fn now_ns() -> u64 {
    // SAFETY: a helper with no arguments, valid in every program type.
    unsafe { bpf_ktime_get_ns() }
}

fn is_target(pid: u32) -> bool {
    // SAFETY: a read-only global patched by the loader; volatile so the
    // compiler cannot fold the default away.
    let trace_all = unsafe { core::ptr::read_volatile(&TRACE_ALL) };
    trace_all != 0 || unsafe { TARGET_PIDS.get(pid) }.is_some()
}

/// Remembers a call's entry if its process is traced.
#[inline(always)]
pub fn enter(op: u8, arg0: u64, arg1: u64, out_ptr: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return;
    }
    let key = CallKey {
        pid_tgid,
        op: op.into(),
    };
    let entry = CallEntry {
        timestamp_ns: now_ns(),
        arg0,
        arg1,
        out_ptr,
    };
    // A full map loses this call; the return probe counts it as unpaired.
    let _ = CALLS.insert(key, entry, 0);
}

/// Takes the entry of the call now returning on this thread.
#[inline(always)]
pub fn take_entry(op: u8) -> Option<(u64, CallEntry)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = CallKey {
        pid_tgid,
        op: op.into(),
    };
    // SAFETY: the value is copied out before the entry is removed.
    let entry = match unsafe { CALLS.get(key) } {
        Some(entry) => *entry,
        None => {
            if is_target((pid_tgid >> 32) as u32) {
                bump(counter::UNPAIRED_RETURN);
            }
            return None;
        }
    };
    let _ = CALLS.remove(key);
    Some((pid_tgid, entry))
}

/// Writes one paired call to the ring buffer, counting it if there is no room.
#[inline(always)]
pub fn emit(source: u8, op: u8, pid_tgid: u64, entry: &CallEntry, arg1: u64, ret_code: i32) {
    let now = now_ns();
    let Some(mut slot) = EVENTS.reserve::<CallEvent>(0) else {
        bump(counter::RINGBUF_FULL);
        return;
    };
    let header = EventHeader {
        timestamp_ns: entry.timestamp_ns,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        source,
        op,
        flags: 0,
        _reserved: 0,
        // SAFETY: a helper with no arguments, valid in every program type we use.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    slot.write(CallEvent {
        header,
        duration_ns: now.saturating_sub(entry.timestamp_ns),
        arg0: entry.arg0,
        arg1,
        ret_code,
        gpu_id: 0,
    });
    slot.submit(0);
}
