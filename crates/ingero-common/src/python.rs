//! Python frames of a traced call: what user space tells the probes about a
//! Python process, and the frames the probes copy out of it.
//!
//! The probes copy only (code object, instruction) pairs; user space reads the
//! code objects (file, function, line table) from the process's memory, so the
//! line is the one executing at the call, not the function's first line.

/// Frames kept per call, innermost first.
pub const MAX_PY_FRAMES: usize = 32;
/// Thread states searched for the calling thread.
pub const MAX_PY_THREADS: usize = 16;
/// The most of a frame's first bytes the walk reads (its fields lie there).
pub const FRAME_BLOCK_WORDS: usize = 16;
/// An offset the CPython version at hand does not have.
pub const NO_OFFSET: u32 = u32::MAX;
/// `_PyInterpreterFrame.owner` of the C-stack shim frames of CPython 3.12+,
/// which are not Python code.
pub const FRAME_OWNED_BY_CSTACK: u8 = 3;

/// Where a Python process keeps its thread states and how its CPython lays
/// out the structs on the way to the frames (user space fills it per pid).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PyProcess {
    /// Address of `_PyRuntime.interpreters.head` in the process.
    pub interpreters_head: u64,
    /// `PyInterpreterState.threads.head` (3.11+) or `.tstate_head` (3.10).
    pub interp_threads_head: u32,
    pub tstate_next: u32,
    /// `PyThreadState.native_thread_id`; NO_OFFSET where it does not exist
    /// (3.10: then only a process with one thread state is walked).
    pub tstate_native_thread_id: u32,
    /// The thread's frame pointer (`frame`, `current_frame`), or its
    /// `_PyCFrame *cframe` when `cframe_current_frame` is not NO_OFFSET.
    pub tstate_frame: u32,
    pub cframe_current_frame: u32,
    pub frame_previous: u32,
    /// The frame's code object (`f_code`, `f_executable`).
    pub frame_code: u32,
    /// `prev_instr` / `instr_ptr` (a pointer), or `f_lasti` (3.10, an int).
    pub frame_instr: u32,
    /// `_PyInterpreterFrame.owner` (3.12+), or NO_OFFSET.
    pub frame_owner: u32,
    /// Bytes read from the start of each frame: just past its last field
    /// the walk uses (at most FRAME_BLOCK_WORDS words).
    pub frame_block: u32,
}

/// One Python frame as captured: its code object and instruction.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PyFrameRef {
    pub code: u64,
    pub instr: u64,
}

/// The Python frames of one call site, innermost first; the probes key it by
/// a hash of its content, which events carry as `py_stack_id`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PyStack {
    pub len: u32,
    /// The high half of the content hash whose low half is the key.
    pub check: u32,
    pub frames: [PyFrameRef; MAX_PY_FRAMES],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers, valid for any bit pattern.
    unsafe impl aya::Pod for super::PyProcess {}
    unsafe impl aya::Pod for super::PyStack {}
}

const _: () = assert!(core::mem::size_of::<PyProcess>() == 48);
const _: () = assert!(core::mem::size_of::<PyStack>() == 8 + 16 * MAX_PY_FRAMES);
