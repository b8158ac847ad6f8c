//! Host kernel tracepoints: scheduling, page allocation, OOM kills and the
//! process lifecycle of traced processes.
//!
//! Scheduling and page allocation of untraced processes are summed in per-CPU
//! maps that user space drains every second into summary rows, so a busy
//! machine costs map updates, not ring-buffer records. Exec, exit, fork and OOM
//! go to their own CRITICAL ring, which a dedicated reader empties: a flood of
//! scheduler events can never push them out.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, generated::bpf_get_current_task},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{LruHashMap, PerCpuHashMap, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use ingero_common::{
    codes::{host_op, source},
    event::{COMM_LEN, counter},
};
use ingero_ebpf::kernel::{
    KernelEvent, TARGET_PIDS, current, current_cgroup, field, global, is_traced, now_ns, submit, submit_to,
};

#[map]
static CRITICAL: RingBuf = RingBuf::with_byte_size(2 << 20, 0);

/// Unread bytes in CRITICAL past which a submit wakes its reader.
#[unsafe(no_mangle)]
static CRITICAL_WAKEUP_BYTES: u64 = 0;

/// Why a thread is off its CPU since `timestamp_ns`: kept for every thread
/// (LRU, so exited threads age out), with the process id only when traced.
#[repr(C)]
#[derive(Clone, Copy)]
struct OffCpu {
    timestamp_ns: u64,
    cgroup_id: u64,
    /// The thread's process if it is traced, else 0.
    traced_tgid: u32,
    _pad: u32,
}

#[map]
static OFF_CPU: LruHashMap<u32, OffCpu> = LruHashMap::with_max_entries(32768, 0);

/// Context switches between untraced threads, keyed `(prev_tid << 32) | next_tid`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SwitchTotals {
    count: u64,
    off_cpu_ns: u64,
}

#[map]
static SWITCH_TOTALS: PerCpuHashMap<u64, SwitchTotals> = PerCpuHashMap::with_max_entries(4096, 0);

/// Page allocations of untraced processes, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy)]
struct AllocTotals {
    count: u64,
    bytes: u64,
}

#[map]
static ALLOC_TOTALS: PerCpuHashMap<u32, AllocTotals> = PerCpuHashMap::with_max_entries(4096, 0);

// Tracepoint field offsets, read by the loader from each format file (they
// differ between kernels); 0 means the field does not exist.
#[unsafe(no_mangle)]
static SWITCH_PREV_PID: u32 = 0;
#[unsafe(no_mangle)]
static SWITCH_NEXT_PID: u32 = 0;
#[unsafe(no_mangle)]
static SWITCH_NEXT_COMM: u32 = 0;
#[unsafe(no_mangle)]
static WAKEUP_PID: u32 = 0;
#[unsafe(no_mangle)]
static PAGE_ALLOC_ORDER: u32 = 0;
#[unsafe(no_mangle)]
static VICTIM_PID: u32 = 0;
/// A `__data_loc char[]` field: a u32 of (length << 16 | offset).
#[unsafe(no_mangle)]
static VICTIM_COMM: u32 = 0;
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD: u32 = 0;
#[unsafe(no_mangle)]
static PAGE_SIZE: u64 = 4096;

// `struct task_struct` member offsets from the kernel's BTF; 0 when unknown.
#[unsafe(no_mangle)]
static TASK_PID: u32 = 0;
#[unsafe(no_mangle)]
static TASK_TGID: u32 = 0;
#[unsafe(no_mangle)]
static TASK_EXIT_CODE: u32 = 0;

fn critical(event: &KernelEvent) {
    submit_to(&CRITICAL, event, counter::CRITICAL_FULL, global(&CRITICAL_WAKEUP_BYTES));
}

/// Reads a member of a kernel `task_struct` at a BTF offset.
fn task_member<T>(task: u64, offset: u32) -> Option<T> {
    if task == 0 || offset == 0 {
        return None;
    }
    // SAFETY: a kernel read that faults safely to an error.
    unsafe { bpf_probe_read_kernel((task + u64::from(offset)) as *const T) }.ok()
}

/// The thread coming off the CPU is remembered; the one coming back reports
/// how long it was away: one event if it is traced, else a summed total.
#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let now = now_ns();
    // At this tracepoint the current task is still the one being switched out.
    let (prev_tgid, _) = current();
    let prev_tid = field::<i32>(&ctx, global(&SWITCH_PREV_PID)).unwrap_or(0) as u32;
    let next_tid = field::<i32>(&ctx, global(&SWITCH_NEXT_PID)).unwrap_or(0) as u32;
    let prev_traced = is_traced(prev_tgid);
    if prev_tid != 0 {
        let off = OffCpu {
            timestamp_ns: now,
            cgroup_id: current_cgroup(),
            traced_tgid: if prev_traced { prev_tgid } else { 0 },
            _pad: 0,
        };
        let _ = OFF_CPU.insert(prev_tid, off, 0);
    }
    if next_tid == 0 {
        return 0;
    }
    // SAFETY: the value is copied out before the entry is removed.
    let off = unsafe { OFF_CPU.get(next_tid) }.copied();
    let off_cpu_ns = off.map_or(0, |o| now.saturating_sub(o.timestamp_ns));
    if off.is_some() {
        let _ = OFF_CPU.remove(next_tid);
    }
    if let Some(off) = off.filter(|o| o.traced_tgid != 0) {
        let mut comm = [0u8; COMM_LEN];
        if let Some(c) = field::<[u8; COMM_LEN]>(&ctx, global(&SWITCH_NEXT_COMM)) {
            comm = c;
        }
        submit(&KernelEvent {
            timestamp_ns: off.timestamp_ns,
            pid: off.traced_tgid,
            tid: next_tid,
            source: source::HOST,
            op: host_op::SCHED_SWITCH,
            cgroup_id: off.cgroup_id,
            comm,
            duration_ns: off_cpu_ns,
            arg0: 0,
            // The process that held this CPU until the traced thread got it back.
            arg1: u64::from(prev_tgid),
            ret_code: 0,
        });
        return 0;
    }
    if prev_traced {
        return 0;
    }
    let key = (u64::from(prev_tid) << 32) | u64::from(next_tid);
    match SWITCH_TOTALS.get_ptr_mut(key) {
        // SAFETY: this CPU's own copy of the value.
        Some(totals) => unsafe {
            (*totals).count += 1;
            (*totals).off_cpu_ns += off_cpu_ns;
        },
        None => {
            let _ = SWITCH_TOTALS.insert(key, SwitchTotals { count: 1, off_cpu_ns }, 0);
        }
    }
    0
}

/// A traced thread made runnable, and by whom (the current task).
#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    let Some(wakee) = field::<i32>(&ctx, global(&WAKEUP_PID)) else { return 0 };
    let wakee = wakee as u32;
    // A traced thread being woken went off-CPU while traced, so its OFF_CPU
    // entry names its process (the tracepoint gives only the thread id).
    // SAFETY: the value is copied out at once.
    let Some(off) = (unsafe { OFF_CPU.get(wakee) }).copied() else { return 0 };
    if off.traced_tgid == 0 {
        return 0;
    }
    let mut event = KernelEvent::of_current(source::HOST, host_op::SCHED_WAKEUP);
    event.arg0 = u64::from(wakee);
    event.arg1 = u64::from(off.traced_tgid);
    submit(&event);
    0
}

#[tracepoint]
pub fn mm_page_alloc(ctx: TracePointContext) -> u32 {
    let order = field::<u32>(&ctx, global(&PAGE_ALLOC_ORDER)).unwrap_or(0) & 31;
    let bytes = global(&PAGE_SIZE) << order;
    let (tgid, _) = current();
    if is_traced(tgid) {
        let mut event = KernelEvent::of_current(source::HOST, host_op::MM_PAGE_ALLOC);
        event.arg0 = bytes;
        submit(&event);
        return 0;
    }
    match ALLOC_TOTALS.get_ptr_mut(tgid) {
        // SAFETY: this CPU's own copy of the value.
        Some(totals) => unsafe {
            (*totals).count += 1;
            (*totals).bytes += bytes;
        },
        None => {
            let _ = ALLOC_TOTALS.insert(tgid, AllocTotals { count: 1, bytes }, 0);
        }
    }
    0
}

/// Every OOM kill on the machine, traced process or not: the event names the
/// victim (pid, comm); arg0 is the process whose allocation invoked the killer.
#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let mut event = KernelEvent::of_current(source::HOST, host_op::OOM_KILL);
    let victim = field::<i32>(&ctx, global(&VICTIM_PID)).unwrap_or(0) as u32;
    event.arg0 = u64::from(event.pid);
    event.arg1 = u64::from(victim);
    if victim != 0 {
        event.pid = victim;
        event.tid = victim;
        if let Some(loc) = field::<u32>(&ctx, global(&VICTIM_COMM)) {
            let mut comm = [0u8; COMM_LEN];
            let at = ctx.as_ptr() as u64 + u64::from(loc & 0xffff);
            // SAFETY: a kernel read of the record's own string; faults yield an error.
            if unsafe { bpf_probe_read_kernel_str_bytes(at as *const u8, &mut comm) }.is_ok() {
                event.comm = comm;
            }
        }
    }
    critical(&event);
    0
}

#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let (tgid, _) = current();
    if is_traced(tgid) {
        critical(&KernelEvent::of_current(source::HOST, host_op::PROCESS_EXEC));
    }
    0
}

/// A traced process ends (its last thread, where the kernel says so; else its
/// leader); arg0 is its exit status, or 128 + the signal that killed it.
#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current();
    if !is_traced(tgid) {
        return 0;
    }
    let group_dead = match global(&EXIT_GROUP_DEAD) {
        0 => tid == tgid,
        offset => field::<u8>(&ctx, offset).unwrap_or(0) != 0,
    };
    if !group_dead {
        return 0;
    }
    let mut event = KernelEvent::of_current(source::HOST, host_op::PROCESS_EXIT);
    // SAFETY: a helper with no arguments.
    let task = unsafe { bpf_get_current_task() };
    let status = task_member::<i32>(task, global(&TASK_EXIT_CODE)).unwrap_or(0);
    let signal = status & 0x7f;
    event.arg0 = if signal != 0 { 128 + signal as u64 } else { ((status >> 8) & 0xff) as u64 };
    critical(&event);
    0
}

/// A traced process forked: the child (a process, not a new thread) is traced
/// from before its first instruction, and the fork is reported.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn process_fork(ctx: RawTracePointContext) -> u32 {
    let (tgid, _) = current();
    if !is_traced(tgid) {
        return 0;
    }
    let child: u64 = ctx.arg(1);
    let Some(child_pid) = task_member::<i32>(child, global(&TASK_PID)) else { return 0 };
    let child_tgid = task_member::<i32>(child, global(&TASK_TGID)).unwrap_or(child_pid);
    if child_tgid != child_pid {
        return 0; // a new thread of the same process
    }
    let _ = TARGET_PIDS.insert(child_pid as u32, 1, 0);
    let mut event = KernelEvent::of_current(source::HOST, host_op::PROCESS_FORK);
    event.arg1 = child_pid as u64;
    critical(&event);
    0
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
