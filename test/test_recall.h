/*
test_recall.h — a hand-built model for the recall eval's tests (test_recall.c on the CPU,
test_model_gpu.cu on the GPU): its one head copies the token at a fixed distance, so every recall
query at that distance is answered and retrieved, and no other.

defines: COPY_* (its config), copy_model_config, copy_model_params, copy_recall_set
*/
#ifndef TEST_RECALL_H
#define TEST_RECALL_H

// "FS", L 2, C 128, H 1 (head dim 128, a size the GPU attention takes), SwiGLU 64, W 8, RoPE.
//   residual stream of token v: channel 0 = 1 (every token), channels 1..127 a fixed random unit
//       code of v (codes of different tokens nearly orthogonal), wte[v] = that row (tied logits)
//   layer 0 (F): q and k read channel 0 only, which after the RMSNorm is the same for every token,
//       set so that after RoPE q_t·k_j = Σ_i P cos((j + d - 1 - t) θ_i) over the 64 rotation pairs:
//       largest exactly at key j = t - (d - 1) (by ~0.17 P / √128 = 27 at the next key), so the
//       head attends there; v copies the code channels, wo adds them 10x to the residual
//   layer 1 (S) and both MLPs: wo = w2 = 0, they add nothing
// The logits x·wteᵀ then peak at the token d - 1 before the row: at the row before a recall answer
// at distance d, the definition's value. The row before an answer at another distance copies a
// token that is not the value (values appear only at their definition and answer).
#define COPY_C 128
#define COPY_P 160.0  // |q pair|² per rotation pair

static Config copy_model_config(const Vocab* v) {
    return config_make(v->vocab, v->padded, 2, COPY_C, 1, 64, "FS", 8, POS_ROPE, POS_ROPE, MIXER_GDN);
}

// params (the layout of copy_model_config) set as above for distance d; the other tensors keep
// what params_init drew (layer 1's qkv, the norms), which the zeroed wo and w2 make irrelevant.
static void copy_model_params(real* params, const Config* c, int d) {
    Layout pl = param_layout(c);
    params_init(params, &pl, c, 11);
    int C = c->n_embd, D = C, V = c->vocab;
    real* wte = params + pl.global_off[PG_WTE];
    Rng r;
    rng_init(&r, 99);
    for (int v = 0; v < V; v++) {
        wte[(size_t)v * C] = 1;
        for (int i = 1; i < C; i++) { wte[(size_t)v * C + i] = (real)((rng_uniform(&r) < 0.5 ? -1.0 : 1.0) / sqrt(C - 1.0)); }
    }
    double ln0 = sqrt((double)C / 2.0);  // channel 0 after the RMSNorm: 1 / rms, rms² = (1 + 1) / C
    real* wqkv = params + pl.layer_off[0][P_WQKV];  // (3C, C): rows q | k | v
    memset(wqkv, 0, (size_t)3 * C * C * sizeof(real));
    for (int i = 0; i < D / 2; i++) {  // q pair i = (A, 0), k pair i = (A, 0) turned by (d - 1) θ_i
        double co, si, A = sqrt(COPY_P);
        rope_angle(&co, &si, d - 1, i, D, c->rope_theta);
        wqkv[(size_t)i * C] = (real)(A / ln0);
        wqkv[(size_t)(C + i) * C] = (real)(A * co / ln0);
        wqkv[(size_t)(C + i + D / 2) * C] = (real)(A * si / ln0);
    }
    for (int o = 1; o < C; o++) { wqkv[(size_t)(2 * C + o) * C + o] = 1; }
    real* wo0 = params + pl.layer_off[0][P_WO];
    memset(wo0, 0, (size_t)C * C * sizeof(real));
    for (int o = 1; o < C; o++) { wo0[(size_t)o * C + o] = 10; }
    memset(params + pl.layer_off[1][P_WO], 0, (size_t)C * C * sizeof(real));
    for (int l = 0; l < 2; l++) { memset(params + pl.layer_off[l][P_W2], 0, (size_t)C * c->ffn * sizeof(real)); }
}

// The recall set of the tests: 48 held-out sequences of T 64 with 4 pairs, distances uniform on
// [8, 16], bins <= d-1, d, > d (so the middle bin holds exactly the copied distance).
static void copy_recall_set(RecallSet* s, const Vocab* v, int d) {
    DataConfig dc = data_config_default();
    dc.needles.kind = NEEDLE_RECALL;
    dc.needles.recall_keys = 4;
    dc.needles.dist_min = 8;
    dc.needles.dist_max = 16;
    dc.needles.dist_kind = DIST_UNIFORM;
    int edges[2] = {d - 1, d};
    recall_set_build(s, &dc, v, 64, 48, 5, edges, 2);
}

#endif // TEST_RECALL_H
