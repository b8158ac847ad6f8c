//! Turning a captured user stack into a `stack_traces` row: read its addresses
//! from the family's stack map, symbolise them (blazesym), and name the stack
//! by a hash that is the same in every run, whatever ASLR did.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use aya::maps::{HashMap as BpfHashMap, MapData, StackTraceMap};
use blazesym::{
    Pid,
    normalize::{Normalizer, UserMeta},
    symbolize::{
        Input, Symbolized, Symbolizer,
        source::{Elf, Source},
    },
};
use ingero_common::{event::CallEvent, python::PyStack};
use serde_json::json;

use crate::{
    capture::mapped,
    pyframes::{self, PyFrame},
};

/// A new row for `stack_traces`.
#[derive(Debug, Clone)]
pub struct StackRow {
    pub hash: i64,
    /// JSON array of hex addresses, as captured.
    pub ips: String,
    /// JSON array of frames: `{"i": ip, "s": symbol, "f": file, "l": line, "m": module}`.
    pub frames: String,
}

/// The Python side of the stacks: each family's PY_STACKS, and the Python
/// processes whose code objects name the frames.
pub struct PythonStacks {
    pub maps: Vec<BpfHashMap<MapData, u32, PyStack>>,
    pub processes: pyframes::Shared,
}

/// The event's `py_stack_id` (0: none), from its ring record.
pub fn py_stack_id(record: &[u8]) -> u32 {
    if record.len() < size_of::<CallEvent>() {
        return 0;
    }
    // SAFETY: length checked; CallEvent is plain integers, valid for any bytes.
    let event: CallEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    event.py_stack_id
}

pub struct StackResolver {
    /// One stack map per probe family, in ring order.
    maps: Vec<StackTraceMap<MapData>>,
    symbolizer: Symbolizer,
    normalizer: Normalizer,
    python: Option<PythonStacks>,
    /// (family, stack id, Python stack id, pid) -> hash: ids are only
    /// meaningful with their process's address space.
    resolved: HashMap<(usize, u32, u32, u32), i64>,
    stored: HashSet<i64>,
    /// Per process in another root (a container, a chroot), where each path
    /// its maps give can be read from here; None for processes in ours.
    elsewhere: HashMap<u32, Option<HashMap<PathBuf, PathBuf>>>,
}

/// For a process whose root is not ours, the path each file its maps name
/// can be read at here (the file itself, by device and inode); None when it
/// shares our root and every path it maps is a path here.
fn readable_paths(pid: u32) -> Option<HashMap<PathBuf, PathBuf>> {
    if mapped::shares_our_root(pid) {
        return None;
    }
    let mut paths = HashMap::new();
    for mapping in mapped::file_mappings(pid) {
        let path = PathBuf::from(&mapping.path);
        if !paths.contains_key(&path)
            && let Some(readable) = mapped::readable_path(pid, &mapping)
        {
            paths.insert(path, readable);
        }
    }
    Some(paths)
}

/// FNV-1a, 64 bits: the original Ingero's stack hash function, stable across
/// runs and builds (std's hasher is not promised to be).
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl StackResolver {
    pub fn new(maps: Vec<StackTraceMap<MapData>>, python: Option<PythonStacks>) -> Self {
        Self {
            maps,
            python,
            symbolizer: Symbolizer::new(),
            // Cache each process's maps at first sight, so stacks read after
            // it exited still normalise.
            normalizer: Normalizer::builder().enable_vma_caching(true).build(),
            resolved: HashMap::new(),
            stored: HashSet::new(),
            elsewhere: HashMap::new(),
        }
    }

    /// The stack hash for an event, and the row to store if this stack is new.
    pub fn resolve(
        &mut self,
        family: usize,
        stack_id: i32,
        py_stack_id: u32,
        pid: u32,
    ) -> (i64, Option<StackRow>) {
        let Ok(id) = u32::try_from(stack_id) else { return (0, None) };
        if let Some(&hash) = self.resolved.get(&(family, id, py_stack_id, pid)) {
            return (hash, None);
        }
        let Some(ips) = self.read_stack(family, id) else { return (0, None) };
        let python = self.python_frames(family, py_stack_id, pid);
        self.elsewhere.entry(pid).or_insert_with(|| readable_paths(pid));
        let row = self.describe(pid, &ips, &python);
        self.resolved.insert((family, id, py_stack_id, pid), row.hash);
        let is_new = self.stored.insert(row.hash);
        (row.hash, is_new.then_some(row))
    }

    /// The Python frames the probes captured with this event, resolved.
    fn python_frames(&self, family: usize, py_stack_id: u32, pid: u32) -> Vec<PyFrame> {
        let Some(python) = &self.python else { return Vec::new() };
        let Ok(mut processes) = python.processes.lock() else { return Vec::new() };
        // Tracing every process, or a target the watcher has not looked at yet.
        processes.examine(pid);
        if py_stack_id == 0 {
            return Vec::new();
        }
        let Some(stack) = python.maps.get(family).and_then(|m| m.get(&py_stack_id, 0).ok()) else {
            return Vec::new();
        };
        let len = (stack.len as usize).min(stack.frames.len());
        processes.resolve(pid, &stack.frames[..len])
    }

    fn read_stack(&self, family: usize, id: u32) -> Option<Vec<u64>> {
        let trace = self.maps.get(family)?.get(&id, 0).ok()?;
        let ips: Vec<u64> = trace.frames().iter().map(|f| f.ip).filter(|&ip| ip != 0).collect();
        (!ips.is_empty()).then_some(ips)
    }

    /// Hashes (file, file offset) per frame, so the same call path has the
    /// same hash in every run, and symbolises each frame from its file, which
    /// keeps working after the process exits (its maps are cached at first
    /// sight). The frames stop at the first address outside any mapped file:
    /// the kernel's frame-pointer walk went astray in code built without frame
    /// pointers, and what follows is stack garbage. A process gone before its
    /// first stack was read cannot be normalised: its raw addresses are hashed.
    ///
    /// Python frames, `{"pf": file, "pfn": function, "pl": line}` as the
    /// original Ingero stores them, go in before the first frame of the
    /// interpreter (libpython or a static python executable), innermost first,
    /// or at the end when no such frame was captured. Where several Python
    /// frames ran in one `_PyEval_EvalFrameDefault` (3.11+ inlines Python
    /// calls), which belongs to which C frame is not recorded, so all go in
    /// together. They are part of the hash: the same native path from two
    /// Python call sites is two stacks.
    fn describe(&self, pid: u32, ips: &[u64], python: &[PyFrame]) -> StackRow {
        let mut hash = FNV_OFFSET;
        let mut frames: Vec<serde_json::Value> = Vec::new();
        match self.normalizer.normalize_user_addrs(Pid::from(pid), ips) {
            Ok(normalized) => {
                for (ip, (offset, meta)) in ips.iter().zip(&normalized.outputs) {
                    let Some(UserMeta::Elf(elf)) = normalized.meta.get(*meta) else { break };
                    let module = elf.path.display().to_string();
                    hash = fnv1a(hash, module.as_bytes());
                    hash = fnv1a(hash, &offset.to_le_bytes());
                    // The module keeps the process's own name for its file: the
                    // hash must not depend on where the process is seen from.
                    let readable = self.elsewhere.get(&pid).and_then(|paths| paths.as_ref()?.get(&elf.path));
                    frames.push(self.frame(*ip, readable.unwrap_or(&elf.path), *offset, module));
                }
            }
            Err(_) => {
                for ip in ips {
                    hash = fnv1a(hash, &ip.to_le_bytes());
                    frames.push(json!({ "i": format!("{ip:#x}") }));
                }
            }
        }
        if !python.is_empty() {
            let is_interpreter =
                |f: &serde_json::Value| f["m"].as_str().is_some_and(pyframes::is_interpreter_file);
            let at = frames.iter().position(is_interpreter).unwrap_or(frames.len());
            let py: Vec<serde_json::Value> = python
                .iter()
                .map(|f| {
                    hash = fnv1a(hash, b"py");
                    hash = fnv1a(hash, f.file.as_bytes());
                    hash = fnv1a(hash, f.function.as_bytes());
                    hash = fnv1a(hash, &f.line.unwrap_or(0).to_le_bytes());
                    let mut frame = json!({ "pf": f.file, "pfn": f.function });
                    if let Some(line) = f.line {
                        frame["pl"] = json!(line);
                    }
                    frame
                })
                .collect();
            frames.splice(at..at, py);
        }
        let ips_json: Vec<String> = ips.iter().map(|ip| format!("{ip:#x}")).collect();
        StackRow {
            hash: hash as i64,
            ips: serde_json::to_string(&ips_json).unwrap_or_default(),
            frames: serde_json::Value::Array(frames).to_string(),
        }
    }

    /// One frame: address, and symbol, source file and line where the file's
    /// symbols (and DWARF) say.
    fn frame(&self, ip: u64, path: &std::path::Path, offset: u64, module: String) -> serde_json::Value {
        let mut frame = json!({ "i": format!("{ip:#x}"), "m": module });
        let source = Source::Elf(Elf::new(path));
        let symbolized = self.symbolizer.symbolize_single(&source, Input::FileOffset(offset));
        if let Ok(Symbolized::Sym(sym)) = symbolized {
            frame["s"] = json!(sym.name);
            if let Some(code) = &sym.code_info {
                frame["f"] = json!(code.to_path().display().to_string());
                if let Some(line) = code.line {
                    frame["l"] = json!(line);
                }
            }
        }
        frame
    }
}
