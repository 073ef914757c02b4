/*
recurrent_mixer.cuh — the Gated DeltaNet recurrence (and its gla mode) in chunked-parallel form,
forward and backward, fp32 state.

defines: the R layer's small kernels (causal conv + SiLU, L2 norm, gates) and their launchers
         conv_silu_forward_gpu / conv_silu_backward_gpu (conv_scratch_floats), l2norm_forward_gpu / l2norm_backward_gpu,
         gates_forward_gpu / gates_backward_gpu; the recurrence in two versions: v2 (fp32 tiles:
         delta_prep_kernel, delta_state_forward_kernel, delta_output_kernel,
         delta_backward_prep_kernel, delta_state_backward_kernel, delta_chunk_backward_kernel;
         delta_v2_forward / delta_v2_backward) and v3 (bf16 build, head dim 64 and 128: delta3_*
         kernels; delta_v3_forward / delta_v3_backward); the trainer's entry points
         delta_rule_forward_gpu / delta_rule_backward_gpu (v3 where delta_rule_uses_v3, else v2),
         delta_rule_head_dim_ok, delta_rule_state_floats, delta_rule_scratch_floats

Gradient rule for the whole file: activation gradients are written (=), parameter gradients
(conv_w, A_log, dt_bias) are accumulated (+=) by deterministic per-channel reductions, no atomics.

The recurrence of the CPU reference (hybrid_cpu.h, delta_rule_forward), per (b, h):
    gdn: S_t = α_t S_{t-1} (I - β_t k_t k_tᵀ) + β_t v_t k_tᵀ      gla: S_t = α_t S_{t-1} + v_t k_tᵀ
    o_t = S_t q_t
Chunked form (checked against the recurrence to ~1e-15 in an independent fp64 model), chunk of c = DELTA_CHUNK tokens entered with state S0,
g_t = Σ_{j<=t} log α_j within the chunk, Γ[t,s] = exp(g_t - g_s), b_t = exp(g_t), w_s = exp(g_last - g_s):
    A[t,s] = β_t Γ[t,s] (k_t·k_s), s < t,  Ti = (I + A)⁻¹    (UT form: one inverse per chunk)
    Ũ = Ti diag(β) V,  W = Ti diag(β b) K                    (need no state: all chunks at once)
    U = Ũ - W S0ᵀ                                            the pseudo-values, (I + A) U = diag(β)(V - diag(b) K S0ᵀ)
    P[t,s] = Γ[t,s] (q_t·k_s), s <= t
    O = diag(b) Q S0ᵀ + P U,   S_end = b_last S0 + Uᵀ diag(w) K
gla mode: U = V (no A, no Ti, no W).
Only S0 of each chunk needs the chunks before it. So the forward is three kernels: the per-chunk prep
(Ũ, W; gdn), a state pass that carries the state through the chunks in order (the next chunk's
tiles in flight while this one is used) and saves each chunk's S0, and the per-chunk output. In v2
all matrix products are on fp32 shared-memory tiles (tile_mm): tf32 tensor cores in the bf16 build,
fp32 CUDA cores in the fp32 build; the state pass runs one block per head. Every global load is a
cp.async (one memory round trip per chunk, not one per element).

Backward, dS = dL/dS_end of a chunk, dU = Pᵀ dO + diag(w) K dSᵀ, dR = Tiᵀ dU (gdn), and
dS0 = b_last dS + Σ_t b_t do_t q_tᵀ - dUᵀ W. Again three kernels: per-chunk prep (W and dUl = Pᵀ dO),
a reverse state pass that saves dS of every chunk, and the per-chunk gradients of q, k, v, β and the
gates from (S0, dS); g's gradient goes to log α by a reverse cumulative sum within the chunk.

The per-chunk gradients, term by term (delta_chunk_backward_kernel does them in this order; x·y is a
row's dot product, ⊙ the elementwise product, dg_t = dL/dg_t):
  S_end = b_last S0 + Uᵀ diag(w) K:  dU += diag(w) K dSᵀ,  dK += diag(w) U dS,
      dw_s = u_s·(K dSᵀ)_s,  dg_last += b_last <dS, S0>
  w_s = exp(g_last - g_s):  dg_s -= dw_s w_s,  dg_last += Σ_s dw_s w_s
  O = diag(b) Q S0ᵀ + P U:  dU += Pᵀ dO,  dP = dO Uᵀ (s <= t),  dQ = diag(b) dO S0 + (dP⊙Γ) K,
      dK += (dP⊙Γ)ᵀ Q,  dg_t += b_t do_t·(S0 q_t)
  P[t,s] = Γ[t,s] (q_t·k_s), Γ[t,s] = exp(g_t - g_s):  dg_t += Σ_s dP[t,s] P[t,s] - Σ_t' dP[t',t] P[t',t]
gdn only, U = Ti R with R = diag(β)(V - diag(b) K S0ᵀ) and Ti = (I + A)⁻¹:
  dR = Tiᵀ dU,  dA = -dR Uᵀ on s < t (d Ti = -Ti dA Ti)
  R:  dv_t = β_t dr_t,  dβ_t += dr_t·(v_t - b_t S0 k_t),  dg_t -= β_t b_t dr_t·(S0 k_t),  dK -= diag(β b) dR S0
  A[t,s] = β_t Γ[t,s] (k_t·k_s):  dβ_t += Σ_s dA[t,s] Γ[t,s] (k_t·k_s),
      dg_t += Σ_s dA[t,s] A[t,s] - Σ_t' dA[t',t] A[t',t],  dK += dKK K + dKKᵀ K with dKK = diag(β)(dA⊙Γ)
and last, g_t = Σ_{j<=t} log α_j within the chunk: dL/d log α_j = Σ_{t>=j} dg_t. gla mode has U = V,
so only the first four lines apply, with dv = dU.

Layouts, as in the CPU reference: q, k (B,T,C) normalised; v inside qkva with row stride vstride;
beta, gate (B,T,H) with gate = log α; o (B,T,C). The forward saves the state entering each chunk,
states (B, H, n_chunks, D, D) with S[i][j], i value dim, j key dim. The backward writes (=) dq, dk,
dv, dbeta, dgate. Ũ, W, dUl and the dS of each chunk live in a scratch buffer the caller owns
(delta_rule_scratch_floats), shared by all layers. No atomics: every output element has one writer.

Precision: q, k, v, o and their gradients are the build's floatX (cuda_common.cuh); beta, gate, the
states and all sums are fp32. v2's products are tf32 (bf16 build) or fp32 (fp32 build) on fp32
tiles; v3's are bf16 operands with fp32 sums (its solve's block products tf32), as fla's kernels.
Head dim D: v2 a multiple of 16 up to 64; v3 64 or 128. The v3 section below says what it does
differently.
*/
#ifndef RECURRENT_MIXER_CUH
#define RECURRENT_MIXER_CUH

#include "cuda_common.cuh"  // defines: floatX, cudaCheck, warp_sum, block_sum, REDUCE_THREADS, blocks_for

// ----------------------------------------------------------------------------
// The R layer's small kernels; layouts and math as in hybrid_cpu.h (conv_forward, silu_forward,
// l2norm_forward, gates_forward and their backwards).

__device__ static inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ static inline float softplusf_(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

// The causal depthwise conv, conv[t, c] = Σ_k w[c, k] inp[t - (K-1) + k, c] (zero before t = 0),
// on the GPU: a thread owns X128 channels (one 16-byte chunk of a row) over CONV_ROWS consecutive
// rows of one sequence and walks them in order, keeping the last K rows it needs in registers:
// every row of every tensor is read once (plus K-1 rows at the tile's start), in 16-byte accesses
// that a warp makes contiguous (32 chunks of one row). Its 4·X128 weights (w is (CH, K), a
// parameter: not 16-byte aligned) are read once. Threads: B · ceil(T / CONV_ROWS) · CH / X128.
// Measured on an H200 (RRRF step, the two kernels' ms a step): 32 rows rolled 1.5 + 5.0; 16 rows
// 1.6 + 5.9, 8 rows 1.7 + 8.1, 64 rows 2.2 + 4.6; the row loops unrolled (32 rows: 166 registers,
// one block an SM) 3.5 + 10.5. The walks stay rolled (#pragma unroll 1).
#define CONV_ROWS 32
__host__ __device__ static inline int conv_tiles(int T) { return (T + CONV_ROWS - 1) / CONV_ROWS; }  // row tiles a sequence

// the thread's chunk j (channels j·X128 ..), sequence b and first row t0; 0 past the grid
__device__ static inline int conv_thread(int B, int T, int CH, int* j, int* b, int* t0) {
    int chunks = CH / X128, tiles = conv_tiles(T);
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * tiles * chunks) { return 0; }
    *j = (int)(idx % chunks);
    int tile = (int)(idx / chunks);
    *b = tile / tiles;
    *t0 = tile % tiles * CONV_ROWS;
    return 1;
}
__device__ static inline void conv_weights(float (*wr)[CONV_K], const floatX* w, int j) {
    for (int i = 0; i < X128; i++) {
        for (int k = 0; k < CONV_K; k++) { wr[i][k] = (float)w[((size_t)j * X128 + i) * CONV_K + k]; }
    }
}
// row t of a (B, T, ·) tensor with rows `stride` apart, at the thread's chunk; zeros outside [0, T)
__device__ static inline x128 conv_row(const floatX* x, int b, int t, int T, int stride, int j) {
    x128 v;
    if (t < 0 || t >= T) {
        for (int i = 0; i < X128; i++) { v.v[i] = (floatX)0.0f; }
        return v;
    }
    return load128(x + ((size_t)b * T + t) * stride + (size_t)j * X128);
}

// act (N, CH) = silu(conv(inp)), inp rows in_stride apart (the R layer's input projection); the
// conv itself is not stored (the backward recomputes it). win[k] holds inp at row t - (K-1) + k.
__global__ void conv_silu_forward_kernel(floatX* act, const floatX* inp, int in_stride, const floatX* w, int B, int T, int CH) {
    int j, b, t0;
    if (!conv_thread(B, T, CH, &j, &b, &t0)) { return; }
    float wr[X128][CONV_K];
    conv_weights(wr, w, j);
    x128 win[CONV_K];
#pragma unroll
    for (int k = 0; k < CONV_K - 1; k++) { win[k + 1] = conv_row(inp, b, t0 - (CONV_K - 1) + k, T, in_stride, j); }
#pragma unroll 1
    for (int r = 0; r < CONV_ROWS; r++) {
        int t = t0 + r;
#pragma unroll
        for (int k = 0; k < CONV_K - 1; k++) { win[k] = win[k + 1]; }
        win[CONV_K - 1] = conv_row(inp, b, t, T, in_stride, j);
        x128 o;
#pragma unroll
        for (int i = 0; i < X128; i++) {
            float x = 0.0f;
            for (int k = 0; k < CONV_K; k++) { x += wr[i][k] * (float)win[k].v[i]; }
            o.v[i] = (floatX)(x * sigmoidf_(x));
        }
        if (t < T) { store128(act + ((size_t)b * T + t) * CH + (size_t)j * X128, o); }
    }
}

// The whole backward of act = silu(conv(inp)) in one pass over the thread's rows, in order:
//   dconv[s] = dact[s] silu'(conv[s])            conv[s] recomputed from the inp window
//   dinp[t]  = Σ_k dconv[t + (K-1) - k] w[k]     written (=) once dconv[t .. t+K-1] are known
//   dw[c,k] partial of the tile = Σ_{t in tile} dconv[t] inp[t - (K-1) + k]
// The walk runs K-1 rows past the tile (their dconv recomputed, not accumulated): no thread reads
// what another writes. partial (tiles, CH, K) fp32, added in order by conv_weight_sum_kernel. inp
// and dinp rows in_stride apart, dact rows CH.
__global__ void conv_silu_backward_kernel(floatX* dinp, float* partial, const floatX* dact, const floatX* inp, int in_stride,
                                          const floatX* w, int B, int T, int CH) {
    int j, b, t0;
    if (!conv_thread(B, T, CH, &j, &b, &t0)) { return; }
    float wr[X128][CONV_K], acc[X128][CONV_K] = {{0.0f}}, dc[CONV_K][X128];  // dc[k]: dconv at row s - (K-1) + k
    conv_weights(wr, w, j);
    x128 win[CONV_K];
#pragma unroll
    for (int k = 0; k < CONV_K - 1; k++) {
        win[k + 1] = conv_row(inp, b, t0 - (CONV_K - 1) + k, T, in_stride, j);
        for (int i = 0; i < X128; i++) { dc[k + 1][i] = 0.0f; }
    }
#pragma unroll 1
    for (int r = 0; r < CONV_ROWS + CONV_K - 1; r++) {
        int s = t0 + r;
#pragma unroll
        for (int k = 0; k < CONV_K - 1; k++) {
            win[k] = win[k + 1];
            for (int i = 0; i < X128; i++) { dc[k][i] = dc[k + 1][i]; }
        }
        win[CONV_K - 1] = conv_row(inp, b, s, T, in_stride, j);
        x128 dv = conv_row(dact, b, s, T, CH, j);  // zeros past T: no gradient there
#pragma unroll
        for (int i = 0; i < X128; i++) {
            float x = 0.0f;
            for (int k = 0; k < CONV_K; k++) { x += wr[i][k] * (float)win[k].v[i]; }
            float sg = sigmoidf_(x);
            dc[CONV_K - 1][i] = (float)dv.v[i] * sg * (1.0f + x * (1.0f - sg));
            if (r < CONV_ROWS) {  // rows of this tile (dv is 0 past T)
                for (int k = 0; k < CONV_K; k++) { acc[i][k] += dc[CONV_K - 1][i] * (float)win[k].v[i]; }
            }
        }
        int t = s - (CONV_K - 1);  // dconv[t .. s] known: dinp[t] is complete
        if (r >= CONV_K - 1 && t < T) {
            x128 o;
#pragma unroll
            for (int i = 0; i < X128; i++) {
                float d = 0.0f;
                for (int k = 0; k < CONV_K; k++) { d += dc[CONV_K - 1 - k][i] * wr[i][k]; }
                o.v[i] = (floatX)d;
            }
            store128(dinp + ((size_t)b * T + t) * in_stride + (size_t)j * X128, o);
        }
    }
    int tile = b * conv_tiles(T) + t0 / CONV_ROWS;
    float* p = partial + ((size_t)tile * CH + (size_t)j * X128) * CONV_K;
    for (int i = 0; i < X128; i++) {
        for (int k = 0; k < CONV_K; k++) { p[i * CONV_K + k] = acc[i][k]; }
    }
}

// dw[o] += Σ_tile partial[tile, o] for the CH·K weights o, in a fixed order: block (32 weights,
// CONV_SUM_GROUPS groups), group g adds tiles g, g + GROUPS, ..., then the groups in order.
#define CONV_SUM_GROUPS 16
__global__ void conv_weight_sum_kernel(float* dw, const float* partial, int tiles, int n) {
    __shared__ float part[CONV_SUM_GROUPS][32];
    int o = blockIdx.x * 32 + threadIdx.x % 32, g = threadIdx.x / 32;
    float acc = 0.0f;
    if (o < n) {
        for (int t = g; t < tiles; t += CONV_SUM_GROUPS) { acc += partial[(size_t)t * n + o]; }
    }
    part[g][threadIdx.x % 32] = acc;
    __syncthreads();
    if (g == 0 && o < n) {
        float total = 0.0f;
        for (int r = 0; r < CONV_SUM_GROUPS; r++) { total += part[r][threadIdx.x]; }
        dw[o] += total;
    }
}

// floats of the conv backward's scratch (its weight-gradient partials) for a (B, T) batch of CH channels
static size_t conv_scratch_floats(int B, int T, int CH) {
    return (size_t)B * conv_tiles(T) * CH * CONV_K;
}

// The L2 norms run on groups of G lanes per (n, h) row, G the power of 2 that covers the head's
// D / X128 16-byte chunks (D 64 in bf16: 8 lanes, 4 rows a warp): a lane holds at most one chunk,
// the row's sums are shuffles within the group. (One warp a row with 2-byte accesses ran at a
// quarter of the bandwidth.)
static int l2norm_group(int D) {
    int G = 1;
    while (G * X128 < D) { G *= 2; }
    return G;
}
__device__ static inline float group_sum(float v, int G) {
    for (int off = G / 2; off > 0; off /= 2) { v += __shfl_xor_sync(0xffffffff, v, off); }
    return v;
}
// the lane's chunk: row (n, h) and column i within the head; 0 if it has none (every lane stays
// for the shuffles)
__device__ static inline int l2norm_lane(int N, int H, int D, int G, size_t* n, int* h, int* i) {
    size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / G;
    *n = row / H;
    *h = (int)(row % H);
    *i = (int)(threadIdx.x % G) * X128;
    return row < (size_t)N * H && *i < D;
}

// out (N, C) = scale x / sqrt(|x|^2 + eps) per head; x rows have stride in_stride.
__global__ void l2norm_forward_kernel(floatX* out, const floatX* inp, int in_stride, int N, int C, int H, float scale, int G) {
    int D = C / H, h, i;
    size_t n;
    int has = l2norm_lane(N, H, D, G, &n, &h, &i);
    x128 xv;
    float ss = 0.0f;
    if (has) {
        xv = load128(inp + n * in_stride + (size_t)h * D + i);
        for (int k = 0; k < X128; k++) { ss += (float)xv.v[k] * (float)xv.v[k]; }
    }
    float r = scale * rsqrtf(group_sum(ss, G) + (float)L2NORM_EPS);
    if (!has) { return; }
    x128 o;
    for (int k = 0; k < X128; k++) { o.v[k] = (floatX)((float)xv.v[k] * r); }
    store128(out + n * C + (size_t)h * D + i, o);
}

// dx = scale (dy - y (y·dy)) / |x|, y = x/|x|; writes (=) the rows of dinp it owns
__global__ void l2norm_backward_kernel(floatX* dinp, const floatX* dout, const floatX* inp, int in_stride, int N, int C, int H, float scale,
                                       int G) {
    int D = C / H, h, i;
    size_t n;
    int has = l2norm_lane(N, H, D, G, &n, &h, &i);
    x128 xv, dv;
    float ss = 0.0f, xdy = 0.0f;
    if (has) {
        xv = load128(inp + n * in_stride + (size_t)h * D + i);
        dv = load128(dout + n * C + (size_t)h * D + i);
        for (int k = 0; k < X128; k++) {
            ss += (float)xv.v[k] * (float)xv.v[k];
            xdy += (float)xv.v[k] * (float)dv.v[k];
        }
    }
    float inv = rsqrtf(group_sum(ss, G) + (float)L2NORM_EPS), ydy = group_sum(xdy, G) * inv;
    if (!has) { return; }
    x128 o;
    for (int k = 0; k < X128; k++) { o.v[k] = (floatX)(scale * ((float)dv.v[k] - (float)xv.v[k] * inv * ydy) * inv); }
    store128(dinp + n * in_stride + (size_t)h * D + i, o);
}

// beta = sigmoid(bpre) (gdn), gate = -exp(A_log) softplus(apre + dt_bias); one thread per (n, h).
// beta, gate (N, H); bpre, apre (and their gradients below) rows ps apart (the R layer's input projection).
__global__ void gates_forward_kernel(float* beta, float* gate, const floatX* bpre, const floatX* apre, int ps, const floatX* A_log,
                                     const floatX* dt_bias, int N, int H) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * H) { return; }
    int n = idx / H, h = idx % H;
    if (beta) { beta[idx] = sigmoidf_((float)bpre[(size_t)n * ps + h]); }
    gate[idx] = -expf((float)A_log[h]) * softplusf_((float)apre[(size_t)n * ps + h] + (float)dt_bias[h]);
}

// dbpre, dapre (=) per (n, h); one thread per (n, h)
__global__ void gates_backward_kernel(floatX* dbpre, floatX* dapre, const float* dbeta, const float* dgate, const float* beta,
                                      const floatX* apre, int ps, const floatX* A_log, const floatX* dt_bias, int N, int H) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * H) { return; }
    int n = idx / H, h = idx % H;
    if (dbpre) { dbpre[(size_t)n * ps + h] = (floatX)(dbeta[idx] * beta[idx] * (1.0f - beta[idx])); }
    dapre[(size_t)n * ps + h] = (floatX)(dgate[idx] * -expf((float)A_log[h]) * sigmoidf_((float)apre[(size_t)n * ps + h] + (float)dt_bias[h]));
}

// dA_log[h] += Σ_n dgate gate;  ddt_bias[h] += Σ_n dapre, dapre formed again in fp32 (the sum
// mostly cancels: summing the rounded floatX values would lose it). One block of 1024 per head.
#define GATES_PARAM_THREADS 1024
__global__ void __launch_bounds__(GATES_PARAM_THREADS) gates_backward_params_kernel(float* dA_log, float* ddt_bias, const float* dgate,
                                                                                     const float* gate, const floatX* apre, int ps,
                                                                                     const floatX* A_log, const floatX* dt_bias, int N, int H) {
    int h = blockIdx.x;
    float a = 0.0f, d = 0.0f, decay = -expf((float)A_log[h]), bias = (float)dt_bias[h];
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        float dg = dgate[(size_t)n * H + h];
        a += dg * gate[(size_t)n * H + h];
        d += dg * decay * sigmoidf_((float)apre[(size_t)n * ps + h] + bias);
    }
    a = block_sum(a);
    d = block_sum(d);
    if (threadIdx.x == 0) { dA_log[h] += a; ddt_bias[h] += d; }
}

static int conv_threads(int B, int T, int CH) { return B * conv_tiles(T) * (CH / X128); }

// act (B,T,CH) from inp (rows in_stride apart; in_stride and CH multiples of X128)
static void conv_silu_forward_gpu(floatX* act, const floatX* inp, int in_stride, const floatX* w, int B, int T, int CH, cudaStream_t stream) {
    conv_silu_forward_kernel<<<blocks_for(conv_threads(B, T, CH), 256), 256, 0, stream>>>(act, inp, in_stride, w, B, T, CH);
    cudaCheck(cudaGetLastError());
}

// dinp (=, rows in_stride apart like inp) and dw (+=) from dact; scratch holds conv_scratch_floats(B, T, CH)
static void conv_silu_backward_gpu(floatX* dinp, float* dw, const floatX* dact, const floatX* inp, int in_stride, const floatX* w, int B,
                                   int T, int CH, float* scratch, cudaStream_t stream) {
    conv_silu_backward_kernel<<<blocks_for(conv_threads(B, T, CH), 256), 256, 0, stream>>>(dinp, scratch, dact, inp, in_stride, w, B, T, CH);
    cudaCheck(cudaGetLastError());
    int n = CH * CONV_K;
    conv_weight_sum_kernel<<<blocks_for(n, 32), 32 * CONV_SUM_GROUPS, 0, stream>>>(dw, scratch, B * conv_tiles(T), n);
    cudaCheck(cudaGetLastError());
}

// in_stride, C and the head dim multiples of X128, the head dim at most 32 X128 (256 in bf16, 128 in fp32)
static void l2norm_forward_gpu(floatX* out, const floatX* inp, int in_stride, int N, int C, int H, float scale, cudaStream_t stream) {
    int G = l2norm_group(C / H);
    if (G > 32) { die("l2norm_forward_gpu: head dim %d, at most %d", C / H, 32 * X128); }
    l2norm_forward_kernel<<<blocks_for((size_t)N * H * G, 256), 256, 0, stream>>>(out, inp, in_stride, N, C, H, scale, G);
    cudaCheck(cudaGetLastError());
}

static void l2norm_backward_gpu(floatX* dinp, const floatX* dout, const floatX* inp, int in_stride, int N, int C, int H, float scale,
                                cudaStream_t stream) {
    int G = l2norm_group(C / H);
    if (G > 32) { die("l2norm_backward_gpu: head dim %d, at most %d", C / H, 32 * X128); }
    l2norm_backward_kernel<<<blocks_for((size_t)N * H * G, 256), 256, 0, stream>>>(dinp, dout, inp, in_stride, N, C, H, scale, G);
    cudaCheck(cudaGetLastError());
}

// beta (gdn; NULL for gla) and gate (N, H)
static void gates_forward_gpu(float* beta, float* gate, const floatX* bpre, const floatX* apre, int ps, const floatX* A_log,
                              const floatX* dt_bias, int N, int H, cudaStream_t stream) {
    gates_forward_kernel<<<blocks_for((size_t)N * H, 256), 256, 0, stream>>>(beta, gate, bpre, apre, ps, A_log, dt_bias, N, H);
    cudaCheck(cudaGetLastError());
}

// dbpre (gdn; NULL for gla), dapre (=); dA_log, ddt_bias (+=)
static void gates_backward_gpu(floatX* dbpre, floatX* dapre, float* dA_log, float* ddt_bias, const float* dbeta, const float* dgate,
                               const float* beta, const float* gate, const floatX* apre, int ps, const floatX* A_log, const floatX* dt_bias,
                               int N, int H, cudaStream_t stream) {
    gates_backward_kernel<<<blocks_for((size_t)N * H, 256), 256, 0, stream>>>(dbpre, dapre, dbeta, dgate, beta, apre, ps, A_log, dt_bias, N, H);
    cudaCheck(cudaGetLastError());
    gates_backward_params_kernel<<<H, GATES_PARAM_THREADS, 0, stream>>>(dA_log, ddt_bias, dgate, gate, apre, ps, A_log, dt_bias, N, H);
    cudaCheck(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// The recurrence

#define DELTA_CHUNK 64
#define DELTA_THREADS 512   // 16 warps: latency hiding for one block per SM; tile_mm fp32 uses the first 256
#define DELTA_MAX_D 64
// Row strides of the shared tiles, 4 mod 32: the mma fragment reads of a tile as it is hit 32 banks,
// transposed ones at most 2 lanes per bank
#define DL (DELTA_CHUNK + 4)
#define DELTA_SLOT (DELTA_CHUNK * DL)  // floats of one shared tile: (c, D), (c, c) and (D, D) all fit

// for (idx = thread; idx < n; idx += block) — every thread of the block takes a share
#define BLOCK_LOOP(idx, n) for (int idx = threadIdx.x; idx < (n); idx += blockDim.x)

// A shared tile X with stride DL read as it is (X[r][c]) or transposed (X[c][r]): its two strides
#define AS_IS(X) (X), DL, 1
#define TRANS(X) (X), 1, DL

__host__ __device__ static inline int delta_rule_n_chunks(int T) { return (T + DELTA_CHUNK - 1) / DELTA_CHUNK; }
// floats of the saved chunk-entry states (B, H, n_chunks, D, D)
static size_t delta_rule_state_floats(int B, int T, int C, int H) {
    size_t D = (size_t)C / H;
    return (size_t)B * H * delta_rule_n_chunks(T) * D * D;
}

// C (M, N) = cscale C + alpha rs[m] Σ_k A(m, k) B(k, n), shared-memory operands addressed through strides:
// A(m, k) = A[m am + k ak], B(k, n) = B[k bk + n bn], C(m, n) = C[m DL + n]; rs NULL means 1, cscale 0
// overwrites C. M, N multiples of 16 up to 64, K a multiple of 8. C must not alias A or B. Ends with a
// barrier. Two versions, as the attention has:
#ifdef PRECISION_FP32
// fp32 on CUDA cores (the FP32 build checks the chunked algebra to ~1e-6). Thread (ty, tx) of the
// 16 x 16 grid keeps a register tile of rows ty + 16r and columns tx + 16c.
__device__ static void tile_mm(float* Cm, const float* A, int am, int ak, const float* B, int bk, int bn,
                               int M, int N, int K, float alpha, const float* rs, float cscale) {
    if (threadIdx.x < 256) {  // a 16 x 16 thread grid
        int tx = threadIdx.x % 16, ty = threadIdx.x / 16, mr = M / 16, nc = N / 16;
        float acc[4][4] = {};
        for (int kk = 0; kk < K; kk++) {
            float a[4], b[4];
#pragma unroll
            for (int r = 0; r < 4; r++) { a[r] = r < mr ? A[(ty + 16 * r) * am + kk * ak] : 0.0f; }
#pragma unroll
            for (int c = 0; c < 4; c++) { b[c] = c < nc ? B[kk * bk + (tx + 16 * c) * bn] : 0.0f; }
#pragma unroll
            for (int r = 0; r < 4; r++) {
#pragma unroll
                for (int c = 0; c < 4; c++) { acc[r][c] += a[r] * b[c]; }
            }
        }
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int m = ty + 16 * r;
            float scale = alpha * (rs ? rs[m] : 1.0f);
#pragma unroll
            for (int c = 0; c < 4; c++) {
                if (r < mr && c < nc) {
                    float* out = Cm + m * DL + tx + 16 * c;
                    *out = (cscale == 0.0f ? 0.0f : cscale * *out) + scale * acc[r][c];
                }
            }
        }
    }
    __syncthreads();
}
#else
__device__ static inline uint32_t to_tf32(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

// d += a b for one 16 x 8 tile, K 8, tf32 in, fp32 accumulate. Fragments (g = lane / 4, t = lane % 4):
// a: (g, t) (g+8, t) (g, t+4) (g+8, t+4); b: (t, g) (t+4, g); d: (g, 2t) (g, 2t+1) (g+8, 2t) (g+8, 2t+1)
__device__ static inline void mma_tf32(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// tf32 tensor cores (10-bit mantissa operands, fp32 sums; the products of a chunk are short sums of
// bounded terms, and the bf16 build stores q, k, v in 8 bits anyway). C is cut into 16 x 8 tiles,
// numbered row-major; warp w takes `per` consecutive ones, all in one 16-row block, so it loads each
// A fragment once per k step.
__device__ static void tile_mm(float* Cm, const float* A, int am, int ak, const float* B, int bk, int bn,
                               int M, int N, int K, float alpha, const float* rs, float cscale) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int ncol = N / 8, total = (M / 16) * ncol, per = (total + DELTA_THREADS / 32 - 1) / (DELTA_THREADS / 32);
    int first = warp * per, cnt = min(per, total - first);
    if (cnt > 0) {
        int m0 = (first / ncol) * 16, n0 = (first % ncol) * 8;
        float acc[4][4] = {};
        for (int kk = 0; kk < K; kk += 8) {
            uint32_t a[4];
            a[0] = to_tf32(A[(m0 + g) * am + (kk + t) * ak]);
            a[1] = to_tf32(A[(m0 + g + 8) * am + (kk + t) * ak]);
            a[2] = to_tf32(A[(m0 + g) * am + (kk + t + 4) * ak]);
            a[3] = to_tf32(A[(m0 + g + 8) * am + (kk + t + 4) * ak]);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                if (i < cnt) {
                    int n = n0 + 8 * i + g;
                    mma_tf32(acc[i], a, to_tf32(B[(kk + t) * bk + n * bn]), to_tf32(B[(kk + t + 4) * bk + n * bn]));
                }
            }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (i < cnt) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int m = m0 + g + 8 * (e / 2), n = n0 + 8 * i + 2 * t + e % 2;
                    float* out = Cm + m * DL + n;
                    *out = (cscale == 0.0f ? 0.0f : cscale * *out) + alpha * (rs ? rs[m] : 1.0f) * acc[i][e];
                }
            }
        }
    }
    __syncthreads();
}
#endif

// out[r] += alpha rs[r] Σ_i X(r, i) Y(r, i) for r < rows, i < cols, X(r, i) = X[r xr + i xi] (Y alike);
// rs NULL means 1. One warp per row, lanes across i. Ends with a barrier.
__device__ static void rows_dot(float* out, float alpha, const float* rs, const float* X, int xr, int xi, const float* Y, int yr,
                                int yi, int rows, int cols) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int r = warp; r < rows; r += DELTA_THREADS / 32) {
        float acc = 0.0f;
        for (int i = lane; i < cols; i += 32) { acc += X[r * xr + i * xi] * Y[r * yr + i * yi]; }
        acc = warp_sum(acc);
        if (lane == 0) { out[r] += alpha * (rs ? rs[r] : 1.0f) * acc; }
    }
    __syncthreads();
}

// x[t] = Σ_{s<=t} x[s] over the DELTA_CHUNK entries, by warp 0: each lane owns 2 entries, then a warp
// scan over the lanes. Ends with a barrier.
__device__ static void chunk_prefix_sum(float* x) {
    if (threadIdx.x < 32) {
        int l = threadIdx.x;
        float first = x[2 * l], pair = first + x[2 * l + 1], incl = pair;
        for (int off = 1; off < 32; off *= 2) {
            float y = __shfl_up_sync(0xffffffff, incl, off);
            if (l >= off) { incl += y; }
        }
        x[2 * l] = incl - pair + first;
        x[2 * l + 1] = incl;
    }
    __syncthreads();
}

// ----------------------------------------------------------------------------
// Getting a chunk into shared memory. Every global read is a cp.async, so all of a chunk's loads are in
// flight at once (one memory round trip, not one per element per thread); a floatX tile lands in
// the tail of the fp32 tile it becomes ("its slot") and is widened in place by delta_unstage.
// (cp_async and its group waits: dataloader.h)

// every thread's copies have landed and are visible to the block
__device__ static void delta_fetch_wait() {
    cp_async_wait_all();
    __syncthreads();
}

// the floatX staging tile (c, cols) packed, in the tail of a (c, DL) fp32 slot
__device__ static inline floatX* delta_stage(float* slot, int cols) {
    return (floatX*)(slot + DELTA_SLOT) - DELTA_CHUNK * cols;
}

// starts copying src[row0 + t][col0 .. col0 + cols) (floatX rows of `stride`) into slot's stage;
// rows t >= n are zeros
__device__ static void delta_fetch_x(float* slot, const floatX* src, int stride, size_t row0, int n, int col0, int cols) {
    floatX* stage = delta_stage(slot, cols);
    int per_row = cols / X128;
    BLOCK_LOOP(idx, DELTA_CHUNK * per_row) {
        int t = idx / per_row, i = (idx % per_row) * X128;
        cp_async(stage + t * cols + i, src + (row0 + min(t, n - 1)) * stride + col0 + i, 16, t < n ? 16 : 0);
    }
}

// starts copying the contiguous fp32 (rows, cols) src into dst with row stride DL
__device__ static void delta_fetch_f(float* dst, const float* src, int rows, int cols) {
    int per_row = cols / 4;
    BLOCK_LOOP(idx, rows * per_row) {
        int r = idx / per_row, i = (idx % per_row) * 4;
        cp_async(dst + r * DL + i, src + (size_t)r * cols + i, 16, 16);
    }
}

// dst (c, cols) = scale_t x the tile staged in slot (dst may be slot itself: everything is read into
// registers before anything is written); scale NULL means 1. Ends with a barrier.
#define DELTA_STAGE_VECS (DELTA_CHUNK * DELTA_MAX_D / 4 / DELTA_THREADS)  // x128 per thread, at most (fp32 build)
__device__ static void delta_unstage(float* dst, float* slot, int cols, const float* scale) {
    const floatX* stage = delta_stage(slot, cols);
    int per_row = cols / X128, nvec = DELTA_CHUNK * per_row;
    x128 r[DELTA_STAGE_VECS];
#pragma unroll
    for (int j = 0; j < DELTA_STAGE_VECS; j++) {
        int idx = threadIdx.x + j * DELTA_THREADS;
        if (idx < nvec) { r[j] = load128(stage + idx * X128); }
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < DELTA_STAGE_VECS; j++) {
        int idx = threadIdx.x + j * DELTA_THREADS;
        if (idx < nvec) {
            int t = idx / per_row, i = (idx % per_row) * X128;
            float sc = scale ? scale[t] : 1.0f;
            for (int e = 0; e < X128; e++) { dst[t * DL + i + e] = sc * (float)r[j].v[e]; }
        }
    }
    __syncthreads();
}

// dst rows of D floats (contiguous) <- src (rows, D) with row stride DL
__device__ static void delta_store_f(float* dst, const float* src, int rows, int D) {
    BLOCK_LOOP(idx, rows * D) { dst[idx] = src[(idx / D) * DL + idx % D]; }
}

// dst[row0 + t][col0 + i] (floatX rows of `stride`) <- scale_t src[t][i] for t < n; scale NULL means 1
__device__ static void delta_store_x(floatX* dst, int stride, size_t row0, int n, int col0, const float* src, int D, const float* scale) {
    int per_row = D / X128;
    BLOCK_LOOP(idx, n * per_row) {
        int t = idx / per_row, i = (idx % per_row) * X128;
        float sc = scale ? scale[t] : 1.0f;
        x128 out;
        for (int e = 0; e < X128; e++) { out.v[e] = (floatX)(sc * src[t * DL + i + e]); }
        store128(dst + (row0 + t) * stride + col0 + i, out);
    }
}

// The gates of one chunk in shared memory, (c) each; rows past the sequence end have g 0 and β 0, so
// they change nothing.
struct DeltaGates {
    float *g;     // log α, then (delta_gates_finish) its cumulative sum within the chunk
    float *b;     // b_t = exp(g_t)
    float *w;     // w_t = exp(g_last - g_t), the weight of token t in the state leaving the chunk
    float *beta;  // β_t (0 for gla)
    float *bb;    // β_t b_t
};
#define DELTA_GATE_VECS 5

// Carves the gate vectors out of shared memory at `at`; returns the first float past them.
__device__ static float* delta_gates_carve(DeltaGates* gv, float* at) {
    gv->g = at;
    gv->b = gv->g + DELTA_CHUNK;
    gv->w = gv->b + DELTA_CHUNK;
    gv->beta = gv->w + DELTA_CHUNK;
    gv->bb = gv->beta + DELTA_CHUNK;
    return gv->bb + DELTA_CHUNK;
}

// starts copying log α and β (NULL: zeros) of the chunk starting at row0 = b T + t0 with n tokens
__device__ static void delta_fetch_gates(DeltaGates gv, const float* beta, const float* gate, size_t row0, int n, int H, int h) {
    BLOCK_LOOP(t, DELTA_CHUNK) {
        size_t at = (row0 + min(t, n - 1)) * H + h;
        cp_async(gv.g + t, gate + at, 4, t < n ? 4 : 0);
        if (beta) {
            cp_async(gv.beta + t, beta + at, 4, t < n ? 4 : 0);
        } else {
            gv.beta[t] = 0.0f;
        }
    }
}

// after the fetch has landed: g to its cumulative sum, then b, w, βb
__device__ static void delta_gates_finish(DeltaGates gv) {
    chunk_prefix_sum(gv.g);
    BLOCK_LOOP(t, DELTA_CHUNK) {
        gv.b[t] = expf(gv.g[t]);
        gv.w[t] = expf(gv.g[DELTA_CHUNK - 1] - gv.g[t]);
        gv.bb[t] = gv.beta[t] * gv.b[t];
    }
    __syncthreads();
}

// X = (I + A)⁻¹ for a strictly lower-triangular (c, c) A, both stride DL; Y is (16, c) scratch.
// The 16 x 16 diagonal blocks first (one thread per column, forward substitution), then block row
// i of the inverse from the rows above it: X[i][<i] = -X[i][i] (A[i][<i] X[<i][<i]).
__device__ static void unit_lower_inverse(float* X, const float* A, float* Y) {
    BLOCK_LOOP(idx, DELTA_SLOT) { X[idx] = 0.0f; }
    __syncthreads();
    if (threadIdx.x < DELTA_CHUNK) {
        int j = threadIdx.x, base = j & ~15;
        for (int t = j; t < base + 16; t++) {
            float x = t == j ? 1.0f : 0.0f;
            for (int s = j; s < t; s++) { x -= A[t * DL + s] * X[s * DL + j]; }
            X[t * DL + j] = x;
        }
    }
    __syncthreads();
    for (int i = 16; i < DELTA_CHUNK; i += 16) {
        BLOCK_LOOP(idx, 16 * i) {  // Y[r][j] = Σ_{j<=s<i} A[i+r][s] X[s][j]
            int r = idx / i, j = idx % i;
            float acc = 0.0f;
            for (int s = j; s < i; s++) { acc += A[(i + r) * DL + s] * X[s * DL + j]; }
            Y[r * DL + j] = acc;
        }
        __syncthreads();
        BLOCK_LOOP(idx, 16 * i) {  // X[i+r][j] = -Σ_{m<=r} X[i+r][i+m] Y[m][j]
            int r = idx / i, j = idx % i;
            float acc = 0.0f;
            for (int m = 0; m <= r; m++) { acc += X[(i + r) * DL + i + m] * Y[m * DL + j]; }
            X[(i + r) * DL + j] = -acc;
        }
        __syncthreads();
    }
}

// gdn, the UT form of the delta rule within a chunk (K in sK, V staged in vslot):
//   Akk = K Kᵀ, A[t][s] = β_t Γ[t][s] Akk[t][s] (s < t), Ti = (I + A)⁻¹,
//   Ũ = Ti diag(β) V, W = Ti diag(β b) K, so that the pseudo-values are U = Ũ - W S0ᵀ.
// sTmp is scratch; vslot may be sW (V is taken before W is written), none of the others.
__device__ static void delta_solve(float* sTi, float* sUt, float* sW, float* sAkk, float* sTmp, const float* sK, DeltaGates gv,
                                   float* vslot, int D) {
    tile_mm(sAkk, AS_IS(sK), TRANS(sK), DELTA_CHUNK, DELTA_CHUNK, D, 1.0f, NULL, 0.0f);
    BLOCK_LOOP(idx, DELTA_CHUNK * DELTA_CHUNK) {
        int t = idx / DELTA_CHUNK, s = idx % DELTA_CHUNK;
        sTmp[t * DL + s] = s < t ? gv.beta[t] * expf(gv.g[t] - gv.g[s]) * sAkk[t * DL + s] : 0.0f;
    }
    __syncthreads();
    unit_lower_inverse(sTi, sTmp, sUt);
    delta_unstage(sTmp, vslot, D, gv.beta);
    tile_mm(sUt, AS_IS(sTi), AS_IS(sTmp), DELTA_CHUNK, D, DELTA_CHUNK, 1.0f, NULL, 0.0f);
    BLOCK_LOOP(idx, DELTA_CHUNK * D) { sTmp[(idx / D) * DL + idx % D] = gv.bb[idx / D] * sK[(idx / D) * DL + idx % D]; }
    __syncthreads();
    tile_mm(sW, AS_IS(sTi), AS_IS(sTmp), DELTA_CHUNK, D, DELTA_CHUNK, 1.0f, NULL, 0.0f);
}

// P = Γ ⊙ (Q Kᵀ), lower triangle with the diagonal (s <= t)
__device__ static void delta_chunk_p(float* sP, const float* sQ, const float* sK, DeltaGates gv, int D) {
    tile_mm(sP, AS_IS(sQ), TRANS(sK), DELTA_CHUNK, DELTA_CHUNK, D, 1.0f, NULL, 0.0f);
    BLOCK_LOOP(idx, DELTA_CHUNK * DELTA_CHUNK) {
        int t = idx / DELTA_CHUNK, s = idx % DELTA_CHUNK;
        sP[t * DL + s] = s <= t ? expf(gv.g[t] - gv.g[s]) * sP[t * DL + s] : 0.0f;
    }
    __syncthreads();
}

// Where a chunk block is: blockIdx.x = (b H + h) n_chunks + chunk
struct DeltaPos {
    int b, h, chunk, t0, n, D;
    size_t row0;  // b T + t0
    size_t tile;  // offset of the chunk's (c, D) scratch tile: ((b H + h) n_chunks + chunk) c D
    size_t state; // offset of the chunk's (D, D) state
};

__device__ static DeltaPos delta_pos(int chunk_index, int T, int C, int H) {
    DeltaPos p;
    int n_chunks = delta_rule_n_chunks(T);
    p.chunk = chunk_index % n_chunks;
    p.h = (chunk_index / n_chunks) % H;
    p.b = chunk_index / (n_chunks * H);
    p.D = C / H;
    p.t0 = p.chunk * DELTA_CHUNK;
    p.n = min(DELTA_CHUNK, T - p.t0);
    p.row0 = (size_t)p.b * T + p.t0;
    p.tile = (size_t)chunk_index * DELTA_CHUNK * p.D;
    p.state = (size_t)chunk_index * p.D * p.D;
    return p;
}

// ----------------------------------------------------------------------------
// CUDA kernels. Chunk kernels: grid B H n_chunks, one chunk each, all in parallel. State passes:
// grid B H, one block carries one head's state through the chunks in order, fetching chunk c + 1
// while it computes chunk c (two buffers).

// gdn: Ũ and W of every chunk into the scratch tiles (B, H, n_chunks, c, D)
__global__ void __launch_bounds__(DELTA_THREADS) delta_prep_kernel(float* Ut, float* W, const floatX* k, const floatX* v, int vstride, const float* beta,
                                  const float* gate, int T, int C, int H) {
    extern __shared__ float smem[];
    DeltaPos p = delta_pos(blockIdx.x, T, C, H);
    float *sK = smem, *sAkk = sK + DELTA_SLOT, *sTmp = sAkk + DELTA_SLOT, *sTi = sTmp + DELTA_SLOT;
    float *sUt = sTi + DELTA_SLOT, *sW = sUt + DELTA_SLOT;
    DeltaGates gv;
    delta_gates_carve(&gv, sW + DELTA_SLOT);
    delta_fetch_x(sK, k, C, p.row0, p.n, p.h * p.D, p.D);
    delta_fetch_x(sW, v, vstride, p.row0, p.n, p.h * p.D, p.D);  // V waits in W's slot
    delta_fetch_gates(gv, beta, gate, p.row0, p.n, H, p.h);
    delta_fetch_wait();
    delta_gates_finish(gv);
    delta_unstage(sK, sK, p.D, NULL);
    delta_solve(sTi, sUt, sW, sAkk, sTmp, sK, gv, sW, p.D);
    delta_store_f(Ut + p.tile, sUt, DELTA_CHUNK, p.D);
    delta_store_f(W + p.tile, sW, DELTA_CHUNK, p.D);
}

// The state pass's buffer for one chunk: three tiles and the gates
#define DELTA_FWD_BUF (3 * DELTA_SLOT + DELTA_GATE_VECS * DELTA_CHUNK)

// Starts fetching chunk `chunk` of head bh for the forward state pass into buf: K, Ũ and W (gdn) or
// V (gla), the gates.
__device__ static void delta_state_forward_fetch(float* buf, int chunk, const float* Ut, const float* W, const floatX* k,
                                                 const floatX* v, int vstride, const float* gate, int T, int C, int H, int mixer) {
    DeltaPos p = delta_pos(blockIdx.x * delta_rule_n_chunks(T) + chunk, T, C, H);
    float *sK = buf, *sW = sK + DELTA_SLOT, *sU = sW + DELTA_SLOT;
    DeltaGates gv;
    delta_gates_carve(&gv, sU + DELTA_SLOT);
    delta_fetch_x(sK, k, C, p.row0, p.n, p.h * p.D, p.D);
    if (mixer == MIXER_GDN) {
        delta_fetch_f(sU, Ut + p.tile, DELTA_CHUNK, p.D);
        delta_fetch_f(sW, W + p.tile, DELTA_CHUNK, p.D);
    } else {
        delta_fetch_x(sU, v, vstride, p.row0, p.n, p.h * p.D, p.D);
    }
    delta_fetch_gates(gv, NULL, gate, p.row0, p.n, H, p.h);
    cp_async_commit();
}

// states (B, H, n_chunks, D, D): the state entering each chunk. Per chunk:
//   U = Ũ - W S0ᵀ (gla: U = V),  S_end = b_last S0 + Uᵀ diag(w) K
__global__ void __launch_bounds__(DELTA_THREADS) delta_state_forward_kernel(float* states, const float* Ut, const float* W, const floatX* k, const floatX* v,
                                           int vstride, const float* gate, int T, int C, int H, int mixer) {
    extern __shared__ float smem[];
    int D = C / H, n_chunks = delta_rule_n_chunks(T);
    float* sS = smem;  // (D, D)
    BLOCK_LOOP(idx, DELTA_SLOT) { sS[idx] = 0.0f; }
    delta_state_forward_fetch(sS + DELTA_SLOT, 0, Ut, W, k, v, vstride, gate, T, C, H, mixer);
    for (int chunk = 0; chunk < n_chunks; chunk++) {
        float* buf = sS + DELTA_SLOT + (chunk % 2) * DELTA_FWD_BUF;
        if (chunk + 1 < n_chunks) {
            float* next = sS + DELTA_SLOT + ((chunk + 1) % 2) * DELTA_FWD_BUF;
            delta_state_forward_fetch(next, chunk + 1, Ut, W, k, v, vstride, gate, T, C, H, mixer);
            cp_async_wait_but_last();
        } else {
            cp_async_wait_all();
        }
        __syncthreads();
        float *sK = buf, *sW = sK + DELTA_SLOT, *sU = sW + DELTA_SLOT;
        DeltaGates gv;
        delta_gates_carve(&gv, sU + DELTA_SLOT);
        delta_gates_finish(gv);
        delta_store_f(states + ((size_t)blockIdx.x * n_chunks + chunk) * D * D, sS, D, D);
        delta_unstage(sK, sK, D, gv.w);  // w_s k_s
        if (mixer == MIXER_GDN) {
            tile_mm(sU, AS_IS(sW), TRANS(sS), DELTA_CHUNK, D, D, -1.0f, NULL, 1.0f);
        } else {
            delta_unstage(sU, sU, D, NULL);
        }
        tile_mm(sS, TRANS(sU), AS_IS(sK), D, D, DELTA_CHUNK, 1.0f, NULL, gv.b[DELTA_CHUNK - 1]);
    }
}

// o = diag(b) Q S0ᵀ + P U per chunk, U = Ũ - W S0ᵀ (gla: V)
__global__ void __launch_bounds__(DELTA_THREADS) delta_output_kernel(floatX* o, const float* states, const float* Ut, const float* W, const floatX* q,
                                    const floatX* k, const floatX* v, int vstride, const float* gate, int T, int C, int H, int mixer) {
    extern __shared__ float smem[];
    DeltaPos p = delta_pos(blockIdx.x, T, C, H);
    int D = p.D;
    float *sQ = smem, *sK = sQ + DELTA_SLOT, *sS0 = sK + DELTA_SLOT, *sU = sS0 + DELTA_SLOT, *sW = sU + DELTA_SLOT;
    float *sP = sW + DELTA_SLOT;
    DeltaGates gv;
    delta_gates_carve(&gv, sP + DELTA_SLOT);
    delta_fetch_x(sQ, q, C, p.row0, p.n, p.h * D, D);
    delta_fetch_x(sK, k, C, p.row0, p.n, p.h * D, D);
    delta_fetch_f(sS0, states + p.state, D, D);
    if (mixer == MIXER_GDN) {
        delta_fetch_f(sU, Ut + p.tile, DELTA_CHUNK, D);
        delta_fetch_f(sW, W + p.tile, DELTA_CHUNK, D);
    } else {
        delta_fetch_x(sU, v, vstride, p.row0, p.n, p.h * D, D);
    }
    delta_fetch_gates(gv, NULL, gate, p.row0, p.n, H, p.h);
    delta_fetch_wait();
    delta_gates_finish(gv);
    delta_unstage(sQ, sQ, D, NULL);
    delta_unstage(sK, sK, D, NULL);
    if (mixer == MIXER_GDN) {
        tile_mm(sU, AS_IS(sW), TRANS(sS0), DELTA_CHUNK, D, D, -1.0f, NULL, 1.0f);
    } else {
        delta_unstage(sU, sU, D, NULL);
    }
    delta_chunk_p(sP, sQ, sK, gv, D);
    float* sO = sW;
    tile_mm(sO, AS_IS(sQ), TRANS(sS0), DELTA_CHUNK, D, D, 1.0f, gv.b, 0.0f);
    tile_mm(sO, AS_IS(sP), AS_IS(sU), DELTA_CHUNK, D, DELTA_CHUNK, 1.0f, NULL, 1.0f);
    delta_store_x(o, C, p.row0, p.n, p.h * D, sO, D, NULL);
}

// Backward, before the state pass: gdn W per chunk (as in the forward), and for both modes the part of
// dU local to the chunk, dUl = Pᵀ dO; both into scratch tiles (B, H, n_chunks, c, D).
__global__ void __launch_bounds__(DELTA_THREADS) delta_backward_prep_kernel(float* W, float* dUl, const floatX* dout, const floatX* q, const floatX* k,
                                           const floatX* v, int vstride, const float* beta, const float* gate, int T, int C,
                                           int H, int mixer) {
    extern __shared__ float smem[];
    DeltaPos p = delta_pos(blockIdx.x, T, C, H);
    int D = p.D;
    float *sQ = smem, *sK = sQ + DELTA_SLOT, *sdO = sK + DELTA_SLOT, *sAkk = sdO + DELTA_SLOT, *sTmp = sAkk + DELTA_SLOT;
    float *sTi = sTmp + DELTA_SLOT, *sUt = sTi + DELTA_SLOT, *sW = sUt + DELTA_SLOT;
    DeltaGates gv;
    delta_gates_carve(&gv, sW + DELTA_SLOT);
    delta_fetch_x(sQ, q, C, p.row0, p.n, p.h * D, D);
    delta_fetch_x(sK, k, C, p.row0, p.n, p.h * D, D);
    delta_fetch_x(sdO, dout, C, p.row0, p.n, p.h * D, D);
    if (mixer == MIXER_GDN) { delta_fetch_x(sW, v, vstride, p.row0, p.n, p.h * D, D); }
    delta_fetch_gates(gv, beta, gate, p.row0, p.n, H, p.h);
    delta_fetch_wait();
    delta_gates_finish(gv);
    delta_unstage(sQ, sQ, D, NULL);
    delta_unstage(sK, sK, D, NULL);
    delta_unstage(sdO, sdO, D, NULL);
    if (mixer == MIXER_GDN) {
        delta_solve(sTi, sUt, sW, sAkk, sTmp, sK, gv, sW, D);
        delta_store_f(W + p.tile, sW, DELTA_CHUNK, D);
    }
    float *sP = sAkk, *sdUl = sTmp;
    delta_chunk_p(sP, sQ, sK, gv, D);
    tile_mm(sdUl, TRANS(sP), AS_IS(sdO), DELTA_CHUNK, D, DELTA_CHUNK, 1.0f, NULL, 0.0f);
    delta_store_f(dUl + p.tile, sdUl, DELTA_CHUNK, D);
}

#define DELTA_BWD_BUF (5 * DELTA_SLOT + DELTA_GATE_VECS * DELTA_CHUNK)

// Starts fetching chunk `chunk` of head bh for the backward state pass into buf: Q, K, W (gdn), dUl,
// dO, the gates.
__device__ static void delta_state_backward_fetch(float* buf, int chunk, const float* W, const float* dUl, const floatX* dout,
                                                  const floatX* q, const floatX* k, const float* gate, int T, int C, int H,
                                                  int mixer) {
    DeltaPos p = delta_pos(blockIdx.x * delta_rule_n_chunks(T) + chunk, T, C, H);
    float *sQ = buf, *sK = sQ + DELTA_SLOT, *sW = sK + DELTA_SLOT, *sdU = sW + DELTA_SLOT, *sdO = sdU + DELTA_SLOT;
    DeltaGates gv;
    delta_gates_carve(&gv, sdO + DELTA_SLOT);
    delta_fetch_x(sQ, q, C, p.row0, p.n, p.h * p.D, p.D);
    delta_fetch_x(sK, k, C, p.row0, p.n, p.h * p.D, p.D);
    if (mixer == MIXER_GDN) { delta_fetch_f(sW, W + p.tile, DELTA_CHUNK, p.D); }
    delta_fetch_f(sdU, dUl + p.tile, DELTA_CHUNK, p.D);
    delta_fetch_x(sdO, dout, C, p.row0, p.n, p.h * p.D, p.D);
    delta_fetch_gates(gv, NULL, gate, p.row0, p.n, H, p.h);
    cp_async_commit();
}

// dstates (B, H, n_chunks, D, D): dL/dS_end of each chunk, chunks in reverse. Per chunk:
//   dU = dUl + diag(w) K dSᵀ
//   dS0 = b_last dS + Σ_t b_t do_t q_tᵀ - dUᵀ W      (gla: no W term)
// The W term is Σ_t β_t b_t dr_t k_tᵀ with dR = Tiᵀ dU, regrouped as dUᵀ (Ti diag(βb) K).
__global__ void __launch_bounds__(DELTA_THREADS) delta_state_backward_kernel(float* dstates, const float* W, const float* dUl, const floatX* dout,
                                            const floatX* q, const floatX* k, const float* gate, int T, int C, int H, int mixer) {
    extern __shared__ float smem[];
    int D = C / H, n_chunks = delta_rule_n_chunks(T);
    float* sdS = smem;  // (D, D)
    BLOCK_LOOP(idx, DELTA_SLOT) { sdS[idx] = 0.0f; }
    // the last chunk goes where the loop looks for it: buffer (n_chunks - 1) % 2
    delta_state_backward_fetch(sdS + DELTA_SLOT + ((n_chunks - 1) % 2) * DELTA_BWD_BUF, n_chunks - 1, W, dUl, dout, q, k,
                               gate, T, C, H, mixer);
    for (int chunk = n_chunks - 1; chunk >= 0; chunk--) {
        float* buf = sdS + DELTA_SLOT + (chunk % 2) * DELTA_BWD_BUF;
        if (chunk > 0) {
            float* next = sdS + DELTA_SLOT + ((chunk - 1) % 2) * DELTA_BWD_BUF;
            delta_state_backward_fetch(next, chunk - 1, W, dUl, dout, q, k, gate, T, C, H, mixer);
            cp_async_wait_but_last();
        } else {
            cp_async_wait_all();
        }
        __syncthreads();
        float *sQ = buf, *sK = sQ + DELTA_SLOT, *sW = sK + DELTA_SLOT, *sdU = sW + DELTA_SLOT, *sdO = sdU + DELTA_SLOT;
        DeltaGates gv;
        delta_gates_carve(&gv, sdO + DELTA_SLOT);
        delta_gates_finish(gv);
        delta_store_f(dstates + ((size_t)blockIdx.x * n_chunks + chunk) * D * D, sdS, D, D);
        delta_unstage(sQ, sQ, D, NULL);
        delta_unstage(sK, sK, D, NULL);
        delta_unstage(sdO, sdO, D, gv.b);  // b_t do_t
        tile_mm(sdU, AS_IS(sK), TRANS(sdS), DELTA_CHUNK, D, D, 1.0f, gv.w, 1.0f);
        tile_mm(sdS, TRANS(sdO), AS_IS(sQ), D, D, DELTA_CHUNK, 1.0f, NULL, gv.b[DELTA_CHUNK - 1]);
        if (mixer == MIXER_GDN) { tile_mm(sdS, TRANS(sdU), AS_IS(sW), D, D, DELTA_CHUNK, -1.0f, NULL, 1.0f); }
    }
}

// All gradients of one chunk from its entry state S0 and dS = dL/dS_end (derivation: the header
// of this file). Writes (=) dq, dk, dv, dbeta (gdn) and dgate for the chunk's tokens.
__global__ void __launch_bounds__(DELTA_THREADS) delta_chunk_backward_kernel(floatX* dq, floatX* dk, floatX* dv, float* dbeta, float* dgate, const floatX* dout,
                                            const float* states, const float* dstates, const floatX* q, const floatX* k,
                                            const floatX* v, int vstride, const float* beta, const float* gate, int T, int C,
                                            int H, int mixer) {
    extern __shared__ float smem[];
    DeltaPos p = delta_pos(blockIdx.x, T, C, H);
    int D = p.D, c = DELTA_CHUNK, gdn = mixer == MIXER_GDN;
    float *sQ = smem, *sK = sQ + DELTA_SLOT, *sdO = sK + DELTA_SLOT, *sS0 = sdO + DELTA_SLOT, *sdS = sS0 + DELTA_SLOT;
    float *sAkk = sdS + DELTA_SLOT, *sTi = sAkk + DELTA_SLOT, *sU = sTi + DELTA_SLOT, *sdK = sU + DELTA_SLOT;
    float *sX = sdK + DELTA_SLOT, *sY = sX + DELTA_SLOT;
    DeltaGates gv;
    float* dg = delta_gates_carve(&gv, sY + DELTA_SLOT);  // (c) dL/dg_t
    float *dbt = dg + c, *dw = dbt + c;                   // (c) dL/dβ_t, dL/dw_t
    __shared__ float dS_S0;                               // <dS, S0>
    delta_fetch_x(sQ, q, C, p.row0, p.n, p.h * D, D);
    delta_fetch_x(sK, k, C, p.row0, p.n, p.h * D, D);
    delta_fetch_x(sdO, dout, C, p.row0, p.n, p.h * D, D);
    delta_fetch_f(sS0, states + p.state, D, D);
    delta_fetch_f(sdS, dstates + p.state, D, D);
    float* vslot = gdn ? sdK : sU;  // gdn: V waits in dK's slot for delta_solve
    delta_fetch_x(vslot, v, vstride, p.row0, p.n, p.h * D, D);
    delta_fetch_gates(gv, beta, gate, p.row0, p.n, H, p.h);
    delta_fetch_wait();
    delta_gates_finish(gv);
    delta_unstage(sQ, sQ, D, NULL);
    delta_unstage(sK, sK, D, NULL);
    delta_unstage(sdO, sdO, D, NULL);
    if (gdn) {  // U = Ũ - W S0ᵀ
        delta_solve(sTi, sU, sY, sAkk, sX, sK, gv, vslot, D);
        tile_mm(sU, AS_IS(sY), TRANS(sS0), c, D, D, -1.0f, NULL, 1.0f);
    } else {
        delta_unstage(sU, sU, D, NULL);
    }
    // S_end = b_last S0 + Uᵀ diag(w) K:  X = K dSᵀ, dw_s = u_s·X[s], dK = diag(w) U dS, g_last gets b_last <dS, S0>
    tile_mm(sX, AS_IS(sK), TRANS(sdS), c, D, D, 1.0f, NULL, 0.0f);
    tile_mm(sdK, AS_IS(sU), AS_IS(sdS), c, D, D, 1.0f, gv.w, 0.0f);
    BLOCK_LOOP(t, c) { dw[t] = 0.0f; dbt[t] = 0.0f; }
    __syncthreads();
    rows_dot(dw, 1.0f, NULL, AS_IS(sU), AS_IS(sX), c, D);
    float part = 0.0f;
    BLOCK_LOOP(idx, D * D) { part += sdS[(idx / D) * DL + idx % D] * sS0[(idx / D) * DL + idx % D]; }
    part = block_sum(part);
    if (threadIdx.x == 0) { dS_S0 = part; }
    // dU = Pᵀ dO + diag(w) X, into dS's tile (dS is used up)
    float *sP = sY, *sdU = sdS;
    delta_chunk_p(sP, sQ, sK, gv, D);
    BLOCK_LOOP(idx, c * D) { sdU[(idx / D) * DL + idx % D] = gv.w[idx / D] * sX[(idx / D) * DL + idx % D]; }
    __syncthreads();
    tile_mm(sdU, TRANS(sP), AS_IS(sdO), c, D, c, 1.0f, NULL, 1.0f);
    // dP = dO Uᵀ (s <= t); dg_t from P: Σ_s dP⊙P[t][s] - Σ_t2 dP⊙P[t2][t], and from w: -dw_t w_t
    tile_mm(sX, AS_IS(sdO), TRANS(sU), c, c, D, 1.0f, NULL, 0.0f);
    BLOCK_LOOP(t, c) { dg[t] = -dw[t] * gv.w[t]; }
    __syncthreads();
    rows_dot(dg, 1.0f, NULL, AS_IS(sX), AS_IS(sP), c, c);    // P is 0 above the diagonal
    rows_dot(dg, -1.0f, NULL, TRANS(sX), TRANS(sP), c, c);
    BLOCK_LOOP(idx, c * c) {  // dP ⊙ Γ, masked
        int t = idx / c, s = idx % c;
        sX[t * DL + s] = s <= t ? sX[t * DL + s] * expf(gv.g[t] - gv.g[s]) : 0.0f;
    }
    __syncthreads();
    // dQ = diag(b) dO S0 + (dP⊙Γ) K;  dK += (dP⊙Γ)ᵀ Q
    float* sdQ = sY;
    tile_mm(sdQ, AS_IS(sdO), AS_IS(sS0), c, D, D, 1.0f, gv.b, 0.0f);
    tile_mm(sdQ, AS_IS(sX), AS_IS(sK), c, D, c, 1.0f, NULL, 1.0f);
    delta_store_x(dq, C, p.row0, p.n, p.h * D, sdQ, D, NULL);
    tile_mm(sdK, TRANS(sX), AS_IS(sQ), c, D, c, 1.0f, NULL, 1.0f);
    // dg_t += b_t do_t·(S0 q_t);  g_last gets b_last <dS, S0> + Σ_s dw_s w_s
    tile_mm(sX, AS_IS(sQ), TRANS(sS0), c, D, D, 1.0f, NULL, 0.0f);
    rows_dot(dg, 1.0f, gv.b, AS_IS(sdO), AS_IS(sX), c, D);
    if (threadIdx.x == 0) {
        float acc = gv.b[c - 1] * dS_S0;
        for (int s = 0; s < c; s++) { acc += dw[s] * gv.w[s]; }
        dg[c - 1] += acc;
    }
    __syncthreads();
    if (gdn) {
        // dR = Tiᵀ dU;  R = diag(β) (V - diag(b) K S0ᵀ) gives dv = β dR, dβ, dg and dK -= diag(βb) dR S0
        float* sdR = sY;
        tile_mm(sdR, TRANS(sTi), AS_IS(sdU), c, D, c, 1.0f, NULL, 0.0f);
        tile_mm(sX, AS_IS(sK), TRANS(sS0), c, D, D, 1.0f, NULL, 0.0f);  // K S0ᵀ
        float* sV = sdO;                                                    // dO is used up
        delta_fetch_x(sV, v, vstride, p.row0, p.n, p.h * D, D);
        delta_fetch_wait();
        delta_unstage(sV, sV, D, NULL);
        rows_dot(dbt, 1.0f, NULL, AS_IS(sdR), AS_IS(sV), c, D);            // dβ_t = dr_t·(v_t - b_t S0 k_t)
        rows_dot(dbt, -1.0f, gv.b, AS_IS(sdR), AS_IS(sX), c, D);
        rows_dot(dg, -1.0f, gv.bb, AS_IS(sdR), AS_IS(sX), c, D);           // dg_t -= β_t b_t dr_t·(S0 k_t)
        tile_mm(sdK, AS_IS(sdR), AS_IS(sS0), c, D, D, -1.0f, gv.bb, 1.0f);
        // dA = -dR Uᵀ (s < t); A = β_t Γ Akk gives dβ_t += Σ_s dA Γ Akk, dg from dA⊙A (as t and as s),
        // and dKK = β_t Γ dA adds dKK K + dKKᵀ K to dK
        tile_mm(sX, AS_IS(sdR), TRANS(sU), c, c, D, -1.0f, NULL, 0.0f);
        BLOCK_LOOP(idx, c * c) {  // X = dA ⊙ Γ, masked
            int t = idx / c, s = idx % c;
            sX[t * DL + s] = s < t ? sX[t * DL + s] * expf(gv.g[t] - gv.g[s]) : 0.0f;
        }
        __syncthreads();
        rows_dot(dbt, 1.0f, NULL, AS_IS(sX), AS_IS(sAkk), c, c);
        rows_dot(dg, 1.0f, gv.beta, AS_IS(sX), AS_IS(sAkk), c, c);
        BLOCK_LOOP(idx, c * c) { sX[(idx / c) * DL + idx % c] *= gv.beta[idx / c]; }  // dKK
        __syncthreads();
        rows_dot(dg, -1.0f, NULL, TRANS(sX), TRANS(sAkk), c, c);
        tile_mm(sdK, AS_IS(sX), AS_IS(sK), c, D, c, 1.0f, NULL, 1.0f);
        tile_mm(sdK, TRANS(sX), AS_IS(sK), c, D, c, 1.0f, NULL, 1.0f);
        delta_store_x(dv, vstride, p.row0, p.n, p.h * D, sdR, D, gv.beta);
    } else {
        delta_store_x(dv, vstride, p.row0, p.n, p.h * D, sdU, D, NULL);
    }
    delta_store_x(dk, C, p.row0, p.n, p.h * D, sdK, D, NULL);
    // dgate_t = Σ_{t2 >= t} dg_t2 within the chunk (g_last lives at c-1 even when n < c):
    // the total minus the prefix sum before t
    __syncthreads();
    chunk_prefix_sum(dg);
    BLOCK_LOOP(t, p.n) {
        dgate[(p.row0 + t) * H + p.h] = dg[c - 1] - (t > 0 ? dg[t - 1] : 0.0f);
        if (gdn) { dbeta[(p.row0 + t) * H + p.h] = dbt[t]; }
    }
}

// ----------------------------------------------------------------------------
// kernel launchers

// shared memory of each kernel: (c, DL) tiles and gate vectors
#define DELTA_SMEM(slots, vecs) (((size_t)(slots) * DELTA_SLOT + (size_t)(vecs) * DELTA_CHUNK) * sizeof(float))
#define DELTA_SMEM_PREP DELTA_SMEM(6, DELTA_GATE_VECS)
#define DELTA_SMEM_STATE_FWD (DELTA_SMEM(1, 0) + 2 * DELTA_FWD_BUF * sizeof(float))
#define DELTA_SMEM_OUTPUT DELTA_SMEM(6, DELTA_GATE_VECS)
#define DELTA_SMEM_BWD_PREP DELTA_SMEM(8, DELTA_GATE_VECS)
#define DELTA_SMEM_STATE_BWD (DELTA_SMEM(1, 0) + 2 * DELTA_BWD_BUF * sizeof(float))
#define DELTA_SMEM_CHUNK_BWD DELTA_SMEM(11, DELTA_GATE_VECS + 3)

static void delta_v2_set_smem() {
    static int smem_set = 0;  // opt in to > 48 KiB of shared memory once
    if (!smem_set) {
        cudaCheck(cudaFuncSetAttribute(delta_prep_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)DELTA_SMEM_PREP));
        cudaCheck(cudaFuncSetAttribute(delta_state_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)DELTA_SMEM_STATE_FWD));
        cudaCheck(cudaFuncSetAttribute(delta_output_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)DELTA_SMEM_OUTPUT));
        cudaCheck(cudaFuncSetAttribute(delta_backward_prep_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)DELTA_SMEM_BWD_PREP));
        cudaCheck(cudaFuncSetAttribute(delta_state_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)DELTA_SMEM_STATE_BWD));
        cudaCheck(cudaFuncSetAttribute(delta_chunk_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)DELTA_SMEM_CHUNK_BWD));
        smem_set = 1;
    }
}

// v2 forward: gdn prep (Ũ, W per chunk, parallel) -> state pass (sequential in chunks) -> output (parallel)
static void delta_v2_forward(floatX* o, float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                   const float* beta, const float* gate, int B, int T, int C, int H, int mixer,
                                   float* scratch, cudaStream_t stream) {
    delta_v2_set_smem();
    int chunks = B * H * delta_rule_n_chunks(T);
    float* Ut = scratch;
    float* W = Ut + (size_t)chunks * DELTA_CHUNK * (C / H);
    if (mixer == MIXER_GDN) {
        delta_prep_kernel<<<chunks, DELTA_THREADS, DELTA_SMEM_PREP, stream>>>(Ut, W, k, v, vstride, beta, gate, T, C, H);
        cudaCheck(cudaGetLastError());
    }
    delta_state_forward_kernel<<<B * H, DELTA_THREADS, DELTA_SMEM_STATE_FWD, stream>>>(states, Ut, W, k, v, vstride, gate, T, C, H,
                                                                                      mixer);
    cudaCheck(cudaGetLastError());
    delta_output_kernel<<<chunks, DELTA_THREADS, DELTA_SMEM_OUTPUT, stream>>>(o, states, Ut, W, q, k, v, vstride, gate, T, C, H, mixer);
    cudaCheck(cudaGetLastError());
}

// v2 backward: prep (W, dUl per chunk, parallel) -> dS state pass (reverse, sequential) -> gradients (parallel)
static void delta_v2_backward(floatX* dq, floatX* dk, floatX* dv, float* dbeta, float* dgate, const floatX* dout,
                                    const float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                    const float* beta, const float* gate, int B, int T, int C, int H, int mixer,
                                    float* scratch, cudaStream_t stream) {
    delta_v2_set_smem();
    int chunks = B * H * delta_rule_n_chunks(T);
    size_t tile = (size_t)chunks * DELTA_CHUNK * (C / H);
    float* W = scratch + tile;
    float *dUl = W + tile, *dstates = dUl + tile;
    delta_backward_prep_kernel<<<chunks, DELTA_THREADS, DELTA_SMEM_BWD_PREP, stream>>>(W, dUl, dout, q, k, v, vstride, beta, gate,
                                                                                      T, C, H, mixer);
    cudaCheck(cudaGetLastError());
    delta_state_backward_kernel<<<B * H, DELTA_THREADS, DELTA_SMEM_STATE_BWD, stream>>>(dstates, W, dUl, dout, q, k, gate, T, C, H,
                                                                                        mixer);
    cudaCheck(cudaGetLastError());
    delta_chunk_backward_kernel<<<chunks, DELTA_THREADS, DELTA_SMEM_CHUNK_BWD, stream>>>(
        dq, dk, dv, dbeta, dgate, dout, states, dstates, q, k, v, vstride, beta, gate, T, C, H, mixer);
    cudaCheck(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// v3 (bf16 build, head dim 64 or 128): the same chunked algebra with bf16 tiles in shared memory
// and mma.sync m16n8k16 products whose fp32 sums stay in registers. 4 warps a block; in every
// (c, ·) product warp w owns rows 16w..16w+15, so per-row work (gates, masks, row sums) needs no
// barrier. What v2 does differently and why v3 is faster:
//  - state passes split each head's state by value rows: block (b h, slab) carries D/2 rows of S
//    (or dS), 2·B·H blocks instead of B·H (U = Ũ - W S0ᵀ and S_end = b_last S0 + Uᵀ diag(w) K
//    never mix value rows; the backward pass alike);
//  - Ti is solved once per chunk in each direction (v2: three times), U leaves the forward state
//    pass and dU the backward one, so the output and gradient kernels do not form them again;
//  - operands are bf16 (fp32 state and sums, as fla): half the shared memory, two or three blocks an SM;
//  - the solve's diagonal blocks are substituted in registers and its block rows are tensor-core
//    products (v2: element loops with a barrier each); the state passes take their gates per warp;
//  - the trainer's call also hands the L2 norms' backward of q and k to the gradient kernel.
// Measured on an H200 (dev/bench/README.md): Gated DeltaNet 6.45 -> 1.39 ms forward + backward.
// Scratch (bf16, (B, H, n_chunks, ·) per chunk): Ũ then U (c, D), W (c, D), dUl then dU (c, D),
// Ti (c, c); then dstates fp32 (D, D). q, k, v, o and gradients are bf16 (floatX of this build).
#ifdef PRECISION_BF16
#define D3_THREADS 128
#define D3_PAD 8                         // bf16 padding of a shared row: ldmatrix rows hit distinct banks
#define D3_LDC (DELTA_CHUNK + D3_PAD)    // row stride of (c, c) tiles
#define D3_N 0  // operand as stored: X (M, K) row-major, Y (K, N) row-major
#define D3_T 1  // operand transposed: X stored (K, M), Y stored (N, K)

__host__ __device__ static inline int d3_ld(int HD) { return HD + D3_PAD; }  // row stride of (c, D) and (D, D) tiles

// A fragment (16 x 16 at rows m0, cols k0) of X (D3_N) or of Xᵀ (D3_T)
template <int F>
__device__ static inline void d3_frag_a(uint32_t* a, const bf16* X, int ld, int m0, int k0) {
    int l = threadIdx.x % 32, q = l >> 3;
    if (F == D3_N) { ldsm_x4(a, X + (m0 + (l & 15)) * ld + k0 + (l >> 4) * 8); }
    else { ldsm_x4_t(a, X + (k0 + (q >> 1) * 8 + (l & 7)) * ld + m0 + (q & 1) * 8); }
}
// B fragments of the n8 tiles n0 and n0 + 8, k rows k0..k0+15, of Y (D3_N) or of Yᵀ (D3_T):
// b[0], b[1] for n0, b[2], b[3] for n0 + 8. D3_N addresses the rows as ldsm_b2 does, written out:
// calling ldsm_b2 here made ptxas spill in the D 128 gradient kernel.
template <int F>
__device__ static inline void d3_frag_b(uint32_t* b, const bf16* Y, int ld, int k0, int n0) {
    int l = threadIdx.x % 32, q = l >> 3;
    if (F == D3_N) { ldsm_x4_t(b, Y + (k0 + (q & 1) * 8 + (l & 7)) * ld + n0 + (q >> 1) * 8); }
    else { ldsm_x4(b, Y + (n0 + (q >> 1) * 8 + (l & 7)) * ld + k0 + (q & 1) * 8); }
}
// acc (16, 8 NT) += X(rows m0.., 16 KT cols) · Y(16 KT rows, cols n0..), forms FA, FB as above
template <int NT, int KT, int FA, int FB>
__device__ static inline void d3_mm(float (*acc)[4], const bf16* X, int ldx, int m0, const bf16* Y, int ldy, int n0) {
#pragma unroll
    for (int kt = 0; kt < KT; kt++) {
        uint32_t a[4];
        d3_frag_a<FA>(a, X, ldx, m0, 16 * kt);
#pragma unroll
        for (int j = 0; j < NT; j += 2) {
            uint32_t b[4];
            d3_frag_b<FB>(b, Y, ldy, 16 * kt, n0 + 8 * j);
            mma_16816(acc[j], a, b[0], b[1]);
            mma_16816(acc[j + 1], a, b[2], b[3]);
        }
    }
}
// the same with the A fragments in registers (a[kt]: k slice kt, as d3_pack makes them)
template <int NT, int KT, int FB>
__device__ static inline void d3_mm_reg(float (*acc)[4], const uint32_t (*a)[4], const bf16* Y, int ldy, int n0) {
#pragma unroll
    for (int kt = 0; kt < KT; kt++) {
#pragma unroll
        for (int j = 0; j < NT; j += 2) {
            uint32_t b[4];
            d3_frag_b<FB>(b, Y, ldy, 16 * kt, n0 + 8 * j);
            mma_16816(acc[j], a[kt], b[0], b[1]);
            mma_16816(acc[j + 1], a[kt], b[2], b[3]);
        }
    }
}
// the (16, 8 NT) accumulator as A fragments of k slices NT / 2, row g scaled by r0, row g+8 by r1
template <int NT>
__device__ static inline void d3_pack(uint32_t (*a)[4], const float (*x)[4], float r0, float r1) {
#pragma unroll
    for (int j = 0; j < NT; j += 2) {
        a[j / 2][0] = pack_bf16(r0 * x[j][0], r0 * x[j][1]);
        a[j / 2][1] = pack_bf16(r1 * x[j][2], r1 * x[j][3]);
        a[j / 2][2] = pack_bf16(r0 * x[j + 1][0], r0 * x[j + 1][1]);
        a[j / 2][3] = pack_bf16(r1 * x[j + 1][2], r1 * x[j + 1][3]);
    }
}
template <int NT>
__device__ static inline void d3_zero(float (*x)[4]) {
#pragma unroll
    for (int j = 0; j < NT; j++) { x[j][0] = x[j][1] = x[j][2] = x[j][3] = 0.0f; }
}
// scales row g of the accumulator by r0, row g+8 by r1
template <int NT>
__device__ static inline void d3_scale_rows(float (*x)[4], float r0, float r1) {
#pragma unroll
    for (int j = 0; j < NT; j++) { x[j][0] *= r0; x[j][1] *= r0; x[j][2] *= r1; x[j][3] *= r1; }
}
// x (accumulator layout) = X[m0.., col0..] of a bf16 tile
template <int NT>
__device__ static inline void d3_load(float (*x)[4], const bf16* X, int ld, int m0, int col0) {
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int j = 0; j < NT; j++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float2 v = __bfloat1622float2(*(const __nv_bfloat162*)(X + (m0 + g + 8 * h) * ld + col0 + 8 * j + 2 * t));
            x[j][2 * h] = v.x;
            x[j][2 * h + 1] = v.y;
        }
    }
}
// dst[row][col0 + ..] = scaled accumulator for its rows m0 + g (r0), m0 + g + 8 (r1) below n;
// dst is a shared tile or global rows of `ld`
template <int NT>
__device__ static inline void d3_store(bf16* dst, size_t ld, int m0, int n, int col0, const float (*x)[4], float r0, float r1) {
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int row = m0 + g + 8 * h;
        float r = h ? r1 : r0;
        if (row < n) {
#pragma unroll
            for (int j = 0; j < NT; j++) {
                *(uint32_t*)(dst + row * ld + col0 + 8 * j + 2 * t) = pack_bf16(r * x[j][2 * h], r * x[j][2 * h + 1]);
            }
        }
    }
}
// s0, s1: Σ over row m0+g (m0+g+8) of x ⊙ y, y an accumulator or (d3_rowdot_tile) a bf16 tile; every
// lane of the row's quad gets it
__device__ static inline void d3_quad_sum(float* s0, float* s1) {
    for (int off = 1; off < 4; off *= 2) {
        *s0 += __shfl_xor_sync(0xffffffff, *s0, off);
        *s1 += __shfl_xor_sync(0xffffffff, *s1, off);
    }
}
template <int NT>
__device__ static inline void d3_rowsum(const float (*x)[4], float* s0, float* s1) {
    *s0 = 0.0f; *s1 = 0.0f;
#pragma unroll
    for (int j = 0; j < NT; j++) { *s0 += x[j][0] + x[j][1]; *s1 += x[j][2] + x[j][3]; }
    d3_quad_sum(s0, s1);
}
template <int NT>
__device__ static inline void d3_rowdot(const float (*x)[4], const float (*y)[4], float* s0, float* s1) {
    *s0 = 0.0f; *s1 = 0.0f;
#pragma unroll
    for (int j = 0; j < NT; j++) { *s0 += x[j][0] * y[j][0] + x[j][1] * y[j][1]; *s1 += x[j][2] * y[j][2] + x[j][3] * y[j][3]; }
    d3_quad_sum(s0, s1);
}
template <int NT>
__device__ static inline void d3_rowdot_tile(const float (*x)[4], const bf16* Y, int ld, int m0, float* s0, float* s1) {
    float y[NT][4];
    d3_load<NT>(y, Y, ld, m0, 0);
    d3_rowdot<NT>(x, y, s0, s1);
}
// part[col] += Σ over the warp's 16 rows of x[row][col] (part: this warp's own c floats, so every
// element has one writer and the block's sum can be taken in a fixed order)
template <int NT>
__device__ static inline void d3_colsum(float* part, const float (*x)[4]) {
    int lane = threadIdx.x % 32, t = lane % 4;
#pragma unroll
    for (int j = 0; j < NT; j++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float v = x[j][e] + x[j][e + 2];
            for (int off = 4; off < 32; off *= 2) { v += __shfl_xor_sync(0xffffffff, v, off); }
            if (lane < 4) { part[8 * j + 2 * t + e] += v; }
        }
    }
}
// x[t][s] *= Γ[t][s] = exp(g_t - g_s) where t - s >= strict, else 0, for a (16, c) block at rows m0;
// keys_as_rows: rows are s and columns t (Pᵀ)
template <int NT>
__device__ static inline void d3_decay_mask(float (*x)[4], const float* g, int m0, int strict, int keys_as_rows) {
    int gi = (threadIdx.x % 32) / 4, ti = threadIdx.x % 4;
#pragma unroll
    for (int j = 0; j < NT; j++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int r = m0 + gi + 8 * (e >> 1), c = 8 * j + 2 * ti + (e & 1);
            int tq = keys_as_rows ? c : r, s = keys_as_rows ? r : c;
            x[j][e] = tq - s >= strict ? x[j][e] * __expf(g[tq] - g[s]) : 0.0f;
        }
    }
}
// starts copying rows row0 + t (t < c; zeros for t >= n) of `cols` bf16 at col0 of src (rows of
// `stride`) into the shared tile X (rows of ld)
__device__ static void d3_fetch(bf16* X, int ld, const bf16* src, size_t stride, size_t row0, int n, int col0, int cols) {
    int per_row = cols / 8;
    BLOCK_LOOP(idx, DELTA_CHUNK * per_row) {
        int t = idx / per_row, i = (idx % per_row) * 8;
        cp_async(X + t * ld + i, src + (row0 + min(t, n - 1)) * stride + col0 + i, 16, t < n ? 16 : 0);
    }
}
// the fp32 (HD, HD) state at src as a bf16 shared tile (rows of d3_ld(HD)); returns this thread's
// share of <src, dot_with> when dot_with is given. Loads go out in batches of 8 float4 a thread,
// so a batch costs one memory round trip, not one per load.
template <int HD>
__device__ static float d3_load_state(bf16* X, const float* src, const float* dot_with) {
    const int PER = HD * HD / 4 / D3_THREADS, BATCH = PER < 8 ? PER : 8;  // float4 a thread: 8 (HD 64), 32 (HD 128)
    float part = 0.0f;
    for (int first = 0; first < PER; first += BATCH) {
        float4 v[BATCH], d[BATCH];
#pragma unroll
        for (int i = 0; i < BATCH; i++) {
            int idx = threadIdx.x + (first + i) * D3_THREADS;
            v[i] = *(const float4*)(src + 4 * idx);
            if (dot_with) { d[i] = *(const float4*)(dot_with + 4 * idx); }
        }
#pragma unroll
        for (int i = 0; i < BATCH; i++) {
            int idx = threadIdx.x + (first + i) * D3_THREADS, r = idx / (HD / 4), c = (idx % (HD / 4)) * 4;
            *(__nv_bfloat162*)(X + r * d3_ld(HD) + c) = __floats2bfloat162_rn(v[i].x, v[i].y);
            *(__nv_bfloat162*)(X + r * d3_ld(HD) + c + 2) = __floats2bfloat162_rn(v[i].z, v[i].w);
            if (dot_with) { part += v[i].x * d[i].x + v[i].y * d[i].y + v[i].z * d[i].z + v[i].w * d[i].w; }
        }
    }
    return part;
}

// The gates of a chunk for one warp of a state pass, with no barrier: from the raw log α of the
// chunk (c floats, landed), the warp's rows r0 = m0 + g and r0 + 8 get w = exp(g_last - g_t) and
// b = exp(g_t) (cumulative g within the chunk), and every lane b_last = exp(g_last).
struct D3RowGates {
    float w0, w1, b0, b1, blast;
};
__device__ static D3RowGates d3_warp_gates(const float* graw, int r0) {
    int l = threadIdx.x % 32;
    float first = graw[2 * l], pair = first + graw[2 * l + 1], incl = pair;
    for (int off = 1; off < 32; off *= 2) {
        float y = __shfl_up_sync(0xffffffff, incl, off);
        if (l >= off) { incl += y; }
    }
    float even = incl - pair + first, last = __shfl_sync(0xffffffff, incl, 31);
    float e0 = __shfl_sync(0xffffffff, even, r0 >> 1), o0 = __shfl_sync(0xffffffff, incl, r0 >> 1);
    float e1 = __shfl_sync(0xffffffff, even, (r0 + 8) >> 1), o1 = __shfl_sync(0xffffffff, incl, (r0 + 8) >> 1);
    float g0 = r0 & 1 ? o0 : e0, g1 = r0 & 1 ? o1 : e1;  // r0 and r0 + 8 have the same parity
    D3RowGates rg = {__expf(last - g0), __expf(last - g1), __expf(g0), __expf(g1), __expf(last)};
    return rg;
}

// acc (16 x 8) += A(rows r0..r0+15, k 0..K) B(k 0..K, cols n0..n0+7) on fp32 tiles of stride DL, tf32
// tensor cores (the solve's products: Ti is formed before it is rounded to bf16, as fla does)
__device__ static inline void d3_mm_tf32(float* acc, const float* A, int r0, const float* Bm, int n0, int K) {
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    for (int k = 0; k < K; k += 8) {
        uint32_t a[4] = {to_tf32(A[(r0 + g) * DL + k + t]), to_tf32(A[(r0 + g + 8) * DL + k + t]),
                         to_tf32(A[(r0 + g) * DL + k + t + 4]), to_tf32(A[(r0 + g + 8) * DL + k + t + 4])};
        mma_tf32(acc, a, to_tf32(Bm[(k + t) * DL + n0 + g]), to_tf32(Bm[(k + t + 4) * DL + n0 + g]));
    }
}

// X = (I + A)⁻¹ for a strictly lower-triangular (c, c) fp32 A, both stride DL; Y is (16, DL) scratch;
// 128 threads. As unit_lower_inverse, with less waiting: thread j < 64 solves column j of its 16 x 16
// diagonal block by forward substitution in registers while the others zero the blocks above the
// diagonal; then block row I (16 rows) for all columns left of it at once on tensor cores,
//   Y = A[I][<I] X[<I][<I],  X[I][<I] = -X[I][I] Y,
// each warp owning 8-column tiles of Y (so Y needs no barrier), one barrier per block row.
__device__ static void d3_unit_lower_inverse(float* X, const float* A, float* Y) {
    int tid = threadIdx.x, warp = tid / 32, g = (tid % 32) / 4, t = tid % 4;
    if (tid < DELTA_CHUNK) {
        int j = tid, base = j & ~15;
        float x[16];
#pragma unroll
        for (int r = 0; r < 16; r++) {
            float acc = base + r == j ? 1.0f : 0.0f;  // rows above j come out 0: their x are 0
#pragma unroll
            for (int s = 0; s < r; s++) { acc -= A[(base + r) * DL + base + s] * x[s]; }
            x[r] = acc;
        }
#pragma unroll
        for (int r = 0; r < 16; r++) { X[(base + r) * DL + j] = x[r]; }
    } else {
        for (int idx = tid - DELTA_CHUNK; idx < 16 * 96; idx += D3_THREADS - DELTA_CHUNK) {  // 48 + 32 + 16 columns
            int I = idx < 16 * 48 ? 0 : idx < 16 * 80 ? 1 : 2, off = idx - (I == 0 ? 0 : I == 1 ? 16 * 48 : 16 * 80);
            int w = 48 - 16 * I;
            X[(16 * I + off / w) * DL + 16 * (I + 1) + off % w] = 0.0f;
        }
    }
    __syncthreads();
    for (int I = 1; I < DELTA_CHUNK / 16; I++) {
        int r0 = 16 * I;
        for (int nt = warp; nt < 2 * I; nt += D3_THREADS / 32) {
            int n0 = 8 * nt;
            float y[4] = {0.0f, 0.0f, 0.0f, 0.0f}, x[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            d3_mm_tf32(y, A, r0, X, n0, r0);
            Y[g * DL + n0 + 2 * t] = y[0];
            Y[g * DL + n0 + 2 * t + 1] = y[1];
            Y[(g + 8) * DL + n0 + 2 * t] = y[2];
            Y[(g + 8) * DL + n0 + 2 * t + 1] = y[3];
            __syncwarp();
            d3_mm_tf32(x, X + r0, r0, Y, n0, 16);
            X[(r0 + g) * DL + n0 + 2 * t] = -x[0];
            X[(r0 + g) * DL + n0 + 2 * t + 1] = -x[1];
            X[(r0 + g + 8) * DL + n0 + 2 * t] = -x[2];
            X[(r0 + g + 8) * DL + n0 + 2 * t + 1] = -x[3];
        }
        __syncthreads();
    }
}

// Where the v3 scratch tiles of chunk i are (bf16 elements from the scratch start; dstates in floats
// after them)
struct D3Scratch {
    bf16 *U, *W, *dU, *Ti;
    float* dstates;
};
static D3Scratch d3_scratch(float* scratch, int B, int T, int C, int H) {
    size_t chunks = (size_t)B * H * delta_rule_n_chunks(T), tile = chunks * DELTA_CHUNK * (C / H);
    D3Scratch s;
    s.U = (bf16*)scratch;
    s.W = s.U + tile;
    s.dU = s.W + tile;
    s.Ti = s.dU + tile;
    s.dstates = (float*)(s.Ti + chunks * DELTA_CHUNK * DELTA_CHUNK);
    return s;
}
static size_t d3_scratch_floats(int B, int T, int C, int H) {
    size_t chunks = (size_t)B * H * delta_rule_n_chunks(T), D = C / H;
    return (chunks * DELTA_CHUNK * (3 * D + DELTA_CHUNK)) / 2 + chunks * D * D;
}

// Per chunk, all chunks in parallel. gdn (W given): Ti = (I + A)⁻¹, Ũ = Ti diag(β) V, W = Ti diag(βb) K,
// and Ti itself when Ti_out is given; with dout: dUl = Pᵀ dO (both mixers). Shared memory is held to
// three blocks an SM: Q and dO land where the solve's fp32 tiles were (gdn: copied once the solve is
// done, while Ũ and W are formed), the solve's (16, c) scratch lives in Ti diag(β)'s tile.
template <int HD>
__global__ void __launch_bounds__(D3_THREADS) delta3_prep_kernel(bf16* Ut, bf16* W, bf16* Ti_out, bf16* dUl, const bf16* q,
                                                                 const bf16* k, const bf16* v, int vstride, const bf16* dout,
                                                                 const float* beta, const float* gate, int T, int C, int H) {
    extern __shared__ __align__(16) unsigned char d3_smem[];
    const int c = DELTA_CHUNK, LD = d3_ld(HD), KT = HD / 16, NT = HD / 8;
    DeltaPos p = delta_pos(blockIdx.x, T, C, H);
    int m0 = 16 * (threadIdx.x / 32);
    bf16 *sK = (bf16*)d3_smem, *sV = sK + c * LD;
    bf16 *sTb = sV + c * LD, *sTbb = sTb + c * D3_LDC;  // Ti diag(β), Ti diag(βb)
    float *sA = (float*)(sTbb + c * D3_LDC), *sX = sA + DELTA_SLOT, *sY = (float*)sTb;
    bf16 *sQ = (bf16*)sA, *sdO = sQ + c * LD;  // 2 (c, D) bf16 tiles fit in the 2 (c, DL) fp32 ones up to D 128
    DeltaGates gv;
    delta_gates_carve(&gv, sX + DELTA_SLOT);
    d3_fetch(sK, LD, k, C, p.row0, p.n, p.h * HD, HD);
    if (W) { d3_fetch(sV, LD, v, vstride, p.row0, p.n, p.h * HD, HD); }
    if (dout && !W) {
        d3_fetch(sQ, LD, q, C, p.row0, p.n, p.h * HD, HD);
        d3_fetch(sdO, LD, dout, C, p.row0, p.n, p.h * HD, HD);
    }
    delta_fetch_gates(gv, beta, gate, p.row0, p.n, H, p.h);
    delta_fetch_wait();
    delta_gates_finish(gv);
    if (W) {
        float s[8][4];  // A = β_t Γ ⊙ K Kᵀ (s < t), to fp32 for the solve
        d3_zero<8>(s);
        d3_mm<8, KT, D3_N, D3_T>(s, sK, LD, m0, sK, LD, 0);
        d3_decay_mask<8>(s, gv.g, m0, 1, 0);
        int gi = (threadIdx.x % 32) / 4, ti = threadIdx.x % 4;
#pragma unroll
        for (int j = 0; j < 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int r = m0 + gi + 8 * (e >> 1);
                sA[r * DL + 8 * j + 2 * ti + (e & 1)] = gv.beta[r] * s[j][e];
            }
        }
        __syncthreads();
        d3_unit_lower_inverse(sX, sA, sY);
        bf16* ti_chunk = Ti_out ? Ti_out + (size_t)blockIdx.x * c * c : NULL;
        BLOCK_LOOP(idx, c * c) {
            int t = idx / c, s = idx % c;
            float x = sX[t * DL + s];
            sTb[t * D3_LDC + s] = (bf16)(x * gv.beta[s]);
            sTbb[t * D3_LDC + s] = (bf16)(x * gv.bb[s]);
            if (ti_chunk) { ti_chunk[idx] = (bf16)x; }
        }
        __syncthreads();  // the solve's tiles are free
        if (dout) {
            d3_fetch(sQ, LD, q, C, p.row0, p.n, p.h * HD, HD);
            d3_fetch(sdO, LD, dout, C, p.row0, p.n, p.h * HD, HD);
        }
        float u[NT][4];
        d3_zero<NT>(u);
        d3_mm<NT, 4, D3_N, D3_N>(u, sTb, D3_LDC, m0, sV, LD, 0);
        d3_store<NT>(Ut + p.tile, HD, m0, c, 0, u, 1.0f, 1.0f);
        d3_zero<NT>(u);
        d3_mm<NT, 4, D3_N, D3_N>(u, sTbb, D3_LDC, m0, sK, LD, 0);
        d3_store<NT>(W + p.tile, HD, m0, c, 0, u, 1.0f, 1.0f);
        if (dout) { delta_fetch_wait(); }
    }
    if (dout) {
        float s[8][4];  // Pᵀ[s][t] = Γ[t][s] (k_s·q_t), t >= s; rows are s
        d3_zero<8>(s);
        d3_mm<8, KT, D3_N, D3_T>(s, sK, LD, m0, sQ, LD, 0);
        d3_decay_mask<8>(s, gv.g, m0, 0, 1);
        uint32_t a[4][4];
        d3_pack<8>(a, s, 1.0f, 1.0f);
        float u[NT][4];
        d3_zero<NT>(u);
        d3_mm_reg<NT, 4, D3_N>(u, a, sdO, LD, 0);
        d3_store<NT>(dUl + p.tile, HD, m0, c, 0, u, 1.0f, 1.0f);
    }
}
#define D3_SMEM_PREP(HD) ((2 * DELTA_CHUNK * d3_ld(HD) + 2 * DELTA_CHUNK * D3_LDC) * 2 + (2 * DELTA_SLOT + DELTA_GATE_VECS * DELTA_CHUNK) * 4)

// The state passes. A block owns D3_BV(HD) = HD/2 value rows of one head's state (B·H·2 blocks: one
// wave at the benchmark shapes, fewer blocks re-reading the same K and W than narrower slabs) and
// walks the chunks through a ring of stages, the copies of the next stages in flight while it
// computes this one. Forward 3 stages, backward 2 (its stages carry Q too; 2 keep two blocks an SM at
// head dim 64).
#define D3_BV(HD) ((HD) / 2)
#define D3_LDV(HD) (D3_BV(HD) + D3_PAD)  // row stride of (c, D3_BV) slabs
#define D3_STAGES_FWD 3
#define D3_STAGES_BWD 2

// One stage: K, W and (backward) Q (c, D) tiles, two (c, D3_BV) slabs (forward: Ũ or V; backward:
// dUl and dO), the gates
struct D3StateBuf {
    bf16 *K, *W, *Q, *slab, *slab2;
    DeltaGates gv;
};
#define D3_STATE_BUF(HD, WITH_Q) \
    (((2 + (WITH_Q)) * DELTA_CHUNK * d3_ld(HD) + 2 * DELTA_CHUNK * D3_LDV(HD)) * 2 + DELTA_GATE_VECS * DELTA_CHUNK * 4)
template <int HD, int WITH_Q>
__device__ static D3StateBuf d3_state_buf(unsigned char* smem, int stage) {
    D3StateBuf s;
    s.K = (bf16*)(smem + stage * D3_STATE_BUF(HD, WITH_Q));
    s.W = s.K + DELTA_CHUNK * d3_ld(HD);
    s.Q = s.W + DELTA_CHUNK * d3_ld(HD);
    s.slab = s.Q + WITH_Q * DELTA_CHUNK * d3_ld(HD);
    s.slab2 = s.slab + DELTA_CHUNK * D3_LDV(HD);
    delta_gates_carve(&s.gv, (float*)(s.slab2 + DELTA_CHUNK * D3_LDV(HD)));
    return s;
}
// after the ring: the block's (D3_BV, D) state tile and (c, D3_BV) slabs of its own
#define D3_SMEM_STATE_FWD(HD) (D3_STAGES_FWD * D3_STATE_BUF(HD, 0) + (D3_BV(HD) * d3_ld(HD) + DELTA_CHUNK * D3_LDV(HD)) * 2)
#define D3_SMEM_STATE_BWD(HD) (D3_STAGES_BWD * D3_STATE_BUF(HD, 1) + (D3_BV(HD) * d3_ld(HD) + 2 * DELTA_CHUNK * D3_LDV(HD)) * 2)

// Where a state-pass block is: blockIdx.x = (b H + h) 2 + slab; it owns value rows i0..i0+D3_BV
struct D3Slab {
    int bh, i0;
};
template <int HD>
__device__ static D3Slab d3_slab() {
    D3Slab s;
    s.bh = blockIdx.x / (HD / D3_BV(HD));
    s.i0 = (blockIdx.x % (HD / D3_BV(HD))) * D3_BV(HD);
    return s;
}

// x (the warp's columns n0.. of the slab's rows) to the fp32 (D, D) state at st (offset to the slab)
// and to the bf16 (D3_BV, D) shared tile X
template <int HD, int NS>
__device__ static inline void d3_state_out(float* st, bf16* X, int n0, const float (*x)[NS][4]) {
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int mt = 0; mt < D3_BV(HD) / 16; mt++) {
#pragma unroll
        for (int j = 0; j < NS; j++) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int r = 16 * mt + g + 8 * h, col = n0 + 8 * j + 2 * t;
                *(float2*)(st + r * HD + col) = make_float2(x[mt][j][2 * h], x[mt][j][2 * h + 1]);
                *(uint32_t*)(X + r * d3_ld(HD) + col) = pack_bf16(x[mt][j][2 * h], x[mt][j][2 * h + 1]);
            }
        }
    }
}

// Starts fetching chunk `chunk` for the forward state pass: K, W (gdn), the slab of Ũ (gdn) or V (gla)
template <int HD>
__device__ static void d3_state_forward_fetch(D3StateBuf sb, D3Slab sl, int chunk, const bf16* U, const bf16* W,
                                              const bf16* k, const bf16* v, int vstride, const float* gate, int T, int C, int H) {
    DeltaPos p = delta_pos(sl.bh * delta_rule_n_chunks(T) + chunk, T, C, H);
    d3_fetch(sb.K, d3_ld(HD), k, C, p.row0, p.n, p.h * HD, HD);
    if (W) {
        d3_fetch(sb.W, d3_ld(HD), W + p.tile, HD, 0, DELTA_CHUNK, 0, HD);
        d3_fetch(sb.slab, D3_LDV(HD), U + p.tile, HD, 0, DELTA_CHUNK, sl.i0, D3_BV(HD));
    } else {
        d3_fetch(sb.slab, D3_LDV(HD), v, vstride, p.row0, p.n, p.h * HD + sl.i0, D3_BV(HD));
    }
    delta_fetch_gates(sb.gv, NULL, gate, p.row0, p.n, H, p.h);
}

// the ring's wait: the oldest stage's copies (this thread's) have landed
template <int STAGES>
__device__ static inline void d3_wait_stage() {
    if (STAGES == 3) { cp_async_wait_but_last(); } else { cp_async_wait_all(); }
}

// states (B, H, n_chunks, D, D): the state entering each chunk, D3_BV value rows a block. Per chunk:
//   U = Ũ - W S0ᵀ (gdn, written over Ũ; gla U = V),  S_end = b_last S0 + (diag(w) U)ᵀ K
template <int HD>
__global__ void __launch_bounds__(D3_THREADS) delta3_state_forward_kernel(float* states, bf16* U, const bf16* W, const bf16* k,
                                                                          const bf16* v, int vstride, const float* gate, int T,
                                                                          int C, int H) {
    extern __shared__ __align__(16) unsigned char d3_smem[];
    // a warp computes rows m0.. of U (NU n tiles) and columns n0.. of the slab's state (MS x NS tiles)
    const int c = DELTA_CHUNK, LD = d3_ld(HD), LDV = D3_LDV(HD), KT = HD / 16, NU = D3_BV(HD) / 8, MS = D3_BV(HD) / 16;
    const int NS = HD / 32, STAGES = D3_STAGES_FWD;
    D3Slab sl = d3_slab<HD>();
    int warp = threadIdx.x / 32, m0 = 16 * warp, n0 = warp * (HD / 4), n_chunks = delta_rule_n_chunks(T);
    int g = (threadIdx.x % 32) / 4;
    bf16 *sS = (bf16*)(d3_smem + STAGES * D3_STATE_BUF(HD, 0)), *sUw = sS + D3_BV(HD) * LD;
    float S[MS][NS][4];
#pragma unroll
    for (int mt = 0; mt < MS; mt++) { d3_zero<NS>(S[mt]); }
    for (int st = 0; st < STAGES - 1; st++) {
        if (st < n_chunks) { d3_state_forward_fetch<HD>(d3_state_buf<HD, 0>(d3_smem, st), sl, st, U, W, k, v, vstride, gate, T, C, H); }
        cp_async_commit();
    }
    for (int chunk = 0; chunk < n_chunks; chunk++) {
        D3StateBuf sb = d3_state_buf<HD, 0>(d3_smem, chunk % STAGES);
        d3_wait_stage<STAGES>();
        d3_state_out<HD, NS>(states + ((size_t)sl.bh * n_chunks + chunk) * HD * HD + (size_t)sl.i0 * HD, sS, n0, S);
        __syncthreads();  // this stage and sS visible; everyone is done with the stage read last
        int next = chunk + STAGES - 1;
        if (next < n_chunks) {
            d3_state_forward_fetch<HD>(d3_state_buf<HD, 0>(d3_smem, next % STAGES), sl, next, U, W, k, v, vstride, gate, T, C, H);
        }
        cp_async_commit();
        D3RowGates rg = d3_warp_gates(sb.gv.g, m0 + g);
        float u[NU][4];
        d3_load<NU>(u, sb.slab, LDV, m0, 0);
        if (W) {
            float ws[NU][4];
            d3_zero<NU>(ws);
            d3_mm<NU, KT, D3_N, D3_T>(ws, sb.W, LD, m0, sS, LD, 0);
#pragma unroll
            for (int j = 0; j < NU; j++) {
#pragma unroll
                for (int e = 0; e < 4; e++) { u[j][e] -= ws[j][e]; }
            }
            DeltaPos p = delta_pos(sl.bh * n_chunks + chunk, T, C, H);
            d3_store<NU>(U + p.tile, HD, m0, c, sl.i0, u, 1.0f, 1.0f);
        }
        d3_store<NU>(sUw, LDV, m0, c, 0, u, rg.w0, rg.w1);
        __syncthreads();
#pragma unroll
        for (int mt = 0; mt < MS; mt++) {
            d3_scale_rows<NS>(S[mt], rg.blast, rg.blast);
            d3_mm<NS, 4, D3_T, D3_N>(S[mt], sUw, LDV, 16 * mt, sb.K, LD, n0);
        }
    }
}

// o = diag(b) Q S0ᵀ + P U per chunk (U from the state pass; gla: V)
template <int HD>
__global__ void __launch_bounds__(D3_THREADS) delta3_output_kernel(bf16* o, const float* states, const bf16* U, const bf16* q,
                                                                   const bf16* k, const bf16* v, int vstride, const float* gate,
                                                                   int T, int C, int H) {
    extern __shared__ __align__(16) unsigned char d3_smem[];
    const int c = DELTA_CHUNK, LD = d3_ld(HD), KT = HD / 16, NT = HD / 8;
    DeltaPos p = delta_pos(blockIdx.x, T, C, H);
    int m0 = 16 * (threadIdx.x / 32), g = (threadIdx.x % 32) / 4;
    bf16 *sQ = (bf16*)d3_smem, *sK = sQ + c * LD, *sU = sK + c * LD, *sS0 = sU + c * LD;
    DeltaGates gv;
    delta_gates_carve(&gv, (float*)(sS0 + HD * LD));
    d3_fetch(sQ, LD, q, C, p.row0, p.n, p.h * HD, HD);
    d3_fetch(sK, LD, k, C, p.row0, p.n, p.h * HD, HD);
    if (U) { d3_fetch(sU, LD, U + p.tile, HD, 0, c, 0, HD); }
    else { d3_fetch(sU, LD, v, vstride, p.row0, p.n, p.h * HD, HD); }
    delta_fetch_gates(gv, NULL, gate, p.row0, p.n, H, p.h);
    d3_load_state<HD>(sS0, states + p.state, NULL);
    delta_fetch_wait();
    delta_gates_finish(gv);
    float s[8][4];
    d3_zero<8>(s);
    d3_mm<8, KT, D3_N, D3_T>(s, sQ, LD, m0, sK, LD, 0);
    d3_decay_mask<8>(s, gv.g, m0, 0, 0);
    uint32_t a[4][4];
    d3_pack<8>(a, s, 1.0f, 1.0f);
    float acc[NT][4];
    d3_zero<NT>(acc);
    d3_mm<NT, KT, D3_N, D3_T>(acc, sQ, LD, m0, sS0, LD, 0);
    d3_scale_rows<NT>(acc, gv.b[m0 + g], gv.b[m0 + g + 8]);
    d3_mm_reg<NT, 4, D3_N>(acc, a, sU, LD, 0);
    d3_store<NT>(o + p.row0 * C, C, m0, p.n, p.h * HD, acc, 1.0f, 1.0f);
}
#define D3_SMEM_OUTPUT(HD) ((3 * DELTA_CHUNK * d3_ld(HD) + (HD) * d3_ld(HD)) * 2 + DELTA_GATE_VECS * DELTA_CHUNK * 4)

// Starts fetching chunk `chunk` for the backward state pass: K, Q, W (gdn), the slabs of dUl and dO,
// the gates
template <int HD>
__device__ static void d3_state_backward_fetch(D3StateBuf sb, D3Slab sl, int chunk, const bf16* dU, const bf16* W, const bf16* dout,
                                               const bf16* q, const bf16* k, const float* gate, int T, int C, int H) {
    DeltaPos p = delta_pos(sl.bh * delta_rule_n_chunks(T) + chunk, T, C, H);
    d3_fetch(sb.K, d3_ld(HD), k, C, p.row0, p.n, p.h * HD, HD);
    d3_fetch(sb.Q, d3_ld(HD), q, C, p.row0, p.n, p.h * HD, HD);
    if (W) { d3_fetch(sb.W, d3_ld(HD), W + p.tile, HD, 0, DELTA_CHUNK, 0, HD); }
    d3_fetch(sb.slab, D3_LDV(HD), dU + p.tile, HD, 0, DELTA_CHUNK, sl.i0, D3_BV(HD));
    d3_fetch(sb.slab2, D3_LDV(HD), dout, C, p.row0, p.n, p.h * HD + sl.i0, D3_BV(HD));
    delta_fetch_gates(sb.gv, NULL, gate, p.row0, p.n, H, p.h);
}

// dstates (B, H, n_chunks, D, D): dL/dS_end of each chunk, chunks in reverse, D3_BV value rows a block:
//   dU = dUl + diag(w) K dSᵀ (written over dUl),  dS0 = b_last dS + (diag(b) dO)ᵀ Q - dUᵀ W (gla: no W term)
template <int HD>
__global__ void __launch_bounds__(D3_THREADS) delta3_state_backward_kernel(float* dstates, bf16* dU, const bf16* W,
                                                                           const bf16* dout, const bf16* q, const bf16* k,
                                                                           const float* gate, int T, int C, int H) {
    extern __shared__ __align__(16) unsigned char d3_smem[];
    const int c = DELTA_CHUNK, LD = d3_ld(HD), LDV = D3_LDV(HD), KT = HD / 16, NU = D3_BV(HD) / 8, MS = D3_BV(HD) / 16;
    const int NS = HD / 32, STAGES = D3_STAGES_BWD;
    D3Slab sl = d3_slab<HD>();
    int warp = threadIdx.x / 32, m0 = 16 * warp, n0 = warp * (HD / 4), n_chunks = delta_rule_n_chunks(T);
    int g = (threadIdx.x % 32) / 4;
    bf16 *sdS = (bf16*)(d3_smem + STAGES * D3_STATE_BUF(HD, 1)), *sNdU = sdS + D3_BV(HD) * LD, *sBdO = sNdU + c * LDV;
    float dS[MS][NS][4];
#pragma unroll
    for (int mt = 0; mt < MS; mt++) { d3_zero<NS>(dS[mt]); }
    for (int st = 0; st < STAGES - 1; st++) {  // iteration i works on chunk n_chunks - 1 - i in stage i % STAGES
        if (st < n_chunks) {
            d3_state_backward_fetch<HD>(d3_state_buf<HD, 1>(d3_smem, st), sl, n_chunks - 1 - st, dU, W, dout, q, k, gate, T, C, H);
        }
        cp_async_commit();
    }
    for (int i = 0; i < n_chunks; i++) {
        int chunk = n_chunks - 1 - i;
        D3StateBuf sb = d3_state_buf<HD, 1>(d3_smem, i % STAGES);
        d3_wait_stage<STAGES>();
        d3_state_out<HD, NS>(dstates + ((size_t)sl.bh * n_chunks + chunk) * HD * HD + (size_t)sl.i0 * HD, sdS, n0, dS);
        __syncthreads();
        int next = i + STAGES - 1;
        if (next < n_chunks) {
            d3_state_backward_fetch<HD>(d3_state_buf<HD, 1>(d3_smem, next % STAGES), sl, n_chunks - 1 - next, dU, W, dout, q, k, gate,
                                        T, C, H);
        }
        cp_async_commit();
        D3RowGates rg = d3_warp_gates(sb.gv.g, m0 + g);
        float u[NU][4], ul[NU][4];
        d3_zero<NU>(u);
        d3_mm<NU, KT, D3_N, D3_T>(u, sb.K, LD, m0, sdS, LD, 0);
        d3_load<NU>(ul, sb.slab, LDV, m0, 0);
#pragma unroll
        for (int j = 0; j < NU; j++) {
            u[j][0] = rg.w0 * u[j][0] + ul[j][0]; u[j][1] = rg.w0 * u[j][1] + ul[j][1];
            u[j][2] = rg.w1 * u[j][2] + ul[j][2]; u[j][3] = rg.w1 * u[j][3] + ul[j][3];
        }
        DeltaPos p = delta_pos(sl.bh * n_chunks + chunk, T, C, H);
        d3_store<NU>(dU + p.tile, HD, m0, c, sl.i0, u, 1.0f, 1.0f);
        if (W) { d3_store<NU>(sNdU, LDV, m0, c, 0, u, -1.0f, -1.0f); }
        d3_load<NU>(ul, sb.slab2, LDV, m0, 0);
        d3_store<NU>(sBdO, LDV, m0, c, 0, ul, rg.b0, rg.b1);
        __syncthreads();
#pragma unroll
        for (int mt = 0; mt < MS; mt++) {
            d3_scale_rows<NS>(dS[mt], rg.blast, rg.blast);
            d3_mm<NS, 4, D3_T, D3_N>(dS[mt], sBdO, LDV, 16 * mt, sb.Q, LD, n0);
            if (W) { d3_mm<NS, 4, D3_T, D3_N>(dS[mt], sNdU, LDV, 16 * mt, sb.W, LD, n0); }
        }
    }
}

// dy (the warp's rows of the gradient of y = scale x / sqrt(|x|^2 + eps), a (c, D) accumulator) becomes
// dx, as l2norm_backward_kernel computes it; x_rows: the raw rows (row stride `stride`), rows >= n unread
template <int NT>
__device__ static inline void d3_l2norm_backward(float (*dy)[4], const bf16* x_rows, size_t stride, int m0, int n, float scale) {
    int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    float x[NT][4];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int row = m0 + g + 8 * h;
#pragma unroll
        for (int j = 0; j < NT; j++) {
            float2 v = row < n ? __bfloat1622float2(*(const __nv_bfloat162*)(x_rows + row * stride + 8 * j + 2 * t)) : make_float2(0.0f, 0.0f);
            x[j][2 * h] = v.x;
            x[j][2 * h + 1] = v.y;
        }
    }
    float ss0, ss1, xd0, xd1;
    d3_rowdot<NT>(x, x, &ss0, &ss1);
    d3_rowdot<NT>(x, dy, &xd0, &xd1);
    float inv0 = rsqrtf(ss0 + (float)L2NORM_EPS), inv1 = rsqrtf(ss1 + (float)L2NORM_EPS);
    float c0 = xd0 * inv0 * inv0, c1 = xd1 * inv1 * inv1;  // (y·dy) / |x|, per row
#pragma unroll
    for (int j = 0; j < NT; j++) {
        dy[j][0] = scale * (dy[j][0] - x[j][0] * c0) * inv0;
        dy[j][1] = scale * (dy[j][1] - x[j][1] * c0) * inv0;
        dy[j][2] = scale * (dy[j][2] - x[j][2] * c1) * inv1;
        dy[j][3] = scale * (dy[j][3] - x[j][3] * c1) * inv1;
    }
}

// All gradients of one chunk from S0, dS and the prep's tiles (the algebra of
// delta_chunk_backward_kernel, v2). Writes (=) dq, dk, dv, dbeta (gdn), dgate. With qk_raw (the raw q
// and k, k at qk_raw + C, rows of raw_stride, that q = q_scale x/|x| and k = x/|x| came from), dq and
// dk are the gradients of those raw rows, rows of raw_stride: the L2 norms' backward done here,
// on the gradients still in registers.
template <int HD>
__global__ void __launch_bounds__(D3_THREADS) delta3_chunk_backward_kernel(bf16* dq, bf16* dk, bf16* dv, float* dbeta, float* dgate,
                                                                           const bf16* dout, const float* states,
                                                                           const float* dstates, const bf16* q, const bf16* k,
                                                                           const bf16* v, int vstride, const bf16* Ut, const bf16* W,
                                                                           const bf16* Ti, const bf16* dU, const float* beta,
                                                                           const float* gate, const bf16* qk_raw, int raw_stride,
                                                                           float q_scale, int T, int C, int H) {
    extern __shared__ __align__(16) unsigned char d3_smem[];
    const int c = DELTA_CHUNK, LD = d3_ld(HD), KT = HD / 16, NT = HD / 8;
    DeltaPos p = delta_pos(blockIdx.x, T, C, H);
    int warp = threadIdx.x / 32, m0 = 16 * warp, g = (threadIdx.x % 32) / 4, t4 = threadIdx.x % 4;
    int r0 = m0 + g, r1 = m0 + g + 8, gdn = W != NULL, dstride = qk_raw ? raw_stride : C;
    bf16 *sQ = (bf16*)d3_smem, *sK = sQ + c * LD, *sV = sK + c * LD, *sdO = sV + c * LD, *sU = sdO + c * LD;
    bf16 *sW = sU + c * LD, *sdU = sW + c * LD, *sTi = sdU + c * LD, *sX = sTi + c * D3_LDC;
    bf16 *sS0 = sX + c * D3_LDC, *sdS = sS0 + HD * LD;
    DeltaGates gv;
    float* sdg = delta_gates_carve(&gv, (float*)(sdS + HD * LD));  // (c) dL/dg_t, row parts
    float *sdbt = sdg + c, *colp = sdbt + c;                         // (c) dL/dβ_t; (4, c) column parts of dg, per warp
    d3_fetch(sQ, LD, q, C, p.row0, p.n, p.h * HD, HD);
    d3_fetch(sK, LD, k, C, p.row0, p.n, p.h * HD, HD);
    d3_fetch(sdO, LD, dout, C, p.row0, p.n, p.h * HD, HD);
    d3_fetch(sdU, LD, dU + p.tile, HD, 0, c, 0, HD);
    d3_fetch(gdn ? sV : sU, LD, v, vstride, p.row0, p.n, p.h * HD, HD);  // gla: U = V
    if (gdn) {
        d3_fetch(sU, LD, Ut + p.tile, HD, 0, c, 0, HD);
        d3_fetch(sW, LD, W + p.tile, HD, 0, c, 0, HD);
        d3_fetch(sTi, D3_LDC, Ti + (size_t)blockIdx.x * c * c, c, 0, c, 0, c);
    }
    delta_fetch_gates(gv, beta, gate, p.row0, p.n, H, p.h);
    d3_load_state<HD>(sS0, states + p.state, NULL);
    float dS_S0 = d3_load_state<HD>(sdS, dstates + p.state, states + p.state);  // <dS, S0>
    BLOCK_LOOP(idx, 4 * c) { colp[idx] = 0.0f; }
    dS_S0 = block_sum(dS_S0);
    delta_fetch_wait();
    delta_gates_finish(gv);
    float w0 = gv.w[r0], w1 = gv.w[r1], b0 = gv.b[r0], b1 = gv.b[r1];
    float dg0, dg1, dbt0 = 0.0f, dbt1 = 0.0f, s0, s1;  // this thread's rows' dL/dg, dL/dβ
    if (gdn) {  // U = Ũ - W S0ᵀ, over Ũ (each warp its own rows)
        float x[NT][4], ut[NT][4];
        d3_zero<NT>(x);
        d3_mm<NT, KT, D3_N, D3_T>(x, sW, LD, m0, sS0, LD, 0);
        d3_load<NT>(ut, sU, LD, m0, 0);
#pragma unroll
        for (int j = 0; j < NT; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) { ut[j][e] -= x[j][e]; }
        }
        d3_store<NT>(sU, LD, m0, c, 0, ut, 1.0f, 1.0f);
        __syncthreads();
    }
    // S_end = b_last S0 + Uᵀ diag(w) K:  dw_t = u_t·(K dSᵀ)[t], dK = diag(w) U dS, g_last gets b_last <dS, S0>
    float dK[NT][4], dw0, dw1;
    {
        float x[NT][4];
        d3_zero<NT>(x);
        d3_mm<NT, KT, D3_N, D3_T>(x, sK, LD, m0, sdS, LD, 0);
        d3_rowdot_tile<NT>(x, sU, LD, m0, &dw0, &dw1);
    }
    d3_zero<NT>(dK);
    d3_mm<NT, KT, D3_N, D3_N>(dK, sU, LD, m0, sdS, LD, 0);
    d3_scale_rows<NT>(dK, w0, w1);
    dg0 = -dw0 * w0;
    dg1 = -dw1 * w1;
    // dP = dO Uᵀ, P = Γ ⊙ Q Kᵀ (s <= t): dg_t += Σ_s dP P[t][s], dg_s -= Σ_t dP P[t][s]; then dP ⊙ Γ
    {
        float dp[8][4], pp[8][4];
        d3_zero<8>(dp);
        d3_zero<8>(pp);
        d3_mm<8, KT, D3_N, D3_T>(dp, sdO, LD, m0, sU, LD, 0);
        d3_mm<8, KT, D3_N, D3_T>(pp, sQ, LD, m0, sK, LD, 0);
        d3_decay_mask<8>(pp, gv.g, m0, 0, 0);
#pragma unroll
        for (int j = 0; j < 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) { pp[j][e] *= dp[j][e]; }
        }
        d3_rowsum<8>(pp, &s0, &s1);
        dg0 += s0;
        dg1 += s1;
        d3_colsum<8>(colp + warp * c, pp);
        d3_decay_mask<8>(dp, gv.g, m0, 0, 0);
        d3_store<8>(sX, D3_LDC, m0, c, 0, dp, 1.0f, 1.0f);
        uint32_t a[4][4];
        d3_pack<8>(a, dp, 1.0f, 1.0f);
        // dQ = diag(b) dO S0 + (dP ⊙ Γ) K
        float dQ[NT][4];
        d3_zero<NT>(dQ);
        d3_mm<NT, KT, D3_N, D3_N>(dQ, sdO, LD, m0, sS0, LD, 0);
        d3_scale_rows<NT>(dQ, b0, b1);
        d3_mm_reg<NT, 4, D3_N>(dQ, a, sK, LD, 0);
        if (qk_raw) { d3_l2norm_backward<NT>(dQ, qk_raw + p.row0 * raw_stride + p.h * HD, raw_stride, m0, p.n, q_scale); }
        d3_store<NT>(dq + p.row0 * dstride, dstride, m0, p.n, p.h * HD, dQ, 1.0f, 1.0f);
    }
    // dg_t += b_t do_t·(S0 q_t)
    {
        float y[NT][4];
        d3_zero<NT>(y);
        d3_mm<NT, KT, D3_N, D3_T>(y, sQ, LD, m0, sS0, LD, 0);
        d3_rowdot_tile<NT>(y, sdO, LD, m0, &s0, &s1);
        dg0 += b0 * s0;
        dg1 += b1 * s1;
    }
    __syncthreads();  // sX (dP ⊙ Γ) complete
    d3_mm<NT, 4, D3_T, D3_N>(dK, sX, D3_LDC, m0, sQ, LD, 0);  // dK += (dP ⊙ Γ)ᵀ Q
    if (gdn) {
        // dR = Tiᵀ dU; R = diag(β)(V - diag(b) K S0ᵀ): dv = β dR, dβ, dg, dK -= diag(βb) dR S0
        float dR[NT][4];
        d3_zero<NT>(dR);
        d3_mm<NT, 4, D3_T, D3_N>(dR, sTi, D3_LDC, m0, sdU, LD, 0);
        float beta0 = gv.beta[r0], beta1 = gv.beta[r1], bb0 = gv.bb[r0], bb1 = gv.bb[r1];
        d3_store<NT>(dv + p.row0 * vstride, vstride, m0, p.n, p.h * HD, dR, beta0, beta1);
        {
            float ks[NT][4];
            d3_zero<NT>(ks);
            d3_mm<NT, KT, D3_N, D3_T>(ks, sK, LD, m0, sS0, LD, 0);
            d3_rowdot<NT>(dR, ks, &s0, &s1);  // dr_t·(S0 k_t)
            dbt0 -= b0 * s0;
            dbt1 -= b1 * s1;
            dg0 -= bb0 * s0;
            dg1 -= bb1 * s1;
            d3_rowdot_tile<NT>(dR, sV, LD, m0, &s0, &s1);
            dbt0 += s0;
            dbt1 += s1;
        }
        uint32_t a[NT / 2][4];
        d3_pack<NT>(a, dR, -bb0, -bb1);
        d3_mm_reg<NT, KT, D3_N>(dK, a, sS0, LD, 0);
        // dA = -dR Uᵀ (s < t); A = β_t Γ ⊙ K Kᵀ: dβ_t += Σ_s dA Γ KKᵀ, dg from dA ⊙ A (as t and as s),
        // and dKK = β_t Γ ⊙ dA adds dKK K + dKKᵀ K to dK
        d3_pack<NT>(a, dR, -1.0f, -1.0f);
        float xa[8][4], akk[8][4];
        d3_zero<8>(xa);
        d3_mm_reg<8, KT, D3_T>(xa, a, sU, LD, 0);
        d3_decay_mask<8>(xa, gv.g, m0, 1, 0);
        d3_zero<8>(akk);
        d3_mm<8, KT, D3_N, D3_T>(akk, sK, LD, m0, sK, LD, 0);
        d3_rowdot<8>(xa, akk, &s0, &s1);
        dbt0 += s0;
        dbt1 += s1;
        dg0 += beta0 * s0;
        dg1 += beta1 * s1;
        d3_scale_rows<8>(xa, beta0, beta1);  // dKK
#pragma unroll
        for (int j = 0; j < 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) { akk[j][e] *= xa[j][e]; }
        }
        d3_colsum<8>(colp + warp * c, akk);
        uint32_t a2[4][4];
        d3_pack<8>(a2, xa, 1.0f, 1.0f);
        d3_mm_reg<NT, 4, D3_N>(dK, a2, sK, LD, 0);
        __syncthreads();  // everyone is done reading sX
        d3_store<8>(sX, D3_LDC, m0, c, 0, xa, 1.0f, 1.0f);
        __syncthreads();
        d3_mm<NT, 4, D3_T, D3_N>(dK, sX, D3_LDC, m0, sK, LD, 0);
    } else {  // gla: dv = dU
        float x[NT][4];
        d3_load<NT>(x, sdU, LD, m0, 0);
        d3_store<NT>(dv + p.row0 * vstride, vstride, m0, p.n, p.h * HD, x, 1.0f, 1.0f);
    }
    if (qk_raw) { d3_l2norm_backward<NT>(dK, qk_raw + C + p.row0 * raw_stride + p.h * HD, raw_stride, m0, p.n, 1.0f); }
    d3_store<NT>(dk + p.row0 * dstride, dstride, m0, p.n, p.h * HD, dK, 1.0f, 1.0f);
    // g_last gets b_last <dS, S0> + Σ_s dw_s w_s; dgate_t = Σ_{t2 >= t} dg_t2 within the chunk
    float dww = block_sum(t4 == 0 ? dw0 * w0 + dw1 * w1 : 0.0f);
    if (t4 == 0) {
        sdg[r0] = dg0; sdg[r1] = dg1;
        sdbt[r0] = dbt0; sdbt[r1] = dbt1;
    }
    __syncthreads();
    BLOCK_LOOP(t, c) {
        float total = sdg[t] - colp[t] - colp[c + t] - colp[2 * c + t] - colp[3 * c + t];
        sdg[t] = t == c - 1 ? total + gv.b[c - 1] * dS_S0 + dww : total;
    }
    __syncthreads();
    chunk_prefix_sum(sdg);
    BLOCK_LOOP(t, p.n) {
        dgate[(p.row0 + t) * H + p.h] = sdg[c - 1] - (t > 0 ? sdg[t - 1] : 0.0f);
        if (gdn) { dbeta[(p.row0 + t) * H + p.h] = sdbt[t]; }
    }
}
#define D3_SMEM_CHUNK_BWD(HD) \
    ((7 * DELTA_CHUNK * d3_ld(HD) + 2 * DELTA_CHUNK * D3_LDC + 2 * (HD) * d3_ld(HD)) * 2 + (DELTA_GATE_VECS + 6) * DELTA_CHUNK * 4)

template <int HD>
static void delta3_set_smem() {
    static int done = 0;  // opt in to > 48 KiB of shared memory once per head dim
    if (done) { return; }
    cudaCheck(cudaFuncSetAttribute(delta3_prep_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)D3_SMEM_PREP(HD)));
    cudaCheck(cudaFuncSetAttribute(delta3_state_forward_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)D3_SMEM_STATE_FWD(HD)));
    cudaCheck(cudaFuncSetAttribute(delta3_output_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)D3_SMEM_OUTPUT(HD)));
    cudaCheck(cudaFuncSetAttribute(delta3_state_backward_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)D3_SMEM_STATE_BWD(HD)));
    cudaCheck(cudaFuncSetAttribute(delta3_chunk_backward_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)D3_SMEM_CHUNK_BWD(HD)));
    done = 1;
}

// v3 forward: gdn prep (Ũ, W) -> state pass (U, states) -> output
template <int HD>
static void delta_v3_forward(floatX* o, float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                             const float* beta, const float* gate, int B, int T, int C, int H, int mixer, float* scratch,
                             cudaStream_t stream) {
    delta3_set_smem<HD>();
    int chunks = B * H * delta_rule_n_chunks(T), gdn = mixer == MIXER_GDN;
    D3Scratch s = d3_scratch(scratch, B, T, C, H);
    if (gdn) {
        delta3_prep_kernel<HD><<<chunks, D3_THREADS, D3_SMEM_PREP(HD), stream>>>(s.U, s.W, NULL, NULL, NULL, k, v, vstride, NULL,
                                                                                   beta, gate, T, C, H);
        cudaCheck(cudaGetLastError());
    }
    delta3_state_forward_kernel<HD><<<B * H * (HD / D3_BV(HD)), D3_THREADS, D3_SMEM_STATE_FWD(HD), stream>>>(
        states, s.U, gdn ? s.W : NULL, k, v, vstride, gate, T, C, H);
    cudaCheck(cudaGetLastError());
    delta3_output_kernel<HD><<<chunks, D3_THREADS, D3_SMEM_OUTPUT(HD), stream>>>(o, states, gdn ? s.U : NULL, q, k, v, vstride, gate,
                                                                                  T, C, H);
    cudaCheck(cudaGetLastError());
}

// v3 backward: prep (Ti, Ũ, W, dUl) -> dS state pass (dU, dstates) -> chunk gradients (and, with
// qk_raw, the L2 norms' backward: delta3_chunk_backward_kernel)
template <int HD>
static void delta_v3_backward(floatX* dq, floatX* dk, floatX* dv, float* dbeta, float* dgate, const floatX* dout,
                              const float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                              const float* beta, const float* gate, int B, int T, int C, int H, int mixer, float* scratch,
                              const floatX* qk_raw, int raw_stride, float q_scale, cudaStream_t stream) {
    delta3_set_smem<HD>();
    int chunks = B * H * delta_rule_n_chunks(T), gdn = mixer == MIXER_GDN;
    D3Scratch s = d3_scratch(scratch, B, T, C, H);
    bf16 *U = gdn ? s.U : NULL, *W = gdn ? s.W : NULL, *Ti = gdn ? s.Ti : NULL;
    delta3_prep_kernel<HD><<<chunks, D3_THREADS, D3_SMEM_PREP(HD), stream>>>(U, W, Ti, s.dU, q, k, v, vstride, dout, beta, gate, T,
                                                                               C, H);
    cudaCheck(cudaGetLastError());
    delta3_state_backward_kernel<HD><<<B * H * (HD / D3_BV(HD)), D3_THREADS, D3_SMEM_STATE_BWD(HD), stream>>>(
        s.dstates, s.dU, W, dout, q, k, gate, T, C, H);
    cudaCheck(cudaGetLastError());
    delta3_chunk_backward_kernel<HD><<<chunks, D3_THREADS, D3_SMEM_CHUNK_BWD(HD), stream>>>(
        dq, dk, dv, dbeta, dgate, dout, states, s.dstates, q, k, v, vstride, U, W, Ti, s.dU, beta, gate, qk_raw, raw_stride, q_scale,
        T, C, H);
    cudaCheck(cudaGetLastError());
}
#endif  // PRECISION_BF16

// ----------------------------------------------------------------------------
// The trainer's entry points: v3 where it serves the head dim, else v2

// v3 serves head dims 64 and 128 in the bf16 build; v2 the other multiples of 16 up to 64 and the fp32 build
static int delta_rule_uses_v3(int D) {
#ifdef PRECISION_BF16
    return D == 64 || D == 128;
#else
    (void)D;
    return 0;
#endif
}
static int delta_rule_head_dim_ok(int D) { return delta_rule_uses_v3(D) || (D % 16 == 0 && D > 0 && D <= DELTA_MAX_D); }
#ifdef PRECISION_BF16
#define DELTA_HEAD_DIMS "16, 32, 48, 64 or 128"
#else
#define DELTA_HEAD_DIMS "16, 32, 48 or 64 (128 needs the bf16 build)"
#endif

// Floats of the recurrence's scratch for a (B,T) batch (v2: Ũ, W, dUl fp32 tiles (B, H, n_chunks, c, D) and
// dstates (B, H, n_chunks, D, D); v3: d3_scratch). The caller owns it (the trainer's GpuModel allocates
// it with the activations); every layer reuses it.
static size_t delta_rule_scratch_floats(int B, int T, int C, int H) {
    size_t tile = (size_t)B * H * delta_rule_n_chunks(T) * DELTA_CHUNK * (C / H);
    size_t v2 = 3 * tile + delta_rule_state_floats(B, T, C, H);
#ifdef PRECISION_BF16
    size_t v3 = d3_scratch_floats(B, T, C, H);
    return v3 > v2 ? v3 : v2;
#else
    return v2;
#endif
}

static void delta_rule_check_dims(int C, int H) {
    int D = C / H;
    if (!delta_rule_head_dim_ok(D)) { die("recurrent mixer: head dim %d, the GPU kernels take " DELTA_HEAD_DIMS, D); }
}

// o (B,T,C) and the chunk-entry states (delta_rule_state_floats) from q, k, v, beta, gate; scratch
// holds delta_rule_scratch_floats(B, T, C, H)
static void delta_rule_forward_gpu(floatX* o, float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                   const float* beta, const float* gate, int B, int T, int C, int H, int mixer,
                                   float* scratch, cudaStream_t stream) {
    delta_rule_check_dims(C, H);
#ifdef PRECISION_BF16
    if (C / H == 64) { delta_v3_forward<64>(o, states, q, k, v, vstride, beta, gate, B, T, C, H, mixer, scratch, stream); return; }
    if (C / H == 128) { delta_v3_forward<128>(o, states, q, k, v, vstride, beta, gate, B, T, C, H, mixer, scratch, stream); return; }
#endif
    delta_v2_forward(o, states, q, k, v, vstride, beta, gate, B, T, C, H, mixer, scratch, stream);
}

// dq, dk (B,T,C), dv (inside dqkva, stride vstride), dbeta (gdn), dgate (B,T,H) from dout (B,T,C).
// qk_raw (v3 only, delta_rule_uses_v3): q, k are the L2 norms of qk_raw's q and k (k at qk_raw + C,
// rows of raw_stride, q scaled by q_scale), and dq, dk are written as the gradients of those raw rows
// (rows of raw_stride), the norms' backward fused into the last kernel; NULL: of q, k themselves.
static void delta_rule_backward_gpu(floatX* dq, floatX* dk, floatX* dv, float* dbeta, float* dgate, const floatX* dout,
                                    const float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                    const float* beta, const float* gate, int B, int T, int C, int H, int mixer,
                                    float* scratch, const floatX* qk_raw, int raw_stride, float q_scale, cudaStream_t stream) {
    delta_rule_check_dims(C, H);
    if (qk_raw && !delta_rule_uses_v3(C / H)) { die("recurrent mixer: the fused L2-norm backward needs v3 (head dim 64 or 128, bf16 build)"); }
#ifdef PRECISION_BF16
    if (C / H == 64) {
        delta_v3_backward<64>(dq, dk, dv, dbeta, dgate, dout, states, q, k, v, vstride, beta, gate, B, T, C, H, mixer, scratch, qk_raw,
                              raw_stride, q_scale, stream);
        return;
    }
    if (C / H == 128) {
        delta_v3_backward<128>(dq, dk, dv, dbeta, dgate, dout, states, q, k, v, vstride, beta, gate, B, T, C, H, mixer, scratch, qk_raw,
                               raw_stride, q_scale, stream);
        return;
    }
#endif
    delta_v2_backward(dq, dk, dv, dbeta, dgate, dout, states, q, k, v, vstride, beta, gate, B, T, C, H, mixer, scratch, stream);
}

#endif // RECURRENT_MIXER_CUH
