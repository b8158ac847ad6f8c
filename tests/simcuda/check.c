/*
 * check.c - libsimcheck.so.1: the one CUDA runtime entry point `ingero check`
 * attaches its probes to.  A real probe family on a file that exports only
 * cudaMalloc attaches (and, above all, detaches) two uprobes instead of dozens,
 * so the check takes a second instead of the seconds the kernel spends per
 * uprobe removal.
 */
#include <stddef.h>
#include <stdint.h>

#include "simcuda.h"

SIM_API int cudaMalloc(void **devPtr, size_t size)
{
    uint64_t ptr = 0;

    if (devPtr == NULL)
        return 1; /* cudaErrorInvalidValue */
    if (size == 0 || sim_mem_reserve(0, size, 0x7c0000000000ULL, &ptr) != 0) {
        *devPtr = NULL;
        return 2; /* cudaErrorMemoryAllocation */
    }
    *devPtr = (void *)(uintptr_t)ptr;
    return 0;
}
