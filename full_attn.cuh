/*
full_attn.cuh — causal softmax attention, forward and backward, flash-style: keys are visited in
tiles with an online softmax, nothing of size T×T is stored, and the backward recomputes the
probabilities from the saved log-sum-exp.

defines: attention tile ranges (attn_key_tiles / attn_query_tiles), attention_forward_kernel,
         attention_delta_kernel, attention_backward_dq_kernel, attention_backward_dkdv_kernel,
         launchers attention_forward_gpu / attention_backward_gpu

One set of kernels serves full attention (window <= 0) and sliding-window attention (window W:
query i sees keys i-W < j <= i). The window only narrows the range of tiles a block visits, so the
SWA work grows with T·W (attention_swa.cuh has the SWA entry points).

Layouts, the same as the CPU reference's:
    qkvr  (B, T, 3C)  q | k | v, head h at columns h*D..h*D+D-1 of each third (q, k already rotated)
    out   (B, T, C)
    lse   (B, T, H)   log-sum-exp of each softmax row (saved for the backward)
    delta (B, T, H)   scratch of the backward: dout · out per row
Gradient rule: the backward writes (=) dqkvr; every element of it is written exactly once, so no
atomics and a deterministic result.

This is the fp32 version: one thread owns one query row (forward, dq) or one key row (dk, dv), and
a tile of TILE rows of the other side sits in shared memory for all threads of the block to share.
*/
#ifndef FULL_ATTN_CUH
#define FULL_ATTN_CUH

#include <cuda_runtime.h>

#define ATTN_TILE 32  // query rows per block = key rows per tile = threads per block

// ----------------------------------------------------------------------------
// Tile ranges. Queries q0..q0+TILE-1 need keys max(0, q0-W+1) .. q0+TILE-1 (all j <= q for full
// attention); keys k0..k0+TILE-1 are needed by queries k0 .. k0+TILE-1+W-1 (all q >= k for full).

__host__ __device__ static inline void attn_key_tiles(int q0, int T, int window, int* first, int* last) {
    int lo = (window > 0 && q0 - window + 1 > 0) ? q0 - window + 1 : 0;
    int hi = q0 + ATTN_TILE - 1 < T - 1 ? q0 + ATTN_TILE - 1 : T - 1;
    *first = lo / ATTN_TILE * ATTN_TILE;
    *last = hi;
}
__host__ __device__ static inline void attn_query_tiles(int k0, int T, int window, int* first, int* last) {
    int hi = window > 0 ? k0 + ATTN_TILE - 1 + window - 1 : T - 1;
    *first = k0;
    *last = hi < T - 1 ? hi : T - 1;
}
// may query q see key j?
__device__ static inline int attn_visible(int q, int j, int window) { return j <= q && (window <= 0 || q - j < window); }

// Loads rows r0..r0+TILE-1 of one head's D columns (row stride `stride`) into tile[TILE][HD+1];
// rows at or past T are zero. The +1 column keeps per-thread row reads off a single bank.
template <int HD>
__device__ static void load_tile(float (*tile)[HD + 1], const float* base, int r0, int T, size_t stride) {
    for (int idx = threadIdx.x; idx < ATTN_TILE * HD; idx += blockDim.x) {
        int r = idx / HD, c = idx % HD;
        tile[r][c] = r0 + r < T ? base[(size_t)(r0 + r) * stride + c] : 0.0f;
    }
}

// The K and V rows k0..k0+TILE-1 of one head, for every thread of the block (syncs around the load)
template <int HD>
__device__ static void load_kv_tiles(float (*Ks)[HD + 1], float (*Vs)[HD + 1], const float* base, int k0, int T, int C) {
    __syncthreads();
    load_tile<HD>(Ks, base + C, k0, T, 3 * C);
    load_tile<HD>(Vs, base + 2 * C, k0, T, 3 * C);
    __syncthreads();
}

__device__ static inline float dot_row(const float* a, const float* b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) { s += a[i] * b[i]; }
    return s;
}

// ----------------------------------------------------------------------------
// CUDA kernels

// grid (ceil(T/TILE), B*H), block TILE: thread = query row t, online softmax over its key tiles
template <int HD>
__global__ void attention_forward_kernel(float* out, float* lse, const float* qkvr, int T, int C, int H, int window) {
    __shared__ float Ks[ATTN_TILE][HD + 1], Vs[ATTN_TILE][HD + 1];
    int b = blockIdx.y / H, h = blockIdx.y % H;
    int q0 = blockIdx.x * ATTN_TILE, t = q0 + threadIdx.x;
    const float* base = qkvr + (size_t)b * T * 3 * C + h * HD;
    float scale = rsqrtf((float)HD);
    float q[HD], acc[HD];
    float m = -INFINITY, l = 0.0f;
    for (int i = 0; i < HD; i++) { q[i] = t < T ? base[(size_t)t * 3 * C + i] * scale : 0.0f; acc[i] = 0.0f; }
    int first, last;
    attn_key_tiles(q0, T, window, &first, &last);
    for (int k0 = first; k0 <= last; k0 += ATTN_TILE) {
        load_kv_tiles<HD>(Ks, Vs, base, k0, T, C);
        if (t >= T) { continue; }
        for (int jj = 0; jj < ATTN_TILE; jj++) {
            if (!attn_visible(t, k0 + jj, window)) { continue; }
            float s = dot_row(q, Ks[jj], HD);
            if (s > m) {  // new running max: rescale what was summed so far
                float corr = expf(m - s);
                l *= corr;
                for (int i = 0; i < HD; i++) { acc[i] *= corr; }
                m = s;
            }
            float p = expf(s - m);
            l += p;
            for (int i = 0; i < HD; i++) { acc[i] += p * Vs[jj][i]; }
        }
    }
    if (t < T) {
        float* o = out + ((size_t)b * T + t) * C + h * HD;
        for (int i = 0; i < HD; i++) { o[i] = acc[i] / l; }
        lse[((size_t)b * T + t) * H + h] = m + logf(l);
    }
}

// delta[b,t,h] = dout · out over the head's D columns; one thread per (b,t,h)
__global__ void attention_delta_kernel(float* delta, const float* dout, const float* out, int N, int C, int H) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * H) { return; }
    int n = idx / H, h = idx % H, D = C / H;
    delta[idx] = dot_row(dout + (size_t)n * C + h * D, out + (size_t)n * C + h * D, D);
}

// dq: grid (ceil(T/TILE), B*H), thread = query row t.
//   p = exp(q·k s - lse);  ds = p (dout·v - delta);  dq = s Σ_j ds_j k_j
template <int HD>
__global__ void attention_backward_dq_kernel(float* dqkvr, const float* dout, const float* lse, const float* delta,
                                             const float* qkvr, int T, int C, int H, int window) {
    __shared__ float Ks[ATTN_TILE][HD + 1], Vs[ATTN_TILE][HD + 1];
    int b = blockIdx.y / H, h = blockIdx.y % H;
    int q0 = blockIdx.x * ATTN_TILE, t = q0 + threadIdx.x;
    const float* base = qkvr + (size_t)b * T * 3 * C + h * HD;
    float scale = rsqrtf((float)HD);
    float q[HD], dO[HD], dq[HD];
    float L = 0.0f, dl = 0.0f;
    if (t < T) {
        L = lse[((size_t)b * T + t) * H + h];
        dl = delta[((size_t)b * T + t) * H + h];
    }
    for (int i = 0; i < HD; i++) {
        q[i] = t < T ? base[(size_t)t * 3 * C + i] * scale : 0.0f;
        dO[i] = t < T ? dout[((size_t)b * T + t) * C + h * HD + i] : 0.0f;
        dq[i] = 0.0f;
    }
    int first, last;
    attn_key_tiles(q0, T, window, &first, &last);
    for (int k0 = first; k0 <= last; k0 += ATTN_TILE) {
        load_kv_tiles<HD>(Ks, Vs, base, k0, T, C);
        if (t >= T) { continue; }
        for (int jj = 0; jj < ATTN_TILE; jj++) {
            if (!attn_visible(t, k0 + jj, window)) { continue; }
            float p = expf(dot_row(q, Ks[jj], HD) - L);
            float ds = p * (dot_row(dO, Vs[jj], HD) - dl);
            for (int i = 0; i < HD; i++) { dq[i] += ds * Ks[jj][i]; }
        }
    }
    if (t < T) {
        float* d = dqkvr + ((size_t)b * T + t) * 3 * C + h * HD;
        for (int i = 0; i < HD; i++) { d[i] = dq[i] * scale; }
    }
}

// dk, dv: grid (ceil(T/TILE), B*H), thread = key row j; query tiles (q, dout, lse, delta) stream
// through shared memory. dv_j = Σ_q p dout_q;  dk_j = s Σ_q ds q_q.  The block's own K and V rows
// also sit in shared memory (registers hold only the two accumulators).
template <int HD>
__global__ void attention_backward_dkdv_kernel(float* dqkvr, const float* dout, const float* lse, const float* delta,
                                               const float* qkvr, int T, int C, int H, int window) {
    extern __shared__ float smem[];
    float (*Kown)[HD + 1] = (float (*)[HD + 1])smem;
    float (*Vown)[HD + 1] = Kown + ATTN_TILE;
    float (*Qs)[HD + 1] = Vown + ATTN_TILE;
    float (*dOs)[HD + 1] = Qs + ATTN_TILE;
    float* Ls = (float*)(dOs + ATTN_TILE);
    float* Ds = Ls + ATTN_TILE;
    int b = blockIdx.y / H, h = blockIdx.y % H;
    int k0 = blockIdx.x * ATTN_TILE, j = k0 + threadIdx.x;
    const float* base = qkvr + (size_t)b * T * 3 * C + h * HD;
    float scale = rsqrtf((float)HD);
    load_tile<HD>(Kown, base + C, k0, T, 3 * C);
    load_tile<HD>(Vown, base + 2 * C, k0, T, 3 * C);
    float dk[HD], dv[HD];
    for (int i = 0; i < HD; i++) { dk[i] = 0.0f; dv[i] = 0.0f; }
    int first, last;
    attn_query_tiles(k0, T, window, &first, &last);
    for (int q0 = first; q0 <= last; q0 += ATTN_TILE) {
        __syncthreads();
        load_tile<HD>(Qs, base, q0, T, 3 * C);
        load_tile<HD>(dOs, dout + (size_t)b * T * C + h * HD, q0, T, C);
        int r = q0 + threadIdx.x;
        Ls[threadIdx.x] = r < T ? lse[((size_t)b * T + r) * H + h] : 0.0f;
        Ds[threadIdx.x] = r < T ? delta[((size_t)b * T + r) * H + h] : 0.0f;
        __syncthreads();
        if (j >= T) { continue; }
        for (int ii = 0; ii < ATTN_TILE; ii++) {
            int q = q0 + ii;
            if (q >= T || !attn_visible(q, j, window)) { continue; }
            float p = expf(dot_row(Qs[ii], Kown[threadIdx.x], HD) * scale - Ls[ii]);
            float ds = p * (dot_row(dOs[ii], Vown[threadIdx.x], HD) - Ds[ii]);
            for (int i = 0; i < HD; i++) {
                dv[i] += p * dOs[ii][i];
                dk[i] += ds * Qs[ii][i];
            }
        }
    }
    if (j < T) {
        float* d = dqkvr + ((size_t)b * T + j) * 3 * C + h * HD;
        for (int i = 0; i < HD; i++) {
            d[C + i] = dk[i] * scale;
            d[2 * C + i] = dv[i];
        }
    }
}

// ----------------------------------------------------------------------------
// kernel launchers

static size_t attention_dkdv_smem(int D) { return (4 * (size_t)ATTN_TILE * (D + 1) + 2 * ATTN_TILE) * sizeof(float); }

// Head dims with a compiled kernel; the caller's config is checked against this list.
static int attention_supports_head_dim(int D) { return D == 32 || D == 64 || D == 128; }

template <int HD>
static void attention_forward_hd(float* out, float* lse, const float* qkvr, int B, int T, int C, int H, int window,
                                 cudaStream_t stream) {
    dim3 grid((T + ATTN_TILE - 1) / ATTN_TILE, B * H);
    attention_forward_kernel<HD><<<grid, ATTN_TILE, 0, stream>>>(out, lse, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
}

template <int HD>
static void attention_backward_hd(float* dqkvr, const float* dout, const float* lse, const float* delta, const float* qkvr,
                                  int B, int T, int C, int H, int window, cudaStream_t stream) {
    dim3 grid((T + ATTN_TILE - 1) / ATTN_TILE, B * H);
    attention_backward_dq_kernel<HD><<<grid, ATTN_TILE, 0, stream>>>(dqkvr, dout, lse, delta, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
    size_t smem = attention_dkdv_smem(HD);
    cudaCheck(cudaFuncSetAttribute(attention_backward_dkdv_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    attention_backward_dkdv_kernel<HD><<<grid, ATTN_TILE, smem, stream>>>(dqkvr, dout, lse, delta, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
}

// out (B,T,C), lse (B,T,H) from qkvr (B,T,3C); window <= 0: full causal
static void attention_forward_gpu(float* out, float* lse, const float* qkvr, int B, int T, int C, int H, int window,
                                  cudaStream_t stream) {
    switch (C / H) {
        case 32: attention_forward_hd<32>(out, lse, qkvr, B, T, C, H, window, stream); break;
        case 64: attention_forward_hd<64>(out, lse, qkvr, B, T, C, H, window, stream); break;
        case 128: attention_forward_hd<128>(out, lse, qkvr, B, T, C, H, window, stream); break;
        default: die("attention: head dim %d has no kernel (32, 64 or 128)", C / H);
    }
}

// dqkvr (B,T,3C) = gradient of qkvr, given dout (B,T,C) and the forward's out and lse.
// delta (B,T,H) is scratch.
static void attention_backward_gpu(float* dqkvr, float* delta, const float* dout, const float* out, const float* lse,
                                   const float* qkvr, int B, int T, int C, int H, int window, cudaStream_t stream) {
    int rows = B * T * H;
    attention_delta_kernel<<<(rows + 255) / 256, 256, 0, stream>>>(delta, dout, out, B * T, C, H);
    cudaCheck(cudaGetLastError());
    switch (C / H) {
        case 32: attention_backward_hd<32>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, stream); break;
        case 64: attention_backward_hd<64>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, stream); break;
        case 128: attention_backward_hd<128>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, stream); break;
        default: die("attention: head dim %d has no kernel (32, 64 or 128)", C / H);
    }
}

#endif // FULL_ATTN_CUH
