/*
train_common.h — what both trainers (train_hybrid.cu, dev/train_cpu.c) share around the model:
their flags and how they fit together, the output paths checked before the first step, the checked
JSONL log, the needle evals of a run, stopping on a signal or a non-finite step, resuming from a
checkpoint, and what a run prints (config table, step lines with elapsed time and ETA, the
end-of-run summary).

defines: TrainArgs, train_flags, train_args_default, train_args_resolve, train_check_outputs,
         RunLog (run_log_open/config/flush/close), json_string, TrainEval (train_eval_init/due/report/free),
         train_signals_install, train_resume_read, train_run_record, train_open_data,
         train_should_save, train_step_finite, train_stop_status, report_val, report_step,
         print_config_table, model_flops_per_token, RunSummary, Tokenizer, sample_print
*/
#ifndef TRAIN_COMMON_H
#define TRAIN_COMMON_H

#include <limits.h>       // PATH_MAX
#include <signal.h>       // SIGINT/SIGTERM: finish the step, save, exit
#include <fcntl.h>        // open: the run's locks
#include <sys/file.h>     // flock
#include <unistd.h>       // access
#include "flags.h"        // defines: FlagSpec, flags_parse, flag_given
#include "checkpoint.h"   // defines: Checkpoint, RunRecord, checkpoint_save (and hybrid_cpu.h, dataloader.h)
#include "needle_eval.h"  // defines: NeedleResult, needle_result_summary, needle_result_json

// ----------------------------------------------------------------------------
// Command line shared by the trainers: the flag table (flags.h parses it) and the checks across flags.

#define MAX_WINDOWS 8  // windows -w may list

typedef struct {
    int L, C, H, F;          // model size (F = 0: round64(8C/3))
    const char* pattern;     // layer pattern, tiled to L
    int window;              // SWA window of the model (the largest of -w's list)
    const char* window_list; // -w as typed: one window, or several of which each step draws one
    int n_windows;           // the windows of -w (1: a fixed window)
    int windows[MAX_WINDOWS];
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
    int eval_long_every;     // the grid's lengths beyond T only every this many steps and at the end (0 = every eval)
    int eval_text;           // 1: for byte data trained on symbol needles, the text-needle grid too
    int eval_samples;        // needle samples per (length, depth) cell
    long eval_seed;          // seed of the needle grid and the recall eval set
    int recall_eval;         // recall: held-out sequences of the recall eval
    const char* recall_bins; // recall: bin edges of distance as typed (NULL = T/32, T/8, T/2)
    int n_edges;             // ... parsed (0: the default)
    int edges[RECALL_MAX_BINS];
    int ablate_every;        // recall: layer ablations every this many evals and at the last (0 = never)
    int ablate_mode;         // ABLATE_MEAN or ABLATE_ZERO
    const char* freeze;      // layer types whose mixer weights stay at their init ("" = none)
    int sample_every;        // a sample every this many steps (0 = never)
    int sample_len;          // tokens a sample continues the prompt by
    int sample_only;         // --sample: print a sample of the -r checkpoint and exit
    const char* tokenizer;   // llm.c tokenizer file that decodes token data ("" = print ids)
} TrainArgs;


// The flags both trainers take; returns how many were written to out (MAX_FLAGS entries).
static int train_flags(TrainArgs* a, FlagSpec* out) {
    FlagSpec f[] = {
        {"-i", FLAG_STR, &a->data.train, 0, 0, NULL, "train data: glob of llm.c shards, or of files with --bytes; none = built-in text"},
        {"-j", FLAG_STR, &a->data.val, 0, 0, NULL, "val data: glob of llm.c shards (with -i)"},
        {"--bytes", FLAG_BOOL, &a->data.bytes, 0, 0, NULL, "-i names plain files read as bytes (last 10% = val)"},
        {"--needle-frac", FLAG_FLOAT, &a->data.needle_frac, 0, 1, NULL, "fraction of training sequences that carry needles"},
        {"--needle-kind", FLAG_CHOICE, &a->data.needles.kind, 0, 0, "symbol|text|recall", "needle kind (recall: the distance-controlled task, README \"Data\")"},
        {"--recall-keys", FLAG_INT, &a->data.needles.recall_keys, 1, RECALL_MAX_KEYS, NULL, "recall: key/value pairs per sequence, each defined once and queried once"},
        {"--recall-dist-min", FLAG_INT, &a->data.needles.dist_min, 3, MAX_SEQ_LEN, NULL, "recall: shortest query distance (answer - value)"},
        {"--recall-dist-max", FLAG_INT, &a->data.needles.dist_max, 0, MAX_SEQ_LEN, NULL, "recall: longest query distance (0 = the longest a sequence holds, T - 2)"},
        {"--recall-dist", FLAG_CHOICE, &a->data.needles.dist_kind, 0, 0, "loguniform|uniform", "recall: distribution of the query distance"},
        {"--answer-min-dist", FLAG_INT, &a->data.needles.answer_min_dist, 0, MAX_SEQ_LEN, NULL, "recall: answers at distance <= N carry no loss (far-only answer loss; 0 = all answers)"},
        {"--needle-key", FLAG_INT, &a->data.needles.key_len, 1, NEEDLE_MAX - 3, NULL, "symbols per needle key"},
        {"--needle-val", FLAG_INT, &a->data.needles.val_len, 1, NEEDLE_MAX - 3, NULL, "symbols per needle value"},
        {"--needle-density", FLAG_INT, &a->data.needles.per_1k, 0, 1000, NULL, "needles per 1000 tokens of a training sequence"},
        {"--needle-queries", FLAG_INT, &a->data.needles.queries, 0, MAX_SEQ_LEN, NULL, "queries per training sequence"},
        {"--needle-symbols", FLAG_INT, &a->data.n_symbols, 2, MAX_SYMBOLS, NULL, "needle symbols appended to the vocabulary"},
        {"-p", FLAG_STR, &a->pattern, 0, 0, NULL, "layer pattern over F (full attn), S (sliding window), R (recurrent), tiled to L"},
        {"-w", FLAG_STR, &a->window_list, 0, 0, NULL, "sliding window W: query i sees keys i-W < j <= i; a list (32,512) draws one per step, evals use the largest"},
        {"--freeze", FLAG_STR, &a->freeze, 0, 0, NULL, "layer types (e.g. S) whose mixer weights stay at their init: no gradient, no update"},
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
        {"--skip-nonfinite", FLAG_BOOL, &a->skip_nonfinite, 0, 0, NULL, "skip the update of a step whose loss or gradient norm is not finite (off: the run stops)"},
        {"--eval-every", FLAG_INT, &a->eval_every, 0, MAX_STEPS, NULL, "needle grid and retrieval heads every this many steps (0 = never)"},
        {"--eval-early", FLAG_INT, &a->eval_early, 0, MAX_STEPS, NULL, "during the first N steps (where retrieval emerges) the evals run 4x as often: every --eval-every/4 steps"},
        {"--eval-long-every", FLAG_INT, &a->eval_long_every, 0, MAX_STEPS, NULL, "the needle grid's lengths beyond T (2T, 4T: most of its cost) only every this many steps and at the last eval (0 = at every eval)"},
        {"--eval-text", FLAG_INT, &a->eval_text, 0, 1, NULL, "1: byte data trained on symbol needles is also evaluated on text needles, 0: symbol needles only"},
        {"--eval-samples", FLAG_INT, &a->eval_samples, 1, 100000, NULL, "needle samples per (length, depth) cell"},
        {"--eval-seed", FLAG_LONG, &a->eval_seed, 0, SEED_MAX, NULL, "seed of the needle grid and the recall eval set (fixed, so every run sees the same samples)"},
        {"--recall-eval", FLAG_INT, &a->recall_eval, 1, 100000, NULL, "recall: held-out sequences of the task scored at each eval"},
        {"--recall-bins", FLAG_STR, &a->recall_bins, 0, 0, NULL, "recall: upper edges of the distance bins, ascending (none = T/32,T/8,T/2)"},
        {"--ablate-every", FLAG_INT, &a->ablate_every, 0, MAX_STEPS, NULL, "recall: layer ablations every this many evals and at the last (0 = never)"},
        {"--ablate", FLAG_CHOICE, &a->ablate_mode, 0, 0, "mean|zero", "recall: an ablated mixer's output is replaced by its mean over the eval set, or by zeros"},
        {"--sample-every", FLAG_INT, &a->sample_every, 0, MAX_STEPS, NULL, "print a continuation of a val prompt every this many steps and at the end (0 = never)"},
        {"--sample-len", FLAG_INT, &a->sample_len, 1, 4096, NULL, "tokens a sample adds to its prompt"},
        {"--sample", FLAG_BOOL, &a->sample_only, 0, 0, NULL, "with -r: print a sample of the checkpoint and exit (nothing is trained or written)"},
        {"--tokenizer", FLAG_STR, &a->tokenizer, 0, 0, NULL, "llm.c tokenizer file (gpt2_tokenizer.bin) to print samples of token data as text (\"\" = as ids)"},
    };
    int n = (int)(sizeof(f) / sizeof(f[0]));
    static_assert(sizeof(f) / sizeof(f[0]) <= MAX_FLAGS, "MAX_FLAGS holds the shared flags");
    memcpy(out, f, sizeof(f));
    return n;
}

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
    a->eval_text = 1; a->eval_seed = NEEDLE_GRID_SEED;
    a->recall_eval = 32; a->recall_bins = NULL; a->ablate_mode = ABLATE_MEAN; a->freeze = "";
    a->sample_len = 64; a->tokenizer = "";
}

// Fills the derived defaults and checks what one flag's range cannot: flags that contradict each other.
static void train_args_resolve(TrainArgs* a) {
    double x[MAX_WINDOWS];
    a->n_windows = flags_parse_list("-w", a->window_list, 1, MAX_SEQ_LEN, 1, x, MAX_WINDOWS);
    a->window = 0;
    for (int i = 0; i < a->n_windows; i++) {
        a->windows[i] = (int)x[i];
        if (a->windows[i] > a->window) { a->window = a->windows[i]; }
    }
    for (const char* t = a->freeze; *t; t++) {
        if (!layer_type(*t) || strchr(t + 1, *t)) { die("--freeze %s: expected distinct layer types among %s (e.g. S)", a->freeze, layer_letters()); }
    }
    NeedleConfig* nc = &a->data.needles;
    int recall = nc->kind == NEEDLE_RECALL;
    if (a->recall_bins != NULL) {  // given (an empty list is refused by the parse)
        if (!recall) { die("--recall-bins without --needle-kind recall: there is no recall eval to bin"); }
        a->n_edges = flags_parse_ascending("--recall-bins", a->recall_bins, 1, MAX_SEQ_LEN, a->edges, RECALL_MAX_BINS - 1);
    }
    if (a->ablate_every > 0 && !recall) { die("--ablate-every %d without --needle-kind recall: ablations are scored on the recall eval", a->ablate_every); }
    if (a->ablate_every > 0 && a->eval_every == 0) { die("--ablate-every %d without --eval-every: there are no evals to ablate in", a->ablate_every); }
    if (nc->answer_min_dist > 0 && !recall) { die("--answer-min-dist %d without --needle-kind recall", nc->answer_min_dist); }
    if (recall && a->data.needle_frac > 0) {
        if (!recall_pairs_fit(nc, a->T + 1)) {
            die("--recall-keys %d at -T %d: the pairs take %d of the %d tokens of a sequence, at most half; fewer keys or a longer -T",
                nc->recall_keys, a->T, 6 * nc->recall_keys, a->T + 1);
        }
        if (nc->dist_max > a->T - 2) { die("--recall-dist-max %d at -T %d: a sequence holds distances up to %d", nc->dist_max, a->T, a->T - 2); }
        if (nc->dist_min > a->T - 3) { die("--recall-dist-min %d at -T %d: the eval's sequences hold distances up to %d", nc->dist_min, a->T, a->T - 3); }
        if (nc->answer_min_dist >= recall_dist_max(nc, a->T + 1)) {
            die("--answer-min-dist %d: no answer is farther (distances up to %d): no answer would carry loss", nc->answer_min_dist, recall_dist_max(nc, a->T + 1));
        }
    }
    if (a->opt.warmup == -1) { a->opt.warmup = a->opt.steps / 20; }
    if (a->opt.warmup > a->opt.steps) { die("--warmup %d is longer than the run (-n %d)", a->opt.warmup, a->opt.steps); }
    if (!a->ckpt_path[0] && (a->ckpt_every > 0 || a->ckpt_keep > 1)) {
        die("--ckpt-every %d --ckpt-keep %d without -c: no checkpoint is written (give -c FILE)", a->ckpt_every, a->ckpt_keep);
    }
    if (a->sample_only && !a->resume[0]) { die("--sample needs -r CHECKPOINT: the model to sample from"); }
    if (a->eval_early > 0 && a->eval_every == 0) { die("--eval-early %d without --eval-every: there are no needle evals to run early", a->eval_early); }
    if (a->eval_long_every > 0 && a->eval_every == 0) { die("--eval-long-every %d without --eval-every: there are no needle evals to shorten", a->eval_long_every); }
    if ((long)a->B * a->T > MAX_TOKENS_PER_BATCH) {
        die("-B %d -T %d: %ld tokens per micro-batch, at most %d (use -a to accumulate)", a->B, a->T, (long)a->B * a->T, MAX_TOKENS_PER_BATCH);
    }
    data_config_check(&a->data);
    long keys = needle_keys(nc, a->data.n_symbols);
    if (!recall && a->data.needle_frac > 0 && (long)nc->per_1k * a->T > keys / 2 * 1000) {
        die("--needle-density %d at -T %d: %.1f needles per sequence, more than half of the %ld distinct keys (keys differ within a sequence; lower the density, or raise --needle-key or --needle-symbols)",
            nc->per_1k, a->T, nc->per_1k * a->T / 1000.0, keys);
    }
    // a needle, its question and its answer in one sequence (training) and in the grid's shortest
    // sample, T/4 (evals): else no needle is ever placed, or the first eval fails mid-run
    Vocab bytes = vocab_make(256, a->data.n_symbols);  // the lengths do not depend on the data vocabulary
    int task = needle_task_len(nc, &bytes);
    const char* kind = needle_kind_name(nc->kind);
    if (a->data.needle_frac > 0 && task > a->T + 1) {
        die("-T %d: a %s needle with its question and answer takes %d tokens, more than a sequence (-T + 1); raise -T or give --needle-frac 0",
            a->T, kind, task);
    }
    if (a->eval_every > 0 && task > a->T / 4) {
        die("-T %d --eval-every %d: the needle grid's shortest sample (T/4 = %d tokens) cannot hold a %s needle with its question (%d tokens); raise -T to %d or give --eval-every 0",
            a->T, a->eval_every, a->T / 4, kind, task, 4 * task);
    }
}

// ----------------------------------------------------------------------------
// Run reporting shared by the trainers: model FLOPs for MFU, the config table, a clock.

// Model FLOPs per trained token (forward + backward = 3 × forward), at sequence length T:
//   matmuls: 2 FLOPs per weight per token (every projection, and the tied LM head Vp·C)
//   the mixers past their projections: each layer type's flops (LAYER_TYPES), given the keys a
//   query sees under the causal mask, (T+1)/2 on average
// The embedding lookup, norms and elementwise work are not counted (as in llm.c / PaLM's MFU).
static double model_flops_per_token(const Config* c, int T) {
    int C = c->n_embd;
    double fwd = 2.0 * c->padded_vocab * C, keys_full = (T + 1) / 2.0;
    for (int l = 0; l < c->n_layer; l++) {
        char type = c->pattern[l];
        for (int k = 0; k < NUM_LAYER_PARAMS; k++) {
            const TensorKind* tk = &LAYER_PARAMS[k];
            if (tk->decay) { fwd += 2.0 * tensor_numel(c, tk, type); }  // the matrices are the decayed tensors
        }
        fwd += layer_type(type)->flops(c, keys_full);
    }
    return 3.0 * fwd;
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
// Output paths, checked before the first step: a bad -c or -o fails now, not after the whole run,
// and no output ever lands on an input (a log appended to the checkpoint being resumed, say).

// path's directory ("." for a bare name) into dir
static void path_dir(const char* path, char* dir, size_t size) {
    const char* slash = strrchr(path, '/');
    if (slash == NULL) { snprintf(dir, size, "."); }
    else if (slash == path) { snprintf(dir, size, "/"); }
    else { snprintf(dir, size, "%.*s", (int)(slash - path), path); }
}

// path with its directory resolved (symlinks, "..", "./"), whether or not the file exists yet, and a
// last component that is a symbolic link followed to its target (a dangling link compares by the
// path it points to, which a write would create); 0 when a directory does not exist.
static int path_resolve(const char* path, char* out, size_t size) {
    char cur[4096], dir[4096], real[PATH_MAX];
    snprintf(cur, sizeof(cur), "%s", path);
    for (int hops = 0; hops < 16; hops++) {  // a link to a link: follow on (a loop stops at 16)
        char target[4096];
        ssize_t n = readlink(cur, target, sizeof(target) - 1);
        if (n <= 0) { break; }
        target[n] = '\0';
        if (target[0] == '/') { snprintf(cur, sizeof(cur), "%s", target); continue; }
        path_dir(cur, dir, sizeof(dir));
        if (strlen(dir) + 1 + strlen(target) >= sizeof(cur)) { return 0; }  // longer than any path the OS takes
        size_t nd = strlen(dir);
        memmove(cur + nd + 1, target, strlen(target) + 1);  // cur = dir/target (the lengths checked above)
        memcpy(cur, dir, nd);
        cur[nd] = '/';
    }
    path_dir(cur, dir, sizeof(dir));
    if (realpath(dir, real) == NULL) { return 0; }
    const char* slash = strrchr(cur, '/');
    snprintf(out, size, "%s/%s", real, slash ? slash + 1 : cur);
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
// kept save ckpt.step<k>?
static int ckpt_writes(const char* ckpt, const char* path) {
    char tmp[4096 + 8], rc[4096 + PATH_MAX], rp[4096 + PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp", ckpt);
    if (same_file(path, ckpt) || same_file(path, tmp)) { return 1; }
    return path_resolve(ckpt, rc, sizeof(rc)) && path_resolve(path, rp, sizeof(rp)) && kept_save_step(rp, rc) >= 0;
}

// Refuses `out` (the file of flag out_flag) when it is one of the files the glob `in` of in_flag
// matches; for -c, also when an input is a name its saves write (ckpt_writes).
static void output_not_input(const char* out_flag, const char* out, const char* in_flag, const char* in) {
    if (out[0] == '\0' || in == NULL || in[0] == '\0') { return; }
    glob_t g;
    if (glob(in, 0, NULL, &g) != 0) { return; }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int hit = strcmp(out_flag, "-c") == 0 ? ckpt_writes(out, g.gl_pathv[i]) : same_file(out, g.gl_pathv[i]);
        if (hit) { die("%s %s would overwrite or delete %s, the file of %s: an output may not be an input", out_flag, out, g.gl_pathv[i], in_flag); }
    }
    globfree(&g);
}

// The longest name a checkpoint save derives from -c: "<-c>.step<k>" (".tmp" and ".lock" are shorter).
#define CKPT_SUFFIX_MAX ((int)sizeof(".step1000000000") - 1)

// An output must not be any input of the run: the data globs, the checkpoint it resumes from, the
// tokenizer. (-c may be the -r file: it is read whole before training and only replaced by a rename.)
static void output_not_inputs(const char* flag, const char* path, const TrainArgs* a) {
    output_not_input(flag, path, "-i", a->data.train);
    output_not_input(flag, path, "-j", a->data.val);
    output_not_input(flag, path, "--tokenizer", a->tokenizer);
    if (strcmp(flag, "-c") != 0) { output_not_input(flag, path, "-r", a->resume); }
}

// An existing, non-empty -o must be a log of these trainers (its first line one of their JSON
// records), or appending to it or rewriting it would destroy a file of another kind.
static void output_log_check(const char* path) {
    FILE* f = fopen(path, "r");
    if (f == NULL) { return; }
    char line[32] = "";
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    if (n > 0 && strncmp(line, "{\"step\": ", 9) != 0) {
        die("-o %s exists and is not a log of this trainer (its first line does not start with {\"step\": ); give a new name", path);
    }
}

// -c and -o: writable, not an input, not each other; the names a save derives from -c fit the OS's
// limits; an existing -o is a log of this trainer.
static void train_check_outputs(const TrainArgs* a) {
    const char* outs[2][2] = {{"-o", a->log_path}, {"-c", a->ckpt_path}};
    for (int i = 0; i < 2; i++) {
        const char *flag = outs[i][0], *path = outs[i][1];
        if (path[0] == '\0') { continue; }
        output_file_check(flag, path);
        output_not_inputs(flag, path, a);
    }
    if (a->log_path[0]) { output_log_check(a->log_path); }
    if (a->ckpt_path[0]) {
        const char* slash = strrchr(a->ckpt_path, '/');
        size_t base = strlen(slash ? slash + 1 : a->ckpt_path);
        if (strlen(a->ckpt_path) + CKPT_SUFFIX_MAX >= PATH_MAX || base + CKPT_SUFFIX_MAX > NAME_MAX) {
            die("-c %s: the names its saves derive from it (<-c>.tmp, <-c>.step<k>) would pass the OS's limits (%d bytes a path, %d a file name); give a shorter name",
                a->ckpt_path, PATH_MAX - 1, NAME_MAX);
        }
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", a->ckpt_path);
        output_file_check("-c", tmp);  // the save writes there first
    }
    if (a->log_path[0] && a->ckpt_path[0] && ckpt_writes(a->ckpt_path, a->log_path)) {
        die("-o %s is a file the checkpoint saves of -c %s write or delete (%s, .tmp, .step<k>)", a->log_path, a->ckpt_path, a->ckpt_path);
    }
}

// ----------------------------------------------------------------------------
// One run per checkpoint and per log. A run holds flock(2) locks for its whole life: on <-c>.lock
// (the checkpoint itself is replaced by renames, so it cannot carry the lock; the file holds the
// owner's pid for the message) and on the -o file itself. A second run naming either stops at
// start. The kernel drops the locks with the process, kill -9 included; a lock file left by a killed
// run is taken over, and the owner removes its lock file at exit.

static char train_lock_path[4096 + 8];
static pid_t train_lock_owner;
static void train_lock_remove(void) {
    if (train_lock_path[0] && getpid() == train_lock_owner) { unlink(train_lock_path); }  // not from forked ranks
}

static void train_lock_outputs(const TrainArgs* a) {
    if (a->ckpt_path[0]) {
        snprintf(train_lock_path, sizeof(train_lock_path), "%s.lock", a->ckpt_path);
        int fd = open(train_lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) { die("-c %s: cannot open its lock file %s: %s", a->ckpt_path, train_lock_path, strerror(errno)); }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            char pid[32] = "";
            ssize_t n = read(fd, pid, sizeof(pid) - 1);
            pid[n > 0 ? n : 0] = '\0';
            train_lock_path[0] = '\0';  // not ours to remove
            die("-c %s is in use by another run (process %s holds %s.lock): two runs writing one checkpoint would corrupt it",
                a->ckpt_path, pid[0] ? pid : "?", a->ckpt_path);
        }
        char pid[32];
        int len = snprintf(pid, sizeof(pid), "%d", (int)getpid());
        if (ftruncate(fd, 0) != 0 || write(fd, pid, (size_t)len) != len) { die("-c %s: cannot write its lock file: %s", a->ckpt_path, strerror(errno)); }
        train_lock_owner = getpid();
        atexit(train_lock_remove);  // fd stays open: the lock lasts as long as the process
    }
    if (a->log_path[0]) {
        int fd = open(a->log_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);  // no O_TRUNC: a locked log is left as it is
        if (fd < 0) { die("-o %s: %s", a->log_path, strerror(errno)); }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) { die("-o %s is being written by another run (it holds the file's lock)", a->log_path); }
    }
}

// ----------------------------------------------------------------------------
// The JSONL log (-o): every record is flushed and checked, so a full disk stops the run with a
// clear line instead of ending it with exit 0 and a short log.

typedef struct {
    FILE* f;          // NULL: no log
    const char* path;
} RunLog;

static void run_log_flush(RunLog* log) {
    if (log->f && (fflush(log->f) != 0 || ferror(log->f))) { die("-o %s: write failed: %s", log->path, strerror(errno)); }
}

// Bytes of a valid UTF-8 sequence starting at s (1 for ASCII), 0 when s does not start one.
static int utf8_len(const unsigned char* s) {
    int n = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || (n == 2 && s[0] < 0xC2)) { return 0; }  // a stray continuation byte, an overlong pair
    for (int i = 1; i < n; i++) { if ((s[i] & 0xC0) != 0x80) { return 0; } }
    return n;
}

// A JSON string: quotes, backslashes and control characters escaped; bytes that are not UTF-8 (a
// path in another encoding) as \u00XX, so the log stays valid UTF-8 JSON.
static void json_string(FILE* f, const char* s) {
    fputc('"', f);
    const unsigned char* p = (const unsigned char*)s;
    while (*p) {
        int n = utf8_len(p);
        if (n == 0) { fprintf(f, "\\u%04x", *p++); continue; }
        if (*p == '"' || *p == '\\') { fprintf(f, "\\%c", *p); }
        else if (*p < 0x20) { fprintf(f, "\\u%04x", *p); }
        else { fwrite(p, 1, (size_t)n, f); }
        p += n;
    }
    fputc('"', f);
}

// A JSON number, or null for a value that is not finite (JSON has no NaN or infinity).
static void json_number(FILE* f, const char* fmt, double x) {
    if (isfinite(x)) { fprintf(f, fmt, x); } else { fprintf(f, "null"); }
}

// The first record of a fresh log: the model, the schedule and the data with its needles, so a log
// says what it measured (report.py measures a run's training questions with them). No "loss" key:
// readers that count steps count lines with "loss".
static void run_log_config(FILE* f, const TrainArgs* a, const Config* c) {
    fprintf(f, "{\"step\": 0, \"config\": {\"pattern\": \"%s\", \"L\": %d, \"C\": %d, \"H\": %d, \"F\": %d, \"window\": %d, "
               "\"pos_full\": \"%s\", \"pos_swa\": \"%s\", \"mixer\": \"%s\", \"B\": %d, \"T\": %d, \"accum\": %d, \"steps\": %d, "
               "\"lr\": %g, \"seed\": %ld, \"data\": ",
            c->pattern, c->n_layer, c->n_embd, c->n_head, c->ffn, c->window, pos_name(c->pos_full), pos_name(c->pos_swa), mixer_name(c->mixer),
            a->B, a->T, a->accum, a->opt.steps, a->opt.lr, a->seed);
    json_string(f, a->data.train ? a->data.train : "built-in");
    const NeedleConfig* n = &a->data.needles;
    fprintf(f, ", \"bytes\": %d, \"needle_frac\": %g, \"needle_kind\": \"%s\", \"needle_key\": %d, \"needle_val\": %d, "
               "\"needle_density\": %d, \"needle_queries\": %d, \"needle_symbols\": %d",
            a->data.bytes, a->data.needle_frac, needle_kind_name(n->kind), n->key_len, n->val_len, n->per_1k,
            n->queries, a->data.n_symbols);
    if (n->kind == NEEDLE_RECALL) {
        fprintf(f, ", \"recall_keys\": %d, \"recall_dist_min\": %d, \"recall_dist_max\": %d, \"recall_dist\": \"%s\", "
                   "\"answer_min_dist\": %d",
                n->recall_keys, n->dist_min, recall_dist_max(n, a->T + 1), dist_kind_name(n->dist_kind),
                n->answer_min_dist);
    }
    fprintf(f, ", \"schedule\": \"%s\", \"windows\": [", schedule_name(a->opt.schedule));
    for (int i = 0; i < a->n_windows; i++) { fprintf(f, i ? ", %d" : "%d", a->windows[i]); }
    fprintf(f, "], \"freeze\": ");
    json_string(f, a->freeze);
    fprintf(f, "}}\n");
}

// Cuts the log of a run resumed at step s0 back to the records before the checkpoint: every record
// of steps before s0, and the step record of s0 itself (its val and evals run again). A record cut
// short by a crash or a full disk, and records a killed run wrote past its checkpoint, go.
static void run_log_cut(const char* path, int s0) {
    FILE* f = fopen_check(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char* buf = (char*)malloc_check((size_t)size + 1);
    if (size > 0) { fread_check(buf, 1, (size_t)size, f, path); }
    fclose(f);
    buf[size] = '\0';
    long keep = 0, cut = 0;  // bytes kept; records removed
    for (long at = 0; at < size;) {
        char* nl = (char*)memchr(buf + at, '\n', (size_t)(size - at));
        if (nl) { *nl = '\0'; }  // the record alone, for strstr
        long step = strncmp(buf + at, "{\"step\": ", 9) == 0 ? strtol(buf + at + 9, NULL, 10) : -1;
        int is_step = strstr(buf + at, "\"loss\": ") != NULL;
        if (keep == at && nl != NULL && step >= 0 && (step < s0 || (step == s0 && is_step))) { keep = nl - buf + 1; }
        else { cut++; }
        at = nl ? nl - buf + 1 : size;
    }
    free(buf);
    if (cut == 0) { return; }
    if (truncate(path, keep) != 0) { die("-o %s: cannot cut it back to step %d: %s", path, s0, strerror(errno)); }
    printf("-o %s: cut back to step %d (%ld records after the checkpoint, or cut short, removed)\n", path, s0, cut);
}

// A run resumed at step s0 > 0 continues its log, cut back to s0; a fresh one (s0 = 0) starts it with
// the config record.
static RunLog run_log_open(const char* path, int s0, const TrainArgs* a, const Config* c) {
    RunLog log = {NULL, path};
    if (!path[0]) { return log; }
    int append = s0 > 0;
    if (append) { run_log_cut(path, s0); }
    log.f = fopen_check(path, append ? "a" : "w");
    if (!append) {
        run_log_config(log.f, a, c);
        run_log_flush(&log);
    }
    return log;
}

static void run_log_close(RunLog* log) {
    if (log->f == NULL) { return; }
    run_log_flush(log);
    if (fclose(log->f) != 0) { die("-o %s: close failed: %s", log->path, strerror(errno)); }
    log->f = NULL;
}

// ----------------------------------------------------------------------------
// The needle evals of a training run (README.md, "Retrieval metrics"): the symbol grid every --eval-every steps (and
// at the last step) and, for byte data trained on symbol needles, the text-needle grid next to it,
// at the lengths whose haystack holds the text needle's statement and question. With
// --eval-long-every the lengths beyond T (2T and 4T: three quarters of a grid's tokens) are left
// out of the evals between its multiples: those evals run the grids' first lengths, up to T, on
// the same samples. train_eval_pick gives the grids of a step, the trainer runs them on its model
// (cpu_needle_eval, gpu_needle_eval) and hands the results to train_eval_report.

typedef struct {
    NeedleGrid grid, text_grid;  // the whole grids
    NeedleGrid grid_to_T, text_to_T;  // views of their lengths up to T (same samples; not freed)
    int on, text;  // grids built
    RecallSet recall;  // the recall eval set (recall runs)
    int recall_on;
} TrainEval;

// A view of g's first lengths, those up to max_len (the lengths ascend and the samples of a length
// are contiguous, so the view shares g's arrays).
static NeedleGrid needle_grid_prefix(const NeedleGrid* g, int max_len) {
    NeedleGrid p = *g;
    p.n_lengths = 0;
    while (p.n_lengths < g->n_lengths && g->lengths[p.n_lengths] <= max_len) { p.n_lengths++; }
    return p;
}

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
    e->grid_to_T = needle_grid_prefix(&e->grid, a->T);
    e->text_to_T = needle_grid_prefix(&e->text_grid, a->T);
    e->recall_on = e->on && a->data.needles.kind == NEEDLE_RECALL;
    if (e->recall_on) { recall_set_build(&e->recall, &a->data, vocab, a->T, a->recall_eval, (uint64_t)a->eval_seed, a->edges, a->n_edges); }
}

#define EVAL_EARLY_RATE 4  // --eval-early: evals this many times as often while retrieval emerges

static int train_eval_due(const TrainArgs* a, int step, int last, int stopping) {
    if (a->eval_every <= 0 || stopping) { return 0; }
    int every = a->eval_every;
    if (step <= a->eval_early) { every = every / EVAL_EARLY_RATE > 0 ? every / EVAL_EARLY_RATE : 1; }
    return step % every == 0 || last;
}

// The ablation mode of the eval at `step` (due: train_eval_due): ablations run at every
// --ablate-every-th eval, counted from the one at step 0, and at the last; else ABLATE_OFF.
static int train_eval_ablate(const TrainArgs* a, int step, int last) {
    if (a->ablate_every <= 0) { return ABLATE_OFF; }
    if (last) { return a->ablate_mode; }
    // evals at steps 0 .. step-1: multiples of the early period through --eval-early, then of --eval-every
    long every = a->eval_every, early = every / EVAL_EARLY_RATE > 0 ? every / EVAL_EARLY_RATE : 1, split = (long)a->eval_early + 1;
#define MULTIPLES_BELOW(x, k) (((x) + (k) - 1) / (k))  // multiples of k in [0, x)
    long evals_before = MULTIPLES_BELOW(step < split ? step : split, early);
    if (step > split) { evals_before += MULTIPLES_BELOW(step, every) - MULTIPLES_BELOW(split, every); }
#undef MULTIPLES_BELOW
    return evals_before % a->ablate_every == 0 ? a->ablate_mode : ABLATE_OFF;
}

// The grids of the eval at `step`: whole at the last step and every --eval-long-every steps, else
// their lengths up to T. *text_grid is NULL where no text grid runs (none built, or none of its
// lengths is that short).
static void train_eval_pick(const TrainArgs* a, const TrainEval* e, int step, int last, const NeedleGrid** grid, const NeedleGrid** text_grid) {
    int whole = last || a->eval_long_every == 0 || step % a->eval_long_every == 0;
    *grid = whole ? &e->grid : &e->grid_to_T;
    *text_grid = NULL;
    if (e->text && (whole || e->text_to_T.n_lengths > 0)) { *text_grid = whole ? &e->text_grid : &e->text_to_T; }
}

// Prints the results (one line each), writes them as one JSONL record, frees them. text_grid and
// text_res are used only when text_grid is not NULL. Results a signal cut short (stop_requested) are
// freed, not logged: the resumed run evaluates that step again.
static void train_eval_report(RunLog* log, int step, const Config* cfg, const NeedleGrid* grid, const NeedleGrid* text_grid,
                              NeedleResult* res, NeedleResult* text_res, const TrainEval* e, RecallResult* rec) {
    if (stop_requested()) {
        printf("step %5d | evals cut short by signal %d: not logged\n", step, (int)*stop_request);
        needle_result_free(res);
        if (text_grid) { needle_result_free(text_res); }
        if (e->recall_on) { recall_result_free(rec); }
        return;
    }
    if (e->recall_on) { recall_result_summary(rec, &e->recall, cfg, step); }
    needle_result_summary(res, grid, cfg, step, "needle");
    if (text_grid) { needle_result_summary(text_res, text_grid, cfg, step, "text needle"); }
    if (log->f) {
        fprintf(log->f, "{\"step\": %d, \"needle\": ", step);
        needle_result_json(log->f, res, grid, cfg);
        if (text_grid) {
            fprintf(log->f, ", \"text_needle\": ");
            needle_result_json(log->f, text_res, text_grid, cfg);
        }
        if (e->recall_on) {
            fprintf(log->f, ", \"recall\": ");
            recall_result_json(log->f, rec, &e->recall, cfg);
        }
        fprintf(log->f, "}\n");
        run_log_flush(log);
    }
    needle_result_free(res);
    if (text_grid) { needle_result_free(text_res); }
    if (e->recall_on) { recall_result_free(rec); }
}

static void train_eval_free(TrainEval* e) {
    if (e->on) { needle_grid_free(&e->grid); }
    if (e->text) { needle_grid_free(&e->text_grid); }
    if (e->recall_on) { recall_set_free(&e->recall); }
}

// The window of the S layers for training step `step` (0-based): -w's window, or with a list one of
// them drawn from the seed and the step (so a resumed run draws the same); evals use the largest.
static int train_window_at(const TrainArgs* a, int step) {
    if (a->n_windows == 1) { return a->windows[0]; }
    Rng r;
    rng_init(&r, (uint64_t)a->seed * 0x100000001B3ull + (uint64_t)step);
    return a->windows[rng_int(&r, a->n_windows)];
}

// ----------------------------------------------------------------------------
// Stopping safely. SIGINT/SIGTERM only raise a flag: the trainer finishes its step, writes the
// checkpoint and exits with 128 + the signal. A non-finite loss or gradient norm stops the run
// before the update (so the last checkpoint stays the last good state), or skips the update.

static volatile sig_atomic_t train_stop_signal = 0;
static void train_on_signal(int sig) { train_stop_signal = sig; }

// SIGINT, SIGTERM, SIGHUP (a closed terminal) and SIGQUIT raise the flag; SIGPIPE is ignored, so a
// closed stdout shows as a failed write (train_stdout_check), which stops the run the same way. The
// evals, val and samples see the flag too (stop_request) and return early.
static void train_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = train_on_signal;
    const int stops[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    for (int i = 0; i < 4; i++) { sigaction(stops[i], &sa, NULL); }
    signal(SIGPIPE, SIG_IGN);
    stop_request = &train_stop_signal;
}

// After a step's line: stdout written and flushed, or the run stops as on SIGPIPE (a closed pipe,
// `| head`; a full disk under `> log`): it saves its checkpoint and exits 141, said on stderr.
static void train_stdout_check(void) {
    if (fflush(stdout) == 0 && !ferror(stdout)) { return; }
    if (train_stop_signal == 0) {
        fprintf(stderr, "stdout: write failed (%s): stopping after this step, as on SIGPIPE\n", strerror(errno));
        train_stop_signal = SIGPIPE;
    }
    clearerr(stdout);
}

// A resume trains the checkpoint's model: model flags given with -r must describe it, or they would
// be silently ignored. Each flag is compared through the Config it makes, the others taken from the
// checkpoint (-F 0 is the default width of C, -p is tiled to L).
static void train_resume_check_model(const TrainArgs* a, const FlagSpec* f, const int* given, int n, const Checkpoint* ck) {
    const Config* c = &ck->cfg;
#define GIVEN_OR(field, ck_value) (flag_given(f, given, n, &a->field) ? a->field : (ck_value))
    int L = GIVEN_OR(L, c->n_layer);
    if (flag_given(f, given, n, &a->pattern) && (int)strlen(a->pattern) > L) {  // config_make would advise a larger -L
        die("-r %s: its model is %s, L %d; -p %s has %d layers (a resume trains the checkpoint's model: drop -p or make it match)",
            a->resume, c->pattern, c->n_layer, a->pattern, (int)strlen(a->pattern));
    }
    Config w = config_make(c->vocab, c->padded_vocab, L, GIVEN_OR(C, c->n_embd), GIVEN_OR(H, c->n_head),
                           GIVEN_OR(F, c->ffn), GIVEN_OR(pattern, c->pattern), flag_given(f, given, n, &a->window_list) ? a->window : c->window,
                           GIVEN_OR(pos_full, c->pos_full), GIVEN_OR(pos_swa, c->pos_swa), GIVEN_OR(mixer, c->mixer));
#undef GIVEN_OR
    char differ[256] = "";
    size_t len = 0;
#define DIFFER(cond, ...) if (cond) { len += snprintf(differ + len, sizeof(differ) - len, __VA_ARGS__); }
    DIFFER(w.n_layer != c->n_layer, " -L %d", w.n_layer)
    DIFFER(w.n_embd != c->n_embd, " -C %d", w.n_embd)
    DIFFER(w.n_head != c->n_head, " -H %d", w.n_head)
    DIFFER(w.ffn != c->ffn, " -F %d", w.ffn)
    DIFFER(strcmp(w.pattern, c->pattern) != 0, " -p %s", w.pattern)
    DIFFER(w.window != c->window, " -w %d", w.window)
    DIFFER(w.pos_full != c->pos_full, " --pos-full %s", pos_name(w.pos_full))
    DIFFER(w.pos_swa != c->pos_swa, " --pos-swa %s", pos_name(w.pos_swa))
    DIFFER(w.mixer != c->mixer, " --mixer %s", mixer_name(w.mixer))
#undef DIFFER
    if (len > 0) {
        die("-r %s: its model is %s, L %d, C %d, H %d, F %d, W %d, pos F %s / S %s, mixer %s; the flags%s describe another (a resume trains the checkpoint's model: drop them or make them match)",
            a->resume, c->pattern, c->n_layer, c->n_embd, c->n_head, c->ffn, c->window, pos_name(c->pos_full), pos_name(c->pos_swa),
            mixer_name(c->mixer), differ);
    }
}

// The schedule flags a resume gives that differ from the checkpoint's (" --wd 0.05 (was 0.1)"...), "" when none.
static void train_sched_differs(const RunRecord* ck, const RunRecord* run, char* out, size_t size) {
    size_t n = 0;
    out[0] = '\0';
#define SCHED_DIFF(cond, ...) if ((cond) && n < size) { n += snprintf(out + n, size - n, __VA_ARGS__); }
    SCHED_DIFF(ck->lr != run->lr, " -l %g (was %g)", run->lr, ck->lr)
    SCHED_DIFF(ck->schedule != run->schedule, " --schedule %s (was %s)", schedule_name(run->schedule), schedule_name(ck->schedule))
    SCHED_DIFF(ck->warmup != run->warmup, " --warmup %d (was %d)", run->warmup, ck->warmup)
    SCHED_DIFF(ck->min_lr_frac != run->min_lr_frac, " --min-lr-frac %g (was %g)", run->min_lr_frac, ck->min_lr_frac)
    SCHED_DIFF(ck->decay_frac != run->decay_frac, " --decay-frac %g (was %g)", run->decay_frac, ck->decay_frac)
    SCHED_DIFF(ck->wd != run->wd, " --wd %g (was %g)", run->wd, ck->wd)
    SCHED_DIFF(ck->clip != run->clip, " --clip %g (was %g)", run->clip, ck->clip)
    SCHED_DIFF(ck->eval_seed != run->eval_seed, " --eval-seed %ld (was %ld)", run->eval_seed, ck->eval_seed)
    SCHED_DIFF(ck->train_id != run->train_id, " -w or --freeze (other windows or frozen layers)")
#undef SCHED_DIFF
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
    if (a->sample_only) {  // nothing is trained: the exact-resume checks do not apply, but say whose prompt it is
        if (ck.version >= 2 && ck.run.data_id != run->data_id) {
            printf("-r %s was trained on other data than these flags name (-i, -j, --bytes, --needle-*): the prompt comes from %s\n", r,
                   a->data.train && a->data.train[0] ? "the data given" : "the built-in text (give the run's -i/-j for a prompt of its own data)");
        }
        return ck;
    }
    if (ck.m == NULL) {
        struct stat st;
        if (a->log_path[0] && stat(a->log_path, &st) == 0 && st.st_size > 0) {  // a new run would start the log afresh
            die("-r %s holds parameters only: a new run from step 0 starts from them and a new log, but -o %s holds one already; give a new -o",
                r, a->log_path);
        }
        printf("-r %s: parameters only (no AdamW state): a new run from step 0 starts from them\n", r);
        return ck;
    }
    if (ck.step >= MAX_STEPS) { die("-r %s is at step %d, the most -n allows: there is nothing left to train", r, ck.step); }
    if (a->opt.steps <= ck.step) { die("-r %s is at step %d already: -n %d trains nothing; give -n > %d", r, ck.step, a->opt.steps, ck.step); }
    const char* exact = "an exact resume needs the run's own -T, -B, -a x GPUs, -s and data flags";
    if (ck.run.T != 0 && ck.run.T != run->T) { die("-r %s was trained with -T %d, this run gives -T %d: %s", r, ck.run.T, run->T, exact); }
    if (ck.version == 1) {
        printf("-r %s: a version-1 checkpoint records no -B, -a, -s or data; resumed without checking them\n", r);
        return ck;
    }
    if (ck.run.B != run->B) { die("-r %s was trained with -B %d, this run gives -B %d: %s", r, ck.run.B, run->B, exact); }
    // the data position is step · accum · world micro-batches: any split of the same global batch resumes
    if (ck.run.accum * ck.run.world != run->accum * run->world) {
        die("-r %s was trained with -a %d on %d GPU(s) (%d micro-batches a step), this run has -a %d on %d (%d): %s", r, ck.run.accum,
            ck.run.world, ck.run.accum * ck.run.world, run->accum, run->world, run->accum * run->world, exact);
    }
    if (ck.run.seed != run->seed) { die("-r %s was trained with -s %ld, this run gives -s %ld: %s", r, ck.run.seed, run->seed, exact); }
    if (ck.run.data_id != run->data_id) {
        die("-r %s was trained on other data: -i, -j, --bytes and the --needle-* flags must name the same files (names, sizes) and mixture; %s", r, exact);
    }
    if (ck.run.has_sched) {
        char differ[512];
        train_sched_differs(&ck.run, run, differ, sizeof(differ));
        if (differ[0]) { die("-r %s: this run's schedule differs:%s; a resume continues the run's own schedule (give its flags again)", r, differ); }
    }
    return ck;
}

// What this run's checkpoints record (RunRecord) and a resume compares.
static RunRecord train_run_record(const TrainArgs* a, int world, const DataLoader* train, const DataLoader* val) {
    RunRecord r;
    memset(&r, 0, sizeof(r));
    r.T = a->T; r.B = a->B; r.accum = a->accum; r.world = world; r.seed = a->seed;
    r.data_id = data_fingerprint(train, val, &a->data);
    const OptConfig* o = &a->opt;
    r.has_sched = 1;
    r.lr = o->lr; r.min_lr_frac = o->min_lr_frac; r.decay_frac = o->decay_frac; r.wd = o->weight_decay; r.clip = o->grad_clip;
    r.schedule = o->schedule;
    r.warmup = o->warmup;
    r.eval_seed = a->eval_seed;
    r.train_id = hash64(hash64(HASH64_INIT, a->windows, (size_t)a->n_windows * sizeof(int)), a->freeze, strlen(a->freeze));
    return r;
}


// -i and -j must not share a file: val on training data measures nothing.
static void data_check_overlap(const DataConfig* dc) {
    if (dc->train == NULL || dc->val == NULL) { return; }
    glob_t gi, gj;
    if (glob(dc->train, 0, NULL, &gi) != 0) { return; }  // no match: the loader says so with its reason
    if (glob(dc->val, 0, NULL, &gj) == 0) {
        for (size_t i = 0; i < gi.gl_pathc; i++) {
            for (size_t j = 0; j < gj.gl_pathc; j++) {
                if (same_file(gi.gl_pathv[i], gj.gl_pathv[j])) {
                    die("-i '%s' and -j '%s' both name %s: val on training data measures nothing", dc->train, dc->val, gj.gl_pathv[j]);
                }
            }
        }
        globfree(&gj);
    }
    globfree(&gi);
}

// Opens the train and val data, checked to share one tokenizer and no file.
static void train_open_data(DataLoader* train, DataLoader* val, const TrainArgs* a) {
    data_check_overlap(&a->data);
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


// What a run reports as it goes and at its end, gathered by report_step and report_val.
#define ETA_WINDOW 32  // the ETA is paced by the last 31 steps (evals among them included)
typedef struct {
    double t0;          // now_s() when the training loop started
    int step0;          // the step it started from (> 0 when resumed)
    int last_step;      // the last step done
    double tok_s_sum;   // tok/s summed over the steps after this process's first (which includes warm-up)
    int tok_s_n;
    double val_loss;    // the last val loss, NAN before the first
    double ends[ETA_WINDOW];  // now_s() at the end of the last ETA_WINDOW steps (a ring), for the ETA
    int n_ends;               // steps reported by this process
} RunSummary;

static RunSummary run_summary_start(int step0) {
    RunSummary r;
    memset(&r, 0, sizeof(r));
    r.t0 = now_s();
    r.step0 = r.last_step = step0;
    r.val_loss = NAN;
    return r;
}

// "42s", "3m05s", "2h07m"
static void format_duration(char* out, size_t size, double s) {
    long t = (long)(s + 0.5);
    if (t < 60) { snprintf(out, size, "%lds", t); }
    else if (t < 3600) { snprintf(out, size, "%ldm%02lds", t / 60, t % 60); }
    else { snprintf(out, size, "%ldh%02ldm", t / 3600, t / 60 % 60); }
}

// One val evaluation: a line on stdout and a JSON line in the log (when there is one).
static void report_val(RunLog* log, RunSummary* sum, int step, double val_loss) {
    if (stop_requested()) { printf("step %5d | val cut short by signal %d: not logged\n", step, (int)*stop_request); return; }
    printf("step %5d | val loss %.4f\n", step, val_loss);
    fflush(stdout);  // seen before the evals that follow it, which may take minutes
    sum->val_loss = val_loss;
    if (log->f) {
        fprintf(log->f, "{\"step\": %d, \"val_loss\": ", step);
        json_number(log->f, "%.6f", val_loss);
        fprintf(log->f, "}\n");
        run_log_flush(log);
    }
}

// One optimizer step (1-based): a line on stdout with the time since the loop started and the ETA
// of the remaining steps, and a JSON line in the log. mfu < 0: not reported. The ETA paces by the
// steps in a moving window that starts after this process's first step (its warm-up, cuBLAS set-up
// and first-touch of memory, would say an hour for a 3-minute run); "-" until two steps are timed.
static void report_step(RunLog* log, RunSummary* sum, int step, int steps, double loss, double lr, double norm, double ms,
                        double tok_s, double mfu) {
    if (step > sum->step0 + 1) { sum->tok_s_sum += tok_s; sum->tok_s_n++; }
    sum->last_step = step;
    double now = now_s(), elapsed = now - sum->t0;
    sum->ends[sum->n_ends % ETA_WINDOW] = now;
    sum->n_ends++;
    int k = sum->n_ends - 1 < ETA_WINDOW - 1 ? sum->n_ends - 1 : ETA_WINDOW - 1;  // steps timed in the window
    char el[32], left[32] = "-";
    format_duration(el, sizeof(el), elapsed);
    if (k >= 2) {
        double pace = (now - sum->ends[(sum->n_ends - 1 - k) % ETA_WINDOW]) / k;  // s per step
        format_duration(left, sizeof(left), pace * (steps - step));
    }
    printf("step %5d/%d | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s", step, steps, loss, lr, norm, ms, tok_s);
    if (mfu >= 0) { printf(" | MFU %.1f%%", 100.0 * mfu); }
    printf(" | %s, ETA %s\n", el, left);
    train_stdout_check();
    if (log->f) {
        fprintf(log->f, "{\"step\": %d, \"loss\": ", step);
        json_number(log->f, "%.6f", loss);
        fprintf(log->f, ", \"lr\": %.6e, \"grad_norm\": ", lr);
        json_number(log->f, "%.6f", norm);
        fprintf(log->f, ", \"tok_per_s\": %.1f", tok_s);
        if (mfu >= 0) { fprintf(log->f, ", \"mfu\": %.5f", mfu); }
        fprintf(log->f, ", \"ms\": %.3f}\n", ms);
        run_log_flush(log);
    }
}

// The end of a run, the same lines from both trainers: steps and time, mean throughput, the last
// val loss, where the log and the checkpoint are; `extra` (may be "") adds the trainer's own (GPU memory).
static void run_summary_print(const RunSummary* sum, const TrainArgs* a, const char* extra) {
    char el[32];
    format_duration(el, sizeof(el), now_s() - sum->t0);
    printf("done: steps %d..%d in %s", sum->step0, sum->last_step, el);
    if (sum->tok_s_n > 0) { printf(", mean %.0f tok/s", sum->tok_s_sum / sum->tok_s_n); }
    if (!isnan(sum->val_loss)) { printf(", last val loss %.4f", sum->val_loss); }
    printf("%s\n", extra);
    if (a->log_path[0]) { printf("log: %s\n", a->log_path); }
    if (a->ckpt_path[0] && sum->last_step > sum->step0) { printf("checkpoint: %s (step %d)\n", a->ckpt_path, sum->last_step); }
}

// The run's configuration as a table, printed by both trainers before the first step.
static void print_config_table(const Config* c, const TrainArgs* a, size_t n_params, const char* device) {
    const char* rule = "+-----------------------+------------------------------------------+\n";
    printf("%s", rule);
    table_row("device", "%s", device);
    table_row("model", "%s", c->pattern);
    table_row("L, C, H, D, F", "%d, %d, %d, %d, %d", c->n_layer, c->n_embd, c->n_head, c->n_embd / c->n_head, c->ffn);
    table_row("window, pos F/S", "%d, %s/%s", c->window, pos_name(c->pos_full), pos_name(c->pos_swa));
    table_row("mixer (R layers)", "%s", c->mixer == MIXER_GDN ? "gdn (Gated DeltaNet)" : "gla");
    table_row("vocab V / padded Vp", "%d / %d", c->vocab, c->padded_vocab);
    table_row("parameters", "%zu", n_params);
    table_row("B, T, accum", "%d, %d, %d", a->B, a->T, a->accum);
    table_row("steps, lr, warmup", "%d, %g, %d", a->opt.steps, a->opt.lr, a->opt.warmup);
    table_row("data", "%s", a->data.train ? a->data.train : "built-in synthetic text");
    table_row("needle fraction", "%g", a->data.needle_frac);
    printf("%s", rule);
}

// ----------------------------------------------------------------------------
// Samples: a continuation of a val prompt, printed as text, so a run shows what its model writes.
// The prompt is the start of the first val sequence (at most T/2 tokens); each next token is drawn
// from the softmax over the V real logits with a fixed seed (samples differ only by the model), the
// context cut to the last T tokens. Byte data prints as bytes (needle markers and symbols as <N>,
// <Q>, <s7>); llm.c token data through llm.c's tokenizer file when --tokenizer gives one, else ids.

#define SAMPLE_SEED 1337ull
#define SAMPLE_PROMPT_MAX 64
#define TOKENIZER_MAGIC 20240328  // llm.c's tokenizer file: gpt2_tokenizer.bin

// llm.c's tokenizer file: header uint32[256] {magic, version 1 or 2, vocab size, eot (version 2)},
// then per token a uint8 length and that many bytes.
typedef struct {
    int n;          // 0: none (print ids)
    char** piece;   // (n) NUL-terminated bytes of each token
} Tokenizer;

static Tokenizer tokenizer_load(const char* path, int data_vocab) {
    Tokenizer t = {0, NULL};
    if (path[0] == '\0') { return t; }
    size_t size = input_file_check("--tokenizer", path);
    uint32_t h[256];
    if (size < sizeof(h)) { die("--tokenizer %s: %zu bytes, shorter than the 1024-byte header of llm.c's tokenizer file", path, size); }
    FILE* f = fopen_check(path, "rb");
    fread_check(h, sizeof(uint32_t), 256, f, path);
    if (h[0] != TOKENIZER_MAGIC || (h[1] != 1 && h[1] != 2)) {
        die("--tokenizer %s: magic %u version %u, expected %d and 1 or 2 (llm.c's gpt2_tokenizer.bin)", path, h[0], h[1], TOKENIZER_MAGIC);
    }
    if ((int)h[2] != data_vocab) { die("--tokenizer %s: %u tokens, the data's vocabulary has %d", path, h[2], data_vocab); }
    t.n = (int)h[2];
    t.piece = (char**)calloc_check((size_t)t.n, sizeof(char*));
    for (int i = 0; i < t.n; i++) {
        unsigned char len;
        fread_check(&len, 1, 1, f, path);
        t.piece[i] = (char*)malloc_check((size_t)len + 1);
        fread_check(t.piece[i], 1, len, f, path);
        t.piece[i][len] = '\0';
    }
    fclose(f);
    return t;
}

static void tokenizer_free(Tokenizer* t) {
    for (int i = 0; i < t->n; i++) { free(t->piece[i]); }
    free(t->piece);
}

// One token as text: bytes (non-printable ones as \xNN), a tokenizer piece, an id, or the needle block.
static void sample_print_token(const Tokenizer* t, const Vocab* v, int id) {
    if (id == v->needle_mark) { printf("<N>"); return; }
    if (id == v->query_mark) { printf("<Q>"); return; }
    if (id >= v->symbol0) { printf("<s%d>", id - v->symbol0); return; }
    if (v->data_vocab == 256) {
        if (id == '\n' || id == '\t' || (id >= 32 && id < 127)) { putchar(id); } else { printf("\\x%02x", id); }
    } else if (t->n > 0) {
        for (const unsigned char* p = (const unsigned char*)t->piece[id]; *p; p++) {  // skip control bytes, as llm.c does
            if (*p >= 32 || *p == '\n' || *p == '\t') { putchar(*p); }
        }
    } else {
        printf("[%d]", id);
    }
}

// The logits of the token after tokens[0..n) (V floats), from the trainer's model.
typedef void (*NextLogits)(void* model, const int* tokens, int n, float* logits);

// Prints "sample at step S:" and the prompt, then " >>> " and sample_len sampled tokens.
static void sample_print(NextLogits next, void* model, DataLoader* val, const Tokenizer* t, int V, int T, int sample_len, int step) {
    dataloader_rewind(val);  // every sample starts from the same prompt (val evaluations rewind too)
    dataloader_next_batch(val);
    int prompt = T / 2 < SAMPLE_PROMPT_MAX ? T / 2 : SAMPLE_PROMPT_MAX;
    if (prompt < 1) { prompt = 1; }
    int n = prompt + sample_len;
    int* tokens = (int*)malloc_check((size_t)n * sizeof(int));
    float* logits = (float*)malloc_check((size_t)V * sizeof(float));
    memcpy(tokens, val->inputs, (size_t)prompt * sizeof(int));
    Rng rng;
    rng_init(&rng, SAMPLE_SEED);
    printf("sample at step %d:\n", step);
    for (int i = 0; i < prompt; i++) { sample_print_token(t, &val->vocab, tokens[i]); }
    printf(" >>> ");
    for (int i = prompt; i < n && !stop_requested(); i++) {
        int ctx = i < T ? i : T;  // the last T tokens
        next(model, tokens + i - ctx, ctx, logits);
        double mx = logits[0], z = 0.0;
        for (int v = 1; v < V; v++) { if (logits[v] > mx) { mx = logits[v]; } }
        for (int v = 0; v < V; v++) { z += exp(logits[v] - mx); }
        double u = rng_uniform(&rng) * z, cdf = 0.0;
        int pick = V - 1;
        for (int v = 0; v < V; v++) {
            cdf += exp(logits[v] - mx);
            if (u < cdf) { pick = v; break; }
        }
        tokens[i] = pick;
        sample_print_token(t, &val->vocab, pick);
    }
    printf("\n");
    fflush(stdout);
    free(tokens);
    free(logits);
}

// Samples are due every --sample-every steps (not at step 0: an untrained model) and at the last
// step, not while stopping.
static int train_sample_due(const TrainArgs* a, int step, int last, int stopping) {
    return a->sample_every > 0 && !stopping && ((step > 0 && step % a->sample_every == 0) || last);
}

#endif // TRAIN_COMMON_H
