//! Python frames in the stacks of traced calls.
//!
//! User space finds each target's CPython (its version, where `_PyRuntime` is)
//! and tells the probes through PY_PROCS; the probes copy the calling thread's
//! (code object, instruction) pairs into PY_STACKS; the stack resolver turns
//! them into file, function and executing line by reading the code objects
//! from the process (cached by code address).

mod elf;
mod layout;
mod memory;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use ingero_common::python::{NO_OFFSET, PyFrameRef, PyProcess};

use crate::capture::mapped::{self, Mapping};

use self::{
    layout::Layout,
    memory::{CodeInfo, Memory},
};

/// How often the watcher looks for targets that became Python processes: a
/// launched `python` must be known before its first CUDA call.
const WATCH_INTERVAL: Duration = Duration::from_millis(5);
/// How long a Python process whose interpreter never shows up is retried.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// Whether a mapped file is a CPython interpreter (libpython3.X, python3.X).
pub fn is_interpreter_file(path: &str) -> bool {
    elf::minor_version(path).is_some()
}

/// A Python frame, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyFrame {
    pub file: String,
    pub function: String,
    pub line: Option<i64>,
}

struct PythonProcess {
    layout: Layout,
    /// Address of `_PyRuntime`.
    runtime: u64,
    /// What the probes were given.
    probe: PyProcess,
    /// Whether the layout was checked against the live interpreter (or the
    /// check gave up).
    checked: bool,
    since: Instant,
    memory: Memory,
    codes: HashMap<u64, Option<CodeInfo>>,
}

impl PythonProcess {
    /// Checks the layout once the interpreter is up, and gives the probes
    /// the corrected offsets if a distribution moved a field.
    fn check(&mut self, maps: &mut [BpfHashMap<MapData, u32, PyProcess>], pid: u32) {
        match interpreter(&self.memory, self.runtime, self.layout, pid) {
            Some((layout, probe)) => {
                if probe != self.probe {
                    for map in maps.iter_mut() {
                        let _ = map.insert(pid, probe, 0);
                    }
                }
                (self.layout, self.probe, self.checked) = (layout, probe, true);
            }
            None => self.checked = self.since.elapsed() > GIVE_UP_AFTER,
        }
    }
}

enum Seen {
    /// Not a Python process when last looked at (it may exec one later).
    Other {
        exe: PathBuf,
    },
    /// Python, but its interpreter was not found yet.
    Pending {
        since: Instant,
    },
    Python(Box<PythonProcess>),
    /// A thread, or a Python this ingero cannot walk.
    Ignored,
}

/// Python processes among the targets, shared by the watcher, the drainer
/// and the probes' PY_PROCS maps (one per family).
pub struct PythonProcesses {
    maps: Vec<BpfHashMap<MapData, u32, PyProcess>>,
    seen: HashMap<u32, Seen>,
    /// By the file's (device, inode): the same path may be another file in
    /// another process's root.
    runtime_symbols: HashMap<(u32, u32, u64), Option<elf::RuntimeSymbol>>,
}

pub type Shared = Arc<Mutex<PythonProcesses>>;

fn is_process(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines().any(|l| l.strip_prefix("Tgid:").is_some_and(|t| t.trim() == pid.to_string()))
    })
}

impl PythonProcesses {
    pub fn new(maps: Vec<BpfHashMap<MapData, u32, PyProcess>>) -> Shared {
        Arc::new(Mutex::new(Self { maps, seen: HashMap::new(), runtime_symbols: HashMap::new() }))
    }

    /// Looks at `pid` if it is new, exec'd since, or a Python still starting.
    pub fn examine(&mut self, pid: u32) {
        match self.seen.get_mut(&pid) {
            Some(Seen::Ignored) => return,
            // Its memory reads nothing once it exec'd (or exited): a launched
            // command is looked at while still a copy of ingero, before its exec.
            Some(Seen::Python(p)) if p.memory.u64(p.probe.interpreters_head).is_some() => {
                if !p.checked {
                    p.check(&mut self.maps, pid);
                }
                return;
            }
            // Exited (gone, or a zombie with no memory left): kept until
            // forget_exited, for its events still in the rings.
            Some(Seen::Python(_)) if mapped::file_mappings(pid).is_empty() => return,
            Some(Seen::Python(_)) => {
                self.seen.remove(&pid);
                for map in &mut self.maps {
                    let _ = map.remove(&pid);
                }
            }
            _ => {}
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        match self.seen.get(&pid) {
            Some(Seen::Other { exe: before }) if *before == exe => return,
            Some(Seen::Pending { since }) if since.elapsed() > GIVE_UP_AFTER => {
                self.seen.insert(pid, Seen::Ignored);
                return;
            }
            None if !is_process(pid) => {
                self.seen.insert(pid, Seen::Ignored);
                return;
            }
            _ => {}
        }
        let since = match self.seen.get(&pid) {
            Some(Seen::Pending { since }) => *since,
            _ => Instant::now(),
        };
        let state = match self.find_interpreter(pid) {
            Found::NotPython => Seen::Other { exe },
            Found::Unsupported => Seen::Ignored,
            Found::NotYet => Seen::Pending { since },
            Found::Python(mut process) => {
                for map in &mut self.maps {
                    let _ = map.insert(pid, process.probe, 0);
                }
                process.check(&mut self.maps, pid);
                Seen::Python(process)
            }
        };
        self.seen.insert(pid, state);
    }

    /// Forgets processes that are gone (their pid may be reused).
    pub fn forget_exited(&mut self) {
        let gone: Vec<u32> =
            self.seen.keys().copied().filter(|pid| !Path::new(&format!("/proc/{pid}")).exists()).collect();
        for pid in gone {
            if matches!(self.seen.remove(&pid), Some(Seen::Python(_))) {
                for map in &mut self.maps {
                    let _ = map.remove(&pid);
                }
            }
        }
    }

    fn find_interpreter(&mut self, pid: u32) -> Found {
        let mappings = mapped::file_mappings(pid);
        if mappings.is_empty() {
            // Mid-exec, or exiting: nothing to tell yet.
            return Found::NotYet;
        }
        // A shared build's interpreter is in libpython, a static one's in the executable.
        let mut candidates: Vec<&Mapping> =
            mappings.iter().filter(|m| m.offset == 0 && elf::minor_version(&m.path).is_some()).collect();
        candidates.sort_by_key(|m| !m.path.rsplit('/').next().unwrap_or("").starts_with("lib"));
        candidates.dedup_by_key(|m| m.file_id());
        if candidates.is_empty() {
            return Found::NotPython;
        }
        for mapping in candidates {
            let Some(minor) = elf::minor_version(&mapping.path) else { continue };
            let symbol = *self
                .runtime_symbols
                .entry(mapping.file_id())
                .or_insert_with(|| elf::runtime_symbol(&mapped::readable_path(pid, mapping)?));
            let Some(symbol) = symbol else { continue };
            let Some(layout) = layout::for_minor(minor) else { return Found::Unsupported };
            let Some(memory) = Memory::open(pid) else { return Found::Unsupported };
            let runtime = mapping.start.wrapping_sub(symbol.first_segment).wrapping_add(symbol.address);
            let layout = layout::debug_offsets(layout, &memory.read(runtime, 512).unwrap_or_default());
            let Some(mut probe) = layout::with_frame_block(layout.probe) else { return Found::Unsupported };
            probe.interpreters_head = runtime + layout.runtime_interpreters_head;
            // Registered at once, before the interpreter is up: a launched
            // python's first CUDA call may come soon after its start.
            return Found::Python(Box::new(PythonProcess {
                layout,
                runtime,
                probe,
                checked: false,
                since: Instant::now(),
                memory,
                codes: HashMap::new(),
            }));
        }
        // A python executable without the interpreter in it: its libpython
        // is not mapped yet (the dynamic loader is at work).
        Found::NotYet
    }

    /// The Python frames of `pid` the probes captured, innermost first; frames
    /// whose code object cannot be read (the process exited) are left out.
    pub fn resolve(&mut self, pid: u32, refs: &[PyFrameRef]) -> Vec<PyFrame> {
        let Some(Seen::Python(process)) = self.seen.get_mut(&pid) else { return Vec::new() };
        let PythonProcess { layout, memory, codes, .. } = &mut **process;
        refs.iter()
            .filter(|r| r.code != 0)
            .filter_map(|r| {
                let info = codes.entry(r.code).or_insert_with(|| memory.code(r.code, layout)).as_ref()?;
                Some(PyFrame {
                    file: info.file.clone(),
                    function: info.function.clone(),
                    line: memory::line_of(r.code, info, r.instr, layout),
                })
            })
            .collect()
    }
}

enum Found {
    NotPython,
    Unsupported,
    NotYet,
    Python(Box<PythonProcess>),
}

/// Checks the layout against the live interpreter: the first thread state
/// must point back at the interpreter. Where the interpreter list or thread
/// list offset differs from the table (a distribution's patch), nearby
/// offsets are tried. None while the interpreter is not initialised.
fn interpreter(memory: &Memory, runtime: u64, mut layout: Layout, pid: u32) -> Option<(Layout, PyProcess)> {
    let word = |addr: u64| memory.u64(addr).unwrap_or(0);
    let points_back = |tstate: u64, interp: u64| tstate != 0 && word(tstate + layout.tstate_interp) == interp;
    // The table's offsets first; a null there means the interpreter is still
    // starting (checked again later), and only a pointer that is not what the
    // table says sends the search to nearby offsets.
    let preferred = layout.runtime_interpreters_head;
    if word(runtime + preferred) == 0 {
        return None;
    }
    let heads = std::iter::once(preferred).chain((16..=64).step_by(8).filter(move |&o| o != preferred));
    for head_off in heads {
        let interp = word(runtime + head_off);
        if interp == 0 {
            continue;
        }
        let preferred = u64::from(layout.probe.interp_threads_head);
        let first = word(interp + preferred);
        if head_off == layout.runtime_interpreters_head && first == 0 {
            return None;
        }
        let lists = std::iter::once(preferred).chain((8..=256).step_by(8).filter(move |&o| o != preferred));
        for threads_off in lists {
            let first = word(interp + threads_off);
            if points_back(first, interp) {
                layout.runtime_interpreters_head = head_off;
                layout.probe.interp_threads_head = threads_off as u32;
                if !check_native_thread_id(memory, first, &mut layout.probe, pid) {
                    return None;
                }
                let mut probe = layout::with_frame_block(layout.probe)?;
                probe.interpreters_head = runtime + head_off;
                return Some((layout, probe));
            }
        }
    }
    None
}

/// The main thread's state (the oldest, so the last of the list) holds the
/// pid as its native thread id; where the table's offset holds another
/// nonzero value, the offset inside the struct that holds the pid is taken (a
/// distribution moved the field). False while the thread is not bound yet.
fn check_native_thread_id(memory: &Memory, first: u64, probe: &mut PyProcess, pid: u32) -> bool {
    if probe.tstate_native_thread_id == NO_OFFSET {
        return true;
    }
    let mut main = first;
    for _ in 0..1024 {
        match memory.u64(main + u64::from(probe.tstate_next)) {
            Some(next) if next != 0 => main = next,
            _ => break,
        }
    }
    let at = |offset: u64| memory.u64(main + offset).unwrap_or(0);
    match at(u64::from(probe.tstate_native_thread_id)) {
        0 => return false,
        tid if tid == u64::from(pid) => return true,
        _ => {}
    }
    if let Some(offset) = (24..=256).step_by(8).find(|&o| at(o) == u64::from(pid)) {
        probe.tstate_native_thread_id = offset as u32;
    }
    true
}

/// A thread that registers targets that are (or become) Python processes.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Watches the pids in `targets` (a family's TARGET_PIDS).
    pub fn spawn(processes: Shared, targets: BpfHashMap<MapData, u32, u8>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("ingero-python".into()).spawn(move || {
            let mut ticks = 0u32;
            while !thread_stop.load(Ordering::Acquire) {
                let pids: Vec<u32> = targets.keys().flatten().collect();
                if let Ok(mut processes) = processes.lock() {
                    for pid in pids {
                        processes.examine(pid);
                    }
                    ticks += 1;
                    if ticks.is_multiple_of(200) {
                        processes.forget_exited();
                    }
                }
                std::thread::sleep(WATCH_INTERVAL);
            }
        })?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
