/*
test_gpu_common.cuh — host helpers of the GPU tests: device copies of host arrays, random inputs,
and the norm-wise relative error ||gpu - cpu|| / ||cpu|| used by every GPU check.

defines: rel_err_f, to_gpu, from_gpu, rand_host, gpu_zeros(_bytes), rel_err_dev, and for buffers of the
         build's floatX: TOL_X, PRECISION_IS_BF16, round_x, to_gpu_x, from_gpu_x, gpu_zeros_x, rel_err_dev_x; the inputs of
         the recurrent mixer's checks: DeltaInputs, delta_inputs_host, delta_inputs_free; for the dev/cuda
         timings: time_fwd_bwd
*/
#ifndef TEST_GPU_COMMON_CUH
#define TEST_GPU_COMMON_CUH

#include <cuda_runtime.h>
#include "../hybrid_cpu.h"     // defines: l2norm_forward, MIXER_* (and dataloader.h: malloc_check, Rng)
#include "../cuda_common.cuh"  // defines: cudaCheck, floatX

// 1 when this machine has no usable CUDA GPU, with the reason in why: "no CUDA GPU found" (no device,
// or no NVIDIA driver, which the runtime reports as an old driver), else the runtime's error.
static int gpu_missing(char* why, size_t size) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err == cudaSuccess && n > 0) { return 0; }
    if (err == cudaSuccess || err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) { snprintf(why, size, "no CUDA GPU found"); }
    else { snprintf(why, size, "no usable CUDA GPU (%s)", cudaGetErrorString(err)); }
    return 1;
}

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
static void* gpu_zeros_bytes(size_t bytes) {
    void* d;
    cudaCheck(cudaMalloc(&d, bytes));
    cudaCheck(cudaMemset(d, 0, bytes));
    return d;
}
static float* gpu_zeros(size_t n) { return (float*)gpu_zeros_bytes(n * sizeof(float)); }
// relative error of a device buffer against a host reference
static double rel_err_dev(const float* d, const float* ref, size_t n) {
    float* h = from_gpu(d, n);
    double e = rel_err_f(h, ref, n);
    free(h);
    return e;
}

// Tolerance of a check whose GPU side runs in floatX. fp32 rounding in a different order gives
// ~1e-7..1e-5; bf16 keeps 8 significant bits (relative rounding 2^-9 ≈ 2e-3 per value), so a
// result built from rounded inputs, intermediates and outputs lands at ~2e-3..2e-2. A wrong index,
// mask or missed term gives O(1e-1..1) in either build.
#if defined(PRECISION_BF16)
#define TOL_X(fp32_tol, bf16_tol) (bf16_tol)
#define PRECISION_IS_BF16 1
#else
#define TOL_X(fp32_tol, bf16_tol) (fp32_tol)
#define PRECISION_IS_BF16 0
#endif

// rounds host values to floatX, so the CPU reference sees exactly the GPU's inputs
static void round_x(float* h, size_t n) {
    for (size_t i = 0; i < n; i++) { h[i] = (float)(floatX)h[i]; }
}
static floatX* to_gpu_x(const float* h, size_t n) {
    floatX* x = (floatX*)malloc_check(n * sizeof(floatX));
    for (size_t i = 0; i < n; i++) { x[i] = (floatX)h[i]; }
    floatX* d;
    cudaCheck(cudaMalloc(&d, n * sizeof(floatX)));
    cudaCheck(cudaMemcpy(d, x, n * sizeof(floatX), cudaMemcpyHostToDevice));
    free(x);
    return d;
}
static float* from_gpu_x(const floatX* d, size_t n) {
    floatX* x = (floatX*)malloc_check(n * sizeof(floatX));
    cudaCheck(cudaMemcpy(x, d, n * sizeof(floatX), cudaMemcpyDeviceToHost));
    float* h = (float*)malloc_check(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { h[i] = (float)x[i]; }
    free(x);
    return h;
}
static floatX* gpu_zeros_x(size_t n) { return (floatX*)gpu_zeros_bytes(n * sizeof(floatX)); }
static double rel_err_dev_x(const floatX* d, const float* ref, size_t n) {
    float* h = from_gpu_x(d, n);
    double e = rel_err_f(h, ref, n);
    free(h);
    return e;
}

// Host inputs of the delta rule in the model's ranges, rounded to floatX so the CPU sees the GPU's:
// q, k (B,T,C) L2-normalised per head (q also scaled by 1/sqrt(D)), v inside qkva (B,T,3C) at column
// 2C, dout (B,T,C), beta in (0,1), gate = log α in (-0.5, 0] (B,T,H). Seeded by T and the mixer.
typedef struct {
    int B, T, H, D;
    float *q, *k, *qkva, *dout, *beta, *gate;
} DeltaInputs;

static DeltaInputs delta_inputs_host(int B, int T, int H, int D, int mixer) {
    DeltaInputs in = {B, T, H, D};
    int C = H * D;
    size_t nC = (size_t)B * T * C, nH = (size_t)B * T * H;
    Rng r;
    rng_init(&r, (uint64_t)(T * 7 + mixer));
    in.qkva = rand_host(3 * nC, &r, 1.0);
    in.dout = rand_host(nC, &r, 1.0);
    in.q = (float*)malloc_check(nC * sizeof(float));
    in.k = (float*)malloc_check(nC * sizeof(float));
    in.beta = (float*)malloc_check(nH * sizeof(float));
    in.gate = (float*)malloc_check(nH * sizeof(float));
    for (size_t i = 0; i < nH; i++) { in.beta[i] = (float)sigmoid(rng_normal(&r)); in.gate[i] = (float)(-0.5 * rng_uniform(&r)); }
    round_x(in.qkva, 3 * nC);
    round_x(in.dout, nC);
    l2norm_forward(in.q, in.qkva, 3 * C, B * T, C, H, 1.0 / sqrt((double)D));
    l2norm_forward(in.k, in.qkva + C, 3 * C, B * T, C, H, 1.0);
    round_x(in.q, nC);
    round_x(in.k, nC);
    return in;
}
static void delta_inputs_free(DeltaInputs* in) { free(in->q); free(in->k); free(in->qkva); free(in->dout); free(in->beta); free(in->gate); }

static int cmp_float(const void* a, const void* b) { return *(const float*)a < *(const float*)b ? -1 : *(const float*)a > *(const float*)b; }

// Median times (ms) of a forward and the backward after it, over `reps` runs after one warm-up, by
// CUDA events on the default stream: run(ctx, 0) launches the forward, run(ctx, 1) the backward.
typedef void (*FwdBwdRun)(void* ctx, int backward);
static void time_fwd_bwd(FwdBwdRun run, void* ctx, int reps, float* fwd_ms, float* bwd_ms) {
    cudaEvent_t e[3];
    for (int i = 0; i < 3; i++) { cudaCheck(cudaEventCreate(&e[i])); }
    float* fwd = (float*)malloc_check(2 * reps * sizeof(float));
    float* bwd = fwd + reps;
    for (int rep = -1; rep < reps; rep++) {  // rep -1 warms up
        cudaCheck(cudaEventRecord(e[0], 0));
        run(ctx, 0);
        cudaCheck(cudaEventRecord(e[1], 0));
        run(ctx, 1);
        cudaCheck(cudaEventRecord(e[2], 0));
        cudaCheck(cudaEventSynchronize(e[2]));
        if (rep < 0) { continue; }
        cudaCheck(cudaEventElapsedTime(&fwd[rep], e[0], e[1]));
        cudaCheck(cudaEventElapsedTime(&bwd[rep], e[1], e[2]));
    }
    qsort(fwd, reps, sizeof(float), cmp_float);
    qsort(bwd, reps, sizeof(float), cmp_float);
    *fwd_ms = fwd[reps / 2];
    *bwd_ms = bwd[reps / 2];
    free(fwd);
    for (int i = 0; i < 3; i++) { cudaEventDestroy(e[i]); }
}

#endif // TEST_GPU_COMMON_CUH
