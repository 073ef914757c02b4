/*
bench_step.cu — speed of train_hybrid's training step and of its mixer kernels, printed next to the
targets of dev/bench/README.md (H200) and, with -p, beside the PyTorch peers measured on the same
GPU by dev/bench/peers.py (SDPA, FlexAttention, fla, torch.compile of the same model), with the
ratio peer time / our time (above 1: we are faster).

    make dev/bench/bench_step && ./dev/bench/bench_step          # every config and kernel
    python3 dev/bench/peers.py --fla PATH && ./dev/bench/bench_step -p dev/bench/peers.json
    ./dev/bench/bench_step -c F -n 5                              # one config, 5 timed steps
    ./dev/bench/bench_step -k                                      # kernels only

Step configs (model gpt2s: V 50257 padded 50304, tied, C 768, L 12, H 12, D 64, SwiGLU 2048,
B 8, T 4096, AdamW, forward + backward + update, random tokens):
    F     all full attention, RoPE
    SSSF  W 512
    RRRF  Gated DeltaNet
Reported: ms/step (median of the timed steps, after one warm-up step), tok/s, MFU (hybrid_cpu.h's
model_flops_per_token over 989 TFLOP/s), and the GPU memory the process holds at the end (GiB).
Kernels (B 8, T 4096, H 12, D 64, forward + backward, median of 5 after a warm-up; the forward
alone beside it): causal full attention (also D 128, H 6), SWA W 64 / 512 / 2048, Gated DeltaNet and
gla on random inputs in the model's ranges.
*/
#define TESTING
#include "../../train_hybrid.cu"
#include "../../test/test_gpu_common.cuh"  // defines: rand_host, to_gpu, to_gpu_x

typedef struct {
    const char* name;
    const char* pattern;
    int window, mixer;
    double target_tok_s, target_gib;  // 0 = no target
} StepCase;

// targets: dev/bench/README.md (1.3x the torch.compile peer measured on an H200, 2026-12-02)
static const StepCase STEP_CASES[] = {
    {"F", "F", 512, MIXER_GDN, 516e3, 16.8},
    {"SSSF", "SSSF", 512, MIXER_GDN, 572e3, 0},
    {"RRRF", "RRRF", 512, MIXER_GDN, 324e3, 18.0},
};

// ----------------------------------------------------------------------------
// peers: the JSON file dev/bench/peers.py writes, {"kernels": {name: {"ms": .., "fwd_ms": ..}},
// "steps": {name: {"ms": .., "tok_s": .., "gib": ..}}}. Read by looking up the keys in order (the
// file is ours; no general JSON reader is needed).

static char* peers_text = NULL;  // the file's text, NULL without -p

// value of "field" in entry "name" of "section"; -1 if absent
static double peer_value(const char* section, const char* name, const char* field) {
    if (peers_text == NULL) { return -1.0; }
    char key[96];
    snprintf(key, sizeof(key), "\"%s\"", section);
    const char* at = strstr(peers_text, key);
    if (at == NULL) { return -1.0; }
    snprintf(key, sizeof(key), "\"%s\":", name);
    at = strstr(at, key);
    if (at == NULL) { return -1.0; }
    const char* end = strchr(at, '}');  // the entry's closing brace
    snprintf(key, sizeof(key), "\"%s\":", field);
    const char* f = strstr(at, key);
    if (f == NULL || (end != NULL && f > end)) { return -1.0; }
    return strtod(f + strlen(key), NULL);
}

static void peers_read(const char* path) {
    input_file_check("-p", path);
    FILE* f = fopen_check(path, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    peers_text = (char*)malloc_check((size_t)n + 1);
    fread_check(peers_text, 1, (size_t)n, f, path);
    peers_text[n] = '\0';
    fclose(f);
    if (strstr(peers_text, "\"kernels\"") == NULL) { die("-p %s: expected the JSON of dev/bench/peers.py (no \"kernels\")", path); }
}

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}
static double median(double* x, int n) {
    qsort(x, n, sizeof(double), cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static double gpu_used_gib(void) {
    size_t free_b, total_b;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    return (total_b - free_b) / 1073741824.0;
}

static void bench_step(const StepCase* sc, int steps) {
    enum { V = 50257, VP = 50304, B = 8, T = 4096 };
    Config c = config_make(V, VP, 12, 768, 12, 2048, sc->pattern, sc->window, POS_ROPE, POS_ROPE, sc->mixer);
    GpuContext ctx = gpu_context_create();
    double base_gib = gpu_used_gib();
    GpuModel m;
    gpu_model_build(&m, &c, &ctx, NULL, 1);
    OptConfig o = opt_config_default(steps + 1);
    Rng r;
    rng_init(&r, 3);
    int* tokens = (int*)malloc_check((size_t)B * (T + 1) * sizeof(int));
    int* targets = (int*)malloc_check((size_t)B * T * sizeof(int));
    for (int i = 0; i < B * (T + 1); i++) { tokens[i] = rng_int(&r, V); }
    for (int b = 0; b < B; b++) { memcpy(targets + b * T, tokens + b * (T + 1) + 1, T * sizeof(int)); }
    double* ms = (double*)malloc_check((size_t)(steps + 1) * sizeof(double));
    double loss = 0.0;
    for (int s = 0; s <= steps; s++) {  // step 0 warms up (allocations, cuBLAS heuristics)
        cudaCheck(cudaStreamSynchronize(ctx.stream));
        double t0 = now_s();
        gpu_model_zero_grad(&m);
        loss = gpu_model_forward(&m, tokens, targets, B, T, 1.0);
        gpu_model_backward(&m);
        double norm = gpu_model_grad_norm(&m);
        gpu_model_update(&m, &o, lr_at(&o, s), s + 1, norm);
        cudaCheck(cudaStreamSynchronize(ctx.stream));
        ms[s] = (now_s() - t0) * 1e3;
    }
    double step_ms = median(ms + 1, steps), tok_s = B * T / (step_ms / 1e3);
    double mfu = model_flops_per_token(&c, T) * tok_s / H100_BF16_PEAK;
    double gib = gpu_used_gib() - base_gib;
    char target[64] = "-", peer[64] = "-", ratio[16] = "-";
    if (sc->target_tok_s > 0) { snprintf(target, sizeof(target), ">= %.0fk", sc->target_tok_s / 1e3); }
    if (sc->target_gib > 0) { snprintf(target + strlen(target), sizeof(target) - strlen(target), ", <= %.1f GiB", sc->target_gib); }
    double peer_ms = peer_value("steps", sc->name, "ms"), peer_gib = peer_value("steps", sc->name, "gib");
    if (peer_ms > 0) {
        snprintf(peer, sizeof(peer), "%.0fk, %.1f ms, %.1f GiB", B * T / peer_ms, peer_ms, peer_gib);
        snprintf(ratio, sizeof(ratio), "%.2fx", peer_ms / step_ms);
    }
    printf("| gpt2s %-5s | %9.1f | %7.1fk | %5.1f%% | %6.1f | %-24s | %-25s | %-6s | %-4s | loss %.3f\n", sc->name, step_ms,
           tok_s / 1e3, 100.0 * mfu, gib, target, peer, ratio,
           tok_s >= sc->target_tok_s && (sc->target_gib == 0 || gib <= sc->target_gib) ? "met" : "gap", loss);
    fflush(stdout);
    free(tokens); free(targets); free(ms);
    gpu_model_free(&m);
    gpu_context_destroy(&ctx);
}

// ----------------------------------------------------------------------------
// kernels

// a device array of n normal(0, scale) values in floatX
static floatX* dev_random(size_t n, Rng* r, double scale) {
    float* h = rand_host(n, r, scale);
    floatX* d = to_gpu_x(h, n);
    free(h);
    return d;
}

enum { K_ATTN, K_GDN, K_GLA };
typedef struct {
    const char* name;  // also the peer's key in peers.json
    int kind, window, D;
    double target_ms, target_fwd_ms, target_ratio;  // 0 = none; ratio: at most this x the peer's time
} KernelCase;

// targets: dev/bench/README.md (H200, B 8, T 4096; H = 768 / D)
static const KernelCase KERNEL_CASES[] = {
    {"attention full", K_ATTN, 0, 64, 1.6, 0.44, 0},
    {"attention full D128", K_ATTN, 0, 128, 0, 0, 0.8},
    {"SWA W 64", K_ATTN, 64, 64, 0.4, 0, 0},
    {"SWA W 512", K_ATTN, 512, 64, 1.0, 0, 0},
    {"SWA W 2048", K_ATTN, 2048, 64, 1.8, 0, 0},
    {"Gated DeltaNet", K_GDN, 0, 64, 2.35, 0, 0},
    {"Gated DeltaNet D128", K_GDN, 0, 128, 0, 0, 0.77},
    {"gla", K_GLA, 0, 64, 1.0, 0, 0},
};

static void bench_kernel(const KernelCase* kc) {
    enum { B = 8, T = 4096, C = 768, REPS = 5 };
    int D = kc->D, H = C / D;
    size_t N = (size_t)B * T;
    Rng r;
    rng_init(&r, 7);
    cudaStream_t st;
    cudaCheck(cudaStreamCreate(&st));
    floatX *qkv = dev_random(N * 3 * C, &r, 1.0), *dout = dev_random(N * C, &r, 1.0), *out, *dqkv;
    float *lse, *delta;
    cudaCheck(cudaMalloc(&out, N * C * sizeof(floatX)));
    cudaCheck(cudaMalloc(&lse, N * H * sizeof(float)));
    cudaCheck(cudaMalloc(&delta, N * H * sizeof(float)));
    cudaCheck(cudaMalloc(&dqkv, N * 3 * C * sizeof(floatX)));
    // recurrent mixer inputs: normalised q, k; beta in (0,1); gate = log alpha in (-0.5, 0)
    floatX *q = NULL, *k = NULL, *dqk = NULL;
    float *beta = NULL, *gate = NULL, *states = NULL, *dbeta = NULL, *dgate = NULL, *scratch = NULL;
    if (kc->kind != K_ATTN) {
        cudaCheck(cudaMalloc(&q, N * C * sizeof(floatX)));
        cudaCheck(cudaMalloc(&k, N * C * sizeof(floatX)));
        cudaCheck(cudaMalloc(&dqk, 2 * N * C * sizeof(floatX)));  // dq, dk; dv goes into dqkv's v third
        l2norm_forward_gpu(q, qkv, 3 * C, (int)N, C, H, 1.0f / sqrtf((float)D), st);
        l2norm_forward_gpu(k, qkv + C, 3 * C, (int)N, C, H, 1.0f, st);
        float* h = (float*)malloc_check(N * H * 2 * sizeof(float));
        for (size_t i = 0; i < N * H; i++) { h[i] = (float)sigmoid(rng_normal(&r)); h[N * H + i] = (float)(-0.5 * rng_uniform(&r)); }
        beta = to_gpu(h, N * H);
        gate = to_gpu(h + N * H, N * H);
        free(h);
        cudaCheck(cudaMalloc(&states, delta_rule_state_floats(B, T, C, H) * sizeof(float)));
        cudaCheck(cudaMalloc(&scratch, delta_rule_scratch_floats(B, T, C, H) * sizeof(float)));
        cudaCheck(cudaMalloc(&dbeta, N * H * sizeof(float)));
        cudaCheck(cudaMalloc(&dgate, N * H * sizeof(float)));
    }
    double ms[REPS + 1], fwd_ms[REPS + 1];
    cudaEvent_t e0, e1, e2;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    cudaCheck(cudaEventCreate(&e2));
    for (int rep = 0; rep <= REPS; rep++) {
        cudaCheck(cudaEventRecord(e0, st));
        int mixer = kc->kind == K_GDN ? MIXER_GDN : MIXER_GLA;
        float* b = mixer == MIXER_GDN ? beta : NULL;
        if (kc->kind == K_ATTN) { attention_forward_gpu(out, lse, qkv, B, T, C, H, kc->window, st); }
        else { delta_rule_forward_gpu(out, states, q, k, qkv + 2 * C, 3 * C, b, gate, B, T, C, H, mixer, scratch, st); }
        cudaCheck(cudaEventRecord(e1, st));
        if (kc->kind == K_ATTN) { attention_backward_gpu(dqkv, delta, dout, out, lse, qkv, B, T, C, H, kc->window, st); }
        else {
            delta_rule_backward_gpu(dqk, dqk + N * C, dqkv + 2 * C, mixer == MIXER_GDN ? dbeta : NULL, dgate, dout, states, q, k,
                                    qkv + 2 * C, 3 * C, b, gate, B, T, C, H, mixer, scratch, NULL, 0, 0.0f, st);
        }
        cudaCheck(cudaEventRecord(e2, st));
        cudaCheck(cudaEventSynchronize(e2));
        float t, tf;
        cudaCheck(cudaEventElapsedTime(&tf, e0, e1));
        cudaCheck(cudaEventElapsedTime(&t, e0, e2));
        ms[rep] = t;
        fwd_ms[rep] = tf;
    }
    double m = median(ms + 1, REPS), mf = median(fwd_ms + 1, REPS);
    double peer = peer_value("kernels", kc->name, "ms"), peer_fwd = peer_value("kernels", kc->name, "fwd_ms");
    char target[40] = "-", peer_s[40] = "-", ratio[16] = "-";
    int met = 1;
    if (kc->target_ms > 0) {
        snprintf(target, sizeof(target), "<= %.2g", kc->target_ms);
        met = m <= kc->target_ms;
    }
    if (kc->target_fwd_ms > 0) {
        snprintf(target + strlen(target), sizeof(target) - strlen(target), " (fwd %.2g)", kc->target_fwd_ms);
        met = met && mf <= kc->target_fwd_ms;
    }
    if (kc->target_ratio > 0) {
        snprintf(target, sizeof(target), "<= %.2gx peer", kc->target_ratio);
        met = peer > 0 && m <= kc->target_ratio * peer;
    }
    if (peer > 0) {
        snprintf(peer_s, sizeof(peer_s), "%.2f (%.2f)", peer, peer_fwd);
        snprintf(ratio, sizeof(ratio), "%.2fx", peer / m);
    }
    printf("| %-19s | %8.2f | %6.3f | %-16s | %-13s | %-6s | %-4s |\n", kc->name, m, mf, target, peer_s, ratio,
           met ? "met" : "gap");
    fflush(stdout);
    cudaFreeAll(qkv, dout, out, lse, delta, dqkv);
    cudaFreeAll(q, k, dqk, beta, gate, states, scratch, dbeta, dgate);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaEventDestroy(e2);
    cudaStreamDestroy(st);
}

int main(int argc, char** argv) {
    const char* only = "";
    const char* peers = "";
    int steps = 3, kernels_only = 0;
    FlagSpec flags[] = {
        {"-c", FLAG_STR, &only, 0, 0, NULL, "only this step config: F, SSSF or RRRF (\"\" = all)"},
        {"-p", FLAG_STR, &peers, 0, 0, NULL, "the peers' JSON from dev/bench/peers.py, printed beside our rows (\"\" = none)"},
        {"-n", FLAG_INT, &steps, 1, 1000, NULL, "timed steps per config (after one warm-up)"},
        {"-k", FLAG_BOOL, &kernels_only, 0, 0, NULL, "kernels only"},
    };
    flags_parse(flags, (int)(sizeof(flags) / sizeof(flags[0])), argc, argv, NULL);
    if (peers[0]) { peers_read(peers); }
    int n_gpu = 0;
    if (cudaGetDeviceCount(&n_gpu) != cudaSuccess || n_gpu == 0) { die("no CUDA GPU found: the benchmark needs one"); }
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, precision %s; targets: dev/bench/README.md (H200, bf16); peers: %s\n\n", prop.name, PRECISION_NAME,
           peers[0] ? peers : "none (-p peers.json from dev/bench/peers.py)");
    if (!kernels_only) {
        printf("| config      |  ms/step  |  tok/s   |  MFU   |  GiB   | target                   | peer (torch.compile)      | ratio  |      |\n");
        printf("|-------------|-----------|----------|--------|--------|--------------------------|---------------------------|--------|------|\n");
        int ran = 0;
        for (size_t i = 0; i < sizeof(STEP_CASES) / sizeof(STEP_CASES[0]); i++) {
            if (only[0] && strcmp(only, STEP_CASES[i].name) != 0) { continue; }
            bench_step(&STEP_CASES[i], steps);
            ran++;
        }
        if (ran == 0) { die("-c %s: expected F, SSSF or RRRF", only); }
        printf("\n");
    }
    if (only[0] == '\0' || kernels_only) {
        printf("| kernel, B8 T4096    | fwd+bwd  | fwd    | target (ms)      | peer (fwd)    | ratio  |      |\n");
        printf("|---------------------|----------|--------|------------------|---------------|--------|------|\n");
        for (size_t i = 0; i < sizeof(KERNEL_CASES) / sizeof(KERNEL_CASES[0]); i++) { bench_kernel(&KERNEL_CASES[i]); }
    }
    return 0;
}
