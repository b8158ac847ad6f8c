//! Python frames at a traced call: finds the calling thread's PyThreadState in
//! a process user space registered, and copies its frame chain's (code object,
//! instruction) pairs into PY_STACKS, deduplicated by content like STACKS.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use ingero_common::python::{
    FRAME_BLOCK_WORDS, FRAME_OWNED_BY_CSTACK, MAX_PY_FRAMES, MAX_PY_THREADS, NO_OFFSET, PyFrameRef,
    PyProcess, PyStack,
};

/// Python processes (tgid) and their CPython's layout, written by user space.
#[map]
static PY_PROCS: HashMap<u32, PyProcess> = HashMap::with_max_entries(4096, 0);

/// Python frames of call sites, by content hash; events carry the key. LRU, so
/// a long trace with ever new call sites keeps the recent ones.
#[map]
static PY_STACKS: LruHashMap<u32, PyStack> = LruHashMap::with_max_entries(8192, 0);

/// The first bytes of the frame being walked.
#[map]
static PY_FRAME_BLOCK: PerCpuArray<[u64; FRAME_BLOCK_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Room to assemble a PyStack (too big for the 512-byte eBPF stack).
#[map]
static PY_SCRATCH: PerCpuArray<PyStack> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    // SAFETY: reads the traced process's memory; a fault yields 0.
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

/// Each Python thread's PyThreadState (by pid_tgid), found once: thread
/// states live as long as their thread.
#[map]
static PY_THREADS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// The PyThreadState of the calling thread, or 0.
#[inline(always)]
fn thread_state(proc: &PyProcess, pid_tgid: u64) -> u64 {
    let tid = pid_tgid as u32;
    // SAFETY: the value is copied at once.
    if let Some(&tstate) = unsafe { PY_THREADS.get(pid_tgid) } {
        // A tid reused by a new thread has a new thread state.
        let native = proc.tstate_native_thread_id;
        if native == NO_OFFSET || read_u64(tstate + u64::from(native)) as u32 == tid {
            return tstate;
        }
    }
    let tstate = find_thread_state(proc, tid);
    if tstate != 0 {
        let _ = PY_THREADS.insert(pid_tgid, tstate, 0);
    }
    tstate
}

#[inline(always)]
fn find_thread_state(proc: &PyProcess, tid: u32) -> u64 {
    let interp = read_u64(proc.interpreters_head);
    if interp == 0 {
        return 0;
    }
    let mut tstate = read_u64(interp + u64::from(proc.interp_threads_head));
    if proc.tstate_native_thread_id == NO_OFFSET {
        // No native thread id (3.10): only a lone thread state is surely ours.
        let only = tstate != 0 && read_u64(tstate + u64::from(proc.tstate_next)) == 0;
        return if only { tstate } else { 0 };
    }
    for _ in 0..MAX_PY_THREADS {
        if tstate == 0 {
            return 0;
        }
        if read_u64(tstate + u64::from(proc.tstate_native_thread_id)) as u32 == tid {
            return tstate;
        }
        tstate = read_u64(tstate + u64::from(proc.tstate_next));
    }
    0
}

/// The id in PY_STACKS of the calling thread's Python frames, or 0 (not a
/// registered Python process, no Python frames, or a hash collision).
#[inline(always)]
pub fn python_stack_id(pid_tgid: u64) -> u32 {
    // SAFETY: the value is copied at once.
    let Some(proc) = (unsafe { PY_PROCS.get((pid_tgid >> 32) as u32) }).copied() else { return 0 };
    let tstate = thread_state(&proc, pid_tgid);
    if tstate == 0 {
        return 0;
    }
    let mut frame = read_u64(tstate + u64::from(proc.tstate_frame));
    if proc.cframe_current_frame != NO_OFFSET && frame != 0 {
        frame = read_u64(frame + u64::from(proc.cframe_current_frame));
    }
    let Some(stack) = PY_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU slot, and eBPF programs do not migrate mid-run.
    let stack = unsafe { &mut *stack };
    // FNV-1a over the (code, instruction) pairs, kept as 64 bits: the low half
    // keys the map, the high half is stored to tell colliding stacks apart.
    let Some(block) = PY_FRAME_BLOCK.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU slot, as above.
    let block = unsafe { &mut *block };
    let block_len = (proc.frame_block as usize).min(FRAME_BLOCK_WORDS * 8);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut len: u32 = 0;
    for i in 0..MAX_PY_FRAMES {
        if frame == 0 {
            break;
        }
        // One read per frame: the fields the walk needs lie in its first bytes.
        // SAFETY: reads the traced process's memory into our own buffer.
        let bytes = unsafe { core::slice::from_raw_parts_mut(block.as_mut_ptr().cast::<u8>(), block_len) };
        if unsafe { bpf_probe_read_user_buf(frame as *const u8, bytes) }.is_err() {
            break;
        }
        let field = |offset: u32| {
            let word = block[(offset / 8) as usize % FRAME_BLOCK_WORDS];
            word >> ((offset % 8) * 8)
        };
        // Shim frames of the C stack (3.12+) are kept as code 0, which user space skips.
        let shim = proc.frame_owner != NO_OFFSET && field(proc.frame_owner) as u8 == FRAME_OWNED_BY_CSTACK;
        let code = if shim { 0 } else { field(proc.frame_code) };
        let instr = field(proc.frame_instr);
        stack.frames[i] = PyFrameRef { code, instr };
        hash = (hash ^ code).wrapping_mul(0x0000_0100_0000_01b3);
        hash = (hash ^ instr).wrapping_mul(0x0000_0100_0000_01b3);
        len = i as u32 + 1;
        frame = field(proc.frame_previous);
    }
    if len == 0 {
        return 0;
    }
    stack.len = len;
    stack.check = (hash >> 32) as u32;
    let id = (hash as u32) | 1;
    // SAFETY: compared at once; an LRU eviction in between only costs this call its frames.
    match unsafe { PY_STACKS.get(id) } {
        Some(stored) if stored.len == len && stored.check == stack.check => return id,
        Some(_) => return 0, // another stack with the same key
        None => {}
    }
    // By reference: a copy would not fit the 512-byte eBPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = PY_STACKS.insert(id, &*stack, u64::from(BPF_NOEXIST)).is_ok();
    if inserted { id } else { 0 }
}
