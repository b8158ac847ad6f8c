/*
 * cudart.c - simulated CUDA runtime (libcudart.so.12).
 *
 * Exports the real CUDA runtime symbol names with their real C signatures
 * (x86-64 SysV), so uprobes on e.g. `cudaMalloc` fire exactly like they would
 * on NVIDIA's library.  No GPU is used: device memory is a byte budget with
 * fake addresses and device work is a per-stream "busy until" timestamp.
 *
 * Rules kept throughout this file:
 *   - every exported function is SIM_API (default visibility, noinline);
 *   - exported functions never call each other: shared logic lives in static
 *     rt_* / sim_* helpers, so one user call fires exactly one uprobe;
 *   - the global mutex is never held while sleeping.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "simcuda.h"

typedef int cudaError_t;
typedef struct CUstream_st *cudaStream_t;
typedef struct CUgraph_st *cudaGraph_t;
typedef struct CUgraphExec_st *cudaGraphExec_t;
typedef struct {
    unsigned int x, y, z;
} dim3;

enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidPitchValue = 12,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureUnmatched = 903,
    cudaErrorUnknown = 999,
};

#define RT_PTR_BASE 0x7f0000000000ULL
#define RT_VERSION 12040

/* ------------------------------------------------------------------------ */
/* Thread-local state: current device and last error.                        */
/* ------------------------------------------------------------------------ */

static __thread int rt_cur_dev;
static __thread cudaError_t rt_last_err;

static cudaError_t rt_ret(cudaError_t e)
{
    if (e != cudaSuccess)
        rt_last_err = e;
    return e;
}

/* cudaErrorNoDevice if the simulated machine has no device, else success. */
static cudaError_t rt_check_device(void)
{
    if (sim_config()->device_count <= 0)
        return cudaErrorNoDevice;
    sim_context_init();
    return cudaSuccess;
}

/* ------------------------------------------------------------------------ */
/* Error names.                                                              */
/* ------------------------------------------------------------------------ */

struct rt_err_desc {
    cudaError_t code;
    const char *name;
    const char *text;
};

static const struct rt_err_desc rt_errs[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration",
     "invalid configuration argument"},
    {cudaErrorInvalidPitchValue, "cudaErrorInvalidPitchValue", "invalid pitch argument"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection",
     "invalid copy direction for memcpy"},
    {cudaErrorInvalidDeviceFunction, "cudaErrorInvalidDeviceFunction", "invalid device function"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorIllegalState, "cudaErrorIllegalState",
     "the operation cannot be performed in the present state"},
    {cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported",
     "operation not permitted when stream is capturing"},
    {cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated",
     "operation failed due to a previous error during capture"},
    {cudaErrorStreamCaptureUnmatched, "cudaErrorStreamCaptureUnmatched",
     "capture was not initiated in this stream"},
    {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
};

static const struct rt_err_desc *rt_err_find(cudaError_t e)
{
    size_t i;
    for (i = 0; i < sizeof(rt_errs) / sizeof(rt_errs[0]); i++)
        if (rt_errs[i].code == e)
            return &rt_errs[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Memory.                                                                   */
/* ------------------------------------------------------------------------ */

static cudaError_t rt_alloc(void **devPtr, size_t size, int managed, unsigned int flags)
{
    const struct sim_config *c = sim_config();
    uint64_t ptr = 0;
    cudaError_t e;

    if (devPtr == NULL)
        return cudaErrorInvalidValue;
    if (managed && flags != 1U && flags != 2U) /* cudaMemAttachGlobal/Host */
        return cudaErrorInvalidValue;
    if ((e = rt_check_device()) != cudaSuccess)
        return e;
    if (size == 0) {
        *devPtr = NULL;
        sim_delay(c->alloc_base_ns);
        return cudaSuccess;
    }
    if (sim_mem_reserve(rt_cur_dev, size, RT_PTR_BASE, &ptr) != 0) {
        *devPtr = NULL;
        sim_delay(c->alloc_base_ns);
        return cudaErrorMemoryAllocation;
    }
    sim_delay(sim_alloc_cost_ns(size));
    *devPtr = (void *)(uintptr_t)ptr;
    return cudaSuccess;
}

static cudaError_t rt_free(void *devPtr)
{
    if (devPtr == NULL)
        return cudaSuccess;
    if (sim_mem_release((uint64_t)(uintptr_t)devPtr) != 0)
        return cudaErrorInvalidValue;
    sim_delay(sim_config()->free_ns);
    return cudaSuccess;
}

/* ------------------------------------------------------------------------ */
/* Copies.                                                                   */
/* ------------------------------------------------------------------------ */

static uint64_t rt_mul_sat(size_t a, size_t b)
{
    unsigned __int128 v = (unsigned __int128)a * b;
    return v > UINT64_MAX ? UINT64_MAX : (uint64_t)v;
}

/* Synchronous copy: ordered after the current device's default stream. */
static cudaError_t rt_copy_sync(uint64_t bytes, int kind)
{
    struct sim_stream *s;
    uint64_t end;
    cudaError_t e;

    if (kind < 0 || kind > 4)
        return cudaErrorInvalidMemcpyDirection;
    if ((e = rt_check_device()) != cudaSuccess)
        return e;
    pthread_mutex_lock(&sim_lock);
    s = sim_stream_lookup_locked(NULL, rt_cur_dev);
    end = s != NULL ? sim_stream_queue_locked(s, sim_copy_cost_ns(bytes)) : 0;
    pthread_mutex_unlock(&sim_lock);
    sim_wait_until(end);
    return cudaSuccess;
}

/* Asynchronous copy: small CPU cost, transfer time queued on the stream. */
static cudaError_t rt_copy_async(uint64_t bytes, int kind, const void *stream)
{
    struct sim_stream *s;
    cudaError_t e;

    if (kind < 0 || kind > 4)
        return cudaErrorInvalidMemcpyDirection;
    if ((e = rt_check_device()) != cudaSuccess)
        return e;
    sim_delay(sim_config()->async_ns);
    pthread_mutex_lock(&sim_lock);
    s = sim_stream_lookup_locked(stream, rt_cur_dev);
    if (s != NULL)
        sim_submit_locked(s, sim_copy_cost_ns(bytes));
    pthread_mutex_unlock(&sim_lock);
    return s != NULL ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

static cudaError_t rt_check_peer(int dstDevice, int srcDevice)
{
    int n = sim_config()->device_count;
    if (dstDevice < 0 || dstDevice >= n || srcDevice < 0 || srcDevice >= n)
        return cudaErrorInvalidDevice;
    return cudaSuccess;
}

/* ------------------------------------------------------------------------ */
/* Kernels and streams.                                                      */
/* ------------------------------------------------------------------------ */

static cudaError_t rt_launch(const void *func, dim3 grid, dim3 block, const void *stream)
{
    struct sim_stream *s;
    cudaError_t e;

    if (func == NULL)
        return cudaErrorInvalidDeviceFunction;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 ||
        block.z == 0)
        return cudaErrorInvalidConfiguration;
    if ((e = rt_check_device()) != cudaSuccess)
        return e;
    sim_kernel_first_launch(func);
    sim_delay(sim_config()->launch_ns);
    pthread_mutex_lock(&sim_lock);
    s = sim_stream_lookup_locked(stream, rt_cur_dev);
    if (s != NULL)
        sim_submit_locked(s, sim_kernel_time_locked(func));
    pthread_mutex_unlock(&sim_lock);
    return s != NULL ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

static cudaError_t rt_stream_create(cudaStream_t *pStream, unsigned int flags)
{
    struct sim_stream *s;
    cudaError_t e;

    if (pStream == NULL || flags > 1U) /* cudaStreamDefault / NonBlocking */
        return cudaErrorInvalidValue;
    if ((e = rt_check_device()) != cudaSuccess)
        return e;
    sim_delay(sim_config()->async_ns);
    s = sim_stream_new(rt_cur_dev);
    if (s == NULL)
        return cudaErrorMemoryAllocation;
    *pStream = (cudaStream_t)(void *)s;
    return cudaSuccess;
}

static cudaError_t rt_stream_sync(const void *stream)
{
    struct sim_stream *s;
    uint64_t end = 0;
    int capturing = 0;

    pthread_mutex_lock(&sim_lock);
    s = sim_stream_lookup_locked(stream, rt_cur_dev);
    if (s != NULL) {
        capturing = s->capturing;
        end = s->busy_until;
    }
    pthread_mutex_unlock(&sim_lock);
    if (s == NULL)
        return cudaErrorInvalidResourceHandle;
    if (capturing)
        return cudaErrorStreamCaptureUnsupported;
    sim_wait_until(end);
    return cudaSuccess;
}

/* ------------------------------------------------------------------------ */
/* Graphs.                                                                   */
/* ------------------------------------------------------------------------ */

#define RT_GRAPH 1
#define RT_GRAPH_EXEC 2

struct rt_graph {
    int kind;           /* RT_GRAPH or RT_GRAPH_EXEC */
    uint64_t ns;        /* summed simulated device time */
    uint64_t nodes;     /* recorded operations */
    struct rt_graph *next;
};

static struct rt_graph *rt_graphs; /* registry of live graphs and execs */

/* Caller holds sim_lock. */
static struct rt_graph *rt_graph_lookup_locked(const void *h, int kind)
{
    struct rt_graph *g;
    for (g = rt_graphs; g != NULL; g = g->next)
        if ((const void *)g == h && g->kind == kind)
            return g;
    return NULL;
}

static cudaError_t rt_graph_destroy(const void *h, int kind)
{
    struct rt_graph **pp, *g = NULL;

    pthread_mutex_lock(&sim_lock);
    for (pp = &rt_graphs; *pp != NULL; pp = &(*pp)->next) {
        if ((const void *)*pp == h && (*pp)->kind == kind) {
            g = *pp;
            *pp = g->next;
            break;
        }
    }
    pthread_mutex_unlock(&sim_lock);
    if (g == NULL)
        return cudaErrorInvalidResourceHandle;
    free(g);
    return cudaSuccess;
}

static cudaError_t rt_begin_capture(const void *stream, int mode)
{
    struct sim_stream *s;
    cudaError_t e = cudaSuccess;

    if (mode < 0 || mode > 2)
        return cudaErrorInvalidValue;
    pthread_mutex_lock(&sim_lock);
    s = sim_stream_lookup_locked(stream, rt_cur_dev);
    if (s == NULL)
        e = cudaErrorInvalidResourceHandle;
    else if (s->is_default)
        e = cudaErrorStreamCaptureUnsupported; /* legacy stream can't capture */
    else if (s->capturing)
        e = cudaErrorIllegalState;
    else {
        s->capturing = 1;
        s->capture_mode = mode;
        s->capture_ns = 0;
        s->capture_nodes = 0;
    }
    pthread_mutex_unlock(&sim_lock);
    return e;
}

static cudaError_t rt_end_capture(const void *stream, cudaGraph_t *pGraph)
{
    struct sim_stream *s;
    struct rt_graph *g;
    cudaError_t e = cudaSuccess;

    if (pGraph == NULL)
        return cudaErrorInvalidValue;
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return cudaErrorMemoryAllocation;
    g->kind = RT_GRAPH;
    pthread_mutex_lock(&sim_lock);
    s = sim_stream_lookup_locked(stream, rt_cur_dev);
    if (s == NULL)
        e = cudaErrorInvalidResourceHandle;
    else if (!s->capturing)
        e = cudaErrorStreamCaptureUnmatched;
    else {
        g->ns = s->capture_ns;
        g->nodes = s->capture_nodes;
        s->capturing = 0;
        s->capture_ns = 0;
        s->capture_nodes = 0;
        g->next = rt_graphs;
        rt_graphs = g;
    }
    pthread_mutex_unlock(&sim_lock);
    if (e != cudaSuccess) {
        free(g);
        *pGraph = NULL;
        return e;
    }
    *pGraph = (cudaGraph_t)(void *)g;
    return cudaSuccess;
}

static cudaError_t rt_graph_instantiate(cudaGraphExec_t *pExec, const void *graph)
{
    struct rt_graph *g, *x;
    cudaError_t e = cudaSuccess;

    if (pExec == NULL)
        return cudaErrorInvalidValue;
    x = calloc(1, sizeof(*x));
    if (x == NULL)
        return cudaErrorMemoryAllocation;
    x->kind = RT_GRAPH_EXEC;
    pthread_mutex_lock(&sim_lock);
    g = rt_graph_lookup_locked(graph, RT_GRAPH);
    if (g == NULL)
        e = cudaErrorInvalidResourceHandle;
    else {
        x->ns = g->ns;
        x->nodes = g->nodes;
        x->next = rt_graphs;
        rt_graphs = x;
    }
    pthread_mutex_unlock(&sim_lock);
    if (e != cudaSuccess) {
        free(x);
        return e;
    }
    sim_delay(sim_config()->launch_ns); /* instantiation is not free */
    *pExec = (cudaGraphExec_t)(void *)x;
    return cudaSuccess;
}

static cudaError_t rt_graph_launch(const void *exec, const void *stream)
{
    struct rt_graph *x;
    struct sim_stream *s = NULL;
    cudaError_t e = cudaSuccess;

    sim_delay(sim_config()->launch_ns);
    pthread_mutex_lock(&sim_lock);
    x = rt_graph_lookup_locked(exec, RT_GRAPH_EXEC);
    if (x == NULL)
        e = cudaErrorInvalidResourceHandle;
    else if ((s = sim_stream_lookup_locked(stream, rt_cur_dev)) == NULL)
        e = cudaErrorInvalidResourceHandle;
    else
        sim_submit_locked(s, x->ns);
    pthread_mutex_unlock(&sim_lock);
    return e;
}

/* ======================================================================== */
/* Exported CUDA runtime API.                                               */
/* ======================================================================== */

/* --- memory --- */

SIM_API cudaError_t cudaMalloc(void **devPtr, size_t size)
{
    return rt_ret(rt_alloc(devPtr, size, 0, 0));
}

SIM_API cudaError_t cudaMallocManaged(void **devPtr, size_t size, unsigned int flags)
{
    return rt_ret(rt_alloc(devPtr, size, 1, flags));
}

SIM_API cudaError_t cudaFree(void *devPtr)
{
    return rt_ret(rt_free(devPtr));
}

SIM_API cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    uint64_t total = sim_config()->device_bytes;
    uint64_t used;

    if (free_bytes == NULL || total_bytes == NULL)
        return rt_ret(cudaErrorInvalidValue);
    if (rt_check_device() != cudaSuccess)
        return rt_ret(cudaErrorNoDevice);
    used = sim_mem_used(rt_cur_dev);
    *total_bytes = (size_t)total;
    *free_bytes = (size_t)(used < total ? total - used : 0);
    return cudaSuccess;
}

/* --- copies --- */

SIM_API cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, int kind)
{
    (void)dst;
    (void)src;
    return rt_ret(rt_copy_sync(count, kind));
}

SIM_API cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, int kind,
                                    cudaStream_t stream)
{
    (void)dst;
    (void)src;
    return rt_ret(rt_copy_async(count, kind, stream));
}

SIM_API cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch,
                                 size_t width, size_t height, int kind)
{
    (void)dst;
    (void)src;
    if (width > dpitch || width > spitch)
        return rt_ret(cudaErrorInvalidPitchValue);
    return rt_ret(rt_copy_sync(rt_mul_sat(width, height), kind));
}

SIM_API cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                                      size_t width, size_t height, int kind,
                                      cudaStream_t stream)
{
    (void)dst;
    (void)src;
    if (width > dpitch || width > spitch)
        return rt_ret(cudaErrorInvalidPitchValue);
    return rt_ret(rt_copy_async(rt_mul_sat(width, height), kind, stream));
}

SIM_API cudaError_t cudaMemcpyPeer(void *dst, int dstDevice, const void *src, int srcDevice,
                                   size_t count)
{
    cudaError_t e;
    (void)dst;
    (void)src;
    if ((e = rt_check_peer(dstDevice, srcDevice)) != cudaSuccess)
        return rt_ret(e);
    return rt_ret(rt_copy_sync(count, 3 /* DtoD */));
}

SIM_API cudaError_t cudaMemcpyPeerAsync(void *dst, int dstDevice, const void *src,
                                        int srcDevice, size_t count, cudaStream_t stream)
{
    cudaError_t e;
    (void)dst;
    (void)src;
    if ((e = rt_check_peer(dstDevice, srcDevice)) != cudaSuccess)
        return rt_ret(e);
    return rt_ret(rt_copy_async(count, 3 /* DtoD */, stream));
}

/* --- kernels --- */

SIM_API cudaError_t cudaLaunchKernel(const void *func, dim3 gridDim, dim3 blockDim, void **args,
                                     size_t sharedMem, cudaStream_t stream)
{
    (void)args;
    (void)sharedMem;
    return rt_ret(rt_launch(func, gridDim, blockDim, stream));
}

/* Non-CUDA extension: simulated device time of kernel `func`, in ns. */
SIM_API void simcudaSetKernelTime(const void *func, unsigned long long ns)
{
    sim_kernel_time_set(func, ns);
}

/* Non-CUDA extension: bytes currently allocated on `device`. */
SIM_API unsigned long long simcudaDeviceUsedBytes(int device)
{
    return sim_mem_used(device);
}

/* --- streams and synchronisation --- */

SIM_API cudaError_t cudaStreamCreate(cudaStream_t *pStream)
{
    return rt_ret(rt_stream_create(pStream, 0));
}

SIM_API cudaError_t cudaStreamCreateWithFlags(cudaStream_t *pStream, unsigned int flags)
{
    return rt_ret(rt_stream_create(pStream, flags));
}

SIM_API cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    if (sim_stream_destroy(stream) != 0)
        return rt_ret(cudaErrorInvalidResourceHandle);
    return cudaSuccess;
}

SIM_API cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    return rt_ret(rt_stream_sync(stream));
}

SIM_API cudaError_t cudaDeviceSynchronize(void)
{
    uint64_t end;
    cudaError_t e;

    if ((e = rt_check_device()) != cudaSuccess)
        return rt_ret(e);
    pthread_mutex_lock(&sim_lock);
    end = sim_device_busy_until_locked(rt_cur_dev);
    pthread_mutex_unlock(&sim_lock);
    sim_wait_until(end);
    return cudaSuccess;
}

/* --- devices --- */

SIM_API cudaError_t cudaGetDeviceCount(int *count)
{
    int n = sim_config()->device_count;
    if (count == NULL)
        return rt_ret(cudaErrorInvalidValue);
    *count = n;
    return n > 0 ? cudaSuccess : rt_ret(cudaErrorNoDevice);
}

SIM_API cudaError_t cudaSetDevice(int device)
{
    int n = sim_config()->device_count;
    if (n <= 0)
        return rt_ret(cudaErrorNoDevice);
    if (device < 0 || device >= n)
        return rt_ret(cudaErrorInvalidDevice);
    rt_cur_dev = device;
    return cudaSuccess;
}

SIM_API cudaError_t cudaGetDevice(int *device)
{
    if (device == NULL)
        return rt_ret(cudaErrorInvalidValue);
    if (rt_check_device() != cudaSuccess)
        return rt_ret(cudaErrorNoDevice);
    *device = rt_cur_dev;
    return cudaSuccess;
}

/* --- errors --- */

SIM_API cudaError_t cudaGetLastError(void)
{
    cudaError_t e = rt_last_err;
    rt_last_err = cudaSuccess;
    return e;
}

SIM_API cudaError_t cudaPeekAtLastError(void)
{
    return rt_last_err;
}

SIM_API const char *cudaGetErrorString(cudaError_t error)
{
    const struct rt_err_desc *d = rt_err_find(error);
    return d != NULL ? d->text : "unrecognized error code";
}

SIM_API const char *cudaGetErrorName(cudaError_t error)
{
    const struct rt_err_desc *d = rt_err_find(error);
    return d != NULL ? d->name : "unrecognized error code";
}

/* --- graphs --- */

SIM_API cudaError_t cudaStreamBeginCapture(cudaStream_t stream, int mode)
{
    return rt_ret(rt_begin_capture(stream, mode));
}

SIM_API cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *pGraph)
{
    return rt_ret(rt_end_capture(stream, pGraph));
}

SIM_API cudaError_t cudaGraphInstantiate(cudaGraphExec_t *pGraphExec, cudaGraph_t graph,
                                         unsigned long long flags)
{
    (void)flags;
    return rt_ret(rt_graph_instantiate(pGraphExec, graph));
}

SIM_API cudaError_t cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream)
{
    return rt_ret(rt_graph_launch(graphExec, stream));
}

SIM_API cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    return rt_ret(rt_graph_destroy(graph, RT_GRAPH));
}

SIM_API cudaError_t cudaGraphExecDestroy(cudaGraphExec_t graphExec)
{
    return rt_ret(rt_graph_destroy(graphExec, RT_GRAPH_EXEC));
}

/* --- versions --- */

SIM_API cudaError_t cudaRuntimeGetVersion(int *runtimeVersion)
{
    if (runtimeVersion == NULL)
        return rt_ret(cudaErrorInvalidValue);
    *runtimeVersion = RT_VERSION;
    return cudaSuccess;
}

SIM_API cudaError_t cudaDriverGetVersion(int *driverVersion)
{
    if (driverVersion == NULL)
        return rt_ret(cudaErrorInvalidValue);
    *driverVersion = RT_VERSION;
    return cudaSuccess;
}
