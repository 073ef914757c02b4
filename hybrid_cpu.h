/*
hybrid_cpu.h — the CPU reference of the hybrid model (../shared/DESIGN.md §1): every layer's forward
and backward as plain loops, the whole model from a layer pattern, AdamW and the LR schedule.

defines: real, Config, parameter/activation tensor tables and layouts, layer forward/backward pairs,
         Model (build, forward, zero_grad, backward, grad_norm, update), OptConfig + lr schedule

Everything is written over `real`: float by default (the reference the GPU is diffed against),
double when HYBRID_DOUBLE is defined (the finite-difference gradient checks in test/).

Notation: B batch, T time, C channels, H heads, D = C/H head dim, F SwiGLU hidden, V vocab,
Vp padded vocab, N = B*T rows. Matrices are stored (out, in) row-major and applied as
out = inp · Wᵀ, like llm.c. Backward functions accumulate (+=) into every gradient they write, so
gradient accumulation is plain repetition, and zero_grad clears params' and activations' grads.
*/
#ifndef HYBRID_CPU_H
#define HYBRID_CPU_H

#include <assert.h>  // static_assert in C11 and C++
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>  // SIGINT/SIGTERM: finish the step, save, exit
#include <dirent.h>  // checkpoint_prune lists the kept saves
#include <limits.h>  // PATH_MAX
#include <unistd.h>  // fsync, link, unlink, access
#ifdef _OPENMP
#include <omp.h>
#endif
#include "dataloader.h"  // defines: die, malloc_check, Rng

#ifdef HYBRID_DOUBLE
typedef double real;
#else
typedef float real;
#endif

// ----------------------------------------------------------------------------
// Config

#define MAX_LAYERS 64
// The largest value of every size a flag or a checkpoint header can give: checked when flags are
// parsed (and listed by -h) and when a checkpoint is read, so no product of them overflows.
#define MAX_CHANNELS 16384          // C (and H)
#define MAX_FFN 65536               // F
#define MAX_SEQ_LEN (1 << 20)       // T, W, needle-grid lengths (4T fits an int)
#define MAX_BATCH 65536             // B, -a
#define MAX_TOKENS_PER_BATCH (1 << 24) // B·T of one micro-batch
#define MAX_STEPS 1000000000        // -n, a checkpoint's step
#define MAX_VOCAB (1 << 21)         // V, Vp: 128256 llama-3 ids + the needle block
#define MAX_SYMBOLS (1 << 20)       // --needle-symbols
#define CONV_K 4        // causal depthwise conv kernel of the recurrent mixer
#define NORM_EPS 1e-6   // RMSNorm (model and per-head) epsilon
#define L2NORM_EPS 1e-6 // q,k L2 normalisation: x / sqrt(sum x^2 + eps)

enum { POS_ROPE, POS_NOPE };
enum { MIXER_GDN, MIXER_GLA };

typedef struct {
    int vocab;        // V: real vocabulary; logits beyond it are padding and never scored
    int padded_vocab; // Vp: rows of wte
    int n_layer;      // L
    int n_embd;       // C
    int n_head;       // H; head dim D = C/H
    int ffn;          // F: SwiGLU hidden
    char pattern[MAX_LAYERS + 1]; // layer types 'F' 'S' 'R', one per layer (tiled to L)
    int window;       // W of S layers: query i sees keys j with i-W < j <= i
    int pos_full;     // POS_ROPE / POS_NOPE for F layers
    int pos_swa;      // ... for S layers
    double rope_theta;
    int mixer;        // MIXER_GDN (Gated DeltaNet) or MIXER_GLA (no delta rule) for R layers
} Config;

// Fills every field from the arguments; the pattern is tiled to L. Exits with a clear line on
// values that cannot make a model.
static Config config_make(int vocab, int padded_vocab, int L, int C, int H, int ffn, const char* pattern,
                          int window, int pos_full, int pos_swa, int mixer) {
    Config c;
    memset(&c, 0, sizeof(c));
    if (L < 1 || L > MAX_LAYERS) { die("-L %d: layers must be 1..%d", L, MAX_LAYERS); }
    if (H < 1 || C < 1 || C > MAX_CHANNELS || C % H != 0) { die("-C %d -H %d: channels must be a multiple of heads, at most %d", C, H, MAX_CHANNELS); }
    if ((C / H) % 2 != 0) { die("-C %d -H %d: head dim C/H=%d must be even (RoPE rotates pairs)", C, H, C / H); }
    if (C / H > 512) { die("-C %d -H %d: head dim C/H=%d, at most 512", C, H, C / H); }
    if (ffn < 0 || ffn > MAX_FFN) { die("-F %d: SwiGLU hidden must be 1..%d (0 = default round64(8C/3))", ffn, MAX_FFN); }
    if (window < 1 || window > MAX_SEQ_LEN) { die("-w %d: window must be 1..%d", window, MAX_SEQ_LEN); }
    if (vocab < 1 || padded_vocab < vocab || padded_vocab > MAX_VOCAB) { die("vocabulary %d padded to %d: expected 1 <= V <= Vp <= %d", vocab, padded_vocab, MAX_VOCAB); }
    if (pattern == NULL || pattern[0] == '\0') { die("-p: empty layer pattern, expected letters F, S, R (e.g. SSSF)"); }
    for (const char* p = pattern; *p; p++) {
        if (*p != 'F' && *p != 'S' && *p != 'R') { die("-p %s: layer pattern has '%c', expected only F, S, R", pattern, *p); }
    }
    int plen = (int)strlen(pattern);
    // tiling a longer pattern to L would drop its last layers without a word (SSSF at -L 2 is SS)
    if (plen > L) { die("-p %s -L %d: the pattern has %d layers, more than -L; give -L >= %d (the pattern is tiled to L)", pattern, L, plen, plen); }
    for (int l = 0; l < L; l++) { c.pattern[l] = pattern[l % plen]; }
    c.pattern[L] = '\0';
    c.vocab = vocab;
    c.padded_vocab = padded_vocab;
    c.n_layer = L;
    c.n_embd = C;
    c.n_head = H;
    c.ffn = ffn > 0 ? ffn : ((8 * C / 3 + 63) / 64) * 64;
    c.window = window;
    c.pos_full = pos_full;
    c.pos_swa = pos_swa;
    c.rope_theta = 10000.0;
    c.mixer = mixer;
    return c;
}

// ----------------------------------------------------------------------------
// The tensor tables. One row per tensor kind: name, which layer types have it, its shape in
// symbolic dims, weight decay, init. Parameters, gradients, the optimizer's m and v share one
// layout; activations and their gradients share another. Sizes and offsets are computed in one
// place (layout_build), never by hand.

enum { DIM_1, DIM_C, DIM_3C, DIM_H, DIM_D, DIM_F, DIM_K, DIM_HDD, DIM_VP };
enum { INIT_ONES, INIT_NORMAL, INIT_NORMAL_OUT, INIT_CONV, INIT_ALOG, INIT_DTBIAS };

typedef struct {
    const char* name;
    const char* types;  // layer types that have it ("FSR"); "" for the model-level tensors
    int dim0, dim1;     // shape (dim0, dim1); activations are (B, T, dim0, dim1)
    int gdn_only;       // only with the delta rule (beta)
    int decay;          // AdamW weight decay applies
    int init;
    int fp32;           // activations: a statistic kept in fp32 in every GPU build (see act_layout)
} TensorKind;

// per-layer parameters, in memory order. In an R layer wqkv, wg, wbeta, wa are adjacent, so they
// also form one (4C+2H, C) input projection; w1 and w3 likewise form one (2F, C).
enum { P_LN1, P_WQKV, P_WG, P_WBETA, P_WA, P_CONV, P_ALOG, P_DTBIAS, P_ONORM, P_WO,
       P_LN2, P_W1, P_W3, P_W2, NUM_LAYER_PARAMS };
static const TensorKind LAYER_PARAMS[NUM_LAYER_PARAMS] = {
    [P_LN1]    = {"ln1_w",   "FSR", DIM_1,  DIM_C, 0, 0, INIT_ONES},       // (C)
    [P_WQKV]   = {"wqkv",    "FSR", DIM_3C, DIM_C, 0, 1, INIT_NORMAL},     // (3C, C) rows q|k|v
    [P_WG]     = {"wg",      "R",   DIM_C,  DIM_C, 0, 1, INIT_NORMAL},     // (C, C) output gate
    [P_WBETA]  = {"wbeta",   "R",   DIM_H,  DIM_C, 1, 1, INIT_NORMAL},     // (H, C) delta-rule strength
    [P_WA]     = {"wa",      "R",   DIM_H,  DIM_C, 0, 1, INIT_NORMAL},     // (H, C) decay input
    [P_CONV]   = {"conv_w",  "R",   DIM_3C, DIM_K, 0, 0, INIT_CONV},       // (3C, 4) depthwise causal conv
    [P_ALOG]   = {"A_log",   "R",   DIM_1,  DIM_H, 0, 0, INIT_ALOG},       // (H)
    [P_DTBIAS] = {"dt_bias", "R",   DIM_1,  DIM_H, 0, 0, INIT_DTBIAS},     // (H)
    [P_ONORM]  = {"onorm_w", "R",   DIM_1,  DIM_D, 0, 0, INIT_ONES},       // (D) per-head RMSNorm of o
    [P_WO]     = {"wo",      "FSR", DIM_C,  DIM_C, 0, 1, INIT_NORMAL_OUT}, // (C, C)
    [P_LN2]    = {"ln2_w",   "FSR", DIM_1,  DIM_C, 0, 0, INIT_ONES},       // (C)
    [P_W1]     = {"w1",      "FSR", DIM_F,  DIM_C, 0, 1, INIT_NORMAL},     // (F, C) silu branch
    [P_W3]     = {"w3",      "FSR", DIM_F,  DIM_C, 0, 1, INIT_NORMAL},     // (F, C) linear branch
    [P_W2]     = {"w2",      "FSR", DIM_C,  DIM_F, 0, 1, INIT_NORMAL_OUT}, // (C, F)
};
// model-level parameters: wte first, lnf_w after the layers
static const TensorKind PARAM_WTE = {"wte", "", DIM_VP, DIM_C, 0, 1, INIT_NORMAL, 0}; // (Vp, C), tied LM head
static const TensorKind PARAM_LNF = {"lnf_w", "", DIM_1, DIM_C, 0, 0, INIT_ONES, 0}; // (C)

// per-layer activations, each (B, T, dim0, dim1). Columns: name, types, dims, gdn_only, -, -, fp32.
enum { A_RESID, A_LN1, A_RSTD1, A_QKV, A_QKVR, A_LSE, A_CONV, A_QKVA, A_QN, A_KN, A_GPRE, A_BPRE,
       A_APRE, A_BETA, A_GATE, A_STATE, A_O, A_ORSTD, A_ON, A_ATTY, A_RESID2, A_LN2, A_RSTD2,
       A_H1, A_H3, A_HMID, NUM_LAYER_ACTS };
static const TensorKind LAYER_ACTS[NUM_LAYER_ACTS] = {
    [A_RESID]  = {"resid",  "FSR", DIM_1, DIM_C,  0, 0, 0, 0}, // block input x
    [A_LN1]    = {"ln1",    "FSR", DIM_1, DIM_C,  0, 0, 0, 0}, // RMSNorm(x)
    [A_RSTD1]  = {"rstd1",  "FSR", DIM_1, DIM_1,  0, 0, 0, 1}, // its 1/rms
    [A_QKV]    = {"qkv",    "FSR", DIM_1, DIM_3C, 0, 0, 0, 0}, // ln1 · wqkvᵀ, q|k|v
    [A_QKVR]   = {"qkvr",   "FS",  DIM_1, DIM_3C, 0, 0, 0, 0}, // q,k rotated (or copied, NoPE), v copied
    [A_LSE]    = {"lse",    "FS",  DIM_1, DIM_H,  0, 0, 0, 1}, // softmax log-sum-exp per (b,t,h)
    [A_CONV]   = {"conv",   "R",   DIM_1, DIM_3C, 0, 0, 0, 0}, // causal conv of qkv
    [A_QKVA]   = {"qkva",   "R",   DIM_1, DIM_3C, 0, 0, 0, 0}, // silu(conv)
    [A_QN]     = {"qn",     "R",   DIM_1, DIM_C,  0, 0, 0, 0}, // L2-normalised q, times 1/sqrt(D)
    [A_KN]     = {"kn",     "R",   DIM_1, DIM_C,  0, 0, 0, 0}, // L2-normalised k
    [A_GPRE]   = {"gpre",   "R",   DIM_1, DIM_C,  0, 0, 0, 0}, // ln1 · wgᵀ (output gate before silu)
    [A_BPRE]   = {"bpre",   "R",   DIM_1, DIM_H,  1, 0, 0, 0}, // ln1 · wbetaᵀ
    [A_APRE]   = {"apre",   "R",   DIM_1, DIM_H,  0, 0, 0, 0}, // ln1 · waᵀ
    [A_BETA]   = {"beta",   "R",   DIM_1, DIM_H,  1, 0, 0, 1}, // sigmoid(bpre)
    [A_GATE]   = {"gate",   "R",   DIM_1, DIM_H,  0, 0, 0, 1}, // log alpha = -exp(A_log) softplus(apre + dt_bias)
    [A_STATE]  = {"state",  "R",   DIM_1, DIM_HDD,0, 0, 0, 1}, // S (H, D, D), S[i][j]: i value dim, j key dim; see act_layout
    [A_O]      = {"o",      "R",   DIM_1, DIM_C,  0, 0, 0, 0}, // S_t q_t
    [A_ORSTD]  = {"orstd",  "R",   DIM_1, DIM_H,  0, 0, 0, 1}, // per-head 1/rms of o
    [A_ON]     = {"on",     "R",   DIM_1, DIM_C,  0, 0, 0, 0}, // RMSNorm_head(o)
    [A_ATTY]   = {"atty",   "FSR", DIM_1, DIM_C,  0, 0, 0, 0}, // mixer output before wo
    [A_RESID2] = {"resid2", "FSR", DIM_1, DIM_C,  0, 0, 0, 0}, // x + mixer
    [A_LN2]    = {"ln2",    "FSR", DIM_1, DIM_C,  0, 0, 0, 0},
    [A_RSTD2]  = {"rstd2",  "FSR", DIM_1, DIM_1,  0, 0, 0, 1},
    [A_H1]     = {"h1",     "FSR", DIM_1, DIM_F,  0, 0, 0, 0}, // ln2 · w1ᵀ
    [A_H3]     = {"h3",     "FSR", DIM_1, DIM_F,  0, 0, 0, 0}, // ln2 · w3ᵀ
    [A_HMID]   = {"hmid",   "FSR", DIM_1, DIM_F,  0, 0, 0, 0}, // silu(h1) * h3
};
// model-level activations, after the layers
enum { G_RESID, G_LNF, G_RSTDF, G_LOGITS, G_LSE, G_LOSSES, NUM_GLOBAL_ACTS };
static const TensorKind GLOBAL_ACTS[NUM_GLOBAL_ACTS] = {
    [G_RESID]  = {"residf", "",    DIM_1, DIM_C,  0, 0, 0, 0}, // output of the last block
    [G_LNF]    = {"lnf",    "",    DIM_1, DIM_C,  0, 0, 0, 0},
    [G_RSTDF]  = {"rstdf",  "",    DIM_1, DIM_1,  0, 0, 0, 1},
    [G_LOGITS] = {"logits", "",    DIM_1, DIM_VP, 0, 0, 0, 0},
    [G_LSE]    = {"lse",    "",    DIM_1, DIM_1,  0, 0, 0, 1}, // log-sum-exp over the V real logits
    [G_LOSSES] = {"losses", "",    DIM_1, DIM_1,  0, 0, 0, 1}, // per-token loss, 0 where the target is masked
};

static size_t config_dim(const Config* c, int dim) {
    int D = c->n_embd / c->n_head;
    switch (dim) {
        case DIM_1: return 1;
        case DIM_C: return (size_t)c->n_embd;
        case DIM_3C: return 3 * (size_t)c->n_embd;
        case DIM_H: return (size_t)c->n_head;
        case DIM_D: return (size_t)D;
        case DIM_F: return (size_t)c->ffn;
        case DIM_K: return CONV_K;
        case DIM_HDD: return (size_t)c->n_head * D * D;
        case DIM_VP: return (size_t)c->padded_vocab;
    }
    return 0;
}

// Elements of one tensor of this kind in a layer of type `type` (0 = model level); 0 if absent.
static size_t tensor_numel(const Config* c, const TensorKind* k, char type) {
    if (type != 0 && strchr(k->types, type) == NULL) { return 0; }
    if (k->gdn_only && c->mixer != MIXER_GDN) { return 0; }
    return config_dim(c, k->dim0) * config_dim(c, k->dim1);
}

#define MAX_TENSORS (2 + MAX_LAYERS * NUM_LAYER_ACTS + NUM_GLOBAL_ACTS)
typedef struct {
    const TensorKind* kind;
    int layer;     // -1 for model-level
    size_t offset; // in elements
    size_t numel;
    char name[32]; // e.g. "l3.wqkv"
} TensorSpec;

// model-level parameters' slots in Layout.global_off
enum { PG_WTE, PG_LNF };
static_assert((int)NUM_LAYER_PARAMS <= (int)NUM_LAYER_ACTS && 2 <= (int)NUM_GLOBAL_ACTS, "Layout index arrays fit both tables");

// One layout = one allocation: every tensor's offset and size, plus an index for O(1) access.
typedef struct {
    TensorSpec spec[MAX_TENSORS];
    int n;                                        // tensors with numel > 0
    size_t layer_off[MAX_LAYERS][NUM_LAYER_ACTS]; // offset of (layer, kind); only valid where numel > 0
    size_t global_off[NUM_GLOBAL_ACTS];           // model-level tensors: PG_* for params, G_* for acts
    size_t total;
} Layout;

// Appends one tensor of numel elements, each `units` layout units wide, at the next multiple of
// `align` units; returns its offset (in units).
static size_t layout_add(Layout* lo, const TensorKind* k, int layer, size_t numel, size_t units, size_t align) {
    size_t offset = (lo->total + align - 1) / align * align;
    if (numel == 0) { return offset; }
    TensorSpec* s = &lo->spec[lo->n++];
    s->kind = k;
    s->layer = layer;
    s->offset = offset;
    s->numel = numel;
    if (layer >= 0) { snprintf(s->name, sizeof(s->name), "l%d.%s", layer, k->name); }
    else { snprintf(s->name, sizeof(s->name), "%s", k->name); }
    lo->total = offset + numel * units;
    return offset;
}

// Parameters: wte (Vp,C); for each layer its LAYER_PARAMS in table order; lnf_w (C).
static Layout param_layout(const Config* c) {
    Layout lo;
    memset(&lo, 0, sizeof(lo));
    lo.global_off[PG_WTE] = layout_add(&lo, &PARAM_WTE, -1, tensor_numel(c, &PARAM_WTE, 0), 1, 1);
    for (int l = 0; l < c->n_layer; l++) {
        for (int k = 0; k < NUM_LAYER_PARAMS; k++) {
            lo.layer_off[l][k] = layout_add(&lo, &LAYER_PARAMS[k], l, tensor_numel(c, &LAYER_PARAMS[k], c->pattern[l]), 1, 1);
        }
    }
    lo.global_off[PG_LNF] = layout_add(&lo, &PARAM_LNF, -1, tensor_numel(c, &PARAM_LNF, 0), 1, 1);
    return lo;
}

// Activations for a (B,T) batch: for each layer its LAYER_ACTS, then GLOBAL_ACTS. Every tensor has
// one row per token, except the recurrent state, which is saved every `state_every` tokens: the CPU
// keeps all of them (1), the GPU's chunked recurrence only those entering a chunk (DELTA_CHUNK), so
// its state takes B·ceil(T/64)·H·D·D floats instead of B·T·H·D·D.
// Offsets count units of the storage type: the CPU stores everything as `real` (fp32_units = 1,
// align = 1); a bf16 GPU build stores the fp32 statistics as 2 units each and starts every tensor
// on a 16-byte boundary (align = 8 units), so one allocation holds both types.
static Layout act_layout(const Config* c, int B, int T, int state_every, size_t fp32_units, size_t align) {
    Layout lo;
    memset(&lo, 0, sizeof(lo));
    size_t N = (size_t)B * T;
    for (int l = 0; l < c->n_layer; l++) {
        for (int k = 0; k < NUM_LAYER_ACTS; k++) {
            const TensorKind* kind = &LAYER_ACTS[k];
            size_t rows = k == A_STATE ? (size_t)B * ((T + state_every - 1) / state_every) : N;
            lo.layer_off[l][k] = layout_add(&lo, kind, l, rows * tensor_numel(c, kind, c->pattern[l]), kind->fp32 ? fp32_units : 1, align);
        }
    }
    for (int k = 0; k < NUM_GLOBAL_ACTS; k++) {
        const TensorKind* kind = &GLOBAL_ACTS[k];
        lo.global_off[k] = layout_add(&lo, kind, -1, N * tensor_numel(c, kind, 0), kind->fp32 ? fp32_units : 1, align);
    }
    return lo;
}

// ----------------------------------------------------------------------------
// Layers. Each _forward has its _backward right below it.

// x[b,t,:] = wte[tokens[b,t], :]
static void encoder_forward(real* out, const int* tokens, const real* wte, int N, int C) {
    for (int n = 0; n < N; n++) { memcpy(out + (size_t)n * C, wte + (size_t)tokens[n] * C, C * sizeof(real)); }
}
static void encoder_backward(real* dwte, const real* dout, const int* tokens, int N, int C) {
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < C; i++) { dwte[(size_t)tokens[n] * C + i] += dout[(size_t)n * C + i]; }
    }
}

// y = x / rms(x) * w over rows of C; rstd = 1/sqrt(mean(x^2) + eps)  (N,C) -> (N,C), (N)
static void rmsnorm_forward(real* out, real* rstd, const real* inp, const real* w, int N, int C) {
    for (int n = 0; n < N; n++) {
        const real* x = inp + (size_t)n * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) { ss += (double)x[i] * x[i]; }
        double r = 1.0 / sqrt(ss / C + NORM_EPS);
        for (int i = 0; i < C; i++) { out[(size_t)n * C + i] = (real)(x[i] * r * w[i]); }
        rstd[n] = (real)r;
    }
}
// dx = r (g - x r^2 mean(g x)),  g = dy w;  dw += dy x r
static void rmsnorm_backward(real* dinp, real* dw, const real* dout, const real* inp, const real* w,
                             const real* rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const real* x = inp + (size_t)n * C;
        const real* dy = dout + (size_t)n * C;
        double r = rstd[n], gx = 0.0;
        for (int i = 0; i < C; i++) { gx += (double)dy[i] * w[i] * x[i]; }
        gx /= C;
        for (int i = 0; i < C; i++) {
            dinp[(size_t)n * C + i] += (real)(r * (dy[i] * w[i] - x[i] * r * r * gx));
            dw[i] += (real)(dy[i] * x[i] * r);
        }
    }
}

// out (N,OC) = inp (N,IC) · w (OC,IC)ᵀ
static void matmul_forward(real* out, const real* inp, const real* w, int N, int IC, int OC) {
    #pragma omp parallel for collapse(2)
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < OC; o++) {
            const real* x = inp + (size_t)n * IC;
            const real* wr = w + (size_t)o * IC;
            real acc = 0;
            for (int i = 0; i < IC; i++) { acc += x[i] * wr[i]; }
            out[(size_t)n * OC + o] = acc;
        }
    }
}
// dinp += dout · w;  dw += doutᵀ · inp
static void matmul_backward(real* dinp, real* dw, const real* dout, const real* inp, const real* w,
                            int N, int IC, int OC) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < OC; o++) {
            real d = dout[(size_t)n * OC + o];
            for (int i = 0; i < IC; i++) { dinp[(size_t)n * IC + i] += d * w[(size_t)o * IC + i]; }
        }
    }
    #pragma omp parallel for
    for (int o = 0; o < OC; o++) {
        for (int n = 0; n < N; n++) {
            real d = dout[(size_t)n * OC + o];
            for (int i = 0; i < IC; i++) { dw[(size_t)o * IC + i] += d * inp[(size_t)n * IC + i]; }
        }
    }
}

// x += y
static void residual_add(real* x, const real* y, size_t n) {
    for (size_t i = 0; i < n; i++) { x[i] += y[i]; }
}

// RoPE, rotate-half: pairs (i, i+D/2) of a head turn by angle t·θ^(-2i/D).
// Applied to q and k of qkv (N, 3C); v and (NoPE) q,k are copied.
static void rope_angle(double* c, double* s, int t, int i, int D, double theta) {
    double a = t * pow(theta, -2.0 * i / D);
    *c = cos(a);
    *s = sin(a);
}
static void rope_forward(real* out, const real* qkv, int B, int T, int C, int H, int rope, double theta) {
    int D = C / H;
    memcpy(out, qkv, (size_t)B * T * 3 * C * sizeof(real));
    if (!rope) { return; }
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int qk = 0; qk < 2; qk++) {
                for (int h = 0; h < H; h++) {
                    size_t base = ((size_t)b * T + t) * 3 * C + (size_t)qk * C + (size_t)h * D;
                    for (int i = 0; i < D / 2; i++) {
                        double c, s;
                        rope_angle(&c, &s, t, i, D, theta);
                        double x1 = qkv[base + i], x2 = qkv[base + i + D / 2];
                        out[base + i] = (real)(x1 * c - x2 * s);
                        out[base + i + D / 2] = (real)(x2 * c + x1 * s);
                    }
                }
            }
        }
    }
}
// the transpose rotation: angle -a
static void rope_backward(real* dqkv, const real* dout, int B, int T, int C, int H, int rope, double theta) {
    int D = C / H;
    for (size_t n = 0; n < (size_t)B * T; n++) {
        int t = (int)(n % T);
        for (int j = 0; j < 3 * C; j++) {
            size_t idx = n * 3 * C + j;
            int in_qk = j < 2 * C, i = j % D;
            if (!rope || !in_qk) { dqkv[idx] += dout[idx]; continue; }
            double c, s;
            if (i < D / 2) {
                rope_angle(&c, &s, t, i, D, theta);
                dqkv[idx] += (real)(dout[idx] * c + dout[idx + D / 2] * s);
            } else {
                rope_angle(&c, &s, t, i - D / 2, D, theta);
                dqkv[idx] += (real)(dout[idx] * c - dout[idx - D / 2] * s);
            }
        }
    }
}

// Causal softmax attention over qkvr (B,T,3C) -> out (B,T,C), lse (B,T,H).
// Query t sees keys j with t-W < j <= t; window <= 0 means all j <= t (full attention).
static int attn_first_key(int t, int window) { return (window <= 0 || t - window + 1 < 0) ? 0 : t - window + 1; }

static void attention_forward(real* out, real* lse, const real* qkvr, int B, int T, int C, int H, int window) {
    int D = C / H;
    double scale = 1.0 / sqrt((double)D);
    #pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < H; h++) {
                const real* q = qkvr + ((size_t)b * T + t) * 3 * C + (size_t)h * D;
                real* o = out + ((size_t)b * T + t) * C + (size_t)h * D;
                int j0 = attn_first_key(t, window);
                double m = -DBL_MAX, sum = 0.0;
                for (int j = j0; j <= t; j++) {  // pass 1: max score
                    const real* k = qkvr + ((size_t)b * T + j) * 3 * C + C + (size_t)h * D;
                    double s = 0.0;
                    for (int i = 0; i < D; i++) { s += (double)q[i] * k[i]; }
                    if (s * scale > m) { m = s * scale; }
                }
                double acc[512] = {0};  // D <= 512
                for (int j = j0; j <= t; j++) {  // pass 2: exp and weighted sum of values
                    const real* k = qkvr + ((size_t)b * T + j) * 3 * C + C + (size_t)h * D;
                    const real* v = qkvr + ((size_t)b * T + j) * 3 * C + 2 * C + (size_t)h * D;
                    double s = 0.0;
                    for (int i = 0; i < D; i++) { s += (double)q[i] * k[i]; }
                    double p = exp(s * scale - m);
                    sum += p;
                    for (int i = 0; i < D; i++) { acc[i] += p * v[i]; }
                }
                for (int i = 0; i < D; i++) { o[i] = (real)(acc[i] / sum); }
                lse[((size_t)b * T + t) * H + h] = (real)(m + log(sum));
            }
        }
    }
}
// p_j = exp(s_j - lse); dv_j += p_j do; ds_j = p_j (do·v_j - do·o); dq += ds_j k_j s; dk_j += ds_j q s
static void attention_backward(real* dqkvr, const real* dout, const real* out, const real* lse, const real* qkvr,
                               int B, int T, int C, int H, int window) {
    int D = C / H;
    double scale = 1.0 / sqrt((double)D);
    // parallel over (b,h): every write of one (b,h) stays in that head's slice
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++) {
                size_t rowq = ((size_t)b * T + t) * 3 * C + (size_t)h * D;
                const real* q = qkvr + rowq;
                const real* dout_t = dout + ((size_t)b * T + t) * C + (size_t)h * D;
                const real* o = out + ((size_t)b * T + t) * C + (size_t)h * D;
                double L = lse[((size_t)b * T + t) * H + h], delta = 0.0;
                for (int i = 0; i < D; i++) { delta += (double)dout_t[i] * o[i]; }
                for (int j = attn_first_key(t, window); j <= t; j++) {
                    size_t rowk = ((size_t)b * T + j) * 3 * C + C + (size_t)h * D;
                    const real* k = qkvr + rowk;
                    const real* v = qkvr + rowk + C;
                    double s = 0.0, dp = 0.0;
                    for (int i = 0; i < D; i++) { s += (double)q[i] * k[i]; dp += (double)dout_t[i] * v[i]; }
                    double p = exp(s * scale - L);
                    double ds = p * (dp - delta) * scale;
                    for (int i = 0; i < D; i++) {
                        dqkvr[rowq + i] += (real)(ds * k[i]);
                        dqkvr[rowk + i] += (real)(ds * q[i]);
                        dqkvr[rowk + C + i] += (real)(p * dout_t[i]);
                    }
                }
            }
        }
    }
}

// silu(x) = x sigmoid(x)
static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static double silu_grad(double x) { double s = sigmoid(x); return s * (1.0 + x * (1.0 - s)); }

static void silu_forward(real* out, const real* inp, size_t n) {
    for (size_t i = 0; i < n; i++) { out[i] = (real)(inp[i] * sigmoid(inp[i])); }
}
static void silu_backward(real* dinp, const real* dout, const real* inp, size_t n) {
    for (size_t i = 0; i < n; i++) { dinp[i] += (real)(dout[i] * silu_grad(inp[i])); }
}

// out = silu(a) * b  (SwiGLU's product; also the R mixer's output gate silu(g) * on)
static void swiglu_forward(real* out, const real* a, const real* b, size_t n) {
    for (size_t i = 0; i < n; i++) { out[i] = (real)(a[i] * sigmoid(a[i]) * b[i]); }
}
static void swiglu_backward(real* da, real* db, const real* dout, const real* a, const real* b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        da[i] += (real)(dout[i] * b[i] * silu_grad(a[i]));
        db[i] += (real)(dout[i] * a[i] * sigmoid(a[i]));
    }
}

// Causal depthwise conv over time, kernel CONV_K: out[t,c] = sum_k w[c,k] inp[t-(K-1)+k, c] (zero before 0)
static void conv_forward(real* out, const real* inp, const real* w, int B, int T, int CH) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int c = 0; c < CH; c++) {
                double acc = 0.0;
                for (int k = 0; k < CONV_K; k++) {
                    int ts = t - (CONV_K - 1) + k;
                    if (ts >= 0) { acc += (double)w[c * CONV_K + k] * inp[((size_t)b * T + ts) * CH + c]; }
                }
                out[((size_t)b * T + t) * CH + c] = (real)acc;
            }
        }
    }
}
static void conv_backward(real* dinp, real* dw, const real* dout, const real* inp, const real* w, int B, int T, int CH) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int c = 0; c < CH; c++) {
                real d = dout[((size_t)b * T + t) * CH + c];
                for (int k = 0; k < CONV_K; k++) {
                    int ts = t - (CONV_K - 1) + k;
                    if (ts < 0) { continue; }
                    dw[c * CONV_K + k] += d * inp[((size_t)b * T + ts) * CH + c];
                    dinp[((size_t)b * T + ts) * CH + c] += d * w[c * CONV_K + k];
                }
            }
        }
    }
}

// Per-head L2 normalisation times a scale: y = scale x / sqrt(|x|^2 + eps).
// inp rows have stride in_stride (q or k inside qkva (N,3C)); out is (N, C).
static void l2norm_forward(real* out, const real* inp, int in_stride, int N, int C, int H, double scale) {
    int D = C / H;
    for (int n = 0; n < N; n++) {
        for (int h = 0; h < H; h++) {
            const real* x = inp + (size_t)n * in_stride + h * D;
            double ss = 0.0;
            for (int i = 0; i < D; i++) { ss += (double)x[i] * x[i]; }
            double r = scale / sqrt(ss + L2NORM_EPS);
            for (int i = 0; i < D; i++) { out[(size_t)n * C + h * D + i] = (real)(x[i] * r); }
        }
    }
}
// dx = scale (dy - y (y·dy)) / |x|,  y = x/|x|
static void l2norm_backward(real* dinp, const real* dout, const real* inp, int in_stride, int N, int C, int H, double scale) {
    int D = C / H;
    for (int n = 0; n < N; n++) {
        for (int h = 0; h < H; h++) {
            const real* x = inp + (size_t)n * in_stride + h * D;
            const real* dy = dout + (size_t)n * C + h * D;
            double ss = 0.0, ydy = 0.0;
            for (int i = 0; i < D; i++) { ss += (double)x[i] * x[i]; }
            double norm = sqrt(ss + L2NORM_EPS);
            for (int i = 0; i < D; i++) { ydy += x[i] / norm * dy[i]; }
            for (int i = 0; i < D; i++) {
                dinp[(size_t)n * in_stride + h * D + i] += (real)(scale * (dy[i] - x[i] / norm * ydy) / norm);
            }
        }
    }
}

// Gates of the recurrent mixer, per (n, h):
//   beta = sigmoid(bpre)                                        (delta rule only)
//   gate = log alpha = -exp(A_log) softplus(apre + dt_bias)     alpha in (0, 1)
static double softplus(double x) { return (x > 0 ? x : 0) + log1p(exp(-fabs(x))); }

static void gates_forward(real* beta, real* gate, const real* bpre, const real* apre, const real* A_log,
                          const real* dt_bias, int N, int H, int mixer) {
    for (int n = 0; n < N; n++) {
        for (int h = 0; h < H; h++) {
            size_t i = (size_t)n * H + h;
            if (mixer == MIXER_GDN) { beta[i] = (real)sigmoid(bpre[i]); }
            gate[i] = (real)(-exp(A_log[h]) * softplus(apre[i] + dt_bias[h]));
        }
    }
}
static void gates_backward(real* dbpre, real* dapre, real* dA_log, real* ddt_bias, const real* dbeta, const real* dgate,
                           const real* beta, const real* gate, const real* apre, const real* A_log, const real* dt_bias,
                           int N, int H, int mixer) {
    for (int n = 0; n < N; n++) {
        for (int h = 0; h < H; h++) {
            size_t i = (size_t)n * H + h;
            if (mixer == MIXER_GDN) { dbpre[i] += (real)(dbeta[i] * beta[i] * (1.0 - beta[i])); }
            double dz = dgate[i] * -exp(A_log[h]) * sigmoid(apre[i] + dt_bias[h]);
            dA_log[h] += (real)(dgate[i] * gate[i]);  // d/dA of -exp(A) sp = gate
            dapre[i] += (real)dz;
            ddt_bias[h] += (real)dz;
        }
    }
}

// The recurrence, token by token, per (b, h), state S (D,D) starting at 0, alpha = exp(gate):
//   gdn: S' = alpha S;  u = beta (v - S' k);  S = S' + u kᵀ      (S = alpha S (I - beta k kᵀ) + beta v kᵀ)
//   gla: S  = alpha S + v kᵀ
//   o = S q
// q, k are (B,T,C) normalised; v sits in qkva with row stride vstride. Every S_t is kept for backward.
static void delta_rule_forward(real* o, real* state, const real* q, const real* k, const real* v, int vstride,
                               const real* beta, const real* gate, int B, int T, int C, int H, int mixer) {
    int D = C / H;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++) {
                size_t n = (size_t)b * T + t;
                const real* qt = q + n * C + h * D;
                const real* kt = k + n * C + h * D;
                const real* vt = v + n * vstride + h * D;
                real* S = state + (n * H + h) * D * D;
                const real* Sprev = t > 0 ? state + ((n - 1) * H + h) * D * D : NULL;
                double alpha = exp(gate[n * H + h]);
                for (int i = 0; i < D; i++) {
                    double w = 0.0;  // (S' k)_i
                    for (int j = 0; j < D; j++) {
                        S[i * D + j] = Sprev ? (real)(alpha * Sprev[i * D + j]) : 0;
                        w += (double)S[i * D + j] * kt[j];
                    }
                    double u = mixer == MIXER_GDN ? beta[n * H + h] * (vt[i] - w) : vt[i];
                    for (int j = 0; j < D; j++) { S[i * D + j] += (real)(u * kt[j]); }
                }
                for (int i = 0; i < D; i++) {
                    double acc = 0.0;
                    for (int j = 0; j < D; j++) { acc += (double)S[i * D + j] * qt[j]; }
                    o[n * C + h * D + i] = (real)acc;
                }
            }
        }
    }
}
// Backward in reverse time with the running dS = dL/dS_t:
//   o = S q:          dS += do qᵀ;  dq = Sᵀ do
//   S = S' + u kᵀ:    du = dS k;    dk = dSᵀ u;   dS' = dS
//   gdn, u = beta (v - S' k):  dbeta = du·(v - S'k);  dv = beta du;  dS' -= beta du kᵀ;  dk -= beta S'ᵀ du
//   S' = alpha S_prev: dalpha = <dS', S_prev>;  dS_prev = alpha dS';  dgate = alpha dalpha
static void delta_rule_backward(real* dq, real* dk, real* dv, real* dbeta, real* dgate, const real* dout,
                                const real* state, const real* q, const real* k, const real* v, int vstride,
                                const real* beta, const real* gate, int B, int T, int C, int H, int mixer) {
    int D = C / H;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            double* dS = (double*)calloc_check((size_t)D * D, sizeof(double));
            double* Sp = (double*)malloc_check((size_t)D * D * sizeof(double));  // S' = alpha S_prev
            double* du = (double*)malloc_check((size_t)D * sizeof(double));
            double* u = (double*)malloc_check((size_t)D * sizeof(double));
            for (int t = T - 1; t >= 0; t--) {
                size_t n = (size_t)b * T + t;
                const real* qt = q + n * C + h * D;
                const real* kt = k + n * C + h * D;
                const real* vt = v + n * vstride + h * D;
                const real* dot = dout + n * C + h * D;
                const real* S = state + (n * H + h) * D * D;
                const real* Sprev = t > 0 ? state + ((n - 1) * H + h) * D * D : NULL;
                double alpha = exp(gate[n * H + h]);
                double bt = mixer == MIXER_GDN ? beta[n * H + h] : 1.0;
                for (int i = 0; i < D; i++) {
                    for (int j = 0; j < D; j++) {
                        dS[i * D + j] += (double)dot[i] * qt[j];
                        dq[n * C + h * D + j] += (real)(S[i * D + j] * dot[i]);
                        Sp[i * D + j] = Sprev ? alpha * Sprev[i * D + j] : 0.0;
                    }
                }
                double dbeta_t = 0.0;
                for (int i = 0; i < D; i++) {
                    double w = 0.0, d = 0.0;
                    for (int j = 0; j < D; j++) { w += Sp[i * D + j] * kt[j]; d += dS[i * D + j] * kt[j]; }
                    // gdn: u = beta (v - w), gla: u = v
                    u[i] = mixer == MIXER_GDN ? bt * (vt[i] - w) : vt[i];
                    du[i] = d;
                    if (mixer == MIXER_GDN) { dbeta_t += d * (vt[i] - w); }
                    dv[n * vstride + h * D + i] += (real)(bt * d);
                }
                for (int j = 0; j < D; j++) {
                    double acc = 0.0;
                    for (int i = 0; i < D; i++) {
                        acc += dS[i * D + j] * u[i];
                        if (mixer == MIXER_GDN) { acc -= bt * Sp[i * D + j] * du[i]; }
                    }
                    dk[n * C + h * D + j] += (real)acc;
                }
                if (mixer == MIXER_GDN) {
                    dbeta[n * H + h] += (real)dbeta_t;
                    for (int i = 0; i < D; i++) {
                        for (int j = 0; j < D; j++) { dS[i * D + j] -= bt * du[i] * kt[j]; }
                    }
                }
                double dalpha = 0.0;  // dS now holds dL/dS'
                for (int i = 0; i < D * D; i++) {
                    if (Sprev) { dalpha += dS[i] * Sprev[i]; }
                    dS[i] *= alpha;
                }
                dgate[n * H + h] += (real)(dalpha * alpha);
            }
            free(dS); free(Sp); free(du); free(u);
        }
    }
}

// Cross-entropy over the V real logits of each row (Vp padded columns are ignored).
// targets < 0 are masked: loss 0, no gradient. dloss is dL/d(per-token loss), the same for every row.
static void crossentropy_forward(real* losses, real* lse, const real* logits, const int* targets, int N, int V, int Vp) {
    for (int n = 0; n < N; n++) {
        const real* x = logits + (size_t)n * Vp;
        double m = -DBL_MAX, sum = 0.0;
        for (int v = 0; v < V; v++) { if (x[v] > m) { m = x[v]; } }
        for (int v = 0; v < V; v++) { sum += exp(x[v] - m); }
        lse[n] = (real)(m + log(sum));
        losses[n] = targets[n] < 0 ? 0 : (real)(m + log(sum) - x[targets[n]]);
    }
}
static void crossentropy_backward(real* dlogits, const real* logits, const real* lse, const int* targets,
                                  double dloss, int N, int V, int Vp) {
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) { continue; }
        for (int v = 0; v < V; v++) {
            double p = exp(logits[(size_t)n * Vp + v] - lse[n]);
            dlogits[(size_t)n * Vp + v] += (real)(dloss * (p - (v == targets[n])));
        }
    }
}

// ----------------------------------------------------------------------------
// The model

typedef struct {
    Config cfg;
    Layout pl;        // parameters; grads, m, v share it
    real* params;     // (pl.total)
    real* grads;
    float* m;         // AdamW first moment, fp32 like the GPU trainer's
    float* v;         // second moment
    Layout al;        // activations for the current (B,T); dacts shares it
    real* acts;
    real* dacts;
    int B, T;         // batch shape the activations were sized for (0 until the first forward)
    const int* inputs;  // (B,T) of the last forward
    const int* targets; // (B,T) of the last forward, NULL if it had none
    double mean_loss;   // of the last forward; -1 when it had no targets
} Model;

static real* param(const Model* m, int l, int k) { return m->params + m->pl.layer_off[l][k]; }
static real* grad(const Model* m, int l, int k) { return m->grads + m->pl.layer_off[l][k]; }
static real* act(const Model* m, int l, int k) { return m->acts + m->al.layer_off[l][k]; }
static real* dact(const Model* m, int l, int k) { return m->dacts + m->al.layer_off[l][k]; }
static real* gparam(const Model* m, int k) { return m->params + m->pl.global_off[k]; }
static real* ggrad(const Model* m, int k) { return m->grads + m->pl.global_off[k]; }
static real* gact(const Model* m, int k) { return m->acts + m->al.global_off[k]; }
static real* gdact(const Model* m, int k) { return m->dacts + m->al.global_off[k]; }

// Draws every parameter of layout pl from rng in layout order (DESIGN.md §1 init). Padded wte rows
// stay 0. The GPU trainer fills its host copy with this too, so a seed gives both the same model.
static void params_init(real* params, const Layout* pl, const Config* c, uint64_t seed) {
    Rng rng;
    rng_init(&rng, seed);
    double out_std = 0.02 / sqrt(2.0 * c->n_layer);
    for (int s = 0; s < pl->n; s++) {
        const TensorSpec* sp = &pl->spec[s];
        real* p = params + sp->offset;
        for (size_t i = 0; i < sp->numel; i++) {
            double x = 0.0;
            switch (sp->kind->init) {
                case INIT_ONES: x = 1.0; break;
                case INIT_NORMAL: x = 0.02 * rng_normal(&rng); break;
                case INIT_NORMAL_OUT: x = out_std * rng_normal(&rng); break;
                case INIT_CONV: x = (2.0 * rng_uniform(&rng) - 1.0) / sqrt((double)CONV_K); break;  // like torch Conv1d
                case INIT_ALOG: x = log(1.0 + 15.0 * rng_uniform(&rng)); break;                    // A in U[1,16]
                case INIT_DTBIAS: {  // dt log-uniform in [1e-3, 1e-1], dt_bias = softplus⁻¹(dt)
                    double dt = exp(log(1e-3) + rng_uniform(&rng) * (log(1e-1) - log(1e-3)));
                    x = dt + log(-expm1(-dt));
                    break;
                }
            }
            p[i] = (real)x;
        }
        if (sp->kind == &PARAM_WTE) {
            memset(p + (size_t)c->vocab * c->n_embd, 0, (size_t)(c->padded_vocab - c->vocab) * c->n_embd * sizeof(real));
        }
    }
}

static void model_build(Model* m, const Config* c, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    m->cfg = *c;
    m->pl = param_layout(c);
    m->params = (real*)malloc_check(m->pl.total * sizeof(real));
    m->grads = (real*)calloc_check(m->pl.total, sizeof(real));
    m->m = (float*)calloc_check(m->pl.total, sizeof(float));
    m->v = (float*)calloc_check(m->pl.total, sizeof(float));
    m->mean_loss = -1.0;
    params_init(m->params, &m->pl, c, seed);
}

static void model_free(Model* m) {
    free(m->params); free(m->grads); free(m->m); free(m->v); free(m->acts); free(m->dacts);
}

// (Re)sizes the activations for a (B,T) batch; done by the first forward and whenever B or T change.
static void model_size_acts(Model* m, int B, int T) {
    if (m->B == B && m->T == T) { return; }
    free(m->acts);
    free(m->dacts);
    m->al = act_layout(&m->cfg, B, T, 1, 1, 1);
    m->acts = (real*)calloc_check(m->al.total, sizeof(real));
    m->dacts = (real*)calloc_check(m->al.total, sizeof(real));
    m->B = B;
    m->T = T;
}

static int layer_pos(const Config* c, int l) { return c->pattern[l] == 'F' ? c->pos_full : c->pos_swa; }

// Attention mixer (F or S): ln1 -> qkv -> rope -> attention -> atty
static void attn_mixer_forward(Model* m, int l) {
    const Config* c = &m->cfg;
    int B = m->B, T = m->T, C = c->n_embd, H = c->n_head, N = B * T;
    int window = c->pattern[l] == 'S' ? c->window : 0;
    matmul_forward(act(m, l, A_QKV), act(m, l, A_LN1), param(m, l, P_WQKV), N, C, 3 * C);
    rope_forward(act(m, l, A_QKVR), act(m, l, A_QKV), B, T, C, H, layer_pos(c, l) == POS_ROPE, c->rope_theta);
    attention_forward(act(m, l, A_ATTY), act(m, l, A_LSE), act(m, l, A_QKVR), B, T, C, H, window);
}
static void attn_mixer_backward(Model* m, int l) {
    const Config* c = &m->cfg;
    int B = m->B, T = m->T, C = c->n_embd, H = c->n_head, N = B * T;
    int window = c->pattern[l] == 'S' ? c->window : 0;
    attention_backward(dact(m, l, A_QKVR), dact(m, l, A_ATTY), act(m, l, A_ATTY), act(m, l, A_LSE), act(m, l, A_QKVR),
                       B, T, C, H, window);
    rope_backward(dact(m, l, A_QKV), dact(m, l, A_QKVR), B, T, C, H, layer_pos(c, l) == POS_ROPE, c->rope_theta);
    matmul_backward(dact(m, l, A_LN1), grad(m, l, P_WQKV), dact(m, l, A_QKV), act(m, l, A_LN1), param(m, l, P_WQKV), N, C, 3 * C);
}

// Recurrent mixer (R): ln1 -> qkv, g, beta, a -> conv+silu -> L2 norms, gates -> recurrence
//                      -> per-head RMSNorm -> silu(g) gate -> atty
static void rec_mixer_forward(Model* m, int l) {
    const Config* c = &m->cfg;
    int B = m->B, T = m->T, C = c->n_embd, H = c->n_head, D = C / H, N = B * T, gdn = c->mixer == MIXER_GDN;
    const real* ln1 = act(m, l, A_LN1);
    matmul_forward(act(m, l, A_QKV), ln1, param(m, l, P_WQKV), N, C, 3 * C);
    matmul_forward(act(m, l, A_GPRE), ln1, param(m, l, P_WG), N, C, C);
    if (gdn) { matmul_forward(act(m, l, A_BPRE), ln1, param(m, l, P_WBETA), N, C, H); }
    matmul_forward(act(m, l, A_APRE), ln1, param(m, l, P_WA), N, C, H);
    conv_forward(act(m, l, A_CONV), act(m, l, A_QKV), param(m, l, P_CONV), B, T, 3 * C);
    silu_forward(act(m, l, A_QKVA), act(m, l, A_CONV), (size_t)N * 3 * C);
    l2norm_forward(act(m, l, A_QN), act(m, l, A_QKVA), 3 * C, N, C, H, 1.0 / sqrt((double)D));
    l2norm_forward(act(m, l, A_KN), act(m, l, A_QKVA) + C, 3 * C, N, C, H, 1.0);
    gates_forward(gdn ? act(m, l, A_BETA) : NULL, act(m, l, A_GATE), gdn ? act(m, l, A_BPRE) : NULL, act(m, l, A_APRE),
                  param(m, l, P_ALOG), param(m, l, P_DTBIAS), N, H, c->mixer);
    delta_rule_forward(act(m, l, A_O), act(m, l, A_STATE), act(m, l, A_QN), act(m, l, A_KN), act(m, l, A_QKVA) + 2 * C, 3 * C,
                       gdn ? act(m, l, A_BETA) : NULL, act(m, l, A_GATE), B, T, C, H, c->mixer);
    rmsnorm_forward(act(m, l, A_ON), act(m, l, A_ORSTD), act(m, l, A_O), param(m, l, P_ONORM), N * H, D);
    swiglu_forward(act(m, l, A_ATTY), act(m, l, A_GPRE), act(m, l, A_ON), (size_t)N * C);
}
static void rec_mixer_backward(Model* m, int l) {
    const Config* c = &m->cfg;
    int B = m->B, T = m->T, C = c->n_embd, H = c->n_head, D = C / H, N = B * T, gdn = c->mixer == MIXER_GDN;
    const real* ln1 = act(m, l, A_LN1);
    swiglu_backward(dact(m, l, A_GPRE), dact(m, l, A_ON), dact(m, l, A_ATTY), act(m, l, A_GPRE), act(m, l, A_ON), (size_t)N * C);
    rmsnorm_backward(dact(m, l, A_O), grad(m, l, P_ONORM), dact(m, l, A_ON), act(m, l, A_O), param(m, l, P_ONORM),
                     act(m, l, A_ORSTD), N * H, D);
    delta_rule_backward(dact(m, l, A_QN), dact(m, l, A_KN), dact(m, l, A_QKVA) + 2 * C, gdn ? dact(m, l, A_BETA) : NULL,
                        dact(m, l, A_GATE), dact(m, l, A_O), act(m, l, A_STATE), act(m, l, A_QN), act(m, l, A_KN),
                        act(m, l, A_QKVA) + 2 * C, 3 * C, gdn ? act(m, l, A_BETA) : NULL, act(m, l, A_GATE), B, T, C, H, c->mixer);
    gates_backward(gdn ? dact(m, l, A_BPRE) : NULL, dact(m, l, A_APRE), grad(m, l, P_ALOG), grad(m, l, P_DTBIAS),
                   gdn ? dact(m, l, A_BETA) : NULL, dact(m, l, A_GATE), gdn ? act(m, l, A_BETA) : NULL, act(m, l, A_GATE),
                   act(m, l, A_APRE), param(m, l, P_ALOG), param(m, l, P_DTBIAS), N, H, c->mixer);
    l2norm_backward(dact(m, l, A_QKVA), dact(m, l, A_QN), act(m, l, A_QKVA), 3 * C, N, C, H, 1.0 / sqrt((double)D));
    l2norm_backward(dact(m, l, A_QKVA) + C, dact(m, l, A_KN), act(m, l, A_QKVA) + C, 3 * C, N, C, H, 1.0);
    silu_backward(dact(m, l, A_CONV), dact(m, l, A_QKVA), act(m, l, A_CONV), (size_t)N * 3 * C);
    conv_backward(dact(m, l, A_QKV), grad(m, l, P_CONV), dact(m, l, A_CONV), act(m, l, A_QKV), param(m, l, P_CONV), B, T, 3 * C);
    matmul_backward(dact(m, l, A_LN1), grad(m, l, P_WA), dact(m, l, A_APRE), ln1, param(m, l, P_WA), N, C, H);
    if (gdn) { matmul_backward(dact(m, l, A_LN1), grad(m, l, P_WBETA), dact(m, l, A_BPRE), ln1, param(m, l, P_WBETA), N, C, H); }
    matmul_backward(dact(m, l, A_LN1), grad(m, l, P_WG), dact(m, l, A_GPRE), ln1, param(m, l, P_WG), N, C, C);
    matmul_backward(dact(m, l, A_LN1), grad(m, l, P_WQKV), dact(m, l, A_QKV), ln1, param(m, l, P_WQKV), N, C, 3 * C);
}

// Forward over inputs (B,T). With targets (B,T) (entries < 0 masked) it also computes the loss;
// returns the mean over unmasked targets, or -1 without targets. Logits are in gact(m, G_LOGITS).
static double model_forward(Model* m, const int* inputs, const int* targets, int B, int T) {
    const Config* c = &m->cfg;
    int C = c->n_embd, F = c->ffn, L = c->n_layer, N = B * T;
    for (int n = 0; n < N; n++) {
        if (inputs[n] < 0 || inputs[n] >= c->vocab) { die("model_forward: input token %d at %d outside the vocabulary [0, %d)", inputs[n], n, c->vocab); }
        if (targets && targets[n] >= c->vocab) { die("model_forward: target token %d at %d outside the vocabulary [0, %d)", targets[n], n, c->vocab); }
    }
    model_size_acts(m, B, T);
    m->inputs = inputs;
    m->targets = targets;
    encoder_forward(act(m, 0, A_RESID), inputs, gparam(m, PG_WTE), N, C);
    for (int l = 0; l < L; l++) {
        real* out = l + 1 < L ? act(m, l + 1, A_RESID) : gact(m, G_RESID);  // next block's input
        rmsnorm_forward(act(m, l, A_LN1), act(m, l, A_RSTD1), act(m, l, A_RESID), param(m, l, P_LN1), N, C);
        if (c->pattern[l] == 'R') { rec_mixer_forward(m, l); } else { attn_mixer_forward(m, l); }
        matmul_forward(act(m, l, A_RESID2), act(m, l, A_ATTY), param(m, l, P_WO), N, C, C);
        residual_add(act(m, l, A_RESID2), act(m, l, A_RESID), (size_t)N * C);
        rmsnorm_forward(act(m, l, A_LN2), act(m, l, A_RSTD2), act(m, l, A_RESID2), param(m, l, P_LN2), N, C);
        matmul_forward(act(m, l, A_H1), act(m, l, A_LN2), param(m, l, P_W1), N, C, F);
        matmul_forward(act(m, l, A_H3), act(m, l, A_LN2), param(m, l, P_W3), N, C, F);
        swiglu_forward(act(m, l, A_HMID), act(m, l, A_H1), act(m, l, A_H3), (size_t)N * F);
        matmul_forward(out, act(m, l, A_HMID), param(m, l, P_W2), N, F, C);
        residual_add(out, act(m, l, A_RESID2), (size_t)N * C);
    }
    rmsnorm_forward(gact(m, G_LNF), gact(m, G_RSTDF), gact(m, G_RESID), gparam(m, PG_LNF), N, C);
    matmul_forward(gact(m, G_LOGITS), gact(m, G_LNF), gparam(m, PG_WTE), N, C, c->padded_vocab);
    m->mean_loss = -1.0;
    if (targets) {
        crossentropy_forward(gact(m, G_LOSSES), gact(m, G_LSE), gact(m, G_LOGITS), targets, N, c->vocab, c->padded_vocab);
        double sum = 0.0;
        int valid = 0;
        for (int n = 0; n < N; n++) { if (targets[n] >= 0) { sum += gact(m, G_LOSSES)[n]; valid++; } }
        m->mean_loss = valid > 0 ? sum / valid : 0.0;
    }
    return m->mean_loss;
}

// Clears the parameter gradients (call once per optimizer step, before the micro-batches).
static void model_zero_grad(Model* m) { memset(m->grads, 0, m->pl.total * sizeof(real)); }

// Adds the gradient of loss_scale * mean_loss of the last forward into m->grads.
// With gradient accumulation over k micro-batches, loss_scale = 1/k.
static void model_backward(Model* m, double loss_scale) {
    const Config* c = &m->cfg;
    int B = m->B, T = m->T, C = c->n_embd, F = c->ffn, L = c->n_layer, N = B * T;
    if (m->mean_loss < 0 || m->targets == NULL) { die("model_backward: the last forward had no targets"); }
    int valid = 0;
    for (int n = 0; n < N; n++) { valid += m->targets[n] >= 0; }
    if (valid == 0) { return; }
    memset(m->dacts, 0, m->al.total * sizeof(real));
    crossentropy_backward(gdact(m, G_LOGITS), gact(m, G_LOGITS), gact(m, G_LSE), m->targets, loss_scale / valid,
                          N, c->vocab, c->padded_vocab);
    matmul_backward(gdact(m, G_LNF), ggrad(m, PG_WTE), gdact(m, G_LOGITS), gact(m, G_LNF), gparam(m, PG_WTE), N, C, c->padded_vocab);
    rmsnorm_backward(gdact(m, G_RESID), ggrad(m, PG_LNF), gdact(m, G_LNF), gact(m, G_RESID), gparam(m, PG_LNF), gact(m, G_RSTDF), N, C);
    for (int l = L - 1; l >= 0; l--) {
        real* dout = l + 1 < L ? dact(m, l + 1, A_RESID) : gdact(m, G_RESID);
        matmul_backward(dact(m, l, A_HMID), grad(m, l, P_W2), dout, act(m, l, A_HMID), param(m, l, P_W2), N, F, C);
        swiglu_backward(dact(m, l, A_H1), dact(m, l, A_H3), dact(m, l, A_HMID), act(m, l, A_H1), act(m, l, A_H3), (size_t)N * F);
        matmul_backward(dact(m, l, A_LN2), grad(m, l, P_W3), dact(m, l, A_H3), act(m, l, A_LN2), param(m, l, P_W3), N, C, F);
        matmul_backward(dact(m, l, A_LN2), grad(m, l, P_W1), dact(m, l, A_H1), act(m, l, A_LN2), param(m, l, P_W1), N, C, F);
        rmsnorm_backward(dact(m, l, A_RESID2), grad(m, l, P_LN2), dact(m, l, A_LN2), act(m, l, A_RESID2), param(m, l, P_LN2),
                         act(m, l, A_RSTD2), N, C);
        residual_add(dact(m, l, A_RESID2), dout, (size_t)N * C);
        matmul_backward(dact(m, l, A_ATTY), grad(m, l, P_WO), dact(m, l, A_RESID2), act(m, l, A_ATTY), param(m, l, P_WO), N, C, C);
        if (c->pattern[l] == 'R') { rec_mixer_backward(m, l); } else { attn_mixer_backward(m, l); }
        rmsnorm_backward(dact(m, l, A_RESID), grad(m, l, P_LN1), dact(m, l, A_LN1), act(m, l, A_RESID), param(m, l, P_LN1),
                         act(m, l, A_RSTD1), N, C);
        residual_add(dact(m, l, A_RESID), dact(m, l, A_RESID2), (size_t)N * C);
    }
    encoder_backward(ggrad(m, PG_WTE), dact(m, 0, A_RESID), m->inputs, N, C);
}

// ----------------------------------------------------------------------------
// Optimizer: AdamW with weight decay only on the tensors whose table row says so, global-norm
// clipping, and the LR schedule.

enum { SCHED_COSINE, SCHED_WSD };

typedef struct {
    double lr;          // peak learning rate
    double min_lr_frac; // final lr = lr * min_lr_frac
    int warmup;         // linear warmup steps (-1 on the command line: 5% of steps)
    int steps;          // total steps
    int schedule;       // SCHED_COSINE or SCHED_WSD
    double decay_frac;  // WSD: fraction of steps in the final linear decay
    double beta1, beta2, eps, weight_decay, grad_clip;
} OptConfig;

static OptConfig opt_config_default(int steps) {
    OptConfig o = {1e-3, 0.1, -1, steps, SCHED_COSINE, 0.2, 0.9, 0.95, 1e-8, 0.1, 1.0};
    return o;
}

// lr at step (0-based): warmup (step+1)/warmup, then cosine to lr*min_lr_frac, or WSD:
// constant until the last decay_frac of the run, then linear to lr*min_lr_frac.
static double lr_at(const OptConfig* o, int step) {
    double lo = o->lr * o->min_lr_frac;
    if (step < o->warmup) { return o->lr * (step + 1) / o->warmup; }
    if (step >= o->steps) { return lo; }
    if (o->schedule == SCHED_COSINE) {
        double progress = (double)(step - o->warmup) / (o->steps - o->warmup);
        return lo + 0.5 * (1.0 + cos(M_PI * progress)) * (o->lr - lo);
    }
    int decay_start = o->steps - (int)(o->decay_frac * o->steps);
    if (decay_start < o->warmup) { decay_start = o->warmup; }
    if (step < decay_start) { return o->lr; }
    double progress = (double)(step - decay_start) / (o->steps - decay_start);
    return o->lr + progress * (lo - o->lr);
}

static double model_grad_norm(const Model* m) {
    double ss = 0.0;
    for (size_t i = 0; i < m->pl.total; i++) { ss += (double)m->grads[i] * m->grads[i]; }
    return sqrt(ss);
}

// One AdamW step t (1-based) at learning rate lr; gradients are scaled by min(1, clip/grad_norm).
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m̂ / (sqrt(v̂) + eps) + wd p)   (decoupled decay)
static void model_update(Model* m, const OptConfig* o, double lr, int t, double grad_norm) {
    double scale = (o->grad_clip > 0 && grad_norm > o->grad_clip) ? o->grad_clip / grad_norm : 1.0;
    double c1 = 1.0 - pow(o->beta1, t), c2 = 1.0 - pow(o->beta2, t);
    for (int s = 0; s < m->pl.n; s++) {
        const TensorSpec* sp = &m->pl.spec[s];
        double wd = sp->kind->decay ? o->weight_decay : 0.0;
        for (size_t i = sp->offset; i < sp->offset + sp->numel; i++) {
            double g = m->grads[i] * scale;
            double mi = o->beta1 * m->m[i] + (1.0 - o->beta1) * g;
            double vi = o->beta2 * m->v[i] + (1.0 - o->beta2) * g * g;
            m->m[i] = (float)mi;
            m->v[i] = (float)vi;
            m->params[i] -= (real)(lr * ((mi / c1) / (sqrt(vi / c2) + o->eps) + wd * m->params[i]));
        }
    }
}

// ----------------------------------------------------------------------------
// Needle evaluation (DESIGN.md §4), shared by the trainer, eval_needle.c and the tests.
//   accuracy: a sample is right when every answer token is the argmax of the logits that predict it
//             under teacher forcing (= greedy exact match); token accuracy counts answer tokens.
//   retrieval score of head h of attention layer l: over the answer tokens of the samples of length
//             retrieval_len, the fraction at which the head's attention argmax, at the query that
//             predicts the answer token, is the needle's value token being copied (Wu et al. 2024).
//   attention mass: the mean softmax weight the head puts on the needle (marker, key, value) there.

typedef struct {
    int L, H;
    double* acc;      // (grid lengths, grid depths) exact-match fraction
    double* tok_acc;  // (grid lengths, grid depths) answer-token accuracy
    double* score;    // (L, H) retrieval score; -1 for R layers
    double* mass;     // (L, H) attention mass on the needle; -1 for R layers
    int n_answer;     // answer tokens behind score and mass
} NeedleResult;

static void needle_result_init(NeedleResult* r, const NeedleGrid* g, const Config* c) {
    r->L = c->n_layer;
    r->H = c->n_head;
    r->acc = (double*)calloc_check((size_t)g->n_lengths * g->n_depths, sizeof(double));
    r->tok_acc = (double*)calloc_check((size_t)g->n_lengths * g->n_depths, sizeof(double));
    r->score = (double*)calloc_check((size_t)r->L * r->H, sizeof(double));
    r->mass = (double*)calloc_check((size_t)r->L * r->H, sizeof(double));
    r->n_answer = 0;
}

static void needle_result_free(NeedleResult* r) { free(r->acc); free(r->tok_acc); free(r->score); free(r->mass); }

// argmax over the V real columns of one logits row; ties go to the lowest id
static int logits_argmax(const real* row, int V) {
    int best = 0;
    for (int v = 1; v < V; v++) { if (row[v] > row[best]) { best = v; } }
    return best;
}

// Scores grid sample idx from rows (answer_len, Vp): the logits rows that predict its answer tokens.
static void needle_score_answer(NeedleResult* r, const NeedleGrid* g, int idx, const real* rows, int V, int Vp) {
    const NeedleSample* s = &g->meta[idx];
    const int* answer = g->tokens + g->offset[idx] + s->answer_pos;
    int correct = 0;
    for (int j = 0; j < s->answer_len; j++) { correct += logits_argmax(rows + (size_t)j * Vp, V) == answer[j]; }
    int cell = idx / g->samples;  // li * n_depths + di
    r->acc[cell] += (correct == s->answer_len) / (double)g->samples;
    r->tok_acc[cell] += correct / ((double)s->answer_len * g->samples);
}

// For query row t, head h of one sequence's qkvr (T,3C) and lse (T,H): the visible key with the
// highest score q·k (ties: the earliest) and the softmax mass on keys [span0, span1).
static void attention_row_stats(int* argmax, double* mass, const real* qkvr, const real* lse, int T, int C, int H, int window,
                                int t, int h, int span0, int span1) {
    int D = C / H;
    double scale = 1.0 / sqrt((double)D), best = -DBL_MAX, m = 0.0;
    const real* q = qkvr + (size_t)t * 3 * C + (size_t)h * D;
    *argmax = -1;
    for (int j = attn_first_key(t, window); j <= t && j < T; j++) {
        const real* k = qkvr + (size_t)j * 3 * C + C + (size_t)h * D;
        double s = 0.0;
        for (int i = 0; i < D; i++) { s += (double)q[i] * k[i]; }
        if (s > best) { best = s; *argmax = j; }
        if (j >= span0 && j < span1) { m += exp(s * scale - lse[(size_t)t * H + h]); }
    }
    *mass = m;
}

// Turns the summed retrieval hits and masses into means; R layers get -1.
static void needle_result_finish(NeedleResult* r, const Config* c) {
    for (int l = 0; l < r->L; l++) {
        for (int h = 0; h < r->H; h++) {
            double* sc = &r->score[l * r->H + h];
            double* ms = &r->mass[l * r->H + h];
            if (c->pattern[l] == 'R') { *sc = -1; *ms = -1; continue; }
            *sc = r->n_answer > 0 ? *sc / r->n_answer : 0.0;
            *ms = r->n_answer > 0 ? *ms / r->n_answer : 0.0;
        }
    }
}

// The whole grid with the CPU reference, one sample at a time.
static void cpu_needle_eval(Model* m, const NeedleGrid* g, NeedleResult* r) {
    const Config* c = &m->cfg;
    int C = c->n_embd, H = c->n_head, n = g->n_lengths * g->n_depths * g->samples;
    needle_result_init(r, g, c);
    for (int i = 0; i < n; i++) {
        const NeedleSample* s = &g->meta[i];
        int len = g->lengths[i / (g->n_depths * g->samples)];
        model_forward(m, g->tokens + g->offset[i], NULL, 1, len);
        needle_score_answer(r, g, i, gact(m, G_LOGITS) + (size_t)(s->answer_pos - 1) * c->padded_vocab, c->vocab, c->padded_vocab);
        if (len != g->retrieval_len) { continue; }
        for (int l = 0; l < c->n_layer; l++) {
            if (c->pattern[l] == 'R') { continue; }
            int window = c->pattern[l] == 'S' ? c->window : 0;
            for (int j = 0; j < s->answer_len; j++) {
                for (int h = 0; h < H; h++) {
                    int am;
                    double mass;
                    attention_row_stats(&am, &mass, act(m, l, A_QKVR), act(m, l, A_LSE), len, C, H, window, s->answer_pos - 1 + j, h,
                                        s->needle_pos, s->value_pos + s->answer_len);
                    r->score[l * H + h] += am == s->value_pos + j;
                    r->mass[l * H + h] += mass;
                }
            }
        }
        r->n_answer += s->answer_len;
    }
    needle_result_finish(r, c);
}

// The best head among layers of one type ('F' or 'S'); returns its score, -1 if there is no such layer.
static double needle_best_head(const NeedleResult* r, const Config* c, char type, int* layer, int* head) {
    double best = -1;
    for (int l = 0; l < r->L; l++) {
        for (int h = 0; h < r->H; h++) {
            if (c->pattern[l] == type && r->score[l * r->H + h] > best) { best = r->score[l * r->H + h]; *layer = l; *head = h; }
        }
    }
    return best;
}

// One line: exact-match accuracy per length (mean over depths), the best F and S retrieval heads.
static void needle_result_summary(const NeedleResult* r, const NeedleGrid* g, const Config* c, int step, const char* what) {
    printf("step %5d | %s acc", step, what);
    for (int li = 0; li < g->n_lengths; li++) {
        double a = 0.0;
        for (int di = 0; di < g->n_depths; di++) { a += r->acc[li * g->n_depths + di] / g->n_depths; }
        printf(" %d:%.2f", g->lengths[li], a);
    }
    const char* types = "FS";
    for (int k = 0; k < 2; k++) {
        int l = 0, h = 0;
        double best = needle_best_head(r, c, types[k], &l, &h);
        if (best >= 0 && r->n_answer > 0) { printf(" | best %c head l%d.h%d %.2f (mass %.2f)", types[k], l, h, best, r->mass[l * r->H + h]); }
    }
    printf("\n");
}

// The full result as tables: accuracy (length × depth), then retrieval score and mass per head.
static void needle_result_print(const NeedleResult* r, const NeedleGrid* g, const Config* c) {
    printf("exact-match accuracy (rows: length, columns: needle depth), %d samples per cell\n%8s", g->samples, "length");
    for (int di = 0; di < g->n_depths; di++) { printf("  %5.2f", g->depths[di]); }
    printf("   mean\n");
    for (int li = 0; li < g->n_lengths; li++) {
        double mean = 0.0;
        printf("%8d", g->lengths[li]);
        for (int di = 0; di < g->n_depths; di++) {
            printf("  %5.2f", r->acc[li * g->n_depths + di]);
            mean += r->acc[li * g->n_depths + di] / g->n_depths;
        }
        printf("  %5.2f\n", mean);
    }
    printf("retrieval score / attention mass on the needle per head, length %d, %d answer tokens\n", g->retrieval_len, r->n_answer);
    for (int l = 0; l < r->L; l++) {
        if (c->pattern[l] == 'R') { continue; }
        printf("  l%-2d %c", l, c->pattern[l]);
        for (int h = 0; h < r->H; h++) { printf("  h%d %.2f/%.2f", h, r->score[l * r->H + h], r->mass[l * r->H + h]); }
        printf("\n");
    }
}

static void json_array(FILE* f, const double* x, int n) {
    fprintf(f, "[");
    for (int i = 0; i < n; i++) { fprintf(f, i ? ", %.4f" : "%.4f", x[i]); }
    fprintf(f, "]");
}

// One JSON object (no newline): lengths, depths, acc and token_acc (length × depth), the answer
// tokens behind the retrieval scores, and for the attention layers their index, type, retrieval
// score and mass per head.
static void needle_result_json(FILE* f, const NeedleResult* r, const NeedleGrid* g, const Config* c) {
    fprintf(f, "{\"lengths\": [");
    for (int li = 0; li < g->n_lengths; li++) { fprintf(f, li ? ", %d" : "%d", g->lengths[li]); }
    fprintf(f, "], \"depths\": ");
    json_array(f, g->depths, g->n_depths);
    fprintf(f, ", \"samples\": %d, \"acc\": [", g->samples);
    for (int li = 0; li < g->n_lengths; li++) { if (li) { fprintf(f, ", "); } json_array(f, r->acc + li * g->n_depths, g->n_depths); }
    fprintf(f, "], \"token_acc\": [");
    for (int li = 0; li < g->n_lengths; li++) { if (li) { fprintf(f, ", "); } json_array(f, r->tok_acc + li * g->n_depths, g->n_depths); }
    fprintf(f, "], \"retrieval_len\": %d, \"retrieval_tokens\": %d, \"attn_layers\": [", g->retrieval_len, r->n_answer);
    int first = 1;
    for (int l = 0; l < r->L; l++) {
        if (c->pattern[l] == 'R') { continue; }
        fprintf(f, "%s{\"layer\": %d, \"type\": \"%c\", \"score\": ", first ? "" : ", ", l, c->pattern[l]);
        json_array(f, r->score + l * r->H, r->H);
        fprintf(f, ", \"mass\": ");
        json_array(f, r->mass + l * r->H, r->H);
        fprintf(f, "}");
        first = 0;
    }
    fprintf(f, "]}");
}

// ----------------------------------------------------------------------------
// Checkpoints, shared by the trainers and eval_needle.c. One file, version 2:
//   header int32[256]: [0] magic, [1] version, [2..12] the Config (vocab, padded_vocab, L, C, H, ffn,
//                      window, pos_full, pos_swa, mixer, rope_theta), [13] 1 if the optimizer state
//                      follows, [14] optimizer steps taken, [15] parameter count (low 31 bits),
//                      [16] (high bits), [17..24] the RunRecord (T, B, accum, world, seed low and
//                      high 32 bits, data fingerprint low and high), [30..31] checksum (low, high),
//                      bytes 128..191 the layer pattern (NUL-padded)
//   float32 params[n] in param_layout order; then, if [13] = 1, AdamW m[n] and v[n].
// The checksum is hash64 of the header (with [30..31] zero) followed by the payload, verified on
// load: a flipped bit anywhere is refused, a header field that keeps the parameter count (H 1 <-> 4)
// included. Every header field is range-checked on load, and parameters and AdamW state must be
// finite (v >= 0); a state that is not finite is never written.
// Version 1 (no run record, no checksum) is still read, range- and finite-checked; what it cannot
// have (the checksum, and -B, -a, -s, data for a resume) is not checked. It is rewritten as version 2
// at the next save.
// Written to PATH.tmp, flushed to disk, then renamed over PATH, so a crash never leaves a partial file
// under the real name; a save that fails removes PATH.tmp and leaves PATH as it was.

#define CKPT_MAGIC 20260615
#define CKPT_VERSION 2
#define CKPT_HEADER_INTS 256
#define CKPT_PATTERN_BYTE 128
#define CKPT_CHECKSUM_INT 30
#define MAX_WORLD 4096  // data-parallel ranks a checkpoint may record

// What an exact resume must repeat, recorded in the checkpoint: the batch shape, the seed and the data.
typedef struct {
    int T;            // training sequence length (also the needle grid's base length)
    int B, accum;     // micro-batch, micro-batches per step
    int world;        // data-parallel ranks (the data position is step · accum · world batches)
    long seed;
    uint64_t data_id; // data_fingerprint(): files, tokenizer, needle mixture
} RunRecord;

typedef struct {
    Config cfg;
    size_t n_params;
    float* params;   // (n_params)
    float* m;        // (n_params) AdamW moments, NULL if the file has none
    float* v;
    int step;        // optimizer steps taken
    int version;     // 1: run.B, accum, world, seed, data_id not recorded (0); run.T may be 0
    RunRecord run;
} Checkpoint;

// The name of parameter i, "l3.wqkv[17]", for messages.
static void param_name(const Config* c, size_t i, char* out, size_t size) {
    Layout lo = param_layout(c);
    for (int s = 0; s < lo.n; s++) {
        const TensorSpec* t = &lo.spec[s];
        if (i >= t->offset && i < t->offset + t->numel) { snprintf(out, size, "%s[%zu]", t->name, i - t->offset); return; }
    }
    snprintf(out, size, "[%zu]", i);
}

// 0 when params, m and v (m, v may be NULL) are finite and v >= 0; else names the first bad value in why.
static int state_finite(const Config* c, const float* params, const float* m, const float* v, size_t n, char* why, size_t size) {
    const float* arrays[3] = {params, m, v};
    const char* names[3] = {"parameter", "AdamW m of", "AdamW v of"};
    for (int a = 0; a < 3; a++) {
        if (arrays[a] == NULL) { continue; }
        for (size_t i = 0; i < n; i++) {
            float x = arrays[a][i];
            if (isfinite(x) && (a < 2 || x >= 0.0f)) { continue; }
            char name[64];
            param_name(c, i, name, sizeof(name));
            snprintf(why, size, "%s %s is %g%s", names[a], name, x, a == 2 ? " (must be finite and >= 0)" : "");
            return 1;
        }
    }
    return 0;
}

// hash64 of a header (its checksum field taken as zero) and the payload
static uint64_t checkpoint_checksum(const int32_t* h, const float* params, const float* m, const float* v, size_t n) {
    int32_t hz[CKPT_HEADER_INTS];
    memcpy(hz, h, sizeof(hz));
    hz[CKPT_CHECKSUM_INT] = hz[CKPT_CHECKSUM_INT + 1] = 0;
    uint64_t sum = hash64(HASH64_INIT, hz, sizeof(hz));
    sum = hash64(sum, params, n * sizeof(float));
    if (m != NULL) {
        sum = hash64(sum, m, n * sizeof(float));
        sum = hash64(sum, v, n * sizeof(float));
    }
    return sum;
}

static void checkpoint_header(int32_t* h, const Config* c, int has_opt, size_t n, int step, const RunRecord* run) {
    memset(h, 0, CKPT_HEADER_INTS * sizeof(int32_t));
    int32_t fields[] = {CKPT_MAGIC, CKPT_VERSION, c->vocab, c->padded_vocab, c->n_layer, c->n_embd, c->n_head, c->ffn,
                        c->window, c->pos_full, c->pos_swa, c->mixer, (int32_t)c->rope_theta, has_opt, step,
                        (int32_t)(n & 0x7fffffff), (int32_t)(n >> 31), run->T, run->B, run->accum, run->world,
                        (int32_t)(uint32_t)run->seed, (int32_t)((uint64_t)run->seed >> 32),
                        (int32_t)(uint32_t)run->data_id, (int32_t)(run->data_id >> 32)};
    memcpy(h, fields, sizeof(fields));
    memcpy((char*)h + CKPT_PATTERN_BYTE, c->pattern, strlen(c->pattern));
}

// A failed write: the partial temp file goes, the checkpoint under the real name stays as it was.
static void checkpoint_write_failed(FILE* f, const char* tmp, const char* what) {
    int err = errno;
    if (f) { fclose(f); }
    unlink(tmp);
    die("%s: %s failed: %s (the checkpoint under its real name is untouched)", tmp, what, strerror(err));
}

static void checkpoint_write(const char* path, const Config* c, const float* params, const float* m, const float* v,
                             size_t n, int step, const RunRecord* run) {
    char why[160];
    if (state_finite(c, params, m, v, n, why, sizeof(why))) {
        die("%s: checkpoint of step %d not written: %s (the last checkpoint is untouched)", path, step, why);
    }
    int32_t h[CKPT_HEADER_INTS];
    checkpoint_header(h, c, m != NULL, n, step, run);
    uint64_t sum = checkpoint_checksum(h, params, m, v, n);
    h[CKPT_CHECKSUM_INT] = (int32_t)(uint32_t)sum;
    h[CKPT_CHECKSUM_INT + 1] = (int32_t)(sum >> 32);
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE* f = fopen(tmp, "wb");
    if (f == NULL) { checkpoint_write_failed(NULL, tmp, "open"); }
    int ok = fwrite(h, sizeof(int32_t), CKPT_HEADER_INTS, f) == CKPT_HEADER_INTS && fwrite(params, sizeof(float), n, f) == n;
    if (ok && m != NULL) { ok = fwrite(m, sizeof(float), n, f) == n && fwrite(v, sizeof(float), n, f) == n; }
    if (!ok) { checkpoint_write_failed(f, tmp, "write"); }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) { checkpoint_write_failed(f, tmp, "flush to disk"); }
    if (fclose(f) != 0) { checkpoint_write_failed(NULL, tmp, "close"); }
    if (rename(tmp, path) != 0) { checkpoint_write_failed(NULL, tmp, "rename to the checkpoint's name"); }
}

// The range of every header field, checked before anything is allocated from it. Version 1 files
// record T (0 = not recorded) but not the fields from [18] on.
static const struct { const char* name; int at; int64_t lo, hi; } CKPT_FIELDS[] = {
    {"vocab", 2, 1, MAX_VOCAB}, {"padded vocab", 3, 1, MAX_VOCAB}, {"L", 4, 1, MAX_LAYERS}, {"C", 5, 2, MAX_CHANNELS},
    {"H", 6, 1, MAX_CHANNELS}, {"F", 7, 1, MAX_FFN}, {"W", 8, 1, MAX_SEQ_LEN}, {"pos F", 9, 0, 1}, {"pos S", 10, 0, 1},
    {"mixer", 11, 0, 1}, {"rope theta", 12, 1, INT32_MAX}, {"AdamW state flag", 13, 0, 1}, {"step", 14, 0, MAX_STEPS},
    {"parameters (high bits)", 16, 0, 1}, {"T", 17, 0, MAX_SEQ_LEN},
    {"B", 18, 1, MAX_BATCH}, {"accum", 19, 1, MAX_BATCH}, {"world", 20, 1, MAX_WORLD},
};
#define CKPT_V1_FIELDS 15  // the fields above a version-1 header has

// Reads and validates a checkpoint: a regular file, magic, version, every header field in range, the
// file size the header implies, the checksum (version 2), and finite contents.
static Checkpoint checkpoint_read(const char* path) {
    size_t size = input_file_check("checkpoint", path);
    int32_t h[CKPT_HEADER_INTS];
    if (size < sizeof(h)) { die("%s: not a checkpoint (%zu bytes, shorter than its %zu-byte header)", path, size, sizeof(h)); }
    FILE* f = fopen_check(path, "rb");
    fread_check(h, sizeof(int32_t), CKPT_HEADER_INTS, f, path);
    if (h[0] != CKPT_MAGIC) { die("%s: bad magic %d, expected %d (not a hybrid.cu checkpoint)", path, h[0], CKPT_MAGIC); }
    if (h[1] != 1 && h[1] != CKPT_VERSION) { die("%s: checkpoint version %d, this build reads versions 1 and %d", path, h[1], CKPT_VERSION); }
    int version = h[1];
    // version 1 left every int from [18] on zero (the pattern aside): a "version 1" file with any of
    // them set is a version-2 file whose version was damaged, and must not skip the checksum
    for (int i = 18; version == 1 && i < CKPT_HEADER_INTS; i++) {
        if ((i < CKPT_PATTERN_BYTE / 4 || i >= CKPT_PATTERN_BYTE / 4 + MAX_LAYERS / 4) && h[i] != 0) {
            die("%s: corrupt checkpoint header (version 1 with header int %d set, which version 1 never writes)", path, i);
        }
    }
    int n_fields = version == 1 ? CKPT_V1_FIELDS : (int)(sizeof(CKPT_FIELDS) / sizeof(CKPT_FIELDS[0]));
    for (int i = 0; i < n_fields; i++) {
        int32_t x = h[CKPT_FIELDS[i].at];
        int lo = CKPT_FIELDS[i].at == 17 && version == 2 ? 1 : (int)CKPT_FIELDS[i].lo;  // version 2 always records T
        if (x < lo || x > CKPT_FIELDS[i].hi) {
            die("%s: corrupt checkpoint header: %s = %d, expected %d..%lld", path, CKPT_FIELDS[i].name, x, lo, (long long)CKPT_FIELDS[i].hi);
        }
    }
    char pattern[MAX_LAYERS + 1];
    memcpy(pattern, (char*)h + CKPT_PATTERN_BYTE, MAX_LAYERS);
    pattern[MAX_LAYERS] = '\0';
    // the remaining conditions of config_make, whose own errors name command-line flags, not the file
    int bad = h[3] < h[2] || h[5] % h[6] != 0 || (h[5] / h[6]) % 2 != 0 || h[5] / h[6] > 512;
    bad |= (int)strlen(pattern) != h[4] || strspn(pattern, "FSR") != strlen(pattern);
    if (bad) {
        die("%s: corrupt checkpoint header (pattern '%s', L %d, C %d, H %d, vocab %d/%d)", path, pattern, h[4], h[5], h[6], h[2], h[3]);
    }
    Checkpoint ck;
    memset(&ck, 0, sizeof(ck));
    ck.version = version;
    ck.cfg = config_make(h[2], h[3], h[4], h[5], h[6], h[7], pattern, h[8], h[9], h[10], h[11]);
    ck.cfg.rope_theta = h[12];
    ck.n_params = (size_t)(uint32_t)h[15] | ((size_t)(uint32_t)h[16] << 31);
    ck.step = h[14];
    ck.run.T = h[17];
    if (version == CKPT_VERSION) {
        ck.run.B = h[18]; ck.run.accum = h[19]; ck.run.world = h[20];
        ck.run.seed = (long)((uint64_t)(uint32_t)h[21] | ((uint64_t)(uint32_t)h[22] << 32));
        ck.run.data_id = (uint64_t)(uint32_t)h[23] | ((uint64_t)(uint32_t)h[24] << 32);
    }
    size_t expect = param_layout(&ck.cfg).total;
    if (ck.n_params != expect) { die("%s: header says %zu parameters, its config has %zu", path, ck.n_params, expect); }
    int has_opt = h[13] == 1;
    size_t want = sizeof(h) + (has_opt ? 3 : 1) * ck.n_params * sizeof(float);
    if (size != want) { die("%s: %zu bytes, expected %zu for its header (truncated or corrupt)", path, size, want); }
    ck.params = (float*)malloc_check(ck.n_params * sizeof(float));
    fread_check(ck.params, sizeof(float), ck.n_params, f, path);
    if (has_opt) {
        ck.m = (float*)malloc_check(ck.n_params * sizeof(float));
        ck.v = (float*)malloc_check(ck.n_params * sizeof(float));
        fread_check(ck.m, sizeof(float), ck.n_params, f, path);
        fread_check(ck.v, sizeof(float), ck.n_params, f, path);
    }
    fclose(f);
    if (version == CKPT_VERSION) {
        uint64_t sum = checkpoint_checksum(h, ck.params, ck.m, ck.v, ck.n_params);
        uint64_t stored = (uint64_t)(uint32_t)h[CKPT_CHECKSUM_INT] | ((uint64_t)(uint32_t)h[CKPT_CHECKSUM_INT + 1] << 32);
        if (sum != stored) { die("%s: checksum mismatch (the file is corrupt or was edited)", path); }
    }
    char why[160];
    if (state_finite(&ck.cfg, ck.params, ck.m, ck.v, ck.n_params, why, sizeof(why))) { die("%s: %s; refusing a non-finite checkpoint", path, why); }
    return ck;
}

static void checkpoint_free(Checkpoint* ck) { free(ck->params); free(ck->m); free(ck->v); }

// A model with a checkpoint's config and parameters, and its AdamW state when the file has one.
static void model_from_checkpoint(Model* m, const Checkpoint* ck) {
    model_build(m, &ck->cfg, 0);
    for (size_t i = 0; i < ck->n_params; i++) { m->params[i] = (real)ck->params[i]; }
    if (ck->m) {
        memcpy(m->m, ck->m, ck->n_params * sizeof(float));
        memcpy(m->v, ck->v, ck->n_params * sizeof(float));
    }
}

// The step recorded in a checkpoint's header, or -1 when path is missing or not a checkpoint.
static int checkpoint_peek_step(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) { return -1; }
    FILE* f = fopen(path, "rb");
    if (f == NULL) { return -1; }
    int32_t h[CKPT_HEADER_INTS];
    int ok = fread(h, sizeof(int32_t), CKPT_HEADER_INTS, f) == CKPT_HEADER_INTS && h[0] == CKPT_MAGIC && (h[1] == 1 || h[1] == CKPT_VERSION);
    fclose(f);
    return ok && h[14] >= 0 ? h[14] : -1;
}

// The step k of a kept save's file name, "<base>.step<k>" exactly (digits only), or -1. The user's
// path is matched literally, never as a glob pattern, so no other file is ever taken for a save.
static long kept_save_step(const char* name, const char* base) {
    size_t nb = strlen(base);
    if (strncmp(name, base, nb) != 0 || strncmp(name + nb, ".step", 5) != 0) { return -1; }
    const char* d = name + nb + 5;
    if (*d == '\0' || strspn(d, "0123456789") != strlen(d) || strlen(d) > 10) { return -1; }
    long k = strtol(d, NULL, 10);
    return k <= MAX_STEPS ? k : -1;
}

// Removes the kept saves of path (path.step<k>) that have keep - 1 or more newer ones.
static void checkpoint_prune(const char* path, int keep) {
    char dir[4096];
    const char* slash = strrchr(path, '/');
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) + 1 : 1, slash ? path : ".");
    const char* base = slash ? slash + 1 : path;
    DIR* d = opendir(dir);
    if (d == NULL) { return; }
    long steps[1024];
    int n = 0;
    struct dirent* e;
    while ((e = readdir(d)) != NULL && n < 1024) {
        long k = kept_save_step(e->d_name, base);
        if (k >= 0) { steps[n++] = k; }
    }
    closedir(d);
    for (int i = 0; i < n; i++) {  // remove every kept file with keep - 1 newer ones
        int newer = 0;
        for (int j = 0; j < n; j++) { newer += steps[j] > steps[i]; }
        if (newer >= keep - 1) {
            char name[4096 + 32];
            snprintf(name, sizeof(name), "%s.step%ld", path, steps[i]);
            unlink(name);
        }
    }
}

// Writes the checkpoint of `step` to path (checkpoint_write: atomic) and keeps the keep - 1 newest
// saves before it as path.step<k>: the old file gets that second name (a hard link) before the new
// one replaces it, so there is never a moment without a complete checkpoint. Older ones are removed.
static void checkpoint_save(const char* path, int keep, const Config* c, const float* params, const float* m, const float* v,
                            size_t n, int step, const RunRecord* run) {
    int prev = keep > 1 ? checkpoint_peek_step(path) : -1;
    if (prev >= 0 && prev != step) {
        char name[4096 + 32];
        snprintf(name, sizeof(name), "%s.step%d", path, prev);
        unlink(name);
        if (link(path, name) != 0) { die("%s: cannot keep it as %s: %s (--ckpt-keep 1 keeps no older saves)", path, name, strerror(errno)); }
    }
    checkpoint_write(path, c, params, m, v, n, step, run);
    if (keep > 1) { checkpoint_prune(path, keep); }
}

// ----------------------------------------------------------------------------
// Run reporting shared by the trainers: model FLOPs for MFU, the config table, a clock.

// Model FLOPs per trained token (forward + backward = 3 × forward), at sequence length T:
//   matmuls: 2 FLOPs per weight per token (every projection, and the tied LM head Vp·C)
//   attention: QKᵀ and PV, 4·C FLOPs per key a query sees: (T+1)/2 on average for F, min(W, that) for S
//   recurrence: per head 4 D×D products per token (S'k, u kᵀ, S q, the decay), 8·C·D FLOPs
// The embedding lookup, norms and elementwise work are not counted (as in llm.c / PaLM's MFU).
static double model_flops_per_token(const Config* c, int T) {
    int C = c->n_embd, D = C / c->n_head;
    double fwd = 2.0 * c->padded_vocab * C, keys_full = (T + 1) / 2.0;
    for (int l = 0; l < c->n_layer; l++) {
        char type = c->pattern[l];
        for (int k = 0; k < NUM_LAYER_PARAMS; k++) {
            const TensorKind* tk = &LAYER_PARAMS[k];
            if (tk->decay) { fwd += 2.0 * tensor_numel(c, tk, type); }  // the matrices are the decayed tensors
        }
        if (type == 'F') { fwd += 4.0 * C * keys_full; }
        if (type == 'S') { fwd += 4.0 * C * (c->window < keys_full ? c->window : keys_full); }
        if (type == 'R') { fwd += 8.0 * C * D; }
    }
    return 3.0 * fwd;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// one row of the config table
static void table_row(const char* label, const char* fmt, ...) {
    char value[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof(value), fmt, ap);
    va_end(ap);
    printf("| %-21s | %-40s |\n", label, value);
}

// ----------------------------------------------------------------------------
// Command line shared by the trainers. One table of flags drives parsing, the help text and
// its defaults, so they cannot disagree.

typedef struct {
    int L, C, H, F;          // model size (F = 0: round64(8C/3))
    const char* pattern;     // layer pattern, tiled to L
    int window;              // SWA window
    int pos_full, pos_swa;   // POS_ROPE / POS_NOPE per layer type
    int mixer;               // MIXER_GDN / MIXER_GLA
    int B, T;                // micro-batch
    int accum;               // micro-batches per optimizer step
    OptConfig opt;           // lr, schedule, AdamW, clipping; opt.steps = steps
    DataConfig data;         // sources and needle mixture
    long seed;               // init, data and needles
    int val_every, val_batches;
    const char* log_path;    // JSONL log ("" = none)
    const char* ckpt_path;   // checkpoint at the end and every ckpt_every steps ("" = none)
    int ckpt_every;          // 0: only at the end
    int ckpt_keep;           // saves kept: the newest at ckpt_path, the ones before as ckpt_path.step<k>
    int ckpt_opt;            // 1: with the AdamW state
    const char* resume;      // checkpoint to start from ("" = none)
    int skip_nonfinite;      // 1: skip a step whose loss or gradient norm is not finite, 0: stop
    int eval_every;          // needle grid and retrieval heads every this many steps (0 = never)
    int eval_early;          // during the first eval_early steps, EVAL_EARLY_RATE times as often
    int eval_text;           // 1: for byte data trained on symbol needles, the text-needle grid too
    int eval_samples;        // needle samples per (length, depth) cell
    long eval_seed;          // seed of the needle grid
} TrainArgs;

#define MAX_FLAGS 64  // room in a FlagSpec table: the shared flags plus a trainer's own
enum { FLAG_INT, FLAG_LONG, FLAG_DOUBLE, FLAG_FLOAT, FLAG_STR, FLAG_BOOL, FLAG_CHOICE };
typedef struct {
    const char* flag;     // "-p", "--pos-full"
    int type;
    void* dst;
    double lo, hi;        // numbers: the accepted range, inclusive (-h lists it)
    const char* choices;  // FLAG_CHOICE: "rope|nope", the value stored is the index
    const char* help;
} FlagSpec;

#define SEED_MAX 4611686018427387904.0  // 2^62: seeds are 0..2^62, exactly representable as a double

// The flags both trainers take; returns how many were written to out (MAX_FLAGS entries).
static int train_flags(TrainArgs* a, FlagSpec* out) {
    FlagSpec f[] = {
        {"-i", FLAG_STR, &a->data.train, 0, 0, NULL, "train data: glob of llm.c shards, or of files with --bytes; none = built-in text"},
        {"-j", FLAG_STR, &a->data.val, 0, 0, NULL, "val data: glob of llm.c shards (with -i)"},
        {"--bytes", FLAG_BOOL, &a->data.bytes, 0, 0, NULL, "-i names plain files read as bytes (last 10% = val)"},
        {"--needle-frac", FLAG_FLOAT, &a->data.needle_frac, 0, 1, NULL, "fraction of training sequences that carry needles"},
        {"--needle-kind", FLAG_CHOICE, &a->data.needles.kind, 0, 0, "symbol|text", "needle kind"},
        {"--needle-key", FLAG_INT, &a->data.needles.key_len, 1, NEEDLE_MAX - 3, NULL, "symbols per needle key"},
        {"--needle-val", FLAG_INT, &a->data.needles.val_len, 1, NEEDLE_MAX - 3, NULL, "symbols per needle value"},
        {"--needle-density", FLAG_INT, &a->data.needles.per_1k, 0, 1000, NULL, "needles per 1000 tokens of a training sequence"},
        {"--needle-queries", FLAG_INT, &a->data.needles.queries, 0, MAX_SEQ_LEN, NULL, "queries per training sequence"},
        {"--needle-symbols", FLAG_INT, &a->data.n_symbols, 2, MAX_SYMBOLS, NULL, "needle symbols appended to the vocabulary"},
        {"-p", FLAG_STR, &a->pattern, 0, 0, NULL, "layer pattern over F (full attn), S (sliding window), R (recurrent), tiled to L"},
        {"-w", FLAG_INT, &a->window, 1, MAX_SEQ_LEN, NULL, "sliding window W: query i sees keys i-W < j <= i"},
        {"--pos-full", FLAG_CHOICE, &a->pos_full, 0, 0, "rope|nope", "positional encoding of F layers"},
        {"--pos-swa", FLAG_CHOICE, &a->pos_swa, 0, 0, "rope|nope", "positional encoding of S layers"},
        {"--mixer", FLAG_CHOICE, &a->mixer, 0, 0, "gdn|gla", "R layers: Gated DeltaNet or gated linear attention"},
        {"-L", FLAG_INT, &a->L, 1, MAX_LAYERS, NULL, "layers"},
        {"-C", FLAG_INT, &a->C, 2, MAX_CHANNELS, NULL, "channels"},
        {"-H", FLAG_INT, &a->H, 1, MAX_CHANNELS, NULL, "heads (head dim C/H)"},
        {"-F", FLAG_INT, &a->F, 0, MAX_FFN, NULL, "SwiGLU hidden (0 = round64(8C/3))"},
        {"-B", FLAG_INT, &a->B, 1, MAX_BATCH, NULL, "micro-batch size"},
        {"-T", FLAG_INT, &a->T, 1, MAX_SEQ_LEN, NULL, "sequence length"},
        {"-a", FLAG_INT, &a->accum, 1, MAX_BATCH, NULL, "gradient accumulation: micro-batches per step"},
        {"-n", FLAG_INT, &a->opt.steps, 0, MAX_STEPS, NULL, "optimizer steps"},
        {"-l", FLAG_DOUBLE, &a->opt.lr, 1e-9, 10, NULL, "peak learning rate"},
        {"--warmup", FLAG_INT, &a->opt.warmup, -1, MAX_STEPS, NULL, "linear warmup steps (-1 = 5% of -n)"},
        {"--schedule", FLAG_CHOICE, &a->opt.schedule, 0, 0, "cosine|wsd", "LR schedule after warmup"},
        {"--min-lr-frac", FLAG_DOUBLE, &a->opt.min_lr_frac, 0, 1, NULL, "final lr as a fraction of the peak"},
        {"--decay-frac", FLAG_DOUBLE, &a->opt.decay_frac, 0, 1, NULL, "wsd: fraction of steps in the final decay"},
        {"--wd", FLAG_DOUBLE, &a->opt.weight_decay, 0, 10, NULL, "AdamW weight decay (embedding and projection matrices)"},
        {"--clip", FLAG_DOUBLE, &a->opt.grad_clip, 0, 1e6, NULL, "global gradient-norm clip (0 = off)"},
        {"-s", FLAG_LONG, &a->seed, 0, SEED_MAX, NULL, "seed of init, data and needles"},
        {"-v", FLAG_INT, &a->val_every, 0, MAX_STEPS, NULL, "val loss every this many steps (0 = never)"},
        {"-V", FLAG_INT, &a->val_batches, 1, 1000000, NULL, "val batches per evaluation"},
        {"-o", FLAG_STR, &a->log_path, 0, 0, NULL, "JSONL log file (\"\" = none)"},
        {"-c", FLAG_STR, &a->ckpt_path, 0, 0, NULL, "checkpoint written at the end, every --ckpt-every steps and on SIGINT/SIGTERM (\"\" = none)"},
        {"--ckpt-every", FLAG_INT, &a->ckpt_every, 0, MAX_STEPS, NULL, "also write the checkpoint every this many steps (0 = only at the end)"},
        {"--ckpt-keep", FLAG_INT, &a->ckpt_keep, 1, 1000, NULL, "checkpoints kept: the newest at -c, older ones as <-c>.step<k>"},
        {"--ckpt-opt", FLAG_INT, &a->ckpt_opt, 0, 1, NULL, "1: the checkpoint carries the AdamW state (3x the size; needed for an exact resume), 0: parameters only"},
        {"-r", FLAG_STR, &a->resume, 0, 0, NULL, "resume from this checkpoint: its model (model flags, if given, must match it), AdamW state, step and data position; pass the run's data and schedule flags again"},
        {"--skip-nonfinite", FLAG_BOOL, &a->skip_nonfinite, 0, 0, NULL, "skip the update of a step whose loss or gradient norm is not finite (default: stop)"},
        {"--eval-every", FLAG_INT, &a->eval_every, 0, MAX_STEPS, NULL, "needle grid and retrieval heads every this many steps (0 = never)"},
        {"--eval-early", FLAG_INT, &a->eval_early, 0, MAX_STEPS, NULL, "during the first N steps (where retrieval emerges) the evals run 4x as often: every --eval-every/4 steps"},
        {"--eval-text", FLAG_INT, &a->eval_text, 0, 1, NULL, "1: byte data trained on symbol needles is also evaluated on text needles, 0: symbol needles only"},
        {"--eval-samples", FLAG_INT, &a->eval_samples, 1, 100000, NULL, "needle samples per (length, depth) cell"},
        {"--eval-seed", FLAG_LONG, &a->eval_seed, 0, SEED_MAX, NULL, "seed of the needle grid (fixed, so every run sees the same samples)"},
    };
    int n = (int)(sizeof(f) / sizeof(f[0]));
    static_assert(sizeof(f) / sizeof(f[0]) <= MAX_FLAGS, "MAX_FLAGS holds the shared flags");
    memcpy(out, f, sizeof(f));
    return n;
}

static void flags_print_help(const char* prog, const FlagSpec* f, int n) {
    printf("usage: %s [flags]\n", prog);
    for (int i = 0; i < n; i++) {
        char def[96] = "", range[64] = "";
        switch (f[i].type) {
            case FLAG_INT: snprintf(def, sizeof(def), "%d", *(int*)f[i].dst); break;
            case FLAG_LONG: snprintf(def, sizeof(def), "%ld", *(long*)f[i].dst); break;
            case FLAG_DOUBLE: snprintf(def, sizeof(def), "%g", *(double*)f[i].dst); break;
            case FLAG_FLOAT: snprintf(def, sizeof(def), "%g", *(float*)f[i].dst); break;
            case FLAG_STR: {
                const char* v = *(const char**)f[i].dst;
                snprintf(def, sizeof(def), v == NULL ? "none" : v[0] == '\0' ? "\"\"" : "%s", v);
                break;
            }
            case FLAG_BOOL: snprintf(def, sizeof(def), "%s", *(int*)f[i].dst ? "on" : "off"); break;
            case FLAG_CHOICE: {
                const char* c = f[i].choices;  // the index-th word of "a|b|c"
                for (int k = *(int*)f[i].dst; k > 0 && strchr(c, '|'); k--) { c = strchr(c, '|') + 1; }
                snprintf(def, sizeof(def), "%.*s", (int)(strchr(c, '|') ? strchr(c, '|') - c : (long)strlen(c)), c);
                break;
            }
        }
        if (f[i].type <= FLAG_LONG) { snprintf(range, sizeof(range), ", %.0f..%.0f", f[i].lo, f[i].hi); }
        else if (f[i].type <= FLAG_FLOAT) { snprintf(range, sizeof(range), ", %g..%g", f[i].lo, f[i].hi); }
        // the value's placeholder: N integer, X number, S string, or the choices
        const char* value[] = {" N", " N", " X", " X", " S", "", " "};
        char name[64];
        snprintf(name, sizeof(name), "%s%s%s", f[i].flag, value[f[i].type], f[i].type == FLAG_CHOICE ? f[i].choices : "");
        printf("  %-26s %s (default %s%s)\n", name, f[i].help, def, range);
    }
    printf("  %-26s this help\n", "-h");
}

static int choice_index(const char* choices, const char* value) {
    int idx = 0;
    size_t len = strlen(value);
    for (const char* c = choices; c; idx++) {
        const char* bar = strchr(c, '|');
        size_t n = bar ? (size_t)(bar - c) : strlen(c);
        if (n == len && strncmp(c, value, n) == 0) { return idx; }
        c = bar ? bar + 1 : NULL;
    }
    return -1;
}

// Parses argv against the table; any problem is one line naming the flag and the value as typed,
// and exit 1. Integers are checked for overflow, numbers for being finite, both against the range.
// given (n entries, or NULL): given[k] = 1 for each flag k on the command line.
static void flags_parse(const FlagSpec* f, int n, int argc, char** argv, int* given) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { flags_print_help(argv[0], f, n); exit(0); }
        int k = 0;
        while (k < n && strcmp(f[k].flag, argv[i]) != 0) { k++; }
        if (k == n) { die("unknown flag '%s' (-h lists the flags)", argv[i]); }
        if (given) { given[k] = 1; }
        if (f[k].type == FLAG_BOOL) { *(int*)f[k].dst = 1; continue; }
        if (i + 1 >= argc) { die("flag %s needs a value", argv[i]); }
        const char* v = argv[++i];
        char* end = NULL;
        errno = 0;
        switch (f[k].type) {
            case FLAG_INT:
            case FLAG_LONG: {
                long long x = strtoll(v, &end, 10);
                if (*v == '\0' || *end != '\0') { die("flag %s: '%s' is not an integer", f[k].flag, v); }
                if (errno == ERANGE || x < f[k].lo || x > f[k].hi) { die("flag %s: '%s' is out of range, expected %.0f..%.0f", f[k].flag, v, f[k].lo, f[k].hi); }
                if (f[k].type == FLAG_INT) { *(int*)f[k].dst = (int)x; } else { *(long*)f[k].dst = (long)x; }
                break;
            }
            case FLAG_DOUBLE:
            case FLAG_FLOAT: {
                double x = strtod(v, &end);
                if (*v == '\0' || *end != '\0') { die("flag %s: '%s' is not a number", f[k].flag, v); }
                if (!isfinite(x)) { die("flag %s: '%s' is not a finite number", f[k].flag, v); }
                if (x < f[k].lo || x > f[k].hi) { die("flag %s: '%s' is out of range, expected %g..%g", f[k].flag, v, f[k].lo, f[k].hi); }
                if (f[k].type == FLAG_DOUBLE) { *(double*)f[k].dst = x; } else { *(float*)f[k].dst = (float)x; }
                break;
            }
            case FLAG_STR: *(const char**)f[k].dst = v; break;
            case FLAG_CHOICE: {
                int idx = choice_index(f[k].choices, v);
                if (idx < 0) { die("flag %s: '%s', expected one of %s", f[k].flag, v, f[k].choices); }
                *(int*)f[k].dst = idx;
                break;
            }
        }
    }
}

// Fills the derived defaults and range-checks the values that config_make does not see.
// What both trainers default to; each then sets its own model size, batch, steps, lr and periods.
static void train_args_default(TrainArgs* a) {
    memset(a, 0, sizeof(*a));
    a->pattern = "SSSF";
    a->pos_full = POS_ROPE; a->pos_swa = POS_ROPE; a->mixer = MIXER_GDN;
    a->T = 128; a->accum = 1;
    a->data = data_config_default();
    a->seed = 1337;
    a->log_path = ""; a->ckpt_path = ""; a->resume = "";
    a->ckpt_keep = 1; a->ckpt_opt = 1;
    a->eval_text = 1; a->eval_seed = 20260615;
}

// Was the flag that writes dst on the command line? (given: as flags_parse filled it)
static int flag_given(const FlagSpec* f, const int* given, int n, const void* dst) {
    for (int i = 0; i < n; i++) { if (f[i].dst == dst) { return given[i]; } }
    return 0;
}

// Fills the derived defaults and checks what one flag's range cannot: flags that contradict each other.
static void train_args_resolve(TrainArgs* a) {
    if (a->opt.warmup == -1) { a->opt.warmup = a->opt.steps / 20; }
    if (a->opt.warmup > a->opt.steps) { die("--warmup %d is longer than the run (-n %d)", a->opt.warmup, a->opt.steps); }
    if (!a->ckpt_path[0] && (a->ckpt_every > 0 || a->ckpt_keep > 1)) {
        die("--ckpt-every %d --ckpt-keep %d without -c: no checkpoint is written (give -c FILE)", a->ckpt_every, a->ckpt_keep);
    }
    if (a->eval_early > 0 && a->eval_every == 0) { die("--eval-early %d without --eval-every: there are no needle evals to run early", a->eval_early); }
    if ((long)a->B * a->T > MAX_TOKENS_PER_BATCH) {
        die("-B %d -T %d: %ld tokens per micro-batch, at most %d (use -a to accumulate)", a->B, a->T, (long)a->B * a->T, MAX_TOKENS_PER_BATCH);
    }
    NeedleConfig* nc = &a->data.needles;
    if (nc->key_len + nc->val_len > NEEDLE_MAX - 2) {
        die("--needle-key %d --needle-val %d: together at most %d", nc->key_len, nc->val_len, NEEDLE_MAX - 2);
    }
    long keys = needle_keys(nc, a->data.n_symbols);
    if (a->data.needle_frac > 0 && (long)nc->per_1k * a->T > keys / 2 * 1000) {
        die("--needle-density %d at -T %d: %.1f needles per sequence, more than half of the %ld distinct keys (keys differ within a sequence; lower the density, or raise --needle-key or --needle-symbols)",
            nc->per_1k, a->T, nc->per_1k * a->T / 1000.0, keys);
    }
    // a needle, its question and its answer in one sequence (training) and in the grid's shortest
    // sample, T/4 (evals): else no needle is ever placed, or the first eval fails mid-run
    Vocab bytes = vocab_make(256, a->data.n_symbols);  // the lengths do not depend on the data vocabulary
    int task = needle_task_len(nc, &bytes);
    const char* kind = nc->kind == NEEDLE_SYMBOL ? "symbol" : "text";
    if (a->data.needle_frac > 0 && task > a->T + 1) {
        die("-T %d: a %s needle with its question and answer takes %d tokens, more than a sequence (-T + 1); raise -T or give --needle-frac 0",
            a->T, kind, task);
    }
    if (a->eval_every > 0 && task > a->T / 4) {
        die("-T %d --eval-every %d: the needle grid's shortest sample (T/4 = %d tokens) cannot hold a %s needle with its question (%d tokens); raise -T to %d or give --eval-every 0",
            a->T, a->eval_every, a->T / 4, kind, task, 4 * task);
    }
    if (a->data.val != NULL && a->data.train == NULL) { die("-j given without -i: val shards need train shards"); }
    if (a->data.bytes && a->data.train == NULL) { die("--bytes needs -i FILES"); }
    if (a->data.bytes && a->data.val != NULL) { die("-j with --bytes: byte data takes its val split from the last 10%% of -i"); }
}

// ----------------------------------------------------------------------------
// Output paths, checked before the first step: a bad -c or -o fails now, not after the whole run,
// and no output ever lands on an input (a log appended to the checkpoint being resumed, say).

// path's directory ("." for a bare name) into dir
static void path_dir(const char* path, char* dir, size_t size) {
    const char* slash = strrchr(path, '/');
    if (slash == NULL) { snprintf(dir, size, "."); }
    else if (slash == path) { snprintf(dir, size, "/"); }
    else { snprintf(dir, size, "%.*s", (int)(slash - path), path); }
}

// path with its directory resolved (symlinks, "..", "./"), whether or not the file exists yet; 0 when
// the directory does not exist.
static int path_resolve(const char* path, char* out, size_t size) {
    char dir[4096], real[PATH_MAX];
    path_dir(path, dir, sizeof(dir));
    if (realpath(dir, real) == NULL) { return 0; }
    const char* slash = strrchr(path, '/');
    snprintf(out, size, "%s/%s", real, slash ? slash + 1 : path);
    return 1;
}

// Do a and b name one file? By device and inode when both exist (hard links, symlinks), else by
// the resolved path.
static int same_file(const char* a, const char* b) {
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) { return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino; }
    char ra[4096 + PATH_MAX], rb[4096 + PATH_MAX];
    return path_resolve(a, ra, sizeof(ra)) && path_resolve(b, rb, sizeof(rb)) && strcmp(ra, rb) == 0;
}

// An output file: a regular file or not there yet, in an existing directory this process can write.
static void output_file_check(const char* flag, const char* path) {
    char dir[4096];
    struct stat st;
    path_dir(path, dir, sizeof(dir));
    size_t len = strlen(path);
    if (path[len - 1] == '/') { die("%s %s: names a directory, expected a file name", flag, path); }
    if (stat(dir, &st) != 0) { die("%s %s: directory '%s': %s", flag, path, dir, strerror(errno)); }
    if (!S_ISDIR(st.st_mode)) { die("%s %s: '%s' is not a directory", flag, path, dir); }
    if (access(dir, W_OK | X_OK) != 0) { die("%s %s: cannot create files in '%s': %s", flag, path, dir, strerror(errno)); }
    if (stat(path, &st) == 0) {
        if (!S_ISREG(st.st_mode)) { die("%s %s is %s, expected a regular file (or a new name)", flag, path, file_kind(st.st_mode)); }
        if (access(path, W_OK) != 0) { die("%s %s: %s", flag, path, strerror(errno)); }
    }
}

// Is path one of the files the checkpoint saves of -c write or delete: ckpt itself, ckpt.tmp, or a
// kept save ckpt.step<k>? -c itself counts only when ckpt_itself (it may be the -r file).
static int ckpt_writes(const char* ckpt, const char* path, int ckpt_itself) {
    char tmp[4096 + 8], rc[4096 + PATH_MAX], rp[4096 + PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp", ckpt);
    if ((ckpt_itself && same_file(path, ckpt)) || same_file(path, tmp)) { return 1; }
    return path_resolve(ckpt, rc, sizeof(rc)) && path_resolve(path, rp, sizeof(rp)) && kept_save_step(rp, rc) >= 0;
}

// Refuses `out` (the file of flag out_flag) when it is one of the files the glob `in` of in_flag
// matches; for -c, also when an input is a name its saves write (ckpt_writes).
static void output_not_input(const char* out_flag, const char* out, const char* in_flag, const char* in) {
    if (out[0] == '\0' || in == NULL || in[0] == '\0') { return; }
    glob_t g;
    if (glob(in, 0, NULL, &g) != 0) { return; }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int hit = strcmp(out_flag, "-c") == 0 ? ckpt_writes(out, g.gl_pathv[i], 1) : same_file(out, g.gl_pathv[i]);
        if (hit) { die("%s %s would overwrite or delete %s, the file of %s: an output may not be an input", out_flag, out, g.gl_pathv[i], in_flag); }
    }
    globfree(&g);
}

// -c and -o: writable, not an input, not each other. -c may be the -r checkpoint (resume in place):
// it is read whole before training starts and only ever replaced by an atomic rename.
static void train_check_outputs(const TrainArgs* a) {
    const char* outs[2][2] = {{"-o", a->log_path}, {"-c", a->ckpt_path}};
    for (int i = 0; i < 2; i++) {
        const char *flag = outs[i][0], *path = outs[i][1];
        if (path[0] == '\0') { continue; }
        output_file_check(flag, path);
        output_not_input(flag, path, "-i", a->data.train);
        output_not_input(flag, path, "-j", a->data.val);
        if (i == 0) { output_not_input(flag, path, "-r", a->resume); }
    }
    if (a->ckpt_path[0]) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", a->ckpt_path);
        output_file_check("-c", tmp);  // the save writes there first
    }
    if (a->log_path[0] && a->ckpt_path[0] && ckpt_writes(a->ckpt_path, a->log_path, 1)) {
        die("-o %s is a file the checkpoint saves of -c %s write or delete (%s, .tmp, .step<k>)", a->log_path, a->ckpt_path, a->ckpt_path);
    }
}

// ----------------------------------------------------------------------------
// The JSONL log (-o): every record is flushed and checked, so a full disk stops the run with a
// clear line instead of ending it with exit 0 and a short log.

typedef struct {
    FILE* f;          // NULL: no log
    const char* path;
} RunLog;

// append: a resumed run continues its log
static RunLog run_log_open(const char* path, int append) {
    RunLog log = {NULL, path};
    if (path[0]) { log.f = fopen_check(path, append ? "a" : "w"); }
    return log;
}

static void run_log_flush(RunLog* log) {
    if (log->f && (fflush(log->f) != 0 || ferror(log->f))) { die("-o %s: write failed: %s", log->path, strerror(errno)); }
}

static void run_log_close(RunLog* log) {
    if (log->f == NULL) { return; }
    run_log_flush(log);
    if (fclose(log->f) != 0) { die("-o %s: close failed: %s", log->path, strerror(errno)); }
    log->f = NULL;
}

// ----------------------------------------------------------------------------
// The needle evals of a training run (DESIGN.md §4): the symbol grid every --eval-every steps (and
// at the last step) and, for byte data trained on symbol needles, the text-needle grid next to it,
// at the lengths whose haystack holds the text needle's statement and question. The trainer runs
// the grids on its model (cpu_needle_eval, gpu_needle_eval) and hands the results to
// train_eval_report.

typedef struct {
    NeedleGrid grid, text_grid;
    int on, text;  // grids built
} TrainEval;

static void train_eval_init(TrainEval* e, const TrainArgs* a, const Vocab* vocab) {
    memset(e, 0, sizeof(*e));
    e->on = a->eval_every > 0;
    needle_grid_default(&e->grid, a->T, a->eval_samples, (uint64_t)a->eval_seed);
    if (e->on) { needle_grid_build(&e->grid, &a->data, vocab); }
    DataConfig text_data = a->data;
    text_data.needles.kind = NEEDLE_TEXT;
    needle_grid_default(&e->text_grid, a->T, a->eval_samples, (uint64_t)a->eval_seed);
    needle_grid_drop_short(&e->text_grid, 2 * needle_task_len(&text_data.needles, vocab));
    e->text = e->on && a->eval_text && a->data.needles.kind == NEEDLE_SYMBOL && vocab->data_vocab == 256 && e->text_grid.n_lengths > 0;
    if (e->text) { needle_grid_build(&e->text_grid, &text_data, vocab); }
}

#define EVAL_EARLY_RATE 4  // --eval-early: evals this many times as often while retrieval emerges

static int train_eval_due(const TrainArgs* a, int step, int last, int stopping) {
    if (a->eval_every <= 0 || stopping) { return 0; }
    int every = a->eval_every;
    if (step <= a->eval_early) { every = every / EVAL_EARLY_RATE > 0 ? every / EVAL_EARLY_RATE : 1; }
    return step % every == 0 || last;
}

// Prints the results (one line each), writes them as one JSONL record, frees them. text_res is
// used only when e->text.
static void train_eval_report(RunLog* log, int step, const Config* cfg, const TrainEval* e, NeedleResult* res, NeedleResult* text_res) {
    needle_result_summary(res, &e->grid, cfg, step, "needle");
    if (e->text) { needle_result_summary(text_res, &e->text_grid, cfg, step, "text needle"); }
    if (log->f) {
        fprintf(log->f, "{\"step\": %d, \"needle\": ", step);
        needle_result_json(log->f, res, &e->grid, cfg);
        if (e->text) {
            fprintf(log->f, ", \"text_needle\": ");
            needle_result_json(log->f, text_res, &e->text_grid, cfg);
        }
        fprintf(log->f, "}\n");
        run_log_flush(log);
    }
    needle_result_free(res);
    if (e->text) { needle_result_free(text_res); }
}

static void train_eval_free(TrainEval* e) {
    if (e->on) { needle_grid_free(&e->grid); }
    if (e->text) { needle_grid_free(&e->text_grid); }
}

// ----------------------------------------------------------------------------
// Stopping safely. SIGINT/SIGTERM only raise a flag: the trainer finishes its step, writes the
// checkpoint and exits with 128 + the signal. A non-finite loss or gradient norm stops the run
// before the update (so the last checkpoint stays the last good state), or skips the update.

static volatile sig_atomic_t train_stop_signal = 0;
static void train_on_signal(int sig) { train_stop_signal = sig; }

static void train_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = train_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

// A resume trains the checkpoint's model: model flags given with -r must describe it, or they would
// be silently ignored. Each flag is compared through the Config it makes, the others taken from the
// checkpoint (-F 0 is the default width of C, -p is tiled to L).
static void train_resume_check_model(const TrainArgs* a, const FlagSpec* f, const int* given, int n, const Checkpoint* ck) {
    const Config* c = &ck->cfg;
#define GIVEN_OR(field, ck_value) (flag_given(f, given, n, &a->field) ? a->field : (ck_value))
    Config w = config_make(c->vocab, c->padded_vocab, GIVEN_OR(L, c->n_layer), GIVEN_OR(C, c->n_embd), GIVEN_OR(H, c->n_head),
                           GIVEN_OR(F, c->ffn), GIVEN_OR(pattern, c->pattern), GIVEN_OR(window, c->window),
                           GIVEN_OR(pos_full, c->pos_full), GIVEN_OR(pos_swa, c->pos_swa), GIVEN_OR(mixer, c->mixer));
#undef GIVEN_OR
    const char* pos[2] = {"rope", "nope"};
    const char* mixer[2] = {"gdn", "gla"};
    char differ[256] = "";
    size_t len = 0;
#define DIFFER(cond, ...) if (cond) { len += snprintf(differ + len, sizeof(differ) - len, __VA_ARGS__); }
    DIFFER(w.n_layer != c->n_layer, " -L %d", w.n_layer)
    DIFFER(w.n_embd != c->n_embd, " -C %d", w.n_embd)
    DIFFER(w.n_head != c->n_head, " -H %d", w.n_head)
    DIFFER(w.ffn != c->ffn, " -F %d", w.ffn)
    DIFFER(strcmp(w.pattern, c->pattern) != 0, " -p %s", w.pattern)
    DIFFER(w.window != c->window, " -w %d", w.window)
    DIFFER(w.pos_full != c->pos_full, " --pos-full %s", pos[w.pos_full])
    DIFFER(w.pos_swa != c->pos_swa, " --pos-swa %s", pos[w.pos_swa])
    DIFFER(w.mixer != c->mixer, " --mixer %s", mixer[w.mixer])
#undef DIFFER
    if (len > 0) {
        die("-r %s: its model is %s, L %d, C %d, H %d, F %d, W %d, pos F %s / S %s, mixer %s; the flags%s describe another (a resume trains the checkpoint's model: drop them or make them match)",
            a->resume, c->pattern, c->n_layer, c->n_embd, c->n_head, c->ffn, c->window, pos[c->pos_full], pos[c->pos_swa],
            mixer[c->mixer], differ);
    }
}

// The checkpoint of -r. Its vocabulary must be the data's, its model the one the model flags given
// describe (train_resume_check_model). With AdamW state it is an exact resume:
// -n must go past its step, and the run must have its T, B, accum, ranks, seed and data (run), or
// the data stream would not pick up where it was. A checkpoint of parameters only starts a new run
// (step 0, fresh AdamW state) from them, with any batch shape.
static Checkpoint train_resume_read(const TrainArgs* a, const FlagSpec* flags, const int* given, int n_flags, const RunRecord* run, int data_vocab) {
    Checkpoint ck = checkpoint_read(a->resume);
    const char* r = a->resume;
    if (ck.cfg.vocab != data_vocab) {
        die("-r %s: checkpoint vocabulary %d, the data's is %d (same data and --needle-symbols?)", r, ck.cfg.vocab, data_vocab);
    }
    train_resume_check_model(a, flags, given, n_flags, &ck);
    if (ck.m == NULL) {
        printf("-r %s: parameters only (no AdamW state): a new run from step 0 starts from them\n", r);
        return ck;
    }
    if (a->opt.steps <= ck.step) { die("-r %s is at step %d already: -n %d trains nothing; give -n > %d", r, ck.step, a->opt.steps, ck.step); }
    const char* exact = "an exact resume needs the run's own -T, -B, -a, -s, GPUs and data flags";
    if (ck.run.T != 0 && ck.run.T != run->T) { die("-r %s was trained with -T %d, this run gives -T %d: %s", r, ck.run.T, run->T, exact); }
    if (ck.version == 1) {
        printf("-r %s: a version-1 checkpoint records no -B, -a, -s or data; resumed without checking them\n", r);
        return ck;
    }
    if (ck.run.B != run->B) { die("-r %s was trained with -B %d, this run gives -B %d: %s", r, ck.run.B, run->B, exact); }
    if (ck.run.accum != run->accum) { die("-r %s was trained with -a %d, this run gives -a %d: %s", r, ck.run.accum, run->accum, exact); }
    if (ck.run.world != run->world) { die("-r %s was trained on %d GPU(s), this run has %d: %s", r, ck.run.world, run->world, exact); }
    if (ck.run.seed != run->seed) { die("-r %s was trained with -s %ld, this run gives -s %ld: %s", r, ck.run.seed, run->seed, exact); }
    if (ck.run.data_id != run->data_id) {
        die("-r %s was trained on other data: -i, -j, --bytes and the --needle-* flags must name the same files (names, sizes) and mixture; %s", r, exact);
    }
    return ck;
}

// What this run's checkpoints record (RunRecord) and a resume compares.
static RunRecord train_run_record(const TrainArgs* a, int world, const DataLoader* train, const DataLoader* val) {
    RunRecord r = {a->T, a->B, a->accum, world, a->seed, data_fingerprint(train, val, &a->data)};
    return r;
}

// Opens the train and val data, checked to share one tokenizer.
static void train_open_data(DataLoader* train, DataLoader* val, const TrainArgs* a) {
    dataloader_init(train, &a->data, 0, a->B, a->T, (uint64_t)a->seed);
    dataloader_init(val, &a->data, 1, a->B, a->T, (uint64_t)a->seed);
    data_check_splits(train, val, &a->data);
}

// The model a new run builds: the flags' size, pattern, window and encodings over the data's vocabulary.
static Config train_config(const TrainArgs* a, const Vocab* vocab) {
    return config_make(vocab->vocab, vocab->padded, a->L, a->C, a->H, a->F, a->pattern, a->window, a->pos_full, a->pos_swa, a->mixer);
}

// A resumed run's data stream picks up where the saved run was (it is deterministic from the seed):
// step0 steps of accum micro-batches on each of `world` data-parallel ranks.
static void train_resume_data(DataLoader* train, const TrainArgs* a, int step0, int world) {
    if (step0 == 0) { return; }
    dataloader_skip(train, (long)step0 * a->accum * world);
    printf("resumed from %s at step %d\n", a->resume, step0);
}

// After a SIGINT/SIGTERM: says where the run stopped; the exit status is 128 + the signal.
static int train_stop_status(const TrainArgs* a, int step) {
    printf("signal %d: stopped after step %d%s%s\n", (int)train_stop_signal, step, a->ckpt_path[0] ? ", checkpoint " : "", a->ckpt_path);
    return 128 + train_stop_signal;
}

// Checkpoint a step? At the end, every ckpt_every steps, and when a signal asked to stop.
static int train_should_save(const TrainArgs* a, int step, int step0, int last, int stopping) {
    return a->ckpt_path[0] && step > step0 && (last || stopping || (a->ckpt_every > 0 && step % a->ckpt_every == 0));
}

// 1: apply the update of `step` (1-based); 0: skip it (--skip-nonfinite). Dies otherwise, and after
// NONFINITE_MAX_SKIPS skipped steps in a row (the model is not coming back).
#define NONFINITE_MAX_SKIPS 20
static int train_step_finite(const TrainArgs* a, int step, double loss, double norm) {
    static int skipped_in_a_row = 0;
    if (isfinite(loss) && isfinite(norm)) {
        skipped_in_a_row = 0;
        return 1;
    }
    if (!a->skip_nonfinite) {
        die("step %d: loss %g, gradient norm %g: not finite; stopped before the update (the last checkpoint is untouched; --skip-nonfinite skips such steps)",
            step, loss, norm);
    }
    if (++skipped_in_a_row >= NONFINITE_MAX_SKIPS) { die("step %d: %d non-finite steps in a row; stopped", step, skipped_in_a_row); }
    printf("step %5d | loss %g, gradient norm %g: not finite, update skipped\n", step, loss, norm);
    return 0;
}

// One val evaluation: a line on stdout and a JSON line in the log (when there is one).
static void report_val(RunLog* log, int step, double val_loss) {
    printf("step %5d | val loss %.4f\n", step, val_loss);
    if (log->f) { fprintf(log->f, "{\"step\": %d, \"val_loss\": %.6f}\n", step, val_loss); run_log_flush(log); }
}

// One optimizer step (1-based): a line on stdout and a JSON line in the log. mfu < 0: not reported.
static void report_step(RunLog* log, int step, int steps, double loss, double lr, double norm, double ms, double tok_s, double mfu) {
    printf("step %5d/%d | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s", step, steps, loss, lr, norm, ms, tok_s);
    if (mfu >= 0) { printf(" | MFU %.1f%%", 100.0 * mfu); }
    printf("\n");
    if (log->f) {
        fprintf(log->f, "{\"step\": %d, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"tok_per_s\": %.1f", step, loss, lr, norm, tok_s);
        if (mfu >= 0) { fprintf(log->f, ", \"mfu\": %.5f", mfu); }
        fprintf(log->f, ", \"ms\": %.3f}\n", ms);
        run_log_flush(log);
    }
}

// The run's configuration as a table, printed by both trainers before the first step.
static void print_config_table(const Config* c, const TrainArgs* a, size_t n_params, const char* device) {
    const char* pos[2] = {"rope", "nope"};
    const char* rule = "+-----------------------+------------------------------------------+\n";
    printf("%s", rule);
    table_row("device", "%s", device);
    table_row("model", "%s", c->pattern);
    table_row("L, C, H, D, F", "%d, %d, %d, %d, %d", c->n_layer, c->n_embd, c->n_head, c->n_embd / c->n_head, c->ffn);
    table_row("window, pos F/S", "%d, %s/%s", c->window, pos[c->pos_full], pos[c->pos_swa]);
    table_row("mixer (R layers)", "%s", c->mixer == MIXER_GDN ? "gdn (Gated DeltaNet)" : "gla");
    table_row("vocab V / padded Vp", "%d / %d", c->vocab, c->padded_vocab);
    table_row("parameters", "%zu", n_params);
    table_row("B, T, accum", "%d, %d, %d", a->B, a->T, a->accum);
    table_row("steps, lr, warmup", "%d, %g, %d", a->opt.steps, a->opt.lr, a->opt.warmup);
    table_row("data", "%s", a->data.train ? a->data.train : "built-in synthetic text");
    table_row("needle fraction", "%g", a->data.needle_frac);
    printf("%s", rule);
}

#endif // HYBRID_CPU_H
