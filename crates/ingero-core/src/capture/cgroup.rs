//! cgroup id -> container id / pod, resolved from /proc and the cgroup v2
//! tree, for `cgroup_metadata`: events carry only the kernel's cgroup id.

use std::{collections::HashSet, os::unix::fs::MetadataExt as _};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

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

/// Resolves each cgroup id once, from the first process seen in it.
#[derive(Debug, Default)]
pub struct CgroupResolver {
    seen: HashSet<u64>,
}

impl CgroupResolver {
    /// The metadata of `cgroup_id` if it is new and `pid` still lives in it.
    pub fn resolve(&mut self, cgroup_id: u64, pid: u32) -> Option<CgroupRow> {
        if cgroup_id == 0 || self.seen.contains(&cgroup_id) {
            return None;
        }
        let path = cgroup_path(pid)?;
        // A cgroup v2 id is its directory's inode: proves the process had not
        // moved to another cgroup since the event.
        let inode = std::fs::metadata(format!("{CGROUP_ROOT}{path}")).ok()?.ino();
        if inode != cgroup_id {
            return None;
        }
        self.seen.insert(cgroup_id);
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
        let Some(path) = cgroup_path(pid) else { return }; // no cgroup v2 here
        let Ok(meta) = std::fs::metadata(format!("{CGROUP_ROOT}{path}")) else { return };
        let mut resolver = CgroupResolver::default();
        let row = resolver.resolve(meta.ino(), pid).expect("own cgroup");
        assert_eq!(row.cgroup_path, path);
        assert_eq!(resolver.resolve(meta.ino(), pid), None, "resolved twice");
        assert_eq!(CgroupResolver::default().resolve(meta.ino() + 1, pid), None, "wrong id accepted");
    }
}
