//! Starting `ingero trace -- CMD`: the child is forked, held at a gate until its
//! pid is in the target map, and only then execs, so no CUDA call is missed.

use std::{
    ffi::{CString, OsStr},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use anyhow::{Result, anyhow, bail};

/// A forked child waiting at the gate, not yet running the command.
pub struct GatedChild {
    pub pid: u32,
    gate: OwnedFd,
    exec_status: OwnedFd,
    // A child forked while another waits at its gate would hold copies of that
    // gate's pipes until it execs, so neither could ever see EOF: one at a time.
    _one_at_a_time: MutexGuard<'static, ()>,
}

static LAUNCH: Mutex<()> = Mutex::new(());

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Finds `program` the way execvp would, so a missing command is reported by
/// name before anything is forked.
fn resolve_program(program: &OsStr) -> Result<PathBuf> {
    let is_executable = |p: &Path| {
        let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: a valid NUL-terminated path.
        p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
    };
    let candidate = Path::new(program);
    if program.as_bytes().contains(&b'/') {
        if is_executable(candidate) {
            return Ok(candidate.to_path_buf());
        }
        bail!("command not found or not executable: {}", candidate.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
        .ok_or_else(|| anyhow!("command not found: {}", candidate.display()))
}

fn cstring(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| anyhow!("argument contains a NUL byte"))
}

fn read_retrying(fd: i32, buf: &mut [u8]) -> isize {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return n;
        }
    }
}

/// Forks a child that will exec `argv` (with this process's environment) once
/// [`GatedChild::release`] is called.
pub fn spawn_gated(argv: &[String]) -> Result<GatedChild> {
    let program = argv.first().ok_or_else(|| anyhow!("no command given"))?;
    let path = cstring(resolve_program(OsStr::new(program))?.as_os_str().as_bytes())?;
    let args: Vec<CString> = argv.iter().map(|a| cstring(a.as_bytes())).collect::<Result<_>>()?;
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());

    let one_at_a_time = LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
    let (gate_read, gate_write) = pipe_cloexec()?;
    let (status_read, status_write) = pipe_cloexec()?;
    // SAFETY: the child only calls async-signal-safe functions (read, execv,
    // write, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        // Our copies of the parent's ends, or the gate could never read EOF.
        unsafe {
            libc::close(gate_write.as_raw_fd());
            libc::close(status_read.as_raw_fd());
        }
        let mut byte = [0u8; 1];
        // EOF instead of the go byte means the tracer gave up: do not run untraced.
        if read_retrying(gate_read.as_raw_fd(), &mut byte) != 1 {
            unsafe { libc::_exit(126) };
        }
        unsafe { libc::execv(path.as_ptr(), arg_ptrs.as_ptr()) };
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0).to_ne_bytes();
        unsafe {
            libc::write(status_write.as_raw_fd(), errno.as_ptr().cast(), errno.len());
            libc::_exit(127);
        }
    }
    drop(gate_read);
    drop(status_write);
    Ok(GatedChild {
        pid: pid as u32,
        gate: gate_write,
        exec_status: status_read,
        _one_at_a_time: one_at_a_time,
    })
}

impl GatedChild {
    /// Lets the child exec; returns once the exec has succeeded or failed.
    pub fn release(self) -> Result<u32> {
        // SAFETY: writing one byte from a valid buffer to our pipe.
        let written = unsafe { libc::write(self.gate.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        if written != 1 {
            bail!("cannot start the traced command: {}", std::io::Error::last_os_error());
        }
        drop(self.gate);
        let mut errno = [0u8; 4];
        // The status pipe closes on a successful exec (O_CLOEXEC): EOF means running.
        if read_retrying(self.exec_status.as_raw_fd(), &mut errno) == 4 {
            let _ = wait(self.pid, None);
            let err = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
            bail!("cannot execute the traced command: {err}");
        }
        Ok(self.pid)
    }
}

/// Waits for `pid` to exit, at most `timeout_ms` (None: forever). Returns the
/// exit code (128 + signal for a killed child), or None if it is still running.
pub fn wait(pid: u32, timeout_ms: Option<u64>) -> Result<Option<i32>> {
    let deadline = timeout_ms.map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms));
    loop {
        let mut status = 0;
        let flags = if deadline.is_some() { libc::WNOHANG } else { 0 };
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err.into());
        }
        if r > 0 {
            if libc::WIFEXITED(status) {
                return Ok(Some(libc::WEXITSTATUS(status)));
            }
            if libc::WIFSIGNALED(status) {
                return Ok(Some(128 + libc::WTERMSIG(status)));
            }
            continue;
        }
        match deadline {
            Some(d) if std::time::Instant::now() >= d => return Ok(None),
            _ => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn child_does_not_run_the_command_before_release() {
        let marker = std::env::temp_dir().join(format!("ingero-gate-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let child = spawn_gated(&argv(&["/bin/sh", "-c", &format!("touch {}", marker.display())])).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!marker.exists(), "the command ran before the gate opened");
        let pid = child.release().unwrap();
        assert_eq!(wait(pid, None).unwrap(), Some(0));
        assert!(marker.exists());
        std::fs::remove_file(&marker).unwrap();
    }

    #[test]
    fn exit_code_and_signals_are_reported() {
        let pid = spawn_gated(&argv(&["/bin/sh", "-c", "exit 3"])).unwrap().release().unwrap();
        assert_eq!(wait(pid, None).unwrap(), Some(3));
        let pid = spawn_gated(&argv(&["/bin/sh", "-c", "kill -9 $$"])).unwrap().release().unwrap();
        assert_eq!(wait(pid, None).unwrap(), Some(128 + 9));
        let pid = spawn_gated(&argv(&["/bin/sleep", "5"])).unwrap().release().unwrap();
        assert_eq!(wait(pid, Some(50)).unwrap(), None);
        // SAFETY: killing our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert_eq!(wait(pid, None).unwrap(), Some(128 + 9));
    }

    #[test]
    fn missing_or_unexecutable_commands_are_named() {
        let err = spawn_gated(&argv(&["no-such-command-ingero"])).err().unwrap().to_string();
        assert_eq!(err, "command not found: no-such-command-ingero");
        let plain = std::env::temp_dir().join(format!("ingero-plain-{}", std::process::id()));
        std::fs::write(&plain, b"not a program").unwrap();
        let err = spawn_gated(&argv(&[plain.to_str().unwrap()])).err().unwrap().to_string();
        std::fs::remove_file(&plain).unwrap();
        assert!(err.contains("not executable"), "{err}");
    }

    #[test]
    fn dropping_the_gate_ends_the_child_unrun() {
        let child = spawn_gated(&argv(&["/bin/true"])).unwrap();
        let pid = child.pid;
        drop(child);
        assert_eq!(wait(pid, None).unwrap(), Some(126));
    }
}
