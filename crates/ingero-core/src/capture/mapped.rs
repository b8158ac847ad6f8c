//! The files a traced process maps, as this process can open them.
//!
//! `/proc/PID/maps` names a file by its path from the reader's root where the
//! file is reachable from there (a chrooted process's files show their host
//! path), and by its path in the process's own mount namespace where it is
//! not (a container's files). Which of the two a line means is told by the
//! device and inode the line also carries; `/proc/PID/map_files` opens the
//! mapped file itself when neither path leads to it (deleted or replaced).

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// One line of /proc/PID/maps that maps a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// The device's (major, minor), as the line gives them.
    pub dev: (u32, u32),
    pub inode: u64,
    pub path: String,
}

impl Mapping {
    /// The file's identity: the same for every path and process that maps it.
    pub fn file_id(&self) -> (u32, u32, u64) {
        (self.dev.0, self.dev.1, self.inode)
    }

    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let _perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let dev = (u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?);
        let inode = fields.next()?.parse().ok()?;
        let path = fields.collect::<Vec<_>>().join(" ");
        path.starts_with('/').then_some(Self {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            offset,
            dev,
            inode,
            path,
        })
    }
}

pub fn file_mappings(pid: u32) -> Vec<Mapping> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return Vec::new() };
    maps.lines().filter_map(Mapping::parse).collect()
}

/// A path this process can read `mapping`'s file at: the path the line gives
/// (the process shares our root, or is chrooted below it), else that path
/// under the process's root (its own mount namespace), else the mapping
/// itself in /proc/PID/map_files (which names no file a user would know).
/// A candidate must be the mapped file: same device and inode, or the same
/// inode where the device differs (btrfs subvolumes stat as their own device).
pub fn readable_path(pid: u32, mapping: &Mapping) -> Option<PathBuf> {
    let candidates =
        [PathBuf::from(&mapping.path), PathBuf::from(format!("/proc/{pid}/root{}", mapping.path))];
    let identities: Vec<Option<(u32, u32, u64)>> = candidates
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((libc::major(meta.dev()), libc::minor(meta.dev()), meta.ino()))
        })
        .collect();
    let exact = identities.iter().position(|id| *id == Some(mapping.file_id()));
    let inode = || identities.iter().position(|id| id.is_some_and(|(_, _, ino)| ino == mapping.inode));
    if let Some(at) = exact.or_else(inode) {
        return Some(candidates[at].clone());
    }
    let mapped = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", mapping.start, mapping.end));
    Path::new(&mapped).exists().then_some(mapped)
}

/// Whether `pid` sees the same root as this process (then every path its maps
/// give is a path here).
pub fn shares_our_root(pid: u32) -> bool {
    let root = |pid: &str| std::fs::metadata(format!("/proc/{pid}/root")).ok().map(|m| (m.dev(), m.ino()));
    root(&pid.to_string()).is_some_and(|theirs| root("self") == Some(theirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maps_line_gives_range_offset_device_inode_and_path() {
        let line = "7f2c1000-7f2c3000 r-xp 00002000 fe:01 1234567   /usr/lib/a b.so";
        let m = Mapping::parse(line).expect("parsed");
        assert_eq!(
            m,
            Mapping {
                start: 0x7f2c_1000,
                end: 0x7f2c_3000,
                offset: 0x2000,
                dev: (0xfe, 1),
                inode: 1_234_567,
                path: "/usr/lib/a b.so".into(),
            }
        );
        assert_eq!(Mapping::parse("7f2c1000-7f2c3000 rw-p 00000000 00:00 0   [heap]"), None);
        assert_eq!(Mapping::parse("7f2c1000-7f2c3000 rw-p 00000000 00:00 0"), None);
    }

    #[test]
    fn our_own_executable_is_readable_at_its_path() {
        let pid = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let mapping = file_mappings(pid)
            .into_iter()
            .find(|m| Path::new(&m.path) == exe)
            .expect("the executable is mapped");
        assert_eq!(readable_path(pid, &mapping), Some(exe));
        assert!(shares_our_root(pid));
    }
}
