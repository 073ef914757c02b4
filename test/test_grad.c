/*
test_grad.c — the CPU reference's backward against finite differences, built with real = double.

Every check compares the analytic gradient g with fourth-order central differences
    fd_i = (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h,   h = 1e-4,
over every element of a tensor, by the norm-wise relative error ||fd - g|| / max(||fd||, ||g||).
In double, truncation error is O(h^4) and rounding O(1e-16/h) ~ 1e-12 (relative), so a correct
backward lands near 1e-10 and the bar is 1e-6; a wrong term (a missed path, a sign, a transpose)
gives O(1e-2..1). (The plain 2-point stencil's O(h^2) error reached 4e-7 on the R models' wte,
too close to the bar.) Each tensor's gradient must also be non-zero, so no check passes vacuously.

  layers: embedding, RMSNorm, matmul, RoPE, attention (full, W=1, W=3, W > T), silu, SwiGLU,
          causal conv, L2 norm, gates (gdn, gla), delta rule (gdn, gla), cross-entropy
  model:  patterns F, S, R, SSSF, SRF; RoPE and NoPE; W < T and W > T; gdn and gla; T = 7
  also:   delta rule and gla update on a hand-computed 2-token example; gradient accumulation
  a layer type added through the table alone: 'I' (below), in the pattern IF
*/
#define HYBRID_DOUBLE

// A trivial layer type added the way a new one is (hybrid_cpu.h, "The layer types"): a row of
// LAYER_TYPES through LAYER_TYPES_EXTRA and its mixer pair, nothing else. 'I' passes ln1 through
// (atty = ln1); its block has the "*" tensors (norms, wo, the FFN) and none of the mixers' own.
struct Model;
struct Config;
static void ident_mixer_forward(struct Model* m, int l);
static void ident_mixer_backward(struct Model* m, int l);
static double ident_flops(const struct Config* c, double keys) { (void)c; (void)keys; return 0.0; }
#define LAYER_TYPES_EXTRA {'I', "identity (test)", 0, 0, POS_FLAG_NONE, ident_mixer_forward, ident_mixer_backward, ident_flops},

#include "../hybrid_cpu.h"
#include "test_common.h"

static void ident_mixer_forward(Model* m, int l) {
    memcpy(act(m, l, A_ATTY), act(m, l, A_LN1), (size_t)m->B * m->T * m->cfg.n_embd * sizeof(real));
}
static void ident_mixer_backward(Model* m, int l) {
    residual_add(dact(m, l, A_LN1), dact(m, l, A_ATTY), (size_t)m->B * m->T * m->cfg.n_embd);
}

#define FD_H 1e-4
#define FD_TOL 1e-6

static Rng test_rng;

static real* rand_array(size_t n, double scale) {
    real* x = (real*)malloc_check(n * sizeof(real));
    for (size_t i = 0; i < n; i++) { x[i] = (real)(scale * rng_normal(&test_rng)); }
    return x;
}
static real* zeros(size_t n) { return (real*)calloc_check(n, sizeof(real)); }

// ----------------------------------------------------------------------------
// Layer cases: forward computes out (and out2); the loss is sum(out * R) + sum(out2 * R2), so
// backward is called with dout = R (and R2).

#define MAX_VARS 6
typedef struct Case Case;
struct Case {
    const char* name;
    int B, T, C, H, window, mode;
    real* x[MAX_VARS];   // inputs and parameters checked
    real* dx[MAX_VARS];  // their analytic gradients
    size_t nx[MAX_VARS];
    const char* xname[MAX_VARS];
    int unchecked[MAX_VARS]; // inputs the case's mode ignores (beta in gla): zero gradient by design
    int nvars;
    real *out, *out2, *R, *R2, *aux, *aux2;
    size_t nout, nout2;
    int* targets;
    void (*forward)(Case*);
    void (*backward)(Case*);
};

static void case_var(Case* c, const char* name, size_t n, double scale) {
    c->xname[c->nvars] = name;
    c->nx[c->nvars] = n;
    c->x[c->nvars] = rand_array(n, scale);
    c->dx[c->nvars] = zeros(n);
    c->nvars++;
}
static void case_out(Case* c, size_t n, size_t n2) {
    c->nout = n;
    c->out = zeros(n);
    c->R = rand_array(n, 1.0);
    c->nout2 = n2;
    c->out2 = zeros(n2);
    c->R2 = rand_array(n2, 1.0);
}

static double case_loss(Case* c) {
    c->forward(c);
    double s = 0.0;
    for (size_t i = 0; i < c->nout; i++) { s += (double)c->out[i] * c->R[i]; }
    for (size_t i = 0; i < c->nout2; i++) { s += (double)c->out2[i] * c->R2[i]; }
    return s;
}

// fd over every element of x (n), against the analytic g. Returns the relative error; *gnorm = ||g||.
static double fd_check(double (*loss)(void*), void* ctx, real* x, const real* g, size_t n, double* gnorm) {
    double* fd = (double*)malloc_check(n * sizeof(double));
    double* an = (double*)malloc_check(n * sizeof(double));
    double gg = 0.0;
    for (size_t i = 0; i < n; i++) {
        real save = x[i];
        double f[4];  // f(x-2h), f(x-h), f(x+h), f(x+2h)
        const int steps[4] = {-2, -1, 1, 2};
        for (int s = 0; s < 4; s++) { x[i] = save + steps[s] * FD_H; f[s] = loss(ctx); }
        x[i] = save;
        fd[i] = (8.0 * (f[2] - f[1]) - (f[3] - f[0])) / (12.0 * FD_H);
        an[i] = g[i];
        gg += an[i] * an[i];
    }
    double e = rel_err(fd, an, n);
    free(fd);
    free(an);
    *gnorm = sqrt(gg);
    return e;
}

static double case_loss_ctx(void* c) { return case_loss((Case*)c); }

static void case_run(Case* c) {
    case_loss(c);
    c->backward(c);
    for (int v = 0; v < c->nvars; v++) {
        if (c->unchecked[v]) { continue; }
        double gnorm;
        double e = fd_check(case_loss_ctx, c, c->x[v], c->dx[v], c->nx[v], &gnorm);
        char name[96];
        snprintf(name, sizeof(name), "grad %s d%s", c->name, c->xname[v]);
        check(e < FD_TOL && gnorm > 1e-8, name, "rel err %.2e (tol %.0e), |g| %.3g", e, FD_TOL, gnorm);
    }
}

// --- embedding: x0 = wte[tokens]
static int case_tokens[14] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7};
static void encoder_fwd(Case* c) { encoder_forward(c->out, case_tokens, c->x[0], c->B * c->T, c->C); }
static void encoder_bwd(Case* c) { encoder_backward(c->dx[0], c->R, case_tokens, c->B * c->T, c->C); }

// --- RMSNorm
static void rmsnorm_fwd(Case* c) { rmsnorm_forward(c->out, c->aux, c->x[0], c->x[1], c->B * c->T, c->C); }
static void rmsnorm_bwd(Case* c) { rmsnorm_backward(c->dx[0], c->dx[1], c->R, c->x[0], c->x[1], c->aux, c->B * c->T, c->C); }

// --- matmul (N,C) -> (N,5)
static void matmul_fwd(Case* c) { matmul_forward(c->out, c->x[0], c->x[1], c->B * c->T, c->C, 5); }
static void matmul_bwd(Case* c) { matmul_backward(c->dx[0], c->dx[1], c->R, c->x[0], c->x[1], c->B * c->T, c->C, 5); }

// --- RoPE on q,k of qkv
static void rope_fwd(Case* c) { rope_forward(c->out, c->x[0], c->B, c->T, c->C, c->H, 1, 10000.0); }
static void rope_bwd(Case* c) { rope_backward(c->dx[0], c->R, c->B, c->T, c->C, c->H, 1, 10000.0); }

// --- attention with window c->window (0 = full)
static void attn_fwd(Case* c) { attention_forward(c->out, c->aux, c->x[0], c->B, c->T, c->C, c->H, c->window); }
static void attn_bwd(Case* c) { attention_backward(c->dx[0], c->R, c->out, c->aux, c->x[0], c->B, c->T, c->C, c->H, c->window); }

// --- silu, SwiGLU
static void silu_fwd(Case* c) { silu_forward(c->out, c->x[0], c->nout); }
static void silu_bwd(Case* c) { silu_backward(c->dx[0], c->R, c->x[0], c->nout); }
static void swiglu_fwd(Case* c) { swiglu_forward(c->out, c->x[0], c->x[1], c->nout); }
static void swiglu_bwd(Case* c) { swiglu_backward(c->dx[0], c->dx[1], c->R, c->x[0], c->x[1], c->nout); }

// --- causal depthwise conv
static void conv_fwd(Case* c) { conv_forward(c->out, c->x[0], c->x[1], c->B, c->T, c->C); }
static void conv_bwd(Case* c) { conv_backward(c->dx[0], c->dx[1], c->R, c->x[0], c->x[1], c->B, c->T, c->C); }

// --- L2 norm of the k part of a (N,3C) buffer, scale 0.7
static void l2norm_fwd(Case* c) { l2norm_forward(c->out, c->x[0] + c->C, 3 * c->C, c->B * c->T, c->C, c->H, 0.7); }
static void l2norm_bwd(Case* c) { l2norm_backward(c->dx[0] + c->C, c->R, c->x[0] + c->C, 3 * c->C, c->B * c->T, c->C, c->H, 0.7); }

// --- gates: x = bpre, apre, A_log, dt_bias; out = beta, out2 = gate
static void gates_fwd(Case* c) { gates_forward(c->out, c->out2, c->x[0], c->x[1], c->x[2], c->x[3], c->B * c->T, c->H, c->mode); }
static void gates_bwd(Case* c) {
    gates_backward(c->dx[0], c->dx[1], c->dx[2], c->dx[3], c->R, c->R2, c->out, c->out2, c->x[1], c->x[2], c->x[3],
                   c->B * c->T, c->H, c->mode);
}

// --- delta rule: x = q, k, v (inside a (N,3C) buffer), beta, gate (made negative: log alpha)
static void delta_fwd(Case* c) {
    delta_rule_forward(c->out, c->aux, c->x[0], c->x[1], c->x[2] + 2 * c->C, 3 * c->C, c->x[3], c->x[4],
                       c->B, c->T, c->C, c->H, c->mode);
}
static void delta_bwd(Case* c) {
    delta_rule_backward(c->dx[0], c->dx[1], c->dx[2] + 2 * c->C, c->dx[3], c->dx[4], c->R, c->aux, c->x[0], c->x[1],
                        c->x[2] + 2 * c->C, 3 * c->C, c->x[3], c->x[4], c->B, c->T, c->C, c->H, c->mode);
}

// --- cross-entropy over V = 9 of Vp = 12 logits, one target masked; loss = sum(losses) * 0.7
static void ce_fwd(Case* c) { crossentropy_forward(c->out, c->aux, c->x[0], c->targets, c->B * c->T, 9, 12); }
static void ce_bwd(Case* c) { crossentropy_backward(c->dx[0], c->x[0], c->aux, c->targets, 0.7, c->B * c->T, 9, 12); }

static Case case_new(const char* name, void (*fwd)(Case*), void (*bwd)(Case*)) {
    Case c;
    memset(&c, 0, sizeof(c));
    c.name = name;
    c.B = 2; c.T = 7; c.C = 8; c.H = 2;
    c.forward = fwd;
    c.backward = bwd;
    return c;
}

static void test_layers(void) {
    const int N = 14, C = 8, H = 2, D = 4;
    Case c;
    c = case_new("embedding", encoder_fwd, encoder_bwd);
    case_var(&c, "wte", 10 * C, 1.0); case_out(&c, N * C, 0); case_run(&c);
    c = case_new("rmsnorm", rmsnorm_fwd, rmsnorm_bwd);
    case_var(&c, "x", N * C, 1.0); case_var(&c, "w", C, 1.0); case_out(&c, N * C, 0); c.aux = zeros(N); case_run(&c);
    c = case_new("matmul", matmul_fwd, matmul_bwd);
    case_var(&c, "x", N * C, 1.0); case_var(&c, "w", 5 * C, 1.0); case_out(&c, N * 5, 0); case_run(&c);
    c = case_new("rope", rope_fwd, rope_bwd);
    case_var(&c, "qkv", N * 3 * C, 1.0); case_out(&c, N * 3 * C, 0); case_run(&c);
    const int windows[4] = {0, 1, 3, 10};
    const char* wnames[4] = {"attention full", "attention W=1", "attention W=3", "attention W=10>T"};
    for (int w = 0; w < 4; w++) {
        c = case_new(wnames[w], attn_fwd, attn_bwd);
        c.window = windows[w];
        case_var(&c, "qkv", N * 3 * C, 1.0); case_out(&c, N * C, 0); c.aux = zeros(N * H); case_run(&c);
    }
    c = case_new("silu", silu_fwd, silu_bwd);
    case_var(&c, "x", N * C, 2.0); case_out(&c, N * C, 0); case_run(&c);
    c = case_new("swiglu", swiglu_fwd, swiglu_bwd);
    case_var(&c, "a", N * C, 2.0); case_var(&c, "b", N * C, 1.0); case_out(&c, N * C, 0); case_run(&c);
    c = case_new("conv", conv_fwd, conv_bwd);
    case_var(&c, "x", N * C, 1.0); case_var(&c, "w", C * CONV_K, 1.0); case_out(&c, N * C, 0); case_run(&c);
    c = case_new("l2norm", l2norm_fwd, l2norm_bwd);
    case_var(&c, "x", N * 3 * C, 1.0); case_out(&c, N * C, 0); case_run(&c);
    for (int mode = 0; mode < 2; mode++) {
        c = case_new(mode == MIXER_GDN ? "gates gdn" : "gates gla", gates_fwd, gates_bwd);
        c.mode = mode;
        case_var(&c, "bpre", N * H, 1.0); case_var(&c, "apre", N * H, 1.0);
        case_var(&c, "A_log", H, 1.0); case_var(&c, "dt_bias", H, 1.0);
        case_out(&c, N * H, N * H);
        c.unchecked[0] = mode == MIXER_GLA;  // gla has no beta
        case_run(&c);
    }
    for (int mode = 0; mode < 2; mode++) {
        c = case_new(mode == MIXER_GDN ? "delta rule gdn" : "delta rule gla", delta_fwd, delta_bwd);
        c.mode = mode;
        case_var(&c, "q", N * C, 0.5); case_var(&c, "k", N * C, 0.5); case_var(&c, "v", N * 3 * C, 1.0);
        case_var(&c, "beta", N * H, 1.0); case_var(&c, "gate", N * H, 0.3);
        for (int i = 0; i < N * H; i++) { c.x[3][i] = 1.0 / (1.0 + exp(-c.x[3][i])); c.x[4][i] = -fabs(c.x[4][i]); }
        c.unchecked[3] = mode == MIXER_GLA;  // gla has no beta
        case_out(&c, N * C, 0);
        c.aux = zeros((size_t)N * H * D * D);
        case_run(&c);
    }
    c = case_new("cross-entropy", ce_fwd, ce_bwd);
    case_var(&c, "logits", N * 12, 2.0); case_out(&c, N, 0); c.aux = zeros(N);
    c.targets = (int*)malloc_check(N * sizeof(int));
    for (int n = 0; n < N; n++) { c.targets[n] = n % 9; c.R[n] = 0.7; }
    c.targets[5] = -1;
    case_run(&c);
}

// ----------------------------------------------------------------------------
// Whole model: mean cross-entropy over B=2, T=7 (one target masked) vs every parameter tensor.

typedef struct { Model* m; const int* in; const int* tg; int B, T; } ModelCtx;
static double model_loss_ctx(void* p) { ModelCtx* c = (ModelCtx*)p; return model_forward(c->m, c->in, c->tg, c->B, c->T); }

static void model_gradcheck(const char* name, const char* pattern, int L, int window, int pos_full, int pos_swa, int mixer) {
    const int B = 2, T = 7, V = 19, Vp = 24;
    Config cfg = config_make(V, Vp, L, 8, 2, 12, pattern, window, pos_full, pos_swa, mixer);
    Model m;
    model_build(&m, &cfg, 1234);
    // larger weights than the 0.02 init, so every path carries a gradient well above rounding
    Rng r;
    rng_init(&r, 99);
    for (int s = 0; s < m.pl.n; s++) {
        const TensorSpec* sp = &m.pl.spec[s];
        int keep = sp->kind->init == INIT_ALOG || sp->kind->init == INIT_DTBIAS;
        for (size_t i = 0; i < sp->numel; i++) {
            if (!keep) { m.params[sp->offset + i] += 0.3 * rng_normal(&r); }
        }
    }
    int in[14], tg[14];
    for (int i = 0; i < B * T; i++) { in[i] = rng_int(&r, V); tg[i] = rng_int(&r, V); }
    tg[4] = -1;
    ModelCtx ctx = {&m, in, tg, B, T};
    model_forward(&m, in, tg, B, T);
    model_zero_grad(&m);
    model_backward(&m, 1.0);
    real* g = (real*)malloc_check(m.pl.total * sizeof(real));
    memcpy(g, m.grads, m.pl.total * sizeof(real));
    double worst = 0.0;
    const char* worst_name = "";
    int bad = 0;
    for (int s = 0; s < m.pl.n; s++) {
        const TensorSpec* sp = &m.pl.spec[s];
        double gnorm;
        double e = fd_check(model_loss_ctx, &ctx, m.params + sp->offset, g + sp->offset, sp->numel, &gnorm);
        if (e > worst) { worst = e; worst_name = sp->name; }
        if (!(e < FD_TOL && gnorm > 1e-8)) {
            printf("  %s: %s rel err %.2e |g| %.3g\n", name, sp->name, e, gnorm);
            bad++;
        }
    }
    char cname[96];
    snprintf(cname, sizeof(cname), "grad model %s", name);
    check(bad == 0, cname, "%d tensors (%zu params), worst %s rel err %.2e (tol %.0e)", m.pl.n, m.pl.total, worst_name, worst, FD_TOL);
    free(g);
    model_free(&m);
}

// The table's added row is a layer type like the others: known by letter and listed in the
// errors, its layers hold only the tensors whose `types` admit it (here the "*" ones: no wqkv),
// and a letter in no row is unknown.
static void test_layer_type_table(void) {
    Config cfg = config_make(19, 24, 2, 8, 2, 12, "IF", 4, POS_ROPE, POS_ROPE, MIXER_GDN);
    Model m;
    model_build(&m, &cfg, 1234);
    int wqkv_l0 = 0, wo_l0 = 0;
    for (int s = 0; s < m.pl.n; s++) {
        wqkv_l0 |= strcmp(m.pl.spec[s].name, "l0.wqkv") == 0;
        wo_l0 |= strcmp(m.pl.spec[s].name, "l0.wo") == 0;
    }
    int ok = layer_type('I') && !layer_type('I')->attention && layer_type('L') == NULL && strcmp(layer_letters(), "F, S, R, I") == 0 &&
             !wqkv_l0 && wo_l0 && layer_window(&cfg, 0) == 0;
    check(ok, "layer type table: a row added", "'I' known (%s), 'L' not; letters \"%s\"; layer 0 has wo %d, wqkv %d", layer_type('I') ? layer_type('I')->name : "-",
          layer_letters(), wo_l0, wqkv_l0);
    model_free(&m);
}

// ----------------------------------------------------------------------------
// Hand-computed 2-token example, D = 2, one head.
//   k1 = (1,0) v1 = (1,2) beta1 = 0.5 alpha1 = 1    q1 = (1,1)
//   k2 = (.6,.8) v2 = (2,0) beta2 = 1 alpha2 = 0.5  q2 = (1,0)
// gdn: S1 = beta1 v1 k1ᵀ = [[.5,0],[1,0]],  o1 = S1 q1 = (.5, 1)
//      S' = .5 S1 = [[.25,0],[.5,0]], S'k2 = (.15,.3), u2 = v2 - S'k2 = (1.85,-.3)
//      S2 = S' + u2 k2ᵀ = [[1.36,1.48],[.32,-.24]],  o2 = S2 q2 = (1.36, .32)
// gla: S1 = v1 k1ᵀ = [[1,0],[2,0]], o1 = (1,2);  S2 = .5 S1 + v2 k2ᵀ = [[1.7,1.6],[1,0]], o2 = (1.7,1)
static void test_delta_rule_by_hand(void) {
    real q[4] = {1, 1, 1, 0}, k[4] = {1, 0, 0.6, 0.8}, v[4] = {1, 2, 2, 0};
    real beta[2] = {0.5, 1.0}, gate[2] = {0.0, log(0.5)};
    real o[4], S[8];
    const double want_gdn_o[4] = {0.5, 1, 1.36, 0.32}, want_gdn_S2[4] = {1.36, 1.48, 0.32, -0.24};
    const double want_gla_o[4] = {1, 2, 1.7, 1}, want_gla_S2[4] = {1.7, 1.6, 1, 0};
    for (int mode = 0; mode < 2; mode++) {
        delta_rule_forward(o, S, q, k, v, 2, beta, gate, 1, 2, 2, 1, mode);
        const double* wo = mode == MIXER_GDN ? want_gdn_o : want_gla_o;
        const double* ws = mode == MIXER_GDN ? want_gdn_S2 : want_gla_S2;
        double err = 0.0;
        for (int i = 0; i < 4; i++) { err = fmax(err, fabs(o[i] - wo[i])); err = fmax(err, fabs(S[4 + i] - ws[i])); }
        check(err < 1e-12, mode == MIXER_GDN ? "delta rule 2-token example" : "gla update 2-token example",
              "o = (%.4g %.4g) (%.4g %.4g), S2 = [%.4g %.4g; %.4g %.4g], max err %.1e",
              o[0], o[1], o[2], o[3], S[4], S[5], S[6], S[7], err);
    }
}

// Two micro-batches with loss_scale 1/2 give the gradient of the batch of both (equal token counts).
static void test_grad_accumulation(void) {
    Config cfg = config_make(19, 24, 2, 8, 2, 12, "SR", 3, POS_ROPE, POS_ROPE, MIXER_GDN);
    Model m;
    model_build(&m, &cfg, 7);
    int in[28], tg[28];
    Rng r;
    rng_init(&r, 5);
    for (int i = 0; i < 28; i++) { in[i] = rng_int(&r, 19); tg[i] = rng_int(&r, 19); }
    model_zero_grad(&m);
    model_forward(&m, in, tg, 2, 7);
    model_backward(&m, 0.5);
    model_forward(&m, in + 14, tg + 14, 2, 7);
    model_backward(&m, 0.5);
    double* acc = (double*)malloc_check(m.pl.total * sizeof(double));
    double* whole = (double*)malloc_check(m.pl.total * sizeof(double));
    for (size_t i = 0; i < m.pl.total; i++) { acc[i] = m.grads[i]; }
    model_zero_grad(&m);
    model_forward(&m, in, tg, 4, 7);
    model_backward(&m, 1.0);
    for (size_t i = 0; i < m.pl.total; i++) { whole[i] = m.grads[i]; }
    double e = rel_err(acc, whole, m.pl.total);
    check(e < 1e-12, "gradient accumulation", "2 micro-batches of B=2 vs one of B=4: rel err %.1e", e);
    free(acc);
    free(whole);
    model_free(&m);
}

int main(void) {
    rng_init(&test_rng, 42);
    test_layers();
    test_delta_rule_by_hand();
    model_gradcheck("F rope", "F", 1, 4, POS_ROPE, POS_ROPE, MIXER_GDN);
    model_gradcheck("F nope", "F", 1, 4, POS_NOPE, POS_ROPE, MIXER_GDN);
    model_gradcheck("S W=3<T rope", "S", 1, 3, POS_ROPE, POS_ROPE, MIXER_GDN);
    model_gradcheck("S W=16>T nope", "S", 1, 16, POS_ROPE, POS_NOPE, MIXER_GDN);
    model_gradcheck("R gdn", "R", 1, 4, POS_ROPE, POS_ROPE, MIXER_GDN);
    model_gradcheck("R gla", "R", 1, 4, POS_ROPE, POS_ROPE, MIXER_GLA);
    model_gradcheck("SSSF W=3 rope", "SSSF", 4, 3, POS_ROPE, POS_ROPE, MIXER_GDN);
    model_gradcheck("SSSF W=2 F=nope", "SSSF", 4, 2, POS_NOPE, POS_ROPE, MIXER_GDN);
    model_gradcheck("SRF gdn W=3", "SRF", 3, 3, POS_ROPE, POS_ROPE, MIXER_GDN);
    model_gradcheck("SRF gla W=9>T F=nope", "SRF", 3, 9, POS_NOPE, POS_ROPE, MIXER_GLA);
    model_gradcheck("IF (a type added through the table)", "IF", 2, 4, POS_ROPE, POS_ROPE, MIXER_GDN);
    test_layer_type_table();
    test_grad_accumulation();
    return test_summary();
}
