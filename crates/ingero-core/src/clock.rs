//! Converting the kernel's monotonic event times into Unix nanoseconds.

fn read(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer and both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

pub fn wall_now_ns() -> i64 {
    read(libc::CLOCK_REALTIME)
}

/// `bpf_ktime_get_ns()` is CLOCK_MONOTONIC; adding this offset, taken once per
/// trace, gives wall-clock time without letting NTP steps reorder events.
pub fn monotonic_to_wall_offset() -> i64 {
    let before = read(libc::CLOCK_MONOTONIC);
    let wall = read(libc::CLOCK_REALTIME);
    let after = read(libc::CLOCK_MONOTONIC);
    wall - (before + (after - before) / 2)
}
