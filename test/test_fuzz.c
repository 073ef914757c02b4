/*
test_fuzz.c — random corruptions of a checkpoint and of llm.c shards, each read by its reader in a
child process with a 10 s alarm. make test builds it with AddressSanitizer and
UndefinedBehaviorSanitizer (make sanitize too), so an out-of-bounds read or an overflow is a report,
not luck. A case passes when the reader ends in one clear line naming the file ("error: ...<file>...",
exit != 0) or returns exactly what it returns for the pristine file; a crash, a hang (the alarm), a
sanitizer report or an exit without that line fails it.

  checkpoint: truncation; appended bytes; random bytes (half of them behind a good magic and version);
              1-8 bytes flipped (mostly in the header); a header field rewritten with the checksum
              left as it was (the checksum must catch it); a header field rewritten and resealed (a
              fresh checksum: the range checks behind it are reached). A resealed rewrite to a value
              in its field's range is a different, valid checkpoint and may load; one outside the
              range must be refused.
  shards:     GPT-2 (uint16) and llama-3 (uint32): truncation; appended bytes; random bytes; bytes
              flipped in the header; a header field rewritten; a token's high byte set (an id beyond
              the vocabulary). A token flipped to another valid id is not made: the llm.c format has
              no checksum, so no reader could tell.
*/
#include "../checkpoint.h"
#include "test_common.h"
#include "test_ckpt.h"

#define FUZZ_CASES 300  // per file kind

// What a reader made of a file, as one hash: equal digests = identical results.
typedef uint64_t (*Reader)(const char* path);

static uint64_t read_checkpoint(const char* path) {
    Checkpoint ck = checkpoint_read(path);
    uint64_t d = hash64(HASH64_INIT, &ck.cfg, sizeof(ck.cfg));
    d = hash64(d, ck.params, ck.n_params * sizeof(float));
    if (ck.m) { d = hash64(d, ck.m, ck.n_params * sizeof(float)); d = hash64(d, ck.v, ck.n_params * sizeof(float)); }
    int32_t meta[6] = {ck.step, ck.run.T, ck.run.B, ck.run.accum, ck.run.world, ck.version};
    d = hash64(d, meta, sizeof(meta));
    d = hash64(d, &ck.run.seed, sizeof(ck.run.seed));
    d = hash64(d, &ck.run.data_id, sizeof(ck.run.data_id));
    checkpoint_free(&ck);
    return d;
}

static uint64_t read_shard(const char* path) {
    TokenStream s;
    stream_init_shards(&s, path, 1);
    uint64_t d = hash64(HASH64_INIT, &s.data_vocab, sizeof(s.data_vocab));
    d = hash64(d, s.tokens, s.n_tokens * sizeof(int));
    stream_free(&s);
    return d;
}

// One case for run_child: the reader on path, its digest written to fd (the parent reads it back).
typedef struct {
    Reader reader;
    const char* path;
    int fd;
} FuzzCase;

static void fuzz_child(void* arg) {
    const FuzzCase* c = (const FuzzCase*)arg;
    uint64_t d = c->reader(c->path);
    if (write(c->fd, &d, sizeof(d)) != (ssize_t)sizeof(d)) { _exit(3); }
}

// Runs reader(path) in a child (run_child: stderr's first line into err, a 10 s alarm against
// hangs); its digest into *digest (0 when it did not return). Returns the wait status.
static int fuzz_run(Reader reader, const char* path, uint64_t* digest, char* err, size_t size) {
    int digp[2];
    if (pipe(digp) != 0) { die("fuzz: pipe: %s", strerror(errno)); }
    FuzzCase c = {reader, path, digp[1]};
    int status = run_child(fuzz_child, &c, err, size);
    close(digp[1]);  // the child has exited: the digest, if any, waits in the pipe
    *digest = 0;
    if (read(digp[0], digest, sizeof(*digest)) != (ssize_t)sizeof(*digest)) { *digest = 0; }
    close(digp[0]);
    return status;
}

// A value a header field is rewritten to: the edges of the ranges, signs, overflow, the original nearby.
static int32_t fuzz_value(Rng* r, int32_t orig) {
    const int32_t edges[] = {0, 1, -1, 2, 3, 4, 64, 65, 512, 513, 65536, 65537, 1 << 20, (1 << 20) + 1, 1 << 21,
                             (1 << 21) + 1, INT32_MAX, INT32_MIN, 1000000000, 1000000001};
    int pick = rng_int(r, 4);
    if (pick == 0) { return edges[rng_int(r, (int)(sizeof(edges) / sizeof(edges[0])))]; }
    if (pick == 1) { return orig + (rng_int(r, 2) ? 1 : -1); }
    if (pick == 2) { return (int32_t)((uint32_t)orig * 4u); }
    return (int32_t)rng_u64(r);
}

// Is value in the range checkpoint_read documents for header int `at`? Fields without a range
// (the seed, the data fingerprint, unused ints) take any value.
static int ckpt_field_in_range(int at, int32_t value) {
    for (size_t i = 0; i < sizeof(CKPT_FIELDS) / sizeof(CKPT_FIELDS[0]); i++) {
        if (CKPT_FIELDS[i].at == at) { return value >= (at == 17 ? 1 : CKPT_FIELDS[i].lo) && value <= CKPT_FIELDS[i].hi; }
    }
    return 1;
}

enum { CUT, APPEND, RANDOM, FLIP, REWRITE, RESEAL_OR_TOKEN, N_CORRUPTIONS };

// Corrupts a copy of good (n bytes) into buf; returns its length. *must_fail: the file is no valid
// file of its kind; *may_differ: it may load with another result (a resealed in-range rewrite).
static size_t corrupt(unsigned char* buf, const unsigned char* good, size_t n, int kind, int is_ckpt, int token_bytes, Rng* r,
                      int* must_fail, int* may_differ) {
    size_t len = n;
    memcpy(buf, good, n);
    *must_fail = 0;
    *may_differ = 0;
    if (kind == CUT) {
        len = (size_t)rng_int(r, (int)n);
        *must_fail = 1;
    } else if (kind == APPEND) {
        int extra = 1 + rng_int(r, 16);
        for (int k = 0; k < extra; k++) { buf[len++] = (unsigned char)rng_int(r, 256); }
        *must_fail = 1;
    } else if (kind == RANDOM) {
        len = (size_t)rng_int(r, (int)(2 * n));
        size_t from = rng_int(r, 2) && len >= 8 ? 8 : 0;  // half behind a good magic and version
        for (size_t j = from; j < len; j++) { buf[j] = (unsigned char)rng_int(r, 256); }
    } else if (kind == FLIP) {
        int flips = 1 + rng_int(r, 8);
        for (int k = 0; k < flips; k++) {
            size_t at = (!is_ckpt || rng_uniform(r) < 0.8) ? (size_t)rng_int(r, 1024) : (size_t)rng_int(r, (int)n);
            buf[at] = (unsigned char)rng_int(r, 256);
        }
    } else if (kind == REWRITE || (kind == RESEAL_OR_TOKEN && is_ckpt)) {
        int32_t* h = (int32_t*)buf;
        int at = rng_int(r, is_ckpt ? 50 : 4);  // the fields in use and a few beyond
        h[at] = fuzz_value(r, h[at]);
        if (kind == RESEAL_OR_TOKEN) {
            ckpt_reseal(buf, len);
            int used = at != CKPT_CHECKSUM_INT && at != CKPT_CHECKSUM_INT + 1;  // resealing overwrites those
            *must_fail = used && !ckpt_field_in_range(at, h[at]);
            *may_differ = 1;
        }
    } else {  // a shard token's most significant byte set: an id beyond the vocabulary
        size_t tokens = (n - 1024) / token_bytes, t = (size_t)rng_int(r, (int)tokens);
        buf[1024 + t * token_bytes + token_bytes - 1] = 0xFF;
        *must_fail = 1;
    }
    return len;
}

static void fuzz_file(const char* name, Reader reader, const char* good_path, int is_ckpt, int token_bytes, uint64_t seed) {
    size_t n;
    unsigned char* good = file_read_all(good_path, &n);
    unsigned char* buf = (unsigned char*)malloc_check(2 * n + 16);
    char err[512];
    uint64_t pristine;
    int st = fuzz_run(reader, good_path, &pristine, err, sizeof(err));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { check(0, name, "the pristine file does not load: %s", err); return; }
    const char* path = tmp_path("case.bin");
    Rng r;
    rng_init(&r, seed);
    int errors = 0, identical = 0, differ = 0, bad = 0;
    char first_bad[640] = "";
    for (int i = 0; i < FUZZ_CASES; i++) {
        int kind = i % N_CORRUPTIONS, must_fail, may_differ;
        size_t len = corrupt(buf, good, n, kind, is_ckpt, token_bytes, &r, &must_fail, &may_differ);
        file_write_all(path, buf, len);
        uint64_t digest;
        st = fuzz_run(reader, path, &digest, err, sizeof(err));
        int loaded = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        int clean_error = WIFEXITED(st) && WEXITSTATUS(st) != 0 && strncmp(err, "error: ", 7) == 0 && strstr(err, path);
        int ok = clean_error || (loaded && !must_fail && (digest == pristine || may_differ));
        errors += clean_error;
        identical += loaded && digest == pristine;
        differ += loaded && digest != pristine;
        if (!ok && bad++ == 0) {
            snprintf(first_bad, sizeof(first_bad), "case %d (corruption %d, %zu bytes): %s \"%s\"", i, kind, len,
                     WIFSIGNALED(st) ? (WTERMSIG(st) == SIGALRM ? "hung (alarm)" : "killed by a signal")
                     : loaded ? (must_fail ? "accepted a file it must refuse" : "loaded with another result") : "exit without a clear error", err);
        }
    }
    check(bad == 0, name, "%d corruptions: %d clear errors naming the file, %d identical to the pristine file, %d other valid files, %d bad%s%s",
          FUZZ_CASES, errors, identical, differ, bad, bad ? "; first: " : "", first_bad);
    remove(path);
    free(buf);
    free(good);
}

int main(void) {
    // a small SRF model with AdamW state: every layer type's tensors in the payload
    Config c = config_make(300, 384, 3, 32, 2, 0, "SRF", 5, POS_NOPE, POS_ROPE, MIXER_GDN);
    Model m;
    model_build(&m, &c, 9);
    for (size_t i = 0; i < m.pl.total; i++) { m.m[i] = 1e-3f * (float)(i % 7); m.v[i] = 1e-6f * (float)(i % 5); }
    RunRecord run = {.T = 64, .B = 4, .accum = 2, .world = 1, .seed = 1337, .data_id = 0x0123456789abcdefull};
    const char* ck = tmp_path("good.ckpt");
    checkpoint_write(ck, &c, m.params, m.m, m.v, m.pl.total, 17, &run);
    fuzz_file("fuzz checkpoint", read_checkpoint, ck, 1, 0, 12);
    remove(ck);
    model_free(&m);

    int tokens[300];
    for (int i = 0; i < 300; i++) { tokens[i] = (i * 7919) % 50257; }
    const char* gpt2 = tmp_path("gpt2.bin");
    shard_write(gpt2, tokens, 300, 2);
    fuzz_file("fuzz GPT-2 shard", read_shard, gpt2, 0, 2, 11);
    for (int i = 0; i < 300; i++) { tokens[i] = (i * 104729) % 128256; }
    const char* llama = tmp_path("llama3.bin");
    shard_write(llama, tokens, 300, 4);
    fuzz_file("fuzz llama-3 shard", read_shard, llama, 0, 4, 13);
    remove(gpt2); remove(llama);
    return test_summary();
}
