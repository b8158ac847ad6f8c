/* Calls cudaLaunchKernel from a library N times and prints the mean ns per
 * call, so probe cost can be measured without interpreter noise. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct { unsigned x, y, z; } dim3;
typedef int (*launch_fn)(const void *, dim3, dim3, void **, size_t, void *);

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LIBCUDART CALLS\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "call_loop: %s\n", dlerror());
        return 2;
    }
    launch_fn launch = (launch_fn)dlsym(lib, "cudaLaunchKernel");
    if (!launch) {
        fprintf(stderr, "call_loop: no cudaLaunchKernel in %s\n", argv[1]);
        return 2;
    }
    long calls = atol(argv[2]);
    static char kernel;
    dim3 grid = {1, 1, 1}, block = {32, 1, 1};
    for (long i = 0; i < calls / 10; i++) launch(&kernel, grid, block, NULL, 0, NULL); /* warm-up */
    long long start = now_ns();
    for (long i = 0; i < calls; i++) launch(&kernel, grid, block, NULL, 0, NULL);
    printf("%.1f\n", (double)(now_ns() - start) / (double)calls);
    return 0;
}
