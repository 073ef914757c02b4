/*
test_cpu.c — the CPU reference in its float build: layout, optimizer, schedule, data, needles,
command-line errors, and a tiny end-to-end training run.

  layout:    parameter count of a known config by hand; weight decay only on matrices
  optimizer: two AdamW steps against hand-computed values (decayed and not), clipping
  schedule:  cosine and WSD at hand-computed steps; the needle evals' steps (--eval-early) and
             grids (--eval-text; --eval-long-every: the lengths up to T between, same samples)
  data:      llm.c shard round trip (uint16 and uint32), bad shards -> one clear line and exit 1,
             bytes train/val split, built-in stream determinism, batches shifted by one
  needles:   every training query's answer is its needle's value; no more needles than 3/4 of
             the keys; eval placement at each depth; text needles spelled as documented
  cli:       bad flags and values -> one clear line and exit 1
  needle eval: grid determinism and placement at every depth, the scorer on hand-made logits,
             retrieval statistics on a hand-made attention map, eval_needle's JSON = in-process
  checkpoint: round trip of config, params, AdamW state and run record (and without the state);
             truncated, short, bad magic, bad version, bad pattern, missing, a directory -> one
             clear line and exit 1; a same-size header edit and a payload bit flip -> checksum
             error; out-of-range fields and NaN/inf contents behind a valid checksum -> error; a
             non-finite state is never written (the old file stays); version 1 still loads;
             --ckpt-keep matches <path>.step<digits> literally
  tokenizer: llm.c's tokenizer file round trip; another vocabulary or a cut file -> one clear line;
             sample tokens printed through it (and as ids without one)
  training:  SRF hybrid, 300 steps on built-in data; val loss < 0.75 x unigram baseline
*/
#include <ctype.h>
#include <time.h>
#include "../train_common.h"
#include "test_common.h"
#include "test_ckpt.h"



// ----------------------------------------------------------------------------
// needle eval: grid, scorer, retrieval statistics, eval_needle

// The grid is fixed by its seed; every sample has its needle at the cell's depth and the answer
// (the needle's value) at the very end, after ⟨Q⟩ key.
static void test_needle_grid(void) {
    DataConfig dc = data_config_default();
    Vocab v = vocab_make(256, dc.n_symbols);
    NeedleGrid a, b, c;
    needle_grid_default(&a, 64, 3, 99);
    needle_grid_default(&b, 64, 3, 99);
    needle_grid_default(&c, 64, 3, 100);
    needle_grid_build(&a, &dc, &v);
    needle_grid_build(&b, &dc, &v);
    needle_grid_build(&c, &dc, &v);
    int n = a.n_lengths * a.n_depths * a.samples;
    size_t total = a.offset[n - 1] + a.lengths[a.n_lengths - 1];
    int same = memcmp(a.tokens, b.tokens, total * sizeof(int)) == 0 && memcmp(a.meta, b.meta, n * sizeof(NeedleSample)) == 0;
    int differ = memcmp(a.tokens, c.tokens, total * sizeof(int)) != 0;
    check(same && differ && total == (size_t)3 * 5 * (16 + 32 + 64 + 128 + 256), "needle grid deterministic",
          "lengths 16..256 x 5 depths x 3 samples = %zu tokens; same seed same grid, other seed other grid", total);
    int placed = 1, answered = 1;
    for (int i = 0; i < n; i++) {
        int li = i / (a.n_depths * a.samples), di = i / a.samples % a.n_depths, len = a.lengths[li];
        const NeedleSample* s = &a.meta[i];
        const int* seq = a.tokens + a.offset[i];
        int needle_len = 1 + dc.needles.key_len + dc.needles.val_len, tail = 1 + dc.needles.key_len + s->answer_len;
        int filler = len - needle_len - tail;
        placed &= s->needle_pos == (int)floor(a.depths[di] * filler + 0.5) && seq[s->needle_pos] == v.needle_mark;
        placed &= s->value_pos == s->needle_pos + 1 + dc.needles.key_len && s->answer_pos == len - s->answer_len;
        answered &= seq[len - tail] == v.query_mark && memcmp(seq + len - tail + 1, seq + s->needle_pos + 1, dc.needles.key_len * sizeof(int)) == 0;
        answered &= memcmp(seq + s->answer_pos, seq + s->value_pos, s->answer_len * sizeof(int)) == 0;
    }
    check(placed && answered, "needle grid placement at each depth",
          "needle at round(depth x filler), value after its key, ⟨Q⟩ key and the value at the end, in all %d samples", n);
    // text needles: only the lengths with room for twice the task (78 bytes) stay; answers are the digits
    DataConfig tc = dc;
    tc.needles.kind = NEEDLE_TEXT;
    NeedleGrid t;
    needle_grid_default(&t, 128, 2, 99);
    int task = needle_task_len(&tc.needles, &v);
    needle_grid_drop_short(&t, 2 * task);
    needle_grid_build(&t, &tc, &v);
    int digits = 1;
    for (int i = 0; i < t.n_lengths * t.n_depths * t.samples; i++) {
        const NeedleSample* ts = &t.meta[i];
        const int* seq = t.tokens + t.offset[i];
        for (int j = 0; j < ts->answer_len; j++) { digits &= seq[ts->answer_pos + j] == seq[ts->value_pos + j] && isdigit(seq[ts->answer_pos + j]); }
    }
    check(task == 78 && t.n_lengths == 2 && t.lengths[0] == 256 && digits && t.meta[0].answer_len == 6, "text needle grid",
          "task %d bytes, lengths kept %d (%d, %d), every answer = the needle's 6 digits", task, t.n_lengths, t.lengths[0], t.lengths[1]);
    needle_grid_free(&t);
    needle_grid_free(&a); needle_grid_free(&b); needle_grid_free(&c);
}

// Exact match and token accuracy from hand-made logits rows; ties go to the lowest id; padded
// columns (>= V) never count.
static void test_needle_scorer(void) {
    NeedleGrid g;
    memset(&g, 0, sizeof(g));
    int tokens[2 * 8];
    size_t offset[2] = {0, 8};
    NeedleSample meta[2] = {{1, 3, 6, 2}, {1, 3, 6, 2}};  // answers at 6, 7
    for (int i = 0; i < 16; i++) { tokens[i] = 0; }
    tokens[6] = 2; tokens[7] = 4;         // sample 0 answers 2, 4
    tokens[8 + 6] = 1; tokens[8 + 7] = 3; // sample 1 answers 1, 3
    g.n_lengths = 1; g.n_depths = 1; g.samples = 2; g.lengths[0] = 8; g.tokens = tokens; g.offset = offset; g.meta = meta;
    Config c = config_make(5, 6, 1, 8, 2, 0, "F", 4, POS_ROPE, POS_ROPE, MIXER_GDN);
    NeedleResult r;
    needle_result_init(&r, &g, &c);
    float rows0[2 * 6] = {0, 0, 9, 0, 0, 99,   1, 1, 1, 1, 1, 0};  // argmax 2 (99 is padding); tie -> 0, wrong
    float rows1[2 * 6] = {0, 7, 0, 0, 0, 0,    0, 0, 0, 5, 5, 0};  // argmax 1; tie 3/4 -> 3, right
    needle_score_answer(&r, &g, 0, rows0, 5, 6);
    needle_score_answer(&r, &g, 1, rows1, 5, 6);
    check(fabs(r.acc[0] - 0.5) < 1e-12 && fabs(r.tok_acc[0] - 0.75) < 1e-12, "needle scorer on hand-made logits",
          "exact match %.2f (expect 0.50), token accuracy %.2f (expect 0.75)", r.acc[0], r.tok_acc[0]);
    needle_result_free(&r);
}

// One head, D = 2, T = 6: query 5 points at key 2; the window hides it.
static void test_retrieval_stats(void) {
    int T = 6, C = 2, H = 1;
    real qkvr[6 * 6] = {0};
    real keys[6][2] = {{0, 1}, {1, 0}, {3, 3}, {-1, 0}, {1, 1}, {0, 0}};
    for (int t = 0; t < T; t++) { qkvr[t * 6 + 2] = keys[t][0]; qkvr[t * 6 + 3] = keys[t][1]; }
    qkvr[5 * 6 + 0] = 1; qkvr[5 * 6 + 1] = 2;  // q5 = (1, 2): scores 2, 1, 9, -1, 3, 0
    real out[6 * 2], lse[6];
    attention_forward(out, lse, qkvr, 1, T, C, H, 0);
    int am, am_w;
    double mass, mass_w;
    attention_row_stats(&am, &mass, qkvr, lse, T, C, H, 0, 5, 0, 1, 3);  // mass on keys 1, 2
    double s = 1.0 / sqrt(2.0), z = exp(2 * s) + exp(1 * s) + exp(9 * s) + exp(-1 * s) + exp(3 * s) + 1.0;
    double want = (exp(1 * s) + exp(9 * s)) / z;
    real lse_w[6], out_w[12];
    attention_forward(out_w, lse_w, qkvr, 1, T, C, H, 2);
    attention_row_stats(&am_w, &mass_w, qkvr, lse_w, T, C, H, 2, 5, 0, 1, 3);  // keys 4, 5 only
    check(am == 2 && fabs(mass - want) < 1e-6 && am_w == 4 && mass_w == 0.0, "retrieval stats on a hand-made attention map",
          "argmax %d (expect 2), mass %.6f (expect %.6f); window 2: argmax %d (expect 4), mass %.1f (expect 0)", am, mass, want, am_w, mass_w);
}

// eval_needle on a checkpoint prints the same JSON as the in-process evaluation.
static void test_eval_needle_cli(void) {
    DataConfig dc = data_config_default();
    Vocab v = vocab_make(256, dc.n_symbols);
    Config c = config_make(v.vocab, v.padded, 2, 32, 2, 0, "SF", 8, POS_NOPE, POS_ROPE, MIXER_GDN);
    Model m;
    model_build(&m, &c, 3);
    const char* ck = tmp_path("eval.ckpt");
    RunRecord run = {.T = 32, .B = 1, .accum = 1, .world = 1, .seed = 0, .data_id = 0};
    checkpoint_write(ck, &c, m.params, NULL, NULL, m.pl.total, 0, &run);
    NeedleGrid g;
    needle_grid_default(&g, 32, 2, 77);
    needle_grid_build(&g, &dc, &v);
    NeedleResult r;
    cpu_needle_eval(&m, &g, &r);
    const char* mine = tmp_path("eval_mine.json");
    FILE* f = fopen_check(mine, "w");
    needle_result_json(f, &r, &g, &c);
    fprintf(f, "\n");
    fclose(f);
    char cmd[1024], a[65536] = {0}, b[65536] = {0};
    const char* theirs = tmp_path("eval_cli.json");
    snprintf(cmd, sizeof(cmd), "./eval_needle -c %s -N 2 -s 77 --json > %s 2>&1", ck, theirs);
    int rc = system(cmd);
    FILE* fa = fopen_check(mine, "r");
    FILE* fb = fopen_check(theirs, "r");
    size_t na = fread(a, 1, sizeof(a) - 1, fa), nb = fread(b, 1, sizeof(b) - 1, fb);
    fclose(fa); fclose(fb);
    char* nl = strchr(b, '\n');
    check(rc == 0 && na == nb && strcmp(a, b) == 0 && r.n_answer == 5 * 2 * 2, "eval_needle --json = in-process evaluation",
          "rc %d, %zu vs %zu bytes, %d answer tokens at T=32: %.*s...", rc, na, nb, r.n_answer, (int)(nl ? (nl - b < 90 ? nl - b : 90) : 90), b);
    needle_result_free(&r);
    needle_grid_free(&g);
    model_free(&m);
    remove(ck); remove(mine); remove(theirs);
}

// ----------------------------------------------------------------------------
// checkpoints

static void read_ckpt(void* path) { Checkpoint ck = checkpoint_read((const char*)path); checkpoint_free(&ck); }

// A checkpoint of a model whose AdamW v holds a NaN: checkpoint_write must refuse it.
typedef struct { const char* path; const Config* c; const Model* m; } WriteArgs;
static void write_ckpt(void* arg) {
    const WriteArgs* w = (const WriteArgs*)arg;
    RunRecord run = {.T = 64, .B = 4, .accum = 1, .world = 1, .seed = 1, .data_id = 0};
    checkpoint_write(w->path, w->c, w->m->params, w->m->m, w->m->v, w->m->pl.total, 5, &run);
}

// A copy of the checkpoint bytes buf (n) with header int `at` := value, resealed or not, written to
// path; returns path.
static const char* ckpt_variant(const char* path, const unsigned char* buf, size_t n, int at, int32_t value, int reseal) {
    unsigned char* b = (unsigned char*)malloc_check(n);
    memcpy(b, buf, n);
    ((int32_t*)b)[at] = value;
    if (reseal) { ckpt_reseal(b, n); }
    file_write_all(path, b, n);
    free(b);
    return path;
}

static void test_checkpoint(void) {
    Config c = config_make(300, 384, 3, 32, 2, 0, "SRF", 5, POS_NOPE, POS_ROPE, MIXER_GLA);
    Model m;
    model_build(&m, &c, 9);
    size_t n = m.pl.total;
    for (size_t i = 0; i < n; i++) { m.m[i] = (float)i; m.v[i] = (float)(2 * i); }
    const char* path = tmp_path("ck.bin");
    RunRecord run = {.T = 64, .B = 8, .accum = 2, .world = 1, .seed = 4242424242L, .data_id = 0xfedcba9876543210ull};
    checkpoint_write(path, &c, m.params, m.m, m.v, n, 17, &run);
    Checkpoint ck = checkpoint_read(path);
    int same_cfg = memcmp(&ck.cfg, &c, sizeof(c)) == 0;
    int same = ck.n_params == n && memcmp(ck.params, m.params, n * sizeof(float)) == 0 && memcmp(ck.m, m.m, n * sizeof(float)) == 0 &&
               memcmp(ck.v, m.v, n * sizeof(float)) == 0 && ck.step == 17 && ck.version == CKPT_VERSION;
    int same_run = ck.run.T == 64 && ck.run.B == 8 && ck.run.accum == 2 && ck.run.world == 1 && ck.run.seed == 4242424242L &&
                   ck.run.data_id == 0xfedcba9876543210ull;
    FILE* tmp = fopen(tmp_path("ck.bin.tmp"), "rb");  // the temp file was renamed away
    check(same_cfg && same && same_run && tmp == NULL, "checkpoint round trip with AdamW state and run record",
          "SRF gla nope/rope, %zu params, step %d, config %s, run record %s", n, ck.step, same_cfg ? "identical" : "differs",
          same_run ? "identical" : "differs");
    if (tmp) { fclose(tmp); }
    checkpoint_free(&ck);
    const char* bare = tmp_path("bare.bin");
    checkpoint_write(bare, &c, m.params, NULL, NULL, n, 3, &run);
    ck = checkpoint_read(bare);
    check(ck.m == NULL && ck.v == NULL && memcmp(ck.params, m.params, n * sizeof(float)) == 0, "checkpoint without optimizer state",
          "params only, %zu floats", n);
    checkpoint_free(&ck);
    // bad files: each one clear line
    size_t got;
    unsigned char* buf = file_read_all(path, &got);
    const char* trunc = tmp_path("ck_trunc.bin");
    file_write_all(trunc, buf, got - 5);
    expect_die("truncated checkpoint -> error", read_ckpt, (void*)trunc, "truncated or corrupt");
    const char* hdr = tmp_path("ck_hdr.bin");
    file_write_all(hdr, buf, 100);
    expect_die("checkpoint shorter than its header -> error", read_ckpt, (void*)hdr, "shorter than its 1024-byte header");
    const char* var = tmp_path("ck_var.bin");
    expect_die("checkpoint bad magic -> error", read_ckpt, (void*)ckpt_variant(var, buf, got, 0, 0x04030201, 1), "bad magic");
    expect_die("checkpoint bad version -> error", read_ckpt, (void*)ckpt_variant(var, buf, got, 1, 99, 1), "checkpoint version 99");
    // F layers NoPE -> RoPE: another model of the same size, in range; only the checksum can tell
    expect_die("checkpoint pos F nope -> rope, same size -> checksum error", read_ckpt, (void*)ckpt_variant(var, buf, got, 9, POS_ROPE, 0),
               "checksum mismatch");
    unsigned char* flip = (unsigned char*)malloc_check(got);
    memcpy(flip, buf, got);
    flip[got / 2] ^= 0x01;  // one bit of a parameter or the AdamW state
    file_write_all(var, flip, got);
    free(flip);
    expect_die("checkpoint payload bit flip -> checksum error", read_ckpt, (void*)var, "checksum mismatch");
    // behind a valid checksum, every field is range-checked
    expect_die("checkpoint step -1 (resealed) -> error", read_ckpt, (void*)ckpt_variant(var, buf, got, 14, -1, 1), "step = -1, expected 0..");
    expect_die("checkpoint T 0 (resealed) -> error", read_ckpt, (void*)ckpt_variant(var, buf, got, 17, 0, 1), "T = 0, expected 1..");
    expect_die("checkpoint W 2^21 (resealed) -> error", read_ckpt, (void*)ckpt_variant(var, buf, got, 8, 1 << 21, 1), "W = 2097152, expected 1..1048576");
    expect_die("checkpoint B 0 (resealed) -> error", read_ckpt, (void*)ckpt_variant(var, buf, got, 18, 0, 1), "B = 0, expected 1..");
    memcpy(buf + CKPT_PATTERN_BYTE, "SXF", 3);
    ckpt_reseal(buf, got);
    file_write_all(var, buf, got);
    expect_die("checkpoint bad pattern -> error", read_ckpt, (void*)var, "corrupt checkpoint header (pattern 'SXF'");
    expect_die("missing checkpoint -> error", read_ckpt, (void*)tmp_path("none.bin"), "No such file or directory");
    expect_die("checkpoint that is a directory -> error", read_ckpt, (void*)"/tmp", "is a directory, expected a regular file");
    // non-finite state: never written, never loaded
    m.v[7] = NAN;
    WriteArgs w = {var, &c, &m};
    unsigned char* before = file_read_all(path, &got);
    w.path = path;
    expect_die("checkpoint with NaN in AdamW v -> not written", write_ckpt, &w, "AdamW v of wte[7] is nan");
    size_t after_n;
    unsigned char* after = file_read_all(path, &after_n);
    check(after_n == got && memcmp(before, after, got) == 0 && fopen(tmp_path("ck.bin.tmp"), "rb") == NULL, "refused save leaves the old checkpoint",
          "%zu bytes unchanged, no .tmp", after_n);
    free(before); free(after);
    m.v[7] = 14.0f;
    free(buf);
    buf = file_read_all(path, &got);
    float nan_value = NAN;
    memcpy(buf + 1024 + (2 * n + 3) * sizeof(float), &nan_value, sizeof(float));  // v[3]
    ckpt_reseal(buf, got);
    file_write_all(var, buf, got);
    expect_die("checkpoint with NaN in AdamW v (resealed) -> error", read_ckpt, (void*)var, "AdamW v of wte[3] is nan");
    float inf_value = INFINITY;
    memcpy(buf + 1024 + (2 * n + 3) * sizeof(float), &m.v[3], sizeof(float));
    memcpy(buf + 1024 + (n - 1) * sizeof(float), &inf_value, sizeof(float));  // the last parameter: lnf_w[31]
    ckpt_reseal(buf, got);
    file_write_all(var, buf, got);
    expect_die("checkpoint with inf parameter (resealed) -> error", read_ckpt, (void*)var, "parameter lnf_w[31] is inf");
    // a version-1 file (no run record, no checksum) still loads, with T as recorded
    free(buf);
    buf = file_read_all(bare, &got);
    int32_t* h = (int32_t*)buf;
    h[1] = 1;
    for (int i = 18; i < 32; i++) { h[i] = 0; }
    file_write_all(var, buf, got);
    ck = checkpoint_read(var);
    check(ck.version == 1 && ck.run.T == 64 && ck.run.B == 0 && ck.step == 3 && memcmp(ck.params, m.params, n * sizeof(float)) == 0,
          "version-1 checkpoint loads", "step %d, T %d, no run record", ck.step, ck.run.T);
    checkpoint_free(&ck);
    free(buf);
    model_free(&m);
    remove(path); remove(bare); remove(trunc); remove(hdr); remove(var);
}

// llm.c's tokenizer file: written here with one piece per id, read back, checked against the data's vocabulary.
static void load_tokenizer_50000(void* path) { Tokenizer t = tokenizer_load((const char*)path, 50000); tokenizer_free(&t); }
static void load_tokenizer_50257(void* path) { Tokenizer t = tokenizer_load((const char*)path, 50257); tokenizer_free(&t); }
static void test_tokenizer(void) {
    const char* path = tmp_path("tok.bin");
    FILE* f = fopen_check(path, "wb");
    uint32_t h[256] = {TOKENIZER_MAGIC, 2, 50257, 50256};
    fwrite(h, sizeof(h), 1, f);
    for (int i = 0; i < 50257; i++) {
        char piece[16];
        unsigned char len = (unsigned char)snprintf(piece, sizeof(piece), i == 198 ? "\n" : " w%d", i);
        fwrite(&len, 1, 1, f);
        fwrite(piece, 1, len, f);
    }
    fclose(f);
    Tokenizer t = tokenizer_load(path, 50257);
    // how a sample prints: pieces through the tokenizer, the needle block by name, ids without one
    Vocab v = vocab_make(50257, 64);
    const char* printed = tmp_path("tok_print.txt");
    fflush(stdout);
    int saved = dup(1);
    FILE* out = fopen_check(printed, "w");
    dup2(fileno(out), 1);
    int ids[] = {7, 198, v.needle_mark, v.query_mark, v.symbol0 + 3};
    for (int i = 0; i < 5; i++) { sample_print_token(&t, &v, ids[i]); }
    Tokenizer none = {0, NULL};
    sample_print_token(&none, &v, 7);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    fclose(out);
    char got[64] = "";
    FILE* in = fopen_check(printed, "r");
    size_t got_n = fread(got, 1, sizeof(got) - 1, in);
    got[got_n] = '\0';
    fclose(in);
    remove(printed);
    int ok = strcmp(got, " w7\n<N><Q><s3>[7]") == 0;
    for (char* c = got; *c; c++) { if (*c == '\n') { *c = '|'; } }  // one line in the report
    check(ok, "sample tokens decoded", "ids 7, 198 (newline), <N>, <Q>, symbol 3, then 7 without a tokenizer -> \"%s\"", got);
    check(t.n == 50257 && strcmp(t.piece[7], " w7") == 0 && strcmp(t.piece[198], "\n") == 0 && strcmp(t.piece[50256], " w50256") == 0,
          "tokenizer file round trip", "llm.c format, %d pieces, piece 7 '%s'", t.n, t.piece[7]);
    tokenizer_free(&t);
    expect_die("tokenizer of another vocabulary -> error", load_tokenizer_50000, (void*)path, "50257 tokens, the data's vocabulary has 50000");
    size_t n;
    unsigned char* buf = file_read_all(path, &n);
    file_write_all(path, buf, n - 3);  // the last piece cut short
    expect_die("truncated tokenizer -> error", load_tokenizer_50257, (void*)path, "read failed: unexpected end of file");
    free(buf);
    remove(path);
}

// --ckpt-keep prunes path.step<digits> only: the user's path is matched literally, not as a glob.
static void test_kept_names(void) {
    int ok = kept_save_step("run.ckpt.step8", "run.ckpt") == 8 && kept_save_step("run.ckpt.step120", "run.ckpt") == 120 &&
             kept_save_step("run.ckpt.step_backup", "run.ckpt") == -1 && kept_save_step("run.ckpt.step", "run.ckpt") == -1 &&
             kept_save_step("run.ckpt.step8.bak", "run.ckpt") == -1 && kept_save_step("runXckpt.step8", "run.ckpt") == -1 &&
             kept_save_step("r[u]n.step3", "r[u]n") == 3 && kept_save_step("run.step3", "r[u]n") == -1 &&
             kept_save_step("run.ckpt.step99999999999", "run.ckpt") == -1;
    check(ok, "--ckpt-keep names", "only <path>.step<digits>, the path taken literally (r[u]n is not a glob)");
}

// ----------------------------------------------------------------------------
// layout

static void test_layout(void) {
    // SRF, C=8, H=2 (D=4), F=12, Vp=24, gdn:
    //  wte 24*8=192, lnf 8
    //  S, F layers: ln1 8 + wqkv 192 + wo 64 + ln2 8 + w1 96 + w3 96 + w2 96 = 560 each
    //  R layer: 560 + wg 64 + wbeta 16 + wa 16 + conv 96 + A_log 2 + dt_bias 2 + onorm 4 = 760
    Config c = config_make(19, 24, 3, 8, 2, 12, "SRF", 3, POS_ROPE, POS_ROPE, MIXER_GDN);
    Layout lo = param_layout(&c);
    size_t want = 192 + 8 + 560 + 760 + 560;
    check(lo.total == want, "layout parameter count", "%zu (by hand %zu)", lo.total, want);
    Config g = config_make(19, 24, 3, 8, 2, 12, "SRF", 3, POS_ROPE, POS_ROPE, MIXER_GLA);
    check(param_layout(&g).total == want - 16, "layout gla has no wbeta", "%zu (by hand %zu)", param_layout(&g).total, want - 16);
    int bad = 0;
    for (int s = 0; s < lo.n; s++) {
        const char* n = strchr(lo.spec[s].name, '.') ? strchr(lo.spec[s].name, '.') + 1 : lo.spec[s].name;
        int matrix = n[0] == 'w';  // wte, wqkv, wg, wbeta, wa, wo, w1, w2, w3
        if (lo.spec[s].kind->decay != matrix) { printf("  %s decay %d\n", lo.spec[s].name, lo.spec[s].kind->decay); bad++; }
    }
    check(bad == 0, "weight decay on matrices only", "%d tensors, %d wrong", lo.n, bad);
    int ordered = lo.spec[0].offset == 0;
    for (int s = 1; s < lo.n; s++) { ordered &= lo.spec[s].offset == lo.spec[s - 1].offset + lo.spec[s - 1].numel; }
    check(ordered && lo.spec[lo.n - 1].offset + lo.spec[lo.n - 1].numel == lo.total, "layout contiguous", "%d tensors back to back", lo.n);
}

// ----------------------------------------------------------------------------
// AdamW and schedule

// Two AdamW steps, lr 0.1, b1 .9, b2 .95, eps 1e-8, wd 0.1, clip off, grad 0.5 then -0.25, p0 = 1:
//  step 1: m = .05, v = .0125, m̂ = .5, v̂ = .25, m̂/sqrt(v̂) = 1
//          decayed p = 1 - .1 (1 + .1·1) = 0.89;   no decay p = 1 - .1 = 0.9
//  step 2: m = .045 - .025 = .02, v = .011875 + .003125 = .015,
//          m̂ = .02/.19 = .1052632, v̂ = .015/.0975 = .1538462, m̂/sqrt(v̂) = .2683717
//          decayed p = .89 - .1 (.2683694 + .1·.89) = 0.8542631;   no decay p = .9 - .02683694 = 0.8731631
static void test_adamw(void) {
    Config c = config_make(19, 24, 1, 8, 2, 12, "F", 3, POS_ROPE, POS_ROPE, MIXER_GDN);
    Model m;
    model_build(&m, &c, 1);
    OptConfig o = opt_config_default(10);
    o.grad_clip = 0.0;
    const double grads[2] = {0.5, -0.25};
    for (size_t i = 0; i < m.pl.total; i++) { m.params[i] = 1.0f; }
    for (int t = 1; t <= 2; t++) {
        for (size_t i = 0; i < m.pl.total; i++) { m.grads[i] = (float)grads[t - 1]; }
        model_update(&m, &o, 0.1, t, 0.0);
    }
    double p1_dec = 1.0 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.1);
    double p1_nod = 1.0 - 0.1 * (0.5 / (0.5 + 1e-8));
    double mhat = 0.02 / 0.19, vhat = 0.015 / (1.0 - 0.95 * 0.95);
    double p2_dec = p1_dec - 0.1 * (mhat / (sqrt(vhat) + 1e-8) + 0.1 * p1_dec);
    double p2_nod = p1_nod - 0.1 * (mhat / (sqrt(vhat) + 1e-8));
    double got_dec = param(&m, 0, P_WQKV)[3], got_nod = param(&m, 0, P_LN1)[3];
    check(fabs(got_dec - p2_dec) < 1e-6 && fabs(p2_dec - 0.8542631) < 1e-6, "adamw decayed tensor", "p = %.7f (hand %.7f)", got_dec, p2_dec);
    check(fabs(got_nod - p2_nod) < 1e-6 && fabs(p2_nod - 0.8731631) < 1e-6, "adamw no-decay tensor", "p = %.7f (hand %.7f)", got_nod, p2_nod);
    // clipping: grad_norm 10 with clip 1 scales g by 0.1; the first Adam step is sign-like, so
    // compare the moments: m = 0.1 * (0.1 g)
    model_build(&m, &c, 1);
    o.grad_clip = 1.0;
    for (size_t i = 0; i < m.pl.total; i++) { m.grads[i] = 2.0f; }
    model_update(&m, &o, 0.1, 1, 10.0);
    check(fabs(m.m[0] - 0.1 * 0.2) < 1e-7 && fabs(m.v[0] - 0.05 * 0.04) < 1e-8, "adamw clips by global norm",
          "m = %.6g (want 0.02), v = %.6g (want 0.002)", m.m[0], m.v[0]);
    model_free(&m);
}

static void test_schedule(void) {
    OptConfig o = opt_config_default(100);
    o.lr = 1.0; o.min_lr_frac = 0.1; o.warmup = 10;
    // warmup (s+1)/10; cosine over steps 10..100: at 55 halfway -> 0.1 + 0.5*0.9 = 0.55
    double got[4] = {lr_at(&o, 0), lr_at(&o, 9), lr_at(&o, 55), lr_at(&o, 100)};
    check(fabs(got[0] - 0.1) < 1e-12 && fabs(got[1] - 1.0) < 1e-12 && fabs(got[2] - 0.55) < 1e-12 && fabs(got[3] - 0.1) < 1e-12,
          "lr cosine", "lr(0,9,55,100) = %g %g %g %g (want 0.1 1 0.55 0.1)", got[0], got[1], got[2], got[3]);
    o.schedule = SCHED_WSD; o.decay_frac = 0.2;
    // stable 1.0 until step 80, then linear to 0.1 at 100: at 90 -> 0.55
    double w[3] = {lr_at(&o, 50), lr_at(&o, 80), lr_at(&o, 90)};
    check(fabs(w[0] - 1.0) < 1e-12 && fabs(w[1] - 1.0) < 1e-12 && fabs(w[2] - 0.55) < 1e-12,
          "lr wsd", "lr(50,80,90) = %g %g %g (want 1 1 0.55)", w[0], w[1], w[2]);
}

// ----------------------------------------------------------------------------
// data

static void test_shard_roundtrip(int token_bytes) {
    const char* path = tmp_path(token_bytes == 2 ? "rt16.bin" : "rt32.bin");
    int vocab = token_bytes == 2 ? 50257 : 128256;
    int n = 1000, tokens[1000];
    Rng r;
    rng_init(&r, 3);
    for (int i = 0; i < n; i++) { tokens[i] = rng_int(&r, vocab); }
    tokens[7] = vocab - 1;
    shard_write(path, tokens, n, token_bytes);
    TokenStream s;
    stream_init_shards(&s, path, 1);
    int same = s.data_vocab == vocab;
    for (int i = 0; i < n + 5; i++) { same &= stream_next(&s) == tokens[i % n]; }  // wraps around
    stream_free(&s);
    remove(path);
    check(same, token_bytes == 2 ? "shard round trip uint16 (GPT-2)" : "shard round trip uint32 (llama-3)",
          "%d tokens written, read back and wrapped, vocab %d", n, vocab);
}

static void open_shards(void* pattern) { TokenStream s; stream_init_shards(&s, (const char*)pattern, 1); }
static void load_shard(void* path) { ShardInfo info; shard_load((const char*)path, &info); }

static void test_bad_shards(void) {
    int tokens[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    const char* good = tmp_path("good.bin");
    shard_write(good, tokens, 10, 2);
    FILE* f = fopen_check(good, "rb");
    unsigned char buf[1044];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    const char* trunc = tmp_path("trunc.bin");
    file_write_all(trunc, buf, n - 3);
    expect_die("truncated shard -> error", open_shards, (void*)trunc, "truncated or corrupt");
    const char* magic = tmp_path("magic.bin");
    memcpy(buf, "\x01\x02\x03\x04", 4);
    file_write_all(magic, buf, n);
    expect_die("bad magic shard -> error", open_shards, (void*)magic, "expected 20240520/1");
    const char* empty = tmp_path("empty.bin");
    file_write_all(empty, "", 0);
    expect_die("empty shard -> error", open_shards, (void*)empty, "shorter than the 1024-byte llm.c header");
    expect_die("missing shard -> error", open_shards, (void*)tmp_path("nothing*.bin"), "no file matches");
    int big[3] = {1, 60000, 2};
    const char* badtok = tmp_path("badtok.bin");
    shard_write(badtok, big, 3, 2);
    expect_die("token >= vocab -> error", load_shard, (void*)badtok, "token 60000 at index 1 is >= the data vocabulary 50257");
    remove(good); remove(trunc); remove(magic); remove(empty); remove(badtok);
}

static void test_bytes_split(void) {
    const char* path = tmp_path("text.txt");
    char text[200];
    for (int i = 0; i < 200; i++) { text[i] = (char)('a' + i % 26); }
    file_write_all(path, text, 200);
    TokenStream tr, va;
    stream_init_bytes(&tr, path, 0, 10);
    stream_init_bytes(&va, path, 1, 10);
    int ok = tr.n_bytes == 180 && va.n_bytes == 20 && stream_next(&tr) == 'a' && stream_next(&va) == text[180];
    check(ok, "bytes train/val split", "train %zu bytes from offset 0, val %zu from 180", tr.n_bytes, va.n_bytes);
    stream_free(&tr);
    stream_free(&va);
    remove(path);
}

static void test_builtin_stream(void) {
    TokenStream a, b, c;
    stream_init_builtin(&a, 11);
    stream_init_builtin(&b, 11);
    stream_init_builtin(&c, 12);
    int same = 1, differ = 0, printable = 1;
    char sample[81];
    for (int i = 0; i < 20000; i++) {
        int x = stream_next(&a), y = stream_next(&b), z = stream_next(&c);
        same &= x == y;
        differ |= x != z;
        printable &= (x >= 32 && x < 127) || x == '\n';
        if (i < 80) { sample[i] = x == '\n' ? '/' : (char)x; }
    }
    sample[80] = '\0';
    check(same && differ && printable, "built-in stream deterministic", "same seed same bytes, other seed other bytes: \"%s\"", sample);
    stream_free(&a); stream_free(&b); stream_free(&c);
}

static void test_batches(void) {
    DataConfig dc = data_config_default();
    DataLoader dl;
    dataloader_init(&dl, &dc, 0, 3, 17, 5);
    dataloader_next_batch(&dl);
    int shifted = 1;
    for (int b = 0; b < 3; b++) {
        for (int t = 0; t + 1 < 17; t++) { shifted &= dl.targets[b * 17 + t] == dl.inputs[b * 17 + t + 1]; }
    }
    int in_vocab = 1;
    for (int i = 0; i < 3 * 17; i++) { in_vocab &= dl.inputs[i] >= 0 && dl.inputs[i] < dl.vocab.vocab; }
    check(shifted && in_vocab, "batch targets = inputs shifted by one", "B=3 T=17, vocab %d (256 bytes + 2 markers + %d symbols)",
          dl.vocab.vocab, dl.vocab.n_symbols);
    dataloader_free(&dl);
}

// ----------------------------------------------------------------------------
// needles

// Scans a training sequence: every ⟨Q⟩ key must be followed by the value of the earlier ⟨N⟩ key,
// and the distances needle_fill_train reports (answer to value, per question in order) must be the
// ones read off the sequence.
static void test_needles_train(void) {
    Vocab v = vocab_make(256, 64);
    NeedleConfig nc = needle_config_default();
    nc.key_len = 2; nc.val_len = 3; nc.per_1k = 40; nc.queries = 64;
    Rng r;
    rng_init(&r, 9);
    int n = 2048, seq[2048], dist[2048], near[2048];
    int total_needles = 0, total_queries = 0, wrong = 0, orphan = 0, dist_wrong = 0, near_wrong = 0, nearer = 0, n_reported = 0;
    for (int rep = 0; rep < 20; rep++) {
        for (int i = 0; i < n; i++) { seq[i] = 'a' + i % 26; }
        int n_dist, q = 0;
        total_needles += needle_fill_train(seq, n, &nc, &v, &r, dist, near, &n_dist);
        n_reported += n_dist;
        for (int i = 0; i + 1 + nc.key_len + nc.val_len <= n; i++) {
            if (seq[i] != v.query_mark) { continue; }
            total_queries++;
            int found = -1, last = -1;  // the needle; the latest needle or question with this key
            for (int j = 0; j < i; j++) {
                int same_key = memcmp(seq + j + 1, seq + i + 1, nc.key_len * sizeof(int)) == 0;
                if (seq[j] == v.needle_mark && same_key) { found = j; }
                if ((seq[j] == v.needle_mark || seq[j] == v.query_mark) && same_key) { last = j; }
            }
            if (found < 0) { orphan++; continue; }
            wrong += memcmp(seq + found + 1 + nc.key_len, seq + i + 1 + nc.key_len, nc.val_len * sizeof(int)) != 0;
            // answer starts after ⟨Q⟩ key, value after ⟨N⟩ key: the same offset, so the distance is i - found
            dist_wrong += q >= n_dist || dist[q] != i - found;
            near_wrong += q >= n_dist || near[q] != i - last;
            nearer += q < n_dist && near[q] < dist[q];
            q++;
        }
    }
    check(total_needles > 20 * 40 && total_queries > 20 * 32 && wrong == 0 && orphan == 0 && n_reported == total_queries &&
              dist_wrong == 0 && near_wrong == 0 && nearer > 0,
          "training needles answer correctly",
          "%d needles, %d queries (%d reported), %d wrong answers, %d queries without a needle, %d distances to the needle off, "
          "%d to the nearest copy off (%d nearer than the needle: an earlier answer)",
          total_needles, total_queries, n_reported, wrong, orphan, dist_wrong, near_wrong, nearer);
}

// More needle draws than distinct keys (1-symbol keys over 8 symbols, a draw at every token): the
// sequence takes at most 3/4 of the keys (6), each once, instead of dying on a key it cannot find.
static void test_needles_key_space(void) {
    Vocab v = vocab_make(256, 8);
    NeedleConfig nc = needle_config_default();
    nc.per_1k = 1000; nc.queries = 4;
    Rng r;
    rng_init(&r, 3);
    int n = 512, seq[512], max_placed = 0, repeated = 0;
    for (int rep = 0; rep < 10; rep++) {
        for (int i = 0; i < n; i++) { seq[i] = 'a' + i % 26; }
        int placed = needle_fill_train(seq, n, &nc, &v, &r, NULL, NULL, NULL);
        if (placed > max_placed) { max_placed = placed; }
        int seen[8] = {0};
        for (int i = 0; i + 1 < n; i++) {
            if (seq[i] == v.needle_mark) { repeated += seen[seq[i + 1] - v.symbol0]++ > 0; }
        }
    }
    check(max_placed == 6 && repeated == 0, "training needles fit the key space", "at most %d needles a sequence (8 keys), %d repeated keys",
          max_placed, repeated);
}

static void test_needles_eval(void) {
    Vocab v = vocab_make(256, 64);
    NeedleConfig nc = needle_config_default();
    const double depths[5] = {0, 0.25, 0.5, 0.75, 1};
    int n = 200, ok = 1;
    char where[128] = "";
    for (int d = 0; d < 5; d++) {
        int seq[200];
        for (int i = 0; i < n; i++) { seq[i] = 'a' + i % 26; }
        Rng r;
        rng_init(&r, 4);
        NeedleSample s = needle_fill_eval(seq, n, depths[d], &nc, &v, &r);
        int needle_len = 1 + nc.key_len + nc.val_len, tail = 1 + nc.key_len + nc.val_len;
        int filler = n - needle_len - tail;
        int want_pos = (int)floor(depths[d] * filler + 0.5);
        ok &= s.needle_pos == want_pos && seq[s.needle_pos] == v.needle_mark;
        ok &= s.value_pos == want_pos + 1 + nc.key_len && s.answer_pos == n - nc.val_len && s.answer_len == nc.val_len;
        ok &= seq[s.answer_pos - 1 - nc.key_len] == v.query_mark;
        ok &= memcmp(seq + s.value_pos, seq + s.answer_pos, nc.val_len * sizeof(int)) == 0;
        ok &= memcmp(seq + s.needle_pos + 1, seq + s.answer_pos - nc.key_len, nc.key_len * sizeof(int)) == 0;
        int markers = 0;
        for (int i = 0; i < n; i++) { markers += seq[i] == v.needle_mark || seq[i] == v.query_mark; }
        ok &= markers == 2;
        snprintf(where + strlen(where), sizeof(where) - strlen(where), "%s%d", d ? "," : "", s.needle_pos);
    }
    check(ok, "eval needle placement by depth", "n=200, depths 0..1 -> needle at %s, question and answer at the end", where);
}

static void test_text_needle(void) {
    Vocab v = vocab_make(256, 8);
    NeedleConfig nc = needle_config_default();
    nc.kind = NEEDLE_TEXT;
    Rng r;
    rng_init(&r, 1);
    Needle nd = needle_make(&nc, &v, &r, NULL, 0);
    char s[NEEDLE_MAX + 1], q[NEEDLE_MAX + 1], a[NEEDLE_MAX + 1];
    for (int i = 0; i < nd.needle_len; i++) { s[i] = (char)nd.needle[i]; }
    for (int i = 0; i < nd.query_len; i++) { q[i] = (char)nd.query[i]; }
    for (int i = 0; i < nd.answer_len; i++) { a[i] = (char)nd.answer[i]; }
    s[nd.needle_len] = q[nd.query_len] = a[nd.answer_len] = '\0';
    int ok = strncmp(s, "The magic number of ", 20) == 0 && strncmp(q, "What is the magic number of ", 28) == 0;
    ok &= strncmp(s + 20, q + 28, 5) == 0 && strncmp(s + nd.value_off, a, 6) == 0 && nd.answer_len == 6;
    check(ok, "text needle spelling", "\"%s\" ... \"%s%s\"", s, q, a);
}

// ----------------------------------------------------------------------------
// command line

static void parse_args(void* argv_) {
    char** argv = (char**)argv_;
    int argc = 0;
    while (argv[argc]) { argc++; }
    TrainArgs a;
    memset(&a, 0, sizeof(a));
    a.L = 2; a.C = 16; a.H = 2; a.pattern = "SF"; a.window_list = "4"; a.B = 1; a.T = 8; a.accum = 1;
    a.recall_eval = 1; a.freeze = "";
    a.opt = opt_config_default(10); a.data = data_config_default(); a.val_batches = 1; a.log_path = "";
    a.ckpt_path = ""; a.ckpt_keep = 1; a.ckpt_opt = 1; a.resume = ""; a.eval_samples = 1; a.eval_text = 1;
    FlagSpec f[MAX_FLAGS];
    int n = train_flags(&a, f);
    flags_parse(f, n, argc, argv, NULL);
    train_args_resolve(&a);
    config_make(100, 128, a.L, a.C, a.H, a.F, a.pattern, a.window, a.pos_full, a.pos_swa, a.mixer);
}

// The needle evals' steps: every 100, every 25 through step 1000 with --eval-early 1000, the last
// step always, none while stopping.
static void test_eval_schedule(void) {
    TrainArgs a;
    memset(&a, 0, sizeof(a));
    a.eval_every = 100;
    int plain = 0, early = 0;
    for (int s = 1; s <= 4000; s++) { plain += train_eval_due(&a, s, s == 4000, 0); }
    a.eval_early = 1000;
    for (int s = 1; s <= 4000; s++) { early += train_eval_due(&a, s, s == 4000, 0); }
    int at = train_eval_due(&a, 25, 0, 0) && train_eval_due(&a, 1000, 0, 0) && !train_eval_due(&a, 1025, 0, 0) &&
             train_eval_due(&a, 1100, 0, 0) && train_eval_due(&a, 1234, 1, 0) && !train_eval_due(&a, 1200, 0, 1);
    check(plain == 40 && early == 70 && at, "needle eval schedule", "4000 steps: %d evals every 100, %d with --eval-early 1000 (40 + 30)", plain, early);
}

// The text-needle grid runs next to the symbol grid for byte data (built-in: 256 byte tokens) unless
// --eval-text 0; not for a model without evals.
static void test_eval_text(void) {
    TrainArgs a;
    memset(&a, 0, sizeof(a));
    a.T = 128; a.data = data_config_default(); a.eval_every = 10; a.eval_samples = 1; a.eval_text = 1;
    Vocab v = vocab_make(256, a.data.n_symbols);
    TrainEval on, off, none;
    train_eval_init(&on, &a, &v);
    a.eval_text = 0;
    train_eval_init(&off, &a, &v);
    a.eval_every = 0; a.eval_text = 1;
    train_eval_init(&none, &a, &v);
    check(on.on && on.text && on.text_grid.n_lengths == 2 && off.on && !off.text && !none.on && !none.text, "--eval-text",
          "byte data T 128: text grid at %d lengths with --eval-text 1, none with 0, none without evals", on.text_grid.n_lengths);
    train_eval_free(&on); train_eval_free(&off); train_eval_free(&none);
}

// --eval-long-every 1000: the evals at multiples of 1000 and the last one run the whole grid
// (T/4 .. 4T), those between its lengths up to T, on the same samples: a small model's results on
// the short grid equal the whole grid's first three rows, number for number. The text grid (T 128:
// lengths 2T and 4T only) does not run between; without the flag every eval is whole.
static void test_eval_long(void) {
    TrainArgs a;
    memset(&a, 0, sizeof(a));
    a.T = 128; a.data = data_config_default(); a.eval_every = 100; a.eval_samples = 1; a.eval_text = 1; a.eval_long_every = 1000;
    Vocab v = vocab_make(256, a.data.n_symbols);
    TrainEval e;
    train_eval_init(&e, &a, &v);
    const NeedleGrid *g[4], *t[4];
    train_eval_pick(&a, &e, 1000, 0, &g[0], &t[0]);
    train_eval_pick(&a, &e, 1100, 0, &g[1], &t[1]);
    train_eval_pick(&a, &e, 1234, 1, &g[2], &t[2]);
    a.eval_long_every = 0;
    train_eval_pick(&a, &e, 1100, 0, &g[3], &t[3]);
    int picks = g[0] == &e.grid && t[0] == &e.text_grid && g[1] == &e.grid_to_T && t[1] == NULL && g[2] == &e.grid &&
                t[2] == &e.text_grid && g[3] == &e.grid && t[3] == &e.text_grid;
    Config c = config_make(v.vocab, v.padded, 2, 32, 2, 0, "SF", 8, POS_ROPE, POS_ROPE, MIXER_GDN);
    Model m;
    model_build(&m, &c, 5);
    NeedleResult whole, to_T;
    cpu_needle_eval(&m, &e.grid, &whole);
    cpu_needle_eval(&m, &e.grid_to_T, &to_T);
    int n = e.grid_to_T.n_lengths * e.grid.n_depths, same = whole.n_answer == to_T.n_answer;
    for (int i = 0; i < n; i++) { same = same && whole.acc[i] == to_T.acc[i] && whole.tok_acc[i] == to_T.tok_acc[i]; }
    for (int i = 0; i < c.n_layer * c.n_head; i++) { same = same && whole.score[i] == to_T.score[i] && whole.mass[i] == to_T.mass[i]; }
    check(picks && same && e.grid.n_lengths == 5 && e.grid_to_T.n_lengths == 3 && e.grid_to_T.lengths[2] == 128 && e.text_to_T.n_lengths == 0,
          "--eval-long-every", "whole grid (%d lengths) at step 1000 and the last, %d lengths (to T) at step 1100, text grid %d lengths -> %d (not run); same samples: %s",
          e.grid.n_lengths, e.grid_to_T.n_lengths, e.text_grid.n_lengths, e.text_to_T.n_lengths, same ? "yes" : "no");
    needle_result_free(&whole);
    needle_result_free(&to_T);
    model_free(&m);
    train_eval_free(&e);
}

// The log stays JSON in UTF-8: NaN and infinity as null; a byte that is not UTF-8 as \u00XX, valid
// UTF-8 (é, 2 bytes) as it is, quotes and control characters escaped. A resume's cut: records past
// the checkpoint's step, its val and evals, and a record cut short go; the step record stays.
static void test_log_json(void) {
    char* buf = NULL;
    size_t n = 0;
    FILE* f = open_memstream(&buf, &n);
    json_number(f, "%.3f", NAN); fputc(' ', f);
    json_number(f, "%.3f", -INFINITY); fputc(' ', f);
    json_number(f, "%.3f", 1.5); fputc(' ', f);
    json_string(f, "a\xff\xc3\xa9\"\n\xc3");
    fclose(f);
    const char* want = "null null 1.500 \"a\\u00ff\xc3\xa9\\\"\\u000a\\u00c3\"";
    check(strcmp(buf, want) == 0, "log numbers and strings", "%s", buf);
    free(buf);
    const char* path = tmp_path("cut.jsonl");
    FILE* g = fopen_check(path, "w");
    fprintf(g, "{\"step\": 0, \"config\": {}}\n{\"step\": 4, \"loss\": 1.0}\n{\"step\": 4, \"val_loss\": 1.0}\n"
               "{\"step\": 5, \"loss\": 1.0}\n{\"step\": 6, \"lo");
    fclose(g);
    run_log_cut(path, 4);
    g = fopen_check(path, "r");
    char got[256] = {0};
    size_t k = fread(got, 1, sizeof(got) - 1, g);
    fclose(g);
    check(k > 0 && strcmp(got, "{\"step\": 0, \"config\": {}}\n{\"step\": 4, \"loss\": 1.0}\n") == 0, "log cut back to the checkpoint's step",
          "resumed at step 4: %zu bytes kept (the config and step 4's record; step 4's val, step 5 and a cut record removed)", k);
    remove(path);
}

static void test_cli(void) {
    static struct { const char* name; char* argv[12]; const char* error; } cases[] = {
        {"cli unknown flag", {"prog", "--frobnicate", "3"}, "unknown flag '--frobnicate'"},
        {"cli bad pattern letter", {"prog", "-p", "SSXF"}, "-p SSXF: layer pattern has 'X'"},
        {"cli window 0", {"prog", "-w", "0"}, "-w '0': '0' is not an integer in 1..1048576"},
        {"cli window list", {"prog", "-w", "4,x"}, "-w '4,x': expected numbers separated by commas"},
        {"cli --freeze X", {"prog", "--freeze", "SX"}, "--freeze SX: expected distinct layer types among F, S, R"},
        {"cli --freeze twice", {"prog", "--freeze", "SS"}, "--freeze SS: expected distinct layer types"},
        {"cli recall keys past the symbols", {"prog", "-T", "512", "--needle-kind", "recall", "--recall-keys", "40"}, "--recall-keys 40: keys and values take half of the 64 --needle-symbols each"},
        {"cli recall pairs past half of T", {"prog", "-T", "64", "--needle-kind", "recall", "--recall-keys", "16"}, "--recall-keys 16 at -T 64: the pairs take 96 of the 65 tokens"},
        {"cli recall dist max past T", {"prog", "-T", "64", "--needle-kind", "recall", "--recall-keys", "2", "--recall-dist-max", "63"}, "--recall-dist-max 63 at -T 64: a sequence holds distances up to 62"},
        {"cli recall dist max below min", {"prog", "-T", "64", "--needle-kind", "recall", "--recall-keys", "2", "--recall-dist-min", "20", "--recall-dist-max", "10"}, "--recall-dist-max 10 is below --recall-dist-min 20"},
        {"cli --answer-min-dist without recall", {"prog", "--answer-min-dist", "8"}, "--answer-min-dist 8 without --needle-kind recall"},
        {"cli --answer-min-dist past every answer", {"prog", "-T", "64", "--needle-kind", "recall", "--recall-keys", "2", "--answer-min-dist", "62"}, "--answer-min-dist 62: no answer is farther"},
        {"cli --ablate-every without recall", {"prog", "--ablate-every", "2", "--eval-every", "4"}, "--ablate-every 2 without --needle-kind recall"},
        {"cli --recall-bins not ascending", {"prog", "--needle-kind", "recall", "--recall-keys", "1", "--recall-bins", "8,4"}, "--recall-bins 8,4: edges must ascend"},
        {"cli --recall-bins without recall", {"prog", "--recall-bins", "8"}, "--recall-bins without --needle-kind recall"},
        {"cli heads do not divide C", {"prog", "-C", "30", "-H", "4"}, "-C 30 -H 4"},
        {"cli non-integer", {"prog", "-T", "12x"}, "flag -T: '12x' is not an integer"},
        {"cli bad choice", {"prog", "--pos-full", "alibi"}, "expected one of rope|nope"},
        {"cli missing value", {"prog", "-n"}, "flag -n needs a value"},
        {"cli needle fraction", {"prog", "--needle-frac", "1.5"}, "flag --needle-frac: '1.5' is out of range, expected 0..1"},
        {"cli --ckpt-keep 0", {"prog", "--ckpt-keep", "0"}, "flag --ckpt-keep: '0' is out of range, expected 1..1000"},
        {"cli --eval-samples 0", {"prog", "--eval-samples", "0"}, "flag --eval-samples: '0' is out of range"},
        {"cli --eval-early -1", {"prog", "--eval-early", "-1"}, "flag --eval-early: '-1' is out of range"},
        {"cli --eval-long-every -5", {"prog", "--eval-long-every", "-5"}, "flag --eval-long-every: '-5' is out of range"},
        {"cli --eval-text 2", {"prog", "--eval-text", "2"}, "flag --eval-text: '2' is out of range, expected 0..1"},
        {"cli needles beyond the key space", {"prog", "-T", "1024", "--needle-frac", "1"}, "--needle-density 64 at -T 1024: 65.5 needles per sequence"},
        {"cli int overflow", {"prog", "-n", "4294967299"}, "flag -n: '4294967299' is out of range, expected 0..1000000000"},
        {"cli int beyond long", {"prog", "-T", "99999999999999999999999"}, "flag -T: '99999999999999999999999' is out of range"},
        {"cli negative steps", {"prog", "-n", "-3"}, "flag -n: '-3' is out of range"},
        {"cli nan learning rate", {"prog", "-l", "nan"}, "flag -l: 'nan' is not a finite number"},
        {"cli inf clip", {"prog", "--clip", "inf"}, "flag --clip: 'inf' is not a finite number"},
        {"cli 1e400", {"prog", "--wd", "1e400"}, "flag --wd: '1e400' is not a finite number"},
        {"cli negative weight decay", {"prog", "--wd", "-0.1"}, "flag --wd: '-0.1' is out of range, expected 0..10"},
        {"cli seed beyond 2^62", {"prog", "-s", "9223372036854775807"}, "flag -s: '9223372036854775807' is out of range"},
        {"cli B x T overflow", {"prog", "-B", "65536", "-T", "1048576"}, "-B 65536 -T 1048576: 68719476736 tokens per micro-batch"},
        {"cli pattern longer than L", {"prog", "-p", "SSSF", "-L", "2"}, "-p SSSF -L 2: the pattern has 4 layers, more than -L"},
        {"cli needle longer than T", {"prog", "-T", "4", "--needle-frac", "1", "--needle-density", "1"}, "-T 4: a symbol needle with its question and answer takes 8 tokens"},
        {"cli eval grid shorter than a needle", {"prog", "-T", "16", "--eval-every", "5"}, "the needle grid's shortest sample (T/4 = 4 tokens)"},
        {"cli -j with --bytes", {"prog", "--bytes", "-i", "x", "-j", "y"}, "-j with --bytes"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) { expect_die(cases[i].name, parse_args, cases[i].argv, cases[i].error); }
}

// ----------------------------------------------------------------------------
// end to end: an SRF hybrid (all three layer types) learns the built-in text

static void test_training(void) {
    DataConfig dc = data_config_default();
    dc.needle_frac = 0.0f;
    dc.n_symbols = 16;
    const int B = 8, T = 64, steps = 300;
    DataLoader train, val;
    dataloader_init(&train, &dc, 0, B, T, 1);
    dataloader_init(&val, &dc, 1, B, T, 1);
    Config c = config_make(train.vocab.vocab, train.vocab.padded, 3, 32, 2, 0, "SRF", 16, POS_ROPE, POS_ROPE, MIXER_GDN);
    Model m;
    model_build(&m, &c, 1);
    OptConfig o = opt_config_default(steps);
    o.lr = 1e-2;
    o.warmup = 15;
    double baseline = data_unigram_entropy(&dc, B, T, 1, 64);
    double first = 0.0;
    clock_t t0 = clock();
    for (int step = 0; step < steps; step++) {
        dataloader_next_batch(&train);
        double loss = model_forward(&m, train.inputs, train.targets, B, T);
        if (step == 0) { first = loss; }
        model_zero_grad(&m);
        model_backward(&m, 1.0);
        model_update(&m, &o, lr_at(&o, step), step + 1, model_grad_norm(&m));
    }
    double vl = 0.0;
    for (int i = 0; i < 8; i++) { dataloader_next_batch(&val); vl += model_forward(&m, val.inputs, val.targets, B, T) / 8; }
    check(vl < 0.75 * baseline && first > baseline, "training beats the unigram baseline",
          "SRF C=32, %d steps: loss %.3f -> val %.3f, unigram %.3f, bar %.3f (%.0f s cpu)",
          steps, first, vl, baseline, 0.75 * baseline, (double)(clock() - t0) / CLOCKS_PER_SEC);
    model_free(&m);
    dataloader_free(&train);
    dataloader_free(&val);
}

int main(void) {
    test_layout();
    test_adamw();
    test_schedule();
    test_shard_roundtrip(2);
    test_shard_roundtrip(4);
    test_bad_shards();
    test_bytes_split();
    test_builtin_stream();
    test_batches();
    test_needles_train();
    test_needles_key_space();
    test_needles_eval();
    test_text_needle();
    test_eval_schedule();
    test_eval_text();
    test_eval_long();
    test_cli();
    test_log_json();
    test_checkpoint();
    test_kept_names();
    test_tokenizer();
    test_needle_grid();
    test_needle_scorer();
    test_retrieval_stats();
    test_eval_needle_cli();
    test_training();
    return test_summary();
}
