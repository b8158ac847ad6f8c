//! Uprobes on the CUDA driver library (libcuda), which cuBLAS, cuDNN and
//! torch.compile call directly, bypassing the runtime.
#![no_std]
#![no_main]

use ingero_common::codes::{driver_op, source};
use ingero_ebpf::{arg, arg1_from_entry, arg1_from_out_param, traced_call};

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

ingero_ebpf::follow_forks!();

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
