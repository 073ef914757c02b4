/*
train_hybrid.cu — trains a hybrid of full attention (F), sliding-window attention (S) and Gated
DeltaNet (R) layers on one GPU, or data-parallel on several (--gpus N, NCCL). The model is
hybrid_cpu.h's (README.md, "The model"), layer by layer: the same tensor tables and parameter
layout, the same forward/backward lists (the activations stored leaner: ActStore), so a GPU run can
be diffed against the CPU reference tensor by tensor (test/test_model_gpu.cu does: logits, loss,
every parameter gradient).

    make train_hybrid && ./train_hybrid               # built-in data, the default SSSF hybrid
    ./train_hybrid -p SRF -w 128 --pos-full nope      # any pattern, window, positional encoding
    ./train_hybrid --gpus 2                            # data parallel on 2 GPUs of this host
    ./train_hybrid -h                                  # every flag with its default

Precision (make PRECISION=BF16|FP32, cuda_common.cuh's floatX): activations and the parameter copy the
kernels read are floatX; master weights, gradients, AdamW state and the statistics are fp32.

Memory, all on the GPU, one allocation each (offsets from hybrid_cpu.h's param_layout/act_layout):
    params                          (P)   floatX: wte (Vp,C), per layer its LAYER_PARAMS, lnf_w (C)
    master, grads, adam_m, adam_v   (P)   fp32, the same layout (master = params in the FP32 build)
    acts                            (A)   per layer its LAYER_ACTS for (B,T), stored lean (ActStore):
                                          the recurrent state only at chunk entries, no qkv in F/S
                                          layers (rotated in place: qkvr), no conv in R layers
                                          (recomputed), an R layer's qkv the (B,T,P) output of its
                                          four input projections (rec_proj) — then residf, lnf, logits (logit_rows, Vp):
                                          one chunk of rows, lse, losses; floatX units, a tensor marked
                                          fp32 (rstd, lse, beta, gate, state, losses) takes
                                          sizeof(float)/sizeof(floatX) units per element (act32),
                                          every tensor starts on 16 bytes
    dlayer                                gradients of one layer's activations, reused by every layer:
                                          the gradient of tensor k of layer l sits at the offset k has
                                          inside layer l's block of acts; between a training forward
                                          and its backward it holds dlnf (B,T,C)
    dresid                          (B,T,C) dL/d(residual stream), carried down through the layers
The LM head and the cross-entropy run in chunks of logit_rows rows, in the training forward: a chunk's
logits, their softmax statistics and at once their gradient (over the logits), then its share of
dlnf and dwte; the (B·T, Vp) logits are never held whole. An R layer's four input projections are
one matmul (rec_proj). Activation gradients are written (=) by the one kernel that produces them;
parameter gradients are accumulated (+=), so gradient accumulation is repetition.
Every reduction runs in a fixed order: the same seed gives the same losses, bit for bit.

defines: GpuModel (its kernels, one family per file, are kernels/: encoder, rmsnorm, rope, swiglu,
         crossentropy, adamw, matmul on cuBLAS; the mixers are full_attn.cuh, attention_swa.cuh and
         recurrent_mixer.cuh) (build, forward, zero_grad,
         backward, grad_norm, update, save), data parallel over GPUs (Dist: dist_init, dist_sum,
         dist_max, dist_sum_grads; NCCL, built with MULTI_GPU), the training loop (main, unless TESTING)
*/
#include <cublas_v2.h>
#include <errno.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef MULTI_GPU
#include <nccl.h>
#endif
#include "train_common.h"       // defines: flags, checkpoints, needle scoring, logs, resume (and hybrid_cpu.h: Config, tensor tables, layouts, params_init, OptConfig, lr_at; dataloader.h)
#include "attention_swa.cuh"    // defines: swa_forward_gpu/backward (and full_attn.cuh: attention_forward_gpu/backward)
#include "recurrent_mixer.cuh"  // defines: conv_silu, l2norm, gates, delta_rule forward/backward on the GPU

// The trainer's own kernels, one family per file (kernels/); each launcher takes the GpuContext first
#include "kernels/gpu_context.cuh"   // defines: GpuContext, cublasCheck, OUT_WRITE/OUT_ADD
#include "kernels/encoder.cuh"       // defines: encoder_forward_gpu, encoder_backward_gpu
#include "kernels/rmsnorm.cuh"       // defines: rmsnorm_forward_gpu, residual_rmsnorm_forward_gpu, rmsnorm_backward_gpu
#include "kernels/rope.cuh"          // defines: rope_forward_gpu, rope_backward_gpu
#include "kernels/swiglu.cuh"        // defines: swiglu_forward_gpu, swiglu_backward_gpu
#include "kernels/crossentropy.cuh"  // defines: crossentropy_gpu, gather_rows_kernel, broadcast_row_kernel
#include "kernels/adamw.cuh"         // defines: AdamwTensor, adamw_kernel, to_floatX_kernel, sumsq_kernel
#include "kernels/matmul.cuh"        // defines: matmul_forward(_ld)_gpu, matmul_backward(_ld)_gpu

// ----------------------------------------------------------------------------
// The model on the GPU

// Rows of one chunk of the LM head and cross-entropy: (LOGIT_ROWS, Vp) logits in floatX (412 MB at
// gpt2s' Vp 50304 in bf16, instead of 3.3 GB for B 8 x T 4096); large enough that the head's
// matmuls still fill the GPU.
#define LOGIT_ROWS 4096

typedef struct {
    Config cfg;
    GpuContext ctx;
    Layout pl;             // parameters; master, grads, adam_m, adam_v share it
    floatX* params;        // (pl.total) each, on the GPU: what the kernels read
    float* master;         // fp32 master weights AdamW updates (= params in the FP32 build)
    float* grads;
    float* adam_m;
    float* adam_v;
    AdamwTensor* adamw_tensors;  // (adamw_n) each updated tensor's span and decay, for the one-launch AdamW
    int adamw_n;                 // pl.n less the frozen tensors
    int logit_rows;        // rows of one chunk of the LM head (LOGIT_ROWS; the tests set fewer)
    Layout al;             // activations for the current (B,T), recurrent state at chunk entries
    floatX* acts;          // (al.total units: fp32 statistics take sizeof(float)/sizeof(floatX) each)
    floatX* dlayer;        // gradients of one layer's activations (the largest layer's block of al)
    floatX* dresid;        // (B,T,C)
    float* scratch;        // norm weight-gradient slices (NORM_SLICES * max(C, D)) and sum-of-squares partials
    float* rec_scratch;    // R layers' scratch: the chunked recurrence's tiles (delta_rule_scratch_floats), then the conv
                           // backward's partials (conv_scratch_floats); NULL without R layers
    int* inputs;           // (B,T) on the GPU
    int* targets;          // (B,T)
    int* enc_index;        // encoder backward: order (N), start (N+1), tok (N)
    int* logit_index;      // (logit_rows) rows gathered by gpu_model_logits
    int enc_buckets;
    float* rope_cos;       // (T, D/2)
    float* rope_sin;
    float* losses_host;    // (B,T) per-token losses copied back
    int* inputs_host;      // (B,T) copies of the last forward's tokens
    int* targets_host;
    int* index_host;       // (3N+1) encoder index built on the host
    int* bucket_count;     // (Vp) host scratch of encoder_index
    size_t acts_cap, dlayer_cap, n_cap, delta_cap; // allocated sizes (elements, rows, floats); they only grow
    int t_cap;
    int B, T;              // activation shape; 0 until the first forward
    double mean_loss;      // of the last forward; -1 without targets
    int head_grad;         // 1 after a training forward, until its backward
    size_t device_bytes;   // GPU memory allocated for the model
    size_t fixed_bytes;    // ... of it, what does not depend on the batch (parameters, optimizer, scratch)
    char freeze[N_LAYER_TYPES + 1]; // layer types whose mixer weights stay at their init (gpu_model_set_freeze)
    uint64_t ablate;       // evals only: bit l set = layer l's mixer output replaced (hybrid_cpu.h mixer_ablate)
    const floatX* ablate_with; // (L, C) on the GPU, row l replaces layer l's atty; NULL: zeros
} GpuModel;

// The GPU mixers: one row per row of LAYER_TYPES (hybrid_cpu.h), found by letter; the mixers are
// defined below with the CPU model's names. A layer type without a row here stops at start
// (gpu_check_config).
static void attn_mixer_forward(GpuModel* m, int l);
static void attn_mixer_backward(GpuModel* m, int l);
static void rec_mixer_forward(GpuModel* m, int l);
static void rec_mixer_backward(GpuModel* m, int l);
typedef struct {
    char letter;
    void (*forward)(GpuModel* m, int l);   // ln1 -> the mixer -> atty, of layer l
    void (*backward)(GpuModel* m, int l);  // datty -> dln1 (added) and its parameters' gradients
} GpuMixer;
static const GpuMixer GPU_MIXERS[] = {
    {'F', attn_mixer_forward, attn_mixer_backward},
    {'S', attn_mixer_forward, attn_mixer_backward},
    {'R', rec_mixer_forward, rec_mixer_backward},
};
static const GpuMixer* gpu_mixer(char letter) {
    for (size_t i = 0; i < sizeof(GPU_MIXERS) / sizeof(GPU_MIXERS[0]); i++) {
        if (GPU_MIXERS[i].letter == letter) { return &GPU_MIXERS[i]; }
    }
    return NULL;
}

// Does the config have a layer with attention (a retrieval score), one with the recurrence (a state)?
static int config_has_attention(const Config* c) {
    for (int l = 0; l < c->n_layer; l++) { if (layer_type_at(c, l)->attention) { return 1; } }
    return 0;
}
static int config_has_recurrence(const Config* c) {
    for (int l = 0; l < c->n_layer; l++) { if (tensor_numel(c, &LAYER_ACTS[A_STATE], c->pattern[l]) > 0) { return 1; } }
    return 0;
}

// Views into the allocations: the same names as the CPU Model's (hybrid_cpu.h), overloaded on GpuModel.
static floatX* param(const GpuModel* m, int l, int k) { return m->params + m->pl.layer_off[l][k]; }
static float* grad(const GpuModel* m, int l, int k) { return m->grads + m->pl.layer_off[l][k]; }
static floatX* act(const GpuModel* m, int l, int k) { return m->acts + m->al.layer_off[l][k]; }
static floatX* dact(const GpuModel* m, int l, int k) { return m->dlayer + (m->al.layer_off[l][k] - m->al.layer_off[l][0]); }
static floatX* gparam(const GpuModel* m, int k) { return m->params + m->pl.global_off[k]; }
static float* ggrad(const GpuModel* m, int k) { return m->grads + m->pl.global_off[k]; }
static floatX* gact(const GpuModel* m, int k) { return m->acts + m->al.global_off[k]; }
// the fp32 statistics (TensorKind.fp32) of the same allocations
static float* act32(const GpuModel* m, int l, int k) { return (float*)act(m, l, k); }
static float* dact32(const GpuModel* m, int l, int k) { return (float*)dact(m, l, k); }
static float* gact32(const GpuModel* m, int k) { return (float*)gact(m, k); }

static void* gpu_malloc(GpuModel* m, size_t bytes, const char* what) {
    void* p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        die("out of GPU memory: %s needs %.2f GiB, %.2f GiB free of %.2f (model so far %.2f GiB); lower -B or -T",
            what, bytes / 1073741824.0, free_b / 1073741824.0, total_b / 1073741824.0, m->device_bytes / 1073741824.0);
    }
    m->device_bytes += bytes;
    return p;
}

// The model's config must fit the kernels: 16-byte vectors along rows, attention head dims with a
// kernel, the chunked recurrence's head dim limit.
static void gpu_check_config(const Config* c) {
    int D = c->n_embd / c->n_head;
    for (int l = 0; l < c->n_layer; l++) {
        if (!gpu_mixer(c->pattern[l])) {
            die("-p %s: layer type '%c' (%s) has no GPU mixer (GPU_MIXERS in train_hybrid.cu); train_cpu trains it", c->pattern,
                c->pattern[l], layer_type_at(c, l)->name);
        }
    }
    int has_attn = config_has_attention(c), has_rec = config_has_recurrence(c);
    if (has_attn && !attention_supports_head_dim(D)) { die("-C %d -H %d: head dim %d, the GPU attention takes 32, 64 or 128", c->n_embd, c->n_head, D); }
    if (c->n_embd % 8 || c->ffn % 8 || D % 16 || c->padded_vocab % 8) {
        die("-C %d -H %d: the GPU kernels take C, the FFN width and the padded vocab in multiples of 8 and the head dim in "
            "multiples of 16 (16-byte vectors), got C %d, FFN %d, vocab %d, head dim %d", c->n_embd, c->n_head, c->n_embd, c->ffn,
            c->padded_vocab, D);
    }
    if (has_rec && !delta_rule_head_dim_ok(D)) {
        die("-C %d -H %d: head dim %d, the GPU recurrent mixer takes " DELTA_HEAD_DIMS, c->n_embd, c->n_head, D);
    }
}

// The layer types whose mixer weights stay at their init (--freeze; hybrid_cpu.h param_frozen): the
// backward zeroes their gradients and the AdamW table leaves them out (the kernel skips elements
// past the end of the tensor before them), so not even weight decay moves them.
static void gpu_model_set_freeze(GpuModel* m, const char* types) {
    snprintf(m->freeze, sizeof(m->freeze), "%s", types);
    AdamwTensor* spans = (AdamwTensor*)malloc_check((size_t)m->pl.n * sizeof(AdamwTensor));
    int n = 0;
    for (int s = 0; s < m->pl.n; s++) {
        const TensorSpec* sp = &m->pl.spec[s];
        if (param_frozen(sp, &m->cfg, m->freeze)) { continue; }
        spans[n].start = sp->offset;
        spans[n].end = sp->offset + sp->numel;
        spans[n++].decay = sp->kind->decay ? 1.0f : 0.0f;
    }
    m->adamw_n = n;
    cudaCheck(cudaMemcpy(m->adamw_tensors, spans, (size_t)n * sizeof(AdamwTensor), cudaMemcpyHostToDevice));
    free(spans);
}

// Allocates params, grads and AdamW state, and uploads the parameters: from host_params when given
// (a checkpoint, or a CPU model in the tests), else drawn with params_init from seed.
static void gpu_model_build(GpuModel* m, const Config* c, const GpuContext* ctx, const float* host_params, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    gpu_check_config(c);
    m->cfg = *c;
    m->ctx = *ctx;
    m->pl = param_layout(c);
    size_t n = m->pl.total;
    m->params = (floatX*)gpu_malloc(m, n * sizeof(floatX), "parameters");
#if defined(PRECISION_BF16)
    m->master = (float*)gpu_malloc(m, n * sizeof(float), "master weights");
#else
    m->master = m->params;
#endif
    m->grads = (float*)gpu_malloc(m, n * sizeof(float), "gradients");
    m->adam_m = (float*)gpu_malloc(m, n * sizeof(float), "AdamW m");
    m->adam_v = (float*)gpu_malloc(m, n * sizeof(float), "AdamW v");
    float* init = NULL;
    if (host_params == NULL) {
        init = (float*)malloc_check(n * sizeof(float));
        params_init(init, &m->pl, c, seed);
        host_params = init;
    }
    cudaCheck(cudaMemcpy(m->master, host_params, n * sizeof(float), cudaMemcpyHostToDevice));
    to_floatX_kernel<<<blocks_for(n, 256), 256, 0, ctx->stream>>>(m->params, m->master, n);
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaMemset(m->grads, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(m->adam_m, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(m->adam_v, 0, n * sizeof(float)));
    free(init);
    m->adamw_tensors = (AdamwTensor*)gpu_malloc(m, (size_t)m->pl.n * sizeof(AdamwTensor), "AdamW tensor table");
    gpu_model_set_freeze(m, "");
    size_t scratch = (size_t)NORM_SLICES * c->n_embd;
    m->scratch = (float*)gpu_malloc(m, (scratch > SUMSQ_BLOCKS ? scratch : SUMSQ_BLOCKS) * sizeof(float), "scratch");
    m->bucket_count = (int*)malloc_check((size_t)c->padded_vocab * sizeof(int));
    m->mean_loss = -1.0;
    m->logit_rows = LOGIT_ROWS;
    m->fixed_bytes = m->device_bytes;
}

static void gpu_model_free_acts(GpuModel* m) {
    cudaFreeAll(m->acts, m->dlayer, m->dresid, m->inputs, m->targets);
    cudaFreeAll(m->enc_index, m->logit_index, m->rope_cos, m->rope_sin, m->rec_scratch);
    free(m->losses_host); free(m->inputs_host); free(m->targets_host); free(m->index_host);
}

static void gpu_model_free(GpuModel* m) {
    gpu_model_free_acts(m);
    if ((void*)m->master != (void*)m->params) { cudaFreeAll(m->master); }
    cudaFreeAll(m->params, m->grads, m->adam_m, m->adam_v, m->adamw_tensors, m->scratch);
    free(m->bucket_count);
}

// Allocates everything sized by the batch: activations (acts_cap elements), the layer gradient block
// (dlayer_cap), the residual gradient and token buffers (n_cap rows), RoPE tables (t_cap positions),
// the recurrence's scratch (delta_cap floats, 0 without R layers). All of it counts in device_bytes.
static void gpu_model_alloc_acts(GpuModel* m, size_t acts_cap, size_t dlayer_cap, size_t n_cap, int t_cap, size_t delta_cap) {
    const Config* c = &m->cfg;
    m->device_bytes = m->fixed_bytes;
    m->rec_scratch = delta_cap > 0 ? (float*)gpu_malloc(m, delta_cap * sizeof(float), "recurrence scratch") : NULL;
    m->acts = (floatX*)gpu_malloc(m, acts_cap * sizeof(floatX), "activations");
    m->dlayer = (floatX*)gpu_malloc(m, dlayer_cap * sizeof(floatX), "layer gradients");
    m->dresid = (floatX*)gpu_malloc(m, n_cap * c->n_embd * sizeof(floatX), "residual gradient");
    m->inputs = (int*)gpu_malloc(m, n_cap * sizeof(int), "inputs");
    m->targets = (int*)gpu_malloc(m, n_cap * sizeof(int), "targets");
    m->enc_index = (int*)gpu_malloc(m, (3 * n_cap + 1) * sizeof(int), "encoder index");
    m->logit_index = (int*)gpu_malloc(m, (size_t)m->logit_rows * sizeof(int), "logit rows");
    int half = c->n_embd / c->n_head / 2;  // rope tables (t_cap, D/2): row t serves every T > t
    float* cs = (float*)malloc_check((size_t)t_cap * half * 2 * sizeof(float));
    for (int t = 0; t < t_cap; t++) {
        for (int i = 0; i < half; i++) {
            double co, si;
            rope_angle(&co, &si, t, i, 2 * half, c->rope_theta);
            cs[(size_t)t * half + i] = (float)co;
            cs[(size_t)t_cap * half + (size_t)t * half + i] = (float)si;
        }
    }
    m->rope_cos = (float*)gpu_malloc(m, (size_t)t_cap * half * sizeof(float), "rope tables");
    m->rope_sin = (float*)gpu_malloc(m, (size_t)t_cap * half * sizeof(float), "rope tables");
    cudaCheck(cudaMemcpy(m->rope_cos, cs, (size_t)t_cap * half * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(m->rope_sin, cs + (size_t)t_cap * half, (size_t)t_cap * half * sizeof(float), cudaMemcpyHostToDevice));
    free(cs);
    m->losses_host = (float*)malloc_check(n_cap * sizeof(float));
    m->inputs_host = (int*)malloc_check(n_cap * sizeof(int));
    m->targets_host = (int*)malloc_check(n_cap * sizeof(int));
    m->index_host = (int*)malloc_check((3 * n_cap + 1) * sizeof(int));
    m->acts_cap = acts_cap;
    m->dlayer_cap = dlayer_cap;
    m->n_cap = n_cap;
    m->t_cap = t_cap;
    m->delta_cap = delta_cap;
}

// Lays the activations out for a (B,T) batch, stored lean (ActStore, hybrid_cpu.h): the logits one
// chunk of logit_rows rows, the recurrent state at chunk entries, F/S layers' qkv rotated in place,
// R layers' conv recomputed in the backward. The buffers only grow: training batches and the
// needle eval's (fewer, longer) batches share them, so switching between them allocates nothing.
static void gpu_model_size_acts(GpuModel* m, int B, int T) {
    if (m->B == B && m->T == T) { return; }
    const Config* c = &m->cfg;
    ActStore st = {DELTA_CHUNK, (size_t)m->logit_rows, 1, sizeof(float) / sizeof(floatX), 16 / sizeof(floatX)};
    Layout al = act_layout(c, B, T, &st);
    size_t layer_max = 0, N = (size_t)B * T;  // the largest layer block of the layout
    for (int l = 0; l < c->n_layer; l++) {
        size_t end = l + 1 < c->n_layer ? al.layer_off[l + 1][0] : al.global_off[0];
        if (end - al.layer_off[l][0] > layer_max) { layer_max = end - al.layer_off[l][0]; }
    }
    size_t delta = 0;
    if (config_has_recurrence(c)) {
        size_t rec = delta_rule_scratch_floats(B, T, c->n_embd, c->n_head), conv = conv_scratch_floats(B, T, 3 * c->n_embd);
        delta = rec > conv ? rec : conv;
    }
    if (al.total > m->acts_cap || layer_max > m->dlayer_cap || N > m->n_cap || T > m->t_cap || delta > m->delta_cap) {
        if (m->acts_cap > 0) { gpu_model_free_acts(m); }
        gpu_model_alloc_acts(m, al.total > m->acts_cap ? al.total : m->acts_cap, layer_max > m->dlayer_cap ? layer_max : m->dlayer_cap,
                             N > m->n_cap ? N : m->n_cap, T > m->t_cap ? T : m->t_cap, delta > m->delta_cap ? delta : m->delta_cap);
    }
    m->al = al;
    m->B = B;
    m->T = T;
}

// Groups the rows of a batch by token for encoder_backward_kernel (a counting sort, stable in n).
static int encoder_index(int* index, int* count, const int* tokens, int N, int Vp) {
    int *order = index, *start = index + N, *tok = index + 2 * N + 1;
    memset(count, 0, (size_t)Vp * sizeof(int));
    for (int n = 0; n < N; n++) { count[tokens[n]]++; }
    int buckets = 0, pos = 0;
    for (int v = 0; v < Vp; v++) {
        if (count[v] == 0) { continue; }
        tok[buckets] = v;
        start[buckets++] = pos;
        int c = count[v];
        count[v] = pos;  // now the next free slot of token v
        pos += c;
    }
    start[buckets] = pos;
    for (int n = 0; n < N; n++) { order[count[tokens[n]]++] = n; }
    return buckets;
}

static int layer_rope(const Config* c, int l) { return layer_pos(c, l) == POS_ROPE; }

// atty (N, C) replaced by the row `with` (C, on the GPU), or zeros with NULL (hybrid_cpu.h mixer_ablate)
static void mixer_ablate_gpu(const GpuContext* g, floatX* atty, const floatX* with, int N, int C) {
    if (with == NULL) {
        cudaCheck(cudaMemsetAsync(atty, 0, (size_t)N * C * sizeof(floatX), g->stream));
        return;
    }
    broadcast_row_kernel<<<blocks_for((size_t)N * C, 256), 256, 0, g->stream>>>(atty, with, N, C);
    cudaCheck(cudaGetLastError());
}

// Attention mixer (F or S): ln1 -> qkv -> rope -> attention -> atty. qkv is rotated in place (the
// backward never reads it): the matmul writes qkvr, rope turns it.
static void attn_mixer_forward(GpuModel* m, int l) {
    const Config* c = &m->cfg;
    const GpuContext* g = &m->ctx;
    int B = m->B, T = m->T, C = c->n_embd, H = c->n_head, N = B * T;
    floatX* qkvr = act(m, l, A_QKVR);
    matmul_forward_gpu(g, qkvr, act(m, l, A_LN1), param(m, l, P_WQKV), N, C, 3 * C, OUT_WRITE);
    rope_forward_gpu(g, qkvr, m->rope_cos, m->rope_sin, B, T, C, H, layer_rope(c, l));
    if (layer_type_at(c, l)->windowed) {
        swa_forward_gpu(act(m, l, A_ATTY), act32(m, l, A_LSE), act(m, l, A_QKVR), B, T, C, H, c->window, g->stream);
    } else {
        attention_forward_gpu(act(m, l, A_ATTY), act32(m, l, A_LSE), act(m, l, A_QKVR), B, T, C, H, 0, g->stream);
    }
}
// The attention backward's row scratch dout·out (B,T,H) lives in the lse slot of dlayer: lse has
// no gradient of its own.
static void attn_mixer_backward(GpuModel* m, int l) {
    const Config* c = &m->cfg;
    const GpuContext* g = &m->ctx;
    int B = m->B, T = m->T, C = c->n_embd, H = c->n_head, N = B * T;
    float* delta = dact32(m, l, A_LSE);
    if (layer_type_at(c, l)->windowed) {
        swa_backward_gpu(dact(m, l, A_QKVR), delta, dact(m, l, A_ATTY), act(m, l, A_ATTY), act32(m, l, A_LSE), act(m, l, A_QKVR),
                         B, T, C, H, c->window, g->stream);
    } else {
        attention_backward_gpu(dact(m, l, A_QKVR), delta, dact(m, l, A_ATTY), act(m, l, A_ATTY), act32(m, l, A_LSE),
                               act(m, l, A_QKVR), B, T, C, H, 0, g->stream);
    }
    floatX* dqkv = dact(m, l, A_QKVR);  // rotated back in place
    rope_backward_gpu(g, dqkv, m->rope_cos, m->rope_sin, B, T, C, H, layer_rope(c, l));
    matmul_backward_gpu(g, dact(m, l, A_LN1), grad(m, l, P_WQKV), dqkv, act(m, l, A_LN1), param(m, l, P_WQKV), N, C, 3 * C, OUT_WRITE);
}

// Recurrent mixer (R): ln1 -> qkv, g, beta, a -> conv+silu (the conv recomputed in the backward) -> L2 norms, gates
//                      -> chunked recurrence -> per-head RMSNorm -> silu(g) gate -> atty
// The four input projections are one matmul: wqkv, wg, wbeta, wa are adjacent rows of the parameter
// buffer (OC = 4C + 2H, gla 4C + H), their outputs the columns of one row of act(A_QKV), P wide
// (rec_proj_width: padded to 16 bytes): qkv at 0, gpre at 3C, bpre at 4C (gdn), apre after it.
// The gradients sit the same way in dlayer, so the backward is one matmul too.
typedef struct {
    int P, OC;                        // row stride, columns written
    int gpre, bpre, apre;             // column offsets
} RecProj;
static RecProj rec_proj(const Config* c) {
    int C = c->n_embd, H = c->n_head, gdn = c->mixer == MIXER_GDN;
    RecProj r = {(int)rec_proj_width(c, 16 / sizeof(floatX)), (int)rec_proj_cols(c), 3 * C, 4 * C, 4 * C + (gdn ? H : 0)};
    return r;
}
static void rec_mixer_forward(GpuModel* m, int l) {
    const Config* c = &m->cfg;
    const GpuContext* g = &m->ctx;
    int B = m->B, T = m->T, C = c->n_embd, H = c->n_head, D = C / H, N = B * T, gdn = c->mixer == MIXER_GDN;
    RecProj rp = rec_proj(c);
    floatX* proj = act(m, l, A_QKV);  // (N, P): qkv | gpre | bpre | apre
    matmul_forward_ld_gpu(g, proj, rp.P, act(m, l, A_LN1), param(m, l, P_WQKV), N, C, rp.OC, OUT_WRITE);
    conv_silu_forward_gpu(act(m, l, A_QKVA), proj, rp.P, param(m, l, P_CONV), B, T, 3 * C, g->stream);
    l2norm_forward_gpu(act(m, l, A_QN), act(m, l, A_QKVA), 3 * C, N, C, H, 1.0f / sqrtf((float)D), g->stream);
    l2norm_forward_gpu(act(m, l, A_KN), act(m, l, A_QKVA) + C, 3 * C, N, C, H, 1.0f, g->stream);
    gates_forward_gpu(gdn ? act32(m, l, A_BETA) : NULL, act32(m, l, A_GATE), gdn ? proj + rp.bpre : NULL, proj + rp.apre, rp.P,
                      param(m, l, P_ALOG), param(m, l, P_DTBIAS), N, H, g->stream);
    delta_rule_forward_gpu(act(m, l, A_O), act32(m, l, A_STATE), act(m, l, A_QN), act(m, l, A_KN), act(m, l, A_QKVA) + 2 * C,
                           3 * C, gdn ? act32(m, l, A_BETA) : NULL, act32(m, l, A_GATE), B, T, C, H, c->mixer, m->rec_scratch, g->stream);
    rmsnorm_forward_gpu(g, act(m, l, A_ON), act32(m, l, A_ORSTD), act(m, l, A_O), param(m, l, P_ONORM), N * H, D);
    swiglu_forward_gpu(g, act(m, l, A_ATTY), proj + rp.gpre, rp.P, act(m, l, A_ON), N, C);
}
static void rec_mixer_backward(GpuModel* m, int l) {
    const Config* c = &m->cfg;
    const GpuContext* g = &m->ctx;
    int B = m->B, T = m->T, C = c->n_embd, H = c->n_head, D = C / H, N = B * T, gdn = c->mixer == MIXER_GDN;
    RecProj rp = rec_proj(c);
    const floatX* proj = act(m, l, A_QKV);
    floatX* dproj = dact(m, l, A_QKV);  // the same columns: dqkv | dgpre | dbpre | dapre
    swiglu_backward_gpu(g, dproj + rp.gpre, dact(m, l, A_ON), dact(m, l, A_ATTY), proj + rp.gpre, rp.P, act(m, l, A_ON), N, C);
    rmsnorm_backward_gpu(g, dact(m, l, A_O), grad(m, l, P_ONORM), m->scratch, dact(m, l, A_ON), act(m, l, A_O),
                         param(m, l, P_ONORM), act32(m, l, A_ORSTD), N * H, D, OUT_WRITE);
    // v3 writes the raw q, k gradients itself (the L2 norms' backward in its last kernel: no round
    // trip of dq, dk through memory); v2 writes those of the normalised q, k
    int fused = delta_rule_uses_v3(D);
    float q_scale = 1.0f / sqrtf((float)D);
    delta_rule_backward_gpu(fused ? dact(m, l, A_QKVA) : dact(m, l, A_QN), fused ? dact(m, l, A_QKVA) + C : dact(m, l, A_KN),
                            dact(m, l, A_QKVA) + 2 * C, gdn ? dact32(m, l, A_BETA) : NULL, dact32(m, l, A_GATE), dact(m, l, A_O),
                            act32(m, l, A_STATE), act(m, l, A_QN), act(m, l, A_KN), act(m, l, A_QKVA) + 2 * C, 3 * C,
                            gdn ? act32(m, l, A_BETA) : NULL, act32(m, l, A_GATE), B, T, C, H, c->mixer, m->rec_scratch,
                            fused ? act(m, l, A_QKVA) : NULL, 3 * C, q_scale, g->stream);
    gates_backward_gpu(gdn ? dproj + rp.bpre : NULL, dproj + rp.apre, grad(m, l, P_ALOG), grad(m, l, P_DTBIAS),
                       gdn ? dact32(m, l, A_BETA) : NULL, dact32(m, l, A_GATE), gdn ? act32(m, l, A_BETA) : NULL, act32(m, l, A_GATE),
                       proj + rp.apre, rp.P, param(m, l, P_ALOG), param(m, l, P_DTBIAS), N, H, g->stream);
    if (!fused) {
        l2norm_backward_gpu(dact(m, l, A_QKVA), dact(m, l, A_QN), act(m, l, A_QKVA), 3 * C, N, C, H, q_scale, g->stream);
        l2norm_backward_gpu(dact(m, l, A_QKVA) + C, dact(m, l, A_KN), act(m, l, A_QKVA) + C, 3 * C, N, C, H, 1.0f, g->stream);
    }
    conv_silu_backward_gpu(dproj, grad(m, l, P_CONV), dact(m, l, A_QKVA), proj, rp.P, param(m, l, P_CONV), B, T, 3 * C, m->rec_scratch,
                           g->stream);
    matmul_backward_ld_gpu(g, dact(m, l, A_LN1), grad(m, l, P_WQKV), dproj, rp.P, act(m, l, A_LN1), param(m, l, P_WQKV), N, C, rp.OC,
                           OUT_WRITE);
}

// The LM head and the loss, a chunk of logit_rows rows at a time (lnf formed): the chunk's logits
// (one matmul), their lse and per-token losses, and with with_grad at once their gradient dloss
// (softmax - onehot) over the logits, then the chunk's rows of dlnf (=, in dlayer: idle until the
// backward, which starts from it) and its share of dwte (+=). One chunk of logits is all that is
// ever held.
static void gpu_model_head(GpuModel* m, float dloss, int with_grad) {
    const Config* c = &m->cfg;
    const GpuContext* g = &m->ctx;
    int C = c->n_embd, Vp = c->padded_vocab, N = m->B * m->T;
    floatX *logits = gact(m, G_LOGITS), *dlnf = m->dlayer;
    for (int n0 = 0; n0 < N; n0 += m->logit_rows) {
        int rows = N - n0 < m->logit_rows ? N - n0 : m->logit_rows;
        const floatX* lnf = gact(m, G_LNF) + (size_t)n0 * C;
        matmul_forward_gpu(g, logits, lnf, gparam(m, PG_WTE), rows, C, Vp, OUT_WRITE);
        crossentropy_gpu(g, logits, gact32(m, G_LOSSES) + n0, gact32(m, G_LSE) + n0, m->targets + n0, dloss, with_grad, rows, c->vocab, Vp);
        if (with_grad) {
            matmul_backward_gpu(g, dlnf + (size_t)n0 * C, ggrad(m, PG_WTE), logits, lnf, gparam(m, PG_WTE), rows, C, Vp, OUT_WRITE);
        }
    }
}

// Forward over inputs (B,T) on the host. With targets (B,T) (entries < 0 masked) it also computes
// the loss and returns the mean over unmasked targets; -1 without targets. grad_scale > 0 (training,
// with targets): the LM head's gradients of grad_scale x the mean loss are formed here, chunk by
// chunk (gpu_model_head), into m->grads (so gpu_model_zero_grad comes before) and dlnf, for
// gpu_model_backward to carry down the layers; 0: the loss alone (validation, evaluation). The
// logits are not kept: gpu_model_logits forms the rows wanted.
static double gpu_model_forward(GpuModel* m, const int* inputs, const int* targets, int B, int T, double grad_scale) {
    const Config* c = &m->cfg;
    const GpuContext* g = &m->ctx;
    int C = c->n_embd, F = c->ffn, L = c->n_layer, N = B * T;
    for (int n = 0; n < N; n++) {
        if (inputs[n] < 0 || inputs[n] >= c->vocab) { die("gpu_model_forward: input token %d at %d outside the vocabulary [0, %d)", inputs[n], n, c->vocab); }
        if (targets && targets[n] >= c->vocab) { die("gpu_model_forward: target token %d at %d outside the vocabulary [0, %d)", targets[n], n, c->vocab); }
    }
    gpu_model_size_acts(m, B, T);
    m->head_grad = 0;
    memcpy(m->inputs_host, inputs, (size_t)N * sizeof(int));
    cudaCheck(cudaMemcpyAsync(m->inputs, inputs, (size_t)N * sizeof(int), cudaMemcpyHostToDevice, g->stream));
    if (targets) {  // copied before the layers are queued: a copy from pageable memory may wait for the stream
        memcpy(m->targets_host, targets, (size_t)N * sizeof(int));
        cudaCheck(cudaMemcpyAsync(m->targets, targets, (size_t)N * sizeof(int), cudaMemcpyHostToDevice, g->stream));
    }
    encoder_forward_gpu(g, act(m, 0, A_RESID), m->inputs, gparam(m, PG_WTE), N, C);
    rmsnorm_forward_gpu(g, act(m, 0, A_LN1), act32(m, 0, A_RSTD1), act(m, 0, A_RESID), param(m, 0, P_LN1), N, C);
    for (int l = 0; l < L; l++) {
        // ln1 of layer l is formed: above for l = 0, else by the residual add ending layer l - 1
        gpu_mixer(c->pattern[l])->forward(m, l);
        if (m->ablate >> l & 1) { mixer_ablate_gpu(g, act(m, l, A_ATTY), m->ablate_with ? m->ablate_with + (size_t)l * C : NULL, N, C); }
        floatX* resid2 = act(m, l, A_RESID2);
        matmul_forward_gpu(g, resid2, act(m, l, A_ATTY), param(m, l, P_WO), N, C, C, OUT_WRITE);
        residual_rmsnorm_forward_gpu(g, resid2, act(m, l, A_LN2), act32(m, l, A_RSTD2), act(m, l, A_RESID), resid2, param(m, l, P_LN2),
                                     N, C);  // resid2 = x + mixer, ln2
        matmul_forward_gpu(g, act(m, l, A_H1), act(m, l, A_LN2), param(m, l, P_W1), N, C, F, OUT_WRITE);
        matmul_forward_gpu(g, act(m, l, A_H3), act(m, l, A_LN2), param(m, l, P_W3), N, C, F, OUT_WRITE);
        swiglu_forward_gpu(g, act(m, l, A_HMID), act(m, l, A_H1), F, act(m, l, A_H3), N, F);
        int top = l + 1 == L;  // the next block's input and its ln1, or residf and lnf
        floatX* out = top ? gact(m, G_RESID) : act(m, l + 1, A_RESID);
        matmul_forward_gpu(g, out, act(m, l, A_HMID), param(m, l, P_W2), N, F, C, OUT_WRITE);
        residual_rmsnorm_forward_gpu(g, out, top ? gact(m, G_LNF) : act(m, l + 1, A_LN1), top ? gact32(m, G_RSTDF) : act32(m, l + 1, A_RSTD1),
                                     resid2, out, top ? gparam(m, PG_LNF) : param(m, l + 1, P_LN1), N, C);  // resid2 + mlp, its norm
    }
    m->mean_loss = -1.0;
    if (targets == NULL) { return m->mean_loss; }
    int valid = 0;
    for (int n = 0; n < N; n++) { valid += targets[n] >= 0; }
    m->head_grad = grad_scale > 0;
    gpu_model_head(m, valid > 0 ? (float)(grad_scale / valid) : 0.0f, m->head_grad && valid > 0);
    if (m->head_grad) {  // the embedding backward's token groups, made on the host while the GPU runs the forward
        m->enc_buckets = encoder_index(m->index_host, m->bucket_count, m->inputs_host, N, c->padded_vocab);
        cudaCheck(cudaMemcpyAsync(m->enc_index, m->index_host, (3 * (size_t)N + 1) * sizeof(int), cudaMemcpyHostToDevice, g->stream));
    }
    cudaCheck(cudaMemcpyAsync(m->losses_host, gact32(m, G_LOSSES), (size_t)N * sizeof(float), cudaMemcpyDeviceToHost, g->stream));
    cudaCheck(cudaStreamSynchronize(g->stream));
    double sum = 0.0;  // summed like the CPU reference: in order, in double
    for (int n = 0; n < N; n++) { if (targets[n] >= 0) { sum += m->losses_host[n]; } }
    m->mean_loss = valid > 0 ? sum / valid : 0.0;
    return m->mean_loss;
}

// Logits (as floats) of rows[0..n) of the last forward (indices into its B·T rows) into out (n, Vp):
// the rows of lnf gathered (into dresid, idle outside the backward), times wteᵀ, at most one chunk
// of the logits buffer a matmul. For the needle eval and sampling, which want a few rows.
static void gpu_model_logits(GpuModel* m, const int* rows, int n, float* out) {
    const Config* c = &m->cfg;
    const GpuContext* g = &m->ctx;
    int C = c->n_embd, Vp = c->padded_vocab, N = m->B * m->T, cap = m->logit_rows < N ? m->logit_rows : N;
    for (int i = 0; i < n; i++) { if (rows[i] < 0 || rows[i] >= N) { die("gpu_model_logits: row %d outside the last forward's %d rows", rows[i], N); } }
    floatX* host = (floatX*)malloc_check((size_t)cap * Vp * sizeof(floatX));
    for (int i0 = 0; i0 < n; i0 += cap) {
        int k = n - i0 < cap ? n - i0 : cap;
        cudaCheck(cudaMemcpyAsync(m->logit_index, rows + i0, (size_t)k * sizeof(int), cudaMemcpyHostToDevice, g->stream));
        gather_rows_kernel<<<blocks_for((size_t)k * C / X128, 256), 256, 0, g->stream>>>(m->dresid, gact(m, G_LNF), m->logit_index, k, C);
        cudaCheck(cudaGetLastError());
        matmul_forward_gpu(g, gact(m, G_LOGITS), m->dresid, gparam(m, PG_WTE), k, C, Vp, OUT_WRITE);
        cudaCheck(cudaMemcpyAsync(host, gact(m, G_LOGITS), (size_t)k * Vp * sizeof(floatX), cudaMemcpyDeviceToHost, g->stream));
        cudaCheck(cudaStreamSynchronize(g->stream));
        for (size_t i = 0; i < (size_t)k * Vp; i++) { out[(size_t)i0 * Vp + i] = (float)host[i]; }
    }
    free(host);
}

// Clears the parameter gradients (once per optimizer step, before the micro-batches' forwards).
static void gpu_model_zero_grad(GpuModel* m) {
    cudaCheck(cudaMemsetAsync(m->grads, 0, m->pl.total * sizeof(float), m->ctx.stream));
}

// Adds the rest of the gradient of the last training forward (its grad_scale x mean loss; the LM
// head's part is in already) into m->grads: from dlnf down through the layers to the embedding.
static void gpu_model_backward(GpuModel* m) {
    const Config* c = &m->cfg;
    const GpuContext* g = &m->ctx;
    int B = m->B, T = m->T, C = c->n_embd, F = c->ffn, L = c->n_layer, N = B * T;
    if (!m->head_grad) { die("gpu_model_backward: the last forward was not a training forward (targets and grad_scale > 0)"); }
    m->head_grad = 0;  // one backward per forward
    int valid = 0;
    for (int n = 0; n < N; n++) { valid += m->targets_host[n] >= 0; }
    if (valid == 0) { return; }
    const floatX* dlnf = m->dlayer;  // gpu_model_head left it there
    rmsnorm_backward_gpu(g, m->dresid, ggrad(m, PG_LNF), m->scratch, dlnf, gact(m, G_RESID), gparam(m, PG_LNF), gact32(m, G_RSTDF), N, C, OUT_WRITE);
    for (int l = L - 1; l >= 0; l--) {
        // here m->dresid = dL/d(output of block l)
        matmul_backward_gpu(g, dact(m, l, A_HMID), grad(m, l, P_W2), m->dresid, act(m, l, A_HMID), param(m, l, P_W2), N, F, C, OUT_WRITE);
        swiglu_backward_gpu(g, dact(m, l, A_H1), dact(m, l, A_H3), dact(m, l, A_HMID), act(m, l, A_H1), F, act(m, l, A_H3), N, F);
        matmul_backward_gpu(g, dact(m, l, A_LN2), grad(m, l, P_W3), dact(m, l, A_H3), act(m, l, A_LN2), param(m, l, P_W3), N, C, F, OUT_WRITE);
        matmul_backward_gpu(g, dact(m, l, A_LN2), grad(m, l, P_W1), dact(m, l, A_H1), act(m, l, A_LN2), param(m, l, P_W1), N, C, F, OUT_ADD);
        rmsnorm_backward_gpu(g, m->dresid, grad(m, l, P_LN2), m->scratch, dact(m, l, A_LN2), act(m, l, A_RESID2), param(m, l, P_LN2),
                             act32(m, l, A_RSTD2), N, C, OUT_ADD);  // now dL/d(resid2)
        matmul_backward_gpu(g, dact(m, l, A_ATTY), grad(m, l, P_WO), m->dresid, act(m, l, A_ATTY), param(m, l, P_WO), N, C, C, OUT_WRITE);
        gpu_mixer(c->pattern[l])->backward(m, l);
        rmsnorm_backward_gpu(g, m->dresid, grad(m, l, P_LN1), m->scratch, dact(m, l, A_LN1), act(m, l, A_RESID), param(m, l, P_LN1),
                             act32(m, l, A_RSTD1), N, C, OUT_ADD);  // now dL/d(block input)
    }
    encoder_backward_gpu(g, ggrad(m, PG_WTE), m->dresid, m->enc_index, m->enc_buckets, N, C);
    for (int s = 0; s < m->pl.n; s++) {  // frozen mixers: no gradient (so none in the norm either)
        const TensorSpec* sp = &m->pl.spec[s];
        if (param_frozen(sp, c, m->freeze)) { cudaCheck(cudaMemsetAsync(m->grads + sp->offset, 0, sp->numel * sizeof(float), g->stream)); }
    }
}

// Global L2 norm of the gradients: fixed-grid partial sums, added on the host in order.
static double gpu_model_grad_norm(GpuModel* m) {
    float partial[SUMSQ_BLOCKS];
    sumsq_kernel<<<SUMSQ_BLOCKS, REDUCE_THREADS, 0, m->ctx.stream>>>(m->scratch, m->grads, m->pl.total);
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaMemcpyAsync(partial, m->scratch, sizeof(partial), cudaMemcpyDeviceToHost, m->ctx.stream));
    cudaCheck(cudaStreamSynchronize(m->ctx.stream));
    double ss = 0.0;
    for (int b = 0; b < SUMSQ_BLOCKS; b++) { ss += partial[b]; }
    return sqrt(ss);
}

// One AdamW step t (1-based) at learning rate lr over every tensor in one launch (each tensor's
// weight decay from its table row), gradients scaled by min(1, clip/grad_norm).
static void gpu_model_update(GpuModel* m, const OptConfig* o, double lr, int t, double grad_norm) {
    double scale = (o->grad_clip > 0 && grad_norm > o->grad_clip) ? o->grad_clip / grad_norm : 1.0;
    float c1 = (float)(1.0 - pow(o->beta1, t)), c2 = (float)(1.0 - pow(o->beta2, t));
    size_t n = m->pl.total;
    adamw_kernel<<<blocks_for(n, 256), 256, 0, m->ctx.stream>>>(m->master, m->params, m->grads, m->adam_m, m->adam_v,
                                                                m->adamw_tensors, m->adamw_n, n, (float)lr, (float)o->beta1,
                                                                (float)o->beta2, c1, c2, (float)o->eps, (float)o->weight_decay,
                                                                (float)scale);
    cudaCheck(cudaGetLastError());
}

// Parameters (and the AdamW state, when with_opt) copied to the host and written as a checkpoint
// (checkpoint_save: atomic, the keep - 1 saves before it kept as path.step<k>).
static void gpu_model_save(const GpuModel* m, const char* path, int keep, int step, const RunRecord* run, int with_opt) {
    size_t n = m->pl.total;
    float* host = (float*)malloc_check((with_opt ? 3 : 1) * n * sizeof(float));
    cudaCheck(cudaStreamSynchronize(m->ctx.stream));
    cudaCheck(cudaMemcpy(host, m->master, n * sizeof(float), cudaMemcpyDeviceToHost));
    if (with_opt) {
        cudaCheck(cudaMemcpy(host + n, m->adam_m, n * sizeof(float), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(host + 2 * n, m->adam_v, n * sizeof(float), cudaMemcpyDeviceToHost));
    }
    checkpoint_save(path, keep, &m->cfg, host, with_opt ? host + n : NULL, with_opt ? host + 2 * n : NULL, n, step, run);
    free(host);
}

// Restores the AdamW state of a checkpoint (its parameters went in through gpu_model_build).
static void gpu_model_load_opt(GpuModel* m, const Checkpoint* ck) {
    if (ck->m == NULL) { return; }
    cudaCheck(cudaMemcpy(m->adam_m, ck->m, ck->n_params * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(m->adam_v, ck->v, ck->n_params * sizeof(float), cudaMemcpyHostToDevice));
}

static GpuContext gpu_context_create(void) {
    GpuContext g;
    cudaCheck(cudaStreamCreate(&g.stream));
    cublasCheck(cublasCreate(&g.blas));
    cublasCheck(cublasSetStream(g.blas, g.stream));
    return g;
}
static void gpu_context_destroy(GpuContext* g) {
    cublasDestroy(g->blas);
    cudaStreamDestroy(g->stream);
}

static double gpu_val_loss(GpuModel* m, DataLoader* val, int batches) {
    double sum = 0.0;
    dataloader_rewind(val);
    for (int i = 0; i < batches && !stop_requested(); i++) {
        dataloader_next_batch(val);
        sum += gpu_model_forward(m, val->inputs, val->targets, val->B, val->T, 0.0);
    }
    return sum / batches;
}

// ----------------------------------------------------------------------------
// Needle eval on the GPU: the grid of hybrid_cpu.h's needle evaluation, many samples per forward.

// Attention statistics of one query row of one head (needle_eval.h attention_row_stats): the visible
// key of highest q·k (ties: the earliest) and the softmax mass on keys [span0, span1).
// One block per (query a, head h); query a = (sequence b, row t, span0, span1).
__global__ void retrieval_stats_kernel(int* argmax, float* mass, const floatX* qkvr, const float* lse, const int4* queries,
                                       int T, int C, int H, int window) {
    __shared__ float best_s[REDUCE_THREADS];
    __shared__ int best_j[REDUCE_THREADS];
    int a = blockIdx.x, h = blockIdx.y, D = C / H;
    int4 q = queries[a];  // x = b, y = t, z = span0, w = span1
    const floatX* qrow = qkvr + ((size_t)q.x * T + q.y) * 3 * C + (size_t)h * D;
    float L = lse[((size_t)q.x * T + q.y) * H + h], scale = rsqrtf((float)D);
    float best = -FLT_MAX, m = 0.0f;
    int bj = INT_MAX;
    int j0 = window > 0 && q.y - window + 1 > 0 ? q.y - window + 1 : 0;
    for (int j = j0 + threadIdx.x; j <= q.y; j += blockDim.x) {  // j rises: '>' keeps the earliest of equals
        const floatX* k = qkvr + ((size_t)q.x * T + j) * 3 * C + C + (size_t)h * D;
        float sc = 0.0f;
        for (int i = 0; i < D; i++) { sc += (float)qrow[i] * (float)k[i]; }
        if (sc > best) { best = sc; bj = j; }
        if (j >= q.z && j < q.w) { m += expf(sc * scale - L); }
    }
    m = block_sum(m);
    best_s[threadIdx.x] = best;
    best_j[threadIdx.x] = bj;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            float os = best_s[threadIdx.x + stride];
            int oj = best_j[threadIdx.x + stride];
            if (os > best_s[threadIdx.x] || (os == best_s[threadIdx.x] && oj < best_j[threadIdx.x])) {
                best_s[threadIdx.x] = os;
                best_j[threadIdx.x] = oj;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        argmax[a * H + h] = best_j[0];
        mass[a * H + h] = m;
    }
}

// Attention statistics of na queries (d_queries, on the GPU: sequence, row, span0, span1) in every
// head of attention layer l of the last forward: argmax and mass (na, H), through d_argmax, d_mass,
// copied to the host.
static void gpu_attention_stats(GpuModel* m, int l, const int4* d_queries, int na, int* d_argmax, float* d_mass, int* argmax, float* mass) {
    const Config* c = &m->cfg;
    const GpuContext* gc = &m->ctx;
    int H = c->n_head, window = layer_window(c, l);
    retrieval_stats_kernel<<<dim3(na, H), REDUCE_THREADS, 0, gc->stream>>>(d_argmax, d_mass, act(m, l, A_QKVR), act32(m, l, A_LSE),
                                                                             d_queries, m->T, c->n_embd, H, window);
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaMemcpyAsync(argmax, d_argmax, (size_t)na * H * sizeof(int), cudaMemcpyDeviceToHost, gc->stream));
    cudaCheck(cudaMemcpyAsync(mass, d_mass, (size_t)na * H * sizeof(float), cudaMemcpyDeviceToHost, gc->stream));
    cudaCheck(cudaStreamSynchronize(gc->stream));
}

// Runs the grid: the samples of one length go through the model in batches of at most max_tokens
// tokens (so the eval fits wherever training fits); answers are scored on the host from their
// logits rows (gpu_model_logits), and at retrieval_len every attention head's stats are taken on the GPU.
static void gpu_needle_eval(GpuModel* m, const NeedleGrid* g, size_t max_tokens, NeedleResult* r) {
    const Config* c = &m->cfg;
    const GpuContext* gc = &m->ctx;
    int H = c->n_head, Vp = c->padded_vocab, per_length = g->n_depths * g->samples, max_answer = 0;
    for (int i = 0; i < g->n_lengths * per_length; i++) { max_answer = g->meta[i].answer_len > max_answer ? g->meta[i].answer_len : max_answer; }
    size_t n_queries = (size_t)per_length * max_answer;
    int* row_of = (int*)malloc_check(n_queries * sizeof(int));             // the batch row of each answer token
    float* rows = (float*)malloc_check(n_queries * Vp * sizeof(float));    // (answer token, Vp) their logits, samples in turn
    int4* queries = (int4*)malloc_check(n_queries * sizeof(int4));
    int* argmax = (int*)malloc_check(n_queries * H * sizeof(int));
    float* mass = (float*)malloc_check(n_queries * H * sizeof(float));
    int4* d_queries;
    int* d_argmax;
    float* d_mass;
    cudaCheck(cudaMalloc(&d_queries, n_queries * sizeof(int4)));
    cudaCheck(cudaMalloc(&d_argmax, n_queries * H * sizeof(int)));
    cudaCheck(cudaMalloc(&d_mass, n_queries * H * sizeof(float)));
    needle_result_init(r, g, c);
    for (int li = 0; li < g->n_lengths; li++) {
        int len = g->lengths[li];
        int nb = (int)(max_tokens / len);  // samples per forward: 1 .. per_length
        if (nb < 1) { nb = 1; }
        if (nb > per_length) { nb = per_length; }
        for (int i0 = 0; i0 < per_length && !stop_requested(); i0 += nb) {
            int b = per_length - i0 < nb ? per_length - i0 : nb, idx0 = li * per_length + i0, na = 0;
            gpu_model_forward(m, g->tokens + g->offset[idx0], NULL, b, len, 0.0);  // the samples of one length are contiguous
            for (int k = 0; k < b; k++) {
                const NeedleSample* s = &g->meta[idx0 + k];
                for (int j = 0; j < s->answer_len; j++) {
                    row_of[na] = k * len + s->answer_pos - 1 + j;
                    queries[na++] = make_int4(k, s->answer_pos - 1 + j, s->needle_pos, s->value_pos + s->answer_len);
                }
            }
            gpu_model_logits(m, row_of, na, rows);
            for (int k = 0, a = 0; k < b; a += g->meta[idx0 + k].answer_len, k++) {
                needle_score_answer(r, g, idx0 + k, rows + (size_t)a * Vp, c->vocab, Vp);
            }
            if (len != g->retrieval_len) { continue; }
            cudaCheck(cudaMemcpyAsync(d_queries, queries, na * sizeof(int4), cudaMemcpyHostToDevice, gc->stream));
            for (int l = 0; l < c->n_layer; l++) {
                if (!layer_type_at(c, l)->attention) { continue; }
                gpu_attention_stats(m, l, d_queries, na, d_argmax, d_mass, argmax, mass);
                for (int a = 0; a < na; a++) {
                    const NeedleSample* s = &g->meta[idx0 + queries[a].x];
                    int copied = s->value_pos + (queries[a].y - (s->answer_pos - 1));  // value token j for answer token j
                    for (int h = 0; h < H; h++) {
                        r->score[l * H + h] += argmax[a * H + h] == copied;
                        r->mass[l * H + h] += mass[a * H + h];
                    }
                }
            }
            r->n_answer += na;
        }
    }
    needle_result_finish(r, c);
    free(row_of); free(rows); free(queries); free(argmax); free(mass);
    cudaFreeAll(d_queries, d_argmax, d_mass);
}

// The recall eval (needle_eval.h cpu_recall_eval) on the GPU: the held-out sequences in batches of
// at most max_tokens tokens; a clean pass scores every query per bin (answers from their logits rows,
// every attention head's stats on the GPU) and, for mean ablation, sums each layer's mixer output
// over the set (a matmul with a ones vector: (C) += atty (N,C)ᵀ · 1); then one pass per ablation.
static void gpu_recall_eval(GpuModel* m, const RecallSet* s, size_t max_tokens, int ablate, RecallResult* r) {
    const Config* c = &m->cfg;
    const GpuContext* gc = &m->ctx;
    int C = c->n_embd, H = c->n_head, L = c->n_layer, T = s->T, K = s->K, Vp = c->padded_vocab;
    int nb = (int)(max_tokens / T);  // sequences per forward
    if (nb < 1) { nb = 1; }
    if (nb > s->n_seqs) { nb = s->n_seqs; }
    size_t nq = (size_t)nb * K;
    int* row_of = (int*)malloc_check(nq * sizeof(int));
    float* rows = (float*)malloc_check(nq * Vp * sizeof(float));
    int4* queries = (int4*)malloc_check(nq * sizeof(int4));
    int* argmax = (int*)malloc_check(nq * H * sizeof(int));
    float* mass = (float*)malloc_check(nq * H * sizeof(float));
    int4* d_queries;
    int* d_argmax;
    float *d_mass, *d_sum;
    floatX *d_ones, *d_mean;
    cudaCheck(cudaMalloc(&d_queries, nq * sizeof(int4)));
    cudaCheck(cudaMalloc(&d_argmax, nq * H * sizeof(int)));
    cudaCheck(cudaMalloc(&d_mass, nq * H * sizeof(float)));
    cudaCheck(cudaMalloc(&d_sum, (size_t)L * C * sizeof(float)));
    cudaCheck(cudaMalloc(&d_mean, (size_t)L * C * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d_ones, (size_t)nb * T * sizeof(floatX)));
    cudaCheck(cudaMemset(d_sum, 0, (size_t)L * C * sizeof(float)));
    floatX* ones = (floatX*)malloc_check((size_t)nb * T * sizeof(floatX));
    for (size_t i = 0; i < (size_t)nb * T; i++) { ones[i] = (floatX)1.0f; }
    cudaCheck(cudaMemcpy(d_ones, ones, (size_t)nb * T * sizeof(floatX), cudaMemcpyHostToDevice));
    free(ones);
    recall_result_init(r, s, c, ablate);
    for (int pass = -1; pass < r->n_abl; pass++) {  // -1: the clean pass
        m->ablate = pass < 0 ? 0 : r->abl_layers[pass];
        for (int i0 = 0; i0 < s->n_seqs && !stop_requested(); i0 += nb) {
            int b = s->n_seqs - i0 < nb ? s->n_seqs - i0 : nb, na = b * K;
            gpu_model_forward(m, s->tokens + (size_t)i0 * T, NULL, b, T, 0.0);
            for (int a = 0; a < na; a++) {
                const RecallPair* p = &s->pairs[(size_t)i0 * K + a];
                row_of[a] = (a / K) * T + p->answer_pos - 1;
                queries[a] = make_int4(a / K, p->answer_pos - 1, p->value_pos, p->value_pos + 1);
            }
            gpu_model_logits(m, row_of, na, rows);
            for (int a = 0; a < na; a++) {
                int i = i0 + a / K, k = a % K, bin = recall_pair_bin(s, i, k), right = recall_answer_right(s, i, k, rows + (size_t)a * Vp, c->vocab);
                if (pass >= 0) { r->abl_acc[pass * r->n_bins + bin] += right; continue; }
                r->count[bin]++;
                r->acc[bin] += right;
            }
            if (pass >= 0) { continue; }
            cudaCheck(cudaMemcpyAsync(d_queries, queries, na * sizeof(int4), cudaMemcpyHostToDevice, gc->stream));
            for (int l = 0; l < L; l++) {
                if (ablate == ABLATE_MEAN) {
                    gemm(gc, CUBLAS_OP_N, CUBLAS_OP_N, C, 1, b * T, act(m, l, A_ATTY), C, d_ones, b * T, 1.0f, d_sum + (size_t)l * C, CUDA_R_32F, C);
                }
                if (!layer_type_at(c, l)->attention) { continue; }
                gpu_attention_stats(m, l, d_queries, na, d_argmax, d_mass, argmax, mass);
                for (int a = 0; a < na; a++) {
                    int bin = recall_pair_bin(s, i0 + a / K, a % K), value = s->pairs[(size_t)i0 * K + a].value_pos;
                    for (int h = 0; h < H; h++) { recall_score_head(r, bin, l, h, argmax[a * H + h] == value, mass[a * H + h]); }
                }
            }
        }
        if (pass < 0 && ablate == ABLATE_MEAN) {  // the sums into means, as floatX rows
            float* sum = (float*)malloc_check((size_t)L * C * sizeof(float));
            floatX* mean = (floatX*)malloc_check((size_t)L * C * sizeof(floatX));
            cudaCheck(cudaMemcpy(sum, d_sum, (size_t)L * C * sizeof(float), cudaMemcpyDeviceToHost));
            for (size_t j = 0; j < (size_t)L * C; j++) { mean[j] = (floatX)(sum[j] / ((double)s->n_seqs * T)); }
            cudaCheck(cudaMemcpy(d_mean, mean, (size_t)L * C * sizeof(floatX), cudaMemcpyHostToDevice));
            free(sum);
            free(mean);
            m->ablate_with = d_mean;
        }
    }
    m->ablate = 0;
    m->ablate_with = NULL;
    recall_result_finish(r, c);
    free(row_of); free(rows); free(queries); free(argmax); free(mass);
    cudaFreeAll(d_queries, d_argmax, d_mass, d_sum, d_mean, d_ones);
}

// ----------------------------------------------------------------------------
// Data parallel over GPUs (NCCL)
//
// `--gpus N` forks one process per GPU of this host, before any CUDA call; `--nodes M --node-rank R
// --nccl-id FILE` spans M hosts (rank = R N + the local GPU), rank 0 writing the NCCL id to FILE on
// a file system every host sees (use a fresh path per run). Every rank holds the whole model and
// AdamW state and trains on its own micro-batches: of the accum x world micro-batches of a step,
// rank r takes a x world + r, so the run is one GPU's with -a accum x world. One all-reduce sums the
// gradients before the norm and the update, which are then the same on every rank, bit for bit:
// the parameters never diverge. Rank 0 alone prints, logs, runs val and the needle evals and writes
// checkpoints; the others wait for it at the next all-reduce. Every step the ranks also agree on
// stopping: a signal seen by any rank stops all of them after the same step.

#define DIST_MAX_GPUS 64
#define DIST_ID_WAIT_S 600  // how long the other hosts wait for rank 0's id file
#define DIST_KILL_S 120     // after a rank failed, how long the others get to exit before SIGKILL

typedef struct {
    int rank, world, local;  // global rank, number of ranks, this process's GPU on its host
#ifdef MULTI_GPU
    ncclComm_t comm;
#endif
    double* scalar;          // one double on the GPU for the scalar all-reduces
} Dist;

#ifdef MULTI_GPU
static void nccl_check_at(ncclResult_t r, const char* file, int line) {
    if (r != ncclSuccess) { die_at(file, line, "NCCL: %s", ncclGetErrorString(r)); }
}
#define ncclCheck(r) nccl_check_at((r), __FILE__, __LINE__)

static volatile sig_atomic_t dist_parent_signal = 0, dist_parent_alarm = 0;
static void dist_on_signal(int sig) { dist_parent_signal = sig; }
static void dist_on_alarm(int sig) { (void)sig; dist_parent_alarm = 1; }
static void dist_on_child(int sig) { (void)sig; }  // only wakes sigsuspend

// The parent of this host's ranks: forwards SIGINT/SIGTERM to them and waits for all. When a rank
// fails on its own, the others are stopped (SIGTERM, SIGKILL DIST_KILL_S later: a rank whose peer is
// gone waits forever in its all-reduce). Exits with 0 or the first failure's status (128 + signal).
// The signals are blocked except inside sigsuspend, so none can land between a check and the wait.
static void dist_supervise(pid_t* pids, int n) {
    sigset_t watched, during_wait;
    sigemptyset(&watched);
    sigaddset(&watched, SIGINT);
    sigaddset(&watched, SIGTERM);
    sigaddset(&watched, SIGALRM);
    sigaddset(&watched, SIGCHLD);
    sigprocmask(SIG_BLOCK, &watched, &during_wait);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = dist_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = dist_on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = dist_on_child;
    sigaction(SIGCHLD, &sa, NULL);
    int alive = n, status = 0, forwarded = 0, stopping = 0;
    while (alive > 0) {
        if (dist_parent_signal && !forwarded) {
            for (int i = 0; i < n; i++) { if (pids[i] > 0) { kill(pids[i], dist_parent_signal); } }
            forwarded = 1;
        }
        if (dist_parent_alarm) {
            for (int i = 0; i < n; i++) { if (pids[i] > 0) { kill(pids[i], SIGKILL); } }
            dist_parent_alarm = 0;
        }
        int st;
        pid_t p = waitpid(-1, &st, WNOHANG);
        if (p < 0) { break; }                             // no children left
        if (p == 0) { sigsuspend(&during_wait); continue; }  // until a signal or a child's exit
        for (int i = 0; i < n; i++) { if (pids[i] == p) { pids[i] = 0; alive--; } }
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (code != 0 && status == 0) { status = code; }
        if (code != 0 && !dist_parent_signal && !stopping) {  // a failure, not the stop we forwarded
            stopping = 1;
            for (int i = 0; i < n; i++) { if (pids[i] > 0) { kill(pids[i], SIGTERM); } }
            alarm(DIST_KILL_S);
        }
    }
    exit(status);
}

// The NCCL id of the run: made by rank 0, written to id_file for the other hosts (atomically), read
// from it by their first rank
static void dist_id_write(const ncclUniqueId* id, const char* id_file) {
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", id_file);
    FILE* f = fopen_check(tmp, "wb");
    if (fwrite(id, sizeof(*id), 1, f) != 1 || fclose(f) != 0) { die("--nccl-id %s: write failed: %s", id_file, strerror(errno)); }
    if (rename(tmp, id_file) != 0) { die("--nccl-id %s: rename: %s", id_file, strerror(errno)); }
}
static void dist_id_read(ncclUniqueId* id, const char* id_file) {
    for (int waited = 0;; waited++) {
        FILE* f = fopen(id_file, "rb");
        if (f) {
            size_t got = fread(id, sizeof(*id), 1, f);
            fclose(f);
            if (got == 1) { return; }
        }
        if (waited >= DIST_ID_WAIT_S * 10) { die("--nccl-id %s: rank 0 did not write it within %d s", id_file, DIST_ID_WAIT_S); }
        usleep(100000);
    }
}
#endif

// The data-parallel flags, checked before dist_init forks: ranges (the flag table's) and how they
// fit together. The NCCL id file, when there, must be a regular file (a FIFO would block rank 0's read).
static void dist_check_flags(int gpus, int nodes, int node_rank, const char* id_file) {
    if (node_rank >= nodes) { die("--nodes %d --node-rank %d: expected 0 <= node-rank < nodes", nodes, node_rank); }
    if (nodes > 1 && id_file[0] == 0) { die("--nodes %d: needs --nccl-id FILE on a file system every host sees", nodes); }
    if (gpus * nodes > MAX_WORLD) { die("--gpus %d --nodes %d: %d ranks, at most %d", gpus, nodes, gpus * nodes, MAX_WORLD); }
    struct stat st;
    if (id_file[0] && stat(id_file, &st) == 0 && !S_ISREG(st.st_mode)) { die("--nccl-id %s is %s, expected a regular file", id_file, file_kind(st.st_mode)); }
}

// Forks the ranks of this host (world > 1) and returns in each with its Dist ready: its CUDA
// device set, the NCCL communicator up, stdout closed on ranks > 0. The parent supervises the ranks
// and never returns. One GPU: no fork, device 0. The flags were checked by dist_check_flags.
static Dist dist_init(int gpus, int nodes, int node_rank, const char* id_file) {
    Dist d;
    memset(&d, 0, sizeof(d));
    d.world = gpus * nodes;
#ifdef MULTI_GPU
    ncclUniqueId id;
    if (d.world > 1) {
        int pipes[DIST_MAX_GPUS][2];  // the NCCL id, from local rank 0 to the others
        pid_t pids[DIST_MAX_GPUS];
        for (int i = 1; i < gpus; i++) { if (pipe(pipes[i]) != 0) { die("--gpus %d: pipe: %s", gpus, strerror(errno)); } }
        int child = -1;
        for (int i = 0; i < gpus && child < 0; i++) {
            pid_t p = fork();
            if (p < 0) { die("--gpus %d: fork: %s", gpus, strerror(errno)); }
            if (p == 0) {
                child = i;
                prctl(PR_SET_PDEATHSIG, SIGTERM);  // the parent killed outright: stop, do not run on alone
            } else {
                pids[i] = p;
            }
        }
        if (child < 0) {
            for (int i = 1; i < gpus; i++) { close(pipes[i][0]); close(pipes[i][1]); }
            dist_supervise(pids, gpus);
        }
        d.local = child;
        d.rank = node_rank * gpus + child;
        if (d.local == 0) {
            if (node_rank == 0) {
                ncclCheck(ncclGetUniqueId(&id));
                if (nodes > 1) { dist_id_write(&id, id_file); }
            } else {
                dist_id_read(&id, id_file);
            }
            for (int i = 1; i < gpus; i++) {
                if (write(pipes[i][1], &id, sizeof(id)) != (ssize_t)sizeof(id)) { die("--gpus %d: passing the NCCL id: %s", gpus, strerror(errno)); }
            }
        } else if (read(pipes[d.local][0], &id, sizeof(id)) != (ssize_t)sizeof(id)) {
            die("--gpus %d: rank %d did not get the NCCL id (rank 0 failed?)", gpus, d.rank);
        }
        for (int i = 1; i < gpus; i++) { close(pipes[i][0]); close(pipes[i][1]); }
        if (d.rank > 0 && freopen("/dev/null", "w", stdout) == NULL) { die("rank %d: cannot close stdout", d.rank); }
    }
#else
    if (d.world > 1) { die("--gpus %d --nodes %d: this build has no NCCL (make found no nccl.h): it trains on one GPU", gpus, nodes); }
#endif
    int n_gpu = 0;
    if (cudaGetDeviceCount(&n_gpu) != cudaSuccess || n_gpu == 0) { die("no CUDA GPU found (train_cpu trains on the CPU)"); }
    if (n_gpu < gpus) { die("--gpus %d: this host has %d CUDA GPU%s", gpus, n_gpu, n_gpu == 1 ? "" : "s"); }
    cudaCheck(cudaSetDevice(d.local));
#ifdef MULTI_GPU
    if (d.world > 1) { ncclCheck(ncclCommInitRank(&d.comm, d.world, id, d.rank)); }
#endif
    cudaCheck(cudaMalloc(&d.scalar, sizeof(double)));
    return d;
}

static void dist_free(Dist* d) {
#ifdef MULTI_GPU
    if (d->world > 1) { ncclCommDestroy(d->comm); }
#endif
    cudaFreeAll(d->scalar);
}

// The sum (op ncclSum) or maximum (ncclMax) of x over the ranks; every rank gets it. One GPU: x.
static double dist_reduce(Dist* d, double x, int op_max, cudaStream_t stream) {
#ifdef MULTI_GPU
    if (d->world > 1) {
        cudaCheck(cudaMemcpyAsync(d->scalar, &x, sizeof(x), cudaMemcpyHostToDevice, stream));
        ncclCheck(ncclAllReduce(d->scalar, d->scalar, 1, ncclFloat64, op_max ? ncclMax : ncclSum, d->comm, stream));
        cudaCheck(cudaMemcpyAsync(&x, d->scalar, sizeof(x), cudaMemcpyDeviceToHost, stream));
        cudaCheck(cudaStreamSynchronize(stream));
    }
#endif
    return x;
}
static double dist_sum(Dist* d, double x, cudaStream_t stream) { return dist_reduce(d, x, 0, stream); }
static double dist_max(Dist* d, double x, cudaStream_t stream) { return dist_reduce(d, x, 1, stream); }

// m->grads = the sum of every rank's m->grads (in place, on the model's stream)
static void dist_sum_grads(Dist* d, GpuModel* m) {
#ifdef MULTI_GPU
    if (d->world > 1) { ncclCheck(ncclAllReduce(m->grads, m->grads, m->pl.total, ncclFloat, ncclSum, d->comm, m->ctx.stream)); }
#else
    (void)d; (void)m;
#endif
}

// ----------------------------------------------------------------------------
// main: the training loop

#define H100_BF16_PEAK 989e12  // dense bf16 tensor-core FLOP/s of an H100 SXM: the MFU denominator

// The logits after tokens[0..n) (sample_print's NextLogits): a forward on the GPU, the last row copied back.
static void gpu_next_logits(void* model, const int* tokens, int n, float* logits) {
    GpuModel* m = (GpuModel*)model;
    int V = m->cfg.vocab;
    gpu_model_forward(m, tokens, NULL, 1, n, 0.0);
    float* row = (float*)malloc_check((size_t)m->cfg.padded_vocab * sizeof(float));
    int last = n - 1;
    gpu_model_logits(m, &last, 1, row);
    memcpy(logits, row, (size_t)V * sizeof(float));
    free(row);
}

#ifndef TESTING

int main(int argc, char** argv) {
    TrainArgs a;
    train_args_default(&a);
    a.L = 8; a.C = 256; a.H = 4; a.window_list = "16";
    a.B = 64;
    a.opt = opt_config_default(6000);
    a.opt.lr = 2e-3;
    a.val_every = 250; a.val_batches = 8;
    a.log_path = "train_hybrid.jsonl";
    a.ckpt_path = "train_hybrid.ckpt";
    a.eval_every = 100; a.eval_samples = 16;
    a.sample_every = 1000;
    int gpus = 1, nodes = 1, node_rank = 0;
    const char* nccl_id = "";
    FlagSpec flags[MAX_FLAGS];
    int n_flags = train_flags(&a, flags);
    FlagSpec own[] = {
        {"--gpus", FLAG_INT, &gpus, 1, DIST_MAX_GPUS, NULL, "GPUs of this host, data parallel (one process each); -B is per GPU"},
        {"--nodes", FLAG_INT, &nodes, 1, MAX_WORLD, NULL, "hosts, each running --gpus ranks"},
        {"--node-rank", FLAG_INT, &node_rank, 0, MAX_WORLD - 1, NULL, "this host's index, 0..nodes-1"},
        {"--nccl-id", FLAG_STR, &nccl_id, 0, 0, NULL, "with --nodes > 1: file on a shared file system for the NCCL id (fresh per run)"},
    };
    memcpy(flags + n_flags, own, sizeof(own));
    n_flags += (int)(sizeof(own) / sizeof(own[0]));
    int given[MAX_FLAGS] = {0};
    flags_parse(flags, n_flags, argc, argv, given);
    train_args_resolve(&a);
    // every check of the flags, files and checkpoint runs here, before the ranks fork and before any
    // CUDA call: bad input gets its one line at once (also on a machine without a GPU)
    if (!a.sample_only) { train_check_outputs(&a); }
    dist_check_flags(gpus, nodes, node_rank, nccl_id);
    if (a.sample_only && gpus * nodes > 1) { die("--sample runs on one GPU: drop --gpus and --nodes"); }
    DataLoader train, val;
    train_open_data(&train, &val, &a);
    Tokenizer tok = tokenizer_load(a.tokenizer, train.vocab.data_vocab);
    RunRecord run = train_run_record(&a, gpus * nodes, &train, &val);
    Checkpoint ck;
    memset(&ck, 0, sizeof(ck));
    if (a.resume[0]) { ck = train_resume_read(&a, flags, given, n_flags, &run, train.vocab.vocab); }
    Config model_cfg = a.resume[0] ? ck.cfg : train_config(&a, &train.vocab);
    gpu_check_config(&model_cfg);
    if (!a.sample_only) { train_lock_outputs(&a); }  // one run per checkpoint and log; the ranks share the locks

    Dist dist = dist_init(gpus, nodes, node_rank, nccl_id);  // forks the ranks, before any other CUDA call
    if (dist.rank > 0) {  // rank 0 alone logs, evaluates and checkpoints
        a.log_path = ""; a.ckpt_path = ""; a.val_every = 0; a.eval_every = 0; a.sample_every = 0;
    }
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, dist.local));
    GpuContext ctx = gpu_context_create();

    GpuModel model;
    int step0 = 0;
    gpu_model_build(&model, &model_cfg, &ctx, a.resume[0] ? ck.params : NULL, (uint64_t)a.seed);
    if (a.resume[0]) {
        gpu_model_load_opt(&model, &ck);
        step0 = ck.m ? ck.step : 0;
        if (a.sample_only) {  // --sample: one sample of the checkpoint, nothing trained or written
            sample_print(gpu_next_logits, &model, &val, &tok, model_cfg.vocab, ck.run.T > 0 ? ck.run.T : a.T, a.sample_len, ck.step);
            return 0;
        }
        checkpoint_free(&ck);
    }
    const Config* cfg = &model.cfg;
    gpu_model_set_freeze(&model, a.freeze);
    int model_window = cfg->window;  // evals and checkpoints; a step may draw another from -w's list
    RunLog log = run_log_open(a.log_path, step0, &a, cfg);

    char device[300];
    if (dist.world > 1) { snprintf(device, sizeof(device), "%d x %s, %s", dist.world, prop.name, PRECISION_NAME); }
    else { snprintf(device, sizeof(device), "%s, %s", prop.name, PRECISION_NAME); }
    print_config_table(cfg, &a, model.pl.total, device);
    train_resume_data(&train, &a, step0, dist.world);
    printf("unigram baseline: %.4f nats (the loss of a model of token frequencies)\n",
           data_unigram_entropy(&a.data, a.B, a.T, (uint64_t)a.seed, 64));
    double flops_per_token = model_flops_per_token(cfg, a.T);
    TrainEval ev;
    train_eval_init(&ev, &a, &train.vocab);

    train_signals_install();
    if (dist.world > 1) { stop_request = NULL; }  // rank 0's evals run whole: the ranks stop together at the top of a step
    RunSummary sum = run_summary_start(step0);
    for (int step = step0; step <= a.opt.steps; step++) {
        // a signal any rank has seen stops every rank here; the flag is only ever set, never
        // overwritten, so a signal that lands during the all-reduce stops the ranks a step later
        int agreed = (int)dist_max(&dist, (double)train_stop_signal, ctx.stream);
        if (agreed != 0 && train_stop_signal == 0) { train_stop_signal = agreed; }
        int last = step == a.opt.steps, stopping = train_stop_signal != 0;
        if (a.val_every > 0 && !stopping && (step % a.val_every == 0 || last)) {
            report_val(&log, &sum, step, gpu_val_loss(&model, &val, a.val_batches));
        }
        if (train_eval_due(&a, step, last, stopping)) {
            NeedleResult res, text_res;
            RecallResult rec;
            const NeedleGrid *grid, *text_grid;
            train_eval_pick(&a, &ev, step, last, &grid, &text_grid);
            if (ev.recall_on) { gpu_recall_eval(&model, &ev.recall, (size_t)a.B * a.T, train_eval_ablate(&a, step, last), &rec); }
            gpu_needle_eval(&model, grid, (size_t)a.B * a.T, &res);
            if (text_grid) { gpu_needle_eval(&model, text_grid, (size_t)a.B * a.T, &text_res); }
            train_eval_report(&log, step, cfg, grid, text_grid, &res, &text_res, &ev, &rec);
        }
        if (train_sample_due(&a, step, last, stopping)) { sample_print(gpu_next_logits, &model, &val, &tok, cfg->vocab, a.T, a.sample_len, step); }
        if (dist.world == 1) { stopping = train_stop_signal != 0; }  // several ranks agree on stopping at the top only
        if (train_should_save(&a, step, step0, last, stopping)) { gpu_model_save(&model, a.ckpt_path, a.ckpt_keep, step, &run, a.ckpt_opt); }
        if (stopping) {
            run_log_close(&log);
            return train_stop_status(&a, step);
        }
        if (last) { break; }
        double t0 = now_s(), loss = 0.0;
        model.cfg.window = train_window_at(&a, step);
        gpu_model_zero_grad(&model);
        int micros = a.accum * dist.world;  // of the step, over all ranks; this rank's: a x world + rank
        for (int micro = 0; micro < a.accum; micro++) {
            dataloader_skip(&train, dist.rank);
            dataloader_next_batch(&train);
            loss += gpu_model_forward(&model, train.inputs, train.targets, a.B, a.T, 1.0 / micros) / micros;
            dataloader_skip(&train, dist.world - 1 - dist.rank);  // the forward has its copy of the batch
            gpu_model_backward(&model);
        }
        model.cfg.window = model_window;
        dist_sum_grads(&dist, &model);
        loss = dist_sum(&dist, loss, ctx.stream);
        double norm = gpu_model_grad_norm(&model);
        double lr = lr_at(&a.opt, step);
        if (!train_step_finite(&a, step + 1, loss, norm)) { continue; }
        gpu_model_update(&model, &a.opt, lr, step + 1, norm);
        cudaCheck(cudaStreamSynchronize(ctx.stream));
        double ms = (now_s() - t0) * 1e3;
        double tok_s = (double)a.B * a.T * micros / (ms / 1e3);  // of all ranks
        double mfu = flops_per_token * tok_s / dist.world / H100_BF16_PEAK;
        report_step(&log, &sum, step + 1, a.opt.steps, loss, lr, norm, ms, tok_s, mfu);
    }
    char memory[64];
    snprintf(memory, sizeof(memory), ", %.2f GiB of GPU memory for the model", model.device_bytes / 1073741824.0);
    run_summary_print(&sum, &a, memory);
    run_log_close(&log);
    tokenizer_free(&tok);
    train_eval_free(&ev);
    gpu_model_free(&model);
    gpu_context_destroy(&ctx);
    dist_free(&dist);
    dataloader_free(&train);
    dataloader_free(&val);
    return 0;
}
#endif // TESTING
