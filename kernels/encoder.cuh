/*
kernels/encoder.cuh — the token embedding: forward gather, backward by token buckets (deterministic).
Math and layouts as in hybrid_cpu.h; each kernel's launcher follows it.
defines: encoder_forward_gpu, encoder_backward_gpu
*/
#ifndef KERNELS_ENCODER_CUH
#define KERNELS_ENCODER_CUH

#include "gpu_context.cuh"  // defines: GpuContext, OUT_WRITE/OUT_ADD, WARPS_PER_BLOCK (and cuda_common.cuh)

// out[n, :] = wte[tokens[n], :]; one thread per element
__global__ void encoder_forward_kernel(floatX* out, const int* tokens, const floatX* wte, int N, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * C) { return; }
    size_t n = idx / C;
    out[idx] = wte[(size_t)tokens[n] * C + idx % C];
}
static void encoder_forward_gpu(const GpuContext* g, floatX* out, const int* tokens, const floatX* wte, int N, int C) {
    encoder_forward_kernel<<<blocks_for((size_t)N * C, 256), 256, 0, g->stream>>>(out, tokens, wte, N, C);
    cudaCheck(cudaGetLastError());
}

// dwte[token, :] += Σ dout[n, :] over the rows n holding that token. The host groups the rows by
// token (encoder_index): bucket b covers rows order[start[b] .. start[b+1]-1], all of token tok[b],
// in increasing n. One block per (bucket, 128 channels): no atomics, a fixed summation order.
__global__ void encoder_backward_kernel(float* dwte, const floatX* dout, const int* order, const int* start,
                                        const int* tok, int C) {
    int b = blockIdx.x, i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= C) { return; }
    float acc = 0.0f;
    for (int p = start[b]; p < start[b + 1]; p++) { acc += (float)dout[(size_t)order[p] * C + i]; }
    dwte[(size_t)tok[b] * C + i] += acc;
}
static void encoder_backward_gpu(const GpuContext* g, float* dwte, const floatX* dout, const int* index, int n_buckets,
                                 int N, int C) {
    const int* order = index;         // (N)
    const int* start = index + N;     // (N+1)
    const int* tok = index + 2 * N + 1; // (N)
    dim3 grid(n_buckets, (C + 127) / 128);
    encoder_backward_kernel<<<grid, 128, 0, g->stream>>>(dwte, dout, order, start, tok, C);
    cudaCheck(cudaGetLastError());
}

#endif // KERNELS_ENCODER_CUH
