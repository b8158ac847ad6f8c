//! TCP retransmissions, machine-wide and for both address families: a lossy
//! link stalls NCCL and data loading long before anything fails outright.
#![no_std]
#![no_main]

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use ingero_common::codes::{source, tcp_op};
use ingero_ebpf::kernel::{KernelEvent, field, global, submit};

#[unsafe(no_mangle)]
static RETRANSMIT_SPORT: u32 = 0;
#[unsafe(no_mangle)]
static RETRANSMIT_DPORT: u32 = 0;
#[unsafe(no_mangle)]
static RETRANSMIT_FAMILY: u32 = 0;
#[unsafe(no_mangle)]
static RETRANSMIT_SADDR: u32 = 0;
#[unsafe(no_mangle)]
static RETRANSMIT_DADDR: u32 = 0;
#[unsafe(no_mangle)]
static RETRANSMIT_SADDR_V6: u32 = 0;
#[unsafe(no_mangle)]
static RETRANSMIT_DADDR_V6: u32 = 0;
#[unsafe(no_mangle)]
static RETRANSMIT_STATE: u32 = 0;

const AF_INET6: u16 = 10;

/// An address as the big-endian number it is written as (10.0.0.1 -> 0x0a000001).
fn be32(bytes: [u8; 4]) -> u64 {
    u64::from(u32::from_be_bytes(bytes))
}

/// The last four bytes of an IPv6 address: the IPv4 address when it is
/// v4-mapped, else the interface part that tells hosts of one subnet apart.
fn v6_tail(ctx: &TracePointContext, offset: u32) -> u64 {
    if offset == 0 {
        return 0;
    }
    field::<[u8; 4]>(ctx, offset + 12).map_or(0, be32)
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let family = field::<u16>(&ctx, global(&RETRANSMIT_FAMILY)).unwrap_or(0);
    let (saddr, daddr) = if family == AF_INET6 {
        (v6_tail(&ctx, global(&RETRANSMIT_SADDR_V6)), v6_tail(&ctx, global(&RETRANSMIT_DADDR_V6)))
    } else {
        (
            field::<[u8; 4]>(&ctx, global(&RETRANSMIT_SADDR)).map_or(0, be32),
            field::<[u8; 4]>(&ctx, global(&RETRANSMIT_DADDR)).map_or(0, be32),
        )
    };
    let sport = field::<u16>(&ctx, global(&RETRANSMIT_SPORT)).unwrap_or(0);
    let dport = field::<u16>(&ctx, global(&RETRANSMIT_DPORT)).unwrap_or(0);
    // Retransmits mostly fire from a timer in softirq context: the current
    // task (pid, comm, cgroup) is whoever was interrupted, not the socket owner.
    let mut event = KernelEvent::of_current(source::TCP, tcp_op::RETRANSMIT);
    event.arg0 = (saddr << 32) | daddr;
    event.arg1 = (u64::from(sport) << 16) | u64::from(dport);
    // The address family (2 IPv4, 10 IPv6) in the low byte, the TCP state above it.
    let state = field::<i32>(&ctx, global(&RETRANSMIT_STATE)).unwrap_or(0);
    event.ret_code = (state << 8) | i32::from(family as u8);
    submit(&event);
    0
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
