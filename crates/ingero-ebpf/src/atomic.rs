//! Compare-and-swap and exchange on a u64 in a map value. Both are fully
//! ordered (the kernel's BPF_FETCH atomics are), which is what claiming and
//! releasing a call slot needs.

/// Stores `new` at `ptr` if it holds `old`; returns what it held.
///
/// # Safety
/// `ptr` must be valid and 8-byte aligned (a u64 field of a map value).
#[inline(always)]
pub unsafe fn compare_exchange(ptr: *mut u64, old: u64, new: u64) -> u64 {
    #[cfg(target_arch = "bpf")]
    {
        use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg};
        // SAFETY: the caller's guarantee.
        unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(ptr, old, new).0 }
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
        // SAFETY: the caller's guarantee.
        match unsafe { AtomicU64::from_ptr(ptr) }.compare_exchange(old, new, SeqCst, SeqCst) {
            Ok(held) | Err(held) => held,
        }
    }
}

/// Stores `new` at `ptr`; returns what it held.
///
/// # Safety
/// As for [`compare_exchange`].
#[inline(always)]
pub unsafe fn swap(ptr: *mut u64, new: u64) -> u64 {
    #[cfg(target_arch = "bpf")]
    {
        use core::intrinsics::{AtomicOrdering::SeqCst, atomic_xchg};
        // SAFETY: the caller's guarantee.
        unsafe { atomic_xchg::<u64, { SeqCst }>(ptr, new) }
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
        // SAFETY: the caller's guarantee.
        unsafe { AtomicU64::from_ptr(ptr) }.swap(new, SeqCst)
    }
}
