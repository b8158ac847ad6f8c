//! Uprobes on the CUDA runtime API (libcudart): each call's entry is paired with
//! its return on the same thread and reported as one `CallEvent`.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{map, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};
use ingero_common::codes::{cuda_op, source};
use ingero_ebpf::{CallEntry, emit, enter, take_entry};

/// Device allocations still live, so `cudaFree` can report the bytes it gives back.
#[repr(C)]
#[derive(Clone, Copy)]
struct AllocKey {
    pid: u64,
    dev_ptr: u64,
}

#[map]
static ALLOC_SIZES: HashMap<AllocKey, u64> = HashMap::with_max_entries(65536, 0);

fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

/// `cudaLaunchKernel`'s stream: the seventh machine word of its arguments
/// (the two `dim3` structs take two registers each), which the x86-64 ABI
/// passes on the stack and arm64 in x7.
fn launch_stream(ctx: &ProbeContext) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: reading the traced thread's own stack; a fault yields 0.
        let sp = unsafe { (*ctx.regs).rsp };
        unsafe { bpf_probe_read_user((sp + 16) as *const u64) }.unwrap_or(0)
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        arg(ctx, 7)
    }
    #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
    {
        let _ = ctx;
        0
    }
}

/// Emits the call returning now; `arg1` computes the second argument from the entry.
#[inline(always)]
fn finish(ctx: &RetProbeContext, op: u8, arg1: impl FnOnce(u64, &CallEntry, i32) -> u64) {
    if let Some((pid_tgid, entry)) = take_entry(op) {
        let ret_code: i32 = ctx.ret();
        let arg1 = arg1(pid_tgid, &entry, ret_code);
        emit(source::CUDA, op, pid_tgid, &entry, arg1, ret_code);
    }
}

fn keep_arg1(_: u64, entry: &CallEntry, _: i32) -> u64 {
    entry.arg1
}

/// Reads the device pointer an allocation stored through its out-parameter,
/// remembering its size for the matching free.
fn allocated_pointer(pid_tgid: u64, entry: &CallEntry, ret_code: i32) -> u64 {
    if ret_code != 0 || entry.out_ptr == 0 {
        return 0;
    }
    // SAFETY: reads the caller's out-parameter; a fault yields 0.
    let dev_ptr = unsafe { bpf_probe_read_user(entry.out_ptr as *const u64) }.unwrap_or(0);
    if dev_ptr != 0 {
        let key = AllocKey {
            pid: pid_tgid >> 32,
            dev_ptr,
        };
        let _ = ALLOC_SIZES.insert(key, entry.arg0, 0);
    }
    dev_ptr
}

#[uprobe]
pub fn cuda_malloc(ctx: ProbeContext) -> u32 {
    // cudaMalloc(void **devPtr, size_t size)
    enter(cuda_op::MALLOC, arg(&ctx, 1), 0, arg(&ctx, 0));
    0
}

#[uretprobe]
pub fn cuda_malloc_ret(ctx: RetProbeContext) -> u32 {
    finish(&ctx, cuda_op::MALLOC, allocated_pointer);
    0
}

#[uprobe]
pub fn cuda_malloc_managed(ctx: ProbeContext) -> u32 {
    // cudaMallocManaged(void **devPtr, size_t size, unsigned int flags)
    enter(cuda_op::MALLOC_MANAGED, arg(&ctx, 1), 0, arg(&ctx, 0));
    0
}

#[uretprobe]
pub fn cuda_malloc_managed_ret(ctx: RetProbeContext) -> u32 {
    finish(&ctx, cuda_op::MALLOC_MANAGED, allocated_pointer);
    0
}

#[uprobe]
pub fn cuda_free(ctx: ProbeContext) -> u32 {
    // cudaFree(void *devPtr)
    enter(cuda_op::FREE, arg(&ctx, 0), 0, 0);
    0
}

#[uretprobe]
pub fn cuda_free_ret(ctx: RetProbeContext) -> u32 {
    finish(&ctx, cuda_op::FREE, |pid_tgid, entry, ret_code| {
        let key = AllocKey {
            pid: pid_tgid >> 32,
            dev_ptr: entry.arg0,
        };
        // SAFETY: the value is copied before the entry is removed.
        let bytes = unsafe { ALLOC_SIZES.get(key) }.copied().unwrap_or(0);
        if ret_code == 0 && bytes != 0 {
            let _ = ALLOC_SIZES.remove(key);
        }
        bytes
    });
    0
}

#[uprobe]
pub fn cuda_launch_kernel(ctx: ProbeContext) -> u32 {
    // cudaLaunchKernel(const void *func, dim3 grid, dim3 block, void **args,
    //                  size_t sharedMem, cudaStream_t stream)
    enter(cuda_op::LAUNCH_KERNEL, arg(&ctx, 0), launch_stream(&ctx), 0);
    0
}

#[uretprobe]
pub fn cuda_launch_kernel_ret(ctx: RetProbeContext) -> u32 {
    finish(&ctx, cuda_op::LAUNCH_KERNEL, keep_arg1);
    0
}

#[uprobe]
pub fn cuda_memcpy(ctx: ProbeContext) -> u32 {
    // cudaMemcpy(void *dst, const void *src, size_t count, cudaMemcpyKind kind)
    enter(cuda_op::MEMCPY, arg(&ctx, 2), arg(&ctx, 3), 0);
    0
}

#[uretprobe]
pub fn cuda_memcpy_ret(ctx: RetProbeContext) -> u32 {
    finish(&ctx, cuda_op::MEMCPY, keep_arg1);
    0
}

#[uprobe]
pub fn cuda_memcpy_async(ctx: ProbeContext) -> u32 {
    // cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind, cudaStream_t)
    enter(cuda_op::MEMCPY_ASYNC, arg(&ctx, 2), arg(&ctx, 3), 0);
    0
}

#[uretprobe]
pub fn cuda_memcpy_async_ret(ctx: RetProbeContext) -> u32 {
    finish(&ctx, cuda_op::MEMCPY_ASYNC, keep_arg1);
    0
}

#[uprobe]
pub fn cuda_stream_synchronize(ctx: ProbeContext) -> u32 {
    // cudaStreamSynchronize(cudaStream_t stream)
    enter(cuda_op::STREAM_SYNC, arg(&ctx, 0), 0, 0);
    0
}

#[uretprobe]
pub fn cuda_stream_synchronize_ret(ctx: RetProbeContext) -> u32 {
    finish(&ctx, cuda_op::STREAM_SYNC, keep_arg1);
    0
}

#[uprobe]
pub fn cuda_device_synchronize(_ctx: ProbeContext) -> u32 {
    enter(cuda_op::DEVICE_SYNC, 0, 0, 0);
    0
}

#[uretprobe]
pub fn cuda_device_synchronize_ret(ctx: RetProbeContext) -> u32 {
    finish(&ctx, cuda_op::DEVICE_SYNC, keep_arg1);
    0
}

// Host-side `cargo clippy` builds this crate beside std; only the BPF target needs it.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
