/*
kernels/rmsnorm.cuh — RMSNorm forward (alone and fused with the residual add) and backward.
Math and layouts as in hybrid_cpu.h; each kernel's launcher follows it.
defines: rmsnorm_forward_gpu, residual_rmsnorm_forward_gpu, rmsnorm_backward_gpu
*/
#ifndef KERNELS_RMSNORM_CUH
#define KERNELS_RMSNORM_CUH

#include "gpu_context.cuh"  // defines: GpuContext, OUT_WRITE/OUT_ADD, WARPS_PER_BLOCK (and cuda_common.cuh)

// out = x r w over one row of C, by the lanes of its warp (16-byte chunks of the activations; w, a
// parameter, need not start on 16 bytes: read element by element)
__device__ static inline void rmsnorm_row_out(floatX* out, const floatX* x, const floatX* w, float r, int lane, int C) {
    for (int i = lane * X128; i < C; i += 32 * X128) {
        x128 xv = load128(x + i), o;
        for (int k = 0; k < X128; k++) { o.v[k] = (floatX)((float)xv.v[k] * r * (float)w[i + k]); }
        store128(out + i, o);
    }
}

// out = x rstd w, rstd = 1/sqrt(mean(x^2) + eps) over rows of C; one warp per row
__global__ void rmsnorm_forward_kernel(floatX* out, float* rstd, const floatX* inp, const floatX* w, int N, int C) {
    int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) { return; }
    const floatX* x = inp + (size_t)row * C;
    float ss = 0.0f;
    for (int i = lane * X128; i < C; i += 32 * X128) {
        x128 xv = load128(x + i);
        for (int k = 0; k < X128; k++) { ss += (float)xv.v[k] * (float)xv.v[k]; }
    }
    float r = rsqrtf(warp_sum(ss) / C + NORM_EPS);
    rmsnorm_row_out(out + (size_t)row * C, x, w, r, lane, C);
    if (lane == 0) { rstd[row] = r; }
}
static void rmsnorm_forward_gpu(const GpuContext* g, floatX* out, float* rstd, const floatX* inp, const floatX* w,
                                int N, int C) {
    rmsnorm_forward_kernel<<<blocks_for(N, WARPS_PER_BLOCK), 32 * WARPS_PER_BLOCK, 0, g->stream>>>(
        out, rstd, inp, w, N, C);
    cudaCheck(cudaGetLastError());
}

// The residual add and the norm after it in one pass: resid_out = resid_in + y, then ln and rstd of
// resid_out as rmsnorm_forward_kernel (from the rounded sum, as a separate norm would read it).
// resid_out may be y (in place). One warp per row; the second loop rereads the row it just wrote.
__global__ void residual_rmsnorm_forward_kernel(floatX* resid_out, floatX* ln, float* rstd, const floatX* resid_in,
                                                const floatX* y, const floatX* w, int N, int C) {
    int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) { return; }
    size_t base = (size_t)row * C;
    float ss = 0.0f;
    for (int i = lane * X128; i < C; i += 32 * X128) {
        x128 a = load128(resid_in + base + i), b = load128(y + base + i), x;
        for (int k = 0; k < X128; k++) {
            x.v[k] = (floatX)((float)a.v[k] + (float)b.v[k]);
            ss += (float)x.v[k] * (float)x.v[k];
        }
        store128(resid_out + base + i, x);
    }
    float r = rsqrtf(warp_sum(ss) / C + NORM_EPS);
    rmsnorm_row_out(ln + base, resid_out + base, w, r, lane, C);
    if (lane == 0) { rstd[row] = r; }
}
static void residual_rmsnorm_forward_gpu(const GpuContext* g, floatX* resid_out, floatX* ln, float* rstd,
                                         const floatX* resid_in, const floatX* y, const floatX* w, int N, int C) {
    residual_rmsnorm_forward_kernel<<<blocks_for(N, WARPS_PER_BLOCK), 32 * WARPS_PER_BLOCK, 0, g->stream>>>(
        resid_out, ln, rstd, resid_in, y, w, N, C);
    cudaCheck(cudaGetLastError());
}

// dx = r (dy w - x r^2 mean(dy w x)); written (=) or added (+=, the residual stream) to dinp
__global__ void rmsnorm_backward_kernel(floatX* dinp, const floatX* dout, const floatX* inp, const floatX* w,
                                       const float* rstd, int N, int C, int accumulate) {
    int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) { return; }
    const floatX* x = inp + (size_t)row * C;
    const floatX* dy = dout + (size_t)row * C;
    floatX* dx = dinp + (size_t)row * C;
    float gx = 0.0f;
    for (int i = lane * X128; i < C; i += 32 * X128) {
        x128 xv = load128(x + i), dv = load128(dy + i);
        for (int k = 0; k < X128; k++) { gx += (float)dv.v[k] * (float)w[i + k] * (float)xv.v[k]; }
    }
    gx = warp_sum(gx) / C;
    float r = rstd[row];
    for (int i = lane * X128; i < C; i += 32 * X128) {
        x128 xv = load128(x + i), dv = load128(dy + i), o = accumulate ? load128(dx + i) : xv;
        for (int k = 0; k < X128; k++) {
            float d = r * ((float)dv.v[k] * (float)w[i + k] - (float)xv.v[k] * r * r * gx);
            o.v[k] = (floatX)(accumulate ? (float)o.v[k] + d : d);
        }
        store128(dx + i, o);
    }
}

// dw = Σ_n dy x rstd, in two fixed-order passes: partial[s, i] sums the rows of slice s (grid
// (ceil(C/32), slices), block 32×8), then one thread per channel adds the slices in order.
#define NORM_SLICES 128
__global__ void rmsnorm_weight_partial_kernel(float* partial, const floatX* dout, const floatX* inp, const float* rstd,
                                              int N, int C) {
    __shared__ float part[8][33];
    int i = blockIdx.x * 32 + threadIdx.x, rows_per_slice = (N + gridDim.y - 1) / gridDim.y;
    int n0 = blockIdx.y * rows_per_slice, n1 = min(N, n0 + rows_per_slice);
    float acc = 0.0f;
    if (i < C) {
        for (int n = n0 + threadIdx.y; n < n1; n += 8) {
            acc += (float)dout[(size_t)n * C + i] * (float)inp[(size_t)n * C + i] * rstd[n];
        }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && i < C) {
        float s = 0.0f;
        for (int y = 0; y < 8; y++) { s += part[y][threadIdx.x]; }
        partial[(size_t)blockIdx.y * C + i] = s;
    }
}
__global__ void sum_slices_kernel(float* dw, const float* partial, int slices, int C) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C) { return; }
    float s = 0.0f;
    for (int k = 0; k < slices; k++) { s += partial[(size_t)k * C + i]; }
    dw[i] += s;
}

// dinp (= or +=) and dw (+=); scratch holds NORM_SLICES * C floats
static void rmsnorm_backward_gpu(const GpuContext* g, floatX* dinp, float* dw, float* scratch, const floatX* dout,
                                 const floatX* inp, const floatX* w, const float* rstd, int N, int C, int out_mode) {
    rmsnorm_backward_kernel<<<blocks_for(N, WARPS_PER_BLOCK), 32 * WARPS_PER_BLOCK, 0, g->stream>>>(
        dinp, dout, inp, w, rstd, N, C, out_mode == OUT_ADD);
    cudaCheck(cudaGetLastError());
    dim3 grid((C + 31) / 32, NORM_SLICES);
    rmsnorm_weight_partial_kernel<<<grid, dim3(32, 8), 0, g->stream>>>(scratch, dout, inp, rstd, N, C);
    cudaCheck(cudaGetLastError());
    sum_slices_kernel<<<blocks_for(C, 256), 256, 0, g->stream>>>(dw, scratch, NORM_SLICES, C);
    cudaCheck(cudaGetLastError());
}

#endif // KERNELS_RMSNORM_CUH
