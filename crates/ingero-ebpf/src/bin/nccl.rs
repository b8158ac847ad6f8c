//! Uprobes on NCCL (libnccl): communicator set-up and the collectives, stored
//! as events (the original Ingero only exported them as metrics) so the
//! analysis can line collectives up across ranks.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::bpf_probe_read_user_buf,
    macros::{map, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};
use ingero_common::codes::{nccl_op, source};
use ingero_ebpf::{CallEntry, arg, arg1_from_entry, enter, finish, int_arg, read_out_param, traced_call};

/// What a communicator handle stands for: the hash of the unique id every rank
/// of it was created with, and this member's place.
#[repr(C)]
#[derive(Clone, Copy)]
struct Communicator {
    id_hash: u64,
    rank: u32,
    nranks: u32,
}

#[map]
static COMMUNICATORS: HashMap<u64, Communicator> = HashMap::with_max_entries(4096, 0);

const UNIQUE_ID_BYTES: usize = 128;

/// FNV-1a over the 128-byte ncclUniqueId: equal on every rank of one
/// communicator, and different across communicators.
fn hash_unique_id(id: &[u8; UNIQUE_ID_BYTES]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in id {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The user address of ncclCommInitRank's by-value ncclUniqueId: x86-64 passes
/// it in memory at the first stack slot; arm64 passes large structs by reference.
fn unique_id_address(ctx: &ProbeContext) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: the probe's own register snapshot.
        unsafe { (*ctx.regs).rsp + 8 }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        arg(ctx, 2)
    }
}

/// ncclCommInitRank's `rank`: the third integer register on x86-64 (the id
/// took no register), the fourth argument on arm64.
fn init_rank_rank(ctx: &ProbeContext) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        int_arg(ctx, 2)
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        int_arg(ctx, 3)
    }
}

fn datatype_bytes(datatype: u64) -> u64 {
    match datatype {
        0 | 1 | 10 | 11 => 1, // int8, uint8, fp8 e4m3 / e5m2
        6 | 9 => 2,           // float16, bfloat16
        2 | 3 | 7 => 4,       // int32, uint32, float32
        4 | 5 | 8 => 8,       // int64, uint64, float64
        _ => 0,
    }
}

fn comm_hash(comm: u64) -> u64 {
    // SAFETY: the value is copied out at once.
    unsafe { COMMUNICATORS.get(comm) }.map_or(0, |c| c.id_hash)
}

#[uprobe]
pub fn nccl_comm_init_rank(ctx: ProbeContext) -> u32 {
    // ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank)
    let mut id = [0u8; UNIQUE_ID_BYTES];
    // SAFETY: reading the caller's copy of the id; a fault leaves zeros.
    let _ = unsafe { bpf_probe_read_user_buf(unique_id_address(&ctx) as *const u8, &mut id) };
    let members = (init_rank_rank(&ctx) << 32) | (int_arg(&ctx, 1) & 0xffff_ffff);
    enter(&ctx, source::NCCL, nccl_op::COMM_INIT_RANK, hash_unique_id(&id), members, arg(&ctx, 0));
    0
}

#[uretprobe]
pub fn nccl_comm_init_rank_ret(ctx: RetProbeContext) -> u32 {
    finish(&ctx, source::NCCL, nccl_op::COMM_INIT_RANK, |_, entry: &CallEntry, ret_code| {
        let comm = read_out_param(entry);
        if ret_code == 0 && comm != 0 {
            let member = Communicator {
                id_hash: entry.arg0,
                rank: (entry.arg1 >> 32) as u32,
                nranks: entry.arg1 as u32,
            };
            let _ = COMMUNICATORS.insert(comm, member, 0);
        }
        entry.arg1
    });
    0
}

// ncclCommDestroy(ncclComm_t comm): arg0 = the communicator's id hash.
#[uprobe]
pub fn nccl_comm_destroy(ctx: ProbeContext) -> u32 {
    let comm = arg(&ctx, 0);
    enter(&ctx, source::NCCL, nccl_op::COMM_DESTROY, comm_hash(comm), comm, 0);
    0
}

#[uretprobe]
pub fn nccl_comm_destroy_ret(ctx: RetProbeContext) -> u32 {
    finish(&ctx, source::NCCL, nccl_op::COMM_DESTROY, |_, entry: &CallEntry, ret_code| {
        if ret_code == 0 {
            let _ = COMMUNICATORS.remove(entry.arg1);
        }
        0
    });
    0
}

// ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist)
traced_call!(
    nccl_comm_init_all,
    nccl_comm_init_all_ret,
    source::NCCL,
    nccl_op::COMM_INIT_ALL,
    |ctx| (int_arg(&ctx, 1), 0, 0),
    arg1_from_entry
);
// ncclAllReduce(sendbuff, recvbuff, size_t count, ncclDataType_t, ncclRedOp_t, ncclComm_t, stream)
traced_call!(
    nccl_all_reduce,
    nccl_all_reduce_ret,
    source::NCCL,
    nccl_op::ALL_REDUCE,
    |ctx| (arg(&ctx, 2) * datatype_bytes(int_arg(&ctx, 3)), comm_hash(arg(&ctx, 5)), 0),
    arg1_from_entry
);
// ncclAllGather(sendbuff, recvbuff, size_t sendcount, ncclDataType_t, ncclComm_t, stream)
traced_call!(
    nccl_all_gather,
    nccl_all_gather_ret,
    source::NCCL,
    nccl_op::ALL_GATHER,
    |ctx| (arg(&ctx, 2) * datatype_bytes(int_arg(&ctx, 3)), comm_hash(arg(&ctx, 4)), 0),
    arg1_from_entry
);
// ncclReduceScatter(sendbuff, recvbuff, size_t recvcount, ncclDataType_t, ncclRedOp_t, ncclComm_t, stream)
traced_call!(
    nccl_reduce_scatter,
    nccl_reduce_scatter_ret,
    source::NCCL,
    nccl_op::REDUCE_SCATTER,
    |ctx| (arg(&ctx, 2) * datatype_bytes(int_arg(&ctx, 3)), comm_hash(arg(&ctx, 5)), 0),
    arg1_from_entry
);
// ncclBroadcast(sendbuff, recvbuff, size_t count, ncclDataType_t, int root, ncclComm_t, stream)
traced_call!(
    nccl_broadcast,
    nccl_broadcast_ret,
    source::NCCL,
    nccl_op::BROADCAST,
    |ctx| (arg(&ctx, 2) * datatype_bytes(int_arg(&ctx, 3)), comm_hash(arg(&ctx, 5)), 0),
    arg1_from_entry
);
// ncclSend(sendbuff, size_t count, ncclDataType_t, int peer, ncclComm_t, stream)
traced_call!(
    nccl_send,
    nccl_send_ret,
    source::NCCL,
    nccl_op::SEND,
    |ctx| (arg(&ctx, 1) * datatype_bytes(int_arg(&ctx, 2)), int_arg(&ctx, 3), 0),
    arg1_from_entry
);
// ncclRecv(recvbuff, size_t count, ncclDataType_t, int peer, ncclComm_t, stream)
traced_call!(
    nccl_recv,
    nccl_recv_ret,
    source::NCCL,
    nccl_op::RECV,
    |ctx| (arg(&ctx, 1) * datatype_bytes(int_arg(&ctx, 2)), int_arg(&ctx, 3), 0),
    arg1_from_entry
);

ingero_ebpf::follow_forks!();

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
