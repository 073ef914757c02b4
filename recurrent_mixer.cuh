/*
recurrent_mixer.cuh — the Gated DeltaNet recurrence (and its gla mode) in chunked-parallel form,
forward and backward, fp32 state.

defines: the R layer's small kernels (causal conv + SiLU, L2 norm, gates) and their launchers
         conv_silu_forward_gpu / conv_silu_backward_gpu, l2norm_forward_gpu / l2norm_backward_gpu,
         gates_forward_gpu / gates_backward_gpu; the recurrence delta_chunk_forward_kernel,
         delta_chunk_backward_kernel, launchers delta_rule_forward_gpu / delta_rule_backward_gpu,
         delta_rule_state_floats

Gradient rule for the whole file: activation gradients are written (=), parameter gradients
(conv_w, A_log, dt_bias) are accumulated (+=) by deterministic per-channel reductions, no atomics.

The recurrence of the CPU reference (hybrid_cpu.h, delta_rule_forward), per (b, h):
    gdn: S_t = α_t S_{t-1} (I - β_t k_t k_tᵀ) + β_t v_t k_tᵀ      gla: S_t = α_t S_{t-1} + v_t k_tᵀ
    o_t = S_t q_t
Chunked form (DESIGN.md §1), chunk of c = DELTA_CHUNK tokens entered with state S0,
g_t = Σ_{j<=t} log α_j within the chunk, Γ[t,s] = exp(g_t - g_s), b_t = exp(g_t):
    R = diag(β) (V - diag(b) K S0ᵀ)                   rows r_t = β_t (v_t - b_t S0 k_t)
    A[t,s] = β_t Γ[t,s] (k_t·k_s), s < t              (I + A) U = R, forward substitution
    P[t,s] = Γ[t,s] (q_t·k_s), s <= t
    O = diag(b) Q S0ᵀ + P U                            o_t = b_t S0 q_t + Σ_s P[t,s] u_s
    S_end = b_last S0 + Σ_s w_s u_s k_sᵀ,  w_s = exp(g_last - g_s)
gla mode: U = V (no R, no A).
Tokens step through chunks one after another (the state S is the only thing carried), and inside a
chunk everything is a small dense matrix product done by the whole block in parallel.

Backward, per chunk in reverse, carrying dS = dL/dS_end (derivation of each line in the comments of
the kernel): dU = Pᵀ dO + w ⊙ (K dSᵀ); dP = dO Uᵀ; gdn: dR = (I + A)⁻ᵀ dU (back substitution),
dA = -dR Uᵀ; then everything flows to q, k, v, β and g, and g to log α by a reverse cumulative sum.
dS for the previous chunk = b_last dS + Σ_t b_t do_t q_tᵀ - Σ_t β_t b_t dr_t k_tᵀ.

Layouts, as in the CPU reference: q, k (B,T,C) normalised; v inside qkva with row stride vstride;
beta, gate (B,T,H) with gate = log α; o (B,T,C). The forward saves the state entering each chunk,
states (B, H, n_chunks, D, D) with S[i][j], i value dim, j key dim. The backward writes (=) dq, dk,
dv, dbeta, dgate; one block owns one (b, h), so there are no atomics.

Precision: q, k, v, o and their gradients are the build's floatX (dataloader.h); beta, gate, the
states and dbeta, dgate are fp32; all arithmetic is fp32 on CUDA cores. One block runs one (b, h)
with D <= 64 (shared memory holds the state, its gradient and the chunk's tiles).
*/
#ifndef RECURRENT_MIXER_CUH
#define RECURRENT_MIXER_CUH

#include <cuda_runtime.h>

#define REDUCE_THREADS 256

// ----------------------------------------------------------------------------
// The R layer's small kernels; layouts and math as in hybrid_cpu.h (conv_forward, silu_forward,
// l2norm_forward, gates_forward and their backwards).

__device__ static inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ static inline float softplusf_(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

// Sums v over the block; every thread gets the total (fixed order, so deterministic).
__device__ static float block_sum(float v) {
    __shared__ float partial[32];
    for (int off = 16; off > 0; off /= 2) { v += __shfl_xor_sync(0xffffffff, v, off); }
    if (threadIdx.x % 32 == 0) { partial[threadIdx.x / 32] = v; }
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < (int)(blockDim.x / 32); w++) { total += partial[w]; }
    __syncthreads();
    return total;
}

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

// dw[c, k] += Σ_{b,t} dconv[b,t,c] inp[b,t-(K-1)+k,c]; one block per channel c
__global__ void conv_backward_weight_kernel(float* dw, const floatX* dconv, const floatX* inp, int B, int T, int CH) {
    int c = blockIdx.x;
    float acc[CONV_K] = {0};
    for (int n = threadIdx.x; n < B * T; n += blockDim.x) {
        int t = n % T;
        float d = (float)dconv[(size_t)n * CH + c];
        for (int k = 0; k < CONV_K; k++) {
            int ts = t - (CONV_K - 1) + k;
            if (ts >= 0) { acc[k] += d * (float)inp[(size_t)(n - (t - ts)) * CH + c]; }
        }
    }
    for (int k = 0; k < CONV_K; k++) {
        float total = block_sum(acc[k]);
        if (threadIdx.x == 0) { dw[c * CONV_K + k] += total; }
    }
}

// out (N, C) = scale x / sqrt(|x|^2 + eps) per head; x rows have stride in_stride. One thread per (n, h).
__global__ void l2norm_forward_kernel(floatX* out, const floatX* inp, int in_stride, int N, int C, int H, float scale) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * H) { return; }
    int n = idx / H, h = idx % H, D = C / H;
    const floatX* x = inp + (size_t)n * in_stride + h * D;
    float ss = 0.0f;
    for (int i = 0; i < D; i++) { ss += (float)x[i] * (float)x[i]; }
    float r = scale * rsqrtf(ss + (float)L2NORM_EPS);
    for (int i = 0; i < D; i++) { out[(size_t)n * C + h * D + i] = (floatX)((float)x[i] * r); }
}

// dx = scale (dy - y (y·dy)) / |x|, y = x/|x|; writes (=) the rows of dinp it owns
__global__ void l2norm_backward_kernel(floatX* dinp, const floatX* dout, const floatX* inp, int in_stride, int N, int C, int H, float scale) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * H) { return; }
    int n = idx / H, h = idx % H, D = C / H;
    const floatX* x = inp + (size_t)n * in_stride + h * D;
    const floatX* dy = dout + (size_t)n * C + h * D;
    float ss = 0.0f, ydy = 0.0f;
    for (int i = 0; i < D; i++) { ss += (float)x[i] * (float)x[i]; }
    float inv = rsqrtf(ss + (float)L2NORM_EPS);
    for (int i = 0; i < D; i++) { ydy += (float)x[i] * inv * (float)dy[i]; }
    for (int i = 0; i < D; i++) { dinp[(size_t)n * in_stride + h * D + i] = (floatX)(scale * ((float)dy[i] - (float)x[i] * inv * ydy) * inv); }
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

static int blocks_for(size_t n, int threads) { return (int)((n + threads - 1) / threads); }

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
    conv_backward_weight_kernel<<<CH, REDUCE_THREADS, 0, stream>>>(dw, dact, inp, B, T, CH);
    cudaCheck(cudaGetLastError());
}

static void l2norm_forward_gpu(floatX* out, const floatX* inp, int in_stride, int N, int C, int H, float scale, cudaStream_t stream) {
    l2norm_forward_kernel<<<blocks_for((size_t)N * H, 256), 256, 0, stream>>>(out, inp, in_stride, N, C, H, scale);
    cudaCheck(cudaGetLastError());
}

static void l2norm_backward_gpu(floatX* dinp, const floatX* dout, const floatX* inp, int in_stride, int N, int C, int H, float scale,
                                cudaStream_t stream) {
    l2norm_backward_kernel<<<blocks_for((size_t)N * H, 256), 256, 0, stream>>>(dinp, dout, inp, in_stride, N, C, H, scale);
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
#define DELTA_THREADS 256
#define DELTA_MAX_D 64

// for (idx = thread; idx < n; idx += block) — every thread of the block takes a share
#define BLOCK_LOOP(idx, n) for (int idx = threadIdx.x; idx < (n); idx += blockDim.x)

__host__ __device__ static inline int delta_rule_n_chunks(int T) { return (T + DELTA_CHUNK - 1) / DELTA_CHUNK; }
// floats of the saved chunk-entry states
static size_t delta_rule_state_floats(int B, int T, int C, int H) {
    size_t D = (size_t)C / H;
    return (size_t)B * H * delta_rule_n_chunks(T) * D * D;
}

// The chunk's inputs in shared memory; rows t >= n (past the sequence end) are zero with gate 0,
// so they change nothing.
struct DeltaChunk {
    float *q, *k, *v, *u;  // (c, D)
    float *g;              // (c) cumulative log α
    float *beta;           // (c)
};

// Carves q, k, v, u (c, D) each out of shared memory at `at`; returns the first float past them.
__device__ static float* delta_chunk_carve(DeltaChunk* ch, float* at, int D) {
    ch->q = at;
    ch->k = ch->q + DELTA_CHUNK * D;
    ch->v = ch->k + DELTA_CHUNK * D;
    ch->u = ch->v + DELTA_CHUNK * D;
    return ch->u + DELTA_CHUNK * D;
}

__device__ static void delta_load_chunk(DeltaChunk ch, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                        const float* beta, const float* gate, int b, int h, int t0, int n,
                                        int T, int C, int H, int D) {
    BLOCK_LOOP(idx, DELTA_CHUNK * D) {
        int t = idx / D, i = idx % D;
        size_t row = (size_t)b * T + t0 + t;
        int in = t < n;
        ch.q[idx] = in ? (float)q[row * C + h * D + i] : 0.0f;
        ch.k[idx] = in ? (float)k[row * C + h * D + i] : 0.0f;
        ch.v[idx] = in ? (float)v[row * vstride + h * D + i] : 0.0f;
    }
    BLOCK_LOOP(t, DELTA_CHUNK) {
        size_t row = (size_t)b * T + t0 + t;
        ch.beta[t] = (t < n && beta) ? beta[row * H + h] : 0.0f;
        ch.g[t] = t < n ? gate[row * H + h] : 0.0f;
    }
    __syncthreads();
    if (threadIdx.x == 0) {  // cumulative sum over 64 entries: one thread is plenty
        for (int t = 1; t < DELTA_CHUNK; t++) { ch.g[t] += ch.g[t - 1]; }
    }
    __syncthreads();
}

__device__ static inline float dotd(const float* a, const float* b, int D) {
    float s = 0.0f;
    for (int j = 0; j < D; j++) { s += a[j] * b[j]; }
    return s;
}

// U of the chunk: gla U = V; gdn (I + A) U = R. Fills A (c, c) (gdn) and u.
__device__ static void delta_chunk_u(DeltaChunk ch, float* A, const float* S0, int D, int mixer) {
    if (mixer == MIXER_GLA) {
        BLOCK_LOOP(idx, DELTA_CHUNK * D) { ch.u[idx] = ch.v[idx]; }
        __syncthreads();
        return;
    }
    // r_t[i] = β_t (v_t[i] - b_t Σ_j S0[i][j] k_t[j])
    BLOCK_LOOP(idx, DELTA_CHUNK * D) {
        int t = idx / D, i = idx % D;
        ch.u[idx] = ch.beta[t] * (ch.v[idx] - expf(ch.g[t]) * dotd(S0 + i * D, ch.k + t * D, D));
    }
    // A[t][s] = β_t Γ[t][s] k_t·k_s for s < t
    BLOCK_LOOP(idx, DELTA_CHUNK * DELTA_CHUNK) {
        int t = idx / DELTA_CHUNK, s = idx % DELTA_CHUNK;
        A[idx] = s < t ? ch.beta[t] * expf(ch.g[t] - ch.g[s]) * dotd(ch.k + t * D, ch.k + s * D, D) : 0.0f;
    }
    __syncthreads();
    // forward substitution, row by row: u_t -= Σ_{s<t} A[t][s] u_s
    for (int t = 1; t < DELTA_CHUNK; t++) {
        BLOCK_LOOP(i, D) {
            float acc = 0.0f;
            for (int s = 0; s < t; s++) { acc += A[t * DELTA_CHUNK + s] * ch.u[s * D + i]; }
            ch.u[t * D + i] -= acc;
        }
        __syncthreads();
    }
}

// P[t][s] = Γ[t][s] q_t·k_s for s <= t, else 0
__device__ static void delta_chunk_p(float* P, DeltaChunk ch, int D) {
    BLOCK_LOOP(idx, DELTA_CHUNK * DELTA_CHUNK) {
        int t = idx / DELTA_CHUNK, s = idx % DELTA_CHUNK;
        P[idx] = s <= t ? expf(ch.g[t] - ch.g[s]) * dotd(ch.q + t * D, ch.k + s * D, D) : 0.0f;
    }
    __syncthreads();
}

static size_t delta_forward_smem(int D) {
    return ((size_t)D * D + 4 * (size_t)DELTA_CHUNK * D + 2 * (size_t)DELTA_CHUNK * DELTA_CHUNK + 2 * DELTA_CHUNK) * sizeof(float);
}

// ----------------------------------------------------------------------------
// CUDA kernels

// grid B*H, block DELTA_THREADS: one (b, h), chunk after chunk
__global__ void delta_chunk_forward_kernel(floatX* o, float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                           const float* beta, const float* gate, int T, int C, int H, int mixer) {
    extern __shared__ float smem[];
    int b = blockIdx.x / H, h = blockIdx.x % H, D = C / H;
    float* S = smem;                                   // (D, D)
    DeltaChunk ch;
    float* A = delta_chunk_carve(&ch, S + D * D, D);   // (c, c)
    float* P = A + DELTA_CHUNK * DELTA_CHUNK;          // (c, c)
    ch.g = P + DELTA_CHUNK * DELTA_CHUNK;
    ch.beta = ch.g + DELTA_CHUNK;
    BLOCK_LOOP(idx, D * D) { S[idx] = 0.0f; }
    __syncthreads();
    int n_chunks = delta_rule_n_chunks(T);
    for (int c = 0; c < n_chunks; c++) {
        int t0 = c * DELTA_CHUNK, n = min(DELTA_CHUNK, T - t0);
        float* saved = states + (((size_t)b * H + h) * n_chunks + c) * D * D;
        BLOCK_LOOP(idx, D * D) { saved[idx] = S[idx]; }
        delta_load_chunk(ch, q, k, v, vstride, beta, gate, b, h, t0, n, T, C, H, D);
        delta_chunk_u(ch, A, S, D, mixer);
        delta_chunk_p(P, ch, D);
        // o_t[i] = b_t Σ_j S0[i][j] q_t[j] + Σ_{s<=t} P[t][s] u_s[i]
        BLOCK_LOOP(idx, n * D) {
            int t = idx / D, i = idx % D;
            float acc = expf(ch.g[t]) * dotd(S + i * D, ch.q + t * D, D);
            for (int s = 0; s <= t; s++) { acc += P[t * DELTA_CHUNK + s] * ch.u[s * D + i]; }
            o[((size_t)b * T + t0 + t) * C + h * D + i] = (floatX)acc;
        }
        __syncthreads();
        // S_end[i][j] = b_last S0[i][j] + Σ_s w_s u_s[i] k_s[j]
        float g_last = ch.g[DELTA_CHUNK - 1];
        BLOCK_LOOP(idx, D * D) {
            int i = idx / D, j = idx % D;
            float acc = expf(g_last) * S[idx];
            for (int s = 0; s < n; s++) { acc += expf(g_last - ch.g[s]) * ch.u[s * D + i] * ch.k[s * D + j]; }
            S[idx] = acc;
        }
        __syncthreads();
    }
}

static size_t delta_backward_smem(int D) {
    return (3 * (size_t)D * D + 7 * (size_t)DELTA_CHUNK * D + 3 * (size_t)DELTA_CHUNK * DELTA_CHUNK + 5 * DELTA_CHUNK) * sizeof(float);
}

// grid B*H, block DELTA_THREADS: one (b, h), chunks in reverse, carrying dS = dL/dS_end
__global__ void delta_chunk_backward_kernel(floatX* dq, floatX* dk, floatX* dv, float* dbeta, float* dgate, const floatX* dout,
                                            const float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                            const float* beta, const float* gate, int T, int C, int H, int mixer) {
    extern __shared__ float smem[];
    int b = blockIdx.x / H, h = blockIdx.x % H, D = C / H;
    float* S0 = smem;                                  // (D, D) state entering the chunk
    float* dS = S0 + D * D;                            // (D, D) dL/dS_end, then dL/dS0 for the chunk before
    float* dS0 = dS + D * D;                           // (D, D)
    DeltaChunk ch;
    float* dO = delta_chunk_carve(&ch, dS0 + D * D, D); // (c, D)
    float* dU = dO + DELTA_CHUNK * D;                  // (c, D): dU, then dR (gdn) in place
    float* dKc = dU + DELTA_CHUNK * D;                 // (c, D) dk of the chunk
    float* A = dKc + DELTA_CHUNK * D;                  // (c, c)
    float* P = A + DELTA_CHUNK * DELTA_CHUNK;          // (c, c): P, then dA (gdn)
    float* dP = P + DELTA_CHUNK * DELTA_CHUNK;         // (c, c)
    ch.g = dP + DELTA_CHUNK * DELTA_CHUNK;
    ch.beta = ch.g + DELTA_CHUNK;
    float* dg = ch.beta + DELTA_CHUNK;                 // (c) dL/dg_t
    float* dbt = dg + DELTA_CHUNK;                     // (c) dL/dβ_t
    float* dw = dbt + DELTA_CHUNK;                     // (c) dL/dw_s
    BLOCK_LOOP(idx, D * D) { dS[idx] = 0.0f; }
    int n_chunks = delta_rule_n_chunks(T);
    for (int c = n_chunks - 1; c >= 0; c--) {
        int t0 = c * DELTA_CHUNK, n = min(DELTA_CHUNK, T - t0);
        const float* saved = states + (((size_t)b * H + h) * n_chunks + c) * D * D;
        BLOCK_LOOP(idx, D * D) { S0[idx] = saved[idx]; }
        BLOCK_LOOP(idx, DELTA_CHUNK * D) {
            int t = idx / D, i = idx % D;
            dO[idx] = t < n ? (float)dout[((size_t)b * T + t0 + t) * C + h * D + i] : 0.0f;
        }
        delta_load_chunk(ch, q, k, v, vstride, beta, gate, b, h, t0, n, T, C, H, D);  // syncs
        delta_chunk_u(ch, A, S0, D, mixer);  // recompute U (and A)
        delta_chunk_p(P, ch, D);
        float g_last = ch.g[DELTA_CHUNK - 1];
        // dU[s][i] = Σ_{t>=s} P[t][s] do_t[i] + w_s Σ_j dS[i][j] k_s[j]         (from O = P U and S_end)
        BLOCK_LOOP(idx, DELTA_CHUNK * D) {
            int s = idx / D, i = idx % D;
            float acc = expf(g_last - ch.g[s]) * dotd(dS + i * D, ch.k + s * D, D);
            for (int t = s; t < DELTA_CHUNK; t++) { acc += P[t * DELTA_CHUNK + s] * dO[t * D + i]; }
            dU[idx] = acc;
        }
        // dP[t][s] = do_t·u_s (s <= t);  dw_s = u_sᵀ dS k_s (the S_end weight's gradient)
        BLOCK_LOOP(idx, DELTA_CHUNK * DELTA_CHUNK) {
            int t = idx / DELTA_CHUNK, s = idx % DELTA_CHUNK;
            dP[idx] = s <= t ? dotd(dO + t * D, ch.u + s * D, D) : 0.0f;
        }
        BLOCK_LOOP(s, DELTA_CHUNK) {
            float acc = 0.0f;
            for (int i = 0; i < D; i++) { acc += ch.u[s * D + i] * dotd(dS + i * D, ch.k + s * D, D); }
            dw[s] = acc;
            dbt[s] = 0.0f;
        }
        __syncthreads();
        BLOCK_LOOP(idx, DELTA_CHUNK * D) {  // dq_t[j]
            int t = idx / D, j = idx % D;
            float acc = 0.0f;
            for (int i = 0; i < D; i++) { acc += S0[i * D + j] * dO[t * D + i]; }
            acc *= expf(ch.g[t]);
            for (int s = 0; s <= t; s++) { acc += dP[t * DELTA_CHUNK + s] * expf(ch.g[t] - ch.g[s]) * ch.k[s * D + j]; }
            if (t < n) { dq[((size_t)b * T + t0 + t) * C + h * D + j] = (floatX)acc; }
        }
        BLOCK_LOOP(idx, DELTA_CHUNK * D) {  // dk_s[j] from P and from S_end
            int s = idx / D, j = idx % D;
            float acc = 0.0f;
            for (int t = s; t < DELTA_CHUNK; t++) { acc += dP[t * DELTA_CHUNK + s] * expf(ch.g[t] - ch.g[s]) * ch.q[t * D + j]; }
            float w = expf(g_last - ch.g[s]);
            for (int i = 0; i < D; i++) { acc += w * dS[i * D + j] * ch.u[s * D + i]; }
            dKc[idx] = acc;
        }
        BLOCK_LOOP(t, DELTA_CHUNK) {  // dg_t: S0 q term, P terms (as t and as s), S_end terms
            float acc = 0.0f;
            float bt = expf(ch.g[t]);
            for (int i = 0; i < D; i++) { acc += bt * dO[t * D + i] * dotd(S0 + i * D, ch.q + t * D, D); }
            for (int s = 0; s <= t; s++) { acc += dP[t * DELTA_CHUNK + s] * P[t * DELTA_CHUNK + s]; }
            for (int t2 = t; t2 < DELTA_CHUNK; t2++) { acc -= dP[t2 * DELTA_CHUNK + t] * P[t2 * DELTA_CHUNK + t]; }
            // S_end: w_t = exp(g_last - g_t) contributes -dw_t w_t to g_t and +dw_t w_t to g_last
            acc -= dw[t] * expf(g_last - ch.g[t]);
            dg[t] = acc;
        }
        __syncthreads();
        if (threadIdx.x == 0) {  // g_last terms: b_last <dS, S0> and Σ_s dw_s w_s
            float acc = 0.0f;
            for (int idx = 0; idx < D * D; idx++) { acc += dS[idx] * S0[idx]; }
            acc *= expf(g_last);
            for (int s = 0; s < DELTA_CHUNK; s++) { acc += dw[s] * expf(g_last - ch.g[s]); }
            dg[DELTA_CHUNK - 1] += acc;
        }
        // dS0 = b_last dS + Σ_t b_t do_t q_tᵀ   (gdn adds -Σ_t β_t b_t dr_t k_tᵀ below)
        BLOCK_LOOP(idx, D * D) {
            int i = idx / D, j = idx % D;
            float acc = expf(g_last) * dS[idx];
            for (int t = 0; t < DELTA_CHUNK; t++) { acc += expf(ch.g[t]) * dO[t * D + i] * ch.q[t * D + j]; }
            dS0[idx] = acc;
        }
        __syncthreads();
        if (mixer == MIXER_GDN) {
            // dR = (I + A)⁻ᵀ dU: back substitution, dr_t = du_t - Σ_{s>t} A[s][t] dr_s (in place in dU)
            for (int t = DELTA_CHUNK - 2; t >= 0; t--) {
                BLOCK_LOOP(i, D) {
                    float acc = 0.0f;
                    for (int s = t + 1; s < DELTA_CHUNK; s++) { acc += A[s * DELTA_CHUNK + t] * dU[s * D + i]; }
                    dU[t * D + i] -= acc;
                }
                __syncthreads();
            }
            // dA[t][s] = -dr_t·u_s (s < t), into P (P is no longer needed)
            BLOCK_LOOP(idx, DELTA_CHUNK * DELTA_CHUNK) {
                int t = idx / DELTA_CHUNK, s = idx % DELTA_CHUNK;
                P[idx] = s < t ? -dotd(dU + t * D, ch.u + s * D, D) : 0.0f;  // dA
            }
            __syncthreads();
            // dk from A: dKK[t][s] = dA β_t Γ → dk_t += Σ_s dKK k_s, dk_s += Σ_t dKK k_t;
            // dk from R: dk_t -= β_t b_t S0ᵀ dr_t
            BLOCK_LOOP(idx, DELTA_CHUNK * D) {
                int t = idx / D, j = idx % D;
                float acc = 0.0f;
                for (int s = 0; s < t; s++) { acc += P[t * DELTA_CHUNK + s] * ch.beta[t] * expf(ch.g[t] - ch.g[s]) * ch.k[s * D + j]; }
                for (int t2 = t + 1; t2 < DELTA_CHUNK; t2++) {
                    acc += P[t2 * DELTA_CHUNK + t] * ch.beta[t2] * expf(ch.g[t2] - ch.g[t]) * ch.k[t2 * D + j];
                }
                float bt = expf(ch.g[t]);
                for (int i = 0; i < D; i++) { acc -= ch.beta[t] * bt * S0[i * D + j] * dU[t * D + i]; }
                dKc[idx] += acc;
            }
            // dβ_t = dr_t·(v_t - b_t S0 k_t) + Σ_s dA[t][s] Γ kk;  dg from R and from A
            BLOCK_LOOP(t, DELTA_CHUNK) {
                float bt = expf(ch.g[t]), db = 0.0f, dgt = 0.0f;
                for (int i = 0; i < D; i++) {
                    float s0k = dotd(S0 + i * D, ch.k + t * D, D);
                    db += dU[t * D + i] * (ch.v[t * D + i] - bt * s0k);
                    dgt -= ch.beta[t] * bt * dU[t * D + i] * s0k;
                }
                for (int s = 0; s < t; s++) {
                    float a_over_beta = expf(ch.g[t] - ch.g[s]) * dotd(ch.k + t * D, ch.k + s * D, D);
                    db += P[t * DELTA_CHUNK + s] * a_over_beta;
                    dgt += P[t * DELTA_CHUNK + s] * ch.beta[t] * a_over_beta;  // dA·A as t
                }
                for (int t2 = t + 1; t2 < DELTA_CHUNK; t2++) {
                    float a = ch.beta[t2] * expf(ch.g[t2] - ch.g[t]) * dotd(ch.k + t2 * D, ch.k + t * D, D);
                    dgt -= P[t2 * DELTA_CHUNK + t] * a;  // dA·A as s
                }
                dbt[t] = db;
                dg[t] += dgt;
            }
            // dS0 -= Σ_t β_t b_t dr_t k_tᵀ
            BLOCK_LOOP(idx, D * D) {
                int i = idx / D, j = idx % D;
                float acc = 0.0f;
                for (int t = 0; t < DELTA_CHUNK; t++) { acc += ch.beta[t] * expf(ch.g[t]) * dU[t * D + i] * ch.k[t * D + j]; }
                dS0[idx] -= acc;
            }
        }
        __syncthreads();
        // write dk, dv (gdn: β_t dr_t; gla: du_t), dbeta; dgate_j = Σ_{t>=j} dg_t within the chunk
        BLOCK_LOOP(idx, n * D) {
            int t = idx / D, i = idx % D;
            size_t row = (size_t)b * T + t0 + t;
            dk[row * C + h * D + i] = (floatX)dKc[idx];
            dv[row * vstride + h * D + i] = (floatX)(mixer == MIXER_GDN ? ch.beta[t] * dU[idx] : dU[idx]);
        }
        BLOCK_LOOP(t, n) {
            size_t row = (size_t)b * T + t0 + t;
            float acc = 0.0f;
            for (int t2 = t; t2 < DELTA_CHUNK; t2++) { acc += dg[t2]; }  // g_last lives at c-1 even when n < c
            dgate[row * H + h] = acc;
            if (mixer == MIXER_GDN) { dbeta[row * H + h] = dbt[t]; }
        }
        BLOCK_LOOP(idx, D * D) { dS[idx] = dS0[idx]; }
        __syncthreads();
    }
}

// ----------------------------------------------------------------------------
// kernel launchers

static void delta_rule_check_dims(int C, int H) {
    if (C / H > DELTA_MAX_D) { die("recurrent mixer: head dim %d, the GPU kernel takes at most %d", C / H, DELTA_MAX_D); }
}

// o (B,T,C) and the chunk-entry states (delta_rule_state_floats) from q, k, v, beta, gate
static void delta_rule_forward_gpu(floatX* o, float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                   const float* beta, const float* gate, int B, int T, int C, int H, int mixer,
                                   cudaStream_t stream) {
    delta_rule_check_dims(C, H);
    size_t smem = delta_forward_smem(C / H);
    cudaCheck(cudaFuncSetAttribute(delta_chunk_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    delta_chunk_forward_kernel<<<B * H, DELTA_THREADS, smem, stream>>>(o, states, q, k, v, vstride, beta, gate, T, C, H, mixer);
    cudaCheck(cudaGetLastError());
}

// dq, dk (B,T,C), dv (inside dqkva, stride vstride), dbeta (gdn), dgate (B,T,H) from dout (B,T,C)
static void delta_rule_backward_gpu(floatX* dq, floatX* dk, floatX* dv, float* dbeta, float* dgate, const floatX* dout,
                                    const float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                    const float* beta, const float* gate, int B, int T, int C, int H, int mixer,
                                    cudaStream_t stream) {
    delta_rule_check_dims(C, H);
    size_t smem = delta_backward_smem(C / H);
    cudaCheck(cudaFuncSetAttribute(delta_chunk_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    delta_chunk_backward_kernel<<<B * H, DELTA_THREADS, smem, stream>>>(dq, dk, dv, dbeta, dgate, dout, states, q, k, v,
                                                                        vstride, beta, gate, T, C, H, mixer);
    cudaCheck(cudaGetLastError());
}

#endif // RECURRENT_MIXER_CUH
