/*
 * nccl.c - simulated NCCL 2.x (libnccl.so.2).
 *
 * Exports the real NCCL symbol names with their real C signatures (x86-64
 * SysV), so uprobes on e.g. `ncclAllReduce` fire exactly like they would on
 * NVIDIA's library.  Nothing is communicated and no GPU is used:
 * communicators are fake handles in a registry, and every collective or
 * point-to-point call just takes the time the model gives it, on the calling
 * thread, before returning.  Buffers and streams are never dereferenced.
 *
 * Uses only the time and environment helpers of simcuda.h (its own private,
 * static copy: SIMCUDA_SPIN_NS applies); it does not depend on libcudart or
 * libcuda.  Knobs (read once):
 *   SIMNCCL_INIT_NS        host time of a successful ncclCommInitRank /
 *                          ncclCommInitAll (default 100000)
 *   SIMNCCL_BYTES_PER_US   bandwidth of a collective (default 5000, ~5 GB/s)
 *   SIMNCCL_BASE_NS        fixed time of a collective (default 20000)
 *   SIMNCCL_STRAGGLER_RANK rank whose collectives take SIMNCCL_STRAGGLER_NS
 *   SIMNCCL_STRAGGLER_NS   longer (default: no straggler; 0 ns)
 * Collective time = BASE_NS + count * sizeof(datatype) * 1000 / BYTES_PER_US
 * (+ STRAGGLER_NS when the communicator's rank is the straggler rank).
 *
 * Rules kept throughout this file (as in cudart.c):
 *   - every exported function is SIM_API (default visibility, noinline);
 *   - exported functions never call each other: shared logic lives in static
 *     nccl_* / sim_* helpers, so one user call fires exactly one uprobe;
 *   - the global mutex is never held while sleeping.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "simcuda.h"

/* ------------------------------------------------------------------------ */
/* NCCL types, as in nccl.h (NCCL 2.21).                                     */
/* ------------------------------------------------------------------------ */

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef struct ncclComm *ncclComm_t;
typedef struct CUstream_st *cudaStream_t;

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
    ncclNumResults = 8
} ncclResult_t;

typedef enum {
    ncclInt8 = 0, ncclChar = 0,
    ncclUint8 = 1,
    ncclInt32 = 2, ncclInt = 2,
    ncclUint32 = 3,
    ncclInt64 = 4,
    ncclUint64 = 5,
    ncclFloat16 = 6, ncclHalf = 6,
    ncclFloat32 = 7, ncclFloat = 7,
    ncclFloat64 = 8, ncclDouble = 8,
    ncclBfloat16 = 9,
    ncclNumTypes = 10
} ncclDataType_t;

typedef enum {
    ncclSum = 0,
    ncclProd = 1,
    ncclMax = 2,
    ncclMin = 3,
    ncclAvg = 4,
    ncclNumOps = 5,
    ncclMaxRedOp = 0x7fffffff
} ncclRedOp_t;

#define NCCL_VERSION_CODE 22105 /* NCCL_VERSION(2, 21, 5) */

/* First 8 bytes of every ncclUniqueId this library makes. */
static const char nccl_id_magic[8] = {'S', 'I', 'M', 'N', 'C', 'C', 'L', '1'};

/* Fake communicator handles: unique over the process lifetime (never reused
 * after ncclCommDestroy), never dereferenced. */
#define NCCL_COMM_BASE 0x7d0000000000ULL
#define NCCL_COMM_STRIDE 0x1000ULL

/* ------------------------------------------------------------------------ */
/* Configuration (environment knobs, read once).                             */
/* ------------------------------------------------------------------------ */

struct nccl_config {
    uint64_t init_ns;       /* SIMNCCL_INIT_NS        */
    uint64_t bytes_per_us;  /* SIMNCCL_BYTES_PER_US   */
    uint64_t base_ns;       /* SIMNCCL_BASE_NS        */
    int straggler_rank;     /* SIMNCCL_STRAGGLER_RANK (-1: none) */
    uint64_t straggler_ns;  /* SIMNCCL_STRAGGLER_NS   */
};

static struct nccl_config nccl_cfg;
static pthread_once_t nccl_cfg_once = PTHREAD_ONCE_INIT;

/* A non-negative int from the environment, or -1 (unset, empty, not a
 * number, negative or too large). */
static int nccl_env_rank(const char *name)
{
    const char *v = getenv(name);
    char *end = NULL;
    long x;

    if (v == NULL || *v == '\0')
        return -1;
    errno = 0;
    x = strtol(v, &end, 0);
    if (errno != 0 || end == v || *end != '\0' || x < 0 || x > 0x7fffffffL)
        return -1;
    return (int)x;
}

static void nccl_config_init(void)
{
    nccl_cfg.init_ns = sim_env_u64("SIMNCCL_INIT_NS", 100000);
    nccl_cfg.bytes_per_us = sim_env_u64("SIMNCCL_BYTES_PER_US", 5000);
    if (nccl_cfg.bytes_per_us == 0)
        nccl_cfg.bytes_per_us = 1;
    nccl_cfg.base_ns = sim_env_u64("SIMNCCL_BASE_NS", 20000);
    nccl_cfg.straggler_rank = nccl_env_rank("SIMNCCL_STRAGGLER_RANK");
    nccl_cfg.straggler_ns = sim_env_u64("SIMNCCL_STRAGGLER_NS", 0);
}

static const struct nccl_config *nccl_config(void)
{
    pthread_once(&nccl_cfg_once, nccl_config_init);
    return &nccl_cfg;
}

/* ------------------------------------------------------------------------ */
/* Result strings (the texts of NCCL 2.21).                                  */
/* ------------------------------------------------------------------------ */

static const char *nccl_result_text(ncclResult_t r)
{
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError:
        return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError:
        return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError:
        return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

/* ------------------------------------------------------------------------ */
/* Unique ids.                                                               */
/* ------------------------------------------------------------------------ */

static uint64_t nccl_id_counter; /* atomic */

static uint64_t nccl_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/*
 * Layout: [0,8) magic "SIMNCCL1"; [8,12) pid (u32, little endian);
 * [12,16) per-process counter (u32, starts at 1); [16,24) CLOCK_REALTIME ns;
 * [24,128) pseudo-random bytes seeded from the three.  So two ids made by
 * one process always differ in their first 16 bytes.
 */
static void nccl_make_id(ncclUniqueId *id)
{
    uint32_t pid = (uint32_t)getpid();
    uint64_t seq = __atomic_add_fetch(&nccl_id_counter, 1, __ATOMIC_RELAXED);
    uint32_t seq32 = (uint32_t)seq;
    struct timespec ts;
    uint64_t t, state, r;
    size_t off;

    clock_gettime(CLOCK_REALTIME, &ts);
    t = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    memcpy(id->internal, nccl_id_magic, 8);
    memcpy(id->internal + 8, &pid, 4);
    memcpy(id->internal + 12, &seq32, 4);
    memcpy(id->internal + 16, &t, 8);
    state = t ^ ((uint64_t)pid << 32) ^ (seq * 0xD1B54A32D192ED03ULL);
    for (off = 24; off < NCCL_UNIQUE_ID_BYTES; off += 8) {
        r = nccl_splitmix64(&state);
        memcpy(id->internal + off, &r, 8);
    }
}

static int nccl_id_valid(const ncclUniqueId *id)
{
    return memcmp(id->internal, nccl_id_magic, 8) == 0;
}

/* ------------------------------------------------------------------------ */
/* Communicators.                                                            */
/* ------------------------------------------------------------------------ */

struct nccl_comm {
    uint64_t handle;        /* the fake ncclComm_t given out */
    int rank;
    int nranks;
    ncclUniqueId id;        /* copy of the id it was made from */
    struct nccl_comm *next;
};

static struct nccl_comm *nccl_comms; /* registry of live comms (sim_lock) */
static uint64_t nccl_next_comm;      /* handles given out so far (sim_lock) */

/* Caller holds sim_lock.  NULL for an unknown handle. */
static struct nccl_comm *nccl_comm_lookup_locked(const void *handle)
{
    struct nccl_comm *c;
    for (c = nccl_comms; c != NULL; c = c->next)
        if (c->handle == (uint64_t)(uintptr_t)handle)
            return c;
    return NULL;
}

/* Caller holds sim_lock.  Registers c under a fresh handle. */
static void nccl_comm_add_locked(struct nccl_comm *c)
{
    nccl_next_comm++;
    c->handle = NCCL_COMM_BASE + nccl_next_comm * NCCL_COMM_STRIDE;
    c->next = nccl_comms;
    nccl_comms = c;
}

/*
 * Caller holds sim_lock.  ncclInvalidUsage if a live comm made from `id`
 * already has `rank`, or was made with a different nranks (the ranks of one
 * id must agree); else ncclSuccess.
 */
static ncclResult_t nccl_clique_check_locked(const ncclUniqueId *id, int nranks, int rank)
{
    const struct nccl_comm *c;
    for (c = nccl_comms; c != NULL; c = c->next) {
        if (memcmp(c->id.internal, id->internal, NCCL_UNIQUE_ID_BYTES) != 0)
            continue;
        if (c->rank == rank || c->nranks != nranks)
            return ncclInvalidUsage;
    }
    return ncclSuccess;
}

static ncclResult_t nccl_comm_init_rank(ncclComm_t *comm, int nranks, const ncclUniqueId *id,
                                        int rank)
{
    struct nccl_comm *c;
    ncclResult_t r;

    if (comm == NULL)
        return ncclInvalidArgument;
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return ncclInvalidArgument;
    if (!nccl_id_valid(id))
        return ncclInvalidUsage;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return ncclSystemError;
    c->rank = rank;
    c->nranks = nranks;
    memcpy(&c->id, id, sizeof(c->id));
    pthread_mutex_lock(&sim_lock);
    r = nccl_clique_check_locked(id, nranks, rank);
    if (r == ncclSuccess)
        nccl_comm_add_locked(c);
    pthread_mutex_unlock(&sim_lock);
    if (r != ncclSuccess) {
        free(c);
        return r;
    }
    sim_delay(nccl_config()->init_ns);
    *comm = (ncclComm_t)(uintptr_t)c->handle;
    return ncclSuccess;
}

static ncclResult_t nccl_comm_init_all(ncclComm_t *comms, int ndev, const int *devlist)
{
    struct nccl_comm **made;
    ncclUniqueId id;
    int i, j;

    if (comms == NULL || ndev < 1)
        return ncclInvalidArgument;
    if (devlist != NULL) {
        for (i = 0; i < ndev; i++) {
            if (devlist[i] < 0)
                return ncclInvalidArgument;
            for (j = 0; j < i; j++)
                if (devlist[i] == devlist[j])
                    return ncclInvalidUsage; /* "Duplicate device found" */
        }
    }
    made = calloc((size_t)ndev, sizeof(*made));
    if (made == NULL)
        return ncclSystemError;
    for (i = 0; i < ndev; i++) {
        made[i] = calloc(1, sizeof(**made));
        if (made[i] == NULL) {
            while (i-- > 0)
                free(made[i]);
            free(made);
            return ncclSystemError;
        }
    }
    nccl_make_id(&id);
    pthread_mutex_lock(&sim_lock);
    for (i = 0; i < ndev; i++) {
        made[i]->rank = i;
        made[i]->nranks = ndev;
        memcpy(&made[i]->id, &id, sizeof(id));
        nccl_comm_add_locked(made[i]);
    }
    pthread_mutex_unlock(&sim_lock);
    /* The communicators are initialised together (as one group): one INIT_NS. */
    sim_delay(nccl_config()->init_ns);
    for (i = 0; i < ndev; i++)
        comms[i] = (ncclComm_t)(uintptr_t)made[i]->handle;
    free(made);
    return ncclSuccess;
}

static ncclResult_t nccl_comm_destroy(const void *handle)
{
    struct nccl_comm **pp, *c = NULL;

    if (handle == NULL)
        return ncclSuccess; /* as NCCL: destroying NULL is a no-op */
    pthread_mutex_lock(&sim_lock);
    for (pp = &nccl_comms; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->handle == (uint64_t)(uintptr_t)handle) {
            c = *pp;
            *pp = c->next;
            break;
        }
    }
    pthread_mutex_unlock(&sim_lock);
    if (c == NULL)
        return ncclInvalidArgument;
    free(c);
    return ncclSuccess;
}

/* Rank and size of a live comm.  ncclInvalidArgument if unknown. */
static ncclResult_t nccl_comm_info(const void *handle, int *rank, int *nranks)
{
    const struct nccl_comm *c;

    pthread_mutex_lock(&sim_lock);
    c = nccl_comm_lookup_locked(handle);
    if (c != NULL) {
        *rank = c->rank;
        *nranks = c->nranks;
    }
    pthread_mutex_unlock(&sim_lock);
    return c != NULL ? ncclSuccess : ncclInvalidArgument;
}

/* ------------------------------------------------------------------------ */
/* Collectives and point-to-point.                                           */
/* ------------------------------------------------------------------------ */

/* Bytes of one element; 0 for an unknown datatype. */
static size_t nccl_type_size(int datatype)
{
    switch (datatype) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
    }
}

/* BASE_NS + bytes * 1000 / BYTES_PER_US (+ STRAGGLER_NS for its rank), saturating. */
static uint64_t nccl_cost_ns(uint64_t bytes, int rank)
{
    const struct nccl_config *c = nccl_config();
    unsigned __int128 v = (unsigned __int128)bytes * 1000U / c->bytes_per_us;
    uint64_t ns = v > UINT64_MAX ? UINT64_MAX : (uint64_t)v;

    ns = sim_sat_add(c->base_ns, ns);
    if (c->straggler_rank >= 0 && rank == c->straggler_rank)
        ns = sim_sat_add(ns, c->straggler_ns);
    return ns;
}

#define NCCL_CHECK_OP 1U     /* `op` must be a predefined ncclRedOp_t */
#define NCCL_CHECK_TARGET 2U /* `target` (root / peer) must be a rank */

/*
 * One collective or point-to-point call on `comm`: validate, then take the
 * modelled time.  Unknown comm, bad datatype, bad op or a target outside
 * [0, nranks): ncclInvalidArgument, at once.
 */
static ncclResult_t nccl_collective(const void *comm, size_t count, int datatype, int op,
                                    int target, unsigned checks)
{
    size_t esize;
    unsigned __int128 bytes;
    int rank = 0, nranks = 0;

    if (comm == NULL || nccl_comm_info(comm, &rank, &nranks) != ncclSuccess)
        return ncclInvalidArgument;
    esize = nccl_type_size(datatype);
    if (esize == 0)
        return ncclInvalidArgument;
    if ((checks & NCCL_CHECK_OP) && (op < 0 || op >= ncclNumOps))
        return ncclInvalidArgument;
    if ((checks & NCCL_CHECK_TARGET) && (target < 0 || target >= nranks))
        return ncclInvalidArgument;
    bytes = (unsigned __int128)count * esize;
    sim_delay(nccl_cost_ns(bytes > UINT64_MAX ? UINT64_MAX : (uint64_t)bytes, rank));
    return ncclSuccess;
}

/* ======================================================================== */
/* Exported NCCL API.                                                       */
/* ======================================================================== */

/* --- versions and errors --- */

SIM_API ncclResult_t ncclGetVersion(int *version)
{
    if (version == NULL)
        return ncclInvalidArgument;
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

SIM_API const char *ncclGetErrorString(ncclResult_t result)
{
    return nccl_result_text(result);
}

/* --- communicators --- */

SIM_API ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId)
{
    if (uniqueId == NULL)
        return ncclInvalidArgument;
    nccl_make_id(uniqueId);
    return ncclSuccess;
}

/* commId is passed by value: 128 bytes, in memory on the caller's stack
 * (SysV class MEMORY), so `rank` is the third integer argument (%edx). */
SIM_API ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank)
{
    return nccl_comm_init_rank(comm, nranks, &commId, rank);
}

SIM_API ncclResult_t ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist)
{
    return nccl_comm_init_all(comms, ndev, devlist);
}

SIM_API ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    return nccl_comm_destroy(comm);
}

SIM_API ncclResult_t ncclCommCount(const ncclComm_t comm, int *count)
{
    int rank, nranks;
    if (count == NULL)
        return ncclInvalidArgument;
    if (nccl_comm_info(comm, &rank, &nranks) != ncclSuccess)
        return ncclInvalidArgument;
    *count = nranks;
    return ncclSuccess;
}

SIM_API ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank)
{
    int r, nranks;
    if (rank == NULL)
        return ncclInvalidArgument;
    if (nccl_comm_info(comm, &r, &nranks) != ncclSuccess)
        return ncclInvalidArgument;
    *rank = r;
    return ncclSuccess;
}

/* --- collectives --- */

SIM_API ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                                   ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                   cudaStream_t stream)
{
    (void)sendbuff;
    (void)recvbuff;
    (void)stream;
    return nccl_collective(comm, count, (int)datatype, (int)op, 0, NCCL_CHECK_OP);
}

SIM_API ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount,
                                   ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream)
{
    (void)sendbuff;
    (void)recvbuff;
    (void)stream;
    return nccl_collective(comm, sendcount, (int)datatype, 0, 0, 0);
}

SIM_API ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount,
                                       ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                       cudaStream_t stream)
{
    (void)sendbuff;
    (void)recvbuff;
    (void)stream;
    return nccl_collective(comm, recvcount, (int)datatype, (int)op, 0, NCCL_CHECK_OP);
}

SIM_API ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                                   ncclDataType_t datatype, int root, ncclComm_t comm,
                                   cudaStream_t stream)
{
    (void)sendbuff;
    (void)recvbuff;
    (void)stream;
    return nccl_collective(comm, count, (int)datatype, 0, root, NCCL_CHECK_TARGET);
}

/* --- point-to-point --- */

SIM_API ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype,
                              int peer, ncclComm_t comm, cudaStream_t stream)
{
    (void)sendbuff;
    (void)stream;
    return nccl_collective(comm, count, (int)datatype, 0, peer, NCCL_CHECK_TARGET);
}

SIM_API ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer,
                              ncclComm_t comm, cudaStream_t stream)
{
    (void)recvbuff;
    (void)stream;
    return nccl_collective(comm, count, (int)datatype, 0, peer, NCCL_CHECK_TARGET);
}
