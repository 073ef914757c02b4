/*
kernels/gpu_context.cuh — what every launcher of kernels/ shares: the two handles it takes first
(cuBLAS and the stream), the check of cuBLAS calls, the output modes.
defines: GpuContext, cublasCheck, OUT_WRITE/OUT_ADD, WARPS_PER_BLOCK
*/
#ifndef KERNELS_GPU_CONTEXT_CUH
#define KERNELS_GPU_CONTEXT_CUH

#include <cublas_v2.h>
#include "../cuda_common.cuh"  // defines: die_at (utils.h)

// The two handles every launch needs, passed down explicitly (no hidden globals).
typedef struct {
    cublasHandle_t blas;
    cudaStream_t stream;
} GpuContext;

static void cublas_check_at(cublasStatus_t s, const char* file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) { die_at(file, line, "cuBLAS error %d", (int)s); }
}
#define cublasCheck(s) cublas_check_at((s), __FILE__, __LINE__)

#define WARPS_PER_BLOCK 8
// What a launcher does with its output: overwrite it, or add to it (the residual add, a gradient two
// branches feed)
enum { OUT_WRITE, OUT_ADD };

#endif // KERNELS_GPU_CONTEXT_CUH
