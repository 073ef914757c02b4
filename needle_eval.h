/*
needle_eval.h — scoring the needle grid (dataloader.h builds it) and the retrieval heads: the
per-cell exact-match and per-token accuracies, and for every head of every attention layer the
retrieval score and the attention mass on the needle; cpu_needle_eval runs the grid on the CPU
reference (the trainer's GPU version, gpu_needle_eval, fills the same NeedleResult); the one-line
summary, the tables and the JSON record of a result.

Metrics: every answer token must be the argmax of its logits under teacher forcing (= greedy exact
match); a head's retrieval score (Wu et al. 2024, "Retrieval Head Mechanistically Explains
Long-Context Factuality") is the fraction of answer tokens at which its attention argmax lands on
the needle token being copied.

defines: NeedleResult, needle_result_init/free, logits_argmax, needle_score_answer,
         attention_row_stats, needle_result_finish, cpu_needle_eval, needle_best_head,
         needle_result_summary, needle_result_print, needle_result_json
*/
#ifndef NEEDLE_EVAL_H
#define NEEDLE_EVAL_H

#include "hybrid_cpu.h"  // defines: Config, Model, model_forward (and dataloader.h: NeedleGrid)

// ----------------------------------------------------------------------------
// Needle evaluation (README.md, "Retrieval metrics"), shared by the trainer, eval_needle.c and the tests.
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

// Turns the summed retrieval hits and masses into means; layers without attention (R) get -1.
static void needle_result_finish(NeedleResult* r, const Config* c) {
    for (int l = 0; l < r->L; l++) {
        for (int h = 0; h < r->H; h++) {
            double* sc = &r->score[l * r->H + h];
            double* ms = &r->mass[l * r->H + h];
            if (!layer_type_at(c, l)->attention) { *sc = -1; *ms = -1; continue; }
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
    for (int i = 0; i < n && !stop_requested(); i++) {
        const NeedleSample* s = &g->meta[i];
        int len = g->lengths[i / (g->n_depths * g->samples)];
        model_forward(m, g->tokens + g->offset[i], NULL, 1, len);
        needle_score_answer(r, g, i, gact(m, G_LOGITS) + (size_t)(s->answer_pos - 1) * c->padded_vocab, c->vocab, c->padded_vocab);
        if (len != g->retrieval_len) { continue; }
        for (int l = 0; l < c->n_layer; l++) {
            if (!layer_type_at(c, l)->attention) { continue; }
            int window = layer_window(c, l);
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

// The best head among layers of one attention type ('F' or 'S'); returns its score, -1 if there is no such layer.
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
    for (int k = 0; k < N_LAYER_TYPES; k++) {  // per attention type, in the table's order
        int l = 0, h = 0;
        char type = LAYER_TYPES[k].letter;
        double best = LAYER_TYPES[k].attention ? needle_best_head(r, c, type, &l, &h) : -1;
        if (best >= 0 && r->n_answer > 0) { printf(" | best %c head l%d.h%d %.2f (mass %.2f)", type, l, h, best, r->mass[l * r->H + h]); }
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
        if (!layer_type_at(c, l)->attention) { continue; }
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
        if (!layer_type_at(c, l)->attention) { continue; }
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
// Recall eval (README.md, "Retrieval metrics"), on the recall set's held-out sequences (dataloader.h
// RecallSet), per bin of query distance d:
//   accuracy: the answer is the argmax of the logits of the row before it (the query's key)
//   retrieval score of head h of attention layer l: the fraction of queries at which the head's
//             attention argmax, at that row, is the definition's value token (the one to copy)
//   attention mass: the mean softmax weight the head puts on that value token there
//   ablation: the accuracy per bin again with one attention layer's mixer output (or that of every
//             layer of one type: "S", "F", "R") replaced by its mean over the eval set (ABLATE_MEAN)
//             or by zeros (ABLATE_ZERO): which layers answer which distances.
// A head that copies only inside its window scores in the bins up to W and 0 beyond, so the far
// bins (beyond every window) measure long-range retrieval apart from local copying.

#define RECALL_MAX_ABLATIONS (MAX_LAYERS + N_LAYER_TYPES)
enum { ABLATE_MEAN, ABLATE_ZERO, ABLATE_OFF };  // the first two in --ablate's order
static const char* ablate_name(int mode) { return mode == ABLATE_MEAN ? "mean" : "zero"; }  // the --ablate spelling

typedef struct {
    int L, H, n_bins;
    long* count;      // (n_bins) queries per bin
    double* acc;      // (n_bins) exact-match fraction
    double* score;    // (L, H, n_bins) retrieval score; -1 for R layers
    double* mass;     // (L, H, n_bins) attention mass on the value; -1 for R layers
    int ablate;       // ABLATE_OFF (none run), ABLATE_MEAN or ABLATE_ZERO
    int n_abl;        // ablations run
    uint64_t abl_layers[RECALL_MAX_ABLATIONS];  // the layers ablation a replaces: bit l = layer l
    char abl_name[RECALL_MAX_ABLATIONS][8];     // "l3" (one layer), "F", "S", "R" (every layer of the type)
    double* abl_acc;  // (n_abl, n_bins)
} RecallResult;

// The ablations of a config: every attention layer alone, then every layer of each type present.
static int recall_ablations(const Config* c, uint64_t* layers, char (*names)[8]) {
    int n = 0;
    for (int l = 0; l < c->n_layer; l++) {
        if (!layer_type_at(c, l)->attention) { continue; }
        layers[n] = 1ull << l;
        snprintf(names[n++], 8, "l%d", l);
    }
    for (int k = 0; k < N_LAYER_TYPES; k++) {  // in the table's order
        uint64_t mask = 0;
        for (int l = 0; l < c->n_layer; l++) { if (c->pattern[l] == LAYER_TYPES[k].letter) { mask |= 1ull << l; } }
        if (mask == 0) { continue; }
        layers[n] = mask;
        snprintf(names[n++], 8, "%c", LAYER_TYPES[k].letter);
    }
    return n;
}

static void recall_result_init(RecallResult* r, const RecallSet* s, const Config* c, int ablate) {
    memset(r, 0, sizeof(*r));
    r->L = c->n_layer;
    r->H = c->n_head;
    r->n_bins = s->n_bins;
    r->count = (long*)calloc_check((size_t)s->n_bins, sizeof(long));
    r->acc = (double*)calloc_check((size_t)s->n_bins, sizeof(double));
    r->score = (double*)calloc_check((size_t)r->L * r->H * s->n_bins, sizeof(double));
    r->mass = (double*)calloc_check((size_t)r->L * r->H * s->n_bins, sizeof(double));
    r->ablate = ablate;
    if (ablate != ABLATE_OFF) { r->n_abl = recall_ablations(c, r->abl_layers, r->abl_name); }
    r->abl_acc = (double*)calloc_check((size_t)(r->n_abl > 0 ? r->n_abl : 1) * s->n_bins, sizeof(double));
}

static void recall_result_free(RecallResult* r) { free(r->count); free(r->acc); free(r->score); free(r->mass); free(r->abl_acc); }

// The bin of pair k of sequence i, and whether row (the logits, V real columns, of the row before
// its answer) gets the answer right.
static int recall_pair_bin(const RecallSet* s, int i, int k) {
    const RecallPair* p = &s->pairs[(size_t)i * s->K + k];
    return recall_bin(s, p->answer_pos - p->value_pos);
}
static int recall_answer_right(const RecallSet* s, int i, int k, const real* row, int V) {
    const RecallPair* p = &s->pairs[(size_t)i * s->K + k];
    return logits_argmax(row, V) == s->tokens[(size_t)i * s->T + p->answer_pos];
}

// One query's attention statistics for head h of layer l: hit = its argmax is the value token.
static void recall_score_head(RecallResult* r, int bin, int l, int h, int hit, double mass) {
    size_t at = ((size_t)l * r->H + h) * r->n_bins + bin;
    r->score[at] += hit;
    r->mass[at] += mass;
}

// Turns the sums into means over each bin's queries; R layers get -1, an empty bin 0.
static void recall_result_finish(RecallResult* r, const Config* c) {
    for (int b = 0; b < r->n_bins; b++) {
        double n = r->count[b] > 0 ? (double)r->count[b] : 1.0;
        r->acc[b] /= n;
        for (int a = 0; a < r->n_abl; a++) { r->abl_acc[a * r->n_bins + b] /= n; }
        for (int l = 0; l < r->L; l++) {
            for (int h = 0; h < r->H; h++) {
                size_t at = ((size_t)l * r->H + h) * r->n_bins + b;
                int attn = layer_type_at(c, l)->attention;
                r->score[at] = attn ? r->score[at] / n : -1;
                r->mass[at] = attn ? r->mass[at] / n : -1;
            }
        }
    }
}

// The recall eval on the CPU reference, one sequence at a time: the clean pass (accuracy, heads,
// and with ablation the mean mixer output of every layer), then one pass per ablation.
static void cpu_recall_eval(Model* m, const RecallSet* s, int ablate, RecallResult* r) {
    const Config* c = &m->cfg;
    int C = c->n_embd, H = c->n_head, T = s->T, Vp = c->padded_vocab;
    recall_result_init(r, s, c, ablate);
    real* mean = (real*)calloc_check((size_t)c->n_layer * C, sizeof(real));
    double* sum = (double*)calloc_check((size_t)c->n_layer * C, sizeof(double));
    for (int i = 0; i < s->n_seqs && !stop_requested(); i++) {
        model_forward(m, s->tokens + (size_t)i * T, NULL, 1, T);
        for (int k = 0; k < s->K; k++) {
            const RecallPair* p = &s->pairs[(size_t)i * s->K + k];
            int bin = recall_pair_bin(s, i, k), row = p->answer_pos - 1;
            r->count[bin]++;
            r->acc[bin] += recall_answer_right(s, i, k, gact(m, G_LOGITS) + (size_t)row * Vp, c->vocab);
            for (int l = 0; l < c->n_layer; l++) {
                if (!layer_type_at(c, l)->attention) { continue; }
                for (int h = 0; h < H; h++) {
                    int am;
                    double mass;
                    attention_row_stats(&am, &mass, act(m, l, A_QKVR), act(m, l, A_LSE), T, C, H, layer_window(c, l),
                                        row, h, p->value_pos, p->value_pos + 1);
                    recall_score_head(r, bin, l, h, am == p->value_pos, mass);
                }
            }
        }
        for (int l = 0; l < c->n_layer && ablate == ABLATE_MEAN; l++) {
            const real* atty = act(m, l, A_ATTY);
            for (size_t n = 0; n < (size_t)T * C; n++) { sum[(size_t)l * C + n % C] += atty[n]; }
        }
    }
    for (size_t j = 0; j < (size_t)c->n_layer * C; j++) { mean[j] = (real)(sum[j] / ((double)s->n_seqs * T)); }
    m->ablate_with = ablate == ABLATE_MEAN ? mean : NULL;
    for (int a = 0; a < r->n_abl; a++) {
        m->ablate = r->abl_layers[a];
        for (int i = 0; i < s->n_seqs && !stop_requested(); i++) {
            model_forward(m, s->tokens + (size_t)i * T, NULL, 1, T);
            for (int k = 0; k < s->K; k++) {
                int row = s->pairs[(size_t)i * s->K + k].answer_pos - 1;
                r->abl_acc[a * r->n_bins + recall_pair_bin(s, i, k)] += recall_answer_right(s, i, k, gact(m, G_LOGITS) + (size_t)row * Vp, c->vocab);
            }
        }
    }
    m->ablate = 0;
    m->ablate_with = NULL;
    free(mean);
    free(sum);
    recall_result_finish(r, c);
}

// The best head among layers of one type in bin b; returns its score (-1: no such layer).
static double recall_best_head(const RecallResult* r, const Config* c, char type, int b, int* layer, int* head) {
    double best = -1;
    for (int l = 0; l < r->L; l++) {
        for (int h = 0; h < r->H; h++) {
            double x = r->score[((size_t)l * r->H + h) * r->n_bins + b];
            if (c->pattern[l] == type && x > best) { best = x; *layer = l; *head = h; }
        }
    }
    return best;
}

// "<=32" for bin 0, "33-128" between edges, ">512" for the last
static void recall_bin_name(const RecallSet* s, int b, char* out, size_t size) {
    if (s->n_bins == 1) { snprintf(out, size, "all"); }
    else if (b == 0) { snprintf(out, size, "<=%d", s->edges[0]); }
    else if (b == s->n_bins - 1) { snprintf(out, size, ">%d", s->edges[b - 1]); }
    else { snprintf(out, size, "%d-%d", s->edges[b - 1] + 1, s->edges[b]); }
}

// One line: accuracy per bin, the best F and S heads in the farthest bin; with ablations a second
// line: the farthest bin's accuracy under each.
static void recall_result_summary(const RecallResult* r, const RecallSet* s, const Config* c, int step) {
    char name[32];
    int far = r->n_bins - 1;
    printf("step %5d | recall acc", step);
    for (int b = 0; b < r->n_bins; b++) { recall_bin_name(s, b, name, sizeof(name)); printf(" %s:%.2f", name, r->acc[b]); }
    recall_bin_name(s, far, name, sizeof(name));
    for (int k = 0; k < N_LAYER_TYPES; k++) {  // per attention type, in the table's order
        int l = 0, h = 0;
        char type = LAYER_TYPES[k].letter;
        double best = LAYER_TYPES[k].attention ? recall_best_head(r, c, type, far, &l, &h) : -1;
        if (best >= 0) { printf(" | %s best %c head l%d.h%d %.2f", name, type, l, h, best); }
    }
    printf("\n");
    if (r->n_abl == 0) { return; }
    printf("step %5d | recall %s acc with %s ablated:", step, name, ablate_name(r->ablate));
    for (int a = 0; a < r->n_abl; a++) { printf(" %s %.2f", r->abl_name[a], r->abl_acc[a * r->n_bins + far]); }
    printf("\n");
}

// The full result as tables (eval_needle): accuracy and queries per bin, each attention head's
// score / mass per bin, the ablations.
static void recall_result_print(const RecallResult* r, const RecallSet* s, const Config* c) {
    char name[32];
    printf("recall: %d held-out sequences of %d tokens, %d pairs each; accuracy per bin of distance\n%12s", s->n_seqs, s->T, s->K, "bin");
    for (int b = 0; b < r->n_bins; b++) { recall_bin_name(s, b, name, sizeof(name)); printf("  %9s", name); }
    printf("\n%12s", "queries");
    for (int b = 0; b < r->n_bins; b++) { printf("  %9ld", r->count[b]); }
    printf("\n%12s", "accuracy");
    for (int b = 0; b < r->n_bins; b++) { printf("  %9.2f", r->acc[b]); }
    printf("\n");
    for (int a = 0; a < r->n_abl; a++) {
        printf("%5s %-6s", ablate_name(r->ablate), r->abl_name[a]);
        for (int b = 0; b < r->n_bins; b++) { printf("  %9.2f", r->abl_acc[a * r->n_bins + b]); }
        printf("\n");
    }
    printf("retrieval score / attention mass on the value per head and bin\n");
    for (int l = 0; l < r->L; l++) {
        if (!layer_type_at(c, l)->attention) { continue; }
        for (int h = 0; h < r->H; h++) {
            printf("  l%-2d %c h%-2d", l, c->pattern[l], h);
            for (int b = 0; b < r->n_bins; b++) {
                size_t at = ((size_t)l * r->H + h) * r->n_bins + b;
                printf("  %4.2f/%4.2f", r->score[at], r->mass[at]);
            }
            printf("\n");
        }
    }
}

// One JSON object (no newline): bin edges, queries and accuracy per bin; per attention layer its
// score and mass as (head, bin); with ablations their mode, names and accuracy as (ablation, bin).
static void recall_result_json(FILE* f, const RecallResult* r, const RecallSet* s, const Config* c) {
    fprintf(f, "{\"edges\": [");
    for (int b = 0; b + 1 < r->n_bins; b++) { fprintf(f, b ? ", %d" : "%d", s->edges[b]); }
    fprintf(f, "], \"sequences\": %d, \"count\": [", s->n_seqs);
    for (int b = 0; b < r->n_bins; b++) { fprintf(f, b ? ", %ld" : "%ld", r->count[b]); }
    fprintf(f, "], \"acc\": ");
    json_array(f, r->acc, r->n_bins);
    fprintf(f, ", \"attn_layers\": [");
    int first = 1;
    for (int l = 0; l < r->L; l++) {
        if (!layer_type_at(c, l)->attention) { continue; }
        fprintf(f, "%s{\"layer\": %d, \"type\": \"%c\"", first ? "" : ", ", l, c->pattern[l]);
        const double* arrays[2] = {r->score, r->mass};
        const char* keys[2] = {"score", "mass"};
        for (int k = 0; k < 2; k++) {
            fprintf(f, ", \"%s\": [", keys[k]);
            for (int h = 0; h < r->H; h++) {
                if (h) { fprintf(f, ", "); }
                json_array(f, arrays[k] + ((size_t)l * r->H + h) * r->n_bins, r->n_bins);
            }
            fprintf(f, "]");
        }
        fprintf(f, "}");
        first = 0;
    }
    fprintf(f, "]");
    if (r->n_abl > 0) {
        fprintf(f, ", \"ablation\": {\"mode\": \"%s\", \"names\": [", ablate_name(r->ablate));
        for (int a = 0; a < r->n_abl; a++) { fprintf(f, a ? ", \"%s\"" : "\"%s\"", r->abl_name[a]); }
        fprintf(f, "], \"acc\": [");
        for (int a = 0; a < r->n_abl; a++) {
            if (a) { fprintf(f, ", "); }
            json_array(f, r->abl_acc + (size_t)a * r->n_bins, r->n_bins);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "}");
}

#endif // NEEDLE_EVAL_H
