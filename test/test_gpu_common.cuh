/*
test_gpu_common.cuh — host helpers of the GPU tests: device copies of host arrays, random inputs,
and the norm-wise relative error ||gpu - cpu|| / ||cpu|| used by every GPU check.

defines: rel_err_f, to_gpu, from_gpu, rand_host, gpu_zeros, rel_err_dev
*/
#ifndef TEST_GPU_COMMON_CUH
#define TEST_GPU_COMMON_CUH

#include <cuda_runtime.h>
#include "../dataloader.h"  // defines: cudaCheck, malloc_check, Rng

static double rel_err_f(const float* gpu, const float* cpu, size_t n) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) { d += ((double)gpu[i] - cpu[i]) * ((double)gpu[i] - cpu[i]); r += (double)cpu[i] * cpu[i]; }
    return r == 0.0 ? sqrt(d) : sqrt(d / r);
}

static float* to_gpu(const float* h, size_t n) {
    float* d;
    cudaCheck(cudaMalloc(&d, n * sizeof(float)));
    cudaCheck(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
static float* from_gpu(const float* d, size_t n) {
    float* h = (float*)malloc_check(n * sizeof(float));
    cudaCheck(cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

static float* rand_host(size_t n, Rng* r, double scale) {
    float* x = (float*)malloc_check(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { x[i] = (float)(scale * rng_normal(r)); }
    return x;
}
static float* gpu_zeros(size_t n) {
    float* d;
    cudaCheck(cudaMalloc(&d, n * sizeof(float)));
    cudaCheck(cudaMemset(d, 0, n * sizeof(float)));
    return d;
}
// relative error of a device buffer against a host reference
static double rel_err_dev(const float* d, const float* ref, size_t n) {
    float* h = from_gpu(d, n);
    double e = rel_err_f(h, ref, n);
    free(h);
    return e;
}

#endif // TEST_GPU_COMMON_CUH
