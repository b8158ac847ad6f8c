//! Records written by the eBPF programs into the ring buffers.
//!
//! Every record starts with an [`EventHeader`]; its `source` and `op` say which
//! record follows, so a reader can dispatch on the first 48 bytes alone.

/// Length of a task's `comm`, as the kernel keeps it.
pub const COMM_LEN: usize = 16;

/// The part every event shares (48 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the call was entered.
    pub timestamp_ns: u64,
    /// Thread-group id: the process id as user space sees it.
    pub pid: u32,
    /// Kernel task id: the thread id as user space sees it.
    pub tid: u32,
    pub source: u8,
    pub op: u8,
    pub flags: u16,
    pub _reserved: u32,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// A traced API call: entry paired with its return on the same thread (88 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CallEvent {
    pub header: EventHeader,
    /// Entry to return, in nanoseconds.
    pub duration_ns: u64,
    pub arg0: u64,
    pub arg1: u64,
    /// The call's return value (`cudaError_t` / `CUresult`).
    pub ret_code: i32,
    pub gpu_id: u32,
    /// The caller's user stack in the family's STACKS map, or -1.
    pub stack_id: i32,
    /// The caller's Python frames in the family's PY_STACKS map, or 0.
    pub py_stack_id: u32,
}

/// Per-thread slots for calls in progress in each probe family (a power of
/// two); threads whose slot is taken fall back to a hash map.
pub const CALL_SLOTS: u32 = 16384;

/// Per-CPU counters the programs keep beside their ring buffer.
pub mod counter {
    /// Records lost because the ring buffer had no room.
    pub const RINGBUF_FULL: u32 = 0;
    /// Returns whose entry was never seen (attached mid-call, or entry map
    /// full); not counted while sampling, when most returns have no entry.
    pub const UNPAIRED_RETURN: u32 = 1;
    /// Calls of target processes skipped by 1-in-N sampling.
    pub const SAMPLED_OUT: u32 = 2;
    /// Exec/exit/fork/OOM records lost because the host family's critical
    /// ring had no room: never expected, reported loudly when it happens.
    pub const CRITICAL_FULL: u32 = 3;
    /// CUDA Graph records lost because their own ring had no room.
    pub const GRAPH_FULL: u32 = 4;
    pub const COUNT: u32 = 5;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, valid for any bit pattern.
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::CallEvent {}
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 48);
const _: () = assert!(core::mem::size_of::<CallEvent>() == 88);
