/*
 * cuda.c - simulated CUDA driver API (libcuda.so.1).
 *
 * Same model as cudart.c (see simcuda.h) with its own private state: the
 * driver library has its own device memory budget, streams and kernel-time
 * registry, and does not depend on libcudart.
 *
 * Like the real driver: nothing works before cuInit(0)
 * (CUDA_ERROR_NOT_INITIALIZED), and memory/stream/launch calls need a
 * current context (cuCtxCreate_v2 or cuCtxSetCurrent), else
 * CUDA_ERROR_INVALID_CONTEXT.
 *
 * Exported functions never call each other; both names of a versioned entry
 * point (cuMemAlloc and cuMemAlloc_v2, ...) are separate functions.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "simcuda.h"

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUfunc_st *CUfunction;

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_UNKNOWN = 999,
};

#define DRV_PTR_BASE 0x7e0000000000ULL
#define DRV_VERSION 12040

/* ------------------------------------------------------------------------ */
/* Initialisation and contexts.                                              */
/* ------------------------------------------------------------------------ */

static int drv_initialized; /* guarded by sim_lock */

#define DRV_CTX_MAGIC 0x53494d4354583031ULL /* "SIMCTX01" */

struct drv_ctx {
    uint64_t magic;
    int device;
    struct drv_ctx *next;
};

static struct drv_ctx *drv_ctxs;          /* registry of live contexts */
static __thread struct drv_ctx *drv_cur;  /* current context of this thread */

static int drv_is_init(void)
{
    int v;
    pthread_mutex_lock(&sim_lock);
    v = drv_initialized;
    pthread_mutex_unlock(&sim_lock);
    return v;
}

/* Caller holds sim_lock. */
static int drv_ctx_valid_locked(const struct drv_ctx *c)
{
    const struct drv_ctx *p;
    for (p = drv_ctxs; p != NULL; p = p->next)
        if (p == c)
            return 1;
    return 0;
}

/*
 * Check cuInit and the current context; on success stores the context's
 * device in *dev.
 */
static CUresult drv_need_ctx(int *dev)
{
    CUresult e = CUDA_SUCCESS;

    pthread_mutex_lock(&sim_lock);
    if (!drv_initialized)
        e = CUDA_ERROR_NOT_INITIALIZED;
    else if (drv_cur == NULL || !drv_ctx_valid_locked(drv_cur))
        e = CUDA_ERROR_INVALID_CONTEXT;
    else
        *dev = drv_cur->device;
    pthread_mutex_unlock(&sim_lock);
    return e;
}

static CUresult drv_ctx_create(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    struct drv_ctx *c;

    (void)flags;
    if (!drv_is_init())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= sim_config()->device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    c->magic = DRV_CTX_MAGIC;
    c->device = dev;
    pthread_mutex_lock(&sim_lock);
    c->next = drv_ctxs;
    drv_ctxs = c;
    pthread_mutex_unlock(&sim_lock);
    sim_delay(sim_config()->alloc_base_ns); /* context creation is not free */
    drv_cur = c;
    *pctx = (CUcontext)(void *)c;
    return CUDA_SUCCESS;
}

static CUresult drv_ctx_destroy(CUcontext ctx)
{
    struct drv_ctx **pp, *c = NULL;

    if (!drv_is_init())
        return CUDA_ERROR_NOT_INITIALIZED;
    pthread_mutex_lock(&sim_lock);
    for (pp = &drv_ctxs; *pp != NULL; pp = &(*pp)->next) {
        if ((void *)*pp == (void *)ctx) {
            c = *pp;
            *pp = c->next;
            break;
        }
    }
    pthread_mutex_unlock(&sim_lock);
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (drv_cur == c)
        drv_cur = NULL;
    c->magic = 0;
    free(c);
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Error names.                                                              */
/* ------------------------------------------------------------------------ */

struct drv_err_desc {
    CUresult code;
    const char *name;
    const char *text;
};

static const struct drv_err_desc drv_errs[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static const struct drv_err_desc *drv_err_find(CUresult e)
{
    size_t i;
    for (i = 0; i < sizeof(drv_errs) / sizeof(drv_errs[0]); i++)
        if (drv_errs[i].code == e)
            return &drv_errs[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Memory, copies, launches.                                                 */
/* ------------------------------------------------------------------------ */

static CUresult drv_alloc(CUdeviceptr *dptr, size_t size, int managed, unsigned int flags)
{
    const struct sim_config *c = sim_config();
    uint64_t ptr = 0;
    int dev = 0;
    CUresult e;

    if ((e = drv_need_ctx(&dev)) != CUDA_SUCCESS)
        return e;
    if (dptr == NULL || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (managed && flags != 1U && flags != 2U) /* CU_MEM_ATTACH_GLOBAL/HOST */
        return CUDA_ERROR_INVALID_VALUE;
    if (sim_mem_reserve(dev, size, DRV_PTR_BASE, &ptr) != 0) {
        *dptr = 0;
        sim_delay(c->alloc_base_ns);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    sim_delay(sim_alloc_cost_ns(size));
    *dptr = (CUdeviceptr)ptr;
    return CUDA_SUCCESS;
}

static CUresult drv_free(CUdeviceptr dptr)
{
    int dev = 0;
    CUresult e;

    if ((e = drv_need_ctx(&dev)) != CUDA_SUCCESS)
        return e;
    if (sim_mem_release((uint64_t)dptr) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    sim_delay(sim_config()->free_ns);
    return CUDA_SUCCESS;
}

static CUresult drv_copy_sync(uint64_t bytes)
{
    struct sim_stream *s;
    uint64_t end = 0;
    int dev = 0;
    CUresult e;

    if ((e = drv_need_ctx(&dev)) != CUDA_SUCCESS)
        return e;
    pthread_mutex_lock(&sim_lock);
    s = sim_stream_lookup_locked(NULL, dev);
    if (s != NULL)
        end = sim_stream_queue_locked(s, sim_copy_cost_ns(bytes));
    pthread_mutex_unlock(&sim_lock);
    sim_wait_until(end);
    return CUDA_SUCCESS;
}

static CUresult drv_copy_async(uint64_t bytes, const void *stream)
{
    struct sim_stream *s;
    int dev = 0;
    CUresult e;

    if ((e = drv_need_ctx(&dev)) != CUDA_SUCCESS)
        return e;
    sim_delay(sim_config()->async_ns);
    pthread_mutex_lock(&sim_lock);
    s = sim_stream_lookup_locked(stream, dev);
    if (s != NULL)
        sim_submit_locked(s, sim_copy_cost_ns(bytes));
    pthread_mutex_unlock(&sim_lock);
    return s != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

static CUresult drv_launch(const void *f, unsigned int gx, unsigned int gy, unsigned int gz,
                           unsigned int bx, unsigned int by, unsigned int bz,
                           const void *stream)
{
    struct sim_stream *s;
    int dev = 0;
    CUresult e;

    if ((e = drv_need_ctx(&dev)) != CUDA_SUCCESS)
        return e;
    if (f == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0)
        return CUDA_ERROR_INVALID_VALUE;
    sim_kernel_first_launch(f);
    sim_delay(sim_config()->launch_ns);
    pthread_mutex_lock(&sim_lock);
    s = sim_stream_lookup_locked(stream, dev);
    if (s != NULL)
        sim_submit_locked(s, sim_kernel_time_locked(f));
    pthread_mutex_unlock(&sim_lock);
    return s != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

static CUresult drv_stream_create(CUstream *phStream, unsigned int flags)
{
    struct sim_stream *s;
    int dev = 0;
    CUresult e;

    if ((e = drv_need_ctx(&dev)) != CUDA_SUCCESS)
        return e;
    if (phStream == NULL || flags > 1U)
        return CUDA_ERROR_INVALID_VALUE;
    sim_delay(sim_config()->async_ns);
    s = sim_stream_new(dev);
    if (s == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *phStream = (CUstream)(void *)s;
    return CUDA_SUCCESS;
}

static CUresult drv_stream_destroy(CUstream hStream)
{
    int dev = 0;
    CUresult e;

    if ((e = drv_need_ctx(&dev)) != CUDA_SUCCESS)
        return e;
    return sim_stream_destroy(hStream) == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

static CUresult drv_stream_sync(const void *stream)
{
    struct sim_stream *s;
    uint64_t end = 0;
    int dev = 0;
    CUresult e;

    if ((e = drv_need_ctx(&dev)) != CUDA_SUCCESS)
        return e;
    pthread_mutex_lock(&sim_lock);
    s = sim_stream_lookup_locked(stream, dev);
    if (s != NULL)
        end = s->busy_until;
    pthread_mutex_unlock(&sim_lock);
    if (s == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    sim_wait_until(end);
    return CUDA_SUCCESS;
}

/* ======================================================================== */
/* Exported CUDA driver API.                                                */
/* ======================================================================== */

/* --- init, devices, versions --- */

SIM_API CUresult cuInit(unsigned int Flags)
{
    if (Flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (sim_config()->device_count <= 0)
        return CUDA_ERROR_NO_DEVICE;
    pthread_mutex_lock(&sim_lock);
    drv_initialized = 1;
    pthread_mutex_unlock(&sim_lock);
    return CUDA_SUCCESS;
}

SIM_API CUresult cuDriverGetVersion(int *driverVersion)
{
    if (driverVersion == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *driverVersion = DRV_VERSION;
    return CUDA_SUCCESS;
}

SIM_API CUresult cuDeviceGetCount(int *count)
{
    if (!drv_is_init())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *count = sim_config()->device_count;
    return CUDA_SUCCESS;
}

SIM_API CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
    if (!drv_is_init())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (device == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= sim_config()->device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

/* --- contexts --- */

SIM_API CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    return drv_ctx_create(pctx, flags, dev);
}

SIM_API CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    return drv_ctx_create(pctx, flags, dev);
}

SIM_API CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    return drv_ctx_destroy(ctx);
}

/*
 * Primary contexts, one per device, as the runtime uses them: retained (not
 * made current) and then made current with cuCtxSetCurrent. They live until
 * the process ends; release only drops the count.
 */
#define SIM_MAX_DEVICES 16
static struct drv_ctx *drv_primary[SIM_MAX_DEVICES]; /* guarded by sim_lock */
static int drv_primary_refs[SIM_MAX_DEVICES];

SIM_API CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    struct drv_ctx *c;

    if (!drv_is_init())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= sim_config()->device_count || dev >= SIM_MAX_DEVICES)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&sim_lock);
    c = drv_primary[dev];
    if (c == NULL) {
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            pthread_mutex_unlock(&sim_lock);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        c->magic = DRV_CTX_MAGIC;
        c->device = dev;
        c->next = drv_ctxs;
        drv_ctxs = c;
        drv_primary[dev] = c;
    }
    drv_primary_refs[dev]++;
    pthread_mutex_unlock(&sim_lock);
    *pctx = (CUcontext)(void *)c;
    return CUDA_SUCCESS;
}

SIM_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    CUresult e = CUDA_SUCCESS;

    if (!drv_is_init())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (dev < 0 || dev >= sim_config()->device_count || dev >= SIM_MAX_DEVICES)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&sim_lock);
    if (drv_primary_refs[dev] == 0)
        e = CUDA_ERROR_INVALID_CONTEXT;
    else
        drv_primary_refs[dev]--;
    pthread_mutex_unlock(&sim_lock);
    return e;
}

SIM_API CUresult cuCtxSetCurrent(CUcontext ctx)
{
    struct drv_ctx *c = (struct drv_ctx *)(void *)ctx;
    int ok;

    if (!drv_is_init())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (c == NULL) {
        drv_cur = NULL;
        return CUDA_SUCCESS;
    }
    pthread_mutex_lock(&sim_lock);
    ok = drv_ctx_valid_locked(c);
    pthread_mutex_unlock(&sim_lock);
    if (!ok)
        return CUDA_ERROR_INVALID_CONTEXT;
    drv_cur = c;
    return CUDA_SUCCESS;
}

SIM_API CUresult cuCtxGetCurrent(CUcontext *pctx)
{
    if (!drv_is_init())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = (CUcontext)(void *)drv_cur;
    return CUDA_SUCCESS;
}

SIM_API CUresult cuCtxSynchronize(void)
{
    uint64_t end;
    int dev = 0;
    CUresult e;

    if ((e = drv_need_ctx(&dev)) != CUDA_SUCCESS)
        return e;
    pthread_mutex_lock(&sim_lock);
    end = sim_device_busy_until_locked(dev);
    pthread_mutex_unlock(&sim_lock);
    sim_wait_until(end);
    return CUDA_SUCCESS;
}

/* --- memory --- */

SIM_API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    return drv_alloc(dptr, bytesize, 0, 0);
}

SIM_API CUresult cuMemAlloc(CUdeviceptr *dptr, size_t bytesize)
{
    return drv_alloc(dptr, bytesize, 0, 0);
}

SIM_API CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
    return drv_alloc(dptr, bytesize, 1, flags);
}

SIM_API CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    return drv_free(dptr);
}

SIM_API CUresult cuMemFree(CUdeviceptr dptr)
{
    return drv_free(dptr);
}

/* --- copies --- */

SIM_API CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
{
    (void)dst;
    (void)src;
    return drv_copy_sync(ByteCount);
}

SIM_API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount,
                               CUstream hStream)
{
    (void)dst;
    (void)src;
    return drv_copy_async(ByteCount, hStream);
}

SIM_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    (void)dstDevice;
    (void)srcHost;
    return drv_copy_sync(ByteCount);
}

SIM_API CUresult cuMemcpyHtoD(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    (void)dstDevice;
    (void)srcHost;
    return drv_copy_sync(ByteCount);
}

SIM_API CUresult cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    (void)dstHost;
    (void)srcDevice;
    return drv_copy_sync(ByteCount);
}

SIM_API CUresult cuMemcpyDtoH(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    (void)dstHost;
    (void)srcDevice;
    return drv_copy_sync(ByteCount);
}

/* --- launches and streams --- */

SIM_API CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                unsigned int gridDimZ, unsigned int blockDimX,
                                unsigned int blockDimY, unsigned int blockDimZ,
                                unsigned int sharedMemBytes, CUstream hStream,
                                void **kernelParams, void **extra)
{
    (void)sharedMemBytes;
    (void)kernelParams;
    (void)extra;
    return drv_launch(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ,
                      hStream);
}

/* Non-CUDA extension: simulated device time of function `f`, in ns. */
SIM_API void simcuSetKernelTime(const void *f, unsigned long long ns)
{
    sim_kernel_time_set(f, ns);
}

SIM_API CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags)
{
    return drv_stream_create(phStream, Flags);
}

SIM_API CUresult cuStreamDestroy_v2(CUstream hStream)
{
    return drv_stream_destroy(hStream);
}

SIM_API CUresult cuStreamSynchronize(CUstream hStream)
{
    return drv_stream_sync(hStream);
}

/* --- errors --- */

SIM_API CUresult cuGetErrorName(CUresult error, const char **pStr)
{
    const struct drv_err_desc *d = drv_err_find(error);
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pStr = d != NULL ? d->name : NULL;
    return d != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

SIM_API CUresult cuGetErrorString(CUresult error, const char **pStr)
{
    const struct drv_err_desc *d = drv_err_find(error);
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pStr = d != NULL ? d->text : NULL;
    return d != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
