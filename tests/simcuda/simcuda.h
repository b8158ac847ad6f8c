/*
 * simcuda.h - shared internals of the simulated CUDA libraries.
 *
 * This header is compiled into each of libcudart.so.12 (cudart.c),
 * libcuda.so.1 (cuda.c) and libnccl.so.2 (nccl.c).  Everything here is
 * `static`, so each library gets its own private copy of the state
 * (configuration, device memory budget, streams, kernel-time registry); the
 * libraries never depend on each other.  Nothing in here is exported: the libraries are built with
 * -fvisibility=hidden and only the CUDA API entry points carry
 * SIM_API (default visibility, noinline).
 *
 * Time model: every stream has a "busy until" CLOCK_MONOTONIC timestamp.
 * Queuing work of duration d sets busy_until = max(now, busy_until) + d.
 * Synchronisation sleeps until busy_until.  Nothing touches real memory
 * behind device pointers; device pointers are fake addresses.
 */
#ifndef SIMCUDA_H
#define SIMCUDA_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SIM_API __attribute__((visibility("default"), noinline))
#define SIM_INTERNAL static __attribute__((unused))

#define SIM_MAX_DEVICES 16
#define SIM_MIB (1024ULL * 1024ULL)
#define SIM_PTR_ALIGN 256ULL

/* ------------------------------------------------------------------------ */
/* Configuration (environment knobs, read once).                             */
/* ------------------------------------------------------------------------ */

struct sim_config {
    uint64_t alloc_ns_per_mib;   /* SIMCUDA_ALLOC_NS_PER_MIB   */
    uint64_t alloc_base_ns;      /* SIMCUDA_ALLOC_BASE_NS      */
    uint64_t device_bytes;       /* SIMCUDA_DEVICE_BYTES       */
    uint64_t free_ns;            /* SIMCUDA_FREE_NS            */
    uint64_t memcpy_bytes_per_us;/* SIMCUDA_MEMCPY_BYTES_PER_US */
    uint64_t memcpy_base_ns;     /* SIMCUDA_MEMCPY_BASE_NS     */
    uint64_t async_ns;           /* SIMCUDA_ASYNC_NS           */
    uint64_t launch_ns;          /* SIMCUDA_LAUNCH_NS          */
    uint64_t kernel_ns;          /* SIMCUDA_KERNEL_NS          */
    uint64_t spin_ns;            /* SIMCUDA_SPIN_NS            */
    uint64_t context_init_ns;    /* SIMCUDA_CONTEXT_INIT_NS    */
    uint64_t module_load_ns;     /* SIMCUDA_MODULE_LOAD_NS     */
    uint64_t switch_ns;          /* SIMCUDA_SWITCH_NS          */
    const char *shared_device;   /* SIMCUDA_SHARED_DEVICE      */
    int device_count;            /* SIMCUDA_DEVICE_COUNT       */
};

static struct sim_config sim_cfg;
static pthread_once_t sim_cfg_once = PTHREAD_ONCE_INIT;

static uint64_t sim_env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    char *end = NULL;
    unsigned long long x;

    if (v == NULL || *v == '\0')
        return dflt;
    errno = 0;
    x = strtoull(v, &end, 0);
    if (errno != 0 || end == v)
        return dflt;
    /* Optional binary suffixes: K, M, G (KiB, MiB, GiB). */
    switch (*end) {
    case 'k': case 'K': x <<= 10; break;
    case 'm': case 'M': x <<= 20; break;
    case 'g': case 'G': x <<= 30; break;
    default: break;
    }
    return (uint64_t)x;
}

static void sim_config_init(void)
{
    uint64_t n;

    sim_cfg.alloc_ns_per_mib = sim_env_u64("SIMCUDA_ALLOC_NS_PER_MIB", 20000);
    sim_cfg.alloc_base_ns = sim_env_u64("SIMCUDA_ALLOC_BASE_NS", 20000);
    sim_cfg.device_bytes = sim_env_u64("SIMCUDA_DEVICE_BYTES", 8ULL << 30);
    sim_cfg.free_ns = sim_env_u64("SIMCUDA_FREE_NS", 10000);
    sim_cfg.memcpy_bytes_per_us = sim_env_u64("SIMCUDA_MEMCPY_BYTES_PER_US", 10000);
    if (sim_cfg.memcpy_bytes_per_us == 0)
        sim_cfg.memcpy_bytes_per_us = 1;
    sim_cfg.memcpy_base_ns = sim_env_u64("SIMCUDA_MEMCPY_BASE_NS", 5000);
    sim_cfg.async_ns = sim_env_u64("SIMCUDA_ASYNC_NS", 2000);
    sim_cfg.launch_ns = sim_env_u64("SIMCUDA_LAUNCH_NS", 5000);
    sim_cfg.kernel_ns = sim_env_u64("SIMCUDA_KERNEL_NS", 50000);
    sim_cfg.spin_ns = sim_env_u64("SIMCUDA_SPIN_NS", 60000);
    sim_cfg.context_init_ns = sim_env_u64("SIMCUDA_CONTEXT_INIT_NS", 0);
    sim_cfg.module_load_ns = sim_env_u64("SIMCUDA_MODULE_LOAD_NS", 0);
    sim_cfg.switch_ns = sim_env_u64("SIMCUDA_SWITCH_NS", 0);
    sim_cfg.shared_device = getenv("SIMCUDA_SHARED_DEVICE");
    if (sim_cfg.shared_device != NULL && *sim_cfg.shared_device == '\0')
        sim_cfg.shared_device = NULL;
    n = sim_env_u64("SIMCUDA_DEVICE_COUNT", 1);
    if (n > SIM_MAX_DEVICES)
        n = SIM_MAX_DEVICES;
    sim_cfg.device_count = (int)n;
}

static const struct sim_config *sim_config(void)
{
    pthread_once(&sim_cfg_once, sim_config_init);
    return &sim_cfg;
}

/* ------------------------------------------------------------------------ */
/* Time.                                                                     */
/* ------------------------------------------------------------------------ */

static uint64_t sim_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/*
 * Wait until CLOCK_MONOTONIC >= deadline.  Sleeps with clock_nanosleep
 * (TIMER_ABSTIME, restarted on EINTR) until spin_ns before the deadline and
 * busy-waits the rest, so short waits are accurate despite timer slack and
 * long waits do not burn a CPU.  Never returns early.
 */
static void sim_wait_until(uint64_t deadline)
{
    uint64_t spin = sim_config()->spin_ns;
    uint64_t now = sim_now_ns();

    if (now >= deadline)
        return;
    if (deadline - now > spin) {
        uint64_t wake = deadline - spin;
        struct timespec ts;
        ts.tv_sec = (time_t)(wake / 1000000000ULL);
        ts.tv_nsec = (long)(wake % 1000000000ULL);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
    }
    while (sim_now_ns() < deadline)
        __asm__ __volatile__("pause" ::: "memory");
}

static void sim_delay(uint64_t ns)
{
    if (ns == 0)
        return;
    sim_wait_until(sim_now_ns() + ns);
}

static uint64_t sim_sat_add(uint64_t a, uint64_t b)
{
    return (a > UINT64_MAX - b) ? UINT64_MAX : a + b;
}

/* base + size * ns_per_mib / MiB, saturating. */
SIM_INTERNAL uint64_t sim_alloc_cost_ns(uint64_t size)
{
    const struct sim_config *c = sim_config();
    unsigned __int128 v = (unsigned __int128)size * c->alloc_ns_per_mib / SIM_MIB;
    if (v > UINT64_MAX)
        return UINT64_MAX;
    return sim_sat_add(c->alloc_base_ns, (uint64_t)v);
}

/* base + bytes / (bytes per us), in ns, saturating. */
SIM_INTERNAL uint64_t sim_copy_cost_ns(uint64_t bytes)
{
    const struct sim_config *c = sim_config();
    unsigned __int128 v = (unsigned __int128)bytes * 1000U / c->memcpy_bytes_per_us;
    if (v > UINT64_MAX)
        return UINT64_MAX;
    return sim_sat_add(c->memcpy_base_ns, (uint64_t)v);
}

/* ------------------------------------------------------------------------ */
/* Shared state: one mutex for everything; never held while sleeping.        */
/* ------------------------------------------------------------------------ */

static pthread_mutex_t sim_lock = PTHREAD_MUTEX_INITIALIZER;

/* ----- streams ----- */

#define SIM_STREAM_MAGIC 0x53494d5354524d31ULL /* "SIMSTRM1" */

struct sim_stream {
    uint64_t magic;
    int device;
    int is_default;
    uint64_t busy_until;        /* CLOCK_MONOTONIC ns */
    int capturing;              /* stream capture in progress */
    int capture_mode;
    uint64_t capture_ns;        /* simulated device time recorded so far */
    uint64_t capture_nodes;     /* number of recorded operations */
    struct sim_stream *next;    /* registry of created streams */
};

static struct sim_stream sim_default_streams[SIM_MAX_DEVICES];
static struct sim_stream *sim_streams; /* created (non-default) streams */

/* Special runtime handles: cudaStreamLegacy (0x1), cudaStreamPerThread (0x2). */
#define SIM_IS_DEFAULT_HANDLE(h) ((uintptr_t)(h) <= 2U)

/* Caller holds sim_lock.  Returns NULL for an unknown handle. */
SIM_INTERNAL struct sim_stream *sim_stream_lookup_locked(const void *handle, int cur_dev)
{
    struct sim_stream *s;

    if (SIM_IS_DEFAULT_HANDLE(handle)) {
        if (cur_dev < 0 || cur_dev >= SIM_MAX_DEVICES)
            return NULL;
        s = &sim_default_streams[cur_dev];
        s->magic = SIM_STREAM_MAGIC;
        s->device = cur_dev;
        s->is_default = 1;
        return s;
    }
    for (s = sim_streams; s != NULL; s = s->next)
        if ((const void *)s == handle)
            return s;
    return NULL;
}

SIM_INTERNAL struct sim_stream *sim_stream_new(int device)
{
    struct sim_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->magic = SIM_STREAM_MAGIC;
    s->device = device;
    pthread_mutex_lock(&sim_lock);
    s->next = sim_streams;
    sim_streams = s;
    pthread_mutex_unlock(&sim_lock);
    return s;
}

/* Returns 0 on success, -1 if the handle is unknown. */
SIM_INTERNAL int sim_stream_destroy(const void *handle)
{
    struct sim_stream **pp, *s = NULL;

    if (SIM_IS_DEFAULT_HANDLE(handle))
        return -1;
    pthread_mutex_lock(&sim_lock);
    for (pp = &sim_streams; *pp != NULL; pp = &(*pp)->next) {
        if ((const void *)*pp == handle) {
            s = *pp;
            *pp = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&sim_lock);
    if (s == NULL)
        return -1;
    s->magic = 0;
    free(s);
    return 0;
}

/*
 * Devices shared between processes (SIMCUDA_SHARED_DEVICE=FILE): every process
 * naming the same file maps one timeline per device, so their work runs one
 * piece at a time, as a time-sliced GPU runs one context at a time.  Work
 * following another process's pays SIMCUDA_SWITCH_NS of device time (the
 * context switch).  flock serialises the processes; CLOCK_MONOTONIC is the same
 * clock in all of them.
 */
struct sim_shared_devices {
    uint64_t busy_until[SIM_MAX_DEVICES];
    int32_t last_pid[SIM_MAX_DEVICES];
};

static struct sim_shared_devices *sim_shared;
static int sim_shared_fd = -1;
static pthread_once_t sim_shared_once = PTHREAD_ONCE_INIT;

static void sim_shared_init(void)
{
    const char *path = sim_config()->shared_device;
    struct stat st;
    void *m;
    int fd;

    if (path == NULL)
        return;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return; /* unshared: this process keeps its private device */
    if (flock(fd, LOCK_EX) == 0) {
        if (fstat(fd, &st) == 0 && (size_t)st.st_size < sizeof(struct sim_shared_devices))
            (void)ftruncate(fd, sizeof(struct sim_shared_devices));
        flock(fd, LOCK_UN);
    }
    m = mmap(NULL, sizeof(struct sim_shared_devices), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        close(fd);
        return;
    }
    sim_shared = m;
    sim_shared_fd = fd;
}

/* Caller holds sim_lock.  Queue `ns` of device work; returns its end time. */
SIM_INTERNAL uint64_t sim_stream_queue_locked(struct sim_stream *s, uint64_t ns)
{
    uint64_t now = sim_now_ns();
    uint64_t start = s->busy_until > now ? s->busy_until : now;
    int dev = s->device;

    pthread_once(&sim_shared_once, sim_shared_init);
    if (sim_shared != NULL && dev >= 0 && dev < SIM_MAX_DEVICES && flock(sim_shared_fd, LOCK_EX) == 0) {
        int32_t me = (int32_t)getpid();
        if (sim_shared->busy_until[dev] > start)
            start = sim_shared->busy_until[dev];
        if (sim_shared->last_pid[dev] != 0 && sim_shared->last_pid[dev] != me)
            ns = sim_sat_add(ns, sim_config()->switch_ns);
        s->busy_until = sim_sat_add(start, ns);
        sim_shared->busy_until[dev] = s->busy_until;
        sim_shared->last_pid[dev] = me;
        flock(sim_shared_fd, LOCK_UN);
        return s->busy_until;
    }
    s->busy_until = sim_sat_add(start, ns);
    return s->busy_until;
}

/* Caller holds sim_lock.  Latest busy_until of every stream on `device`. */
SIM_INTERNAL uint64_t sim_device_busy_until_locked(int device)
{
    uint64_t t = 0;
    struct sim_stream *s;

    if (device >= 0 && device < SIM_MAX_DEVICES)
        t = sim_default_streams[device].busy_until;
    for (s = sim_streams; s != NULL; s = s->next)
        if (s->device == device && s->busy_until > t)
            t = s->busy_until;
    return t;
}

/* ----- device memory budget and allocation table ----- */

struct sim_alloc {
    uint64_t ptr;
    uint64_t size;
    int device;
    struct sim_alloc *next;
};

#define SIM_ALLOC_BUCKETS 4096
static struct sim_alloc *sim_allocs[SIM_ALLOC_BUCKETS];
static uint64_t sim_used_bytes[SIM_MAX_DEVICES];
static uint64_t sim_next_ptr; /* set from SIM_PTR_BASE on first use */

static unsigned sim_alloc_bucket(uint64_t ptr)
{
    return (unsigned)((ptr / SIM_PTR_ALIGN) * 0x9E3779B97F4A7C15ULL >> 52) % SIM_ALLOC_BUCKETS;
}

/*
 * Reserve `size` bytes on `device`.  Returns 0 and stores a fake, unique,
 * 256-byte aligned address on success; -1 (and *out = 0) when the device
 * budget would be exceeded (or on host OOM).  size must be > 0.
 */
SIM_INTERNAL int sim_mem_reserve(int device, uint64_t size, uint64_t ptr_base, uint64_t *out)
{
    const struct sim_config *c = sim_config();
    struct sim_alloc *a;
    uint64_t rounded;
    unsigned b;

    *out = 0;
    if (device < 0 || device >= SIM_MAX_DEVICES)
        return -1;
    if (size > UINT64_MAX - SIM_PTR_ALIGN)
        return -1;
    a = malloc(sizeof(*a));
    if (a == NULL)
        return -1;
    rounded = (size + SIM_PTR_ALIGN - 1) & ~(SIM_PTR_ALIGN - 1);
    pthread_mutex_lock(&sim_lock);
    if (size > c->device_bytes - sim_used_bytes[device] ||
        sim_used_bytes[device] > c->device_bytes) {
        pthread_mutex_unlock(&sim_lock);
        free(a);
        return -1;
    }
    if (sim_next_ptr == 0)
        sim_next_ptr = ptr_base;
    a->ptr = sim_next_ptr;
    a->size = size;
    a->device = device;
    sim_next_ptr += rounded;
    sim_used_bytes[device] += size;
    b = sim_alloc_bucket(a->ptr);
    a->next = sim_allocs[b];
    sim_allocs[b] = a;
    pthread_mutex_unlock(&sim_lock);
    *out = a->ptr;
    return 0;
}

/* Give back the allocation starting at ptr.  0 on success, -1 if unknown. */
SIM_INTERNAL int sim_mem_release(uint64_t ptr)
{
    struct sim_alloc **pp, *a = NULL;

    pthread_mutex_lock(&sim_lock);
    for (pp = &sim_allocs[sim_alloc_bucket(ptr)]; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->ptr == ptr) {
            a = *pp;
            *pp = a->next;
            sim_used_bytes[a->device] -= a->size;
            break;
        }
    }
    pthread_mutex_unlock(&sim_lock);
    if (a == NULL)
        return -1;
    free(a);
    return 0;
}

SIM_INTERNAL uint64_t sim_mem_used(int device)
{
    uint64_t v = 0;
    if (device < 0 || device >= SIM_MAX_DEVICES)
        return 0;
    pthread_mutex_lock(&sim_lock);
    v = sim_used_bytes[device];
    pthread_mutex_unlock(&sim_lock);
    return v;
}

/* ----- per-kernel simulated execution time ----- */

struct sim_ktime {
    const void *func;
    uint64_t ns;
    int loaded;                 /* launched before: its module is loaded */
    struct sim_ktime *next;
};

static struct sim_ktime *sim_ktimes;

SIM_INTERNAL void sim_kernel_time_set(const void *func, uint64_t ns)
{
    struct sim_ktime *k, *fresh;

    fresh = malloc(sizeof(*fresh));
    pthread_mutex_lock(&sim_lock);
    for (k = sim_ktimes; k != NULL; k = k->next) {
        if (k->func == func) {
            k->ns = ns;
            break;
        }
    }
    if (k == NULL && fresh != NULL) {
        fresh->func = func;
        fresh->ns = ns;
        fresh->loaded = 0;
        fresh->next = sim_ktimes;
        sim_ktimes = fresh;
        fresh = NULL;
    }
    pthread_mutex_unlock(&sim_lock);
    free(fresh);
}

/* Caller holds sim_lock. */
SIM_INTERNAL uint64_t sim_kernel_time_locked(const void *func)
{
    struct sim_ktime *k;
    for (k = sim_ktimes; k != NULL; k = k->next)
        if (k->func == func)
            return k->ns;
    return sim_config()->kernel_ns;
}

/*
 * Lazy module loading: the first launch of each kernel function pays
 * SIMCUDA_MODULE_LOAD_NS of host time (as CUDA_MODULE_LOADING=LAZY does).
 * Caller does not hold sim_lock.
 */
SIM_INTERNAL void sim_kernel_first_launch(const void *func)
{
    const struct sim_config *c = sim_config();
    struct sim_ktime *k, *fresh;
    int first = 0;

    if (c->module_load_ns == 0)
        return;
    fresh = malloc(sizeof(*fresh));
    pthread_mutex_lock(&sim_lock);
    for (k = sim_ktimes; k != NULL; k = k->next)
        if (k->func == func)
            break;
    if (k == NULL && fresh != NULL) {
        fresh->func = func;
        fresh->ns = c->kernel_ns;
        fresh->loaded = 0;
        fresh->next = sim_ktimes;
        sim_ktimes = k = fresh;
        fresh = NULL;
    }
    if (k != NULL && !k->loaded) {
        k->loaded = 1;
        first = 1;
    }
    pthread_mutex_unlock(&sim_lock);
    free(fresh);
    if (first)
        sim_delay(c->module_load_ns);
}

/*
 * Lazy context creation: the first call of a process that needs the device
 * pays SIMCUDA_CONTEXT_INIT_NS of host time; calls of other threads meanwhile
 * wait for it, as they do behind CUDA's primary-context creation.
 */
static void sim_context_create(void)
{
    sim_delay(sim_config()->context_init_ns);
}

static pthread_once_t sim_context_once = PTHREAD_ONCE_INIT;

SIM_INTERNAL void sim_context_init(void)
{
    pthread_once(&sim_context_once, sim_context_create);
}

/*
 * Caller holds sim_lock.  Put `ns` of device work on stream s: recorded into
 * the capture if the stream is capturing, else queued.  Returns the queued
 * end time (0 when captured).
 */
SIM_INTERNAL uint64_t sim_submit_locked(struct sim_stream *s, uint64_t ns)
{
    if (s->capturing) {
        s->capture_ns = sim_sat_add(s->capture_ns, ns);
        s->capture_nodes++;
        return 0;
    }
    return sim_stream_queue_locked(s, ns);
}

#endif /* SIMCUDA_H */
