/*
eval_needle.c — the needle-in-a-haystack grid and the retrieval heads of a checkpoint, on the CPU
with the reference implementation (hybrid_cpu.h): the same samples and scoring as the evaluation
train_hybrid runs while it trains (README.md, "Retrieval metrics"), so the two can be checked against each other.

    make eval_needle && ./eval_needle -c train_hybrid.ckpt      # grid T/4..4T around the training T
    ./eval_needle -c run.ckpt --lengths 256,512,2048 --depths 0,0.5,1 -N 32 --json

    ./eval_needle -c recall.ckpt --needle-kind recall --recall-keys 64 --needle-symbols 256 --ablate zero

Prints the exact-match accuracy per (length, depth) and, per head of every attention layer, the
retrieval score and the attention mass on the needle at the training length; --json prints the
same as one JSON object. With --needle-kind recall (a checkpoint trained on the recall task, its
--recall-* flags again) it first scores the recall eval set (--recall-eval held-out sequences):
accuracy per bin of query distance, every head's retrieval score and mass per bin, and each layer
ablation (--ablate mean|zero|off); the needle grid follows as the transfer check, and --json prints
{"recall": ..., "needle": ...}. The data flags must name the data the checkpoint was trained on (the
haystack comes from its val split, and the vocabulary must match).
*/
#include "flags.h"        // defines: FlagSpec, flags_parse, flags_parse_list, SEED_MAX
#include "checkpoint.h"   // defines: checkpoint_read, model_from_checkpoint (and hybrid_cpu.h, dataloader.h)
#include "needle_eval.h"  // defines: cpu_needle_eval, needle_result_print, needle_result_json

int main(int argc, char** argv) {
    const char* ckpt_path = "";
    const char* lengths = "";
    const char* depths = "";
    int T = 0, samples = 16, json = 0, recall_seqs = 32, ablate = ABLATE_MEAN;
    const char* bins = NULL;
    long seed = NEEDLE_GRID_SEED;
    DataConfig data = data_config_default();
    FlagSpec flags[] = {
        {"-c", FLAG_STR, &ckpt_path, 0, 0, NULL, "checkpoint to evaluate (required)"},
        {"-T", FLAG_INT, &T, 0, MAX_SEQ_LEN, NULL, "base length: grid lengths T/4, T/2, T, 2T, 4T, retrieval heads at T (0 = the checkpoint's training T)"},
        {"--lengths", FLAG_STR, &lengths, 0, 0, NULL, "comma-separated lengths instead of T/4..4T"},
        {"--depths", FLAG_STR, &depths, 0, 0, NULL, "comma-separated needle depths in [0,1] instead of 0,0.25,0.5,0.75,1"},
        {"-N", FLAG_INT, &samples, 1, 100000, NULL, "samples per (length, depth) cell"},
        {"-s", FLAG_LONG, &seed, 0, SEED_MAX, NULL, "seed of the grid (train_hybrid's --eval-seed)"},
        {"--json", FLAG_BOOL, &json, 0, 0, NULL, "print one JSON object instead of tables"},
        {"-i", FLAG_STR, &data.train, 0, 0, NULL, "the training data: glob of llm.c shards, or of files with --bytes; none = built-in text"},
        {"-j", FLAG_STR, &data.val, 0, 0, NULL, "val shards (with -i): the haystack"},
        {"--bytes", FLAG_BOOL, &data.bytes, 0, 0, NULL, "-i names plain files read as bytes (the last 10% is the haystack)"},
        {"--needle-kind", FLAG_CHOICE, &data.needles.kind, 0, 0, "symbol|text|recall", "needle kind"},
        {"--recall-keys", FLAG_INT, &data.needles.recall_keys, 1, RECALL_MAX_KEYS, NULL, "recall: key/value pairs per sequence"},
        {"--recall-dist-min", FLAG_INT, &data.needles.dist_min, 3, MAX_SEQ_LEN, NULL, "recall: shortest query distance"},
        {"--recall-dist-max", FLAG_INT, &data.needles.dist_max, 0, MAX_SEQ_LEN, NULL, "recall: longest query distance (0 = the longest a sequence holds)"},
        {"--recall-dist", FLAG_CHOICE, &data.needles.dist_kind, 0, 0, "loguniform|uniform", "recall: distribution of the query distance"},
        {"--recall-eval", FLAG_INT, &recall_seqs, 1, 100000, NULL, "recall: held-out sequences of length T"},
        {"--recall-bins", FLAG_STR, &bins, 0, 0, NULL, "recall: upper edges of the distance bins, ascending (none = T/32,T/8,T/2)"},
        {"--ablate", FLAG_CHOICE, &ablate, 0, 0, "mean|zero|off", "recall: layer ablations replace a mixer's output by its mean, by zeros, or none run"},
        {"--needle-key", FLAG_INT, &data.needles.key_len, 1, NEEDLE_MAX - 3, NULL, "symbols per needle key"},
        {"--needle-val", FLAG_INT, &data.needles.val_len, 1, NEEDLE_MAX - 3, NULL, "symbols per needle value"},
        {"--needle-symbols", FLAG_INT, &data.n_symbols, 2, MAX_SYMBOLS, NULL, "needle symbols appended to the vocabulary"},
    };
    int n_flags = (int)(sizeof(flags) / sizeof(flags[0])), given[MAX_FLAGS] = {0};
    flags_parse(flags, n_flags, argc, argv, given);
    if (ckpt_path[0] == '\0') { die("-c: which checkpoint? (eval_needle -c FILE, -h lists the flags)"); }
    data_config_check(&data);

    Checkpoint ck = checkpoint_read(ckpt_path);
    if (T == 0) { T = ck.run.T; }
    if (T < 1) { die("-T: %s does not record its training length; give -T", ckpt_path); }
    TokenStream probe;  // the data's vocabulary must be the checkpoint's
    stream_open(&probe, &data, 1, (uint64_t)seed, 1);
    Vocab vocab = vocab_make(probe.data_vocab, data.n_symbols);
    stream_free(&probe);
    if (vocab.vocab != ck.cfg.vocab) {
        die("%s: vocabulary %d, the data gives %d (same -i and --needle-symbols as in training?)", ckpt_path, ck.cfg.vocab, vocab.vocab);
    }

    NeedleGrid grid;
    needle_grid_default(&grid, T, samples, (uint64_t)seed);
    if (flag_given(flags, given, n_flags, &lengths)) {  // given empty: flags_parse_list says so
        double x[GRID_MAX];
        grid.n_lengths = flags_parse_list("--lengths", lengths, 1, 4 * MAX_SEQ_LEN, 1, x, GRID_MAX);
        for (int i = 0; i < grid.n_lengths; i++) { grid.lengths[i] = (int)x[i]; }
    }
    if (flag_given(flags, given, n_flags, &depths)) { grid.n_depths = flags_parse_list("--depths", depths, 0, 1, 0, grid.depths, GRID_MAX); }
    int task = needle_task_len(&data.needles, &vocab);
    for (int i = 0; i < grid.n_lengths; i++) {
        if (grid.lengths[i] < task) {
            die("length %d of the grid (-T %d or --lengths) cannot hold a needle with its question (%d tokens)", grid.lengths[i], T, task);
        }
    }
    needle_grid_build(&grid, &data, &vocab);
    int recall = data.needles.kind == NEEDLE_RECALL, edges[RECALL_MAX_BINS], n_edges = 0;
    if (flag_given(flags, given, n_flags, &bins)) {
        if (!recall) { die("--recall-bins without --needle-kind recall"); }
        n_edges = flags_parse_ascending("--recall-bins", bins, 1, MAX_SEQ_LEN, edges, RECALL_MAX_BINS - 1);
    }
    RecallSet rs;
    if (recall) {
        if (!recall_pairs_fit(&data.needles, T)) { die("--recall-keys %d at T %d: the pairs would take more than half of a sequence", data.needles.recall_keys, T); }
        recall_set_build(&rs, &data, &vocab, T, recall_seqs, (uint64_t)seed, edges, n_edges);
    }

    Model m;
    model_from_checkpoint(&m, &ck);
    NeedleResult r;
    RecallResult rr;
    double t0 = now_s();
    if (recall) { cpu_recall_eval(&m, &rs, ablate, &rr); }
    cpu_needle_eval(&m, &grid, &r);
    if (json) {
        if (recall) {
            printf("{\"recall\": ");
            recall_result_json(stdout, &rr, &rs, &ck.cfg);
            printf(", \"needle\": ");
        }
        needle_result_json(stdout, &r, &grid, &ck.cfg);
        printf(recall ? "}\n" : "\n");
    } else {
        printf("%s: %s, L %d, C %d, H %d, W %d, F %s / S %s, trained %d steps at T %d; %d samples in %.1f s\n", ckpt_path,
               ck.cfg.pattern, ck.cfg.n_layer, ck.cfg.n_embd, ck.cfg.n_head, ck.cfg.window, pos_name(ck.cfg.pos_full),
               pos_name(ck.cfg.pos_swa), ck.step, ck.run.T, grid.n_lengths * grid.n_depths * grid.samples,
               now_s() - t0);
        if (recall) { recall_result_print(&rr, &rs, &ck.cfg); }
        needle_result_print(&r, &grid, &ck.cfg);
    }
    if (recall) { recall_result_free(&rr); recall_set_free(&rs); }
    needle_result_free(&r);
    needle_grid_free(&grid);
    model_free(&m);
    checkpoint_free(&ck);
    return 0;
}
