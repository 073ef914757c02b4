/*
kernels/swiglu.cuh — SwiGLU (silu(a) b) forward and backward.
Math and layouts as in hybrid_cpu.h; each kernel's launcher follows it.
defines: swiglu_forward_gpu, swiglu_backward_gpu
*/
#ifndef KERNELS_SWIGLU_CUH
#define KERNELS_SWIGLU_CUH

#include "gpu_context.cuh"  // defines: GpuContext, OUT_WRITE/OUT_ADD, WARPS_PER_BLOCK (and cuda_common.cuh)

// out = silu(a) b (SwiGLU; also the R mixer's output gate) over rows of `width`: out and b are
// contiguous rows, a (and da) rows of a_stride (the R gate reads gpre out of its layer's input
// projection); width and a_stride multiples of X128. One thread per 16-byte chunk.
__global__ void swiglu_forward_kernel(floatX* out, const floatX* a, int a_stride, const floatX* b, int rows,
                                      int width) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * X128;
    if (i >= (size_t)rows * width) { return; }
    size_t ai = i / width * a_stride + i % width;
    x128 av = load128(a + ai), bv = load128(b + i), o;
    for (int k = 0; k < X128; k++) {
        float x = (float)av.v[k];
        o.v[k] = (floatX)(x * sigmoidf_(x) * (float)bv.v[k]);
    }
    store128(out + i, o);
}
// da = dout b silu'(a), db = dout silu(a), both written (=)
__global__ void swiglu_backward_kernel(floatX* da, floatX* db, const floatX* dout, const floatX* a, int a_stride,
                                       const floatX* b, int rows, int width) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * X128;
    if (i >= (size_t)rows * width) { return; }
    size_t ai = i / width * a_stride + i % width;
    x128 av = load128(a + ai), bv = load128(b + i), dv = load128(dout + i), dav, dbv;
    for (int k = 0; k < X128; k++) {
        float x = (float)av.v[k], s = sigmoidf_(x), d = (float)dv.v[k];
        dav.v[k] = (floatX)(d * (float)bv.v[k] * s * (1.0f + x * (1.0f - s)));
        dbv.v[k] = (floatX)(d * x * s);
    }
    store128(da + ai, dav);
    store128(db + i, dbv);
}
static void swiglu_forward_gpu(const GpuContext* g, floatX* out, const floatX* a, int a_stride, const floatX* b,
                               int rows, int width) {
    swiglu_forward_kernel<<<blocks_for((size_t)rows * width / X128, 256), 256, 0, g->stream>>>(
        out, a, a_stride, b, rows, width);
    cudaCheck(cudaGetLastError());
}
static void swiglu_backward_gpu(const GpuContext* g, floatX* da, floatX* db, const floatX* dout, const floatX* a,
                                int a_stride, const floatX* b, int rows, int width) {
    swiglu_backward_kernel<<<blocks_for((size_t)rows * width / X128, 256), 256, 0, g->stream>>>(
        da, db, dout, a, a_stride, b, rows, width);
    cudaCheck(cudaGetLastError());
}

#endif // KERNELS_SWIGLU_CUH
