/*
attention.cu — the attention kernels of full_attn.cuh on their own, llm.c dev/cuda style: each
version checked against the CPU reference (hybrid_cpu.h) on a small shape, then timed forward and
backward at the benchmark shape (B 8, T 4096, H 12, D 64) for full attention and SWA W 64/512/2048, and at
D 128 (H 6) for full attention.

    make dev/cuda/attention
    ./dev/cuda/attention          # every version, one after the other
    ./dev/cuda/attention 3        # one version

versions:
    1  fp32 on CUDA cores: a thread per query (or key) row, tiles of 32 rows in shared memory
    2  bf16 on tensor cores (mma.sync m16n8k16, fp32 accumulate): 4 warps x 16 rows, 64-row tiles
       streamed through shared memory, scores and probabilities kept in registers
    3  Hopper (sm_90a): wgmma from TMA-filled shared memory, a copying warpgroup and two computing
       ones (setmaxnreg), 128-row blocks, a four-stage mbarrier ring; D 64 and 128
Check: norm-wise relative error against the CPU (inputs rounded to the version's type first);
tolerances as test/test_gpu.cu: fp32 1e-5 (out) / 1e-4 (gradients), bf16 1e-2 / 2e-2.
Timing: median of 10 launches after a warm-up, CUDA events (time_fwd_bwd).
*/
#define PRECISION_BF16  // floatX = bf16: version 2's type; version 1 runs on plain float buffers
#include "../../hybrid_cpu.h"
#include "../../attention_swa.cuh"
#include "../../test/test_gpu_common.cuh"  // defines: rand_host, rel_err_f, round_x, to_gpu(_x), from_gpu(_x), time_fwd_bwd

// One version's buffers: inputs and outputs in its element type (float for 1, bf16 for 2 and 3).
typedef struct {
    int version;
    size_t esize;
    void *qkv, *dout, *out, *dqkv;
    float *lse, *delta;
} Bufs;

// device copies in the version's type (float for 1, bf16 = floatX for 2), and back to float
static void* upload(const float* h, size_t n, int version) { return version == 1 ? (void*)to_gpu(h, n) : (void*)to_gpu_x(h, n); }
static float* download(const void* d, size_t n, int version) {
    return version == 1 ? from_gpu((const float*)d, n) : from_gpu_x((const floatX*)d, n);
}

static Bufs bufs_make(int version, const float* qkv, const float* dout, int B, int T, int C, int H) {
    Bufs b;
    size_t N = (size_t)B * T;
    b.version = version;
    b.esize = version == 1 ? sizeof(float) : sizeof(bf16);
    b.qkv = upload(qkv, N * 3 * C, version);
    b.dout = upload(dout, N * C, version);
    cudaCheck(cudaMalloc(&b.out, N * C * b.esize));
    cudaCheck(cudaMalloc(&b.dqkv, N * 3 * C * b.esize));
    cudaCheck(cudaMalloc(&b.lse, N * H * sizeof(float)));
    cudaCheck(cudaMalloc(&b.delta, N * H * sizeof(float)));
    return b;
}
static void bufs_free(Bufs* b) {
    cudaFreeAll(b->qkv, b->dout, b->out, b->dqkv, b->lse, b->delta);
}

template <int HD>
static void run_forward_hd(Bufs* b, int B, int T, int C, int H, int window) {
    if (b->version == 1) { attention_v1_forward<HD>((float*)b->out, b->lse, (const float*)b->qkv, B, T, C, H, window, 0); }
    else if (b->version == 2) { attention_v2_forward<HD>((bf16*)b->out, b->lse, (const bf16*)b->qkv, B, T, C, H, window, 0); }
    else { attention_v3_forward<HD>((bf16*)b->out, b->lse, (const bf16*)b->qkv, B, T, C, H, window, 0); }
}
static void run_forward(Bufs* b, int B, int T, int C, int H, int window) {
    if (C / H == 64) { run_forward_hd<64>(b, B, T, C, H, window); }
    else { run_forward_hd<128>(b, B, T, C, H, window); }
}
// the delta row sums (dout · out) are computed once here: they belong to the backward's setup
static void run_delta(Bufs* b, int B, int T, int C, int H) {
    size_t rows = (size_t)B * T * H;
    float* d = download(b->dout, (size_t)B * T * C, b->version);
    float* o = download(b->out, (size_t)B * T * C, b->version);
    float* h = (float*)malloc_check(rows * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        size_t n = r / H, hh = r % H;
        double s = 0.0;
        for (int i = 0; i < C / H; i++) { s += (double)d[n * C + hh * (C / H) + i] * o[n * C + hh * (C / H) + i]; }
        h[r] = (float)s;
    }
    cudaCheck(cudaMemcpy(b->delta, h, rows * sizeof(float), cudaMemcpyHostToDevice));
    free(d); free(o); free(h);
}
template <int HD>
static void run_backward_hd(Bufs* b, int B, int T, int C, int H, int window) {
    const bf16 *dout = (const bf16*)b->dout, *qkv = (const bf16*)b->qkv;
    if (b->version == 1) {
        attention_v1_backward<HD>((float*)b->dqkv, (const float*)b->dout, b->lse, b->delta, (const float*)b->qkv, B, T, C, H, window, 0);
    } else if (b->version == 2) {
        attention_v2_backward<HD>((bf16*)b->dqkv, dout, b->lse, b->delta, qkv, B, T, C, H, window, 0);
    } else {
        attention_v3_backward<HD>((bf16*)b->dqkv, dout, b->lse, b->delta, qkv, B, T, C, H, window, 0);
    }
}
static void run_backward(Bufs* b, int B, int T, int C, int H, int window) {
    if (C / H == 64) { run_backward_hd<64>(b, B, T, C, H, window); }
    else { run_backward_hd<128>(b, B, T, C, H, window); }
}

static void check_version(int version, int D, int window) {
    enum { B = 2, T = 300 };
    int H = 256 / D, C = H * D;
    size_t N = (size_t)B * T;
    Rng r;
    rng_init(&r, 1);
    float *qkv = rand_host(N * 3 * C, &r, 1.0), *dout = rand_host(N * C, &r, 1.0);
    if (version >= 2) {  // the CPU sees the bf16 inputs
        round_x(qkv, N * 3 * C);
        round_x(dout, N * C);
    }
    float *out = (float*)calloc_check(N * C, sizeof(float)), *lse = (float*)calloc_check(N * H, sizeof(float));
    float* dqkv = (float*)calloc_check(N * 3 * C, sizeof(float));
    attention_forward(out, lse, qkv, B, T, C, H, window);
    attention_backward(dqkv, dout, out, lse, qkv, B, T, C, H, window);
    Bufs b = bufs_make(version, qkv, dout, B, T, C, H);
    run_forward(&b, B, T, C, H, window);
    run_delta(&b, B, T, C, H);
    run_backward(&b, B, T, C, H, window);
    cudaCheck(cudaDeviceSynchronize());
    float *g_out = download(b.out, N * C, version), *g_dqkv = download(b.dqkv, N * 3 * C, version);
    double e_out = rel_err_f(g_out, out, N * C), e_d = rel_err_f(g_dqkv, dqkv, N * 3 * C);
    double tol_out = version == 1 ? 1e-5 : 1e-2, tol_d = version == 1 ? 1e-4 : 2e-2;
    printf("check v%d W=%-4d B=%d T=%d H=%d D=%d: rel err out %.1e (tol %.0e), dqkv %.1e (tol %.0e)  %s\n", version, window, B, T, H, D,
           e_out, tol_out, e_d, tol_d, e_out < tol_out && e_d < tol_d ? "ok" : "FAILED");
    if (!(e_out < tol_out && e_d < tol_d)) { exit(1); }
    bufs_free(&b);
    free(qkv); free(dout); free(out); free(lse); free(dqkv); free(g_out); free(g_dqkv);
}

// what time_fwd_bwd runs: one version's buffers at one shape and window
typedef struct {
    Bufs* b;
    int B, T, C, H, window;
} TimeCase;
static void time_run(void* ctx, int backward) {
    TimeCase* tc = (TimeCase*)ctx;
    if (backward) { run_backward(tc->b, tc->B, tc->T, tc->C, tc->H, tc->window); }
    else { run_forward(tc->b, tc->B, tc->T, tc->C, tc->H, tc->window); }
}

static void time_version(int version, int D, int window) {
    enum { B = 8, T = 4096, REPS = 10 };
    int H = 768 / D, C = H * D;
    size_t N = (size_t)B * T;
    Rng r;
    rng_init(&r, 2);
    float *qkv = rand_host(N * 3 * C, &r, 1.0), *dout = rand_host(N * C, &r, 1.0);
    Bufs b = bufs_make(version, qkv, dout, B, T, C, H);
    cudaCheck(cudaMemset(b.delta, 0, N * H * sizeof(float)));
    TimeCase tc = {&b, B, T, C, H, window};
    float fwd, bwd;
    time_fwd_bwd(time_run, &tc, REPS, &fwd, &bwd);
    // TFLOP/s of the standard count: forward 2 matmuls (4·D per visible query-key pair), backward 5
    // (2.5x the forward); the kernels here do more (both backward kernels recompute the scores)
    double pairs = 0.0;
    for (int t = 0; t < T; t++) { pairs += window > 0 && window < t + 1 ? window : t + 1; }
    double fwd_flop = 4.0 * D * pairs * B * H;
    char what[16] = "full";
    if (window > 0) { snprintf(what, sizeof(what), "SWA %d", window); }
    printf("time  v%d %-9s B=%d T=%d H=%-2d D=%-3d: fwd %7.3f ms (%5.1f TFLOP/s)  bwd %7.3f ms (%5.1f TFLOP/s)  total %7.3f ms\n",
           version, what, B, T, H, D, fwd, fwd_flop / fwd / 1e9, bwd, 2.5 * fwd_flop / bwd / 1e9, fwd + bwd);
    bufs_free(&b);
    free(qkv); free(dout);
}

// check and time one version: D 64 at every window, D 128 full (versions 2 and 3; v1 is slow there)
static void run_version(int version) {
    const int windows[] = {0, 64, 512, 2048};
    check_version(version, 64, 0);
    check_version(version, 64, 17);
    check_version(version, 128, 0);
    check_version(version, 128, 300);
    for (int i = 0; i < 4; i++) { time_version(version, 64, windows[i]); }
    if (version > 1) { time_version(version, 128, 0); }
}

int main(int argc, char** argv) {
    int version = argc > 1 ? atoi(argv[1]) : 0;
    if (argc > 1 && (version < 1 || version > 3)) {
        die("version %s: expected 1 (fp32 CUDA cores), 2 (bf16 mma.sync) or 3 (Hopper wgmma + TMA)", argv[1]);
    }
    int n_gpu = 0;
    if (cudaGetDeviceCount(&n_gpu) != cudaSuccess || n_gpu == 0) { die("no CUDA GPU found: dev/cuda/attention needs one"); }
    if ((version == 0 || version == 3) && !attention_v3_available()) {
        if (version == 3) { die("version 3 needs a Hopper GPU (sm_90) and this build's sm_90a kernels (GPU_ARCH)"); }
        printf("version 3 skipped: needs a Hopper GPU and a build for sm_90a\n");
    }
    for (int v = 1; v <= 3; v++) {
        if (version == v || (version == 0 && (v < 3 || attention_v3_available()))) { run_version(v); }
    }
    return 0;
}
