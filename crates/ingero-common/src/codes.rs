//! Source and op codes: the integers stored in `events.source` and `events.op`.
//!
//! The numbers are the original Go Ingero's (v0.17), so its published databases and
//! the SQL written for them keep their meaning. Unlike the original, every code that
//! can appear in `events` has a row here, CUDA Graph and NCCL included.

/// The layer that produced an event (`events.source`).
pub mod source {
    pub const CUDA: u8 = 1;
    /// Reserved by the original for an nvidia.ko tracer it never shipped.
    pub const NVIDIA: u8 = 2;
    pub const HOST: u8 = 3;
    pub const DRIVER: u8 = 4;
    pub const IO: u8 = 5;
    pub const TCP: u8 = 6;
    pub const NET: u8 = 7;
    pub const CUDA_GRAPH: u8 = 8;
    pub const NCCL: u8 = 9;
    /// ingero's own MCP server: one event per tool call, so an agent's
    /// investigation is part of the record it investigates.
    pub const MCP: u8 = 10;
}

/// CUDA runtime API calls (libcudart), source [`source::CUDA`].
pub mod cuda_op {
    pub const MALLOC: u8 = 1;
    pub const FREE: u8 = 2;
    pub const LAUNCH_KERNEL: u8 = 3;
    pub const MEMCPY: u8 = 4;
    pub const STREAM_SYNC: u8 = 5;
    pub const DEVICE_SYNC: u8 = 6;
    pub const MEMCPY_ASYNC: u8 = 7;
    pub const MALLOC_MANAGED: u8 = 8;
    pub const MEMCPY_2D: u8 = 9;
    pub const MEMCPY_2D_ASYNC: u8 = 10;
    pub const MEMCPY_PEER: u8 = 11;
    pub const MEMCPY_PEER_ASYNC: u8 = 12;
}

/// Host kernel events, source [`source::HOST`].
pub mod host_op {
    pub const SCHED_SWITCH: u8 = 1;
    pub const SCHED_WAKEUP: u8 = 2;
    pub const MM_PAGE_ALLOC: u8 = 3;
    pub const OOM_KILL: u8 = 4;
    pub const PROCESS_EXEC: u8 = 5;
    pub const PROCESS_EXIT: u8 = 6;
    pub const PROCESS_FORK: u8 = 7;
    pub const POD_RESTART: u8 = 10;
    pub const POD_EVICTION: u8 = 11;
    pub const POD_OOM_KILL: u8 = 12;
    pub const MM_PAGE_ALLOC_SUMMARY: u8 = 20;
    pub const SCHED_SWITCH_SUMMARY: u8 = 21;
}

/// CUDA driver API calls (libcuda), source [`source::DRIVER`].
pub mod driver_op {
    pub const LAUNCH_KERNEL: u8 = 1;
    pub const MEMCPY: u8 = 2;
    pub const MEMCPY_ASYNC: u8 = 3;
    pub const CTX_SYNC: u8 = 4;
    pub const MEM_ALLOC: u8 = 5;
    pub const MEM_ALLOC_MANAGED: u8 = 6;
}

/// Block I/O requests, source [`source::IO`].
pub mod io_op {
    pub const READ: u8 = 1;
    pub const WRITE: u8 = 2;
    pub const DISCARD: u8 = 3;
}

/// TCP events, source [`source::TCP`].
pub mod tcp_op {
    pub const RETRANSMIT: u8 = 1;
}

/// Socket syscalls, source [`source::NET`].
pub mod net_op {
    pub const SEND: u8 = 1;
    pub const RECV: u8 = 2;
}

/// CUDA Graph lifecycle calls, source [`source::CUDA_GRAPH`].
pub mod graph_op {
    pub const BEGIN_CAPTURE: u8 = 1;
    pub const END_CAPTURE: u8 = 2;
    pub const INSTANTIATE: u8 = 3;
    pub const LAUNCH: u8 = 4;
}

/// NCCL calls, source [`source::NCCL`].
pub mod nccl_op {
    pub const COMM_INIT_RANK: u8 = 1;
    pub const COMM_DESTROY: u8 = 2;
    pub const ALL_REDUCE: u8 = 3;
    pub const ALL_GATHER: u8 = 4;
    pub const REDUCE_SCATTER: u8 = 5;
    pub const BROADCAST: u8 = 6;
    pub const SEND: u8 = 7;
    pub const RECV: u8 = 8;
    pub const COMM_INIT_ALL: u8 = 9;
}

/// MCP requests served by `ingero mcp`, source [`source::MCP`]; the details
/// (arguments, status text, transport, principal) are in `mcp_calls`.
pub mod mcp_op {
    pub const GET_CHECK: u8 = 1;
    pub const GET_TRACE_STATS: u8 = 2;
    pub const GET_CAUSAL_CHAINS: u8 = 3;
    pub const RUN_SQL: u8 = 4;
    pub const GET_STACKS: u8 = 5;
    pub const GRAPH_LIFECYCLE: u8 = 6;
    pub const GRAPH_FREQUENCY: u8 = 7;
    pub const GET_SCHEMA: u8 = 8;
    pub const GET_PROMPT: u8 = 9;
    pub const READ_RESOURCE: u8 = 10;
    /// A tool this version does not know by name (a newer client, a typo).
    pub const OTHER: u8 = 255;
}

/// `events.ret_code` of an MCP call.
pub mod mcp_status {
    pub const OK: i32 = 0;
    /// Refused: bad arguments, a query the sandbox does not allow, over a limit.
    pub const REFUSED: i32 = 1;
    pub const ERROR: i32 = 2;
}

/// `cudaMemcpyKind`, stored in `arg1` of the runtime memcpy ops.
pub mod memcpy_kind {
    pub const HOST_TO_HOST: u8 = 0;
    pub const HOST_TO_DEVICE: u8 = 1;
    pub const DEVICE_TO_HOST: u8 = 2;
    pub const DEVICE_TO_DEVICE: u8 = 3;
    pub const DEFAULT: u8 = 4;
}

/// A row of the `sources` lookup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub id: u8,
    pub name: &'static str,
    pub description: &'static str,
}

/// A row of the `ops` lookup table, with what `arg0`/`arg1` hold for that op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub source: u8,
    pub id: u8,
    pub name: &'static str,
    pub description: &'static str,
    /// Meaning of `events.arg0` ("" when unused).
    pub arg0: &'static str,
    /// Meaning of `events.arg1` ("" when unused).
    pub arg1: &'static str,
}

pub const SOURCES: &[Source] = &[
    Source { id: source::CUDA, name: "CUDA", description: "CUDA Runtime API (libcudart.so) — uprobes" },
    Source {
        id: source::NVIDIA,
        name: "NVIDIA",
        description: "NVIDIA kernel driver (nvidia.ko) — reserved, not currently traced",
    },
    Source {
        id: source::HOST,
        name: "HOST",
        description: "Host kernel events — tracepoints (scheduler, memory, process lifecycle)",
    },
    Source { id: source::DRIVER, name: "DRIVER", description: "CUDA Driver API (libcuda.so) — uprobes" },
    Source {
        id: source::IO,
        name: "IO",
        description: "Block I/O events — tracepoints (block_rq_issue/block_rq_complete)",
    },
    Source { id: source::TCP, name: "TCP", description: "TCP events — tracepoints (tcp_retransmit_skb)" },
    Source {
        id: source::NET,
        name: "NET",
        description: "Network socket events — syscall tracepoints (sendto/recvfrom)",
    },
    Source {
        id: source::CUDA_GRAPH,
        name: "CUDA_GRAPH",
        description: "CUDA Graph lifecycle (libcudart.so) — uprobes",
    },
    Source {
        id: source::NCCL,
        name: "NCCL",
        description: "NCCL collectives and communicators (libnccl.so) — uprobes",
    },
    Source {
        id: source::MCP,
        name: "MCP",
        description: "Tool calls served by ingero's MCP server (details in mcp_calls)",
    },
];

const fn op(
    source: u8,
    id: u8,
    name: &'static str,
    description: &'static str,
    arg0: &'static str,
    arg1: &'static str,
) -> Op {
    Op { source, id, name, description, arg0, arg1 }
}

const BYTES: &str = "bytes";
const KIND: &str = "direction (cudaMemcpyKind: 0 H2H, 1 H2D, 2 D2H, 3 D2D, 4 default)";
const STREAM: &str = "stream handle";
const MCP_ROWS: &str = "rows returned";
const MCP_BYTES: &str = "bytes returned";

pub const OPS: &[Op] = &[
    op(
        source::CUDA,
        cuda_op::MALLOC,
        "cudaMalloc",
        "GPU memory allocation",
        BYTES,
        "device pointer returned",
    ),
    op(
        source::CUDA,
        cuda_op::FREE,
        "cudaFree",
        "GPU memory free",
        "device pointer",
        "bytes freed (0 if the allocation was not seen)",
    ),
    op(
        source::CUDA,
        cuda_op::LAUNCH_KERNEL,
        "cudaLaunchKernel",
        "Launch GPU kernel via runtime API",
        "kernel function pointer",
        STREAM,
    ),
    op(source::CUDA, cuda_op::MEMCPY, "cudaMemcpy", "Synchronous host<->device memory copy", BYTES, KIND),
    op(
        source::CUDA,
        cuda_op::STREAM_SYNC,
        "cudaStreamSync",
        "Wait for all ops in a CUDA stream to complete",
        STREAM,
        "",
    ),
    op(
        source::CUDA,
        cuda_op::DEVICE_SYNC,
        "cudaDeviceSync",
        "Wait for all GPU work on device to complete",
        "",
        "",
    ),
    op(
        source::CUDA,
        cuda_op::MEMCPY_ASYNC,
        "cudaMemcpyAsync",
        "Asynchronous host<->device memory copy",
        BYTES,
        KIND,
    ),
    op(
        source::CUDA,
        cuda_op::MALLOC_MANAGED,
        "cudaMallocManaged",
        "Unified Memory allocation via runtime API",
        BYTES,
        "device pointer returned",
    ),
    op(
        source::CUDA,
        cuda_op::MEMCPY_2D,
        "cudaMemcpy2D",
        "Synchronous 2D memory copy",
        "bytes (width x height)",
        KIND,
    ),
    op(
        source::CUDA,
        cuda_op::MEMCPY_2D_ASYNC,
        "cudaMemcpy2DAsync",
        "Asynchronous 2D memory copy",
        "bytes (width x height)",
        KIND,
    ),
    op(
        source::CUDA,
        cuda_op::MEMCPY_PEER,
        "cudaMemcpyPeer",
        "Synchronous copy between two devices",
        BYTES,
        "destination device",
    ),
    op(
        source::CUDA,
        cuda_op::MEMCPY_PEER_ASYNC,
        "cudaMemcpyPeerAsync",
        "Asynchronous copy between two devices",
        BYTES,
        "destination device",
    ),
    op(
        source::HOST,
        host_op::SCHED_SWITCH,
        "sched_switch",
        "CPU context switch — thread was descheduled",
        "",
        "preempting pid (the process that held the CPU until the thread got it back; duration = off-CPU ns)",
    ),
    op(
        source::HOST,
        host_op::SCHED_WAKEUP,
        "sched_wakeup",
        "Thread woken up and enqueued to run queue",
        "woken tid",
        "woken pid (pid/tid columns: the waker)",
    ),
    op(
        source::HOST,
        host_op::MM_PAGE_ALLOC,
        "mm_page_alloc",
        "Kernel page allocation (arg0 = bytes)",
        BYTES,
        "",
    ),
    op(
        source::HOST,
        host_op::OOM_KILL,
        "oom_kill",
        "Out-of-memory killer invoked",
        "pid whose allocation invoked the OOM killer",
        "victim pid (also the pid and comm columns)",
    ),
    op(source::HOST, host_op::PROCESS_EXEC, "process_exec", "New process executed (execve)", "", ""),
    op(
        source::HOST,
        host_op::PROCESS_EXIT,
        "process_exit",
        "Process exited",
        "exit code (128 + signal if killed)",
        "",
    ),
    op(
        source::HOST,
        host_op::PROCESS_FORK,
        "process_fork",
        "Process forked (child auto-enrolled for tracing)",
        "",
        "child pid",
    ),
    op(source::HOST, host_op::POD_RESTART, "pod_restart", "K8s pod container restart detected", "", ""),
    op(source::HOST, host_op::POD_EVICTION, "pod_eviction", "K8s pod eviction detected", "", ""),
    op(source::HOST, host_op::POD_OOM_KILL, "pod_oom_kill", "K8s pod OOM kill detected", "", ""),
    op(
        source::HOST,
        host_op::MM_PAGE_ALLOC_SUMMARY,
        "mm_page_alloc_summary",
        "Page allocations of untraced processes, summed per drain window",
        "allocation count",
        BYTES,
    ),
    op(
        source::HOST,
        host_op::SCHED_SWITCH_SUMMARY,
        "sched_switch_summary",
        "Context switches between untraced processes, summed per drain window (tid = previous pid)",
        "switch count",
        "off-CPU ns",
    ),
    op(
        source::DRIVER,
        driver_op::LAUNCH_KERNEL,
        "cuLaunchKernel",
        "Launch GPU kernel via driver API (cuBLAS/cuDNN path)",
        "CUfunction",
        STREAM,
    ),
    op(source::DRIVER, driver_op::MEMCPY, "cuMemcpy", "Synchronous memory copy via driver API", BYTES, ""),
    op(
        source::DRIVER,
        driver_op::MEMCPY_ASYNC,
        "cuMemcpyAsync",
        "Asynchronous memory copy via driver API",
        BYTES,
        STREAM,
    ),
    op(
        source::DRIVER,
        driver_op::CTX_SYNC,
        "cuCtxSynchronize",
        "Wait for all GPU work in context to complete",
        "",
        "",
    ),
    op(
        source::DRIVER,
        driver_op::MEM_ALLOC,
        "cuMemAlloc",
        "GPU memory allocation via driver API",
        BYTES,
        "device pointer returned",
    ),
    op(
        source::DRIVER,
        driver_op::MEM_ALLOC_MANAGED,
        "cuMemAllocManaged",
        "Unified Memory allocation via driver API",
        BYTES,
        "device pointer returned",
    ),
    op(source::IO, io_op::READ, "block_read", "Block device read request", "sectors", "start sector"),
    op(source::IO, io_op::WRITE, "block_write", "Block device write request", "sectors", "start sector"),
    op(
        source::IO,
        io_op::DISCARD,
        "block_discard",
        "Block device discard/trim request",
        "sectors",
        "start sector",
    ),
    op(
        source::TCP,
        tcp_op::RETRANSMIT,
        "tcp_retransmit",
        "TCP segment retransmission",
        "(saddr << 32) | daddr (IPv6: the last 32 bits of each; ret_code = family | state << 8)",
        "(sport << 16) | dport",
    ),
    op(source::NET, net_op::SEND, "net_send", "Socket send/sendto syscall", "fd", BYTES),
    op(source::NET, net_op::RECV, "net_recv", "Socket recv/recvfrom syscall", "fd", BYTES),
    op(
        source::CUDA_GRAPH,
        graph_op::BEGIN_CAPTURE,
        "graphBeginCapture",
        "Stream capture into a CUDA Graph begins",
        STREAM,
        "capture mode (0 global, 1 thread_local, 2 relaxed)",
    ),
    op(
        source::CUDA_GRAPH,
        graph_op::END_CAPTURE,
        "graphEndCapture",
        "Stream capture ends, producing a graph",
        STREAM,
        "graph handle",
    ),
    op(
        source::CUDA_GRAPH,
        graph_op::INSTANTIATE,
        "graphInstantiate",
        "Graph instantiated into an executable graph",
        "graph handle",
        "executable graph handle",
    ),
    op(
        source::CUDA_GRAPH,
        graph_op::LAUNCH,
        "graphLaunch",
        "Executable graph launched on a stream",
        "executable graph handle",
        STREAM,
    ),
    op(
        source::NCCL,
        nccl_op::COMM_INIT_RANK,
        "ncclCommInitRank",
        "NCCL communicator created for one rank",
        "communicator id hash",
        "(rank << 32) | nranks",
    ),
    op(
        source::NCCL,
        nccl_op::COMM_DESTROY,
        "ncclCommDestroy",
        "NCCL communicator destroyed",
        "communicator id hash",
        "",
    ),
    op(
        source::NCCL,
        nccl_op::ALL_REDUCE,
        "ncclAllReduce",
        "All-reduce collective",
        BYTES,
        "communicator id hash",
    ),
    op(
        source::NCCL,
        nccl_op::ALL_GATHER,
        "ncclAllGather",
        "All-gather collective",
        BYTES,
        "communicator id hash",
    ),
    op(
        source::NCCL,
        nccl_op::REDUCE_SCATTER,
        "ncclReduceScatter",
        "Reduce-scatter collective",
        BYTES,
        "communicator id hash",
    ),
    op(
        source::NCCL,
        nccl_op::BROADCAST,
        "ncclBroadcast",
        "Broadcast collective",
        BYTES,
        "communicator id hash",
    ),
    op(source::NCCL, nccl_op::SEND, "ncclSend", "Point-to-point send", BYTES, "peer rank"),
    op(source::NCCL, nccl_op::RECV, "ncclRecv", "Point-to-point receive", BYTES, "peer rank"),
    op(
        source::NCCL,
        nccl_op::COMM_INIT_ALL,
        "ncclCommInitAll",
        "NCCL communicators created for all local devices",
        "device count",
        "",
    ),
    op(source::MCP, mcp_op::GET_CHECK, "get_check", "MCP: Readiness checks", MCP_ROWS, MCP_BYTES),
    op(
        source::MCP,
        mcp_op::GET_TRACE_STATS,
        "get_trace_stats",
        "MCP: Per-op statistics of the trace",
        MCP_ROWS,
        MCP_BYTES,
    ),
    op(
        source::MCP,
        mcp_op::GET_CAUSAL_CHAINS,
        "get_causal_chains",
        "MCP: Causal chains (root causes)",
        MCP_ROWS,
        MCP_BYTES,
    ),
    op(source::MCP, mcp_op::RUN_SQL, "run_sql", "MCP: Read-only SQL query", MCP_ROWS, MCP_BYTES),
    op(
        source::MCP,
        mcp_op::GET_STACKS,
        "get_stacks",
        "MCP: Call stacks grouped by stack",
        MCP_ROWS,
        MCP_BYTES,
    ),
    op(
        source::MCP,
        mcp_op::GRAPH_LIFECYCLE,
        "graph_lifecycle",
        "MCP: CUDA Graph lifecycle",
        MCP_ROWS,
        MCP_BYTES,
    ),
    op(
        source::MCP,
        mcp_op::GRAPH_FREQUENCY,
        "graph_frequency",
        "MCP: CUDA Graph launch frequency",
        MCP_ROWS,
        MCP_BYTES,
    ),
    op(source::MCP, mcp_op::GET_SCHEMA, "get_schema", "MCP: Schema and code tables", MCP_ROWS, MCP_BYTES),
    op(source::MCP, mcp_op::GET_PROMPT, "get_prompt", "MCP: A prompt was fetched", MCP_ROWS, MCP_BYTES),
    op(source::MCP, mcp_op::READ_RESOURCE, "read_resource", "MCP: A resource was read", MCP_ROWS, MCP_BYTES),
    op(
        source::MCP,
        mcp_op::OTHER,
        "other_tool",
        "MCP: A tool this version does not know",
        MCP_ROWS,
        MCP_BYTES,
    ),
];

/// The row for `(source, op)`, if that code exists.
pub fn find_op(source: u8, id: u8) -> Option<&'static Op> {
    OPS.iter().find(|o| o.source == source && o.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_belongs_to_a_known_source_and_is_unique() {
        for (i, o) in OPS.iter().enumerate() {
            assert!(SOURCES.iter().any(|s| s.id == o.source), "{} has no source", o.name);
            for other in &OPS[i + 1..] {
                assert!(!(other.source == o.source && other.id == o.id), "duplicate code for {}", o.name);
                assert_ne!(other.name, o.name, "duplicate name");
            }
        }
    }

    #[test]
    fn original_codes_are_kept() {
        // Published databases store these integers; a renumbering would silently
        // change the meaning of every stored row.
        assert_eq!(find_op(1, 4).map(|o| o.name), Some("cudaMemcpy"));
        assert_eq!(find_op(3, 7).map(|o| o.name), Some("process_fork"));
        assert_eq!(find_op(4, 5).map(|o| o.name), Some("cuMemAlloc"));
        assert_eq!(find_op(8, 4).map(|o| o.name), Some("graphLaunch"));
        assert_eq!(find_op(7, 2).map(|o| o.name), Some("net_recv"));
        assert_eq!(find_op(10, 4).map(|o| o.name), Some("run_sql"));
    }
}
