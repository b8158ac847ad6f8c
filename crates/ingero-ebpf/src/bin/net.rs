//! Socket sends and receives of traced processes (sendto/recvfrom syscalls):
//! the GPU waiting on an HTTP call or a parameter server shows up here.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use ingero_common::codes::{net_op, source};
use ingero_ebpf::kernel::{KernelEvent, current, field, global, is_traced, now_ns, submit};

#[repr(C)]
#[derive(Clone, Copy)]
struct Entered {
    timestamp_ns: u64,
    fd: u64,
    op: u8,
    _pad: [u8; 7],
}

/// The syscall each traced thread is in, keyed by pid_tgid.
#[map]
static IN_SYSCALL: HashMap<u64, Entered> = HashMap::with_max_entries(16384, 0);

#[unsafe(no_mangle)]
static SENDTO_FD: u32 = 0;
#[unsafe(no_mangle)]
static RECVFROM_FD: u32 = 0;
/// `ret` of sys_exit_* (the same offset for every syscall).
#[unsafe(no_mangle)]
static SYSCALL_RET: u32 = 0;

fn key() -> u64 {
    let (tgid, tid) = current();
    (u64::from(tgid) << 32) | u64::from(tid)
}

#[inline(always)]
fn enter(ctx: &TracePointContext, fd_offset: u32, op: u8) {
    let (tgid, _) = current();
    if !is_traced(tgid) {
        return;
    }
    let fd = field::<u64>(ctx, fd_offset).unwrap_or(0);
    let entered = Entered { timestamp_ns: now_ns(), fd, op, _pad: [0; 7] };
    let _ = IN_SYSCALL.insert(key(), entered, 0);
}

#[inline(always)]
fn exit(ctx: &TracePointContext) {
    let key = key();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(entered) = (unsafe { IN_SYSCALL.get(key) }).copied() else { return };
    let _ = IN_SYSCALL.remove(key);
    let ret = field::<i64>(ctx, global(&SYSCALL_RET)).unwrap_or(0);
    let mut event = KernelEvent::of_current(source::NET, entered.op);
    event.timestamp_ns = entered.timestamp_ns;
    event.duration_ns = now_ns().saturating_sub(entered.timestamp_ns);
    event.arg0 = entered.fd as i32 as u64;
    event.arg1 = ret.max(0) as u64;
    // A failed call keeps its negative errno; a successful one is 0.
    event.ret_code = ret.min(0) as i32;
    submit(&event);
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    enter(&ctx, global(&SENDTO_FD), net_op::SEND);
    0
}

#[tracepoint]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    enter(&ctx, global(&RECVFROM_FD), net_op::RECV);
    0
}

#[tracepoint]
pub fn sys_exit_recvfrom(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

// Children of traced processes make socket calls too (a data loader's workers).
ingero_ebpf::follow_forks!();

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
