//! Building blocks shared by ingero's eBPF programs: the target filter, the
//! entry/return pairing of traced calls, and the ring buffer they report into.
//!
//! Each program family (`src/bin/*.rs`) links its own copy of these maps, so the
//! families stay independent objects that user space loads one by one.
#![no_std]
// The BPF target's `core` has no compare-and-swap on atomics; its intrinsic
// does, lowered to the BPF v3 cmpxchg (see atomic.rs).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics), allow(internal_features))]

mod atomic;
mod python;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::bpf_get_current_cgroup_id,
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{ProbeContext, RetProbeContext, TracePointContext, tracing::StackIdContext as _},
};
use ingero_common::{
    codes::source,
    event::{self, CallEvent, EventHeader, counter},
};

pub mod kernel;

/// Processes (tgids) whose calls are recorded. User space fills it with the
/// `--pid` targets or the launched command before that command runs; the fork
/// tracepoint adds their children (and, as the tracepoint cannot tell, new
/// threads, which user space prunes).
#[map]
pub static TARGET_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Offset of `child_pid` in the sched_process_fork record, read by the loader
/// from the tracepoint's format file (it moved when 6.x made comm dynamic).
#[unsafe(no_mangle)]
static FORK_CHILD_PID_OFFSET: u32 = 0;

/// Enrols the new task if a target process forked it, so children of a traced
/// command (DataLoader workers, torchrun ranks) are traced from their start.
#[inline(always)]
pub fn enrol_forked_child(ctx: &TracePointContext) {
    // SAFETY: read-only globals patched by the loader.
    let offset = unsafe { core::ptr::read_volatile(&FORK_CHILD_PID_OFFSET) };
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if offset == 0 || unsafe { TARGET_PIDS.get(parent) }.is_none() {
        return;
    }
    // SAFETY: a field of the tracepoint record at the offset its format gives.
    if let Ok(child) = unsafe { ctx.read_at::<i32>(offset as usize) } {
        let _ = TARGET_PIDS.insert(child as u32, 1, 0);
    }
}

/// Set to 1 by the loader to record every process that calls the library.
#[unsafe(no_mangle)]
static TRACE_ALL: u8 = 0;

/// One outstanding call per (thread, source, op), so that a traced call made
/// from inside another (the runtime calling itself) keeps both.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallKey {
    pub pid_tgid: u64,
    pub source_op: u64,
}

const fn call_key(pid_tgid: u64, source: u8, op: u8) -> CallKey {
    CallKey { pid_tgid, source_op: ((source as u64) << 8) | op as u64 }
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
    /// Id of the caller's stack in STACKS, or -1.
    pub stack_id: i64,
    /// Id of the caller's Python frames in PY_STACKS, or 0.
    pub py_stack_id: u64,
}

/// Calls in progress, one slot per thread (by the low bits of its tid). An array
/// slot is found without a helper call and claimed with one atomic exchange,
/// where a hash map costs a locked insert and a delete per call (measured:
/// about 230 ns of the probes' 930 ns in the benchmark VM). A slot another
/// thread holds, or a nested call on the same thread, falls back to CALLS.
#[map]
static CALL_SLOTS: Array<CallSlot> = Array::with_max_entries(event::CALL_SLOTS, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallSlot {
    /// pid_tgid of the thread whose call this is, 0 when free.
    owner: u64,
    source_op: u64,
    entry: CallEntry,
}

/// The calls that found their thread's slot taken.
#[map]
static CALLS: HashMap<CallKey, CallEntry> = HashMap::with_max_entries(16384, 0);

/// Slots in use minus one (a power of two minus one). The loader lowers it
/// only to make threads share slots, so tests can drive the fallback.
#[unsafe(no_mangle)]
static CALL_SLOT_MASK: u32 = event::CALL_SLOTS - 1;

#[inline(always)]
fn call_slot(pid_tgid: u64) -> Option<*mut CallSlot> {
    // SAFETY: a read-only global patched by the loader.
    let mask = unsafe { core::ptr::read_volatile(&CALL_SLOT_MASK) };
    CALL_SLOTS.get_ptr_mut(pid_tgid as u32 & mask)
}

/// Keeps `entry` in the thread's slot if it is free or already holds this
/// same call (left by a thread that died inside it, or re-entered); false if
/// the slot is another's.
#[inline(always)]
fn keep_in_slot(pid_tgid: u64, key: &CallKey, entry: &CallEntry) -> bool {
    let Some(slot) = call_slot(pid_tgid) else { return false };
    // SAFETY: `owner` is a u64 in a map value, aligned, and only ever accessed
    // atomically by other threads; the other fields belong to the owner.
    unsafe {
        let current = atomic::compare_exchange(&raw mut (*slot).owner, 0, pid_tgid);
        if current != 0 && !(current == pid_tgid && (*slot).source_op == key.source_op) {
            return false;
        }
        (*slot).source_op = key.source_op;
        (*slot).entry = *entry;
    }
    true
}

/// Takes this thread's call `key` out of its slot, freeing the slot.
#[inline(always)]
fn take_from_slot(pid_tgid: u64, key: &CallKey) -> Option<CallEntry> {
    let slot = call_slot(pid_tgid)?;
    // SAFETY: as in keep_in_slot; the entry is copied before the slot is
    // released, and the exchange orders the two.
    unsafe {
        if core::ptr::read_volatile(&raw const (*slot).owner) != pid_tgid
            || (*slot).source_op != key.source_op
        {
            return None;
        }
        let entry = (*slot).entry;
        atomic::swap(&raw mut (*slot).owner, 0);
        Some(entry)
    }
}

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// CUDA Graph lifecycle records, in a ring of their own: a flood of kernel
/// launches that fills EVENTS must not cost the few captures and
/// instantiations that explain a graph's launches. Sized by the loader.
#[map]
static GRAPH_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Unread bytes in EVENTS past which a submit wakes the drainer; below it the
/// drainer finds events on its own short poll. Waking it per event would cost
/// the traced thread more than the probe itself. Set by the loader.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Settings user space changes while tracing: [`SAMPLING_RATE`], [`CAPTURE_STACKS`].
#[map]
static SETTINGS: Array<u32> = Array::with_max_entries(2, 0);
/// SETTINGS index: record 1 call in N (0 or 1: every call).
pub const SAMPLING_RATE: u32 = 0;
/// SETTINGS index: 1 to capture the caller's user stack at each traced call.
pub const CAPTURE_STACKS: u32 = 1;

/// User stacks of traced calls, deduplicated by the kernel; events carry the id.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(4096, 0);

/// The calling thread's user stack id, or -1 (not captured, or the map is full).
#[inline(always)]
fn stack_id(ctx: &ProbeContext) -> i64 {
    if SETTINGS.get(CAPTURE_STACKS).is_none_or(|&on| on == 0) {
        return -1;
    }
    ctx.get_stackid(&STACKS, u64::from(aya_ebpf::bindings::BPF_F_USER_STACK)).map_or(-1, i64::from)
}

/// Calls of target processes seen on this CPU, for 1-in-N sampling.
#[map]
static SAMPLE_TICKS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

fn sampling_rate() -> u64 {
    SETTINGS.get(SAMPLING_RATE).map_or(1, |&rate| u64::from(rate).max(1))
}

/// Whether this call is the one in N that sampling keeps.
fn sampled_in(rate: u64) -> bool {
    if rate <= 1 {
        return true;
    }
    let Some(ticks) = SAMPLE_TICKS.get_ptr_mut(0) else { return true };
    // SAFETY: per-CPU slot, and eBPF programs do not migrate mid-run.
    let tick = unsafe {
        *ticks += 1;
        *ticks
    };
    if tick % rate == 0 {
        return true;
    }
    bump(counter::SAMPLED_OUT);
    false
}

/// The device each thread last selected (cudaSetDevice is per thread); LRU so
/// threads that exit without a trace of it age out.
#[map]
static THREAD_DEVICE: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// Whether any thread selected a device; until one does, every call ran on
/// device 0 and the return probe skips the THREAD_DEVICE lookup.
#[map]
static DEVICE_SELECTED: Array<u32> = Array::with_max_entries(1, 0);

/// Records the device the calling thread now uses.
#[inline(always)]
pub fn set_thread_device(device: u32) {
    let _ = THREAD_DEVICE.insert(bpf_get_current_pid_tgid(), device, 0);
    if let Some(selected) = DEVICE_SELECTED.get_ptr_mut(0) {
        // SAFETY: a u32 in a map value; a racing store writes the same 1.
        unsafe { *selected = 1 };
    }
}

/// The device the calling thread last selected, 0 if none.
#[inline(always)]
fn thread_device(pid_tgid: u64) -> u32 {
    if DEVICE_SELECTED.get(0).is_none_or(|&selected| selected == 0) {
        return 0;
    }
    // SAFETY: the value is copied out at once.
    unsafe { THREAD_DEVICE.get(pid_tgid) }.copied().unwrap_or(0)
}

/// The `n`th machine-word argument of the probed function (0-based), from its
/// register or, past the registers, from the caller's stack; 0 if unreadable.
#[inline(always)]
pub fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    const IN_REGISTERS: usize = 6;
    #[cfg(not(bpf_target_arch = "x86_64"))]
    const IN_REGISTERS: usize = 8;
    if n < IN_REGISTERS {
        return ctx.arg::<u64>(n).unwrap_or(0);
    }
    stack_arg(ctx, n - IN_REGISTERS)
}

/// An `int` argument: the ABI leaves the upper half of its register or stack
/// slot undefined, so only the low 32 bits mean anything (sign-extended).
#[inline(always)]
pub fn int_arg(ctx: &ProbeContext, n: usize) -> u64 {
    arg(ctx, n) as i32 as i64 as u64
}

/// The `i`th argument word passed on the stack, read at function entry.
#[inline(always)]
fn stack_arg(ctx: &ProbeContext, i: usize) -> u64 {
    // SAFETY: `regs` is the probe's own register snapshot.
    #[cfg(bpf_target_arch = "x86_64")]
    let slot = unsafe { (*ctx.regs).rsp } + 8 * (i as u64 + 1); // past the return address
    #[cfg(bpf_target_arch = "aarch64")]
    let slot = unsafe { (*ctx.regs).sp } + 8 * i as u64;
    #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
    let slot = {
        let _ = (ctx, i);
        return 0;
    };
    // SAFETY: reading the traced thread's own stack; a fault yields 0.
    unsafe { bpf_probe_read_user(slot as *const u64) }.unwrap_or(0)
}

/// Reads the pointer-sized value a call stored through its out-parameter.
#[inline(always)]
pub fn read_out_param(entry: &CallEntry) -> u64 {
    if entry.out_ptr == 0 {
        return 0;
    }
    // SAFETY: reads the caller's out-parameter; a fault yields 0.
    unsafe { bpf_probe_read_user(entry.out_ptr as *const u64) }.unwrap_or(0)
}

pub(crate) fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and eBPF programs do not migrate mid-run.
        unsafe { *slot += 1 };
    }
}

pub fn now_ns() -> u64 {
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
pub fn enter(ctx: &ProbeContext, source: u8, op: u8, arg0: u64, arg1: u64, out_ptr: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Source 0 is bookkeeping (cudaSetDevice), never stored, so never sampled;
    // graph calls are few and each one matters to the graph's story.
    let sampled = source == 0 || source == source::CUDA_GRAPH || sampled_in(sampling_rate());
    if !is_target((pid_tgid >> 32) as u32) || !sampled {
        return;
    }
    let key = call_key(pid_tgid, source, op);
    let stack_id = if source == 0 { -1 } else { stack_id(ctx) };
    // Python frames only beside a captured stack: off with --no-stack.
    let py_stack_id = if stack_id < 0 { 0 } else { python::python_stack_id(pid_tgid) };
    let entry = CallEntry {
        timestamp_ns: now_ns(),
        arg0,
        arg1,
        out_ptr,
        stack_id,
        py_stack_id: u64::from(py_stack_id),
    };
    if !keep_in_slot(pid_tgid, &key, &entry) {
        // A full map loses this call; the return probe counts it as unpaired.
        let _ = CALLS.insert(key, entry, 0);
    }
}

/// Takes the entry of the call now returning on this thread.
#[inline(always)]
pub fn take_entry(source: u8, op: u8) -> Option<(u64, CallEntry)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = call_key(pid_tgid, source, op);
    if let Some(entry) = take_from_slot(pid_tgid, &key) {
        return Some((pid_tgid, entry));
    }
    // SAFETY: the value is copied out before the entry is removed.
    let entry = match unsafe { CALLS.get(key) } {
        Some(entry) => *entry,
        None => {
            if sampling_rate() <= 1 && is_target((pid_tgid >> 32) as u32) {
                bump(counter::UNPAIRED_RETURN);
            }
            return None;
        }
    };
    let _ = CALLS.remove(key);
    Some((pid_tgid, entry))
}

/// Reports the call returning now: `arg1` computes the second argument from
/// (pid_tgid, entry, return code); the first is the one kept at entry.
#[inline(always)]
pub fn finish(ctx: &RetProbeContext, source: u8, op: u8, arg1: impl FnOnce(u64, &CallEntry, i32) -> u64) {
    if let Some((pid_tgid, entry)) = take_entry(source, op) {
        let ret_code: i32 = ctx.ret();
        let arg1 = arg1(pid_tgid, &entry, ret_code);
        emit(source, op, pid_tgid, &entry, arg1, ret_code);
    }
}

/// For [`finish`]: the second argument was already known at entry.
pub fn arg1_from_entry(_: u64, entry: &CallEntry, _: i32) -> u64 {
    entry.arg1
}

/// For [`finish`]: the second argument is what the call wrote through its
/// out-parameter, if it succeeded.
pub fn arg1_from_out_param(_: u64, entry: &CallEntry, ret_code: i32) -> u64 {
    if ret_code == 0 { read_out_param(entry) } else { 0 }
}

/// The ring a source's records go to, the counter of records it had no room
/// for, and the unread bytes past which a submit wakes the drainer (a quarter
/// of the ring). Constant per program: `source` is.
#[inline(always)]
fn ring_of(source: u8) -> (&'static RingBuf, u32, u64) {
    if source == source::CUDA_GRAPH {
        (&GRAPH_EVENTS, counter::GRAPH_FULL, GRAPH_EVENTS.query(BPF_RB_RING_SIZE.into()) / 4)
    } else {
        // SAFETY: a read-only global patched by the loader.
        (&EVENTS, counter::RINGBUF_FULL, unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) })
    }
}

/// Writes one paired call to the ring buffer, counting it if there is no room.
#[inline(always)]
fn emit(source: u8, op: u8, pid_tgid: u64, entry: &CallEntry, arg1: u64, ret_code: i32) {
    let now = now_ns();
    let (ring, full, wakeup_bytes) = ring_of(source);
    let Some(mut slot) = ring.reserve::<CallEvent>(0) else {
        bump(full);
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
        gpu_id: thread_device(pid_tgid),
        stack_id: entry.stack_id as i32,
        py_stack_id: entry.py_stack_id as u32,
    });
    let pending = ring.query(BPF_RB_AVAIL_DATA.into());
    slot.submit(if pending >= wakeup_bytes { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP }.into());
}

// Host-side `cargo clippy` builds these crates beside std; only the BPF target
// needs a panic handler (the verifier proves programs never reach it).
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Defines `enrol_forked_child`, the sched_process_fork tracepoint program of
/// a family (each family object has its own target map to keep).
#[macro_export]
macro_rules! follow_forks {
    () => {
        #[::aya_ebpf::macros::tracepoint]
        pub fn enrol_forked_child(ctx: ::aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::enrol_forked_child(&ctx);
            0
        }
    };
}

/// Defines the entry and return programs of one traced call.
///
/// `traced_call!(entry_name, return_name, SOURCE, OP, |ctx| (arg0, arg1, out_ptr), arg1_at_return)`:
/// the entry keeps `arg0`, `arg1` and the user address `out_ptr` (0 for none);
/// the return reports `arg1_at_return(pid_tgid, &entry, return_code)` as arg1.
/// User space attaches `return_name` as the uretprobe of `entry_name`'s symbol.
#[macro_export]
macro_rules! traced_call {
    ($entry:ident, $ret:ident, $source:expr, $op:expr,
     |$ctx:ident| ($arg0:expr, $arg1:expr, $out:expr), $arg1_at_return:expr) => {
        #[::aya_ebpf::macros::uprobe]
        pub fn $entry($ctx: ::aya_ebpf::programs::ProbeContext) -> u32 {
            $crate::enter(&$ctx, $source, $op, $arg0, $arg1, $out);
            0
        }

        #[::aya_ebpf::macros::uretprobe]
        pub fn $ret(ctx: ::aya_ebpf::programs::RetProbeContext) -> u32 {
            $crate::finish(&ctx, $source, $op, $arg1_at_return);
            0
        }
    };
}
