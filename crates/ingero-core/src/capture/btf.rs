//! Member offsets of kernel structs, read from the running kernel's BTF
//! (/sys/kernel/btf/vmlinux), for the few `task_struct` fields the host
//! programs read (a fork's child pid and tgid, an exit's status): the layout
//! of `task_struct` differs with every kernel build.

use anyhow::{Context as _, Result, bail};

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

fn u16_at(data: &[u8], at: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(data.get(at..at + 2).context("BTF truncated")?.try_into()?))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(data.get(at..at + 4).context("BTF truncated")?.try_into()?))
}

fn name_at(strings: &[u8], offset: u32) -> &[u8] {
    let rest = strings.get(offset as usize..).unwrap_or_default();
    &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
}

/// Bytes that follow a type's 12-byte header, by kind (see the kernel's
/// Documentation/bpf/btf.rst).
fn trailing_bytes(kind: u32, vlen: usize) -> Result<usize> {
    Ok(match kind {
        2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag
        1 | 14 | 17 => 4,          // int, var, decl_tag
        3 => 12,                   // array
        4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
        6 | 13 => 8 * vlen,        // enum, func_proto
        _ => bail!("unknown BTF kind {kind}"),
    })
}

/// Byte offsets of `members` in struct `name` (top-level members only), in
/// the order asked; None for a member the struct lacks.
pub fn member_offsets(btf: &[u8], name: &str, members: &[&str]) -> Result<Vec<Option<u32>>> {
    if u16_at(btf, 0)? != BTF_MAGIC {
        bail!("not little-endian BTF");
    }
    let header_len = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let (str_off, str_len) = (u32_at(btf, 16)? as usize, u32_at(btf, 20)? as usize);
    let types = btf.get(header_len + type_off..header_len + type_off + type_len).context("BTF truncated")?;
    let strings = btf.get(header_len + str_off..header_len + str_off + str_len).context("BTF truncated")?;
    let mut at = 0;
    while at + 12 <= types.len() {
        let info = u32_at(types, at + 4)?;
        let (kind, vlen, bitfield_offsets) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31 == 1);
        let body = at + 12;
        if kind == KIND_STRUCT && vlen > 0 && name_at(strings, u32_at(types, at)?) == name.as_bytes() {
            let mut found = vec![None; members.len()];
            for m in 0..vlen {
                let member = body + 12 * m;
                let member_name = name_at(strings, u32_at(types, member)?);
                let raw = u32_at(types, member + 8)?;
                let bits = if bitfield_offsets { raw & 0x00ff_ffff } else { raw };
                if let Some(i) = members.iter().position(|n| n.as_bytes() == member_name) {
                    found[i] = Some(bits / 8);
                }
            }
            return Ok(found);
        }
        at = body + trailing_bytes(kind, vlen)?;
    }
    bail!("the kernel's BTF has no struct {name}")
}

/// `member_offsets` of the running kernel.
pub fn kernel_member_offsets(name: &str, members: &[&str]) -> Result<Vec<Option<u32>>> {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux")
        .context("this kernel exposes no BTF (/sys/kernel/btf/vmlinux)")?;
    member_offsets(&btf, name, members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_struct_members_are_found_in_the_running_kernel() {
        let Ok(offsets) = kernel_member_offsets("task_struct", &["pid", "tgid", "no_such_member"]) else {
            return; // no BTF on this machine: nothing to check against
        };
        let (pid, tgid) = (offsets[0].unwrap(), offsets[1].unwrap());
        // pid_t pid; pid_t tgid; are adjacent in every kernel's task_struct.
        assert_eq!(tgid, pid + 4);
        assert_eq!(offsets[2], None);
    }
}
