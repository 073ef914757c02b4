/*
full_attn.cuh — causal softmax attention, forward and backward, flash-style: keys are visited in
tiles with an online softmax, nothing of size T×T is stored, and the backward recomputes the
probabilities from the saved log-sum-exp.

defines: key/query ranges (attn_key_range / attn_query_range), attention_delta_kernel (attention_delta_gpu),
         v1 fp32 kernels (attention_forward_kernel, attention_backward_dq/dkdv_kernel),
         v2 bf16 tensor-core kernels (flash_forward_kernel, flash_backward_dq/dkdv_kernel),
         v3 Hopper kernels (flash3_forward_kernel, flash3_backward_dq/dkdv_kernel),
         launchers attention_forward_gpu / attention_backward_gpu (v1 in the FP32 build; in BF16 v3
         on a Hopper GPU at D 64/128 unless W <= ATTN_V3_MIN_WINDOW, else v2)

One set of kernels serves full attention (window <= 0) and sliding-window attention (window W:
query i sees keys i-W < j <= i). The window only narrows the range of tiles a block visits, so the
SWA work grows with T·W (attention_swa.cuh has the SWA entry points).

Layouts, the same as the CPU reference's:
    qkvr  (B, T, 3C)  q | k | v, head h at columns h*D..h*D+D-1 of each third (q, k already rotated)
    out   (B, T, C)
    lse   (B, T, H)   log-sum-exp of each softmax row, fp32 (saved for the backward)
    delta (B, T, H)   scratch of the backward: dout · out per row, fp32
Gradient rule: the backward writes (=) dqkvr; every element of it is written exactly once (dq by
one kernel, dk and dv by another), so no atomics and a deterministic result.

v1 (fp32, CUDA cores; the build diffed against the CPU reference): one thread owns one query row
(forward, dq) or one key row (dk, dv); a tile of ATTN_TILE rows of the other side sits in shared
memory for the block to share.
v2 (bf16 inputs, fp32 accumulation, mma.sync m16n8k16 tensor-core instructions): a block of 4 warps
owns 64 rows, each warp 16 of them; the 64-row tiles of the other side stream through shared
memory, double-buffered (cp.async fetches the next tiles while the block works on these); scores,
probabilities and accumulators stay in registers (FlashAttention-2's scheme).
v3 (bf16, sm_90a: FlashAttention-3's scheme, our own code): 128-row blocks of three warpgroups, one
copying tiles with TMA into a four-stage mbarrier ring, two computing with wgmma from shared memory
and from registers, pipelined and taking turns at the tensor cores (the comment above the v3
kernels has the details).
*/
#ifndef FULL_ATTN_CUH
#define FULL_ATTN_CUH

#include <cuda_bf16.h>
#include "cuda_common.cuh"  // defines: floatX, cudaCheck, cp_async, bf16, mma_16816, pack_bf16
#include "hopper.cuh"       // defines: tma_map_3d, mbar_*, tma_load_3d, smem_desc_*, wgmma_*, reg_alloc

#define ATTN_TILE 32  // v1: query rows per block = key rows per tile = threads per block

// ----------------------------------------------------------------------------
// Ranges. Queries q0..q0+nq-1 need keys lo..hi = max(0, q0-W+1) .. q0+nq-1 (every j <= q for full
// attention); keys k0..k0+nk-1 are needed by queries k0 .. k0+nk-1+W-1 (every q >= k for full).
// Both clipped to T-1; a kernel rounds lo down to its tile.

__host__ __device__ static inline void attn_key_range(int q0, int nq, int T, int window, int* lo, int* hi) {
    *lo = (window > 0 && q0 - window + 1 > 0) ? q0 - window + 1 : 0;
    *hi = q0 + nq - 1 < T - 1 ? q0 + nq - 1 : T - 1;
}
__host__ __device__ static inline void attn_query_range(int k0, int nk, int T, int window, int* lo, int* hi) {
    int h = window > 0 ? k0 + nk - 1 + window - 1 : T - 1;
    *lo = k0;
    *hi = h < T - 1 ? h : T - 1;
}
// may query q see key j?
__host__ __device__ static inline int attn_visible(int q, int j, int window) { return j <= q && (window <= 0 || q - j < window); }

// delta[b,t,h] = dout · out over the head's D columns; one thread per (b,t,h), 16-byte loads
__global__ void attention_delta_kernel(float* delta, const floatX* dout, const floatX* out, int N, int C, int H) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * H) { return; }
    int n = idx / H, h = idx % H, D = C / H;
    const floatX* a = dout + (size_t)n * C + h * D;
    const floatX* b = out + (size_t)n * C + h * D;
    float s = 0.0f;
    for (int i = 0; i < D; i += X128) {
        x128 va = load128(a + i), vb = load128(b + i);
        for (int k = 0; k < X128; k++) { s += (float)va.v[k] * (float)vb.v[k]; }
    }
    delta[idx] = s;
}

// ----------------------------------------------------------------------------
// v1: fp32 on CUDA cores

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
    int lo, hi;
    attn_key_range(q0, ATTN_TILE, T, window, &lo, &hi);
    for (int k0 = lo / ATTN_TILE * ATTN_TILE; k0 <= hi; k0 += ATTN_TILE) {
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
    int lo, hi;
    attn_key_range(q0, ATTN_TILE, T, window, &lo, &hi);
    for (int k0 = lo / ATTN_TILE * ATTN_TILE; k0 <= hi; k0 += ATTN_TILE) {
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
    int lo, hi;
    attn_query_range(k0, ATTN_TILE, T, window, &lo, &hi);
    for (int q0 = lo; q0 <= hi; q0 += ATTN_TILE) {
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
// v2: bf16 tensor cores (mma.sync m16n8k16, fp32 accumulate; fragments: cuda_common.cuh).
// The C tiles of a 16x64 score block,
// repacked two n8 tiles at a time, are the A fragments of the next product (P·V): the
// probabilities never leave registers.

#define FA_ROWS 64      // rows a block owns (queries; keys in dk/dv) = rows of each streamed tile
#define FA_THREADS 128  // 4 warps x 16 rows
#define FA_PAD 8        // bf16 of padding per shared row (16 B): 8 rows at one column hit 8 different bank quads
#define FA_TILE(HD) (FA_ROWS * ((HD) + FA_PAD))  // bf16 of one shared tile (64, HD+PAD)
#define LOG2E_F 1.4426950408889634f

// A fragment: rows m0..m0+15, cols k0..k0+15 of a row-major shared tile (leading dim ld)
__device__ static inline void lds_a(uint32_t* a, const bf16* tile, int ld, int m0, int k0) {
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    const bf16* p = tile + (m0 + g) * ld + k0 + 2 * t;
    a[0] = lds32(p);
    a[1] = lds32(p + 8 * ld);
    a[2] = lds32(p + 8);
    a[3] = lds32(p + 8 * ld + 8);
}
// B fragment (k x n) read as the transpose of a row-major [n][k] tile: rows n0..n0+7, cols k0..k0+15
__device__ static inline void lds_bt(uint32_t* b, const bf16* tile, int ld, int n0, int k0) {
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    const bf16* p = tile + (n0 + g) * ld + k0 + 2 * t;
    b[0] = lds32(p);
    b[1] = lds32(p + 8);
}

// Starts copying rows r0..r0+63 of one head's HD columns (row stride `stride`) into tile[64][HD+FA_PAD]
// with 16-byte cp.async; rows at or past T are zeros.
template <int HD>
__device__ static void fa_fetch_tile(bf16* tile, const bf16* base, int r0, int T, size_t stride) {
    const int per_row = HD / 8;
    for (int idx = threadIdx.x; idx < FA_ROWS * per_row; idx += FA_THREADS) {
        int r = idx / per_row, c = (idx % per_row) * 8;
        cp_async(tile + r * (HD + FA_PAD) + c, base + (size_t)min(r0 + r, T - 1) * stride + c, 16, r0 + r < T ? 16 : 0);
    }
}

// The streamed tiles are double-buffered: while a block works on stage s, the copies of the next
// tiles into stage s^1 are in flight. Each loop iteration: barrier (every warp is done with stage
// s^1), issue the next fetch as one group, then fa_wait_stage (all but that group landed, barrier).
__device__ static inline void fa_wait_stage(int prefetched) {
    if (prefetched) { cp_async_wait_but_last(); } else { cp_async_wait_all(); }
    __syncthreads();
}
// K and V rows k0.. of one head (base = its q columns in qkvr) into Ks and Ks + FA_TILE: one group
template <int HD>
__device__ static void fa_fetch_kv(bf16* Ks, const bf16* base, int k0, int T, int C) {
    fa_fetch_tile<HD>(Ks, base + C, k0, T, 3 * C);
    fa_fetch_tile<HD>(Ks + FA_TILE(HD), base + 2 * C, k0, T, 3 * C);
    cp_async_commit();
}
// The top of iteration k0 of a K, V stream (stages at KV, stage st in use, hi the last key): prefetch
// the next tiles if any, wait for these. Returns stage st's K tile (its V tile follows).
template <int HD>
__device__ static bf16* fa_next_kv(bf16* KV, const bf16* base, int k0, int hi, int st, int T, int C) {
    __syncthreads();
    int more = k0 + FA_ROWS <= hi;
    if (more) { fa_fetch_kv<HD>(KV + 2 * (st ^ 1) * FA_TILE(HD), base, k0 + FA_ROWS, T, C); }
    fa_wait_stage(more);
    return KV + 2 * st * FA_TILE(HD);
}

// s (16 x 64, 8 C tiles) = rows m0..m0+15 of tile a (16 x HD) · (tile b (64 x HD))ᵀ
template <int HD>
__device__ static void fa_abt(float (*s)[4], const bf16* a_tile, int m0, const bf16* b_tile) {
    const int ld = HD + FA_PAD;
#pragma unroll
    for (int n = 0; n < 8; n++) { s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f; }
#pragma unroll
    for (int k = 0; k < HD; k += 16) {
        uint32_t a[4];
        lds_a(a, a_tile, ld, m0, k);
#pragma unroll
        for (int n = 0; n < 8; n++) {
            uint32_t b[2];
            lds_bt(b, b_tile, ld, n * 8, k);
            mma_16816(s[n], a, b[0], b[1]);
        }
    }
}

// The A fragment of columns 16k..16k+15 of a score tile in C-tile layout (two n8 tiles), as bf16
// pairs: the same registers serve mma.sync (per warp) and wgmma from registers (per warpgroup).
__device__ static inline void fa_pack_a(uint32_t* a, float (*p)[4], int k) {
    a[0] = pack_bf16(p[2 * k][0], p[2 * k][1]);
    a[1] = pack_bf16(p[2 * k][2], p[2 * k][3]);
    a[2] = pack_bf16(p[2 * k + 1][0], p[2 * k + 1][1]);
    a[3] = pack_bf16(p[2 * k + 1][2], p[2 * k + 1][3]);
}

// acc (16 x HD, HD/8 C tiles) += p (16 x 64, C tiles, rounded to bf16) · tile v (64 x HD)
template <int HD>
__device__ static void fa_pv(float (*acc)[4], float (*p)[4], const bf16* v_tile) {
    const int ld = HD + FA_PAD;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        uint32_t a[4];
        fa_pack_a(a, p, k);
#pragma unroll
        for (int n = 0; n < HD / 8; n += 2) {
            uint32_t b[4];
            ldsm_b2(b, v_tile, ld, k * 16, n * 8);
            mma_16816(acc[n], a, b[0], b[1]);
            mma_16816(acc[n + 1], a, b[2], b[3]);
        }
    }
}

// A warp's (16 x HD) fp32 accumulator (HD/8 C tiles) set to zero
template <int HD>
__device__ static inline void fa_zero(float (*acc)[4]) {
#pragma unroll
    for (int n = 0; n < HD / 8; n++) { acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f; }
}

// This thread's part of one row of a warp's accumulator (half i: row g for 0, g+8 for 1), times
// scale, as bf16 to the HD columns at dst
template <int HD>
__device__ static inline void fa_store_row(bf16* dst, float (*acc)[4], int i, float scale) {
    int t = threadIdx.x % 4;
#pragma unroll
    for (int n = 0; n < HD / 8; n++) { *(uint32_t*)(dst + n * 8 + 2 * t) = pack_bf16(acc[n][2 * i] * scale, acc[n][2 * i + 1] * scale); }
}

// exp2 as the one special-function instruction (exp2f adds range fix-ups around it); -inf -> 0
__device__ static inline float fa_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Query-major score tile of NC key columns: -inf where row qr0+g(+8) may not see key k0+col (or
// the key is past T). `edge` = 0 for tiles wholly inside the band: nothing to do.
template <int NC>
__device__ static inline void fa_mask_rows(float (*s)[4], int qr0, int k0, int T, int window, int edge) {
    if (!edge) { return; }
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int n = 0; n < NC / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int q = qr0 + g + (e >> 1) * 8, j = k0 + n * 8 + 2 * t + (e & 1);
            if (j >= T || !attn_visible(q, j, window)) { s[n][e] = -INFINITY; }
        }
    }
}
// Does the tile of queries q0..q0+nq-1 and keys k0..k0+nk-1 have a masked entry (the diagonal,
// the band's edge, or past T)?
__device__ static inline int fa_edge_tile(int q0, int nq, int k0, int nk, int T, int window) {
    return k0 + nk - 1 > q0 || k0 + nk > T || q0 + nq > T || (window > 0 && q0 + nq - 1 - k0 >= window);
}

// One key tile of the online softmax, for this thread's rows g (i = 0) and g+8 (i = 1): the raw
// scores s (NC columns) become the probabilities exp2(s·sl2 - max) against the new running max mx
// (log2 units; sl2 = log2(e)/sqrt(D)), the row sums l are rescaled to it, and corr[i] is the factor
// the output accumulator must be rescaled by (fa_rescale; kept apart so that v3 can do it once the
// previous P·V has landed). 4 lanes share a row. One FFMA and one exp2 per score.
template <int NC>
__device__ static inline void fa_softmax_rows(float (*s)[4], float* mx, float* l, float* corr, float sl2) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float mraw = -INFINITY;
#pragma unroll
        for (int n = 0; n < NC / 8; n++) { mraw = fmaxf(mraw, fmaxf(s[n][2 * i], s[n][2 * i + 1])); }
        mraw = fmaxf(mraw, __shfl_xor_sync(0xffffffff, mraw, 1));
        mraw = fmaxf(mraw, __shfl_xor_sync(0xffffffff, mraw, 2));
        float mnew = fmaxf(mx[i], mraw * sl2);
        float ref = mnew == -INFINITY ? 0.0f : mnew;  // a row with nothing visible yet stays at 0
        corr[i] = fa_exp2(mx[i] - ref);
        mx[i] = mnew;
        l[i] *= corr[i];
#pragma unroll
        for (int n = 0; n < NC / 8; n++) {
            s[n][2 * i] = fa_exp2(fmaf(s[n][2 * i], sl2, -ref));
            s[n][2 * i + 1] = fa_exp2(fmaf(s[n][2 * i + 1], sl2, -ref));
            l[i] += s[n][2 * i] + s[n][2 * i + 1];
        }
    }
}
template <int HD>
__device__ static inline void fa_rescale(float (*o)[4], const float* corr) {
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
        o[n][0] *= corr[0];
        o[n][1] *= corr[0];
        o[n][2] *= corr[1];
        o[n][3] *= corr[1];
    }
}

// The forward's last step for this thread's rows qr0+g and qr0+g+8: out = o / l (bf16), and the
// row's log-sum-exp (natural log) from the running max and sum (log2 units).
template <int HD>
__device__ static inline void fa_store_out(bf16* out, float* lse, float (*o)[4], const float* mx, float* l, int b, int qr0,
                                          int T, int C, int H, int h) {
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffff, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffff, l[i], 2);
        int row = qr0 + g + 8 * i;
        if (row >= T) { continue; }
        fa_store_row<HD>(out + ((size_t)b * T + row) * C + h * HD, o, i, 1.0f / l[i]);
        if (t == 0) { lse[((size_t)b * T + row) * H + h] = (mx[i] + log2f(l[i])) / LOG2E_F; }
    }
}

// dq's probabilities: the raw masked scores p become ds = exp2(p·sl2 - L2) (dp - Dl), rows g, g+8
template <int NC>
__device__ static inline void fa_dq_ds(float (*p)[4], float (*dp)[4], const float* L2, const float* Dl, float sl2) {
#pragma unroll
    for (int n = 0; n < NC / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) { p[n][e] = fa_exp2(fmaf(p[n][e], sl2, -L2[e >> 1])) * (dp[n][e] - Dl[e >> 1]); }
    }
}

// dk/dv's transposed tile (rows = keys jr0+g(+8), NC columns = queries q0..): p = exp(s·scale - lse)
// (0 where masked) and dp becomes ds = p (dp - delta). Ls, Ds: the tile's lse and delta, in shared.
template <int NC>
__device__ static inline void fa_dkdv_probs(float (*p)[4], float (*dp)[4], int jr0, int q0, const float* Ls, const float* Ds,
                                            int T, int window, float sl2, int edge) {
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int n = 0; n < NC / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int j = jr0 + g + (e >> 1) * 8, qc = n * 8 + 2 * t + (e & 1), q = q0 + qc;
            int masked = edge && (q >= T || !attn_visible(q, j, window));
            p[n][e] = masked ? 0.0f : fa_exp2(fmaf(p[n][e], sl2, -Ls[qc] * LOG2E_F));
            dp[n][e] = p[n][e] * (dp[n][e] - Ds[qc]);
        }
    }
}

// Where a thread of a v2 block works: batch b and head h (blockIdx.y), its warp's first row m0 of
// the block's 64, and its fragment coordinates g = lane/4, t = lane%4.
typedef struct { int b, h, m0, g, t; } FaPos;
__device__ static inline FaPos fa_pos(int H) {
    FaPos p;
    p.b = blockIdx.y / H;
    p.h = blockIdx.y % H;
    p.m0 = threadIdx.x / 32 * 16;
    p.g = (threadIdx.x % 32) / 4;
    p.t = threadIdx.x % 4;
    return p;
}

// grid (ceil(T/64), B*H), block 128: 64 query rows, key tiles streamed with an online softmax
template <int HD>
__global__ void __launch_bounds__(FA_THREADS) flash_forward_kernel(bf16* out, float* lse, const bf16* qkvr, int T, int C,
                                                                   int H, int window) {
    extern __shared__ __align__(16) unsigned char fa_smem[];
    bf16* Qs = (bf16*)fa_smem;   // (64, HD+PAD)
    bf16* KV = Qs + FA_TILE(HD);  // two stages of K, V tiles: stage s at KV + 2 s FA_TILE
    FaPos p = fa_pos(H);
    int b = p.b, h = p.h, m0 = p.m0;
    int q0 = (gridDim.x - 1 - blockIdx.x) * FA_ROWS;  // the longest rows (most key tiles) start first
    const bf16* base = qkvr + (size_t)b * T * 3 * C + h * HD;
    float sl2 = rsqrtf((float)HD) * LOG2E_F;  // scores in log2 units: exp2 is one instruction
    fa_fetch_tile<HD>(Qs, base, q0, T, 3 * C);  // lands with the first K, V group
    float o[HD / 8][4];
    fa_zero<HD>(o);
    float mx[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g and g+8: running max, this thread's sum
    int lo, hi;
    attn_key_range(q0, FA_ROWS, T, window, &lo, &hi);
    fa_fetch_kv<HD>(KV, base, lo / FA_ROWS * FA_ROWS, T, C);
    for (int k0 = lo / FA_ROWS * FA_ROWS, st = 0; k0 <= hi; k0 += FA_ROWS, st ^= 1) {
        bf16* Ks = fa_next_kv<HD>(KV, base, k0, hi, st, T, C);
        bf16* Vs = Ks + FA_TILE(HD);
        float s[8][4];
        fa_abt<HD>(s, Qs, m0, Ks);
        fa_mask_rows<FA_ROWS>(s, q0 + m0, k0, T, window, fa_edge_tile(q0, FA_ROWS, k0, FA_ROWS, T, window));
        float corr[2];
        fa_softmax_rows<FA_ROWS>(s, mx, l, corr, sl2);
        fa_rescale<HD>(o, corr);
        fa_pv<HD>(o, s, Vs);
    }
    fa_store_out<HD>(out, lse, o, mx, l, b, q0 + m0, T, C, H, h);
}

// dq: grid (ceil(T/64), B*H), block 128 = 64 query rows; key tiles streamed.
//   p = exp(q·k s - lse);  ds = p (dout·v - delta);  dq = s Σ_j ds_j k_j
template <int HD>
__global__ void __launch_bounds__(FA_THREADS) flash_backward_dq_kernel(bf16* dqkvr, const bf16* dout, const float* lse,
                                                                       const float* delta, const bf16* qkvr, int T, int C,
                                                                       int H, int window) {
    extern __shared__ __align__(16) unsigned char fa_smem[];
    bf16* Qs = (bf16*)fa_smem;
    bf16* dOs = Qs + FA_TILE(HD);
    bf16* KV = dOs + FA_TILE(HD);  // two stages of K, V tiles
    FaPos p = fa_pos(H);
    int b = p.b, h = p.h, m0 = p.m0, g = p.g;
    int q0 = (gridDim.x - 1 - blockIdx.x) * FA_ROWS;
    const bf16* base = qkvr + (size_t)b * T * 3 * C + h * HD;
    float sl2 = rsqrtf((float)HD) * LOG2E_F;
    fa_fetch_tile<HD>(Qs, base, q0, T, 3 * C);  // Q, dO land with the first K, V group
    fa_fetch_tile<HD>(dOs, dout + (size_t)b * T * C + h * HD, q0, T, C);
    float L2[2], Dl[2];  // rows g, g+8: lse in log2 units, delta
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int row = q0 + m0 + g + 8 * i;
        L2[i] = row < T ? lse[((size_t)b * T + row) * H + h] * LOG2E_F : 0.0f;
        Dl[i] = row < T ? delta[((size_t)b * T + row) * H + h] : 0.0f;
    }
    float dq[HD / 8][4];
    fa_zero<HD>(dq);
    int lo, hi;
    attn_key_range(q0, FA_ROWS, T, window, &lo, &hi);
    fa_fetch_kv<HD>(KV, base, lo / FA_ROWS * FA_ROWS, T, C);
    for (int k0 = lo / FA_ROWS * FA_ROWS, st = 0; k0 <= hi; k0 += FA_ROWS, st ^= 1) {
        bf16* Ks = fa_next_kv<HD>(KV, base, k0, hi, st, T, C);
        bf16* Vs = Ks + FA_TILE(HD);
        float p[8][4], dp[8][4];
        fa_abt<HD>(p, Qs, m0, Ks);
        fa_mask_rows<FA_ROWS>(p, q0 + m0, k0, T, window, fa_edge_tile(q0, FA_ROWS, k0, FA_ROWS, T, window));
        fa_abt<HD>(dp, dOs, m0, Vs);
        fa_dq_ds<FA_ROWS>(p, dp, L2, Dl, sl2);
        fa_pv<HD>(dq, p, Ks);
    }
    float scale = rsqrtf((float)HD);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int row = q0 + m0 + g + 8 * i;
        if (row >= T) { continue; }
        fa_store_row<HD>(dqkvr + ((size_t)b * T + row) * 3 * C + h * HD, dq, i, scale);
    }
}

// One stage of the dk/dv kernel's query stream: Q and dO tiles (64, HD+PAD) bf16, then lse and delta
// of the 64 queries (fp32); FA_QSTAGE bytes, a multiple of 16.
#define FA_QSTAGE(HD) (2 * FA_TILE(HD) * (int)sizeof(bf16) + 2 * FA_ROWS * (int)sizeof(float))
template <int HD>
__device__ static void fa_fetch_query_stage(unsigned char* stage, const bf16* base, const bf16* dbase, const float* lse,
                                            const float* delta, int q0, int T, int C, int H, int b, int h) {
    bf16* Qs = (bf16*)stage;
    float* LD = (float*)(Qs + 2 * FA_TILE(HD));
    fa_fetch_tile<HD>(Qs, base, q0, T, 3 * C);
    fa_fetch_tile<HD>(Qs + FA_TILE(HD), dbase, q0, T, C);
    if (threadIdx.x < FA_ROWS) {
        int q = q0 + threadIdx.x;
        size_t at = ((size_t)b * T + min(q, T - 1)) * H + h;
        cp_async(LD + threadIdx.x, lse + at, 4, q < T ? 4 : 0);
        cp_async(LD + FA_ROWS + threadIdx.x, delta + at, 4, q < T ? 4 : 0);
    }
    cp_async_commit();
}

// dk, dv: grid (ceil(T/64), B*H), block 128 = 64 key rows; query tiles (q, dout, lse, delta)
// streamed. Transposed scores (keys x queries): dv_j = Σ_q p dout_q;  dk_j = s Σ_q ds q_q.
template <int HD>
__global__ void __launch_bounds__(FA_THREADS) flash_backward_dkdv_kernel(bf16* dqkvr, const bf16* dout, const float* lse,
                                                                         const float* delta, const bf16* qkvr, int T, int C,
                                                                         int H, int window) {
    extern __shared__ __align__(16) unsigned char fa_smem[];
    bf16* Ks = (bf16*)fa_smem;
    bf16* Vs = Ks + FA_TILE(HD);
    unsigned char* stages = (unsigned char*)(Vs + FA_TILE(HD));  // two query stages of FA_QSTAGE bytes
    FaPos p = fa_pos(H);
    int b = p.b, h = p.h, m0 = p.m0, g = p.g;
    int k0 = blockIdx.x * FA_ROWS;  // causal: the first key tiles have the most query tiles
    const bf16* base = qkvr + (size_t)b * T * 3 * C + h * HD;
    float sl2 = rsqrtf((float)HD) * LOG2E_F;
    const bf16* dbase = dout + (size_t)b * T * C + h * HD;
    fa_fetch_tile<HD>(Ks, base + C, k0, T, 3 * C);  // K, V land with the first query group
    fa_fetch_tile<HD>(Vs, base + 2 * C, k0, T, 3 * C);
    float dk[HD / 8][4], dv[HD / 8][4];
    fa_zero<HD>(dk);
    fa_zero<HD>(dv);
    int lo, hi;
    attn_query_range(k0, FA_ROWS, T, window, &lo, &hi);
    fa_fetch_query_stage<HD>(stages, base, dbase, lse, delta, lo, T, C, H, b, h);
    for (int q0 = lo, st = 0; q0 <= hi; q0 += FA_ROWS, st ^= 1) {
        __syncthreads();
        int more = q0 + FA_ROWS <= hi;
        if (more) { fa_fetch_query_stage<HD>(stages + (st ^ 1) * FA_QSTAGE(HD), base, dbase, lse, delta, q0 + FA_ROWS, T, C, H, b, h); }
        fa_wait_stage(more);
        bf16 *Qs = (bf16*)(stages + st * FA_QSTAGE(HD)), *dOs = Qs + FA_TILE(HD);
        float *Ls = (float*)(dOs + FA_TILE(HD)), *Ds = Ls + FA_ROWS;  // (64) lse (natural log), delta
        float p[8][4], dp[8][4];
        fa_abt<HD>(p, Ks, m0, Qs);   // (keys, queries)
        fa_abt<HD>(dp, Vs, m0, dOs);
        fa_dkdv_probs<FA_ROWS>(p, dp, k0 + m0, q0, Ls, Ds, T, window, sl2, fa_edge_tile(q0, FA_ROWS, k0, FA_ROWS, T, window));
        fa_pv<HD>(dv, p, dOs);
        fa_pv<HD>(dk, dp, Qs);
    }
    float scale = rsqrtf((float)HD);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int row = k0 + m0 + g + 8 * i;
        if (row >= T) { continue; }
        bf16* d = dqkvr + ((size_t)b * T + row) * 3 * C + h * HD;
        fa_store_row<HD>(d + C, dk, i, scale);
        fa_store_row<HD>(d + 2 * C, dv, i, 1.0f);
    }
}

// ----------------------------------------------------------------------------
// v3: Hopper (sm_90a) — wgmma fed by TMA, warp-specialised (FlashAttention-3's scheme)
//
// A block is 3 warpgroups. Warpgroup 0 copies: one thread issues the TMA loads of every tile the
// block needs into a ring of F3_STAGES shared-memory stages (an mbarrier per stage says "full",
// another "empty"), and the warpgroup gives most of its registers to the other two. Warpgroups 1
// and 2 compute: each owns 64 of the block's 128 rows and runs wgmma on the staged tiles, scores
// and accumulators in registers; the probabilities go from the score accumulators straight into
// the A operand of the next product (wgmma from registers). While they compute on stage s, the
// copies into the other stages are in flight. A block visits only the tiles of its band, so SWA
// work stays ∝ T·W; only tiles that cross the diagonal, the band's edge or T are masked. No
// atomics: every output element is written once, by one thread.
// The grid is (B·H, row blocks) and blocks start in the order of their linear index, so in causal
// attention every head's longest blocks start first and the short ones fill the tail.
//   forward  block = 128 queries; K, V tiles of BN keys streamed (BN 128; 64 for W <= 256 or D 128)
//   dq       block = 128 queries; K, V tiles of 64 keys streamed; dq = Σ ds·K
//   dk, dv   block = 128 keys; Q, dO tiles of 64 queries streamed with their lse and delta
// Tiles sit in shared memory as TMA writes them (hopper.cuh: 64-column slabs, 128-byte swizzle);
// the descriptors read them K-major for Q·Kᵀ-type products and MN-major for P·V-type ones.

#define F3_ROWS 128    // rows a block owns: 2 computing warpgroups x 64
#define F3_THREADS 384 // warpgroup 0 copies, 1 and 2 compute
#define F3_STAGES 4    // streamed tiles in flight: a tile is loaded about three tiles ahead of its use
#define F3_QTILE 64    // query rows per streamed tile of the dk/dv kernel
#define F3_KTILE_DQ 64 // key rows per streamed tile of the dq kernel

// bytes of a (rows, HD) bf16 tile; a multiple of 1024, so every tile stays on the swizzle's boundary
#define F3_TILE_BYTES(rows, HD) ((rows) * (HD) * 2)

// a stage of the dk/dv kernel: Q and dO tiles, then lse and delta (2 x 64 floats, padded to 1024)
#define F3_DKDV_STAGE(HD) (2 * F3_TILE_BYTES(F3_QTILE, HD) + 1024)
// dynamic shared memory of a v3 kernel: its tiles, its barriers, and the slack to align the start
#define F3_SMEM(tile_bytes) ((size_t)(tile_bytes) + 64 + 1024)

// The block's dynamic shared memory rounded up to 1024 bytes (the launch adds 1024 of slack)
__device__ static inline unsigned char* f3_smem_base(unsigned char* raw) {
    return raw + ((1024 - (smem_u32(raw) & 1023)) & 1023);
}

// Rows row0..row0+rows-1 of the HD columns at `col` of a (B, T, ·) tensor into dst: HD/64 boxes
template <int HD>
__device__ static inline void f3_load_tile(unsigned char* dst, const CUtensorMap* map, int col, int row0, int rows, int b,
                                           uint64_t* bar) {
#pragma unroll
    for (int s = 0; s < HD / 64; s++) { tma_load_3d(dst + s * rows * 128, map, col + 64 * s, row0, b, bar); }
}

// Where a computing thread works: its warpgroup's index (0 or 1), its warp's first row of the
// warpgroup's 64, and the byte offset of the warpgroup's 64 rows inside a 128-row tile. The warp
// index goes through a shuffle so the compiler knows it is the same on every lane: branches and
// loop bounds that depend on it are then uniform, and wgmma inside them is not serialised.
typedef struct { int wg, m0, half; } F3Pos;
__device__ static inline F3Pos f3_pos(void) {
    int warp = __shfl_sync(0xffffffff, threadIdx.x / 32, 0);
    F3Pos p;
    p.wg = warp / 4 - 1;
    p.m0 = warp % 4 * 16;
    p.half = p.wg * 64 * 128;
    return p;
}

// s (64 × N) = A · Bᵀ over HD: A rows at a (a tile of a_rows rows), B rows at bt (b_rows rows), both
// K-major; issued, not waited for
template <int N, int HD>
__device__ static inline void f3_abt(float (*s)[4], uint32_t a, int a_rows, uint32_t bt, int b_rows) {
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) { wgmma_ss<N>(s, smem_desc_k(a, a_rows, kk), smem_desc_k(bt, b_rows, kk), kk > 0); }
}
// p (64 × K, accumulator layout) as the bf16 A operands of its K/16 slices; packed before a batch
// of products is issued, so no register is written inside the batch's asynchronous window
template <int K>
__device__ static inline void f3_pack(uint32_t (*a)[4], float (*p)[4]) {
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++) { fa_pack_a(a[kk], p, kk); }
}
// acc (64 × HD) += P (64 × K, packed by f3_pack) · V (K rows at v, MN-major); issued, not waited for
template <int K, int HD>
__device__ static inline void f3_pv(float (*acc)[4], uint32_t (*a)[4], uint32_t v) {
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++) { wgmma_rs<HD>(acc, a[kk], smem_desc_mn(v, K, kk), 1); }
}
// The barriers of a v3 block at `bars`: [0] its fixed tiles (one arrival), then F3_STAGES "full"
// (full_count arrivals) and F3_STAGES "empty" (the 256 computing threads). Thread 0 sets them up,
// then the block syncs: the only block-wide barrier of a v3 kernel.
__device__ static inline void f3_barriers_init(uint64_t* bars, int full_count) {
    if (threadIdx.x == 0) {
        mbar_init(bars, 1);
        for (int s = 0; s < F3_STAGES; s++) {
            mbar_init(bars + 1 + s, full_count);
            mbar_init(bars + 1 + F3_STAGES + s, 256);
        }
    }
    __syncthreads();
}

// The copying thread before it loads streamed tile i: its stage, once free (tile i - STAGES,
// which used it last, released by all 256 computing threads)
__device__ static inline int f3_acquire(uint64_t* empty, int i) {
    int st = i % F3_STAGES;
    if (i >= F3_STAGES) { mbar_wait(&empty[st], (i / F3_STAGES - 1) & 1); }
    return st;
}
// A computing thread waits for streamed tile i and gets its stage (it releases the stage later,
// arriving on empty[stage] once no product in flight reads it)
__device__ static inline int f3_wait_full(uint64_t* full, int i) {
    mbar_wait(&full[i % F3_STAGES], (i / F3_STAGES) & 1);
    return i % F3_STAGES;
}
// Turns (FlashAttention-3's ping-pong): the two computing warpgroups take turns to issue their
// products, so that one's exponentials run while the other's products occupy the tensor cores
// (without it they drift into step, both computing, then both waiting). Warpgroup w waits on named
// barrier 1 + w, which the other warpgroup's f3_turn_pass completes; warpgroup 1 passes once at the
// start so that warpgroup 0 goes first. Both take the same number of turns (both walk every tile
// of the block) and warpgroup 1 skips its last pass, so every barrier is complete at the end.
__device__ static inline void f3_turn_wait(int wg) { asm volatile("bar.sync %0, 256;" ::"r"(1 + wg) : "memory"); }
__device__ static inline void f3_turn_pass(int wg) { asm volatile("bar.arrive %0, 256;" ::"r"(2 - wg) : "memory"); }

// The computing loops are software-pipelined (FlashAttention-3's intra-warpgroup overlap): the
// scores of tile i+1 are issued to the tensor cores with the products of tile i that use its
// probabilities, and the exponentials of tile i+1 run while those products are in flight. Only
// what no product in flight reads or writes is touched before the wait (wg_wait<1>: the scores
// have landed, the P·V-type products may still run; wg_wait<0>: all have). Both warpgroups walk
// all n_tiles tiles of the block, so their turns pair up; a tile outside a warpgroup's band is
// an edge tile, masked whole (the waste is at most one tile of a band).

// The copying thread's loop of the forward and dq kernels: K and V of the key tiles k_first + i BN
// (i < n_tiles) into the stage ring at KV (stage s: K at KV + 2 s KB, V after it), each stage
// taken when its empty barrier says the computing warpgroups are done with it
template <int HD, int BN>
__device__ static void f3_stream_kv(unsigned char* KV, uint64_t* full, uint64_t* empty, const CUtensorMap* kvmap, int k_first,
                                    int n_tiles, int b, int h, int C) {
    const int KB = F3_TILE_BYTES(BN, HD);
    for (int i = 0; i < n_tiles; i++) {
        int st = f3_acquire(empty, i), k0 = k_first + i * BN;
        unsigned char* Ks = KV + 2 * st * KB;
        mbar_expect_tx(&full[st], 2 * KB);
        f3_load_tile<HD>(Ks, kvmap, C + h * HD, k0, BN, b, &full[st]);
        f3_load_tile<HD>(Ks + KB, kvmap, 2 * C + h * HD, k0, BN, b, &full[st]);
    }
}

// forward: grid (B*H, ceil(T/128)); qmap boxes 128 rows, kvmap boxes BN rows (both over qkvr)
template <int HD, int BN>
__global__ void __launch_bounds__(F3_THREADS, 1)
    flash3_forward_kernel(const __grid_constant__ CUtensorMap qmap, const __grid_constant__ CUtensorMap kvmap, bf16* out,
                          float* lse, int T, int C, int H, int window) {
#ifdef HOPPER_ASM
    const int QB = F3_TILE_BYTES(F3_ROWS, HD), KB = F3_TILE_BYTES(BN, HD);
    extern __shared__ unsigned char f3_raw[];
    unsigned char* Qs = f3_smem_base(f3_raw);
    unsigned char* KV = Qs + QB;  // stage s: K at KV + 2 s KB, V after it
    uint64_t* bars = (uint64_t*)(KV + 2 * F3_STAGES * KB);
    uint64_t *q_full = bars, *full = bars + 1, *empty = full + F3_STAGES;
    int b = blockIdx.x / H, h = blockIdx.x % H;
    int q0 = (gridDim.y - 1 - blockIdx.y) * F3_ROWS;  // the longest rows (most key tiles) start first
    int lo, hi;
    attn_key_range(q0, F3_ROWS, T, window, &lo, &hi);
    int k_first = lo / BN * BN, n_tiles = (hi - k_first) / BN + 1;
    f3_barriers_init(bars, 1);
    if (threadIdx.x < 128) {  // copying warpgroup
        reg_dealloc<24>();
        if (threadIdx.x != 0) { return; }
        mbar_expect_tx(q_full, QB);
        f3_load_tile<HD>(Qs, &qmap, h * HD, q0, F3_ROWS, b, q_full);
        f3_stream_kv<HD, BN>(KV, full, empty, &kvmap, k_first, n_tiles, b, h, C);
        return;
    }
    reg_alloc<240>();
    F3Pos p = f3_pos();
    int r0 = q0 + p.wg * 64, qr0 = r0 + p.m0;  // this warpgroup's first query, this warp's
    float sl2 = rsqrtf((float)HD) * LOG2E_F;
    float o[HD / 8][4], s[BN / 8][4], mx[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, corr[2];
    uint32_t pa[BN / 16][4];  // the probabilities of the tile whose P·V is next
    fa_zero<HD>(o);
    uint32_t qa = smem_u32(Qs) + p.half;
    if (p.wg == 1) { f3_turn_pass(1); }
    mbar_wait(q_full, 0);
    {  // the first tile's scores and probabilities
        uint32_t ka = smem_u32(KV + 2 * f3_wait_full(full, 0) * KB);
        f3_turn_wait(p.wg);
        wg_fence();
        f3_abt<BN, HD>(s, qa, F3_ROWS, ka, BN);
        wg_commit();
        f3_turn_pass(p.wg);
        wg_wait<0>();
        wg_fence_acc<BN>(s);
        fa_mask_rows<BN>(s, qr0, k_first, T, window, fa_edge_tile(r0, 64, k_first, BN, T, window));
        fa_softmax_rows<BN>(s, mx, l, corr, sl2);
        f3_pack<BN>(pa, s);
    }
    for (int i = 0; i < n_tiles - 1; i++) {  // every tile but the last: P·V of i beside the softmax of i+1
        int st = i % F3_STAGES, k0 = k_first + (i + 1) * BN;
        uint32_t kn = smem_u32(KV + 2 * f3_wait_full(full, i + 1) * KB);
        wg_fence_acc<HD>(o);
        f3_turn_wait(p.wg);
        wg_fence();
        f3_abt<BN, HD>(s, qa, F3_ROWS, kn, BN);
        wg_commit();
        f3_pv<BN, HD>(o, pa, smem_u32(KV + 2 * st * KB) + KB);
        wg_commit();
        f3_turn_pass(p.wg);
        wg_wait<1>();  // the scores of i+1 have landed
        wg_fence_acc<BN>(s);
        fa_mask_rows<BN>(s, qr0, k0, T, window, fa_edge_tile(r0, 64, k0, BN, T, window));
        fa_softmax_rows<BN>(s, mx, l, corr, sl2);
        wg_wait<0>();  // P·V of i has landed: o may be rescaled, pa refilled, the stage released
        wg_fence_acc<HD>(o);
        mbar_arrive(&empty[st]);
        fa_rescale<HD>(o, corr);
        f3_pack<BN>(pa, s);
    }
    {  // the last tile's P·V
        int st = (n_tiles - 1) % F3_STAGES;
        wg_fence_acc<HD>(o);
        f3_turn_wait(p.wg);
        wg_fence();
        f3_pv<BN, HD>(o, pa, smem_u32(KV + 2 * st * KB) + KB);
        wg_commit();
        if (p.wg == 0) { f3_turn_pass(0); }
        wg_wait<0>();
        wg_fence_acc<HD>(o);
        mbar_arrive(&empty[st]);
    }
    fa_store_out<HD>(out, lse, o, mx, l, b, qr0, T, C, H, h);
#else
    __trap();
#endif
}

// dq: grid (B*H, ceil(T/128)); qmap/omap box 128 rows (qkvr, dout), kvmap box 64 rows (qkvr).
//   p = exp(q·k s - lse);  ds = p (dout·v - delta);  dq = s Σ_j ds_j k_j
template <int HD>
__global__ void __launch_bounds__(F3_THREADS, 1)
    flash3_backward_dq_kernel(const __grid_constant__ CUtensorMap qmap, const __grid_constant__ CUtensorMap omap,
                              const __grid_constant__ CUtensorMap kvmap, bf16* dqkvr, const float* lse, const float* delta,
                              int T, int C, int H, int window) {
#ifdef HOPPER_ASM
    const int BN = F3_KTILE_DQ, QB = F3_TILE_BYTES(F3_ROWS, HD), KB = F3_TILE_BYTES(BN, HD);
    extern __shared__ unsigned char f3_raw[];
    unsigned char* Qs = f3_smem_base(f3_raw);
    unsigned char* dOs = Qs + QB;
    unsigned char* KV = dOs + QB;  // stage s: K at KV + 2 s KB, V after it
    uint64_t* bars = (uint64_t*)(KV + 2 * F3_STAGES * KB);
    uint64_t *q_full = bars, *full = bars + 1, *empty = full + F3_STAGES;
    int b = blockIdx.x / H, h = blockIdx.x % H;
    int q0 = (gridDim.y - 1 - blockIdx.y) * F3_ROWS;
    int lo, hi;
    attn_key_range(q0, F3_ROWS, T, window, &lo, &hi);
    int k_first = lo / BN * BN, n_tiles = (hi - k_first) / BN + 1;
    f3_barriers_init(bars, 1);
    if (threadIdx.x < 128) {
        reg_dealloc<24>();
        if (threadIdx.x != 0) { return; }
        mbar_expect_tx(q_full, 2 * QB);
        f3_load_tile<HD>(Qs, &qmap, h * HD, q0, F3_ROWS, b, q_full);
        f3_load_tile<HD>(dOs, &omap, h * HD, q0, F3_ROWS, b, q_full);
        f3_stream_kv<HD, BN>(KV, full, empty, &kvmap, k_first, n_tiles, b, h, C);
        return;
    }
    reg_alloc<240>();
    F3Pos p = f3_pos();
    int r0 = q0 + p.wg * 64, qr0 = r0 + p.m0, g = (threadIdx.x % 32) / 4;
    float sl2 = rsqrtf((float)HD) * LOG2E_F;
    float L2[2], Dl[2];  // rows g, g+8: lse in log2 units, delta
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int row = qr0 + g + 8 * i;
        L2[i] = row < T ? lse[((size_t)b * T + row) * H + h] * LOG2E_F : 0.0f;
        Dl[i] = row < T ? delta[((size_t)b * T + row) * H + h] : 0.0f;
    }
    float dq[HD / 8][4], s[BN / 8][4], dp[BN / 8][4];
    uint32_t dsa[BN / 16][4];  // ds of the tile whose ds·K is next
    fa_zero<HD>(dq);
    uint32_t qa = smem_u32(Qs) + p.half, oa = smem_u32(dOs) + p.half;
    if (p.wg == 1) { f3_turn_pass(1); }
    mbar_wait(q_full, 0);
    {  // the first tile's scores
        uint32_t ka = smem_u32(KV + 2 * f3_wait_full(full, 0) * KB);
        f3_turn_wait(p.wg);
        wg_fence();
        f3_abt<BN, HD>(s, qa, F3_ROWS, ka, BN);
        f3_abt<BN, HD>(dp, oa, F3_ROWS, ka + KB, BN);
        wg_commit();
        f3_turn_pass(p.wg);
    }
    // tile i's scores have been issued: wait for them and form ds (the caller issues ds·K)
    auto form_ds = [&](int i) {
        int k0 = k_first + i * BN;
        wg_wait<0>();
        wg_fence_acc<BN>(s);
        wg_fence_acc<BN>(dp);
        fa_mask_rows<BN>(s, qr0, k0, T, window, fa_edge_tile(r0, 64, k0, BN, T, window));
        fa_dq_ds<BN>(s, dp, L2, Dl, sl2);
        f3_pack<BN>(dsa, s);
        wg_fence_acc<HD>(dq);
    };
    for (int i = 0; i < n_tiles - 1; i++) {  // the last tile is peeled off: no branch around wgmma
        int st = i % F3_STAGES;
        form_ds(i);
        uint32_t kn = smem_u32(KV + 2 * f3_wait_full(full, i + 1) * KB);
        f3_turn_wait(p.wg);
        wg_fence();
        f3_pv<BN, HD>(dq, dsa, smem_u32(KV + 2 * st * KB));
        wg_commit();
        f3_abt<BN, HD>(s, qa, F3_ROWS, kn, BN);  // tile i+1's scores queue behind ds·K of tile i
        f3_abt<BN, HD>(dp, oa, F3_ROWS, kn + KB, BN);
        wg_commit();
        f3_turn_pass(p.wg);
        wg_wait<1>();  // ds·K of tile i has landed: its stage is free
        wg_fence_acc<HD>(dq);
        mbar_arrive(&empty[st]);
    }
    {
        int st = (n_tiles - 1) % F3_STAGES;
        form_ds(n_tiles - 1);
        f3_turn_wait(p.wg);
        wg_fence();
        f3_pv<BN, HD>(dq, dsa, smem_u32(KV + 2 * st * KB));
        wg_commit();
        if (p.wg == 0) { f3_turn_pass(0); }
        wg_wait<0>();
        wg_fence_acc<HD>(dq);
        mbar_arrive(&empty[st]);
    }
    float scale = rsqrtf((float)HD);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int row = qr0 + g + 8 * i;
        if (row < T) { fa_store_row<HD>(dqkvr + ((size_t)b * T + row) * 3 * C + h * HD, dq, i, scale); }
    }
#else
    __trap();
#endif
}

// dk, dv: grid (B*H, ceil(T/128)); kmap box 128 rows, qmap/omap box 64 rows. A stage holds a query
// tile's Q and dO (TMA) and its lse and delta (64 floats each, strided by H in memory, so no TMA
// box): the copying warp's 32 lanes fetch those with cp.async, and each lane's copies arrive on the
// stage's barrier when they land, beside the TMA thread's arrival.
// Transposed scores (keys x queries): dv_j = Σ_q p dout_q;  dk_j = s Σ_q ds q_q.
template <int HD>
__global__ void __launch_bounds__(F3_THREADS, 1)
    flash3_backward_dkdv_kernel(const __grid_constant__ CUtensorMap kmap, const __grid_constant__ CUtensorMap qmap,
                                const __grid_constant__ CUtensorMap omap, bf16* dqkvr, const float* lse, const float* delta,
                                int T, int C, int H, int window) {
#ifdef HOPPER_ASM
    const int BM = F3_QTILE, KB = F3_TILE_BYTES(F3_ROWS, HD), QB = F3_TILE_BYTES(BM, HD);
    const int STAGE = F3_DKDV_STAGE(HD);  // Q, dO, then lse and delta
    extern __shared__ unsigned char f3_raw[];
    unsigned char* Ks = f3_smem_base(f3_raw);
    unsigned char* Vs = Ks + KB;
    unsigned char* stages = Vs + KB;
    uint64_t* bars = (uint64_t*)(stages + F3_STAGES * STAGE);
    uint64_t *kv_full = bars, *full = bars + 1, *empty = full + F3_STAGES;
    int b = blockIdx.x / H, h = blockIdx.x % H;
    int k0 = blockIdx.y * F3_ROWS;  // causal: the first key tiles have the most query tiles
    int lo, hi;
    attn_query_range(k0, F3_ROWS, T, window, &lo, &hi);
    int q_first = lo / BM * BM, n_tiles = (hi - q_first) / BM + 1;
    f3_barriers_init(bars, 1 + 32);  // a full stage: the TMA thread's arrival and the 32 lanes' copies
    if (threadIdx.x < 128) {
        reg_dealloc<24>();
        if (threadIdx.x >= 32) { return; }
        int lane = threadIdx.x;
        if (lane == 0) {
            mbar_expect_tx(kv_full, 2 * KB);
            f3_load_tile<HD>(Ks, &kmap, C + h * HD, k0, F3_ROWS, b, kv_full);
            f3_load_tile<HD>(Vs, &kmap, 2 * C + h * HD, k0, F3_ROWS, b, kv_full);
        }
        for (int i = 0; i < n_tiles; i++) {
            int st = f3_acquire(empty, i), q = q_first + i * BM;
            unsigned char* S = stages + st * STAGE;
            if (lane == 0) {
                mbar_expect_tx(&full[st], 2 * QB);
                f3_load_tile<HD>(S, &qmap, h * HD, q, BM, b, &full[st]);
                f3_load_tile<HD>(S + QB, &omap, h * HD, q, BM, b, &full[st]);
            }
            float* LD = (float*)(S + 2 * QB);  // (lse, delta) of the tile's 64 queries; zeros past T
            for (int r = lane; r < BM; r += 32) {
                size_t at = ((size_t)b * T + min(q + r, T - 1)) * H + h;
                cp_async(LD + r, lse + at, 4, q + r < T ? 4 : 0);
                cp_async(LD + BM + r, delta + at, 4, q + r < T ? 4 : 0);
            }
            mbar_arrive_cp_async(&full[st]);  // arrives when the copies land: the loop goes on at once
        }
        return;
    }
    reg_alloc<240>();
    F3Pos p = f3_pos();
    int j0 = k0 + p.wg * 64;  // this warpgroup's first key
    float sl2 = rsqrtf((float)HD) * LOG2E_F;
    float dk[HD / 8][4], dv[HD / 8][4], s[BM / 8][4], dp[BM / 8][4];
    uint32_t pa[BM / 16][4], dsa[BM / 16][4];  // P and dS of the tile whose products are next
    fa_zero<HD>(dk);
    fa_zero<HD>(dv);
    uint32_t ka = smem_u32(Ks) + p.half, va = smem_u32(Vs) + p.half;
    if (p.wg == 1) { f3_turn_pass(1); }
    mbar_wait(kv_full, 0);
    {  // the first tile's scores
        uint32_t qa = smem_u32(stages + f3_wait_full(full, 0) * STAGE);
        f3_turn_wait(p.wg);
        wg_fence();
        f3_abt<BM, HD>(s, ka, F3_ROWS, qa, BM);  // (keys, queries)
        f3_abt<BM, HD>(dp, va, F3_ROWS, qa + QB, BM);
        wg_commit();
        f3_turn_pass(p.wg);
    }
    // tile i's scores have been issued: wait for them, form P and dS, issue dv += Pᵀ·dO, dk += dSᵀ·Q
    // (the caller holds the turn)
    auto form_probs = [&](int i) {
        int st = i % F3_STAGES, q = q_first + i * BM;
        const float *Ls = (const float*)(stages + st * STAGE + 2 * QB), *Ds = Ls + BM;
        wg_wait<0>();
        wg_fence_acc<BM>(s);
        wg_fence_acc<BM>(dp);
        fa_dkdv_probs<BM>(s, dp, j0 + p.m0, q, Ls, Ds, T, window, sl2, fa_edge_tile(q, BM, j0, 64, T, window));
        f3_pack<BM>(pa, s);
        f3_pack<BM>(dsa, dp);
        wg_fence_acc<HD>(dv);
        wg_fence_acc<HD>(dk);
    };
    auto grad_products = [&](int i) {
        uint32_t qa = smem_u32(stages + (i % F3_STAGES) * STAGE), oa = qa + QB;
        wg_fence();
        f3_pv<BM, HD>(dv, pa, oa);
        f3_pv<BM, HD>(dk, dsa, qa);
        wg_commit();
    };
    for (int i = 0; i < n_tiles - 1; i++) {  // the last tile is peeled off: no branch around wgmma
        form_probs(i);
        uint32_t qn = smem_u32(stages + f3_wait_full(full, i + 1) * STAGE);
        f3_turn_wait(p.wg);
        grad_products(i);
        // at D 128 the next scores wait for these products (P, dS and the next scores together do
        // not fit the registers beside dk and dv)
        if (HD > 64) { wg_wait<0>(); }
        f3_abt<BM, HD>(s, ka, F3_ROWS, qn, BM);
        f3_abt<BM, HD>(dp, va, F3_ROWS, qn + QB, BM);
        wg_commit();
        f3_turn_pass(p.wg);
        wg_wait<1>();  // tile i's products have landed: its stage is free
        wg_fence_acc<HD>(dv);
        wg_fence_acc<HD>(dk);
        mbar_arrive(&empty[i % F3_STAGES]);
    }
    {
        form_probs(n_tiles - 1);
        f3_turn_wait(p.wg);
        grad_products(n_tiles - 1);
        if (p.wg == 0) { f3_turn_pass(0); }
        wg_wait<0>();
        wg_fence_acc<HD>(dv);
        wg_fence_acc<HD>(dk);
        mbar_arrive(&empty[(n_tiles - 1) % F3_STAGES]);
    }
    float scale = rsqrtf((float)HD);
    int g = (threadIdx.x % 32) / 4;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int row = j0 + p.m0 + g + 8 * i;
        if (row >= T) { continue; }
        bf16* d = dqkvr + ((size_t)b * T + row) * 3 * C + h * HD;
        fa_store_row<HD>(d + C, dk, i, scale);
        fa_store_row<HD>(d + 2 * C, dv, i, 1.0f);
    }
#else
    __trap();
#endif
}

// ----------------------------------------------------------------------------
// kernel launchers

// Head dims with a compiled kernel; the caller's config is checked against this list.
static int attention_supports_head_dim(int D) { return D == 32 || D == 64 || D == 128; }

static size_t attention_v1_dkdv_smem(int D) { return (4 * (size_t)ATTN_TILE * (D + 1) + 2 * ATTN_TILE) * sizeof(float); }

template <int HD>
static void attention_v1_forward(float* out, float* lse, const float* qkvr, int B, int T, int C, int H, int window,
                                 cudaStream_t stream) {
    dim3 grid((T + ATTN_TILE - 1) / ATTN_TILE, B * H);
    attention_forward_kernel<HD><<<grid, ATTN_TILE, 0, stream>>>(out, lse, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
}

template <int HD>
static void attention_v1_backward(float* dqkvr, const float* dout, const float* lse, const float* delta, const float* qkvr,
                                  int B, int T, int C, int H, int window, cudaStream_t stream) {
    dim3 grid((T + ATTN_TILE - 1) / ATTN_TILE, B * H);
    attention_backward_dq_kernel<HD><<<grid, ATTN_TILE, 0, stream>>>(dqkvr, dout, lse, delta, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
    size_t smem = attention_v1_dkdv_smem(HD);
    cudaCheck(cudaFuncSetAttribute(attention_backward_dkdv_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    attention_backward_dkdv_kernel<HD><<<grid, ATTN_TILE, smem, stream>>>(dqkvr, dout, lse, delta, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
}

// shared memory of the v2 kernels: `tiles` tiles of (64, HD+PAD) bf16, plus the dk/dv kernel's lse and delta rows
template <int HD>
static size_t attention_v2_smem(int tiles, int rows) { return (size_t)tiles * FA_ROWS * (HD + FA_PAD) * sizeof(bf16) + rows * sizeof(float); }

// Raises a kernel's dynamic shared-memory limit the first time it is launched (HD 128 needs > 48 KB).
static void attention_smem_limit(const void* kernel, size_t smem, int* done) {
    if (*done) { return; }
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    *done = 1;
}

template <int HD>
static void attention_v2_forward(bf16* out, float* lse, const bf16* qkvr, int B, int T, int C, int H, int window,
                                 cudaStream_t stream) {
    static int limit_set = 0;
    size_t smem = attention_v2_smem<HD>(5, 0);  // Q, two stages of K, V
    attention_smem_limit((const void*)flash_forward_kernel<HD>, smem, &limit_set);
    dim3 grid((T + FA_ROWS - 1) / FA_ROWS, B * H);
    flash_forward_kernel<HD><<<grid, FA_THREADS, smem, stream>>>(out, lse, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
}

template <int HD>
static void attention_v2_backward(bf16* dqkvr, const bf16* dout, const float* lse, const float* delta, const bf16* qkvr,
                                  int B, int T, int C, int H, int window, cudaStream_t stream) {
    static int dq_set = 0, dkdv_set = 0;
    // dq: Q, dO, two stages of K, V; dk/dv: K, V, two stages of Q, dO, lse, delta
    size_t smem_dq = attention_v2_smem<HD>(6, 0), smem_dkdv = attention_v2_smem<HD>(6, 4 * FA_ROWS);
    attention_smem_limit((const void*)flash_backward_dq_kernel<HD>, smem_dq, &dq_set);
    attention_smem_limit((const void*)flash_backward_dkdv_kernel<HD>, smem_dkdv, &dkdv_set);
    dim3 grid((T + FA_ROWS - 1) / FA_ROWS, B * H);
    flash_backward_dq_kernel<HD><<<grid, FA_THREADS, smem_dq, stream>>>(dqkvr, dout, lse, delta, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
    flash_backward_dkdv_kernel<HD><<<grid, FA_THREADS, smem_dkdv, stream>>>(dqkvr, dout, lse, delta, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
}

// A TMA map over the (B, T, width) bf16 tensor x, boxes of box_rows rows × 64 columns
static CUtensorMap f3_map(const bf16* x, int width, int T, int B, int box_rows) {
    return tma_map_3d(x, width, T, B, width, (size_t)T * width, box_rows);
}

template <int HD, int BN>
static void attention_v3_forward_bn(bf16* out, float* lse, const bf16* qkvr, int B, int T, int C, int H, int window,
                                    cudaStream_t stream) {
    static int limit_set = 0;
    size_t smem = F3_SMEM(F3_TILE_BYTES(F3_ROWS, HD) + 2 * F3_STAGES * F3_TILE_BYTES(BN, HD));  // Q, stages of K, V
    attention_smem_limit((const void*)flash3_forward_kernel<HD, BN>, smem, &limit_set);
    CUtensorMap qmap = f3_map(qkvr, 3 * C, T, B, F3_ROWS), kvmap = f3_map(qkvr, 3 * C, T, B, BN);
    dim3 grid(B * H, (T + F3_ROWS - 1) / F3_ROWS);  // blocks start in order of x, then y: the longest first
    flash3_forward_kernel<HD, BN><<<grid, F3_THREADS, smem, stream>>>(qmap, kvmap, out, lse, T, C, H, window);
    cudaCheck(cudaGetLastError());
}
// Key tiles of 64 for narrow windows (a 128-key tile would be mostly outside the band) and at D 128
// (four stages of 128 x 128 K and V tiles do not fit the shared memory), else 128.
template <int HD>
static void attention_v3_forward(bf16* out, float* lse, const bf16* qkvr, int B, int T, int C, int H, int window,
                                 cudaStream_t stream) {
    const int BN_WIDE = HD > 64 ? 64 : 128;
    if (window > 0 && window <= 256) { attention_v3_forward_bn<HD, 64>(out, lse, qkvr, B, T, C, H, window, stream); }
    else { attention_v3_forward_bn<HD, BN_WIDE>(out, lse, qkvr, B, T, C, H, window, stream); }
}

template <int HD>
static void attention_v3_backward(bf16* dqkvr, const bf16* dout, const float* lse, const float* delta, const bf16* qkvr,
                                  int B, int T, int C, int H, int window, cudaStream_t stream) {
    static int dq_set = 0, dkdv_set = 0;
    // dq: Q, dO, stages of K, V; dk/dv: K, V, stages of Q, dO, lse, delta
    size_t smem_dq = F3_SMEM(2 * F3_TILE_BYTES(F3_ROWS, HD) + 2 * F3_STAGES * F3_TILE_BYTES(F3_KTILE_DQ, HD));
    size_t smem_dkdv = F3_SMEM(2 * F3_TILE_BYTES(F3_ROWS, HD) + F3_STAGES * F3_DKDV_STAGE(HD));
    attention_smem_limit((const void*)flash3_backward_dq_kernel<HD>, smem_dq, &dq_set);
    attention_smem_limit((const void*)flash3_backward_dkdv_kernel<HD>, smem_dkdv, &dkdv_set);
    CUtensorMap qkv_128 = f3_map(qkvr, 3 * C, T, B, F3_ROWS), qkv_64 = f3_map(qkvr, 3 * C, T, B, 64);
    CUtensorMap dout_128 = f3_map(dout, C, T, B, F3_ROWS), dout_64 = f3_map(dout, C, T, B, 64);
    dim3 grid(B * H, (T + F3_ROWS - 1) / F3_ROWS);  // blocks start in order of x, then y: the longest first
    flash3_backward_dq_kernel<HD><<<grid, F3_THREADS, smem_dq, stream>>>(qkv_128, dout_128, qkv_64, dqkvr, lse, delta, T, C, H, window);
    cudaCheck(cudaGetLastError());
    flash3_backward_dkdv_kernel<HD><<<grid, F3_THREADS, smem_dkdv, stream>>>(qkv_128, qkv_64, dout_64, dqkvr, lse, delta, T, C, H,
                                                                              window);
    cudaCheck(cudaGetLastError());
}

// Is the v3 path usable: a Hopper GPU, and this build compiled its sm_90a kernels?
static int attention_v3_available(void) { return hopper_kernels_built(); }

// Windows up to this stay on v2 even where v3 runs: a query block of v3 is 128 rows, so with a narrow
// band most of each key tile is masked, and v2's 64-row blocks do less (H200, B 8, T 4096, D 64,
// fwd+bwd: W 64 v2 0.45 ms, v3 0.67; W 512 v2 1.17, v3 1.16; W 2048 v2 3.05, v3 2.26).
#define ATTN_V3_MIN_WINDOW 128

// Does the bf16 build take v3 for head dim D and this window?
static int attention_uses_v3(int D, int window) {
    return (D == 64 || D == 128) && (window <= 0 || window > ATTN_V3_MIN_WINDOW) && attention_v3_available();
}

// The build's version: for bf16, v3 (Hopper) at head dims 64 and 128 where available, except narrow
// windows (attention_uses_v3), else v2 (tensor cores, any GPU since sm_80); v1 for fp32.
template <int HD>
static void attention_forward_hd(floatX* out, float* lse, const floatX* qkvr, int B, int T, int C, int H, int window,
                                 cudaStream_t stream) {
#if defined(PRECISION_BF16)
    if constexpr (HD >= 64) {
        if (attention_uses_v3(HD, window)) { return attention_v3_forward<HD>(out, lse, qkvr, B, T, C, H, window, stream); }
    }
    attention_v2_forward<HD>(out, lse, qkvr, B, T, C, H, window, stream);
#else
    attention_v1_forward<HD>(out, lse, qkvr, B, T, C, H, window, stream);
#endif
}
template <int HD>
static void attention_backward_hd(floatX* dqkvr, const floatX* dout, const float* lse, const float* delta, const floatX* qkvr,
                                  int B, int T, int C, int H, int window, cudaStream_t stream) {
#if defined(PRECISION_BF16)
    if constexpr (HD >= 64) {
        if (attention_uses_v3(HD, window)) { return attention_v3_backward<HD>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, stream); }
    }
    attention_v2_backward<HD>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, stream);
#else
    attention_v1_backward<HD>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, stream);
#endif
}

// out (B,T,C), lse (B,T,H) from qkvr (B,T,3C); window <= 0: full causal
static void attention_forward_gpu(floatX* out, float* lse, const floatX* qkvr, int B, int T, int C, int H, int window,
                                  cudaStream_t stream) {
    switch (C / H) {
        case 32: attention_forward_hd<32>(out, lse, qkvr, B, T, C, H, window, stream); break;
        case 64: attention_forward_hd<64>(out, lse, qkvr, B, T, C, H, window, stream); break;
        case 128: attention_forward_hd<128>(out, lse, qkvr, B, T, C, H, window, stream); break;
        default: die("attention: head dim %d has no kernel (32, 64 or 128)", C / H);
    }
}

// delta (B,T,H) = dout·out of every head row, the backward's row term (attention_delta_kernel)
static void attention_delta_gpu(float* delta, const floatX* dout, const floatX* out, int B, int T, int C, int H, cudaStream_t stream) {
    int rows = B * T * H;
    attention_delta_kernel<<<(rows + 255) / 256, 256, 0, stream>>>(delta, dout, out, B * T, C, H);
    cudaCheck(cudaGetLastError());
}

// dqkvr (B,T,3C) = gradient of qkvr, given dout (B,T,C) and the forward's out and lse.
// delta (B,T,H) is scratch.
static void attention_backward_gpu(floatX* dqkvr, float* delta, const floatX* dout, const floatX* out, const float* lse,
                                   const floatX* qkvr, int B, int T, int C, int H, int window, cudaStream_t stream) {
    attention_delta_gpu(delta, dout, out, B, T, C, H, stream);
    switch (C / H) {
        case 32: attention_backward_hd<32>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, stream); break;
        case 64: attention_backward_hd<64>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, stream); break;
        case 128: attention_backward_hd<128>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, stream); break;
        default: die("attention: head dim %d has no kernel (32, 64 or 128)", C / H);
    }
}

#endif // FULL_ATTN_CUH
