//! Uprobes on the CUDA runtime library (libcudart): the runtime API and the
//! CUDA Graph lifecycle. Each call's entry is paired with its return on the
//! same thread and reported as one `CallEvent`.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};
use ingero_common::codes::{cuda_op, graph_op, source};
use ingero_ebpf::{
    CallEntry, arg, arg1_from_entry, arg1_from_out_param, enter, int_arg, read_out_param, set_thread_device,
    take_entry, traced_call,
};

/// Device allocations still live, so `cudaFree` can report the bytes it gives back.
#[repr(C)]
#[derive(Clone, Copy)]
struct AllocKey {
    pid: u64,
    dev_ptr: u64,
}

#[map]
static ALLOC_SIZES: HashMap<AllocKey, u64> = HashMap::with_max_entries(65536, 0);

/// Reads the device pointer an allocation stored through its out-parameter,
/// remembering its size for the matching free.
fn allocated_pointer(pid_tgid: u64, entry: &CallEntry, ret_code: i32) -> u64 {
    if ret_code != 0 {
        return 0;
    }
    let dev_ptr = read_out_param(entry);
    if dev_ptr != 0 {
        let key = AllocKey { pid: pid_tgid >> 32, dev_ptr };
        let _ = ALLOC_SIZES.insert(key, entry.arg0, 0);
    }
    dev_ptr
}

/// The bytes a successful free gave back (0 if the allocation was not seen).
fn freed_bytes(pid_tgid: u64, entry: &CallEntry, ret_code: i32) -> u64 {
    let key = AllocKey { pid: pid_tgid >> 32, dev_ptr: entry.arg0 };
    // SAFETY: the value is copied before the entry is removed.
    let bytes = unsafe { ALLOC_SIZES.get(key) }.copied().unwrap_or(0);
    if ret_code == 0 && bytes != 0 {
        let _ = ALLOC_SIZES.remove(key);
    }
    bytes
}

// cudaMalloc(void **devPtr, size_t size)
traced_call!(
    cuda_malloc,
    cuda_malloc_ret,
    source::CUDA,
    cuda_op::MALLOC,
    |ctx| (arg(&ctx, 1), 0, arg(&ctx, 0)),
    allocated_pointer
);
// cudaMallocManaged(void **devPtr, size_t size, unsigned int flags)
traced_call!(
    cuda_malloc_managed,
    cuda_malloc_managed_ret,
    source::CUDA,
    cuda_op::MALLOC_MANAGED,
    |ctx| (arg(&ctx, 1), 0, arg(&ctx, 0)),
    allocated_pointer
);
// cudaFree(void *devPtr)
traced_call!(cuda_free, cuda_free_ret, source::CUDA, cuda_op::FREE, |ctx| (arg(&ctx, 0), 0, 0), freed_bytes);
// cudaLaunchKernel(const void *func, dim3 grid, dim3 block, void **args, size_t sharedMem,
// cudaStream_t stream): each dim3 takes two argument words, so the stream is word 7.
traced_call!(
    cuda_launch_kernel,
    cuda_launch_kernel_ret,
    source::CUDA,
    cuda_op::LAUNCH_KERNEL,
    |ctx| (arg(&ctx, 0), arg(&ctx, 7), 0),
    arg1_from_entry
);
// cudaMemcpy(void *dst, const void *src, size_t count, cudaMemcpyKind kind)
traced_call!(
    cuda_memcpy,
    cuda_memcpy_ret,
    source::CUDA,
    cuda_op::MEMCPY,
    |ctx| (arg(&ctx, 2), int_arg(&ctx, 3), 0),
    arg1_from_entry
);
// cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind, cudaStream_t)
traced_call!(
    cuda_memcpy_async,
    cuda_memcpy_async_ret,
    source::CUDA,
    cuda_op::MEMCPY_ASYNC,
    |ctx| (arg(&ctx, 2), int_arg(&ctx, 3), 0),
    arg1_from_entry
);
// cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
// size_t height, cudaMemcpyKind kind)
traced_call!(
    cuda_memcpy_2d,
    cuda_memcpy_2d_ret,
    source::CUDA,
    cuda_op::MEMCPY_2D,
    |ctx| (arg(&ctx, 4).wrapping_mul(arg(&ctx, 5)), int_arg(&ctx, 6), 0),
    arg1_from_entry
);
// cudaMemcpy2DAsync(..., cudaMemcpyKind kind, cudaStream_t stream)
traced_call!(
    cuda_memcpy_2d_async,
    cuda_memcpy_2d_async_ret,
    source::CUDA,
    cuda_op::MEMCPY_2D_ASYNC,
    |ctx| (arg(&ctx, 4).wrapping_mul(arg(&ctx, 5)), int_arg(&ctx, 6), 0),
    arg1_from_entry
);
// cudaMemcpyPeer(void *dst, int dstDevice, const void *src, int srcDevice, size_t count)
traced_call!(
    cuda_memcpy_peer,
    cuda_memcpy_peer_ret,
    source::CUDA,
    cuda_op::MEMCPY_PEER,
    |ctx| (arg(&ctx, 4), int_arg(&ctx, 1), 0),
    arg1_from_entry
);
// cudaMemcpyPeerAsync(void *dst, int dstDevice, const void *src, int srcDevice, size_t count,
// cudaStream_t stream)
traced_call!(
    cuda_memcpy_peer_async,
    cuda_memcpy_peer_async_ret,
    source::CUDA,
    cuda_op::MEMCPY_PEER_ASYNC,
    |ctx| (arg(&ctx, 4), int_arg(&ctx, 1), 0),
    arg1_from_entry
);
// cudaStreamSynchronize(cudaStream_t stream)
traced_call!(
    cuda_stream_synchronize,
    cuda_stream_synchronize_ret,
    source::CUDA,
    cuda_op::STREAM_SYNC,
    |ctx| (arg(&ctx, 0), 0, 0),
    arg1_from_entry
);
// cudaDeviceSynchronize(void)
traced_call!(
    cuda_device_synchronize,
    cuda_device_synchronize_ret,
    source::CUDA,
    cuda_op::DEVICE_SYNC,
    |_ctx| (0, 0, 0),
    arg1_from_entry
);

// cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode)
traced_call!(
    cuda_stream_begin_capture,
    cuda_stream_begin_capture_ret,
    source::CUDA_GRAPH,
    graph_op::BEGIN_CAPTURE,
    |ctx| (arg(&ctx, 0), int_arg(&ctx, 1), 0),
    arg1_from_entry
);
// cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *pGraph)
traced_call!(
    cuda_stream_end_capture,
    cuda_stream_end_capture_ret,
    source::CUDA_GRAPH,
    graph_op::END_CAPTURE,
    |ctx| (arg(&ctx, 0), 0, arg(&ctx, 1)),
    arg1_from_out_param
);
// cudaGraphInstantiate(cudaGraphExec_t *pGraphExec, cudaGraph_t graph, unsigned long long flags)
traced_call!(
    cuda_graph_instantiate,
    cuda_graph_instantiate_ret,
    source::CUDA_GRAPH,
    graph_op::INSTANTIATE,
    |ctx| (arg(&ctx, 1), 0, arg(&ctx, 0)),
    arg1_from_out_param
);
// cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream)
traced_call!(
    cuda_graph_launch,
    cuda_graph_launch_ret,
    source::CUDA_GRAPH,
    graph_op::LAUNCH,
    |ctx| (arg(&ctx, 0), arg(&ctx, 1), 0),
    arg1_from_entry
);

/// cudaSetDevice is not stored; its pairing only tracks which device each
/// thread's later calls run on (`events.gpu_id`). Source 0 is never stored.
const SET_DEVICE: (u8, u8) = (0, 1);

#[uprobe]
pub fn cuda_set_device(ctx: ProbeContext) -> u32 {
    // cudaSetDevice(int device)
    enter(&ctx, SET_DEVICE.0, SET_DEVICE.1, int_arg(&ctx, 0), 0, 0);
    0
}

#[uretprobe]
pub fn cuda_set_device_ret(ctx: RetProbeContext) -> u32 {
    if let Some((_, entry)) = take_entry(SET_DEVICE.0, SET_DEVICE.1)
        && ctx.ret::<i32>() == 0
    {
        set_thread_device(entry.arg0 as u32);
    }
    0
}

ingero_ebpf::follow_forks!();

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
