//! CPython's struct layouts on the way from `_PyRuntime` to a frame's code
//! object and line, per minor version (x86-64 and aarch64, LP64).
//!
//! 3.11 and 3.13 were measured with `offsetof` against their headers and
//! checked on live processes (pyenv 3.11.7, Debian 3.11; Debian trixie's
//! 3.13.5, whose `_Py_DebugOffsets` give the same offsets); 3.10 and 3.12 are
//! derived from CPython's headers of those versions (Include/cpython/pystate.h,
//! code.h, frameobject.h, Include/internal/pycore_frame.h, pycore_runtime.h,
//! pycore_interp.h) and were run by hand once (Ubuntu jammy's 3.10.4 and
//! noble's 3.12.3, chrooted), not in the tests. 3.13 also reads its own layout from
//! `_Py_DebugOffsets` when the process carries them (see [`debug_offsets`]).

use ingero_common::python::{FRAME_BLOCK_WORDS, NO_OFFSET, PyProcess};

/// How a code object maps instruction offsets to lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTable {
    /// 3.10 `co_linetable`: (bytecode delta, signed line delta) byte pairs.
    Pairs,
    /// 3.11+ location table (PEP 657 entries).
    Locations,
}

#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub minor: u32,
    /// `_PyRuntime.interpreters.head`.
    pub runtime_interpreters_head: u64,
    /// `PyThreadState.interp`, to check a thread state belongs to the interpreter.
    pub tstate_interp: u64,
    /// Offsets the probes use; `interpreters_head` is filled per process.
    pub probe: PyProcess,
    pub code_filename: u64,
    /// `co_qualname` where it exists (3.11+), else `co_name`.
    pub code_name: u64,
    pub code_firstlineno: u64,
    pub code_linetable: u64,
    /// Start of the instructions inside the code object (3.11+), against which
    /// a frame's instruction pointer is an offset; None where the frame holds
    /// an instruction index (3.10 `f_lasti`).
    pub code_instructions: Option<u64>,
    pub line_table: LineTable,
    /// Where a compact ASCII string's characters start (after PyASCIIObject),
    /// and a compact non-ASCII one's (after PyCompactUnicodeObject).
    pub ascii_data: u64,
    pub compact_data: u64,
}

/// What every version shares: `PyThreadState.next` at 8 (after `prev`).
const COMMON: PyProcess = PyProcess {
    interpreters_head: 0,
    interp_threads_head: 0,
    tstate_next: 8,
    tstate_native_thread_id: NO_OFFSET,
    tstate_frame: 0,
    cframe_current_frame: NO_OFFSET,
    frame_previous: 0,
    frame_code: 0,
    frame_instr: 0,
    frame_owner: NO_OFFSET,
    frame_block: 0,
};

/// CPython 3.10: PyFrameObject chain from `tstate->frame`, `f_lasti` an
/// instruction index; no native thread id in PyThreadState.
const PY310: Layout = Layout {
    minor: 10,
    runtime_interpreters_head: 40,
    tstate_interp: 16,
    // PyFrameObject: f_back, f_code, f_lasti.
    probe: PyProcess {
        interp_threads_head: 8,
        tstate_frame: 24,
        frame_previous: 24,
        frame_code: 32,
        frame_instr: 96,
        ..COMMON
    },
    code_filename: 104,
    code_name: 112,
    code_firstlineno: 40,
    code_linetable: 120,
    code_instructions: None,
    line_table: LineTable::Pairs,
    ascii_data: 48,
    compact_data: 72,
};

/// CPython 3.11 (measured): `tstate->cframe->current_frame`, inlined
/// `_PyInterpreterFrame`s with `prev_instr`.
const PY311: Layout = Layout {
    minor: 11,
    runtime_interpreters_head: 40,
    tstate_interp: 16,
    // tstate_frame is `cframe`; the frame fields are f_code, previous, prev_instr.
    probe: PyProcess {
        interp_threads_head: 16,
        tstate_native_thread_id: 160,
        tstate_frame: 56,
        cframe_current_frame: 8,
        frame_previous: 48,
        frame_code: 32,
        frame_instr: 56,
        ..COMMON
    },
    code_filename: 112,
    code_name: 128,
    code_firstlineno: 72,
    code_linetable: 136,
    code_instructions: Some(184),
    line_table: LineTable::Locations,
    ascii_data: 48,
    compact_data: 72,
};

/// CPython 3.12: `tstate->cframe->current_frame` (cframe lost use_tracing),
/// one `current_exception` instead of three curexc fields, shim frames owned
/// by the C stack.
const PY312: Layout = Layout {
    minor: 12,
    runtime_interpreters_head: 40,
    tstate_interp: 16,
    // tstate_frame is `cframe`; the frame fields are f_code, previous, prev_instr.
    probe: PyProcess {
        interp_threads_head: 72,
        tstate_native_thread_id: 144,
        tstate_frame: 56,
        cframe_current_frame: 0,
        frame_previous: 8,
        frame_code: 0,
        frame_instr: 56,
        frame_owner: 70,
        ..COMMON
    },
    code_filename: 112,
    code_name: 128,
    code_firstlineno: 68,
    code_linetable: 136,
    code_instructions: Some(192),
    line_table: LineTable::Locations,
    ascii_data: 40,
    compact_data: 56,
};

/// CPython 3.13 (measured): `tstate->current_frame` directly, `instr_ptr`.
const PY313: Layout = Layout {
    minor: 13,
    runtime_interpreters_head: 632,
    tstate_interp: 16,
    // threads.head: _Py_DebugOffsets says (7344 on a default build);
    // tstate_frame is `current_frame`; the frame fields are f_executable,
    // previous, instr_ptr.
    probe: PyProcess {
        interp_threads_head: 7344,
        tstate_native_thread_id: 160,
        tstate_frame: 72,
        frame_previous: 8,
        frame_code: 0,
        frame_instr: 56,
        frame_owner: 70,
        ..COMMON
    },
    code_filename: 112,
    code_name: 128,
    code_firstlineno: 68,
    code_linetable: 136,
    code_instructions: Some(200),
    line_table: LineTable::Locations,
    ascii_data: 40,
    compact_data: 56,
};

pub fn for_minor(minor: u32) -> Option<Layout> {
    match minor {
        10 => Some(PY310),
        11 => Some(PY311),
        12 => Some(PY312),
        13 => Some(PY313),
        _ => None,
    }
}

/// The probes' view with the frame read sized to the fields it needs; None
/// if a field lies beyond what the probes read of a frame.
pub fn with_frame_block(mut probe: PyProcess) -> Option<PyProcess> {
    let fields = [probe.frame_previous, probe.frame_code, probe.frame_instr, probe.frame_owner];
    // The probes take each field from the aligned word that holds it.
    let end = fields.iter().filter(|&&f| f != NO_OFFSET).map(|&f| (f & !7) + 8).max()?;
    probe.frame_block = end;
    (end as usize <= FRAME_BLOCK_WORDS * 8).then_some(probe)
}

/// CPython 3.13's `_Py_DebugOffsets`, at the start of `_PyRuntime`: the
/// offsets an out-of-process reader needs, written by the build itself. Takes
/// the first bytes of `_PyRuntime`; returns the layout with those offsets, or
/// the layout as it was if the cookie or version does not match.
pub fn debug_offsets(mut layout: Layout, runtime: &[u8]) -> Layout {
    let word =
        |at: usize| runtime.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let version = word(8).unwrap_or(0);
    if layout.minor != 13 || runtime.get(..8) != Some(b"xdebugpy") || (version >> 16) & 0xff != 13 {
        return layout;
    }
    // Field positions inside _Py_DebugOffsets 3.13: cookie, version,
    // free_threaded, then runtime_state {size, finalizing, interpreters_head},
    // interpreter_state {size, id, next, threads_head, ...13 fields},
    // thread_state {size, prev, next, interp, current_frame, thread_id,
    // native_thread_id, ...}, interpreter_frame {size, previous, executable,
    // instr_ptr, localsplus, owner}, code_object {size, filename, name,
    // qualname, linetable, firstlineno, argcount, localsplusnames,
    // localspluskinds, co_code_adaptive}.
    let small = |v: Option<u64>| v.filter(|&v| v < 1 << 16);
    let sane = |v: Option<u64>| v.filter(|&v| v < 1 << 20);
    if let Some(v) = sane(word(40)) {
        layout.runtime_interpreters_head = v;
    }
    if let Some(v) = sane(word(72)) {
        layout.probe.interp_threads_head = v as u32;
    }
    if let Some(v) = small(word(176)) {
        layout.tstate_interp = v;
    }
    for (at, field) in [
        (168, &mut layout.probe.tstate_next),
        (184, &mut layout.probe.tstate_frame),
        (200, &mut layout.probe.tstate_native_thread_id),
        (232, &mut layout.probe.frame_previous),
        (240, &mut layout.probe.frame_code),
        (248, &mut layout.probe.frame_instr),
        (264, &mut layout.probe.frame_owner),
    ] {
        if let Some(v) = small(word(at)) {
            *field = v as u32;
        }
    }
    for (at, field) in [
        (280, &mut layout.code_filename),
        (296, &mut layout.code_name),
        (304, &mut layout.code_linetable),
        (312, &mut layout.code_firstlineno),
    ] {
        if let Some(v) = small(word(at)) {
            *field = v;
        }
    }
    if let Some(v) = small(word(344)) {
        layout.code_instructions = Some(v);
    }
    layout
}
