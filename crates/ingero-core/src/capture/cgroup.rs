//! cgroup id -> container id / pod, resolved from /proc and the cgroup v2
//! tree, for `cgroup_metadata`: events carry only the kernel's cgroup id.

use std::{collections::HashSet, os::unix::fs::MetadataExt as _};

/// Where the cgroup v2 hierarchy (the one whose ids BPF reports) is mounted:
/// /sys/fs/cgroup on v2-only systems, /sys/fs/cgroup/unified on hybrid ones.
fn cgroup2_root() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(2) == Some(&"cgroup2")).then(|| fields[1].to_owned())
    })
}

/// One row of `cgroup_metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRow {
    pub cgroup_id: u64,
    pub container_id: String,
    pub cgroup_path: String,
    pub pod_name: String,
    pub namespace: String,
}

/// The 64-hex-digit container id in a cgroup path, as docker, containerd and
/// CRI-O name their scopes (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, or a bare `/docker/<id>`).
pub fn container_id(path: &str) -> Option<String> {
    path.split(['/', '-', '.', ':'])
        .rev()
        .find(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// Whether the path is a Kubernetes pod's (kubelet's `kubepods` hierarchy).
fn is_pod(path: &str) -> bool {
    path.contains("kubepods")
}

/// A variable of a process's initial environment (`/proc/<pid>/environ`).
fn environ_var(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|entry| {
        let entry = std::str::from_utf8(entry).ok()?;
        let (key, value) = entry.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

/// The cgroup v2 path of process `pid` (the `0::` line of /proc/<pid>/cgroup).
fn cgroup_path(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_owned)
}

/// The path (relative to `root`) of the cgroup directory whose inode is `id`,
/// searched breadth-first over at most `budget` directories.
fn find_by_inode(root: &str, id: u64, mut budget: usize) -> Option<String> {
    let mut queue = std::collections::VecDeque::from([std::path::PathBuf::from(root)]);
    while let Some(dir) = queue.pop_front() {
        if std::fs::metadata(&dir).is_ok_and(|m| m.ino() == id) {
            let relative = dir.strip_prefix(root).ok()?.to_string_lossy().into_owned();
            return Some(format!("/{relative}"));
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if budget == 0 {
                return None;
            }
            budget -= 1;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                queue.push_back(entry.path());
            }
        }
    }
    None
}

/// Directories a lookup by inode may visit: enough for a busy Kubernetes node.
const SEARCH_BUDGET: usize = 20_000;

/// Resolves each cgroup id once, from the first process seen in it.
#[derive(Debug, Default)]
pub struct CgroupResolver {
    seen: HashSet<u64>,
    /// The cgroup v2 mount, looked up at first use.
    root: Option<Option<String>>,
}

impl CgroupResolver {
    /// The metadata of `cgroup_id` if it is new and `pid` still lives in it.
    pub fn resolve(&mut self, cgroup_id: u64, pid: u32) -> Option<CgroupRow> {
        if cgroup_id == 0 || self.seen.contains(&cgroup_id) {
            return None;
        }
        let root = self.root.get_or_insert_with(cgroup2_root).as_deref()?;
        // A cgroup v2 id is its directory's inode: it proves the process has
        // not moved since the event. A process already gone (a short-lived
        // child, an OOM victim) leaves the tree itself to search, once.
        let by_pid = cgroup_path(pid)
            .filter(|path| std::fs::metadata(format!("{root}{path}")).is_ok_and(|m| m.ino() == cgroup_id));
        self.seen.insert(cgroup_id);
        let path = by_pid.or_else(|| find_by_inode(root, cgroup_id, SEARCH_BUDGET))?;
        let pod = is_pod(&path);
        Some(CgroupRow {
            cgroup_id,
            container_id: container_id(&path).unwrap_or_default(),
            // Kubernetes sets a pod's HOSTNAME to its name; nothing in /proc
            // names its namespace.
            pod_name: if pod { environ_var(pid, "HOSTNAME").unwrap_or_default() } else { String::new() },
            namespace: String::new(),
            cgroup_path: path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_found_in_every_runtime_naming() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for path in [
            format!("/system.slice/docker-{id}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{id}.scope"
            ),
            format!("/kubepods/besteffort/pod1234/{id}"),
            format!("/machine.slice/crio-{id}.scope"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(id), "{path}");
        }
        assert_eq!(container_id("/user.slice/user-0.slice/session-1.scope"), None);
    }

    #[test]
    fn own_cgroup_resolves_once() {
        let pid = std::process::id();
        let (Some(path), Some(root)) = (cgroup_path(pid), cgroup2_root()) else { return }; // no cgroup v2 here
        let meta = std::fs::metadata(format!("{root}{path}")).unwrap();
        let mut resolver = CgroupResolver::default();
        let row = resolver.resolve(meta.ino(), pid).expect("own cgroup");
        assert_eq!(row.cgroup_path, path);
        assert_eq!(resolver.resolve(meta.ino(), pid), None, "resolved twice");
        // Found from the id alone when the process is gone (pid 0 has no /proc entry).
        let gone = CgroupResolver::default().resolve(meta.ino(), 0).expect("found by inode");
        assert_eq!(gone.cgroup_path, path);
    }
}
