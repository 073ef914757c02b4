/*
recurrent_mixer.cuh — the Gated DeltaNet recurrence (and its gla mode) in chunked-parallel form,
forward and backward, fp32 state.

defines: the R layer's small kernels (causal conv + SiLU, L2 norm, gates) and their launchers
         conv_silu_forward_gpu / conv_silu_backward_gpu, l2norm_forward_gpu / l2norm_backward_gpu,
         gates_forward_gpu / gates_backward_gpu; the recurrence kernels delta_prep_kernel,
         delta_state_forward_kernel, delta_output_kernel, delta_backward_prep_kernel,
         delta_state_backward_kernel, delta_chunk_backward_kernel, launchers delta_rule_forward_gpu /
         delta_rule_backward_gpu, delta_rule_state_floats

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
(Ũ, W; gdn), a state pass that carries the state through the chunks in order (one block per head,
the next chunk's tiles in flight while this one is used) and saves each chunk's S0, and the
per-chunk output. All matrix products are on shared-memory tiles (tile_mm): tf32 tensor cores in the
bf16 build, fp32 CUDA cores in the fp32 build. Every global load is a cp.async (one memory round
trip per chunk, not one per element).

Backward, dS = dL/dS_end of a chunk, dU = Pᵀ dO + diag(w) K dSᵀ, dR = Tiᵀ dU (gdn), and
dS0 = b_last dS + Σ_t b_t do_t q_tᵀ - dUᵀ W. Again three kernels: per-chunk prep (W and dUl = Pᵀ dO),
a reverse state pass that saves dS of every chunk, and the per-chunk gradients of q, k, v, β and the
gates from (S0, dS); g's gradient goes to log α by a reverse cumulative sum within the chunk.

Layouts, as in the CPU reference: q, k (B,T,C) normalised; v inside qkva with row stride vstride;
beta, gate (B,T,H) with gate = log α; o (B,T,C). The forward saves the state entering each chunk,
states (B, H, n_chunks, D, D) with S[i][j], i value dim, j key dim. The backward writes (=) dq, dk,
dv, dbeta, dgate. Ũ, W, dUl and the dS of each chunk live in a scratch buffer the caller owns
(delta_rule_scratch_floats), shared by all layers. No atomics: every output element has one writer.

Precision: q, k, v, o and their gradients are the build's floatX (dataloader.h); beta, gate, the
states and all arithmetic are fp32. Head dim D: a multiple of 16 up to 64.
*/
#ifndef RECURRENT_MIXER_CUH
#define RECURRENT_MIXER_CUH

#include "cuda_common.cuh"  // defines: floatX, cudaCheck, warp_sum, block_sum, REDUCE_THREADS, blocks_for

// ----------------------------------------------------------------------------
// The R layer's small kernels; layouts and math as in hybrid_cpu.h (conv_forward, silu_forward,
// l2norm_forward, gates_forward and their backwards).

__device__ static inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ static inline float softplusf_(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

// conv (N, CH) = causal depthwise conv of inp (N, CH) with w (CH, K); act = silu(conv). One thread per element.
__global__ void conv_silu_forward_kernel(floatX* conv, floatX* act, const floatX* inp, const floatX* w, int B, int T, int CH) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * CH) { return; }
    int c = (int)(idx % CH), t = (int)((idx / CH) % T);
    float acc = 0.0f;
    for (int k = 0; k < CONV_K; k++) {
        int ts = t - (CONV_K - 1) + k;
        if (ts >= 0) { acc += (float)w[c * CONV_K + k] * (float)inp[idx - (size_t)(t - ts) * CH]; }
    }
    conv[idx] = (floatX)acc;
    act[idx] = (floatX)(acc * sigmoidf_(acc));
}

// dconv = dact silu'(conv), written in place of dact; one thread per element
__global__ void silu_backward_inplace_kernel(floatX* dact, const floatX* conv, size_t n) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) { return; }
    float x = (float)conv[idx], s = sigmoidf_(x);
    dact[idx] = (floatX)((float)dact[idx] * s * (1.0f + x * (1.0f - s)));
}

// dinp[t, c] = Σ_k dconv[t + (K-1) - k, c] w[c, k]; one thread per element
__global__ void conv_backward_input_kernel(floatX* dinp, const floatX* dconv, const floatX* w, int B, int T, int CH) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * CH) { return; }
    int c = (int)(idx % CH), t = (int)((idx / CH) % T);
    float acc = 0.0f;
    for (int k = 0; k < CONV_K; k++) {
        int td = t + (CONV_K - 1) - k;
        if (td < T) { acc += (float)dconv[idx + (size_t)(td - t) * CH] * (float)w[c * CONV_K + k]; }
    }
    dinp[idx] = (floatX)acc;
}

// dw[c, k] += Σ_{b,t} dconv[b,t,c] inp[b,t-(K-1)+k,c]. Block (32 channels, CONV_DW_RANGES row ranges):
// a warp reads 32 consecutive channels of a row (coalesced); each thread walks its contiguous range
// of rows keeping the last K inputs of its channel in registers (one read per element), then the
// ranges' partial sums are added in a fixed order (deterministic, no atomics).
#define CONV_DW_RANGES 16
__global__ void __launch_bounds__(32 * CONV_DW_RANGES) conv_backward_weight_kernel(float* dw, const floatX* dconv, const floatX* inp, int B, int T, int CH) {
    __shared__ float part[CONV_DW_RANGES][32][CONV_K];
    int tx = threadIdx.x % 32, ty = threadIdx.x / 32, c = blockIdx.x * 32 + tx;
    size_t N = (size_t)B * T, per = (N + CONV_DW_RANGES - 1) / CONV_DW_RANGES;
    size_t n0 = min(N, ty * per), n1 = min(N, n0 + per);
    float acc[CONV_K] = {0}, win[CONV_K] = {0};  // win[k] = inp at t-(K-1)+k of the row at hand, 0 before t = 0
    if (c < CH && n0 < n1) {
        int t = (int)(n0 % T);
#pragma unroll
        for (int k = 1; k < CONV_K; k++) {  // the K-1 rows before n0, as the loop's shift expects them
            int ts = t - CONV_K + k;
            win[k] = ts >= 0 ? (float)inp[(n0 - CONV_K + k) * CH + c] : 0.0f;
        }
        for (size_t n = n0; n < n1; n++, t = t + 1 == T ? 0 : t + 1) {
#pragma unroll
            for (int k = 0; k < CONV_K - 1; k++) { win[k] = t == 0 ? 0.0f : win[k + 1]; }
            win[CONV_K - 1] = (float)inp[n * CH + c];
            float d = (float)dconv[n * CH + c];
#pragma unroll
            for (int k = 0; k < CONV_K; k++) { acc[k] += d * win[k]; }
        }
    }
#pragma unroll
    for (int k = 0; k < CONV_K; k++) { part[ty][tx][k] = acc[k]; }
    __syncthreads();
    if (ty == 0 && c < CH) {
        for (int k = 0; k < CONV_K; k++) {
            float total = 0.0f;
            for (int r = 0; r < CONV_DW_RANGES; r++) { total += part[r][tx][k]; }
            dw[c * CONV_K + k] += total;
        }
    }
}

// out (N, C) = scale x / sqrt(|x|^2 + eps) per head; x rows have stride in_stride. One warp per
// (n, h), lanes across the head's D elements (coalesced).
__global__ void l2norm_forward_kernel(floatX* out, const floatX* inp, int in_stride, int N, int C, int H, float scale) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N * H) { return; }
    int n = row / H, h = row % H, D = C / H;
    const floatX* x = inp + (size_t)n * in_stride + h * D;
    float ss = 0.0f;
    for (int i = lane; i < D; i += 32) { ss += (float)x[i] * (float)x[i]; }
    float r = scale * rsqrtf(warp_sum(ss) + (float)L2NORM_EPS);
    for (int i = lane; i < D; i += 32) { out[(size_t)n * C + h * D + i] = (floatX)((float)x[i] * r); }
}

// dx = scale (dy - y (y·dy)) / |x|, y = x/|x|; writes (=) the rows of dinp it owns. One warp per (n, h).
__global__ void l2norm_backward_kernel(floatX* dinp, const floatX* dout, const floatX* inp, int in_stride, int N, int C, int H, float scale) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N * H) { return; }
    int n = row / H, h = row % H, D = C / H;
    const floatX* x = inp + (size_t)n * in_stride + h * D;
    const floatX* dy = dout + (size_t)n * C + h * D;
    float ss = 0.0f, xdy = 0.0f;
    for (int i = lane; i < D; i += 32) { ss += (float)x[i] * (float)x[i]; xdy += (float)x[i] * (float)dy[i]; }
    float inv = rsqrtf(warp_sum(ss) + (float)L2NORM_EPS), ydy = warp_sum(xdy) * inv;
    for (int i = lane; i < D; i += 32) { dinp[(size_t)n * in_stride + h * D + i] = (floatX)(scale * ((float)dy[i] - (float)x[i] * inv * ydy) * inv); }
}

// beta = sigmoid(bpre) (gdn), gate = -exp(A_log) softplus(apre + dt_bias); one thread per (n, h)
__global__ void gates_forward_kernel(float* beta, float* gate, const floatX* bpre, const floatX* apre, const floatX* A_log,
                                     const floatX* dt_bias, int N, int H) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * H) { return; }
    int h = idx % H;
    if (beta) { beta[idx] = sigmoidf_((float)bpre[idx]); }
    gate[idx] = -expf((float)A_log[h]) * softplusf_((float)apre[idx] + (float)dt_bias[h]);
}

// dbpre, dapre (=) per (n, h); one thread per (n, h)
__global__ void gates_backward_kernel(floatX* dbpre, floatX* dapre, const float* dbeta, const float* dgate, const float* beta,
                                      const floatX* apre, const floatX* A_log, const floatX* dt_bias, int N, int H) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * H) { return; }
    int h = idx % H;
    if (dbpre) { dbpre[idx] = (floatX)(dbeta[idx] * beta[idx] * (1.0f - beta[idx])); }
    dapre[idx] = (floatX)(dgate[idx] * -expf((float)A_log[h]) * sigmoidf_((float)apre[idx] + (float)dt_bias[h]));
}

// dA_log[h] += Σ_n dgate gate;  ddt_bias[h] += Σ_n dapre. One block per head.
__global__ void gates_backward_params_kernel(float* dA_log, float* ddt_bias, const float* dgate, const float* gate,
                                             const floatX* dapre, int N, int H) {
    int h = blockIdx.x;
    float a = 0.0f, d = 0.0f;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        a += dgate[(size_t)n * H + h] * gate[(size_t)n * H + h];
        d += (float)dapre[(size_t)n * H + h];
    }
    a = block_sum(a);
    d = block_sum(d);
    if (threadIdx.x == 0) { dA_log[h] += a; ddt_bias[h] += d; }
}

static void conv_silu_forward_gpu(floatX* conv, floatX* act, const floatX* inp, const floatX* w, int B, int T, int CH, cudaStream_t stream) {
    size_t n = (size_t)B * T * CH;
    conv_silu_forward_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(conv, act, inp, w, B, T, CH);
    cudaCheck(cudaGetLastError());
}

// dinp (=) and dw (+=) from dact; dact is overwritten with dconv
static void conv_silu_backward_gpu(floatX* dinp, float* dw, floatX* dact, const floatX* conv, const floatX* inp, const floatX* w,
                                   int B, int T, int CH, cudaStream_t stream) {
    size_t n = (size_t)B * T * CH;
    silu_backward_inplace_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(dact, conv, n);
    cudaCheck(cudaGetLastError());
    conv_backward_input_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(dinp, dact, w, B, T, CH);
    cudaCheck(cudaGetLastError());
    conv_backward_weight_kernel<<<blocks_for(CH, 32), 32 * CONV_DW_RANGES, 0, stream>>>(dw, dact, inp, B, T, CH);
    cudaCheck(cudaGetLastError());
}

static void l2norm_forward_gpu(floatX* out, const floatX* inp, int in_stride, int N, int C, int H, float scale, cudaStream_t stream) {
    l2norm_forward_kernel<<<blocks_for((size_t)N * H, 8), 256, 0, stream>>>(out, inp, in_stride, N, C, H, scale);  // 8 warps
    cudaCheck(cudaGetLastError());
}

static void l2norm_backward_gpu(floatX* dinp, const floatX* dout, const floatX* inp, int in_stride, int N, int C, int H, float scale,
                                cudaStream_t stream) {
    l2norm_backward_kernel<<<blocks_for((size_t)N * H, 8), 256, 0, stream>>>(dinp, dout, inp, in_stride, N, C, H, scale);
    cudaCheck(cudaGetLastError());
}

// beta (gdn; NULL for gla) and gate (N, H)
static void gates_forward_gpu(float* beta, float* gate, const floatX* bpre, const floatX* apre, const floatX* A_log,
                              const floatX* dt_bias, int N, int H, cudaStream_t stream) {
    gates_forward_kernel<<<blocks_for((size_t)N * H, 256), 256, 0, stream>>>(beta, gate, bpre, apre, A_log, dt_bias, N, H);
    cudaCheck(cudaGetLastError());
}

// dbpre (gdn; NULL for gla), dapre (=); dA_log, ddt_bias (+=)
static void gates_backward_gpu(floatX* dbpre, floatX* dapre, float* dA_log, float* ddt_bias, const float* dbeta, const float* dgate,
                               const float* beta, const float* gate, const floatX* apre, const floatX* A_log, const floatX* dt_bias,
                               int N, int H, cudaStream_t stream) {
    gates_backward_kernel<<<blocks_for((size_t)N * H, 256), 256, 0, stream>>>(dbpre, dapre, dbeta, dgate, beta, apre, A_log, dt_bias, N, H);
    cudaCheck(cudaGetLastError());
    gates_backward_params_kernel<<<H, REDUCE_THREADS, 0, stream>>>(dA_log, ddt_bias, dgate, gate, dapre, N, H);
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

// Floats of the chunked kernels' scratch for a (B,T) batch: Ũ, W and dUl tiles (B, H, n_chunks, c, D)
// and dstates (B, H, n_chunks, D, D). The caller owns it (the trainer's GpuModel allocates it with the
// activations); every layer reuses it.
static size_t delta_rule_scratch_floats(int B, int T, int C, int H) {
    size_t tile = (size_t)B * H * delta_rule_n_chunks(T) * DELTA_CHUNK * (C / H);
    return 3 * tile + delta_rule_state_floats(B, T, C, H);
}

static void delta_rule_check_dims(int C, int H) {
    int D = C / H;
    if (D > DELTA_MAX_D || D % 16 != 0) { die("recurrent mixer: head dim %d, the GPU kernels take a multiple of 16 up to %d", D, DELTA_MAX_D); }
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

// o (B,T,C) and the chunk-entry states (delta_rule_state_floats) from q, k, v, beta, gate; scratch
// holds delta_rule_scratch_floats(B, T, C, H):
// gdn prep (Ũ, W per chunk, parallel) -> state pass (sequential in chunks) -> output (parallel)
static void delta_rule_forward_gpu(floatX* o, float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                   const float* beta, const float* gate, int B, int T, int C, int H, int mixer,
                                   float* scratch, cudaStream_t stream) {
    delta_rule_check_dims(C, H);
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

// dq, dk (B,T,C), dv (inside dqkva, stride vstride), dbeta (gdn), dgate (B,T,H) from dout (B,T,C):
// prep (W, dUl per chunk, parallel) -> dS state pass (reverse, sequential) -> gradients (parallel)
static void delta_rule_backward_gpu(floatX* dq, floatX* dk, floatX* dv, float* dbeta, float* dgate, const floatX* dout,
                                    const float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                    const float* beta, const float* gate, int B, int T, int C, int H, int mixer,
                                    float* scratch, cudaStream_t stream) {
    delta_rule_check_dims(C, H);
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

#endif // RECURRENT_MIXER_CUH
