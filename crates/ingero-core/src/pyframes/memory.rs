//! Reading a Python process's code objects from /proc/PID/mem: file,
//! function and the line an instruction belongs to.

use std::{fs::File, os::unix::fs::FileExt as _};

use super::layout::{Layout, LineTable};

/// Longest string or line table read from a process (longer: left out).
const MAX_READ: usize = 1 << 20;

pub struct Memory {
    file: File,
}

/// What a frame needs of its code object.
#[derive(Debug, Clone)]
pub struct CodeInfo {
    pub file: String,
    pub function: String,
    pub first_line: i64,
    pub line_table: Vec<u8>,
    /// Instructions, in code units (3.11+: `Py_SIZE(code)`).
    pub code_units: u64,
}

impl Memory {
    pub fn open(pid: u32) -> Option<Self> {
        File::open(format!("/proc/{pid}/mem")).ok().map(|file| Self { file })
    }

    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        if addr == 0 || len > MAX_READ {
            return None;
        }
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, addr).ok()?;
        Some(buf)
    }

    pub fn u64(&self, addr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.read(addr, 8)?.try_into().ok()?))
    }

    fn i32(&self, addr: u64) -> Option<i32> {
        Some(i32::from_le_bytes(self.read(addr, 4)?.try_into().ok()?))
    }

    /// A `str` object's text (compact strings: every identifier and path).
    fn unicode(&self, obj: u64, layout: &Layout) -> Option<String> {
        let length = usize::try_from(self.u64(obj + 16)?).ok()?;
        let state = self.read(obj + 32, 4)?[0];
        let (kind, compact, ascii) = ((state >> 2) & 7, (state >> 5) & 1 == 1, (state >> 6) & 1 == 1);
        if !compact {
            return None;
        }
        let data = obj + if ascii { layout.ascii_data } else { layout.compact_data };
        let bytes = self.read(data, length.checked_mul(usize::from(kind))?)?;
        Some(match kind {
            1 => bytes.iter().map(|&b| char::from(b)).collect(),
            2 => char::decode_utf16(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])))
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect(),
            4 => bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}'))
                .collect(),
            _ => return None,
        })
    }

    /// A `bytes` object's content.
    fn bytes(&self, obj: u64) -> Option<Vec<u8>> {
        let size = usize::try_from(self.u64(obj + 16)?).ok()?;
        self.read(obj + 32, size)
    }

    pub fn code(&self, code: u64, layout: &Layout) -> Option<CodeInfo> {
        Some(CodeInfo {
            file: self.unicode(self.u64(code + layout.code_filename)?, layout)?,
            function: self.unicode(self.u64(code + layout.code_name)?, layout)?,
            first_line: i64::from(self.i32(code + layout.code_firstlineno)?),
            line_table: self.bytes(self.u64(code + layout.code_linetable)?).unwrap_or_default(),
            code_units: self.u64(code + 16).unwrap_or(0),
        })
    }
}

/// The line of the instruction a frame is at: `instr` is the frame's
/// instruction pointer (3.11+) or instruction index (3.10).
pub fn line_of(code: u64, info: &CodeInfo, instr: u64, layout: &Layout) -> Option<i64> {
    let offset_bytes = match layout.code_instructions {
        Some(start) => {
            let offset = instr.checked_sub(code + start)?;
            (offset < info.code_units * 2).then_some(offset)?
        }
        None => {
            let index = instr as u32 as i32; // f_lasti, an int
            if index < 0 {
                return Some(info.first_line);
            }
            index as u64 * 2
        }
    };
    match layout.line_table {
        LineTable::Pairs => line_from_pairs(&info.line_table, info.first_line, offset_bytes),
        LineTable::Locations => line_from_locations(&info.line_table, info.first_line, offset_bytes),
    }
}

/// CPython 3.10's `co_linetable`: per entry a bytecode length in bytes and a
/// signed line delta (-128: no line).
pub fn line_from_pairs(table: &[u8], first_line: i64, offset: u64) -> Option<i64> {
    let (mut line, mut end) = (first_line, 0u64);
    for pair in table.chunks_exact(2) {
        let start = end;
        end += u64::from(pair[0]);
        let delta = pair[1] as i8;
        let here = if delta == -128 {
            None
        } else {
            line += i64::from(delta);
            Some(line)
        };
        if (start..end).contains(&offset) {
            return here;
        }
    }
    None
}

/// CPython 3.11+'s location table (Objects/locations.md): entries of a first
/// byte with the high bit set, (code << 3) | (length in code units - 1),
/// followed by that code's data.
pub fn line_from_locations(table: &[u8], first_line: i64, offset: u64) -> Option<i64> {
    let varint = |at: &mut usize| -> u64 {
        let (mut value, mut shift) = (0u64, 0);
        while let Some(&b) = table.get(*at) {
            *at += 1;
            value |= u64::from(b & 63) << shift;
            shift += 6;
            if b & 64 == 0 || shift > 60 {
                break;
            }
        }
        value
    };
    let (mut line, mut start, mut at) = (first_line, 0u64, 0usize);
    while let Some(&first) = table.get(at) {
        let code = (first >> 3) & 15;
        let length = (u64::from(first & 7) + 1) * 2;
        let mut data = at + 1;
        line += match code {
            13 | 14 => {
                let v = varint(&mut data);
                if v & 1 == 1 { -((v >> 1) as i64) } else { (v >> 1) as i64 }
            }
            10..=12 => i64::from(code - 10),
            _ => 0,
        };
        if offset < start + length {
            return (code != 15).then_some(line);
        }
        start += length;
        at += 1;
        while table.get(at).is_some_and(|b| b & 0x80 == 0) {
            at += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_follow_line_deltas_over_code_units() {
        // One-line entries: +1 over 2 units, +0 over 1, +2 over 3; then a
        // no-column entry of -3 (svarint 7) over 1 unit, and one with no line.
        let table = [
            0x80 | 11 << 3 | 1,
            0,
            0,
            0x80 | 10 << 3,
            0,
            0,
            0x80 | 12 << 3 | 2,
            0,
            0,
            0x80 | 13 << 3,
            7,
            0xf8,
        ];
        let lines: Vec<_> =
            [0, 3, 4, 5, 6, 11, 12, 14, 16].map(|at| line_from_locations(&table, 10, at)).into();
        let want = [Some(11), Some(11), Some(11), Some(11), Some(13), Some(13), Some(10), None, None];
        assert_eq!(lines, want);
    }

    #[test]
    fn pairs_follow_line_deltas_over_bytes() {
        // 4 bytes at +1, 2 bytes with no line, 6 bytes at -1 (from the last line).
        let table = [4, 1, 2, 0x80, 6, 0xff];
        let lines: Vec<_> = [0, 3, 4, 6, 11, 12].map(|at| line_from_pairs(&table, 10, at)).into();
        assert_eq!(lines, [Some(11), Some(11), None, Some(10), Some(10), None]);
    }
}
