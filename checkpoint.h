/*
checkpoint.h — the checkpoint file: writing (atomic, checked, never a non-finite state), reading
(every field range-checked, checksum verified, contents finite), the kept older saves of
--ckpt-keep, and the run record an exact resume compares. Shared by the trainers and eval_needle.c.

defines: RunRecord, Checkpoint, checkpoint_write, checkpoint_read, checkpoint_free,
         model_from_checkpoint, checkpoint_save, kept_save_step, checkpoint_checksum, checkpoint_seal
*/
#ifndef CHECKPOINT_H
#define CHECKPOINT_H

#include <dirent.h>      // checkpoint_prune lists the kept saves
#include <fcntl.h>       // open: the temp file created fresh
#include <unistd.h>      // fsync, link, unlink
#include "hybrid_cpu.h"  // defines: Config, config_make, param_layout, Model, model_build

// ----------------------------------------------------------------------------
// Checkpoints, shared by the trainers and eval_needle.c. One file, version 2:
//   header int32[256]: [0] magic, [1] version, [2..12] the Config (vocab, padded_vocab, L, C, H, ffn,
//                      window, pos_full, pos_swa, mixer, rope_theta), [13] 1 if the optimizer state
//                      follows, [14] optimizer steps taken, [15] parameter count (low 31 bits),
//                      [16] (high bits), [17..24] the RunRecord (T, B, accum, world, seed low and
//                      high 32 bits, data fingerprint low and high), [30..31] checksum (low, high),
//                      bytes 128..191 the layer pattern (NUL-padded), [48] 1 when the schedule
//                      follows: [49..58] lr, min-lr-frac, decay-frac, wd, clip (doubles, two ints
//                      each), [59] schedule, [60] warmup, [61..62] eval seed, [63..64] the hash of
//                      the -w list and --freeze (files from before it have [48] = 0: not checked)
//   float32 params[n] in param_layout order; then, if [13] = 1, AdamW m[n] and v[n].
// The checksum is hash64 of the header (with [30..31] zero) followed by the payload, verified on
// load: a flipped bit anywhere is refused, a header field that keeps the parameter count (H 1 <-> 4)
// included. Every header field is range-checked on load, and parameters and AdamW state must be
// finite (v >= 0); a state that is not finite is never written.
// Version 1 (no run record, no checksum) is still read, range- and finite-checked; what it cannot
// have (the checksum, and -B, -a, -s, data for a resume) is not checked. It is rewritten as version 2
// at the next save.
// Written to PATH.tmp, flushed to disk, then renamed over PATH, so a crash never leaves a partial file
// under the real name; a save that fails removes PATH.tmp and leaves PATH as it was.

#define CKPT_MAGIC 20260615
#define CKPT_VERSION 2
#define CKPT_HEADER_INTS 256
#define CKPT_PATTERN_BYTE 128
#define CKPT_CHECKSUM_INT 30
#define MAX_WORLD 4096  // data-parallel ranks a checkpoint may record

// What an exact resume must repeat, recorded in the checkpoint: the batch shape, the seed and the data.
typedef struct {
    int T;            // training sequence length (also the needle grid's base length)
    int B, accum;     // micro-batch, micro-batches per step
    int world;        // data-parallel ranks (the data position is step · accum · world batches)
    long seed;
    uint64_t data_id; // data_fingerprint(): files, tokenizer, needle mixture
    int has_sched;    // 1: the schedule below is recorded (0 in files from before it)
    double lr, min_lr_frac, decay_frac, wd, clip;
    int schedule, warmup;
    long eval_seed;
    uint64_t train_id; // hash64 of the -w list and --freeze: what else changes the run's steps
} RunRecord;

#define CKPT_SCHED_INT 48

typedef struct {
    Config cfg;
    size_t n_params;
    float* params;   // (n_params)
    float* m;        // (n_params) AdamW moments, NULL if the file has none
    float* v;
    int step;        // optimizer steps taken
    int version;     // 1: run.B, accum, world, seed, data_id not recorded (0); run.T may be 0
    RunRecord run;
} Checkpoint;

// The name of parameter i, "l3.wqkv[17]", for messages.
static void param_name(const Config* c, size_t i, char* out, size_t size) {
    Layout lo = param_layout(c);
    for (int s = 0; s < lo.n; s++) {
        const TensorSpec* t = &lo.spec[s];
        if (i >= t->offset && i < t->offset + t->numel) { snprintf(out, size, "%s[%zu]", t->name, i - t->offset); return; }
    }
    snprintf(out, size, "[%zu]", i);
}

// 0 when params, m and v (m, v may be NULL) are finite and v >= 0; else names the first bad value in why.
static int state_finite(const Config* c, const float* params, const float* m, const float* v, size_t n, char* why, size_t size) {
    const float* arrays[3] = {params, m, v};
    const char* names[3] = {"parameter", "AdamW m of", "AdamW v of"};
    for (int a = 0; a < 3; a++) {
        if (arrays[a] == NULL) { continue; }
        for (size_t i = 0; i < n; i++) {
            float x = arrays[a][i];
            if (isfinite(x) && (a < 2 || x >= 0.0f)) { continue; }
            char name[64];
            param_name(c, i, name, sizeof(name));
            snprintf(why, size, "%s %s is %g%s", names[a], name, x, a == 2 ? " (must be finite and >= 0)" : "");
            return 1;
        }
    }
    return 0;
}

// A 64-bit value in two header ints, low 32 bits first (the seed, the data fingerprint, the checksum)
static void header_put64(int32_t* h, int at, uint64_t x) {
    h[at] = (int32_t)(uint32_t)x;
    h[at + 1] = (int32_t)(uint32_t)(x >> 32);
}
static uint64_t header_get64(const int32_t* h, int at) { return (uint64_t)(uint32_t)h[at] | ((uint64_t)(uint32_t)h[at + 1] << 32); }

// hash64 of a header (its checksum field taken as zero) and the payload
static uint64_t checkpoint_checksum(const int32_t* h, const float* params, const float* m, const float* v, size_t n) {
    int32_t hz[CKPT_HEADER_INTS];
    memcpy(hz, h, sizeof(hz));
    hz[CKPT_CHECKSUM_INT] = hz[CKPT_CHECKSUM_INT + 1] = 0;
    uint64_t sum = hash64(HASH64_INIT, hz, sizeof(hz));
    sum = hash64(sum, params, n * sizeof(float));
    if (m != NULL) {
        sum = hash64(sum, m, n * sizeof(float));
        sum = hash64(sum, v, n * sizeof(float));
    }
    return sum;
}

// Stores the checksum of header h and its payload in h.
static void checkpoint_seal(int32_t* h, const float* params, const float* m, const float* v, size_t n) {
    header_put64(h, CKPT_CHECKSUM_INT, checkpoint_checksum(h, params, m, v, n));
}

static void checkpoint_header(int32_t* h, const Config* c, int has_opt, size_t n, int step, const RunRecord* run) {
    memset(h, 0, CKPT_HEADER_INTS * sizeof(int32_t));
    int32_t fields[] = {CKPT_MAGIC, CKPT_VERSION, c->vocab, c->padded_vocab, c->n_layer, c->n_embd, c->n_head, c->ffn,
                        c->window, c->pos_full, c->pos_swa, c->mixer, (int32_t)c->rope_theta, has_opt, step,
                        (int32_t)(n & 0x7fffffff), (int32_t)(n >> 31), run->T, run->B, run->accum, run->world};
    memcpy(h, fields, sizeof(fields));
    header_put64(h, 21, (uint64_t)run->seed);
    header_put64(h, 23, run->data_id);
    memcpy((char*)h + CKPT_PATTERN_BYTE, c->pattern, strlen(c->pattern));
    if (run->has_sched) {
        const double d[5] = {run->lr, run->min_lr_frac, run->decay_frac, run->wd, run->clip};
        h[CKPT_SCHED_INT] = 1;
        memcpy(h + CKPT_SCHED_INT + 1, d, sizeof(d));
        h[CKPT_SCHED_INT + 11] = run->schedule;
        h[CKPT_SCHED_INT + 12] = run->warmup;
        header_put64(h, CKPT_SCHED_INT + 13, (uint64_t)run->eval_seed);
        header_put64(h, CKPT_SCHED_INT + 15, run->train_id);
    }
}

// A failed write: the partial temp file goes, the checkpoint under the real name stays as it was.
static void checkpoint_write_failed(FILE* f, const char* tmp, const char* what) {
    int err = errno;
    if (f) { fclose(f); }
    unlink(tmp);
    die("%s: %s failed: %s (the checkpoint under its real name is untouched)", tmp, what, strerror(err));
}

static void checkpoint_write(const char* path, const Config* c, const float* params, const float* m, const float* v,
                             size_t n, int step, const RunRecord* run) {
    char why[160];
    if (state_finite(c, params, m, v, n, why, sizeof(why))) {
        die("%s: checkpoint of step %d not written: %s (the last checkpoint is untouched)", path, step, why);
    }
    int32_t h[CKPT_HEADER_INTS];
    checkpoint_header(h, c, m != NULL, n, step, run);
    checkpoint_seal(h, params, m, v, n);
    char tmp[4096 + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    // created fresh: a stale temp file, or a link left under its name, is removed, never written through
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
    FILE* f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (f == NULL) {
        if (fd >= 0) { close(fd); }
        checkpoint_write_failed(NULL, tmp, "create");
    }
    int ok = fwrite(h, sizeof(int32_t), CKPT_HEADER_INTS, f) == CKPT_HEADER_INTS && fwrite(params, sizeof(float), n, f) == n;
    if (ok && m != NULL) { ok = fwrite(m, sizeof(float), n, f) == n && fwrite(v, sizeof(float), n, f) == n; }
    if (!ok) { checkpoint_write_failed(f, tmp, "write"); }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) { checkpoint_write_failed(f, tmp, "flush to disk"); }
    if (fclose(f) != 0) { checkpoint_write_failed(NULL, tmp, "close"); }
    if (rename(tmp, path) != 0) { checkpoint_write_failed(NULL, tmp, "rename to the checkpoint's name"); }
}

// The range of every header field, checked before anything is allocated from it. Version 1 files
// record T (0 = not recorded) but not the fields from [18] on.
static const struct { const char* name; int at; int64_t lo, hi; } CKPT_FIELDS[] = {
    {"vocab", 2, 1, MAX_VOCAB}, {"padded vocab", 3, 1, MAX_VOCAB}, {"L", 4, 1, MAX_LAYERS}, {"C", 5, 2, MAX_CHANNELS},
    {"H", 6, 1, MAX_CHANNELS}, {"F", 7, 1, MAX_FFN}, {"W", 8, 1, MAX_SEQ_LEN}, {"pos F", 9, 0, 1}, {"pos S", 10, 0, 1},
    {"mixer", 11, 0, 1}, {"rope theta", 12, 1, INT32_MAX}, {"AdamW state flag", 13, 0, 1}, {"step", 14, 0, MAX_STEPS},
    {"parameters (high bits)", 16, 0, 1}, {"T", 17, 0, MAX_SEQ_LEN},
    {"B", 18, 1, MAX_BATCH}, {"accum", 19, 1, MAX_BATCH}, {"world", 20, 1, MAX_WORLD},
};
#define CKPT_V1_FIELDS 15  // the fields above a version-1 header has

// Reads and validates a checkpoint: a regular file, magic, version, every header field in range, the
// file size the header implies, the checksum (version 2), and finite contents.
static Checkpoint checkpoint_read(const char* path) {
    size_t size = input_file_check("checkpoint", path);
    int32_t h[CKPT_HEADER_INTS];
    if (size < sizeof(h)) { die("%s: not a checkpoint (%zu bytes, shorter than its %zu-byte header)", path, size, sizeof(h)); }
    FILE* f = fopen_check(path, "rb");
    fread_check(h, sizeof(int32_t), CKPT_HEADER_INTS, f, path);
    if (h[0] != CKPT_MAGIC) { die("%s: bad magic %d, expected %d (not a hybrid.cu checkpoint)", path, h[0], CKPT_MAGIC); }
    if (h[1] != 1 && h[1] != CKPT_VERSION) { die("%s: checkpoint version %d, this build reads versions 1 and %d", path, h[1], CKPT_VERSION); }
    int version = h[1];
    // version 1 left every int from [18] on zero (the pattern aside): a "version 1" file with any of
    // them set is a version-2 file whose version was damaged, and must not skip the checksum
    for (int i = 18; version == 1 && i < CKPT_HEADER_INTS; i++) {
        if ((i < CKPT_PATTERN_BYTE / 4 || i >= CKPT_PATTERN_BYTE / 4 + MAX_LAYERS / 4) && h[i] != 0) {
            die("%s: corrupt checkpoint header (version 1 with header int %d set, which version 1 never writes)", path, i);
        }
    }
    int n_fields = version == 1 ? CKPT_V1_FIELDS : (int)(sizeof(CKPT_FIELDS) / sizeof(CKPT_FIELDS[0]));
    for (int i = 0; i < n_fields; i++) {
        int32_t x = h[CKPT_FIELDS[i].at];
        int lo = CKPT_FIELDS[i].at == 17 && version == 2 ? 1 : (int)CKPT_FIELDS[i].lo;  // version 2 always records T
        if (x < lo || x > CKPT_FIELDS[i].hi) {
            die("%s: corrupt checkpoint header: %s = %d, expected %d..%lld", path, CKPT_FIELDS[i].name, x, lo, (long long)CKPT_FIELDS[i].hi);
        }
    }
    char pattern[MAX_LAYERS + 1];
    memcpy(pattern, (char*)h + CKPT_PATTERN_BYTE, MAX_LAYERS);
    pattern[MAX_LAYERS] = '\0';
    // the remaining conditions of config_make, whose own errors name command-line flags, not the file
    int bad = h[3] < h[2] || h[5] % h[6] != 0 || (h[5] / h[6]) % 2 != 0 || h[5] / h[6] > 512;
    bad |= (int)strlen(pattern) != h[4];
    for (const char* t = pattern; *t; t++) { bad |= layer_type(*t) == NULL; }
    if (bad) {
        die("%s: corrupt checkpoint header (pattern '%s', L %d, C %d, H %d, vocab %d/%d)", path, pattern, h[4], h[5], h[6], h[2], h[3]);
    }
    Checkpoint ck;
    memset(&ck, 0, sizeof(ck));
    ck.version = version;
    ck.cfg = config_make(h[2], h[3], h[4], h[5], h[6], h[7], pattern, h[8], h[9], h[10], h[11]);
    ck.cfg.rope_theta = h[12];
    ck.n_params = (size_t)(uint32_t)h[15] | ((size_t)(uint32_t)h[16] << 31);
    ck.step = h[14];
    ck.run.T = h[17];
    if (version == CKPT_VERSION) {
        ck.run.B = h[18]; ck.run.accum = h[19]; ck.run.world = h[20];
        uint64_t seed = header_get64(h, 21);
        if (seed > (1ull << 62)) { die("%s: corrupt checkpoint header: seed %llu, expected 0..2^62 (-s's range)", path, (unsigned long long)seed); }
        ck.run.seed = (long)seed;
        ck.run.data_id = header_get64(h, 23);
        if (h[CKPT_SCHED_INT] != 0) {
            double d[5];
            memcpy(d, h + CKPT_SCHED_INT + 1, sizeof(d));
            uint64_t es = header_get64(h, CKPT_SCHED_INT + 13);
            int ok = h[CKPT_SCHED_INT] == 1 && h[CKPT_SCHED_INT + 11] >= 0 && h[CKPT_SCHED_INT + 11] <= 1 && h[CKPT_SCHED_INT + 12] >= 0 &&
                     h[CKPT_SCHED_INT + 12] <= MAX_STEPS && es <= (1ull << 62);
            for (int i = 0; i < 5; i++) { ok = ok && isfinite(d[i]) && d[i] >= 0; }
            if (!ok) { die("%s: corrupt checkpoint header (its schedule record: ints %d..%d)", path, CKPT_SCHED_INT, CKPT_SCHED_INT + 16); }
            ck.run.has_sched = 1;
            ck.run.lr = d[0]; ck.run.min_lr_frac = d[1]; ck.run.decay_frac = d[2]; ck.run.wd = d[3]; ck.run.clip = d[4];
            ck.run.schedule = h[CKPT_SCHED_INT + 11];
            ck.run.warmup = h[CKPT_SCHED_INT + 12];
            ck.run.eval_seed = (long)es;
            ck.run.train_id = header_get64(h, CKPT_SCHED_INT + 15);
        }
    }
    size_t expect = param_layout(&ck.cfg).total;
    if (ck.n_params != expect) { die("%s: header says %zu parameters, its config has %zu", path, ck.n_params, expect); }
    int has_opt = h[13] == 1;
    size_t want = sizeof(h) + (has_opt ? 3 : 1) * ck.n_params * sizeof(float);
    if (size != want) { die("%s: %zu bytes, expected %zu for its header (truncated or corrupt)", path, size, want); }
    ck.params = (float*)malloc_check(ck.n_params * sizeof(float));
    fread_check(ck.params, sizeof(float), ck.n_params, f, path);
    if (has_opt) {
        ck.m = (float*)malloc_check(ck.n_params * sizeof(float));
        ck.v = (float*)malloc_check(ck.n_params * sizeof(float));
        fread_check(ck.m, sizeof(float), ck.n_params, f, path);
        fread_check(ck.v, sizeof(float), ck.n_params, f, path);
    }
    fclose(f);
    if (version == CKPT_VERSION) {
        if (checkpoint_checksum(h, ck.params, ck.m, ck.v, ck.n_params) != header_get64(h, CKPT_CHECKSUM_INT)) {
            die("%s: checksum mismatch (the file is corrupt or was edited)", path);
        }
    }
    char why[160];
    if (state_finite(&ck.cfg, ck.params, ck.m, ck.v, ck.n_params, why, sizeof(why))) { die("%s: %s; refusing a non-finite checkpoint", path, why); }
    return ck;
}

static void checkpoint_free(Checkpoint* ck) { free(ck->params); free(ck->m); free(ck->v); }

// A model with a checkpoint's config and parameters, and its AdamW state when the file has one.
static void model_from_checkpoint(Model* m, const Checkpoint* ck) {
    model_build(m, &ck->cfg, 0);
    for (size_t i = 0; i < ck->n_params; i++) { m->params[i] = (real)ck->params[i]; }
    if (ck->m) {
        memcpy(m->m, ck->m, ck->n_params * sizeof(float));
        memcpy(m->v, ck->v, ck->n_params * sizeof(float));
    }
}

// The step recorded in a checkpoint's header, or -1 when path is missing or not a checkpoint.
static int checkpoint_peek_step(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) { return -1; }
    FILE* f = fopen(path, "rb");
    if (f == NULL) { return -1; }
    int32_t h[CKPT_HEADER_INTS];
    int ok = fread(h, sizeof(int32_t), CKPT_HEADER_INTS, f) == CKPT_HEADER_INTS && h[0] == CKPT_MAGIC && (h[1] == 1 || h[1] == CKPT_VERSION);
    fclose(f);
    return ok && h[14] >= 0 ? h[14] : -1;
}

// The step k of a kept save's file name, "<base>.step<k>" exactly (digits only), or -1. The user's
// path is matched literally, never as a glob pattern, so no other file is ever taken for a save.
static long kept_save_step(const char* name, const char* base) {
    size_t nb = strlen(base);
    if (strncmp(name, base, nb) != 0 || strncmp(name + nb, ".step", 5) != 0) { return -1; }
    const char* d = name + nb + 5;
    if (*d == '\0' || strspn(d, "0123456789") != strlen(d) || strlen(d) > 10) { return -1; }
    long k = strtol(d, NULL, 10);
    return k <= MAX_STEPS ? k : -1;
}

// Removes the kept saves of path (path.step<k>, k below this save's step) that have keep - 1 or more
// newer ones. Saves numbered past the step are a stale run's: never counted as newer, never removed.
static void checkpoint_prune(const char* path, int keep, int step) {
    char dir[4096];
    const char* slash = strrchr(path, '/');
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) + 1 : 1, slash ? path : ".");
    const char* base = slash ? slash + 1 : path;
    DIR* d = opendir(dir);
    if (d == NULL) { return; }
    long steps[1024];
    int n = 0;
    struct dirent* e;
    while ((e = readdir(d)) != NULL && n < 1024) {
        long k = kept_save_step(e->d_name, base);
        if (k >= 0 && k < step) { steps[n++] = k; }
    }
    closedir(d);
    for (int i = 0; i < n; i++) {  // remove every kept file with keep - 1 newer ones
        int newer = 0;
        for (int j = 0; j < n; j++) { newer += steps[j] > steps[i]; }
        if (newer >= keep - 1) {
            char name[4096 + 32];
            snprintf(name, sizeof(name), "%s.step%ld", path, steps[i]);
            unlink(name);
        }
    }
}

// Writes the checkpoint of `step` to path (checkpoint_write: atomic) and keeps the keep - 1 newest
// saves before it as path.step<k>: the old file gets that second name (a hard link) before the new
// one replaces it, so there is never a moment without a complete checkpoint. Older ones are removed.
static void checkpoint_save(const char* path, int keep, const Config* c, const float* params, const float* m, const float* v,
                            size_t n, int step, const RunRecord* run) {
    int prev = keep > 1 ? checkpoint_peek_step(path) : -1;
    if (prev >= 0 && prev != step) {
        char name[4096 + 32];
        snprintf(name, sizeof(name), "%s.step%d", path, prev);
        unlink(name);
        if (link(path, name) != 0) { die("%s: cannot keep it as %s: %s (--ckpt-keep 1 keeps no older saves)", path, name, strerror(errno)); }
    }
    checkpoint_write(path, c, params, m, v, n, step, run);
    if (keep > 1) { checkpoint_prune(path, keep, step); }
}

#endif // CHECKPOINT_H
