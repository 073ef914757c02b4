/*
full_attn.cuh — causal softmax attention, forward and backward, flash-style: keys are visited in
tiles with an online softmax, nothing of size T×T is stored, and the backward recomputes the
probabilities from the saved log-sum-exp.

defines: key/query ranges (attn_key_range / attn_query_range), attention_delta_kernel,
         v1 fp32 kernels (attention_forward_kernel, attention_backward_dq/dkdv_kernel),
         v2 bf16 tensor-core kernels (flash_forward_kernel, flash_backward_dq/dkdv_kernel),
         launchers attention_forward_gpu / attention_backward_gpu (v1 in the FP32 build, v2 in BF16)

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
*/
#ifndef FULL_ATTN_CUH
#define FULL_ATTN_CUH

#include <cuda_bf16.h>
#include "cuda_common.cuh"  // defines: floatX, cudaCheck, cp_async

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
// v2: bf16 tensor cores (mma.sync m16n8k16, fp32 accumulate)
//
// Fragments of mma.m16n8k16 (PTX ISA), lane = 4g + t (g = lane/4, t = lane%4):
//   A (16x16, row-major)  a0 (row g, cols 2t,2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B (16x8, k x n)       b0 (k 2t,2t+1; n g)       b1 (k 2t+8, 2t+9; n g)
//   C (16x8, fp32)        c0 c1 (row g, cols 2t, 2t+1)   c2 c3 (row g+8, cols 2t, 2t+1)
// A register holds two bf16, the lower column in the low half. The C tiles of a 16x64 score block,
// repacked two n8 tiles at a time, are the A fragments of the next product (P·V): the
// probabilities never leave registers.

typedef __nv_bfloat16 bf16;

#define FA_ROWS 64      // rows a block owns (queries; keys in dk/dv) = rows of each streamed tile
#define FA_THREADS 128  // 4 warps x 16 rows
#define FA_PAD 8        // bf16 of padding per shared row (16 B): 8 rows at one column hit 8 different bank quads
#define FA_TILE(HD) (FA_ROWS * ((HD) + FA_PAD))  // bf16 of one shared tile (64, HD+PAD)
#define LOG2E_F 1.4426950408889634f

__device__ static inline void mma_16816(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ static inline uint32_t lds32(const bf16* p) { return *(const uint32_t*)p; }
__device__ static inline uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t*)&v;
}

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
// B fragments of the n8 tiles n0 and n0+8 of a row-major [k][n] tile, k rows k0..k0+15: one
// ldmatrix.x4.trans (lanes 0-15 address rows k0.. at column n0, lanes 16-31 the same rows at n0+8)
__device__ static inline void ldsm_b2(uint32_t* r, const bf16* tile, int ld, int k0, int n0) {
    int lane = threadIdx.x % 32;
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(tile + (k0 + (lane & 15)) * ld + n0 + (lane >> 4) * 8);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
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

// acc (16 x HD, HD/8 C tiles) += p (16 x 64, C tiles, rounded to bf16) · tile v (64 x HD)
template <int HD>
__device__ static void fa_pv(float (*acc)[4], float (*p)[4], const bf16* v_tile) {
    const int ld = HD + FA_PAD;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        uint32_t a[4] = {pack_bf16(p[2 * k][0], p[2 * k][1]), pack_bf16(p[2 * k][2], p[2 * k][3]),
                         pack_bf16(p[2 * k + 1][0], p[2 * k + 1][1]), pack_bf16(p[2 * k + 1][2], p[2 * k + 1][3])};
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

// Query-major score tile: scale to log2 units; -inf where row qr0+g(+8) may not see key k0+col
// (or the key is past T). `edge` = 0 for tiles wholly inside the band, where nothing is masked.
__device__ static inline void fa_mask_rows(float (*s)[4], int qr0, int k0, int T, int window, float sl2, int edge) {
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int q = qr0 + g + (e >> 1) * 8, j = k0 + n * 8 + 2 * t + (e & 1);
            s[n][e] = (edge && (j >= T || !attn_visible(q, j, window))) ? -INFINITY : s[n][e] * sl2;
        }
    }
}
// Does the 64x64 tile (queries q0.., keys k0..) have a masked entry (diagonal, band edge, past T)?
__device__ static inline int fa_edge_tile(int q0, int k0, int T, int window) {
    return k0 + FA_ROWS - 1 > q0 || k0 + FA_ROWS > T || q0 + FA_ROWS > T || (window > 0 && q0 + FA_ROWS - 1 - k0 >= window);
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
    int b = p.b, h = p.h, m0 = p.m0, g = p.g, t = p.t;
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
        fa_mask_rows(s, q0 + m0, k0, T, window, sl2, fa_edge_tile(q0, k0, T, window));
#pragma unroll
        for (int i = 0; i < 2; i++) {  // online softmax of rows g (i = 0) and g+8 (i = 1); 4 lanes share a row
            float mnew = mx[i];
#pragma unroll
            for (int n = 0; n < 8; n++) { mnew = fmaxf(mnew, fmaxf(s[n][2 * i], s[n][2 * i + 1])); }
            mnew = fmaxf(mnew, __shfl_xor_sync(0xffffffff, mnew, 1));
            mnew = fmaxf(mnew, __shfl_xor_sync(0xffffffff, mnew, 2));
            float ref = mnew == -INFINITY ? 0.0f : mnew;  // a row with nothing visible yet stays at 0
            float corr = exp2f(mx[i] - ref);
            mx[i] = mnew;
            l[i] *= corr;
#pragma unroll
            for (int n = 0; n < HD / 8; n++) { o[n][2 * i] *= corr; o[n][2 * i + 1] *= corr; }
#pragma unroll
            for (int n = 0; n < 8; n++) {
                s[n][2 * i] = exp2f(s[n][2 * i] - ref);
                s[n][2 * i + 1] = exp2f(s[n][2 * i + 1] - ref);
                l[i] += s[n][2 * i] + s[n][2 * i + 1];
            }
        }
        fa_pv<HD>(o, s, Vs);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffff, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffff, l[i], 2);
        int row = q0 + m0 + g + 8 * i;
        if (row >= T) { continue; }
        fa_store_row<HD>(out + ((size_t)b * T + row) * C + h * HD, o, i, 1.0f / l[i]);
        if (t == 0) { lse[((size_t)b * T + row) * H + h] = (mx[i] + log2f(l[i])) / LOG2E_F; }
    }
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
        fa_mask_rows(p, q0 + m0, k0, T, window, sl2, fa_edge_tile(q0, k0, T, window));
        fa_abt<HD>(dp, dOs, m0, Vs);
#pragma unroll
        for (int n = 0; n < 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float pe = exp2f(p[n][e] - L2[e >> 1]);
                p[n][e] = pe * (dp[n][e] - Dl[e >> 1]);  // ds
            }
        }
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
    int b = p.b, h = p.h, m0 = p.m0, g = p.g, t = p.t;
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
        int edge = fa_edge_tile(q0, k0, T, window);
#pragma unroll
        for (int n = 0; n < 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int j = k0 + m0 + g + (e >> 1) * 8, qc = n * 8 + 2 * t + (e & 1), q = q0 + qc;
                int masked = edge && (q >= T || !attn_visible(q, j, window));
                p[n][e] = masked ? 0.0f : exp2f(p[n][e] * sl2 - Ls[qc] * LOG2E_F);
                dp[n][e] = p[n][e] * (dp[n][e] - Ds[qc]);  // ds
            }
        }
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
static void attention_v2_smem_limit(const void* kernel, size_t smem, int* done) {
    if (*done) { return; }
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    *done = 1;
}

template <int HD>
static void attention_v2_forward(bf16* out, float* lse, const bf16* qkvr, int B, int T, int C, int H, int window,
                                 cudaStream_t stream) {
    static int limit_set = 0;
    size_t smem = attention_v2_smem<HD>(5, 0);  // Q, two stages of K, V
    attention_v2_smem_limit((const void*)flash_forward_kernel<HD>, smem, &limit_set);
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
    attention_v2_smem_limit((const void*)flash_backward_dq_kernel<HD>, smem_dq, &dq_set);
    attention_v2_smem_limit((const void*)flash_backward_dkdv_kernel<HD>, smem_dkdv, &dkdv_set);
    dim3 grid((T + FA_ROWS - 1) / FA_ROWS, B * H);
    flash_backward_dq_kernel<HD><<<grid, FA_THREADS, smem_dq, stream>>>(dqkvr, dout, lse, delta, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
    flash_backward_dkdv_kernel<HD><<<grid, FA_THREADS, smem_dkdv, stream>>>(dqkvr, dout, lse, delta, qkvr, T, C, H, window);
    cudaCheck(cudaGetLastError());
}

// The build's version: v2 on tensor cores for bf16, v1 for fp32.
template <int HD>
static void attention_forward_hd(floatX* out, float* lse, const floatX* qkvr, int B, int T, int C, int H, int window,
                                 cudaStream_t stream) {
#if defined(PRECISION_BF16)
    attention_v2_forward<HD>(out, lse, qkvr, B, T, C, H, window, stream);
#else
    attention_v1_forward<HD>(out, lse, qkvr, B, T, C, H, window, stream);
#endif
}
template <int HD>
static void attention_backward_hd(floatX* dqkvr, const floatX* dout, const float* lse, const float* delta, const floatX* qkvr,
                                  int B, int T, int C, int H, int window, cudaStream_t stream) {
#if defined(PRECISION_BF16)
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

// dqkvr (B,T,3C) = gradient of qkvr, given dout (B,T,C) and the forward's out and lse.
// delta (B,T,H) is scratch.
static void attention_backward_gpu(floatX* dqkvr, float* delta, const floatX* dout, const floatX* out, const float* lse,
                                   const floatX* qkvr, int B, int T, int C, int H, int window, cudaStream_t stream) {
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
