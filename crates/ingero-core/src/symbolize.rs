//! Turning a captured user stack into a `stack_traces` row: read its addresses
//! from the family's stack map, symbolise them (blazesym), and name the stack
//! by a hash that is the same in every run, whatever ASLR did.

use std::collections::{HashMap, HashSet};

use aya::maps::{MapData, StackTraceMap};
use blazesym::{
    Pid,
    normalize::{Normalizer, UserMeta},
    symbolize::{
        Input, Symbolized, Symbolizer,
        source::{Elf, Source},
    },
};
use serde_json::json;

/// A new row for `stack_traces`.
#[derive(Debug, Clone)]
pub struct StackRow {
    pub hash: i64,
    /// JSON array of hex addresses, as captured.
    pub ips: String,
    /// JSON array of frames: `{"i": ip, "s": symbol, "f": file, "l": line, "m": module}`.
    pub frames: String,
}

pub struct StackResolver {
    /// One stack map per probe family, in ring order.
    maps: Vec<StackTraceMap<MapData>>,
    symbolizer: Symbolizer,
    normalizer: Normalizer,
    /// (family, stack id, pid) -> hash: a stack id is only meaningful with its
    /// process's address space.
    resolved: HashMap<(usize, u32, u32), i64>,
    stored: HashSet<i64>,
}

/// FNV-1a, 64 bits: the original Ingero's stack hash function, stable across
/// runs and builds (std's hasher is not promised to be).
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl StackResolver {
    pub fn new(maps: Vec<StackTraceMap<MapData>>) -> Self {
        Self {
            maps,
            symbolizer: Symbolizer::new(),
            // Cache each process's maps at first sight, so stacks read after
            // it exited still normalise.
            normalizer: Normalizer::builder().enable_vma_caching(true).build(),
            resolved: HashMap::new(),
            stored: HashSet::new(),
        }
    }

    /// The stack hash for an event, and the row to store if this stack is new.
    pub fn resolve(&mut self, family: usize, stack_id: i32, pid: u32) -> (i64, Option<StackRow>) {
        let Ok(id) = u32::try_from(stack_id) else { return (0, None) };
        if let Some(&hash) = self.resolved.get(&(family, id, pid)) {
            return (hash, None);
        }
        let Some(ips) = self.read_stack(family, id) else { return (0, None) };
        let row = self.describe(pid, &ips);
        self.resolved.insert((family, id, pid), row.hash);
        let is_new = self.stored.insert(row.hash);
        (row.hash, is_new.then_some(row))
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
    fn describe(&self, pid: u32, ips: &[u64]) -> StackRow {
        let mut hash = FNV_OFFSET;
        let mut frames: Vec<serde_json::Value> = Vec::new();
        match self.normalizer.normalize_user_addrs(Pid::from(pid), ips) {
            Ok(normalized) => {
                for (ip, (offset, meta)) in ips.iter().zip(&normalized.outputs) {
                    let Some(UserMeta::Elf(elf)) = normalized.meta.get(*meta) else { break };
                    let module = elf.path.display().to_string();
                    hash = fnv1a(hash, module.as_bytes());
                    hash = fnv1a(hash, &offset.to_le_bytes());
                    frames.push(self.frame(*ip, &elf.path, *offset, module));
                }
            }
            Err(_) => {
                for ip in ips {
                    hash = fnv1a(hash, &ip.to_le_bytes());
                    frames.push(json!({ "i": format!("{ip:#x}") }));
                }
            }
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
