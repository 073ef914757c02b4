/*
test_recall.c — the recall task and what measures it, on the CPU reference:

  task:       every pair is ⟨N⟩ key value ... ⟨Q⟩ key value at its reported positions; keys and values
              distinct, from disjoint symbol halves, each key and value exactly twice in a sequence
              (no second copy); the haystack fills the other slots in order; the loss mask is
              exactly the definitions, the query markers and keys (and with --answer-min-dist the
              near answers), also in the DataLoader's targets
  distances:  the share of queries within W, measured on 64000 queries, matches the formula
              (log-uniform and uniform) within 0.005
  eval:       a hand-built model whose one head copies at distance d (test_recall.h) scores accuracy
              1 and retrieval 1 in d's bin and 0 in the bins around it; ablating its do-nothing S
              layer changes no accuracy, ablating the copying layer (mean or zero) takes d's bin
              to 0; eval_needle --json gives the same numbers
  interventions: --freeze S: the S mixers' gradients are 0, every other gradient bit-identical,
              and AdamW leaves them (weight decay too) while it moves the rest; -w 4,16: each step
              draws one of the listed windows, the same for a seed and step, both used, the model
              keeps the largest; the ablation schedule (every N evals) against a count of the evals
*/
#include "../train_common.h"
#include "test_common.h"
#include "test_recall.h"

// ----------------------------------------------------------------------------
// the task

static void test_recall_sequences(void) {
    Vocab v = vocab_make(256, 64);
    NeedleConfig nc = needle_config_default();
    nc.kind = NEEDLE_RECALL;
    nc.recall_keys = 16;
    nc.answer_min_dist = 20;
    Rng r;
    rng_init(&r, 3);
    enum { N = 257, SEQS = 300 };
    int seq[N], hay[N], bad_slot = 0, bad_key = 0, bad_count = 0, bad_hay = 0, bad_mask = 0, near_masked = 0, pairs_seen = 0;
    unsigned char no_loss[N];
    RecallPair p[16];
    for (int s = 0; s < SEQS; s++) {
        for (int t = 0; t < N; t++) { hay[t] = seq[t] = 'a' + (s * 7 + t) % 26; }
        int K = recall_fill(seq, no_loss, N, &nc, &v, &r, p);
        unsigned char want[N] = {0}, task[N] = {0};
        int ks = recall_key_symbols(&v), count[64] = {0};
        for (int k = 0; k < K; k++) {
            int a = p[k].value_pos, b = p[k].answer_pos, d = b - a, key = seq[a - 1], val = seq[a];
            pairs_seen++;
            bad_slot += seq[a - 2] != v.needle_mark || seq[b - 2] != v.query_mark || seq[b - 1] != key || seq[b] != val;
            bad_slot += d < nc.dist_min || d > N - 3;
            bad_key += key < v.symbol0 || key >= v.symbol0 + ks || val < v.symbol0 + ks || val >= v.symbol0 + v.n_symbols;
            for (int i = -2; i <= 0; i++) { want[a + i] = 1; task[a + i] = task[b + i] = 1; }
            want[b - 2] = want[b - 1] = 1;
            want[b] = d <= nc.answer_min_dist;
            near_masked += d <= nc.answer_min_dist;
        }
        for (int t = 0; t < N; t++) {
            if (seq[t] >= v.symbol0) { count[seq[t] - v.symbol0]++; }
            bad_mask += no_loss[t] != want[t];
        }
        for (int i = 0; i < v.n_symbols; i++) { bad_count += count[i] != 0 && count[i] != 2; }  // every key and value twice
        int markers = 0;
        for (int t = 0; t < N; t++) { markers += seq[t] == v.needle_mark || seq[t] == v.query_mark; }
        bad_count += markers != 2 * K;
        for (int t = 0, src = 0; t < N; t++) { if (!task[t]) { bad_hay += seq[t] != hay[src++]; } }
    }
    check(pairs_seen == 16 * SEQS && bad_slot == 0 && bad_key == 0 && bad_count == 0 && bad_hay == 0, "recall pairs",
          "%d pairs in %d sequences of 257: %d misplaced, %d keys/values outside their halves, %d sequences with a symbol or marker not "
          "exactly where its pairs put it, %d haystack tokens out of order", pairs_seen, SEQS, bad_slot, bad_key, bad_count, bad_hay);
    check(bad_mask == 0 && near_masked > 0, "recall loss mask", "%d tokens off the mask (definitions, query markers and keys, and the %d "
          "answers at distance <= 20 with --answer-min-dist 20)", bad_mask, near_masked);

    // the DataLoader's targets: -1 exactly where the token carries no loss
    DataConfig dc = data_config_default();
    dc.needles = nc;
    DataLoader dl;
    dataloader_init(&dl, &dc, 0, 4, 256, 7);
    int masked = 0, wrong = 0;
    for (int bt = 0; bt < 3; bt++) {
        dataloader_next_batch(&dl);
        for (int b = 0; b < 4; b++) {
            const int *in = dl.inputs + b * 256, *tg = dl.targets + b * 256;
            for (int t = 0; t + 1 < 256; t++) {
                int nxt = in[t + 1], mark = v.needle_mark, q = v.query_mark, want = 0;
                want |= nxt == mark || nxt == q;                   // a marker
                want |= in[t] == mark || in[t] == q;               // the key after it
                want |= t >= 1 && in[t - 1] == mark;               // a definition's value
                if (t >= 1 && in[t - 1] == q) {                    // an answer: masked when near
                    int def = -1;
                    for (int j = 0; j + 1 < t; j++) { if (in[j] == mark && in[j + 1] == in[t]) { def = j; } }
                    want |= def >= 0 && (t + 1) - (def + 2) <= nc.answer_min_dist;
                }
                wrong += (tg[t] < 0) != want || (tg[t] >= 0 && tg[t] != nxt);
                masked += tg[t] < 0;
            }
        }
    }
    check(wrong == 0 && masked > 0, "recall targets", "%d masked targets in 12 sequences of 256, %d off", masked, wrong);
    dataloader_free(&dl);
}

// The share of queries within W on the generator's sequences against the formula.
static void test_recall_distances(void) {
    Vocab v = vocab_make(256, 256);
    NeedleConfig nc = needle_config_default();
    nc.kind = NEEDLE_RECALL;
    nc.recall_keys = 64;
    const int Ws[3] = {32, 128, 512};
    for (int kind = 0; kind < 2; kind++) {
        nc.dist_kind = kind == 0 ? DIST_LOGUNIFORM : DIST_UNIFORM;
        Rng r;
        rng_init(&r, 17);
        enum { N = 1025 };
        static int seq[N];
        RecallPair p[64];
        long within[3] = {0}, total = 0;
        int lo = N, hi = 0;
        for (int s = 0; s < 1000; s++) {
            for (int t = 0; t < N; t++) { seq[t] = 'a'; }
            recall_fill(seq, NULL, N, &nc, &v, &r, p);
            for (int k = 0; k < 64; k++) {
                int d = p[k].answer_pos - p[k].value_pos;
                for (int w = 0; w < 3; w++) { within[w] += d <= Ws[w]; }
                lo = d < lo ? d : lo;
                hi = d > hi ? d : hi;
                total++;
            }
        }
        double worst = 0.0;
        char line[160] = "";
        for (int w = 0; w < 3; w++) {
            double got = (double)within[w] / total, want = recall_share_within(&nc, recall_dist_max(&nc, N), Ws[w]);
            worst = fmax(worst, fabs(got - want));
            snprintf(line + strlen(line), sizeof(line) - strlen(line), " W %d %.4f (%.4f)", Ws[w], got, want);
        }
        check(worst < 0.005 && lo >= 4 && hi <= N - 3, kind == 0 ? "recall distances log-uniform" : "recall distances uniform",
              "T 1024, %ld queries, d in [%d, %d]: within W measured (formula):%s, worst diff %.4f (tol 0.005)", total, lo, hi, line, worst);
    }
}

// ----------------------------------------------------------------------------
// the eval: the copying model

static double bin_score(const RecallResult* r, int l, int h, int b) { return r->score[((size_t)l * r->H + h) * r->n_bins + b]; }

static void test_copy_model(int d) {
    Vocab v = vocab_make(256, 64);
    Config c = copy_model_config(&v);
    Model m;
    model_build(&m, &c, 1);
    copy_model_params(m.params, &c, d);
    RecallSet s;
    copy_recall_set(&s, &v, d);
    RecallResult rm, rz;
    cpu_recall_eval(&m, &s, ABLATE_MEAN, &rm);
    cpu_recall_eval(&m, &s, ABLATE_ZERO, &rz);
    char name[64];
    snprintf(name, sizeof(name), "copy model d=%d: recall per bin", d);
    long total = rm.count[0] + rm.count[1] + rm.count[2];
    int ok = total == 48 * 4 && rm.count[1] > 5 && rm.acc[1] == 1.0 && rm.acc[0] == 0.0 && rm.acc[2] == 0.0 && bin_score(&rm, 0, 0, 1) == 1.0 &&
             bin_score(&rm, 0, 0, 0) == 0.0 && bin_score(&rm, 0, 0, 2) == 0.0 && rm.mass[1] > 0.99 && bin_score(&rm, 1, 0, 0) >= 0;
    check(ok, name, "queries %ld/%ld/%ld in bins <=%d, %d, >%d: accuracy %.2f %.2f %.2f, l0.h0 score %.2f %.2f %.2f, mass in bin %d %.4f",
          rm.count[0], rm.count[1], rm.count[2], d - 1, d, d, rm.acc[0], rm.acc[1], rm.acc[2], bin_score(&rm, 0, 0, 0),
          bin_score(&rm, 0, 0, 1), bin_score(&rm, 0, 0, 2), d, rm.mass[1]);
    // ablations: l0, l1, then every layer of a type in LAYER_TYPES' order: F, S
    int same = 1, gone = 1, names = rm.n_abl == 4 && strcmp(rm.abl_name[0], "l0") == 0 && strcmp(rm.abl_name[1], "l1") == 0 &&
                                    strcmp(rm.abl_name[2], "F") == 0 && strcmp(rm.abl_name[3], "S") == 0;
    for (int b = 0; b < 3; b++) {
        for (int k = 0; k < 2; k++) {
            const RecallResult* r = k ? &rz : &rm;
            same &= r->abl_acc[1 * 3 + b] == r->acc[b] && r->abl_acc[3 * 3 + b] == r->acc[b];  // l1 and S: nothing changes
        }
    }
    gone = rm.abl_acc[0 * 3 + 1] == 0.0 && rm.abl_acc[2 * 3 + 1] == 0.0 && rz.abl_acc[0 * 3 + 1] == 0.0 && rz.abl_acc[2 * 3 + 1] == 0.0;
    snprintf(name, sizeof(name), "copy model d=%d: ablations", d);
    check(names && same && gone, name, "%s %s %s %s; bin %d accuracy: mean %.2f %.2f %.2f %.2f, zero %.2f %.2f %.2f %.2f (the S layer adds "
          "nothing: unchanged; without the copying layer: 0)", rm.abl_name[0], rm.abl_name[1], rm.abl_name[2], rm.abl_name[3], d,
          rm.abl_acc[1], rm.abl_acc[4], rm.abl_acc[7], rm.abl_acc[10], rz.abl_acc[1], rz.abl_acc[4], rz.abl_acc[7], rz.abl_acc[10]);
    if (d == 12) {  // eval_needle on the same model: the same recall record
        const char* ck = tmp_path("copy.ckpt");
        RunRecord run = {.T = 64, .B = 1, .accum = 1, .world = 1, .seed = 0, .data_id = 0};
        checkpoint_write(ck, &c, m.params, NULL, NULL, m.pl.total, 0, &run);
        const char* mine = tmp_path("copy_mine.json");
        FILE* f = fopen_check(mine, "w");
        fprintf(f, "{\"recall\": ");
        recall_result_json(f, &rm, &s, &c);
        fclose(f);
        char cmd[1024], a[65536] = {0}, b[65536] = {0};
        const char* theirs = tmp_path("copy_cli.json");
        snprintf(cmd, sizeof(cmd), "./eval_needle -c %s -s 5 -N 1 --needle-kind recall --recall-keys 4 --recall-dist-min 8 "
                 "--recall-dist-max 16 --recall-dist uniform --recall-bins 11,12 --recall-eval 48 --json > %s 2>&1", ck, theirs);
        int rc = system(cmd);
        FILE* fa = fopen_check(mine, "r");
        FILE* fb = fopen_check(theirs, "r");
        size_t na = fread(a, 1, sizeof(a) - 1, fa), nb = fread(b, 1, sizeof(b) - 1, fb);
        fclose(fa); fclose(fb);
        check(rc == 0 && nb > na && strncmp(a, b, na) == 0 && strncmp(b + na, ", \"needle\": {", 13) == 0, "eval_needle --needle-kind recall --json",
              "rc %d: its recall record (%zu bytes) = in-process, the needle grid after it", rc, na);
        remove(ck); remove(mine); remove(theirs);
    }
    recall_result_free(&rm);
    recall_result_free(&rz);
    recall_set_free(&s);
    model_free(&m);
}

// ----------------------------------------------------------------------------
// interventions

// One forward/backward of an "SRF" model on a recall batch with --freeze `types`; grads out (copy).
static real* grads_with_freeze(const Config* c, const char* types, DataLoader* dl, Model* m) {
    model_build(m, c, 4);
    snprintf(m->freeze, sizeof(m->freeze), "%s", types);
    model_zero_grad(m);
    model_forward(m, dl->inputs, dl->targets, dl->B, dl->T);
    model_backward(m, 1.0);
    real* g = (real*)malloc_check(m->pl.total * sizeof(real));
    memcpy(g, m->grads, m->pl.total * sizeof(real));
    return g;
}

static void test_freeze(void) {
    DataConfig dc = data_config_default();
    dc.needles.kind = NEEDLE_RECALL;
    dc.needles.recall_keys = 4;
    DataLoader dl;
    dataloader_init(&dl, &dc, 0, 2, 64, 3);
    dataloader_next_batch(&dl);
    Config c = config_make(dl.vocab.vocab, dl.vocab.padded, 3, 32, 2, 0, "SRF", 8, POS_ROPE, POS_ROPE, MIXER_GDN);
    const char* types[2] = {"S", "RS"};
    for (int k = 0; k < 2; k++) {
        Model free_m, frozen_m;
        real* g0 = grads_with_freeze(&c, "", &dl, &free_m);
        real* g1 = grads_with_freeze(&c, types[k], &dl, &frozen_m);
        int n_frozen = 0, nonzero_before = 0, leaked = 0, others_differ = 0;
        for (int s = 0; s < free_m.pl.n; s++) {
            const TensorSpec* sp = &free_m.pl.spec[s];
            int fz = param_frozen(sp, &c, types[k]);
            n_frozen += fz;
            for (size_t i = sp->offset; i < sp->offset + sp->numel; i++) {
                if (fz) { nonzero_before += g0[i] != 0; leaked += g1[i] != 0; }
                else { others_differ += g0[i] != g1[i]; }
            }
        }
        // one AdamW step with weight decay: frozen tensors bit-identical, the rest moved
        real* before = (real*)malloc_check(frozen_m.pl.total * sizeof(real));
        memcpy(before, frozen_m.params, frozen_m.pl.total * sizeof(real));
        OptConfig o = opt_config_default(10);
        model_update(&frozen_m, &o, 1e-2, 1, model_grad_norm(&frozen_m));
        int moved_frozen = 0, still = 0, n_rest = 0;
        for (int s = 0; s < frozen_m.pl.n; s++) {
            const TensorSpec* sp = &frozen_m.pl.spec[s];
            int fz = param_frozen(sp, &c, types[k]), changed = memcmp(before + sp->offset, frozen_m.params + sp->offset, sp->numel * sizeof(real)) != 0;
            if (fz) { moved_frozen += changed; } else { still += !changed; n_rest++; }
        }
        char name[64];
        snprintf(name, sizeof(name), "--freeze %s: gradients and update", types[k]);
        check(n_frozen == (k == 0 ? 2 : 2 + 9) && nonzero_before > 0 && leaked == 0 && others_differ == 0 && moved_frozen == 0 && still == 0, name,
              "%d frozen tensors (%d nonzero gradients without --freeze, %d with), other gradients differing: %d; after AdamW %d frozen "
              "tensors moved, %d of %d others unmoved", n_frozen, nonzero_before, leaked, others_differ, moved_frozen, still, n_rest);
        free(g0); free(g1); free(before);
        model_free(&free_m);
        model_free(&frozen_m);
    }
    dataloader_free(&dl);
}

// -w 4,16: a step draws one of the windows from the seed and the step; the model keeps the largest.
static void window_list_resolve(TrainArgs* a, const char* list) {
    train_args_default(a);
    a->L = 2; a->C = 16; a->H = 2; a->B = 1; a->T = 32; a->opt = opt_config_default(10); a->window_list = list;
    train_args_resolve(a);
}

static void test_window_list(void) {
    TrainArgs a, b;
    window_list_resolve(&a, "4,16");
    window_list_resolve(&b, "16");
    int n4 = 0, n16 = 0, other = 0, same = 1;
    for (int step = 0; step < 200; step++) {
        int w = train_window_at(&a, step);
        n4 += w == 4; n16 += w == 16; other += w != 4 && w != 16;
        same &= w == train_window_at(&a, step) && train_window_at(&b, step) == 16;
    }
    // a step at window 4 of the model built with 16 = the model built with 4
    DataConfig dc = data_config_default();
    DataLoader dl;
    dataloader_init(&dl, &dc, 0, 2, 32, 3);
    dataloader_next_batch(&dl);
    Config c16 = config_make(dl.vocab.vocab, dl.vocab.padded, 2, 16, 2, 0, "SF", 16, POS_ROPE, POS_ROPE, MIXER_GDN), c4 = c16;
    c4.window = 4;
    Model m16, m4;
    model_build(&m16, &c16, 2);
    model_build(&m4, &c4, 2);
    m16.cfg.window = 4;
    double l16 = model_forward(&m16, dl.inputs, dl.targets, 2, 32), l4 = model_forward(&m4, dl.inputs, dl.targets, 2, 32);
    m16.cfg.window = 16;
    double l_full = model_forward(&m16, dl.inputs, dl.targets, 2, 32);
    check(a.window == 16 && a.n_windows == 2 && n4 > 60 && n16 > 60 && other == 0 && same && l16 == l4 && l_full != l4, "-w 4,16 per step",
          "model window %d; 200 steps drew 4 x%d, 16 x%d, other %d, the same again: %s; a step at W 4: loss %.6f = %.6f (W 16: %.6f)",
          a.window, n4, n16, other, same ? "yes" : "no", l16, l4, l_full);
    model_free(&m16); model_free(&m4);
    dataloader_free(&dl);
}

// --ablate-every 3: the closed form of train_eval_ablate against a count of the evals before each step.
static void test_ablate_schedule(void) {
    TrainArgs a;
    memset(&a, 0, sizeof(a));
    a.eval_every = 100; a.eval_early = 1000; a.ablate_every = 3; a.ablate_mode = ABLATE_ZERO;
    long evals = 0;
    int wrong = 0, ablated = 0;
    for (int s = 0; s <= 4000; s++) {
        if (!train_eval_due(&a, s, 0, 0)) { continue; }
        int want = evals % 3 == 0 ? ABLATE_ZERO : ABLATE_OFF, got = train_eval_ablate(&a, s, 0);
        wrong += got != want;
        ablated += got != ABLATE_OFF;
        evals++;
    }
    int last = train_eval_ablate(&a, 3999, 1) == ABLATE_ZERO;
    a.ablate_every = 0;
    int never = train_eval_ablate(&a, 0, 1) == ABLATE_OFF;
    check(wrong == 0 && ablated == 24 && last && never, "--ablate-every schedule",
          "%ld evals through step 4000 (--eval-every 100 --eval-early 1000), ablations at %d (every 3rd from step 0), %d off; the last "
          "eval always, none with 0", evals, ablated, wrong);
}

int main(void) {
    test_recall_sequences();
    test_recall_distances();
    test_copy_model(12);
    test_copy_model(9);
    test_freeze();
    test_window_list();
    test_ablate_schedule();
    return test_summary();
}
