/*
hybrid_cpu.h — the CPU reference of the hybrid model (README.md, "The model"): every layer's forward
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

// the flag spellings (--pos-full/--pos-swa, --mixer) of the values above
static const char* pos_name(int pos) { return pos == POS_NOPE ? "nope" : "rope"; }
static const char* mixer_name(int mixer) { return mixer == MIXER_GLA ? "gla" : "gdn"; }

typedef struct Config {
    int vocab;        // V: real vocabulary; logits beyond it are padding and never scored
    int padded_vocab; // Vp: rows of wte
    int n_layer;      // L
    int n_embd;       // C
    int n_head;       // H; head dim D = C/H
    int ffn;          // F: SwiGLU hidden
    char pattern[MAX_LAYERS + 1]; // one letter of LAYER_TYPES per layer ('F' 'S' 'R'), tiled to L
    int window;       // W of S layers: query i sees keys j with i-W < j <= i
    int pos_full;     // POS_ROPE / POS_NOPE for F layers
    int pos_swa;      // ... for S layers
    double rope_theta;
    int mixer;        // MIXER_GDN (Gated DeltaNet) or MIXER_GLA (no delta rule) for R layers
} Config;

// ----------------------------------------------------------------------------
// The layer types. One row per mixer (the part of a block between ln1 and wo); every dispatch,
// check and count reads this table: the CPU and GPU models, config_make and the checkpoint's
// pattern check, --freeze, the FLOP count, the needle eval's heads and windows. A letter not in it
// is refused at start, naming the known ones.
// Adding a type: a row here; its letter in the `types` of the tensors its mixer uses (the tensor
// tables below; "*" rows belong to every block); its _forward/_backward below; a row of the GPU
// trainer's GPU_MIXERS (train_hybrid.cu) with its kernels; test_grad's finite differences and
// test_model_gpu. test_grad adds a trivial type ('I') through LAYER_TYPES_EXTRA alone.

enum { POS_FLAG_NONE, POS_FLAG_FULL, POS_FLAG_SWA };  // LayerType.pos: the flag that sets its positions

typedef struct Model Model;
typedef struct {
    char letter;       // in -p, --freeze, checkpoints and logs
    const char* name;
    int attention;     // softmax attention over (q, k, v): its heads have retrieval scores, lse
    int windowed;      // each query sees the last W keys only (-w)
    int pos;           // POS_FLAG_*: --pos-full or --pos-swa picks RoPE or NoPE for it
    void (*forward)(Model* m, int l);   // ln1 -> the mixer -> atty, of layer l
    void (*backward)(Model* m, int l);  // datty -> dln1 (added) and its parameters' gradients
    double (*flops)(const Config* c, double keys);  // forward FLOPs per token past its projections
} LayerType;

static void attn_mixer_forward(Model* m, int l);
static void attn_mixer_backward(Model* m, int l);
static void rec_mixer_forward(Model* m, int l);
static void rec_mixer_backward(Model* m, int l);
// QKᵀ and PV: 4·C FLOPs per key a query sees (keys: (T+1)/2 on average under the causal mask)
static double full_attn_flops(const Config* c, double keys) { return 4.0 * c->n_embd * keys; }
static double swa_flops(const Config* c, double keys) { return 4.0 * c->n_embd * (c->window < keys ? c->window : keys); }
// per head 4 D×D products per token (S'k, u kᵀ, S q, the decay): 8·C·D
static double rec_flops(const Config* c, double keys) { (void)keys; return 8.0 * c->n_embd * (c->n_embd / c->n_head); }

#ifndef LAYER_TYPES_EXTRA
#define LAYER_TYPES_EXTRA  // rows a test adds (test_grad.c)
#endif
static const LayerType LAYER_TYPES[] = {
    {'F', "full attention", 1, 0, POS_FLAG_FULL, attn_mixer_forward, attn_mixer_backward, full_attn_flops},
    {'S', "sliding-window attention", 1, 1, POS_FLAG_SWA, attn_mixer_forward, attn_mixer_backward, swa_flops},
    {'R', "recurrent (Gated DeltaNet / gla)", 0, 0, POS_FLAG_NONE, rec_mixer_forward, rec_mixer_backward, rec_flops},
    LAYER_TYPES_EXTRA
};
#define N_LAYER_TYPES ((int)(sizeof(LAYER_TYPES) / sizeof(LAYER_TYPES[0])))

// The row of a letter; NULL if none has it.
static const LayerType* layer_type(char letter) {
    for (int i = 0; i < N_LAYER_TYPES; i++) {
        if (LAYER_TYPES[i].letter == letter && letter != '\0') { return &LAYER_TYPES[i]; }
    }
    return NULL;
}

// "F, S, R": the known letters, for error messages
static const char* layer_letters(void) {
    static char buf[4 * N_LAYER_TYPES + 1];
    buf[0] = '\0';
    for (int i = 0; i < N_LAYER_TYPES; i++) {
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%c", i ? ", " : "", LAYER_TYPES[i].letter);
    }
    return buf;
}

// The row of layer l of a config (config_make admits only known letters)
static const LayerType* layer_type_at(const Config* c, int l) { return layer_type(c->pattern[l]); }

// The keys a query of layer l sees back: W for a windowed layer, 0 = all
static int layer_window(const Config* c, int l) { return layer_type_at(c, l)->windowed ? c->window : 0; }

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
    if (pattern == NULL || pattern[0] == '\0') { die("-p: empty layer pattern, expected letters among %s (e.g. SSSF)", layer_letters()); }
    for (const char* p = pattern; *p; p++) {
        if (!layer_type(*p)) { die("-p %s: layer pattern has '%c', expected only the layer types %s", pattern, *p, layer_letters()); }
    }
    int plen = (int)strlen(pattern);
    if (plen > MAX_LAYERS) { die("-p: a pattern of %d layers, at most %d", plen, MAX_LAYERS); }
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
enum { INIT_NONE, INIT_ONES, INIT_NORMAL, INIT_NORMAL_OUT, INIT_CONV, INIT_ALOG, INIT_DTBIAS };  // NONE: activations
enum { ANY_MIXER, GDN_ONLY };   // TensorKind.gdn_only
enum { NO_DECAY, DECAY };       // TensorKind.decay
enum { STORE_X, STORE_FP32 };   // TensorKind.fp32: activations in the build's floatX, or fp32 statistics

typedef struct {
    const char* name;
    const char* types;  // letters of the layer types that have it ("*": every block); "" for the model-level tensors
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
    [P_LN1]    = {"ln1_w",    "*",    DIM_1,   DIM_C,  ANY_MIXER,  NO_DECAY,  INIT_ONES}, // (C)
    [P_WQKV]   = {"wqkv",     "FSR",  DIM_3C,  DIM_C,  ANY_MIXER,  DECAY,     INIT_NORMAL}, // (3C, C) rows q|k|v
    [P_WG]     = {"wg",       "R",    DIM_C,   DIM_C,  ANY_MIXER,  DECAY,     INIT_NORMAL}, // (C, C) output gate
    [P_WBETA]  = {"wbeta",    "R",    DIM_H,   DIM_C,  GDN_ONLY,   DECAY,     INIT_NORMAL}, // (H, C) delta-rule strength
    [P_WA]     = {"wa",       "R",    DIM_H,   DIM_C,  ANY_MIXER,  DECAY,     INIT_NORMAL}, // (H, C) decay input
    [P_CONV]   = {"conv_w",   "R",    DIM_3C,  DIM_K,  ANY_MIXER,  NO_DECAY,  INIT_CONV}, // (3C, 4) depthwise causal conv
    [P_ALOG]   = {"A_log",    "R",    DIM_1,   DIM_H,  ANY_MIXER,  NO_DECAY,  INIT_ALOG}, // (H)
    [P_DTBIAS] = {"dt_bias",  "R",    DIM_1,   DIM_H,  ANY_MIXER,  NO_DECAY,  INIT_DTBIAS}, // (H)
    [P_ONORM]  = {"onorm_w",  "R",    DIM_1,   DIM_D,  ANY_MIXER,  NO_DECAY,  INIT_ONES}, // (D) per-head RMSNorm of o
    [P_WO]     = {"wo",       "*",    DIM_C,   DIM_C,  ANY_MIXER,  DECAY,     INIT_NORMAL_OUT}, // (C, C)
    [P_LN2]    = {"ln2_w",    "*",    DIM_1,   DIM_C,  ANY_MIXER,  NO_DECAY,  INIT_ONES}, // (C)
    [P_W1]     = {"w1",       "*",    DIM_F,   DIM_C,  ANY_MIXER,  DECAY,     INIT_NORMAL}, // (F, C) silu branch
    [P_W3]     = {"w3",       "*",    DIM_F,   DIM_C,  ANY_MIXER,  DECAY,     INIT_NORMAL}, // (F, C) linear branch
    [P_W2]     = {"w2",       "*",    DIM_C,   DIM_F,  ANY_MIXER,  DECAY,     INIT_NORMAL_OUT}, // (C, F)
};
// model-level parameters: wte first, lnf_w after the layers
static const TensorKind PARAM_WTE = {"wte", "", DIM_VP, DIM_C, ANY_MIXER, DECAY, INIT_NORMAL, STORE_X}; // (Vp, C), tied LM head
static const TensorKind PARAM_LNF = {"lnf_w", "", DIM_1, DIM_C, ANY_MIXER, NO_DECAY, INIT_ONES, STORE_X}; // (C)

// per-layer activations, each (B, T, dim0, dim1)
enum { A_RESID, A_LN1, A_RSTD1, A_QKV, A_QKVR, A_LSE, A_CONV, A_QKVA, A_QN, A_KN, A_GPRE, A_BPRE,
       A_APRE, A_BETA, A_GATE, A_STATE, A_O, A_ORSTD, A_ON, A_ATTY, A_RESID2, A_LN2, A_RSTD2,
       A_H1, A_H3, A_HMID, NUM_LAYER_ACTS };
static const TensorKind LAYER_ACTS[NUM_LAYER_ACTS] = {
    [A_RESID]  = {"resid",   "*",    DIM_1,  DIM_C,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // block input x
    [A_LN1]    = {"ln1",     "*",    DIM_1,  DIM_C,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // RMSNorm(x)
    [A_RSTD1]  = {"rstd1",   "*",    DIM_1,  DIM_1,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_FP32}, // its 1/rms
    [A_QKV]    = {"qkv",     "FSR",  DIM_1,  DIM_3C,   ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // ln1 · wqkvᵀ, q|k|v
    [A_QKVR]   = {"qkvr",    "FS",   DIM_1,  DIM_3C,   ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // q,k rotated (or copied, NoPE), v copied
    [A_LSE]    = {"lse",     "FS",   DIM_1,  DIM_H,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_FP32}, // softmax log-sum-exp per (b,t,h)
    [A_CONV]   = {"conv",    "R",    DIM_1,  DIM_3C,   ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // causal conv of qkv
    [A_QKVA]   = {"qkva",    "R",    DIM_1,  DIM_3C,   ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // silu(conv)
    [A_QN]     = {"qn",      "R",    DIM_1,  DIM_C,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // L2-normalised q, times 1/sqrt(D)
    [A_KN]     = {"kn",      "R",    DIM_1,  DIM_C,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // L2-normalised k
    [A_GPRE]   = {"gpre",    "R",    DIM_1,  DIM_C,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // ln1 · wgᵀ (output gate before silu)
    [A_BPRE]   = {"bpre",    "R",    DIM_1,  DIM_H,    GDN_ONLY,   NO_DECAY,  INIT_NONE,  STORE_X}, // ln1 · wbetaᵀ
    [A_APRE]   = {"apre",    "R",    DIM_1,  DIM_H,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // ln1 · waᵀ
    [A_BETA]   = {"beta",    "R",    DIM_1,  DIM_H,    GDN_ONLY,   NO_DECAY,  INIT_NONE,  STORE_FP32}, // sigmoid(bpre)
    [A_GATE]   = {"gate",    "R",    DIM_1,  DIM_H,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_FP32}, // log alpha = -exp(A_log) softplus(apre + dt_bias)
    [A_STATE]  = {"state",   "R",    DIM_1,  DIM_HDD,  ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_FP32}, // S (H, D, D), S[i][j]: i value dim, j key dim; see act_layout
    [A_O]      = {"o",       "R",    DIM_1,  DIM_C,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // S_t q_t
    [A_ORSTD]  = {"orstd",   "R",    DIM_1,  DIM_H,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_FP32}, // per-head 1/rms of o
    [A_ON]     = {"on",      "R",    DIM_1,  DIM_C,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // RMSNorm_head(o)
    [A_ATTY]   = {"atty",    "*",    DIM_1,  DIM_C,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // mixer output before wo
    [A_RESID2] = {"resid2",  "*",    DIM_1,  DIM_C,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // x + mixer
    [A_LN2]    = {"ln2",     "*",    DIM_1,  DIM_C,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X},
    [A_RSTD2]  = {"rstd2",   "*",    DIM_1,  DIM_1,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_FP32},
    [A_H1]     = {"h1",      "*",    DIM_1,  DIM_F,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // ln2 · w1ᵀ
    [A_H3]     = {"h3",      "*",    DIM_1,  DIM_F,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // ln2 · w3ᵀ
    [A_HMID]   = {"hmid",    "*",    DIM_1,  DIM_F,    ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // silu(h1) * h3
};
// model-level activations, after the layers
enum { G_RESID, G_LNF, G_RSTDF, G_LOGITS, G_LSE, G_LOSSES, NUM_GLOBAL_ACTS };
static const TensorKind GLOBAL_ACTS[NUM_GLOBAL_ACTS] = {
    [G_RESID]  = {"residf",  "",  DIM_1,  DIM_C,   ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X}, // output of the last block
    [G_LNF]    = {"lnf",     "",  DIM_1,  DIM_C,   ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X},
    [G_RSTDF]  = {"rstdf",   "",  DIM_1,  DIM_1,   ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_FP32},
    [G_LOGITS] = {"logits",  "",  DIM_1,  DIM_VP,  ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_X},
    [G_LSE]    = {"lse",     "",  DIM_1,  DIM_1,   ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_FP32}, // log-sum-exp over the V real logits
    [G_LOSSES] = {"losses",  "",  DIM_1,  DIM_1,   ANY_MIXER,  NO_DECAY,  INIT_NONE,  STORE_FP32}, // per-token loss, 0 where the target is masked
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
    if (type != 0 && k->types[0] != '*' && strchr(k->types, type) == NULL) { return 0; }
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

// How a layout stores the activations. The CPU reference keeps every tensor whole
// (ACT_STORE_CPU); the GPU trainer stores less (train_hybrid.cu's gpu_model_size_acts):
//   state_every  the recurrent state is saved every this many tokens: the CPU keeps all of them (1),
//                the GPU's chunked recurrence only those entering a chunk (DELTA_CHUNK), so its
//                state takes B·ceil(T/64)·H·D·D floats instead of B·T·H·D·D
//   logit_rows   rows of the logits buffer, 0 for one per token: the GPU forms the logits and their
//                gradient a chunk of rows at a time and never holds them whole
//   lean         1: leave out qkv of F/S layers (the GPU rotates it in place, in qkvr) and conv of R
//                layers (the GPU recomputes it from qkv in the backward); an R layer's qkv holds its
//                whole input projection, rows qkv | gpre | bpre | apre (rec_proj_width), the output
//                of one matmul, and gpre, bpre, apre are left out as tensors of their own
//   fp32_units   layout units of one fp32 statistic: 1 on the CPU (all `real`), 2 in a bf16 GPU build
//                (so one allocation holds both types)
//   align        every tensor starts on a multiple of this many units (the GPU: 16 bytes)
typedef struct {
    int state_every;
    size_t logit_rows;
    int lean;
    size_t fp32_units, align;
} ActStore;
static const ActStore ACT_STORE_CPU = {1, 0, 0, 1, 1};

// Columns of an R layer's input projection: qkv (3C) | gpre (C) | bpre (H, gdn only) | apre (H),
// the outputs of wqkv, wg, wbeta, wa (adjacent rows of the parameter buffer)
static size_t rec_proj_cols(const Config* c) {
    return 4 * (size_t)c->n_embd + (c->mixer == MIXER_GDN ? 2 : 1) * (size_t)c->n_head;
}
// Its row width in a lean layout: padded to a multiple of align units, so every row starts on 16 bytes
static size_t rec_proj_width(const Config* c, size_t align) {
    return (rec_proj_cols(c) + align - 1) / align * align;
}

// Activations for a (B,T) batch: for each layer its LAYER_ACTS, then GLOBAL_ACTS. Every tensor has
// one row per token, except the recurrent state and the logits (ActStore); offsets count units.
static Layout act_layout(const Config* c, int B, int T, const ActStore* st) {
    Layout lo;
    memset(&lo, 0, sizeof(lo));
    size_t N = (size_t)B * T;
    for (int l = 0; l < c->n_layer; l++) {
        char type = c->pattern[l];
        int attention = layer_type(type)->attention;
        // a layer with the gate projection wg (R) keeps its adjacent input projections as one tensor in qkv
        int proj_merged = tensor_numel(c, &LAYER_PARAMS[P_WG], type) > 0;
        for (int k = 0; k < NUM_LAYER_ACTS; k++) {
            const TensorKind* kind = &LAYER_ACTS[k];
            size_t rows = k == A_STATE ? (size_t)B * ((T + st->state_every - 1) / st->state_every) : N;
            int merged = k == A_GPRE || k == A_BPRE || k == A_APRE;  // into qkv (R layers)
            int left_out = st->lean && ((k == A_QKV && attention) || k == A_CONV || merged);
            size_t numel = left_out ? 0 : rows * tensor_numel(c, kind, type);
            if (st->lean && k == A_QKV && proj_merged) { numel = rows * rec_proj_width(c, st->align); }
            lo.layer_off[l][k] = layout_add(&lo, kind, l, numel, kind->fp32 ? st->fp32_units : 1, st->align);
        }
    }
    for (int k = 0; k < NUM_GLOBAL_ACTS; k++) {
        const TensorKind* kind = &GLOBAL_ACTS[k];
        size_t rows = k == G_LOGITS && st->logit_rows > 0 && st->logit_rows < N ? st->logit_rows : N;
        lo.global_off[k] = layout_add(&lo, kind, -1, rows * tensor_numel(c, kind, 0), kind->fp32 ? st->fp32_units : 1, st->align);
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

struct Model {
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
    char freeze[N_LAYER_TYPES + 1]; // layer types whose mixer weights stay at their init (--freeze): no gradient, no update
    uint64_t ablate;    // evals only: bit l set = layer l's mixer output replaced (mixer_ablate)
    const real* ablate_with; // (L, C) what replaces layer l's atty, row l (its mean); NULL: zeros
};

static real* param(const Model* m, int l, int k) { return m->params + m->pl.layer_off[l][k]; }
static real* grad(const Model* m, int l, int k) { return m->grads + m->pl.layer_off[l][k]; }
static real* act(const Model* m, int l, int k) { return m->acts + m->al.layer_off[l][k]; }
static real* dact(const Model* m, int l, int k) { return m->dacts + m->al.layer_off[l][k]; }
static real* gparam(const Model* m, int k) { return m->params + m->pl.global_off[k]; }
static real* ggrad(const Model* m, int k) { return m->grads + m->pl.global_off[k]; }
static real* gact(const Model* m, int k) { return m->acts + m->al.global_off[k]; }
static real* gdact(const Model* m, int k) { return m->dacts + m->al.global_off[k]; }

// Draws every parameter of layout pl from rng in layout order (README.md, "The model": init). Padded wte rows
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
    m->al = act_layout(&m->cfg, B, T, &ACT_STORE_CPU);
    m->acts = (real*)calloc_check(m->al.total, sizeof(real));
    m->dacts = (real*)calloc_check(m->al.total, sizeof(real));
    m->B = B;
    m->T = T;
}

// RoPE or NoPE for layer l: the value of the flag its type names
static int layer_pos(const Config* c, int l) {
    int flag = layer_type_at(c, l)->pos;
    return flag == POS_FLAG_FULL ? c->pos_full : flag == POS_FLAG_SWA ? c->pos_swa : POS_NOPE;
}

// Is parameter tensor sp a mixer weight (wqkv .. wo: the mixer's projections, conv, gates, norm) of
// a layer whose type is in `types`? Those are the tensors --freeze holds at their init.
static int param_frozen(const TensorSpec* sp, const Config* c, const char* types) {
    if (sp->layer < 0 || types[0] == '\0' || strchr(types, c->pattern[sp->layer]) == NULL) { return 0; }
    return sp->kind >= &LAYER_PARAMS[P_WQKV] && sp->kind <= &LAYER_PARAMS[P_WO];
}

// Layer ablation (evals): the mixer's output atty (N, C) replaced by one row `with` (C), its mean
// over the eval set, or by zeros (with NULL). Since wo is linear, this replaces the mixer's
// contribution to the residual stream by its mean.
static void mixer_ablate(real* atty, const real* with, int N, int C) {
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < C; i++) { atty[(size_t)n * C + i] = with ? with[i] : 0; }
    }
}

// Attention mixer (F, or S with its window): ln1 -> qkv -> rope -> attention -> atty
static void attn_mixer_forward(Model* m, int l) {
    const Config* c = &m->cfg;
    int B = m->B, T = m->T, C = c->n_embd, H = c->n_head, N = B * T;
    int window = layer_window(c, l);
    matmul_forward(act(m, l, A_QKV), act(m, l, A_LN1), param(m, l, P_WQKV), N, C, 3 * C);
    rope_forward(act(m, l, A_QKVR), act(m, l, A_QKV), B, T, C, H, layer_pos(c, l) == POS_ROPE, c->rope_theta);
    attention_forward(act(m, l, A_ATTY), act(m, l, A_LSE), act(m, l, A_QKVR), B, T, C, H, window);
}
static void attn_mixer_backward(Model* m, int l) {
    const Config* c = &m->cfg;
    int B = m->B, T = m->T, C = c->n_embd, H = c->n_head, N = B * T;
    int window = layer_window(c, l);
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
        layer_type_at(c, l)->forward(m, l);
        if (m->ablate >> l & 1) { mixer_ablate(act(m, l, A_ATTY), m->ablate_with ? m->ablate_with + (size_t)l * C : NULL, N, C); }
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
        layer_type_at(c, l)->backward(m, l);
        rmsnorm_backward(dact(m, l, A_RESID), grad(m, l, P_LN1), dact(m, l, A_LN1), act(m, l, A_RESID), param(m, l, P_LN1),
                         act(m, l, A_RSTD1), N, C);
        residual_add(dact(m, l, A_RESID), dact(m, l, A_RESID2), (size_t)N * C);
    }
    encoder_backward(ggrad(m, PG_WTE), dact(m, 0, A_RESID), m->inputs, N, C);
    for (int s = 0; s < m->pl.n; s++) {  // frozen mixers: no gradient (so none in the norm either)
        const TensorSpec* sp = &m->pl.spec[s];
        if (param_frozen(sp, c, m->freeze)) { memset(m->grads + sp->offset, 0, sp->numel * sizeof(real)); }
    }
}

// ----------------------------------------------------------------------------
// Optimizer: AdamW with weight decay only on the tensors whose table row says so, global-norm
// clipping, and the LR schedule.

enum { SCHED_COSINE, SCHED_WSD };
static const char* schedule_name(int s) { return s == SCHED_WSD ? "wsd" : "cosine"; }  // the --schedule spelling

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
        if (param_frozen(sp, &m->cfg, m->freeze)) { continue; }  // not even weight decay
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

#endif // HYBRID_CPU_H
