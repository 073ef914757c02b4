/*
delta_rule.cu — the recurrence of the R layer (Gated DeltaNet, and its gla mode) on its own, llm.c
dev/cuda style: each version checked against the CPU reference (hybrid_cpu.h) on small shapes, then
timed forward and backward at the benchmark shape (B 8, T 4096, H 12, D 64; version 3 also D 128,
H 6) next to dev/bench/README.md's targets.

    make dev/cuda/delta_rule
    ./dev/cuda/delta_rule          # every version; ./dev/cuda/delta_rule 3 for one

versions (all read and write bf16 q, k, v, o and gradients, keep the state and all sums in fp32):
    1  token by token, as hybrid_cpu.h writes the recurrence: one block per (b, h), thread i owns
       value row i of the state in registers. The forward saves the state entering every chunk of
       DELTA_CHUNK tokens; the backward walks the chunks in reverse, runs the forward of a chunk again
       from its saved state (keeping S' = α S_prev and u of each token in a scratch buffer), then
       walks its tokens in reverse. Sums across the rows (dq, dk, β and gate gradients) go through
       shared memory.
    2  chunk-parallel (recurrent_mixer.cuh v2, the trainer's kernels for head dims 16-48 and the
       fp32 build): UT transform per chunk, a state pass sequential in chunks (one block a head),
       per-chunk outputs and gradients as tf32 tile products on fp32 shared-memory tiles
    3  chunk-parallel (recurrent_mixer.cuh v3, the trainer's kernels for head dims 64 and 128):
       bf16 tiles, mma.sync with register accumulators, state passes split by value rows
       (2·B·H blocks), Ti solved once per direction, U and dU handed on by the state passes
Check: norm-wise relative error against the CPU (inputs rounded to bf16 first), tolerance 2e-2 as
test/test_gpu.cu's bf16 build. Timing: median of 5 runs after a warm-up, CUDA events (time_fwd_bwd).
*/
#define PRECISION_BF16
#include "../../hybrid_cpu.h"
#include "../../recurrent_mixer.cuh"
#include "../../test/test_gpu_common.cuh"  // defines: rel_err_f, to_gpu(_x), from_gpu(_x), delta_inputs_host, time_fwd_bwd

// ----------------------------------------------------------------------------
// version 1

#define V1_MAX_D 64

// Σ over the block's threads (one per value row) of x; every thread gets the sum. Two barriers.
__device__ static float v1_rows_sum(float x, float* red) {
    red[threadIdx.x] = x;
    __syncthreads();
    float s = 0.0f;
    for (int r = 0; r < blockDim.x; r++) { s += red[r]; }
    __syncthreads();
    return s;
}

// grid B*H, block D. Per token: S' = α S, u = β (v - S' k) (gla: v), S = S' + u kᵀ, o = S q.
// states (B, H, n_chunks, D, D): the state entering each chunk, S[i][j], as version 2 saves it.
__global__ void delta_v1_forward_kernel(floatX* o, float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                        const float* beta, const float* gate, int T, int C, int H, int mixer) {
    __shared__ float sq[V1_MAX_D], sk[V1_MAX_D];
    int D = C / H, b = blockIdx.x / H, h = blockIdx.x % H, i = threadIdx.x, n_chunks = delta_rule_n_chunks(T);
    float S[V1_MAX_D];  // S[i][:]
#pragma unroll
    for (int j = 0; j < V1_MAX_D; j++) { S[j] = 0.0f; }
    for (int t = 0; t < T; t++) {
        size_t n = (size_t)b * T + t;
        if (t % DELTA_CHUNK == 0) {
            float* st = states + ((size_t)blockIdx.x * n_chunks + t / DELTA_CHUNK) * D * D + (size_t)i * D;
#pragma unroll
            for (int j = 0; j < V1_MAX_D; j++) { if (j < D) { st[j] = S[j]; } }
        }
        __syncthreads();  // the previous token is done with sq, sk
        sq[i] = (float)q[n * C + h * D + i];
        sk[i] = (float)k[n * C + h * D + i];
        __syncthreads();
        float alpha = expf(gate[n * H + h]), w = 0.0f, out = 0.0f;
#pragma unroll
        for (int j = 0; j < V1_MAX_D; j++) {
            if (j < D) { S[j] *= alpha; w += S[j] * sk[j]; }
        }
        float vi = (float)v[n * vstride + h * D + i];
        float u = mixer == MIXER_GDN ? beta[n * H + h] * (vi - w) : vi;
#pragma unroll
        for (int j = 0; j < V1_MAX_D; j++) {
            if (j < D) { S[j] += u * sk[j]; out += S[j] * sq[j]; }
        }
        o[n * C + h * D + i] = (floatX)out;
    }
}

// floats of version 1's backward scratch: per (b, h) S'ᵀ (c, D, D) and u (c, D) of one chunk's tokens
static size_t v1_scratch_floats(int B, int H, int D) { return (size_t)B * H * DELTA_CHUNK * (D * D + D); }

// grid B*H, block D; thread i carries row i of dS = dL/dS. Per token in reverse (hybrid_cpu.h's
// delta_rule_backward): dS += do qᵀ, dq = Sᵀ do; du = dS k, dk = dSᵀ u, dv = β du;
// gdn: dβ = du·(v - S'k), dS -= β du kᵀ, dk -= β S'ᵀ du; dgate = <dS, S'>, dS = α dS.
__global__ void delta_v1_backward_kernel(floatX* dq, floatX* dk, floatX* dv, float* dbeta, float* dgate, const floatX* dout,
                                         const float* states, const floatX* q, const floatX* k, const floatX* v, int vstride,
                                         const float* beta, const float* gate, float* scratch, int T, int C, int H, int mixer) {
    __shared__ float sq[V1_MAX_D], sk[V1_MAX_D], red[V1_MAX_D];
    __shared__ float rq[V1_MAX_D][V1_MAX_D + 1], rk[V1_MAX_D][V1_MAX_D + 1];  // [j][i]: row i's share of dq_j, dk_j
    int D = C / H, b = blockIdx.x / H, h = blockIdx.x % H, i = threadIdx.x, n_chunks = delta_rule_n_chunks(T);
    int gdn = mixer == MIXER_GDN;
    float* Sp = scratch + (size_t)blockIdx.x * DELTA_CHUNK * (D * D + D);  // Sp[(s D + j) D + i] = S'[i][j] of token s
    float* U = Sp + (size_t)DELTA_CHUNK * D * D;                           // U[s D + i]
    float dS[V1_MAX_D], S[V1_MAX_D], sp[V1_MAX_D];
#pragma unroll
    for (int j = 0; j < V1_MAX_D; j++) { dS[j] = 0.0f; }
    for (int chunk = n_chunks - 1; chunk >= 0; chunk--) {
        int t0 = chunk * DELTA_CHUNK, len = min(DELTA_CHUNK, T - t0);
        // the chunk's forward again, from its saved entry state
        const float* st = states + ((size_t)blockIdx.x * n_chunks + chunk) * D * D + (size_t)i * D;
#pragma unroll
        for (int j = 0; j < V1_MAX_D; j++) { S[j] = j < D ? st[j] : 0.0f; }
        for (int s = 0; s < len; s++) {
            size_t n = (size_t)b * T + t0 + s;
            __syncthreads();
            sk[i] = (float)k[n * C + h * D + i];
            __syncthreads();
            float alpha = expf(gate[n * H + h]), w = 0.0f;
#pragma unroll
            for (int j = 0; j < V1_MAX_D; j++) {
                if (j < D) { S[j] *= alpha; w += S[j] * sk[j]; Sp[((size_t)s * D + j) * D + i] = S[j]; }
            }
            float vi = (float)v[n * vstride + h * D + i];
            float u = gdn ? beta[n * H + h] * (vi - w) : vi;
            U[s * D + i] = u;
#pragma unroll
            for (int j = 0; j < V1_MAX_D; j++) { if (j < D) { S[j] += u * sk[j]; } }
        }
        // its tokens in reverse
        for (int s = len - 1; s >= 0; s--) {
            size_t n = (size_t)b * T + t0 + s;
            __syncthreads();
            sq[i] = (float)q[n * C + h * D + i];
            sk[i] = (float)k[n * C + h * D + i];
            __syncthreads();
            float doi = (float)dout[n * C + h * D + i], u = U[s * D + i], bt = gdn ? beta[n * H + h] : 1.0f;
            float alpha = expf(gate[n * H + h]);
            float du = 0.0f, w = 0.0f;
#pragma unroll
            for (int j = 0; j < V1_MAX_D; j++) {
                if (j < D) {
                    sp[j] = Sp[((size_t)s * D + j) * D + i];
                    dS[j] += doi * sq[j];
                    rq[j][i] = (sp[j] + u * sk[j]) * doi;  // S = S' + u kᵀ
                    du += dS[j] * sk[j];
                    w += sp[j] * sk[j];
                }
            }
#pragma unroll
            for (int j = 0; j < V1_MAX_D; j++) { if (j < D) { rk[j][i] = dS[j] * u - (gdn ? bt * sp[j] * du : 0.0f); } }
            float vi = (float)v[n * vstride + h * D + i];
            dv[n * vstride + h * D + i] = (floatX)(bt * du);
            float dbeta_t = v1_rows_sum(gdn ? du * (vi - w) : 0.0f, red);  // its barriers also complete rq, rk
            float sum_q = 0.0f, sum_k = 0.0f;
            for (int r = 0; r < D; r++) { sum_q += rq[i][r]; sum_k += rk[i][r]; }
            dq[n * C + h * D + i] = (floatX)sum_q;
            dk[n * C + h * D + i] = (floatX)sum_k;
            float part = 0.0f;
#pragma unroll
            for (int j = 0; j < V1_MAX_D; j++) {
                if (j < D) {
                    if (gdn) { dS[j] -= bt * du * sk[j]; }
                    part += dS[j] * sp[j];  // dS is dL/dS' now
                    dS[j] *= alpha;
                }
            }
            float dg = v1_rows_sum(part, red);
            if (i == 0) {
                dgate[n * H + h] = dg;
                if (gdn) { dbeta[n * H + h] = dbeta_t; }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// the two versions behind one call each

typedef struct {
    floatX *q, *k, *qkva, *dout, *o, *dq, *dk, *dqkva;
    float *beta, *gate, *states, *dbeta, *dgate, *scratch;  // scratch: version 1's, or delta_rule_scratch_floats
} Bufs;

static Bufs bufs_make(const DeltaInputs* in, int version) {
    int B = in->B, T = in->T, H = in->H, D = in->D, C = H * D;
    size_t nC = (size_t)B * T * C, nH = (size_t)B * T * H;
    Bufs b;
    b.q = to_gpu_x(in->q, nC);
    b.k = to_gpu_x(in->k, nC);
    b.qkva = to_gpu_x(in->qkva, 3 * nC);
    b.dout = to_gpu_x(in->dout, nC);
    b.beta = to_gpu(in->beta, nH);
    b.gate = to_gpu(in->gate, nH);
    b.o = gpu_zeros_x(nC);
    b.dq = gpu_zeros_x(nC);
    b.dk = gpu_zeros_x(nC);
    b.dqkva = gpu_zeros_x(3 * nC);  // only the v third is written
    b.states = gpu_zeros(delta_rule_state_floats(B, T, C, H));
    b.dbeta = gpu_zeros(nH);
    b.dgate = gpu_zeros(nH);
    b.scratch = gpu_zeros(version == 1 ? v1_scratch_floats(B, H, D) : delta_rule_scratch_floats(B, T, H * D, H));
    return b;
}
static void bufs_free(Bufs* b) {
    cudaFreeAll(b->q, b->k, b->qkva, b->dout, b->beta, b->gate);
    cudaFreeAll(b->o, b->dq, b->dk, b->dqkva, b->states, b->dbeta);
    cudaFreeAll(b->dgate, b->scratch);
}

static void run_forward(Bufs* b, int version, int B, int T, int H, int D, int mixer) {
    int C = H * D;
    const float* beta = mixer == MIXER_GDN ? b->beta : NULL;
    if (version == 1) {
        delta_v1_forward_kernel<<<B * H, D>>>(b->o, b->states, b->q, b->k, b->qkva + 2 * C, 3 * C, beta, b->gate, T, C, H, mixer);
        cudaCheck(cudaGetLastError());
    } else if (version == 2) {
        delta_v2_forward(b->o, b->states, b->q, b->k, b->qkva + 2 * C, 3 * C, beta, b->gate, B, T, C, H, mixer, b->scratch, 0);
    } else {  // the trainer's dispatch: v3 at D 64 and 128 in this (bf16) build
        delta_rule_forward_gpu(b->o, b->states, b->q, b->k, b->qkva + 2 * C, 3 * C, beta, b->gate, B, T, C, H, mixer, b->scratch, 0);
    }
}
static void run_backward(Bufs* b, int version, int B, int T, int H, int D, int mixer) {
    int C = H * D;
    int gdn = mixer == MIXER_GDN;
    if (version == 1) {
        delta_v1_backward_kernel<<<B * H, D>>>(b->dq, b->dk, b->dqkva + 2 * C, gdn ? b->dbeta : NULL, b->dgate, b->dout, b->states,
                                               b->q, b->k, b->qkva + 2 * C, 3 * C, gdn ? b->beta : NULL, b->gate, b->scratch, T, C,
                                               H, mixer);
        cudaCheck(cudaGetLastError());
    } else if (version == 2) {
        delta_v2_backward(b->dq, b->dk, b->dqkva + 2 * C, gdn ? b->dbeta : NULL, b->dgate, b->dout, b->states, b->q, b->k,
                          b->qkva + 2 * C, 3 * C, gdn ? b->beta : NULL, b->gate, B, T, C, H, mixer, b->scratch, 0);
    } else {
        delta_rule_backward_gpu(b->dq, b->dk, b->dqkva + 2 * C, gdn ? b->dbeta : NULL, b->dgate, b->dout, b->states, b->q, b->k,
                                b->qkva + 2 * C, 3 * C, gdn ? b->beta : NULL, b->gate, B, T, C, H, mixer, b->scratch, NULL, 0, 0.0f,
                                0);
    }
}

static void check_version(int version, int B, int T, int H, int D, int mixer) {
    int C = H * D, gdn = mixer == MIXER_GDN;
    size_t nC = (size_t)B * T * C, nH = (size_t)B * T * H;
    DeltaInputs in = delta_inputs_host(B, T, H, D, mixer);
    float *o = (float*)calloc_check(nC, sizeof(float)), *states = (float*)calloc_check(nH * D * D, sizeof(float));
    float *dq = (float*)calloc_check(nC, sizeof(float)), *dk = (float*)calloc_check(nC, sizeof(float));
    float *dqkva = (float*)calloc_check(3 * nC, sizeof(float));
    float *dbeta = (float*)calloc_check(nH, sizeof(float)), *dgate = (float*)calloc_check(nH, sizeof(float));
    delta_rule_forward(o, states, in.q, in.k, in.qkva + 2 * C, 3 * C, in.beta, in.gate, B, T, C, H, mixer);
    delta_rule_backward(dq, dk, dqkva + 2 * C, dbeta, dgate, in.dout, states, in.q, in.k, in.qkva + 2 * C, 3 * C, in.beta, in.gate,
                        B, T, C, H, mixer);
    Bufs b = bufs_make(&in, version);
    run_forward(&b, version, B, T, H, D, mixer);
    run_backward(&b, version, B, T, H, D, mixer);
    cudaCheck(cudaDeviceSynchronize());
    float *g_o = from_gpu_x(b.o, nC), *g_dq = from_gpu_x(b.dq, nC), *g_dk = from_gpu_x(b.dk, nC);
    float *g_dqkva = from_gpu_x(b.dqkva, 3 * nC), *g_dbeta = from_gpu(b.dbeta, nH), *g_dgate = from_gpu(b.dgate, nH);
    double e[6] = {rel_err_f(g_o, o, nC), rel_err_f(g_dq, dq, nC), rel_err_f(g_dk, dk, nC), rel_err_f(g_dqkva, dqkva, 3 * nC),
                   gdn ? rel_err_f(g_dbeta, dbeta, nH) : 0.0, rel_err_f(g_dgate, dgate, nH)};
    double tol = 2e-2, worst = 0.0;
    for (int i = 0; i < 6; i++) { worst = fmax(worst, e[i]); }
    printf("check v%d %s B=%d T=%d H=%d D=%d: rel err o %.1e dq %.1e dk %.1e dv %.1e dbeta %.1e dgate %.1e (tol %.0e)  %s\n", version,
           gdn ? "gdn" : "gla", B, T, H, D, e[0], e[1], e[2], e[3], e[4], e[5], tol, worst < tol ? "ok" : "FAILED");
    if (!(worst < tol)) { exit(1); }
    bufs_free(&b);
    delta_inputs_free(&in);
    free(o); free(states); free(dq); free(dk); free(dqkva); free(dbeta); free(dgate);
    free(g_o); free(g_dq); free(g_dk); free(g_dqkva); free(g_dbeta); free(g_dgate);
}

// what time_fwd_bwd runs: one version's buffers at one shape and mixer
typedef struct {
    Bufs* b;
    int version, B, T, H, D, mixer;
} TimeCase;
static void time_run(void* ctx, int backward) {
    TimeCase* tc = (TimeCase*)ctx;
    if (backward) { run_backward(tc->b, tc->version, tc->B, tc->T, tc->H, tc->D, tc->mixer); }
    else { run_forward(tc->b, tc->version, tc->B, tc->T, tc->H, tc->D, tc->mixer); }
}

// forward + backward targets on the H200 (dev/bench/README.md): gdn 2.35 ms, gla 1.0 ms at D 64; at D 128
// (H 6) 0.77x fla's 2.62 ms
static void time_version(int version, int mixer, int H, int D) {
    enum { B = 8, T = 4096, REPS = 5 };
    DeltaInputs in = delta_inputs_host(B, T, H, D, mixer);
    Bufs b = bufs_make(&in, version);
    TimeCase tc = {&b, version, B, T, H, D, mixer};
    float fwd, bwd;
    time_fwd_bwd(time_run, &tc, REPS, &fwd, &bwd);
    double target = D == 128 ? 0.77 * 2.62 : mixer == MIXER_GDN ? 2.35 : 1.0;
    printf("time  v%d %s B=%d T=%d H=%d D=%d: fwd %8.3f ms  bwd %8.3f ms  total %8.3f ms (target <= %.2f)\n", version,
           mixer == MIXER_GDN ? "gdn" : "gla", B, T, H, D, fwd, bwd, fwd + bwd, target);
    bufs_free(&b);
    delta_inputs_free(&in);
}

static void run_version(int version) {
    if (version == 3) {
        check_version(3, 2, 67, 3, 64, MIXER_GDN);    // a full chunk and a partial one
        check_version(3, 2, 67, 3, 64, MIXER_GLA);
        check_version(3, 1, 300, 2, 128, MIXER_GDN);  // five chunks, D 128
        check_version(3, 1, 130, 2, 128, MIXER_GLA);
    } else {
        check_version(version, 2, 67, 3, 64, MIXER_GDN);
        check_version(version, 2, 67, 3, 64, MIXER_GLA);
        check_version(version, 1, 300, 2, 32, MIXER_GDN);  // five chunks, D 32
    }
    time_version(version, MIXER_GDN, 12, 64);
    time_version(version, MIXER_GLA, 12, 64);
    if (version == 3) {
        time_version(version, MIXER_GDN, 6, 128);
        time_version(version, MIXER_GLA, 6, 128);
    }
}

int main(int argc, char** argv) {
    int version = argc > 1 ? atoi(argv[1]) : 0;
    if (argc > 1 && (version < 1 || version > 3)) {
        die("version %s: expected 1 (token by token), 2 (chunk-parallel, fp32 tiles) or 3 (chunk-parallel, bf16 mma)", argv[1]);
    }
    int n_gpu = 0;
    if (cudaGetDeviceCount(&n_gpu) != cudaSuccess || n_gpu == 0) { die("no CUDA GPU found: dev/cuda/delta_rule needs one"); }
    for (int v = 3; v >= 1; v--) {
        if (version == 0 || version == v) { run_version(v); }
    }
    return 0;
}
