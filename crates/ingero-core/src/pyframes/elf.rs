//! Finding a Python process's interpreter: the mapped CPython (a `python3.X`
//! executable or a `libpython3.X` library) and where `_PyRuntime` lies in the
//! process, whatever ASLR did.

use std::path::Path;

use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

/// The CPython minor version a file name says (`python3.11`, `libpython3.12.so.1.0`).
pub fn minor_version(path: &str) -> Option<u32> {
    let name = path.rsplit('/').next()?;
    let rest = name.strip_prefix("libpython3.").or_else(|| name.strip_prefix("python3."))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `_PyRuntime`'s address in the file, and the address its first loadable
/// segment (file offset 0) is linked at.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeSymbol {
    pub address: u64,
    pub first_segment: u64,
}

pub fn runtime_symbol(file: &Path) -> Option<RuntimeSymbol> {
    let data = std::fs::read(file).ok()?;
    let elf = object::File::parse(&*data).ok()?;
    let address = elf
        .symbols()
        .chain(elf.dynamic_symbols())
        .find(|s| s.name() == Ok("_PyRuntime"))
        .map(|s| s.address())?;
    let first_segment = elf.segments().find(|s| s.file_range().0 == 0).map(|s| s.address() & !0xfff)?;
    Some(RuntimeSymbol { address, first_segment })
}
