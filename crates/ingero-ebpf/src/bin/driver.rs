//! Uprobes on the CUDA driver library (libcuda), which cuBLAS, cuDNN and
//! torch.compile call directly, bypassing the runtime.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};
use ingero_common::codes::{driver_op, source};
use ingero_ebpf::{
    arg, arg1_from_entry, arg1_from_out_param, enter, int_arg, read_out_param, set_thread_device, take_entry,
    traced_call,
};

// cuLaunchKernel(CUfunction f, unsigned gridX, gridY, gridZ, blockX, blockY, blockZ,
// unsigned sharedMemBytes, CUstream hStream, void **kernelParams, void **extra)
traced_call!(
    cu_launch_kernel,
    cu_launch_kernel_ret,
    source::DRIVER,
    driver_op::LAUNCH_KERNEL,
    |ctx| (arg(&ctx, 0), arg(&ctx, 8), 0),
    arg1_from_entry
);
// cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
traced_call!(
    cu_memcpy,
    cu_memcpy_ret,
    source::DRIVER,
    driver_op::MEMCPY,
    |ctx| (arg(&ctx, 2), 0, 0),
    arg1_from_entry
);
// cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream)
traced_call!(
    cu_memcpy_async,
    cu_memcpy_async_ret,
    source::DRIVER,
    driver_op::MEMCPY_ASYNC,
    |ctx| (arg(&ctx, 2), arg(&ctx, 3), 0),
    arg1_from_entry
);
// cuCtxSynchronize(void)
traced_call!(
    cu_ctx_synchronize,
    cu_ctx_synchronize_ret,
    source::DRIVER,
    driver_op::CTX_SYNC,
    |_ctx| (0, 0, 0),
    arg1_from_entry
);
// cuMemAlloc(CUdeviceptr *dptr, size_t bytesize)
traced_call!(
    cu_mem_alloc,
    cu_mem_alloc_ret,
    source::DRIVER,
    driver_op::MEM_ALLOC,
    |ctx| (arg(&ctx, 1), 0, arg(&ctx, 0)),
    arg1_from_out_param
);
// cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
traced_call!(
    cu_mem_alloc_managed,
    cu_mem_alloc_managed_ret,
    source::DRIVER,
    driver_op::MEM_ALLOC_MANAGED,
    |ctx| (arg(&ctx, 1), 0, arg(&ctx, 0)),
    arg1_from_out_param
);

// The device of each driver call (`events.gpu_id`): contexts belong to a
// device, and a thread's calls run on the device of its current context. The
// runtime itself retains a device's primary context and makes it current,
// so these see what cudaSetDevice did too. Source 0: bookkeeping, never stored.
const CTX_CREATE: (u8, u8) = (0, 2);
const PRIMARY_CTX_RETAIN: (u8, u8) = (0, 3);
const CTX_SET_CURRENT: (u8, u8) = (0, 4);

/// The device of each context seen created or retained.
#[map]
static CONTEXT_DEVICE: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Remembers the context a successful create or retain wrote through its
/// out-parameter as belonging to the device kept at entry.
fn context_created(ret: &RetProbeContext, call: (u8, u8)) -> Option<u32> {
    let (_, entry) = take_entry(call.0, call.1)?;
    if ret.ret::<i32>() != 0 {
        return None;
    }
    let context = read_out_param(&entry);
    let device = entry.arg0 as u32;
    let _ = CONTEXT_DEVICE.insert(context, device, 0);
    Some(device)
}

// cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev): the new context is current.
#[uprobe]
pub fn cu_ctx_create(ctx: ProbeContext) -> u32 {
    enter(&ctx, CTX_CREATE.0, CTX_CREATE.1, int_arg(&ctx, 2), 0, arg(&ctx, 0));
    0
}

#[uretprobe]
pub fn cu_ctx_create_ret(ctx: RetProbeContext) -> u32 {
    if let Some(device) = context_created(&ctx, CTX_CREATE) {
        set_thread_device(device);
    }
    0
}

// cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev): not made current.
#[uprobe]
pub fn cu_device_primary_ctx_retain(ctx: ProbeContext) -> u32 {
    enter(&ctx, PRIMARY_CTX_RETAIN.0, PRIMARY_CTX_RETAIN.1, int_arg(&ctx, 1), 0, arg(&ctx, 0));
    0
}

#[uretprobe]
pub fn cu_device_primary_ctx_retain_ret(ctx: RetProbeContext) -> u32 {
    context_created(&ctx, PRIMARY_CTX_RETAIN);
    0
}

// cuCtxSetCurrent(CUcontext ctx) and cuCtxPushCurrent(CUcontext ctx).
#[uprobe]
pub fn cu_ctx_set_current(ctx: ProbeContext) -> u32 {
    enter(&ctx, CTX_SET_CURRENT.0, CTX_SET_CURRENT.1, arg(&ctx, 0), 0, 0);
    0
}

#[uretprobe]
pub fn cu_ctx_set_current_ret(ctx: RetProbeContext) -> u32 {
    if let Some((_, entry)) = take_entry(CTX_SET_CURRENT.0, CTX_SET_CURRENT.1)
        && ctx.ret::<i32>() == 0
        // SAFETY: the value is copied at once.
        && let Some(&device) = unsafe { CONTEXT_DEVICE.get(entry.arg0) }
    {
        set_thread_device(device);
    }
    0
}

ingero_ebpf::follow_forks!();

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
