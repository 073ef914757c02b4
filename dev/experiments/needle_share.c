/*
needle_share.c — how many training questions an SWA layer could answer inside its window: the share
of questions whose needle value lies within W tokens before the answer, measured on the training
sequences the trainer's generator makes (dataloader.h, needle_fill_train), beside the formula
(W/T)(1 + ln(T/W)) of a needle and a question placed at random (finding 2 of dev/experiments).
A key asked about more than once has its value copied again after each question: the second
measured share counts a question as inside W when the needle or an earlier answer to the same key
lies within W (what a layer that copies the nearest copy could answer). The shares depend only on
T and the needle flags, not on the haystack or the model.
With --needle-kind recall it measures the recall task instead (dataloader.h recall_fill): each key is
defined once and queried once, so there is no nearer copy; the share of queries at distance d <= W
(answer - value) beside the formula of the distance distribution (recall_share_within).

    make dev/experiments/needle_share
    ./dev/experiments/needle_share -T 1024 --needle-density 30 --needle-queries 128 -w 32,128,512
    ./dev/experiments/needle_share -T 1024 --needle-kind recall --recall-keys 64 --needle-symbols 256 -w 32,128,512

One line per W: W, questions whose needle is within W / all questions, the same for the needle or
an earlier answer, the formula (recall: W, queries within W / all, the formula).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../hybrid_cpu.h"  // defines: MAX_SEQ_LEN, MAX_SYMBOLS (and dataloader.h: needle_fill_train, vocab_make)
#include "../../flags.h"       // defines: flags_parse, flags_parse_list

#define SHARE_MAX_W 16

// The recall task's share of queries within each W, on n_seq training sequences (T + 1 tokens) of
// the generator, beside the formula. The pairs' room in a sequence is checked as the trainers do.
static int recall_share(const NeedleConfig* nc, const Vocab* v, Rng* rng, int T, int n_seq, const double* W, int n_w) {
    int n = T + 1, dmax = recall_dist_max(nc, n);
    if (!recall_pairs_fit(nc, n)) { die("--recall-keys %d at -T %d: the pairs would take more than half of a sequence", nc->recall_keys, T); }
    if (dmax < nc->dist_min) { die("--recall-dist-min %d at -T %d: a sequence holds distances up to %d", nc->dist_min, T, dmax); }
    int* seq = (int*)malloc_check((size_t)n * sizeof(int));
    RecallPair* pairs = (RecallPair*)malloc_check((size_t)nc->recall_keys * sizeof(RecallPair));
    long queries = 0, within[SHARE_MAX_W] = {0};
    for (int i = 0; i < n_seq; i++) {
        for (int t = 0; t < n; t++) { seq[t] = 'a'; }
        int K = recall_fill(seq, NULL, n, nc, v, rng, pairs);
        queries += K;
        for (int q = 0; q < K; q++) {
            for (int k = 0; k < n_w; k++) { within[k] += pairs[q].answer_pos - pairs[q].value_pos <= W[k]; }
        }
    }
    printf("recall, T %d, %d pairs a sequence, distances %s on [%d, %d]: %ld queries in %d sequences\n", T, nc->recall_keys,
           dist_kind_name(nc->dist_kind), nc->dist_min, dmax, queries, n_seq);
    printf("|    W | query within W (measured) | formula |\n|------|---------------------------|---------|\n");
    for (int k = 0; k < n_w; k++) {
        printf("| %4d | %25.4f | %7.4f |\n", (int)W[k], (double)within[k] / queries, recall_share_within(nc, dmax, (int)W[k]));
    }
    free(seq);
    free(pairs);
    return 0;
}

int main(int argc, char** argv) {
    int T = 1024, n_seq = 2000, n_symbols = NEEDLE_SYMBOLS_DEFAULT;
    long seed = 1;
    const char* windows = "32,64,128,256,512";
    NeedleConfig nc = needle_config_default();
    nc.per_1k = 30;
    nc.queries = 128;
    FlagSpec flags[] = {
        {"-T", FLAG_INT, &T, 2, MAX_SEQ_LEN, NULL, "training sequence length"},
        {"--needle-kind", FLAG_CHOICE, &nc.kind, 0, 0, "symbol|text|recall", "needle kind (text is measured as symbol)"},
        {"--recall-keys", FLAG_INT, &nc.recall_keys, 1, RECALL_MAX_KEYS, NULL, "recall: key/value pairs per sequence"},
        {"--recall-dist-min", FLAG_INT, &nc.dist_min, 3, MAX_SEQ_LEN, NULL, "recall: shortest query distance"},
        {"--recall-dist-max", FLAG_INT, &nc.dist_max, 0, MAX_SEQ_LEN, NULL, "recall: longest query distance (0 = the longest a sequence holds)"},
        {"--recall-dist", FLAG_CHOICE, &nc.dist_kind, 0, 0, "loguniform|uniform", "recall: distribution of the query distance"},
        {"--needle-key", FLAG_INT, &nc.key_len, 1, NEEDLE_MAX - 3, NULL, "symbols per needle key"},
        {"--needle-val", FLAG_INT, &nc.val_len, 1, NEEDLE_MAX - 3, NULL, "symbols per needle value"},
        {"--needle-density", FLAG_INT, &nc.per_1k, 1, 1000, NULL, "needles per 1000 tokens of a training sequence"},
        {"--needle-queries", FLAG_INT, &nc.queries, 1, MAX_SEQ_LEN, NULL, "queries per training sequence"},
        {"--needle-symbols", FLAG_INT, &n_symbols, 2, MAX_SYMBOLS, NULL, "needle symbols"},
        {"-w", FLAG_STR, &windows, 0, 0, NULL, "windows, comma-separated (at most 16)"},
        {"-n", FLAG_INT, &n_seq, 1, 1000000, NULL, "training sequences to measure"},
        {"-s", FLAG_LONG, &seed, 0, SEED_MAX, NULL, "seed of the generator"},
    };
    flags_parse(flags, (int)(sizeof(flags) / sizeof(flags[0])), argc, argv, NULL);
    double W[SHARE_MAX_W];  // whole numbers (flags_parse_list checks)
    int n_w = flags_parse_list("-w", windows, 1, MAX_SEQ_LEN, 1, W, SHARE_MAX_W);
    DataConfig dc = data_config_default();  // the trainers' data checks (needle lengths, recall keys)
    dc.n_symbols = n_symbols;
    dc.needles = nc;
    data_config_check(&dc);
    Vocab v = vocab_make(256, n_symbols);
    Rng rng;
    rng_init(&rng, (uint64_t)seed);
    if (nc.kind == NEEDLE_RECALL) { return recall_share(&nc, &v, &rng, T, n_seq, W, n_w); }
    // the trainer's sequences are T+1 tokens (inputs and the shifted targets)
    int n = T + 1, *seq = (int*)malloc_check((size_t)n * sizeof(int)), *dist = (int*)malloc_check((size_t)n * sizeof(int));
    int* near = (int*)malloc_check((size_t)n * sizeof(int));
    long questions = 0, within[SHARE_MAX_W] = {0}, near_within[SHARE_MAX_W] = {0};
    for (int i = 0; i < n_seq; i++) {
        for (int t = 0; t < n; t++) { seq[t] = 'a'; }
        int n_dist;
        needle_fill_train(seq, n, &nc, &v, &rng, dist, near, &n_dist);
        questions += n_dist;
        for (int q = 0; q < n_dist; q++) {
            for (int k = 0; k < n_w; k++) {
                within[k] += dist[q] <= W[k];
                near_within[k] += near[q] <= W[k];
            }
        }
    }
    if (questions == 0) { die("no questions in %d sequences of T %d (raise --needle-queries or --needle-density)", n_seq, T); }
    printf("T %d, %d needles / 1000 tokens, %d queries a sequence: %ld questions in %d sequences\n", T, nc.per_1k, nc.queries,
           questions, n_seq);
    printf("|    W | needle within W (measured) | needle or an earlier answer within W (measured) | (W/T)(1 + ln(T/W)) |\n"
           "|------|----------------------------|-------------------------------------------------|--------------------|\n");
    for (int k = 0; k < n_w; k++) {
        double x = W[k] >= T ? 1.0 : W[k] / T * (1.0 + log(T / W[k]));
        printf("| %4d | %26.3f | %47.3f | %18.3f |\n", (int)W[k], (double)within[k] / questions, (double)near_within[k] / questions, x);
    }
    free(seq);
    free(dist);
    free(near);
    return 0;
}
