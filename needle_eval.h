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

#endif // NEEDLE_EVAL_H
