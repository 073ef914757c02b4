/*
kernels/rope.cuh — rotary position embedding, in place on q and k.
Math and layouts as in hybrid_cpu.h; each kernel's launcher follows it.
defines: rope_forward_gpu, rope_backward_gpu
*/
#ifndef KERNELS_ROPE_CUH
#define KERNELS_ROPE_CUH

#include "gpu_context.cuh"  // defines: GpuContext, OUT_WRITE/OUT_ADD, WARPS_PER_BLOCK (and cuda_common.cuh)

// RoPE, rotate-half, in place on the q and k thirds of qkv (N, 3C); v is not touched, and NoPE
// (rope = 0) launches nothing. cos/sin tables (T, D/2) hold the angles t·θ^(-2i/D) (rope_tables).
// One thread per 16-byte chunk of the first half of a q or k head: it rotates that chunk with its
// partner D/2 columns on (so D/2 is a multiple of X128), reading both before writing them.
// forward: y[i] = x[i] c - x[i+D/2] s, y[i+D/2] = x[i+D/2] c + x[i] s; backward: the transpose (s -> -s)
__global__ void rope_kernel(floatX* qkv, const float* cosb, const float* sinb, int N, int T, int C, int H, float sign) {
    int D = C / H, half = D / 2, per_row = C / X128;  // first-half chunks of a row's 2H q/k heads
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * per_row) { return; }
    size_t n = idx / per_row;
    int r = (int)(idx % per_row) * X128, head = r / half, i = r % half;  // head 0..2H-1: q heads, then k
    int t = (int)(n % T);
    floatX* p = qkv + n * 3 * C + (size_t)head * D + i;
    x128 a = load128(p), b = load128(p + half), ya, yb;
    for (int k = 0; k < X128; k++) {
        float c = cosb[t * half + i + k], s = sign * sinb[t * half + i + k];
        ya.v[k] = (floatX)((float)a.v[k] * c - (float)b.v[k] * s);
        yb.v[k] = (floatX)((float)b.v[k] * c + (float)a.v[k] * s);
    }
    store128(p, ya);
    store128(p + half, yb);
}
// qkv rotated in place by the angles (backward: dqkv by their transpose, sign -1)
static void rope_gpu(const GpuContext* g, floatX* qkv, const float* cosb, const float* sinb, int B, int T, int C, int H,
                     int rope, float sign) {
    if (!rope) { return; }
    size_t n = (size_t)B * T * C / X128;
    rope_kernel<<<blocks_for(n, 256), 256, 0, g->stream>>>(qkv, cosb, sinb, B * T, T, C, H, sign);
    cudaCheck(cudaGetLastError());
}
static void rope_forward_gpu(const GpuContext* g, floatX* qkv, const float* cosb, const float* sinb, int B, int T,
                             int C, int H, int rope) {
    rope_gpu(g, qkv, cosb, sinb, B, T, C, H, rope, 1.0f);
}
static void rope_backward_gpu(const GpuContext* g, floatX* dqkv, const float* cosb, const float* sinb, int B, int T,
                              int C, int H, int rope) {
    rope_gpu(g, dqkv, cosb, sinb, B, T, C, H, rope, -1.0f);
}

#endif // KERNELS_ROPE_CUH
