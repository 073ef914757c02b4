/*
kernels/adamw.cuh — AdamW over the whole parameter buffer in one launch; the floatX copy; the sum of squares
for the gradient norm.
Math and layouts as in hybrid_cpu.h; each kernel's launcher follows it.
defines: AdamwTensor, adamw_kernel, to_floatX_kernel, sumsq_kernel, SUMSQ_BLOCKS
*/
#ifndef KERNELS_ADAMW_CUH
#define KERNELS_ADAMW_CUH

#include "gpu_context.cuh"  // defines: GpuContext, OUT_WRITE/OUT_ADD, WARPS_PER_BLOCK (and cuda_common.cuh)

// One tensor of the parameter buffer as the AdamW kernel sees it: elements [start, end), decay 1 where
// weight decay applies (its table row)
typedef struct {
    size_t start, end;
    float decay;
} AdamwTensor;

// AdamW over every tensor in one launch (hybrid_cpu.h model_update): the tensors lie back to back in
// master, params, grads, m and v (the parameter Layout), so one grid covers the whole buffer and each
// thread finds its tensor by binary search over their starts (a handful of cached loads); elements of
// the alignment gaps between tensors are left alone. g is scaled by the clip factor, decay decoupled.
// Updates the fp32 master weights and writes the floatX copy the kernels read (the same array in
// the FP32 build).
__global__ void adamw_kernel(float* master, floatX* params, const float* grad, float* m, float* v,
                             const AdamwTensor* tensors, int n_tensors, size_t n, float lr, float beta1, float beta2,
                             float c1, float c2, float eps, float wd, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) { return; }
    int lo = 0, hi = n_tensors - 1;  // the last tensor that starts at or before i
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (tensors[mid].start <= i) { lo = mid; } else { hi = mid - 1; }
    }
    if (i >= tensors[lo].end) { return; }
    float g = grad[i] * scale;
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = master[i] - lr * ((mi / c1) / (sqrtf(vi / c2) + eps) + wd * tensors[lo].decay * master[i]);
    master[i] = p;
    params[i] = (floatX)p;
}

// out = (floatX) in; one thread per element
__global__ void to_floatX_kernel(floatX* out, const float* in, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { out[i] = (floatX)in[i]; }
}

// partial[b] = Σ x_i^2 over the elements block b visits (grid-stride, fixed grid); the host adds
// the partials in order
#define SUMSQ_BLOCKS 1024
__global__ void sumsq_kernel(float* partial, const float* x, size_t n) {
    float s = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        s += x[i] * x[i];
    }
    s = block_sum(s);
    if (threadIdx.x == 0) { partial[blockIdx.x] = s; }
}

#endif // KERNELS_ADAMW_CUH
