/*
kernels/crossentropy.cuh — cross-entropy over the LM head's logits (loss, lse and the gradient in one pass); rows
gathered and broadcast.
Math and layouts as in hybrid_cpu.h; each kernel's launcher follows it.
defines: crossentropy_gpu, gather_rows_kernel, broadcast_row_kernel
*/
#ifndef KERNELS_CROSSENTROPY_CUH
#define KERNELS_CROSSENTROPY_CUH

#include "gpu_context.cuh"  // defines: GpuContext, OUT_WRITE/OUT_ADD, WARPS_PER_BLOCK (and cuda_common.cuh)

// Merges a running (max m, sum s of exp(x - m)) with another: the online softmax's combine step.
__device__ static inline void lse_merge(float* m, float* s, float m2, float s2) {
    float mm = fmaxf(*m, m2);
    *s = *s * expf(*m - mm) + s2 * expf(m2 - mm);
    *m = mm;
}

// Per row n: lse over the V real logits, loss = lse - logit[target] (0 where target < 0); with
// with_grad, then the row's gradient dloss (softmax - onehot(target)) over the V real columns (0 on
// padding and masked rows) written over the logits: statistics and gradient in one block, the
// second read of the row mostly from L2 (keeping the row in shared memory measured no faster on an
// H200: fewer blocks an SM). One block per row: each thread keeps a running (max, sum) over its
// 16-byte chunks, then the pairs are merged across the warp and the block.
__global__ void crossentropy_kernel(floatX* logits, float* losses, float* lse, const int* targets, float dloss,
                                    int with_grad, int V, int Vp) {
    __shared__ float pm[32], ps[32];
    floatX* x = logits + (size_t)blockIdx.x * Vp;
    float m = -FLT_MAX, s = 0.0f;
    for (int v0 = threadIdx.x * X128; v0 < V; v0 += blockDim.x * X128) {
        x128 xv = load128(x + v0);
        int n = V - v0 < X128 ? V - v0 : X128;  // the chunk's real columns
        float mc = -FLT_MAX, sc = 0.0f;
        for (int k = 0; k < n; k++) { mc = fmaxf(mc, (float)xv.v[k]); }
        for (int k = 0; k < n; k++) { sc += expf((float)xv.v[k] - mc); }
        lse_merge(&m, &s, mc, sc);
    }
    for (int off = 16; off > 0; off /= 2) {
        float m2 = __shfl_xor_sync(0xffffffff, m, off), s2 = __shfl_xor_sync(0xffffffff, s, off);
        lse_merge(&m, &s, m2, s2);
    }
    if (threadIdx.x % 32 == 0) { pm[threadIdx.x / 32] = m; ps[threadIdx.x / 32] = s; }
    __syncthreads();
    int t = targets[blockIdx.x];
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x / 32); w++) { lse_merge(&pm[0], &ps[0], pm[w], ps[w]); }
        float L = pm[0] + logf(ps[0]);
        lse[blockIdx.x] = L;
        losses[blockIdx.x] = t < 0 ? 0.0f : L - (float)x[t];
        pm[0] = L;
    }
    __syncthreads();  // the loss read x[t] before any thread overwrites it
    if (!with_grad) { return; }
    float L = pm[0];
    for (int v0 = threadIdx.x * X128; v0 < Vp; v0 += blockDim.x * X128) {
        x128 xv = load128(x + v0), d;
        for (int k = 0; k < X128; k++) {
            int v = v0 + k;
            d.v[k] = (floatX)((t >= 0 && v < V) ? dloss * (expf((float)xv.v[k] - L) - (v == t ? 1.0f : 0.0f)) : 0.0f);
        }
        store128(x + v0, d);
    }
}
// losses, lse (N) of logits (N, Vp); with_grad: dlogits = dloss (softmax - onehot) over the logits
static void crossentropy_gpu(const GpuContext* g, floatX* logits, float* losses, float* lse, const int* targets,
                             float dloss, int with_grad, int N, int V, int Vp) {
    crossentropy_kernel<<<N, REDUCE_THREADS, 0, g->stream>>>(logits, losses, lse, targets, dloss, with_grad, V, Vp);
    cudaCheck(cudaGetLastError());
}

// out[i, :] = inp[rows[i], :] for i < n; one thread per 16-byte chunk (C % X128 == 0)
__global__ void gather_rows_kernel(floatX* out, const floatX* inp, const int* rows, int n, int C) {
    size_t idx = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * X128;
    if (idx >= (size_t)n * C) { return; }
    size_t i = idx / C, j = idx % C;
    store128(out + idx, load128(inp + (size_t)rows[i] * C + j));
}

// out[n, :] = row (C) for every n < N (layer ablation: a mixer's output replaced by its mean); one
// thread per element
__global__ void broadcast_row_kernel(floatX* out, const floatX* row, int N, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < (size_t)N * C) { out[idx] = row[idx % C]; }
}

#endif // KERNELS_CROSSENTROPY_CUH
