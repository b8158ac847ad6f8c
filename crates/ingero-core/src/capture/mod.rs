//! Capture: the embedded eBPF programs, attaching them to CUDA libraries, and
//! starting a traced command so that its first CUDA call is already seen.

pub mod btf;
pub mod cgroup;
pub mod host;
pub mod host_readers;
pub mod launch;
pub mod mapped;
pub mod programs;
