/*
test_gpu.cu — GPU kernels against the CPU reference (hybrid_cpu.h, float build).
Without a CUDA GPU one line says so (the checks count as skipped), and the program exits 0.

  attention (full_attn.cuh, attention_swa.cuh), forward out and lse, backward dq, dk, dv, on odd
  shapes: T not a multiple of the 32-row tile, W = 1, W < T, W > T, several heads, batch > 1,
  head dims 32, 64 and 128, several 128-row blocks (the v3 kernels' stage rings wrap), narrow
  windows whose tiles are skipped; in the bf16 build also v2 where v3 would run and v3 at the narrow
  windows that default to v2.
  R layer's small kernels: causal conv + SiLU, L2 norm (row stride 3C), gates (gdn, gla), forward
  and backward including the parameter-gradient reductions; tolerance 1e-5.
  recurrent mixer (recurrent_mixer.cuh), chunked form vs the CPU's token-by-token recurrence, gdn
  and gla: o, and dq, dk, dv, dbeta, dgate; T = 1, 64 (one full chunk), 67 and 130 (partial last
  chunk), 700 (eleven chunks), several heads, batch > 1, head dims 32, 48 and 64; in the bf16 build
  (v3 at D 64 and 128) also D 128 at T = 1, 64, 67, 130, v2 forced at D 64, and v3 with the L2
  norms' backward fused (the raw q, k gradients, as the trainer calls it).
Built twice: with PRECISION_FP32 (the v1 kernels, fp32 end to end) and PRECISION_BF16 (activations
in bf16, attention on the v3 Hopper kernels where the GPU has them, else v2). Inputs are rounded to
the build's floatX first, so both sides start from the same numbers.
Tolerances, norm-wise relative error ||gpu - cpu|| / ||cpu||, fp32 | bf16: attention out 1e-5 | 1e-2,
lse 1e-5 | 1e-3 (fp32 sums of exact bf16 products), gradients 1e-4 | 2e-2; recurrent mixer o and
gradients 1e-4 | 2e-2 (the chunked form reorders the sums of the recurrence); small kernels
1e-5 | 1e-2. fp32 rounding in another order gives ~1e-7..1e-5, bf16 rounding of inputs and outputs
~2e-3..1e-2; a masking, indexing or missed-term error gives O(1e-1..1).
*/
#include "../hybrid_cpu.h"
#include "../attention_swa.cuh"
#include "../recurrent_mixer.cuh"
#include "test_common.h"
#include "test_gpu_common.cuh"  // defines: rel_err_f, to_gpu, from_gpu, rand_host, gpu_zeros, rel_err_dev

// The kernels under test: version 0 = the build's choice (bf16: v3 on a Hopper GPU at D 64/128
// except narrow windows, else v2; fp32: v1), or 2 / 3 forced (bf16 build; 3 needs a Hopper GPU).
// Returns the version that ran.
template <int HD>
static void attention_run_forced(int version, floatX* out, float* lse, floatX* dqkvr, float* delta, const floatX* dout,
                                 const floatX* qkvr, int B, int T, int C, int H, int window) {
#if defined(PRECISION_BF16)
    if (version == 2) { attention_v2_forward<HD>(out, lse, qkvr, B, T, C, H, window, 0); }
    else { attention_v3_forward<HD>(out, lse, qkvr, B, T, C, H, window, 0); }
    attention_delta_gpu(delta, dout, out, B, T, C, H, 0);
    if (version == 2) { attention_v2_backward<HD>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, 0); }
    else { attention_v3_backward<HD>(dqkvr, dout, lse, delta, qkvr, B, T, C, H, window, 0); }
#endif
}
static int attention_run(int version, floatX* out, float* lse, floatX* dqkvr, float* delta, const floatX* dout,
                         const floatX* qkvr, int B, int T, int C, int H, int window) {
    if (version != 0) {
        if (C / H == 64) { attention_run_forced<64>(version, out, lse, dqkvr, delta, dout, qkvr, B, T, C, H, window); }
        else { attention_run_forced<128>(version, out, lse, dqkvr, delta, dout, qkvr, B, T, C, H, window); }
        return version;
    }
    if (window > 0) {
        swa_forward_gpu(out, lse, qkvr, B, T, C, H, window, 0);
        swa_backward_gpu(dqkvr, delta, dout, out, lse, qkvr, B, T, C, H, window, 0);
    } else {
        attention_forward_gpu(out, lse, qkvr, B, T, C, H, 0, 0);
        attention_backward_gpu(dqkvr, delta, dout, out, lse, qkvr, B, T, C, H, 0, 0);
    }
    return !PRECISION_IS_BF16 ? 1 : attention_uses_v3(C / H, window) ? 3 : 2;
}

static void test_attention(int B, int T, int H, int D, int window, int version) {
    int C = H * D;
    size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nrow = (size_t)B * T * H;
    Rng r;
    rng_init(&r, (uint64_t)(T * 131 + window));
    float* qkvr = rand_host(nqkv, &r, 1.0);
    float* dout = rand_host(nout, &r, 1.0);
    round_x(qkvr, nqkv);
    round_x(dout, nout);
    float* out = (float*)calloc_check(nout, sizeof(float));
    float* lse = (float*)calloc_check(nrow, sizeof(float));
    float* dqkvr = (float*)calloc_check(nqkv, sizeof(float));
    attention_forward(out, lse, qkvr, B, T, C, H, window);
    attention_backward(dqkvr, dout, out, lse, qkvr, B, T, C, H, window);

    floatX *d_qkvr = to_gpu_x(qkvr, nqkv), *d_dout = to_gpu_x(dout, nout), *d_out, *d_dqkvr;
    float *d_lse, *d_delta;
    cudaCheck(cudaMalloc(&d_out, nout * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d_lse, nrow * sizeof(float)));
    cudaCheck(cudaMalloc(&d_delta, nrow * sizeof(float)));
    cudaCheck(cudaMalloc(&d_dqkvr, nqkv * sizeof(floatX)));
    cudaCheck(cudaMemset(d_out, 0xFF, nout * sizeof(floatX)));  // NaN: every element must be written
    cudaCheck(cudaMemset(d_dqkvr, 0xFF, nqkv * sizeof(floatX)));
    version = attention_run(version, d_out, d_lse, d_dqkvr, d_delta, d_dout, d_qkvr, B, T, C, H, window);
    cudaCheck(cudaDeviceSynchronize());
    float *g_out = from_gpu_x(d_out, nout), *g_lse = from_gpu(d_lse, nrow), *g_dqkvr = from_gpu_x(d_dqkvr, nqkv);
    // split the gradient into its q, k, v thirds
    float* parts[2][3];
    for (int p = 0; p < 3; p++) {
        parts[0][p] = (float*)malloc_check(nout * sizeof(float));
        parts[1][p] = (float*)malloc_check(nout * sizeof(float));
        for (size_t n = 0; n < (size_t)B * T; n++) {
            memcpy(parts[0][p] + n * C, g_dqkvr + n * 3 * C + p * C, C * sizeof(float));
            memcpy(parts[1][p] + n * C, dqkvr + n * 3 * C + p * C, C * sizeof(float));
        }
    }
    double e_out = rel_err_f(g_out, out, nout), e_lse = rel_err_f(g_lse, lse, nrow);
    double e_dq = rel_err_f(parts[0][0], parts[1][0], nout), e_dk = rel_err_f(parts[0][1], parts[1][1], nout);
    double e_dv = rel_err_f(parts[0][2], parts[1][2], nout);
    char name[96];
    char win[32] = "full";
    if (window > 0) { snprintf(win, sizeof(win), "W=%d", window); }
    snprintf(name, sizeof(name), "gpu attention v%d B=%d T=%d H=%d D=%d %s", version, B, T, H, D, win);
    double tol_out = TOL_X(1e-5, 1e-2), tol_lse = TOL_X(1e-5, 1e-3), tol_grad = TOL_X(1e-4, 2e-2);
    check(e_out < tol_out && e_lse < tol_lse && e_dq < tol_grad && e_dk < tol_grad && e_dv < tol_grad, name,
          "rel err out %.1e (tol %.0e) lse %.1e (tol %.0e), dq %.1e dk %.1e dv %.1e (tol %.0e)", e_out, tol_out, e_lse, tol_lse,
          e_dq, e_dk, e_dv, tol_grad);
    for (int p = 0; p < 3; p++) { free(parts[0][p]); free(parts[1][p]); }
    free(qkvr); free(dout); free(out); free(lse); free(dqkvr); free(g_out); free(g_lse); free(g_dqkvr);
    cudaFreeAll(d_qkvr, d_dout, d_out, d_lse, d_delta, d_dqkvr);
}

static void test_rec_small_kernels(int B, int T, int H, int D) {
    int C = H * D, N = B * T, CH = 3 * C;
    size_t n3 = (size_t)N * CH, nC = (size_t)N * C, nH = (size_t)N * H;
    Rng r;
    rng_init(&r, 77);
    // conv + silu
    float *inp = rand_host(n3, &r, 1.0), *w = rand_host((size_t)CH * CONV_K, &r, 0.5), *dact = rand_host(n3, &r, 1.0);
    round_x(inp, n3);
    round_x(w, (size_t)CH * CONV_K);
    round_x(dact, n3);
    float *conv = (float*)calloc_check(n3, sizeof(float)), *act = (float*)calloc_check(n3, sizeof(float));
    float *dconv = (float*)calloc_check(n3, sizeof(float)), *dinp = (float*)calloc_check(n3, sizeof(float));
    float *dw = rand_host((size_t)CH * CONV_K, &r, 1.0), *dw0 = (float*)malloc_check((size_t)CH * CONV_K * sizeof(float));
    memcpy(dw0, dw, (size_t)CH * CONV_K * sizeof(float));  // dw is accumulated (+=): start both sides from the same values
    conv_forward(conv, inp, w, B, T, CH);
    silu_forward(act, conv, n3);
    silu_backward(dconv, dact, conv, n3);
    conv_backward(dinp, dw, dconv, inp, w, B, T, CH);
    floatX *d_inp = to_gpu_x(inp, n3), *d_w = to_gpu_x(w, (size_t)CH * CONV_K), *d_dact = to_gpu_x(dact, n3);
    floatX *d_act = gpu_zeros_x(n3), *d_dinp = gpu_zeros_x(n3);
    float *d_dw = to_gpu(dw0, (size_t)CH * CONV_K), *d_scratch = gpu_zeros(conv_scratch_floats(B, T, CH));
    conv_silu_forward_gpu(d_act, d_inp, CH, d_w, B, T, CH, 0);
    conv_silu_backward_gpu(d_dinp, d_dw, d_dact, d_inp, CH, d_w, B, T, CH, d_scratch, 0);  // the conv recomputed from d_inp
    double e[4] = {rel_err_dev_x(d_act, act, n3), rel_err_dev_x(d_dinp, dinp, n3), rel_err_dev(d_dw, dw, (size_t)CH * CONV_K),
                   rel_err_dev_x(d_dact, dact, n3)};
    double tol = TOL_X(1e-5, 1e-2);
    char name[96];
    snprintf(name, sizeof(name), "gpu conv+silu B=%d T=%d C=%d", B, T, CH);
    check(e[0] < tol && e[1] < tol && e[2] < tol && e[3] < tol, name,
          "rel err act %.1e dinp %.1e dw (+=) %.1e, dact kept %.1e (tol %.0e)", e[0], e[1], e[2], e[3], tol);
    // L2 norm of the k third (row stride 3C), scale 0.7
    float *y = (float*)calloc_check(nC, sizeof(float)), *dy = rand_host(nC, &r, 1.0), *dx = (float*)calloc_check(n3, sizeof(float));
    round_x(dy, nC);
    l2norm_forward(y, inp + C, CH, N, C, H, 0.7);
    l2norm_backward(dx + C, dy, inp + C, CH, N, C, H, 0.7);
    floatX *d_y = gpu_zeros_x(nC), *d_dy = to_gpu_x(dy, nC), *d_dx = gpu_zeros_x(n3);
    l2norm_forward_gpu(d_y, d_inp + C, CH, N, C, H, 0.7f, 0);
    l2norm_backward_gpu(d_dx + C, d_dy, d_inp + C, CH, N, C, H, 0.7f, 0);
    double ey = rel_err_dev_x(d_y, y, nC), edx = rel_err_dev_x(d_dx, dx, n3);
    snprintf(name, sizeof(name), "gpu l2norm B=%d T=%d H=%d D=%d", B, T, H, D);
    check(ey < tol && edx < tol, name, "rel err y %.1e dx %.1e (tol %.0e)", ey, edx, tol);
    // gates
    for (int mixer = 0; mixer < 2; mixer++) {
        int gdn = mixer == MIXER_GDN;
        float *bpre = rand_host(nH, &r, 1.0), *apre = rand_host(nH, &r, 1.0), *A_log = rand_host(H, &r, 1.0), *dt = rand_host(H, &r, 1.0);
        float *dbeta = rand_host(nH, &r, 1.0), *dgate = rand_host(nH, &r, 1.0);
        round_x(bpre, nH);
        round_x(apre, nH);
        round_x(A_log, H);
        round_x(dt, H);
        float *beta = (float*)calloc_check(nH, sizeof(float)), *gate = (float*)calloc_check(nH, sizeof(float));
        float *dbpre = (float*)calloc_check(nH, sizeof(float)), *dapre = (float*)calloc_check(nH, sizeof(float));
        float *dA = (float*)calloc_check(H, sizeof(float)), *ddt = (float*)calloc_check(H, sizeof(float));
        gates_forward(beta, gate, bpre, apre, A_log, dt, N, H, mixer);
        gates_backward(dbpre, dapre, dA, ddt, dbeta, dgate, beta, gate, apre, A_log, dt, N, H, mixer);
        floatX *d_bpre = to_gpu_x(bpre, nH), *d_apre = to_gpu_x(apre, nH), *d_A = to_gpu_x(A_log, H), *d_dt = to_gpu_x(dt, H);
        float *d_dbeta = to_gpu(dbeta, nH), *d_dgate = to_gpu(dgate, nH);
        float *d_beta = gpu_zeros(nH), *d_gate = gpu_zeros(nH);
        floatX *d_dbpre = gpu_zeros_x(nH), *d_dapre = gpu_zeros_x(nH);
        float *d_dA = gpu_zeros(H), *d_ddt = gpu_zeros(H);
        gates_forward_gpu(gdn ? d_beta : NULL, d_gate, d_bpre, d_apre, H, d_A, d_dt, N, H, 0);
        gates_backward_gpu(gdn ? d_dbpre : NULL, d_dapre, d_dA, d_ddt, d_dbeta, d_dgate, d_beta, d_gate, d_apre, H, d_A, d_dt, N, H, 0);
        double eg[6] = {gdn ? rel_err_dev(d_beta, beta, nH) : 0.0, rel_err_dev(d_gate, gate, nH),
                        gdn ? rel_err_dev_x(d_dbpre, dbpre, nH) : 0.0, rel_err_dev_x(d_dapre, dapre, nH),
                        rel_err_dev(d_dA, dA, H), rel_err_dev(d_ddt, ddt, H)};
        double worst = 0.0;
        for (int i = 0; i < 6; i++) { worst = fmax(worst, eg[i]); }
        snprintf(name, sizeof(name), "gpu gates %s N=%d H=%d", gdn ? "gdn" : "gla", N, H);
        check(worst < tol, name, "rel err beta %.1e gate %.1e dbpre %.1e dapre %.1e dA_log %.1e ddt_bias %.1e (tol %.0e)",
              eg[0], eg[1], eg[2], eg[3], eg[4], eg[5], tol);
        free(bpre); free(apre); free(A_log); free(dt); free(dbeta); free(dgate); free(beta); free(gate);
        free(dbpre); free(dapre); free(dA); free(ddt);
        cudaFreeAll(d_bpre, d_apre, d_A, d_dt, d_dbeta, d_dgate);
        cudaFreeAll(d_beta, d_gate, d_dbpre, d_dapre, d_dA, d_ddt);
    }
    free(inp); free(w); free(dact); free(conv); free(act); free(dconv); free(dinp); free(dw); free(dw0); free(y); free(dy); free(dx);
    cudaFreeAll(d_inp, d_w, d_dact, d_act, d_dinp, d_dw, d_scratch);
    cudaFreeAll(d_y, d_dy, d_dx);
}

// inputs in the model's ranges (delta_inputs_host). version 0: the trainer's choice (bf16 build: v3 at
// D 64 and 128, else v2); 2: v2 forced. fused (v3): the kernels also take the L2 norms' backward,
// writing the raw q, k gradients into dqkva's q and k thirds, checked against the CPU's
// l2norm_backward of its dq, dk.
static void test_delta_rule(int B, int T, int H, int D, int mixer, int version, int fused) {
    int C = H * D;
    size_t nC = (size_t)B * T * C, n3C = 3 * nC, nH = (size_t)B * T * H;
    DeltaInputs in = delta_inputs_host(B, T, H, D, mixer);
    const float *q = in.q, *k = in.k, *qkva = in.qkva, *dout = in.dout, *beta = in.beta, *gate = in.gate;
    const float* v = qkva + 2 * C;
    float* o = (float*)calloc_check(nC, sizeof(float));
    float* states = (float*)calloc_check(nH * D * D, sizeof(float));
    float *dq = (float*)calloc_check(nC, sizeof(float)), *dk = (float*)calloc_check(nC, sizeof(float));
    float *dqkva = (float*)calloc_check(n3C, sizeof(float));
    float *dbeta = (float*)calloc_check(nH, sizeof(float)), *dgate = (float*)calloc_check(nH, sizeof(float));
    int gdn = mixer == MIXER_GDN;
    delta_rule_forward(o, states, q, k, v, 3 * C, beta, gate, B, T, C, H, mixer);
    delta_rule_backward(dq, dk, dqkva + 2 * C, dbeta, dgate, dout, states, q, k, v, 3 * C, beta, gate, B, T, C, H, mixer);
    if (fused) {
        l2norm_backward(dqkva, dq, qkva, 3 * C, B * T, C, H, 1.0 / sqrt((double)D));
        l2norm_backward(dqkva + C, dk, qkva + C, 3 * C, B * T, C, H, 1.0);
    }

    floatX *d_q = to_gpu_x(q, nC), *d_k = to_gpu_x(k, nC), *d_qkva = to_gpu_x(qkva, n3C), *d_dout = to_gpu_x(dout, nC);
    float *d_beta = to_gpu(beta, nH), *d_gate = to_gpu(gate, nH);
    floatX *d_o, *d_dq, *d_dk, *d_dqkva;
    float *d_states, *d_dbeta, *d_dgate;
    cudaCheck(cudaMalloc(&d_o, nC * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d_states, delta_rule_state_floats(B, T, C, H) * sizeof(float)));
    float* d_scratch = gpu_zeros(delta_rule_scratch_floats(B, T, C, H));
    cudaCheck(cudaMalloc(&d_dq, nC * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d_dk, nC * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d_dqkva, n3C * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d_dbeta, nH * sizeof(float)));
    cudaCheck(cudaMalloc(&d_dgate, nH * sizeof(float)));
    cudaCheck(cudaMemset(d_dqkva, 0, n3C * sizeof(floatX)));  // only the v third is written
    int ran = version == 2 || !delta_rule_uses_v3(D) ? 2 : 3;
    if (ran == 2) {
        delta_v2_forward(d_o, d_states, d_q, d_k, d_qkva + 2 * C, 3 * C, gdn ? d_beta : NULL, d_gate, B, T, C, H, mixer, d_scratch, 0);
        delta_v2_backward(d_dq, d_dk, d_dqkva + 2 * C, gdn ? d_dbeta : NULL, d_dgate, d_dout, d_states, d_q, d_k, d_qkva + 2 * C,
                          3 * C, gdn ? d_beta : NULL, d_gate, B, T, C, H, mixer, d_scratch, 0);
    } else {
        delta_rule_forward_gpu(d_o, d_states, d_q, d_k, d_qkva + 2 * C, 3 * C, gdn ? d_beta : NULL, d_gate, B, T, C, H, mixer,
                               d_scratch, 0);
        delta_rule_backward_gpu(fused ? d_dqkva : d_dq, fused ? d_dqkva + C : d_dk, d_dqkva + 2 * C, gdn ? d_dbeta : NULL, d_dgate,
                                d_dout, d_states, d_q, d_k, d_qkva + 2 * C, 3 * C, gdn ? d_beta : NULL, d_gate, B, T, C, H, mixer,
                                d_scratch, fused ? d_qkva : NULL, 3 * C, 1.0f / sqrtf((float)D), 0);
    }
    cudaCheck(cudaDeviceSynchronize());
    float *g_o = from_gpu_x(d_o, nC), *g_dq = from_gpu_x(d_dq, nC), *g_dk = from_gpu_x(d_dk, nC);
    float *g_dqkva = from_gpu_x(d_dqkva, n3C), *g_dbeta = from_gpu(d_dbeta, nH), *g_dgate = from_gpu(d_dgate, nH);
    // fused: dq, dk are checked inside dqkva (all three thirds)
    double e_o = rel_err_f(g_o, o, nC), e_dq = fused ? 0.0 : rel_err_f(g_dq, dq, nC), e_dk = fused ? 0.0 : rel_err_f(g_dk, dk, nC);
    double e_dv = rel_err_f(g_dqkva, dqkva, n3C), e_dg = rel_err_f(g_dgate, dgate, nH);
    double e_db = gdn ? rel_err_f(g_dbeta, dbeta, nH) : 0.0;
    char name[96];
    snprintf(name, sizeof(name), "gpu delta rule v%d%s %s B=%d T=%d H=%d D=%d", ran, fused ? " + L2-norm backward" : "",
             gdn ? "gdn" : "gla", B, T, H, D);
    double tol = TOL_X(1e-4, 2e-2);
    check(e_o < tol && e_dq < tol && e_dk < tol && e_dv < tol && e_db < tol && e_dg < tol, name,
          "rel err o %.1e dq %.1e dk %.1e dv%s %.1e dbeta %.1e dgate %.1e (tol %.0e)", e_o, e_dq, e_dk, fused ? " (dqkva: dq dk dv)" : "",
          e_dv, e_db, e_dg, tol);
    delta_inputs_free(&in);
    free(o); free(states);
    free(dq); free(dk); free(dqkva); free(dbeta); free(dgate);
    free(g_o); free(g_dq); free(g_dk); free(g_dqkva); free(g_dbeta); free(g_dgate);
    cudaFreeAll(d_q, d_k, d_qkva, d_dout, d_beta, d_gate);
    cudaFreeAll(d_o, d_states, d_scratch, d_dq, d_dk, d_dqkva, d_dbeta, d_dgate);
}

int main(void) {
    char why[160];
    if (gpu_missing(why, sizeof(why))) {
        skip_all("test_gpu", PRECISION_IS_BF16 ? 61 : 43, why);  // the checks below
        return test_summary();
    }
    test_attention(2, 67, 3, 64, 0, 0);      // T not a multiple of the tile
    test_attention(2, 67, 3, 64, 1, 0);      // each query sees only itself
    test_attention(2, 100, 2, 64, 17, 0);    // band narrower than T, not tile-aligned
    test_attention(1, 45, 2, 64, 300, 0);    // window beyond T = full attention
    test_attention(3, 130, 4, 32, 40, 0);    // D = 32
    test_attention(2, 1, 2, 64, 0, 0);       // a single token
    test_attention(1, 700, 2, 64, 0, 0);     // six 128-row blocks: the stage rings wrap several times
    test_attention(2, 520, 2, 64, 200, 0);   // W <= 256 (64-key tiles), tiles outside the band skipped
    test_attention(2, 300, 2, 128, 0, 0);    // D = 128, a partial last block
    test_attention(1, 1000, 2, 128, 600, 0); // D = 128, W > 256 (64-key tiles at D 128)
    test_attention(2, 67, 2, 128, 1, 0);     // D = 128, W = 1
    test_attention(2, 130, 2, 128, 300, 0);  // D = 128, W > T
    test_attention(2, 1, 2, 128, 0, 0);      // D = 128, a single token
    test_attention(1, 4096, 2, 64, 0, 0);    // the t4096 experiments' length: 32 query blocks, keys up to row 4095
    test_attention(1, 4096, 2, 64, 1024, 0); // ... and their widest window
    if (PRECISION_IS_BF16) {  // v2 where v3 runs by default (the fallback of other GPUs)
        test_attention(2, 300, 3, 64, 0, 2);
        test_attention(2, 100, 2, 128, 17, 2);
    }
    if (PRECISION_IS_BF16 && attention_v3_available()) {  // v3 at the narrow windows that default to v2
        test_attention(2, 67, 3, 64, 1, 3);
        test_attention(2, 100, 2, 64, 17, 3);
        test_attention(2, 300, 2, 128, 64, 3);
    } else if (PRECISION_IS_BF16) {
        skip_all("gpu attention v3 at narrow windows", 3, "v3 needs a Hopper GPU (sm_90) and a build for sm_90a");
    }
    test_rec_small_kernels(2, 67, 3, 64);
    test_rec_small_kernels(3, 50, 3, 16);  // 144 channels (not a multiple of 32), D 16: lanes past D idle
    test_rec_small_kernels(2, 130, 2, 32);  // conv tiles of 64, 64 and 2 rows
    test_rec_small_kernels(3, 1, 2, 32);    // one token a sequence: the conv's taps all before t = 0
    test_rec_small_kernels(2, 67, 2, 48);   // D 48: an L2-norm row's lane group (8 | 16 lanes) not all used
    test_delta_rule(2, 67, 3, 64, MIXER_GDN, 0, 0);   // a full chunk and a partial one
    test_delta_rule(2, 67, 3, 64, MIXER_GLA, 0, 0);
    test_delta_rule(3, 130, 2, 32, MIXER_GDN, 0, 0);  // three chunks, D = 32
    test_delta_rule(3, 130, 2, 32, MIXER_GLA, 0, 0);
    test_delta_rule(1, 64, 2, 64, MIXER_GDN, 0, 0);   // exactly one chunk
    test_delta_rule(2, 1, 2, 64, MIXER_GDN, 0, 0);    // a single token
    test_delta_rule(1, 700, 2, 64, MIXER_GDN, 0, 0);  // eleven chunks: the state passes carry S and dS far
    test_delta_rule(1, 700, 2, 48, MIXER_GLA, 0, 0);  // D = 48: three row groups per head
    if (PRECISION_IS_BF16) {
        test_delta_rule(2, 67, 3, 64, MIXER_GDN, 2, 0);  // v2 where v3 runs by default
        test_delta_rule(2, 67, 3, 64, MIXER_GLA, 2, 0);
        int Ts[4] = {1, 64, 67, 130};                  // D 128 (v3 only): one token, one chunk, partial chunks
        for (int i = 0; i < 4; i++) {
            test_delta_rule(2, Ts[i], 2, 128, MIXER_GDN, 0, 0);
            test_delta_rule(2, Ts[i], 2, 128, MIXER_GLA, 0, 0);
        }
        test_delta_rule(2, 67, 3, 64, MIXER_GDN, 0, 1);  // the trainer's path: L2 norms' backward fused
        test_delta_rule(2, 67, 3, 64, MIXER_GLA, 0, 1);
        test_delta_rule(2, 130, 2, 128, MIXER_GDN, 0, 1);
    }
    return test_summary();
}
