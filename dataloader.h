/*
dataloader.h — where tokens come from, for the trainer, the CPU reference and eval_needle.c.

defines: Rng, Vocab, TextGen (built-in synthetic text),
         Needle / NeedleConfig (symbol and text needle tasks), recall_fill (the recall task), TokenStream
         (shards, bytes, built-in), NeedleGrid (the needle eval grid), RecallSet (the recall eval set),
         DataLoader (B×T batches, train/val split, needle mixture; data_check_splits, data_fingerprint)

Three sources of haystack tokens:
  - llm.c shards: 256 int32 header {magic, version, n_tokens, ...}, then the tokens.
      magic 20240520 version 1: uint16 tokens (GPT-2, data vocab 50257)
      magic 20240801 version 7: uint32 tokens (llama-3, data vocab 128256)
    Train and val are separate globs, shards are read in sorted order and wrap around.
  - bytes: any files (a glob) read as one byte stream, data vocab 256; the last 10% is val.
  - built-in: an endless deterministic pseudo-English byte stream (TextGen); val uses another seed.
Every vocabulary gets the needle block appended after the data tokens:
      [0, data_vocab)                     data tokens
      data_vocab + 0                      ⟨N⟩ needle marker
      data_vocab + 1                      ⟨Q⟩ query marker
      data_vocab + 2 ... + 2+n_symbols-1  needle symbols
so symbol needles work the same for bytes and for GPT-2 shards.
*/
#ifndef DATALOADER_H
#define DATALOADER_H

#include <glob.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "utils.h"  // defines: die, fopen_check, fread_check, malloc_check, calloc_check, input_file_check, hash64

// ----------------------------------------------------------------------------
// Rng: splitmix64. Small, seedable, and its state is one integer (easy to checkpoint).

typedef struct { uint64_t state; } Rng;

static void rng_init(Rng* r, uint64_t seed) { r->state = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull; }

static uint64_t rng_u64(Rng* r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// uniform in [0, 1), 53 random bits
static double rng_uniform(Rng* r) { return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
// uniform integer in [0, n)
static int rng_int(Rng* r, int n) { return (int)(rng_uniform(r) * n); }
// standard normal, Box-Muller (one value per call keeps the stream simple to reason about)
static double rng_normal(Rng* r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

// ----------------------------------------------------------------------------
// Vocab: data tokens, then the needle block

#define NEEDLE_SYMBOLS_DEFAULT 64
#define VOCAB_PAD 128  // wte rows are rounded up to this (tensor-core friendly, like llm.c's 50304)

typedef struct {
    int data_vocab;  // tokens the data itself uses
    int n_symbols;   // needle symbols
    int needle_mark; // ⟨N⟩
    int query_mark;  // ⟨Q⟩
    int symbol0;     // first needle symbol
    int vocab;       // V = data_vocab + 2 + n_symbols
    int padded;      // Vp = V rounded up to VOCAB_PAD
} Vocab;

static Vocab vocab_make(int data_vocab, int n_symbols) {
    Vocab v;
    v.data_vocab = data_vocab;
    v.n_symbols = n_symbols;
    v.needle_mark = data_vocab;
    v.query_mark = data_vocab + 1;
    v.symbol0 = data_vocab + 2;
    v.vocab = data_vocab + 2 + n_symbols;
    v.padded = (v.vocab + VOCAB_PAD - 1) / VOCAB_PAD * VOCAB_PAD;
    return v;
}

// ----------------------------------------------------------------------------
// TextGen: the built-in haystack. Bytes of pseudo-English: a fixed lexicon of invented words with
// Zipf frequencies, each word with a few favourite successors (learnable bigram structure),
// sentences with capitals and full stops, paragraphs. The lexicon is the same for every seed
// (it is "the language"); the seed only picks the text.

#define TEXTGEN_WORDS 256
#define TEXTGEN_SUCC 4
#define TEXTGEN_LEXICON_SEED 20260601ull

typedef struct {
    char words[TEXTGEN_WORDS][12];      // lexicon, NUL-terminated
    int succ[TEXTGEN_WORDS][TEXTGEN_SUCC]; // favourite next words
    double cdf[TEXTGEN_WORDS];          // Zipf cumulative distribution over word ranks
    Rng rng;                            // picks the text
    char buf[256];                      // the sentence being emitted
    int len, pos;
    int prev;                           // previous word, -1 at a sentence start
    int sentences;                      // sentences in the current paragraph
} TextGen;

static void textgen_init(TextGen* g, uint64_t seed) {
    static const char* onset[] = {"b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t",
                                  "v", "w", "st", "tr", "ch", "sh", "th", "br", "pl", "gr"};
    static const char* vowel[] = {"a", "e", "i", "o", "u", "ea", "ou", "ai"};
    static const char* coda[] = {"", "", "", "n", "r", "s", "t", "l", "nd", "st"};
    Rng lex;
    rng_init(&lex, TEXTGEN_LEXICON_SEED);
    for (int w = 0; w < TEXTGEN_WORDS; w++) {
        // frequent words short (1 syllable), rare words longer (up to 3)
        int syllables = 1 + (w >= 24) + (w >= 120 && rng_int(&lex, 2));
        char* s = g->words[w];
        s[0] = '\0';
        for (int k = 0; k < syllables; k++) {
            strcat(s, onset[rng_int(&lex, 24)]);
            strcat(s, vowel[rng_int(&lex, 8)]);
        }
        strcat(s, coda[rng_int(&lex, 10)]);
        for (int k = 0; k < TEXTGEN_SUCC; k++) { g->succ[w][k] = rng_int(&lex, TEXTGEN_WORDS); }
    }
    double total = 0.0;
    for (int w = 0; w < TEXTGEN_WORDS; w++) { total += 1.0 / (w + 1); g->cdf[w] = total; }
    for (int w = 0; w < TEXTGEN_WORDS; w++) { g->cdf[w] /= total; }
    rng_init(&g->rng, seed);
    g->len = g->pos = 0;
    g->prev = -1;
    g->sentences = 0;
}

static int textgen_word(TextGen* g) {
    if (g->prev >= 0 && rng_uniform(&g->rng) < 0.5) { return g->succ[g->prev][rng_int(&g->rng, TEXTGEN_SUCC)]; }
    double u = rng_uniform(&g->rng);
    int lo = 0, hi = TEXTGEN_WORDS - 1;  // first rank with cdf > u
    while (lo < hi) { int mid = (lo + hi) / 2; if (g->cdf[mid] > u) { hi = mid; } else { lo = mid + 1; } }
    return lo;
}

static void textgen_sentence(TextGen* g) {
    int n_words = 3 + rng_int(&g->rng, 12);
    g->len = 0;
    g->prev = -1;
    for (int i = 0; i < n_words; i++) {
        int w = textgen_word(g);
        const char* s = g->words[w];
        int start = g->len;
        memcpy(g->buf + g->len, s, strlen(s));
        g->len += (int)strlen(s);
        if (i == 0) { g->buf[start] = (char)(g->buf[start] - 'a' + 'A'); }
        if (i + 1 < n_words && rng_uniform(&g->rng) < 0.08) { g->buf[g->len++] = ','; }
        g->buf[g->len++] = (i + 1 < n_words) ? ' ' : '.';
        g->prev = w;
    }
    g->sentences++;
    if (g->sentences >= 4 + rng_int(&g->rng, 4)) { g->buf[g->len++] = '\n'; g->sentences = 0; }
    else { g->buf[g->len++] = ' '; }
    g->pos = 0;
}

static int textgen_next(TextGen* g) {
    if (g->pos == g->len) { textgen_sentence(g); }
    return (unsigned char)g->buf[g->pos++];
}

// ----------------------------------------------------------------------------
// llm.c token shards

#define SHARD_HEADER_INTS 256
#define SHARD_MAGIC_GPT2 20240520
#define SHARD_MAGIC_LLAMA3 20240801

typedef struct {
    int token_bytes;       // 2 (uint16) or 4 (uint32)
    int data_vocab;        // 50257 or 128256
    const char* tokenizer; // "GPT-2" or "llama-3", for messages
    size_t n_tokens;
} ShardInfo;

// Opens a shard (a regular file, input_file_check), reads and validates its header against the
// file size, and leaves f at the first token. Exits with one line naming the file.
static FILE* shard_open(const char* path, ShardInfo* info) {
    int header[SHARD_HEADER_INTS];
    size_t file_size = input_file_check("shard", path);
    if (file_size < sizeof(header)) {
        die("shard '%s': %zu bytes, shorter than the %zu-byte llm.c header (truncated or not a shard)", path, file_size, sizeof(header));
    }
    FILE* f = fopen_check(path, "rb");
    fread_check(header, sizeof(int), SHARD_HEADER_INTS, f, path);
    if (header[0] == SHARD_MAGIC_GPT2 && header[1] == 1) {
        info->token_bytes = 2;
        info->data_vocab = 50257;
        info->tokenizer = "GPT-2";
    } else if (header[0] == SHARD_MAGIC_LLAMA3 && header[1] == 7) {
        info->token_bytes = 4;
        info->data_vocab = 128256;
        info->tokenizer = "llama-3";
    } else {
        const unsigned char* b = (const unsigned char*)header;
        int text = 1;  // the first 16 bytes printable ASCII or whitespace: a text file given without --bytes
        for (int i = 0; i < 16; i++) { text &= (b[i] >= 32 && b[i] < 127) || b[i] == '\n' || b[i] == '\t' || b[i] == '\r'; }
        die("shard '%s': magic %d version %d, expected %d/1 (llm.c GPT-2) or %d/7 (llm.c llama-3)%s",
            path, header[0], header[1], SHARD_MAGIC_GPT2, SHARD_MAGIC_LLAMA3,
            text ? "; it starts with text: to train on a text file as bytes, add --bytes" : "");
    }
    if (header[2] <= 0) { die("shard '%s': header says %d tokens, expected > 0", path, header[2]); }
    info->n_tokens = (size_t)header[2];
    size_t expected = sizeof(header) + info->n_tokens * info->token_bytes;
    if (file_size != expected) {
        die("shard '%s': %zu bytes, but its header promises %zu tokens = %zu bytes (truncated or corrupt)",
            path, file_size, info->n_tokens, expected);
    }
    return f;
}

// The id of a shard's token i (token_bytes 2: uint16, 4: uint32; little-endian as llm.c writes)
static uint32_t shard_token(const unsigned char* raw, int token_bytes, size_t i) {
    return token_bytes == 2 ? ((const uint16_t*)raw)[i] : ((const uint32_t*)raw)[i];
}

// Reads a shard through once (1 MiB at a time) and checks every id against the data vocabulary:
// 1 with *index and *token set at the first id that does not fit, 0 when all fit.
static int shard_find_bad_id(const char* path, size_t* index, uint32_t* token) {
    ShardInfo info;
    FILE* f = shard_open(path, &info);
    size_t chunk = ((size_t)1 << 20) / info.token_bytes;
    unsigned char* raw = (unsigned char*)malloc_check(chunk * info.token_bytes);
    int found = 0;
    for (size_t at = 0; at < info.n_tokens && !found; at += chunk) {
        size_t n = info.n_tokens - at < chunk ? info.n_tokens - at : chunk;
        fread_check(raw, info.token_bytes, n, f, path);
        uint32_t worst = 0;  // the largest id of the chunk: one compare per token, no branch
        for (size_t i = 0; i < n; i++) {
            uint32_t t = shard_token(raw, info.token_bytes, i);
            worst = t > worst ? t : worst;
        }
        for (size_t i = 0; i < n && worst >= (uint32_t)info.data_vocab && !found; i++) {
            *token = shard_token(raw, info.token_bytes, i);
            *index = at + i;
            found = *token >= (uint32_t)info.data_vocab;
        }
    }
    free(raw);
    fclose(f);
    return found;
}

// Every shard's ids checked before the first step (the shards in parallel; a line of progress for
// sets over 1 GB), so a bad id stops the run at start and not when the stream reaches its shard.
// The first bad shard in sorted order is the one named.
static void shards_check_ids(const glob_t* shards, int data_vocab, size_t total_bytes) {
    int n = (int)shards->gl_pathc, first_bad = n;
    size_t* index = (size_t*)calloc_check((size_t)n, sizeof(size_t));
    uint32_t* token = (uint32_t*)calloc_check((size_t)n, sizeof(uint32_t));
    double t0 = now_s();
    int loud = total_bytes > ((size_t)1 << 30);
    if (loud) { printf("checking the token ids of %d shards (%.1f GB)\n", n, total_bytes / 1e9); fflush(stdout); }
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) {
        if (shard_find_bad_id(shards->gl_pathv[i], &index[i], &token[i])) {
#pragma omp critical
            first_bad = i < first_bad ? i : first_bad;
        }
    }
    if (first_bad < n) {
        die("shard '%s': token %u at index %zu is >= the data vocabulary %d", shards->gl_pathv[first_bad], token[first_bad],
            index[first_bad], data_vocab);
    }
    if (loud) { printf("token ids checked in %.1f s\n", now_s() - t0); }
    free(index);
    free(token);
}

// Loads all tokens of one shard into tokens (malloc'd), checking every id against the data vocab
// again (the files may have changed since the start).
static int* shard_load(const char* path, ShardInfo* info_out) {
    ShardInfo info;
    FILE* f = shard_open(path, &info);
    unsigned char* raw = (unsigned char*)malloc_check(info.n_tokens * info.token_bytes);
    fread_check(raw, info.token_bytes, info.n_tokens, f, path);
    fclose(f);
    int* tokens = (int*)malloc_check(info.n_tokens * sizeof(int));
    for (size_t i = 0; i < info.n_tokens; i++) {
        uint32_t t = shard_token(raw, info.token_bytes, i);
        if (t >= (uint32_t)info.data_vocab) {
            die("shard '%s': token %u at index %zu is >= the data vocabulary %d", path, t, i, info.data_vocab);
        }
        tokens[i] = (int)t;
    }
    free(raw);
    *info_out = info;
    return tokens;
}

// Writes a shard in llm.c's format (data preparation and tests).
static void shard_write(const char* path, const int* tokens, size_t n, int token_bytes) {
    int header[SHARD_HEADER_INTS] = {0};
    header[0] = token_bytes == 2 ? SHARD_MAGIC_GPT2 : SHARD_MAGIC_LLAMA3;
    header[1] = token_bytes == 2 ? 1 : 7;
    header[2] = (int)n;
    FILE* f = fopen_check(path, "wb");
    int ok = fwrite(header, sizeof(int), SHARD_HEADER_INTS, f) == SHARD_HEADER_INTS;
    for (size_t i = 0; i < n && ok; i++) {
        if (token_bytes == 2) { uint16_t t = (uint16_t)tokens[i]; ok = fwrite(&t, 2, 1, f) == 1; }
        else { uint32_t t = (uint32_t)tokens[i]; ok = fwrite(&t, 4, 1, f) == 1; }
    }
    if (!ok || fclose(f) != 0) { die("shard '%s': write failed: %s", path, strerror(errno)); }
}

// ----------------------------------------------------------------------------
// TokenStream: an endless sequence of haystack tokens

enum { SOURCE_BUILTIN, SOURCE_BYTES, SOURCE_SHARDS };

typedef struct {
    int kind;
    int data_vocab;
    const char* tokenizer; // "bytes", "GPT-2", "llama-3": train and val must agree
    uint64_t files_id;     // hash64 of the files read (base names and sizes, in order); 0 for built-in
    TextGen gen;           // SOURCE_BUILTIN
    unsigned char* bytes;  // SOURCE_BYTES: this split's bytes
    size_t n_bytes, byte_pos;
    glob_t shards;         // SOURCE_SHARDS: sorted paths
    int shard_idx;
    int* tokens;           // current shard
    size_t n_tokens, token_pos;
} TokenStream;

// glob(3) of a data flag's pattern, sorted; no match is one line that says why: the OS's reason when a
// directory on the way could not be read, else that nothing matches.
static int glob_error_errno;
static char glob_error_path[512];
static int glob_on_error(const char* path, int err) {
    if (glob_error_errno == 0) { glob_error_errno = err; snprintf(glob_error_path, sizeof(glob_error_path), "%s", path); }
    return 0;  // go on: a readable match elsewhere still counts
}
static void glob_data(const char* what, const char* pattern, glob_t* g) {
    glob_error_errno = 0;
    int rc = glob(pattern, 0, glob_on_error, g);
    if (rc == 0 && g->gl_pathc > 0) { return; }
    if (glob_error_errno) { die("%s: no file matches '%s' (%s: %s)", what, pattern, glob_error_path, strerror(glob_error_errno)); }
    die("%s: no file matches '%s'", what, pattern);
}

static void stream_init_builtin(TokenStream* s, uint64_t seed) {
    memset(s, 0, sizeof(*s));
    s->kind = SOURCE_BUILTIN;
    s->data_vocab = 256;
    s->tokenizer = "bytes";
    textgen_init(&s->gen, seed);
}

// A file's part of a stream's files_id: its base name (so a moved data directory still matches) and size.
static uint64_t files_id_add(uint64_t h, const char* path, size_t size) {
    const char* base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    h = hash64(h, base, strlen(base) + 1);
    uint64_t sz = (uint64_t)size;
    return hash64(h, &sz, sizeof(sz));
}

// Bytes of every file matching pattern, concatenated in sorted order; split 0 = first 90%, 1 = last 10%.
static void stream_init_bytes(TokenStream* s, const char* pattern, int split, size_t min_len) {
    memset(s, 0, sizeof(*s));
    s->kind = SOURCE_BYTES;
    s->data_vocab = 256;
    s->tokenizer = "bytes";
    s->files_id = HASH64_INIT;
    glob_t g;
    glob_data("bytes data", pattern, &g);
    size_t total = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        size_t n = input_file_check("bytes data", g.gl_pathv[i]);
        s->files_id = files_id_add(s->files_id, g.gl_pathv[i], n);
        total += n;
    }
    size_t n_val = total / 10;
    size_t begin = split == 0 ? 0 : total - n_val;
    s->n_bytes = split == 0 ? total - n_val : n_val;
    if (s->n_bytes < min_len) {
        die("bytes data '%s': %zu bytes in all, its %s split has %zu, need at least %zu (one sequence)",
            pattern, total, split == 0 ? "train" : "val", s->n_bytes, min_len);
    }
    unsigned char* all = (unsigned char*)malloc_check(total);
    size_t at = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        size_t n = input_file_check("bytes data", g.gl_pathv[i]);
        if (at + n > total) { die("bytes data '%s': grew while it was read", g.gl_pathv[i]); }
        FILE* f = fopen_check(g.gl_pathv[i], "rb");
        fread_check(all + at, 1, n, f, g.gl_pathv[i]);
        fclose(f);
        at += n;
    }
    s->bytes = (unsigned char*)malloc_check(s->n_bytes);
    memcpy(s->bytes, all + begin, s->n_bytes);
    free(all);
    globfree(&g);
}

// The shards matching pattern, in sorted order; together at least min_len tokens (one sequence).
static void stream_init_shards(TokenStream* s, const char* pattern, size_t min_len) {
    memset(s, 0, sizeof(*s));
    s->kind = SOURCE_SHARDS;
    s->files_id = HASH64_INIT;
    glob_data("shards", pattern, &s->shards);
    // every shard must agree on the format; all headers and token ids are checked up front so a bad
    // shard fails now, not hours in when the stream reaches it
    size_t total = 0, total_bytes = 0;
    for (size_t i = 0; i < s->shards.gl_pathc; i++) {
        const char* path = s->shards.gl_pathv[i];
        ShardInfo info;
        fclose(shard_open(path, &info));
        total_bytes += info.n_tokens * info.token_bytes;
        if (i == 0) {
            s->data_vocab = info.data_vocab;
            s->tokenizer = info.tokenizer;
        } else if (info.data_vocab != s->data_vocab) {
            die("shard '%s' holds %s tokens, the first shard of '%s' %s tokens", path, info.tokenizer, pattern, s->tokenizer);
        }
        total += info.n_tokens;
        s->files_id = files_id_add(s->files_id, path, SHARD_HEADER_INTS * sizeof(int) + info.n_tokens * info.token_bytes);
    }
    if (total < min_len) { die("shards '%s': %zu tokens in all, need at least %zu (one sequence)", pattern, total, min_len); }
    shards_check_ids(&s->shards, s->data_vocab, total_bytes);
    ShardInfo info;
    s->tokens = shard_load(s->shards.gl_pathv[0], &info);
    s->n_tokens = info.n_tokens;
}

static int stream_next(TokenStream* s) {
    if (s->kind == SOURCE_BUILTIN) { return textgen_next(&s->gen); }
    if (s->kind == SOURCE_BYTES) {
        int t = s->bytes[s->byte_pos];
        s->byte_pos = (s->byte_pos + 1) % s->n_bytes;
        return t;
    }
    if (s->token_pos == s->n_tokens) {
        s->shard_idx = (s->shard_idx + 1) % (int)s->shards.gl_pathc;
        free(s->tokens);
        ShardInfo info;
        s->tokens = shard_load(s->shards.gl_pathv[s->shard_idx], &info);
        s->n_tokens = info.n_tokens;
        s->token_pos = 0;
    }
    return s->tokens[s->token_pos++];
}

static void stream_free(TokenStream* s) {
    free(s->bytes);
    free(s->tokens);
    if (s->kind == SOURCE_SHARDS) { globfree(&s->shards); }
}

// ----------------------------------------------------------------------------
// Needles: a statement put somewhere in the haystack, a question later, the answer after it.
//   symbol:  needle ⟨N⟩ k1..kK v1..vV     query ⟨Q⟩ k1..kK     answer v1..vV
//   text:    "The magic number of plome is 482913. "   "What is the magic number of plome? "   "482913"
// Text needles are spelled in bytes, so they need a byte-level data vocabulary.

enum { NEEDLE_SYMBOL, NEEDLE_TEXT, NEEDLE_RECALL };
enum { DIST_LOGUNIFORM, DIST_UNIFORM };  // NeedleConfig.dist_kind
#define NEEDLE_MAX 64

typedef struct {
    int kind;        // NEEDLE_SYMBOL, NEEDLE_TEXT or NEEDLE_RECALL
    int key_len;     // symbols per key (symbol needles)
    int val_len;     // symbols per value (symbol needles)
    int per_1k;      // needles per 1000 tokens of a training sequence
    int queries;     // queries per training sequence
    int recall_keys; // recall: key/value pairs per sequence, each defined once and queried once (K)
    int dist_min;    // recall: query distances (answer - value) drawn from [dist_min, dist_max]
    int dist_max;    //   0: the longest a sequence holds (its length - 3)
    int dist_kind;   // recall: DIST_LOGUNIFORM or DIST_UNIFORM
    int answer_min_dist; // recall: answers at distance <= this carry no loss (0: every answer has loss)
} NeedleConfig;

typedef struct {
    int needle[NEEDLE_MAX], needle_len; // the statement
    int value_off;                      // index in needle[] of the first value token
    int query[NEEDLE_MAX], query_len;   // the question
    int answer[NEEDLE_MAX], answer_len; // what follows the question: the value again
} Needle;

// the --needle-kind and --recall-dist spellings
static const char* needle_kind_name(int kind) { return kind == NEEDLE_RECALL ? "recall" : kind == NEEDLE_TEXT ? "text" : "symbol"; }
static const char* dist_kind_name(int kind) { return kind == DIST_UNIFORM ? "uniform" : "loguniform"; }

static NeedleConfig needle_config_default(void) {
    NeedleConfig c = {NEEDLE_SYMBOL, 1, 2, 64, 16, 16, 4, 0, DIST_LOGUNIFORM, 0};  // dense: the retrieval signal the default run learns from
    return c;
}

static int needle_append_str(int* out, int n, const char* s) {
    for (; *s; s++) { out[n++] = (unsigned char)*s; }
    return n;
}

// Recall keys and values come from disjoint halves of the symbols: keys [0, S/2), values [S/2, S).
static int recall_key_symbols(const Vocab* v) { return v->n_symbols / 2; }
static int recall_value_symbols(const Vocab* v) { return v->n_symbols - v->n_symbols / 2; }

// A needle whose key differs from the keys of the n_used needles in used[]. A recall needle is a
// symbol needle of one key and one value symbol from their own halves of the symbols.
static Needle needle_make(const NeedleConfig* c, const Vocab* v, Rng* rng, const Needle* used, int n_used) {
    Needle nd;
    int recall = c->kind == NEEDLE_RECALL, symbol = c->kind != NEEDLE_TEXT;
    int key[NEEDLE_MAX], klen = recall ? 1 : symbol ? c->key_len : 5, vlen = recall ? 1 : c->val_len;
    for (int attempt = 0;; attempt++) {
        for (int i = 0; i < klen; i++) {
            if (recall) { key[i] = v->symbol0 + rng_int(rng, recall_key_symbols(v)); }
            else { key[i] = symbol ? v->symbol0 + rng_int(rng, v->n_symbols) : 'a' + rng_int(rng, 26); }
        }
        int clash = 0;  // keys sit right after the marker (symbol) or after "...number of " (text)
        for (int u = 0; u < n_used && !clash; u++) {
            int off = symbol ? 1 : 20;
            clash = memcmp(used[u].needle + off, key, klen * sizeof(int)) == 0;
        }
        if (!clash) { break; }
        if (attempt > 1000) { die("needles: cannot find a fresh key after %d tries (too many needles per sequence)", attempt); }
    }
    if (symbol) {
        nd.needle[0] = v->needle_mark;
        nd.query[0] = v->query_mark;
        for (int i = 0; i < klen; i++) { nd.needle[1 + i] = key[i]; nd.query[1 + i] = key[i]; }
        nd.value_off = 1 + klen;
        for (int i = 0; i < vlen; i++) {
            nd.answer[i] = recall ? v->symbol0 + recall_key_symbols(v) + rng_int(rng, recall_value_symbols(v))
                                  : v->symbol0 + rng_int(rng, v->n_symbols);
            nd.needle[nd.value_off + i] = nd.answer[i];
        }
        nd.needle_len = 1 + klen + vlen;
        nd.query_len = 1 + klen;
        nd.answer_len = vlen;
    } else {
        char keys[6], digits[7];
        for (int i = 0; i < 5; i++) { keys[i] = (char)key[i]; }
        keys[5] = '\0';
        for (int i = 0; i < 6; i++) { digits[i] = (char)('0' + (i == 0 ? 1 + rng_int(rng, 9) : rng_int(rng, 10))); }
        digits[6] = '\0';
        int n = needle_append_str(nd.needle, 0, "The magic number of ");  // 20 bytes: key at 20
        n = needle_append_str(nd.needle, n, keys);
        n = needle_append_str(nd.needle, n, " is ");
        nd.value_off = n;
        n = needle_append_str(nd.needle, n, digits);
        nd.needle_len = needle_append_str(nd.needle, n, ". ");
        n = needle_append_str(nd.query, 0, "What is the magic number of ");
        n = needle_append_str(nd.query, n, keys);
        nd.query_len = needle_append_str(nd.query, n, "? ");
        nd.answer_len = needle_append_str(nd.answer, 0, digits);
    }
    return nd;
}

// Distinct needle keys: n_symbols^key_len (symbol), 26^5 (text), n_symbols/2 (recall); capped at 2^30.
static long needle_keys(const NeedleConfig* c, int n_symbols) {
    if (c->kind == NEEDLE_RECALL) { return n_symbols / 2; }
    int base = c->kind == NEEDLE_SYMBOL ? n_symbols : 26, len = c->kind == NEEDLE_SYMBOL ? c->key_len : 5;
    long keys = 1;
    for (int i = 0; i < len && keys < (1L << 30); i++) { keys *= base; }
    return keys < (1L << 30) ? keys : (1L << 30);
}

// Training sequence: seq[0..n) is haystack on entry. Walking left to right, needles and queries
// (question + answer) of earlier needles are spliced in at random, the haystack filling the rest.
// Returns the number of needles placed. dist (NULL, or room for n) gets, per question, how far its
// first answer token is from the needle's first value token (a window W >= dist lets the token
// before the answer see the value), near (NULL, or room for n) how far from the nearest earlier
// copy of the value (the needle's, or the answer to an earlier question about the same key), and
// *n_dist their count.
static int needle_fill_train(int* seq, int n, const NeedleConfig* c, const Vocab* v, Rng* rng, int* dist, int* near, int* n_dist) {
    // keys are distinct within a sequence: at most 3/4 of the key space, so drawing a fresh key
    // stays cheap (the flags check that the expected count is at most half of it)
    long keys34 = needle_keys(c, v->n_symbols) * 3 / 4;
    int cap = n < 1024 ? n : 1024;
    if (keys34 < cap) { cap = (int)keys34; }
    Needle* placed = (Needle*)malloc_check((size_t)cap * sizeof(Needle));
    int* value_at = (int*)malloc_check((size_t)cap * sizeof(int));  // where each needle's value starts
    int* copy_at = (int*)malloc_check((size_t)cap * sizeof(int));   // where its latest copy starts (needle or answer)
    int n_placed = 0, n_q = 0;
    double p_needle = c->per_1k / 1000.0;
    double p_query = (double)c->queries / n;
    int* hay = (int*)malloc_check(n * sizeof(int));
    memcpy(hay, seq, n * sizeof(int));
    int out = 0, src = 0;
    while (out < n) {
        double r = rng_uniform(rng);
        if (r < p_needle && n_placed < cap) {
            Needle nd = needle_make(c, v, rng, placed, n_placed);
            if (out + nd.needle_len <= n) {
                memcpy(seq + out, nd.needle, nd.needle_len * sizeof(int));
                value_at[n_placed] = out + nd.value_off;
                copy_at[n_placed] = value_at[n_placed];
                out += nd.needle_len;
                placed[n_placed++] = nd;
                continue;
            }
        } else if (r < p_needle + p_query && n_placed > 0) {
            int k = rng_int(rng, n_placed);
            const Needle* nd = &placed[k];
            if (out + nd->query_len + nd->answer_len <= n) {
                memcpy(seq + out, nd->query, nd->query_len * sizeof(int));
                memcpy(seq + out + nd->query_len, nd->answer, nd->answer_len * sizeof(int));
                if (dist) { dist[n_q] = out + nd->query_len - value_at[k]; }
                if (near) { near[n_q] = out + nd->query_len - copy_at[k]; }
                copy_at[k] = out + nd->query_len;
                n_q++;
                out += nd->query_len + nd->answer_len;
                continue;
            }
        }
        seq[out++] = hay[src++];
    }
    if (n_dist) { *n_dist = n_q; }
    free(hay);
    free(placed);
    free(value_at);
    free(copy_at);
    return n_placed;
}

// ----------------------------------------------------------------------------
// The recall task (--needle-kind recall): a sequence of n tokens carries K pairs, each a definition
// ⟨N⟩ key value and, d tokens after its value, a query ⟨Q⟩ key answered by the value:
//       ... ⟨N⟩ k v ......... ⟨Q⟩ k v ...
//                 ^value_pos         ^answer_pos = value_pos + d
// Keys are distinct within a sequence (each defined once and queried once: no second copy to copy
// from), values too, from disjoint halves of the symbols. d is drawn per pair from one distribution
// whatever the model, so the share of queries inside a window W is set by the flags (d <= W: the row
// before the answer, which predicts it, sees the value):
//   log-uniform  P(d) = ln((d+1)/d) / ln((dmax+1)/dmin):  P(d <= W) = ln((W+1)/dmin) / ln((dmax+1)/dmin)
//   uniform      P(d <= W) = (W - dmin + 1) / (dmax - dmin + 1)
// Pairs are placed longest first, each at a uniform position among those where its six tokens land
// on haystack; a pair that fits nowhere draws its distance again (rare: needle_share measures the
// shares on the generator's sequences beside the formula). The haystack fills the other slots in
// order. Only the answers and the haystack carry loss: a definition, and a query's marker and key,
// are unpredictable (and answers at d <= answer_min_dist carry none either).

#define RECALL_MAX_KEYS 4096

typedef struct {
    int value_pos;   // the definition's value token
    int answer_pos;  // the query's answer token: predicted at answer_pos - 1; distance answer_pos - value_pos
} RecallPair;

// The longest distance a sequence of n tokens holds under c (a definition at 0..2, the answer at n-1).
static int recall_dist_max(const NeedleConfig* c, int n) {
    int hi = n - 3;
    return c->dist_max > 0 && c->dist_max < hi ? c->dist_max : hi;
}

// Do c's pairs, six tokens each, fit a sequence of n tokens? At most half of it, so the haystack
// stays the larger part and every pair finds room.
static int recall_pairs_fit(const NeedleConfig* c, int n) { return 6L * c->recall_keys <= n / 2; }

// P(d <= W) of the distance distribution over [dist_min, dmax] (the formula above).
static double recall_share_within(const NeedleConfig* c, int dmax, int W) {
    int lo = c->dist_min;
    if (W < lo) { return 0.0; }
    if (W >= dmax) { return 1.0; }
    if (c->dist_kind == DIST_UNIFORM) { return (double)(W - lo + 1) / (dmax - lo + 1); }
    return log((W + 1.0) / lo) / log((dmax + 1.0) / lo);
}

static int recall_draw_dist(const NeedleConfig* c, int dmax, Rng* rng) {
    int lo = c->dist_min;
    if (c->dist_kind == DIST_UNIFORM) { return lo + rng_int(rng, dmax - lo + 1); }
    int d = (int)floor(exp(log((double)lo) + rng_uniform(rng) * (log(dmax + 1.0) - log((double)lo))));
    return d < lo ? lo : d > dmax ? dmax : d;
}

// The first k of a random permutation of [0, n) into out (partial Fisher-Yates over scratch).
static void rng_pick_distinct(Rng* rng, int* out, int k, int* scratch, int n) {
    for (int i = 0; i < n; i++) { scratch[i] = i; }
    for (int i = 0; i < k; i++) {
        int j = i + rng_int(rng, n - i), t = scratch[i];
        scratch[i] = scratch[j];
        scratch[j] = t;
        out[i] = scratch[i];
    }
}

// Is every slot of the pair (value at p, answer at p + d) haystack?
static int recall_fits(const int* task, int p, int d) {
    for (int i = -2; i <= 0; i++) { if (task[p + i] >= 0 || task[p + d + i] >= 0) { return 0; } }
    return 1;
}

// seq[0..n) is haystack on entry; places c->recall_keys pairs (the block comment above), returns
// their count. no_loss (NULL, or n bytes): 1 where the token carries no loss as a target. pairs
// (NULL, or room for recall_keys): where each pair's value and answer are, longest first.
static int recall_fill(int* seq, unsigned char* no_loss, int n, const NeedleConfig* c, const Vocab* v, Rng* rng, RecallPair* pairs) {
    int K = c->recall_keys, dmax = recall_dist_max(c, n), ks = recall_key_symbols(v), vs = recall_value_symbols(v);
    if (K > ks || K > vs || K > RECALL_MAX_KEYS) { die("recall: %d keys a sequence, %d key and %d value symbols (at most %d keys)", K, ks, vs, RECALL_MAX_KEYS); }
    if (dmax < c->dist_min) { die("recall: a sequence of %d tokens holds distances up to %d, below --recall-dist-min %d", n, dmax, c->dist_min); }
    int dist[RECALL_MAX_KEYS], key[RECALL_MAX_KEYS], val[RECALL_MAX_KEYS];
    int* task = (int*)malloc_check((size_t)n * sizeof(int));  // the task token of each slot, -1: haystack
    int* cand = (int*)malloc_check((size_t)(n > ks + vs ? n : ks + vs) * sizeof(int));
    for (int t = 0; t < n; t++) { task[t] = -1; }
    for (int k = 0; k < K; k++) { dist[k] = recall_draw_dist(c, dmax, rng); }
    for (int k = 1; k < K; k++) {  // longest first (insertion sort)
        int d = dist[k], j = k;
        while (j > 0 && dist[j - 1] < d) { dist[j] = dist[j - 1]; j--; }
        dist[j] = d;
    }
    rng_pick_distinct(rng, key, K, cand, ks);
    rng_pick_distinct(rng, val, K, cand, vs);
    if (no_loss) { memset(no_loss, 0, (size_t)n); }
    for (int k = 0; k < K; k++) {
        int d = dist[k], n_cand = 0;
        for (int attempt = 0; n_cand == 0; attempt++) {
            if (attempt > 0) { d = recall_draw_dist(c, dmax, rng); }
            if (attempt > 1000) { die("recall: cannot place %d pairs of 6 tokens in a sequence of %d (fewer --recall-keys)", K, n); }
            for (int p = 2; p + d < n; p++) { if (recall_fits(task, p, d)) { cand[n_cand++] = p; } }
        }
        int p = cand[rng_int(rng, n_cand)], a = p + d;
        int k_tok = v->symbol0 + key[k], v_tok = v->symbol0 + ks + val[k];
        task[p - 2] = v->needle_mark; task[p - 1] = k_tok; task[p] = v_tok;
        task[a - 2] = v->query_mark;  task[a - 1] = k_tok; task[a] = v_tok;
        if (no_loss) {
            for (int i = -2; i <= 0; i++) { no_loss[p + i] = 1; }
            no_loss[a - 2] = no_loss[a - 1] = 1;
            no_loss[a] = d <= c->answer_min_dist;
        }
        if (pairs) { pairs[k].value_pos = p; pairs[k].answer_pos = a; }
    }
    int* hay = cand;  // n ints: the haystack, then spliced around the pairs
    memcpy(hay, seq, (size_t)n * sizeof(int));
    for (int t = 0, src = 0; t < n; t++) { seq[t] = task[t] >= 0 ? task[t] : hay[src++]; }
    free(task);
    free(cand);
    return K;
}

// Eval sample of n tokens: haystack, one needle at depth (0 = start, 1 = just before the question),
// and the question + answer at the very end. seq[0..n) is haystack on entry.
typedef struct {
    int needle_pos;  // index of the needle's first token
    int value_pos;   // index of the needle's first value token (what a retrieval head should copy)
    int answer_pos;  // index of the first answer token; answer token j is predicted at answer_pos+j-1
    int answer_len;
} NeedleSample;

static NeedleSample needle_fill_eval(int* seq, int n, double depth, const NeedleConfig* c, const Vocab* v, Rng* rng) {
    Needle nd = needle_make(c, v, rng, NULL, 0);
    int tail = nd.query_len + nd.answer_len;
    int filler = n - nd.needle_len - tail;
    if (filler < 0) { die("needle eval: length %d is too short for a needle of %d and a question of %d tokens", n, nd.needle_len, tail); }
    int at = (int)floor(depth * filler + 0.5);
    NeedleSample s;
    // shift haystack right past the needle; the tail of the haystack is dropped for the question
    memmove(seq + at + nd.needle_len, seq + at, (filler - at) * sizeof(int));
    memcpy(seq + at, nd.needle, nd.needle_len * sizeof(int));
    memcpy(seq + n - tail, nd.query, nd.query_len * sizeof(int));
    memcpy(seq + n - nd.answer_len, nd.answer, nd.answer_len * sizeof(int));
    s.needle_pos = at;
    s.value_pos = at + nd.value_off;
    s.answer_pos = n - nd.answer_len;
    s.answer_len = nd.answer_len;
    return s;
}

// ----------------------------------------------------------------------------
// DataLoader: B sequences of T+1 tokens per batch; inputs = seq[0..T), targets = seq[1..T].
// A fraction needle_frac of the sequences carries needles.

typedef struct {
    const char* train; // glob of train shards, or of byte files; NULL = built-in
    const char* val;   // glob of val shards (shards only)
    int bytes;         // 1: train glob names byte files
    int n_symbols;     // needle symbols appended to the vocabulary
    float needle_frac; // fraction of training sequences with needles
    NeedleConfig needles;
} DataConfig;

typedef struct {
    TokenStream stream;
    Vocab vocab;
    NeedleConfig needles;
    float needle_frac;
    int B, T;
    Rng rng;       // needle choices
    int* seq;      // (T+1)
    unsigned char* no_loss; // (T+1) recall: 1 where a token carries no loss as a target
    int* inputs;   // (B,T)
    int* targets;  // (B,T), -1 where masked (no loss)
    DataConfig dc; // what dataloader_init was given, for dataloader_rewind
    int split;
    uint64_t seed;
} DataLoader;

static DataConfig data_config_default(void) {
    DataConfig d = {NULL, NULL, 0, NEEDLE_SYMBOLS_DEFAULT, 1.0f, needle_config_default()};
    return d;
}

// The data flags that must fit together, checked by the trainers and eval_needle alike.
static void data_config_check(const DataConfig* dc) {
    if (dc->needles.key_len + dc->needles.val_len > NEEDLE_MAX - 2) {
        die("--needle-key %d --needle-val %d: together at most %d", dc->needles.key_len, dc->needles.val_len, NEEDLE_MAX - 2);
    }
    if (dc->val != NULL && dc->train == NULL) { die("-j given without -i: val shards need train shards"); }
    if (dc->bytes && dc->train == NULL) { die("--bytes needs -i FILES"); }
    if (dc->bytes && dc->val != NULL) { die("-j with --bytes: byte data takes its val split from the last 10%% of -i"); }
    const NeedleConfig* n = &dc->needles;
    if (n->kind == NEEDLE_RECALL) {
        if (n->recall_keys > dc->n_symbols / 2) {
            die("--recall-keys %d: keys and values take half of the %d --needle-symbols each; give --needle-symbols >= %d",
                n->recall_keys, dc->n_symbols, 2 * n->recall_keys);
        }
        if (n->dist_max > 0 && n->dist_max < n->dist_min) { die("--recall-dist-max %d is below --recall-dist-min %d", n->dist_max, n->dist_min); }
    }
}

// The haystack stream of a split (0 = train, 1 = val) of the configured source. The built-in text
// takes its seed from `seed`; bytes and shards start at the beginning of the split.
static void stream_open(TokenStream* s, const DataConfig* dc, int split, uint64_t seed, size_t min_len) {
    if (dc->train == NULL) {
        stream_init_builtin(s, split == 0 ? seed : seed + 0x5EEDull * 1000003ull);
    } else if (dc->bytes) {
        stream_init_bytes(s, dc->train, split, min_len);
    } else {
        const char* pattern = split == 0 ? dc->train : dc->val;
        if (pattern == NULL) { die("shards: no val glob given (-j)"); }
        stream_init_shards(s, pattern, min_len);
    }
}

// split 0 = train, 1 = val
static void dataloader_init(DataLoader* dl, const DataConfig* dc, int split, int B, int T, uint64_t seed) {
    memset(dl, 0, sizeof(*dl));
    stream_open(&dl->stream, dc, split, seed, (size_t)T + 1);
    dl->vocab = vocab_make(dl->stream.data_vocab, dc->n_symbols);
    dl->needles = dc->needles;
    if (dl->needles.kind == NEEDLE_TEXT && dl->vocab.data_vocab != 256) {
        die("text needles are spelled in bytes and need byte-level data, not a %d-token vocabulary", dl->vocab.data_vocab);
    }
    dl->needle_frac = split == 0 ? dc->needle_frac : 0.0f;  // val loss is measured on plain haystack
    dl->B = B;
    dl->T = T;
    rng_init(&dl->rng, seed ^ 0xA5A5A5A5ull);
    dl->seq = (int*)malloc_check((size_t)(T + 1) * sizeof(int));
    dl->no_loss = (unsigned char*)calloc_check((size_t)T + 1, 1);
    dl->inputs = (int*)malloc_check((size_t)B * T * sizeof(int));
    dl->targets = (int*)malloc_check((size_t)B * T * sizeof(int));
    dl->dc = *dc;
    dl->split = split;
    dl->seed = seed;
}

// Train and val must hold one tokenizer's ids: GPT-2 ids read as llama-3 ids would train and report
// a val loss that means nothing.
static void data_check_splits(const DataLoader* train, const DataLoader* val, const DataConfig* dc) {
    if (train->stream.data_vocab == val->stream.data_vocab) { return; }
    die("-i '%s' holds %s tokens (vocabulary %d), -j '%s' %s tokens (vocabulary %d): train and val must share the tokenizer",
        dc->train, train->stream.tokenizer, train->stream.data_vocab, dc->val, val->stream.tokenizer, val->stream.data_vocab);
}

// What the token stream of a run depends on besides its seed: the files of both splits (names and
// sizes), the tokenizer, and the needle mixture. A checkpoint records it so that a resume on other
// data is refused rather than silently breaking the exact-resume promise.
static uint64_t data_fingerprint(const DataLoader* train, const DataLoader* val, const DataConfig* dc) {
    int32_t f[] = {train->stream.kind, train->stream.data_vocab, dc->n_symbols, dc->needles.kind, dc->needles.key_len,
                   dc->needles.val_len, dc->needles.per_1k, dc->needles.queries};
    uint64_t h = hash64(HASH64_INIT, f, sizeof(f));
    if (dc->needles.kind == NEEDLE_RECALL) {  // only then: the fingerprints of other runs stay as they were
        int32_t r[] = {dc->needles.recall_keys, dc->needles.dist_min, dc->needles.dist_max, dc->needles.dist_kind, dc->needles.answer_min_dist};
        h = hash64(h, r, sizeof(r));
    }
    h = hash64(h, &dc->needle_frac, sizeof(dc->needle_frac));
    h = hash64(h, &train->stream.files_id, sizeof(uint64_t));
    return hash64(h, &val->stream.files_id, sizeof(uint64_t));
}

static void dataloader_next_batch(DataLoader* dl) {
    int T = dl->T;
    for (int b = 0; b < dl->B; b++) {
        for (int t = 0; t <= T; t++) { dl->seq[t] = stream_next(&dl->stream); }
        memset(dl->no_loss, 0, (size_t)T + 1);
        if (dl->needle_frac > 0.0f && rng_uniform(&dl->rng) < dl->needle_frac) {
            if (dl->needles.kind == NEEDLE_RECALL) { recall_fill(dl->seq, dl->no_loss, T + 1, &dl->needles, &dl->vocab, &dl->rng, NULL); }
            else { needle_fill_train(dl->seq, T + 1, &dl->needles, &dl->vocab, &dl->rng, NULL, NULL, NULL); }
        }
        memcpy(dl->inputs + (size_t)b * T, dl->seq, T * sizeof(int));
        for (int t = 0; t < T; t++) { dl->targets[(size_t)b * T + t] = dl->no_loss[t + 1] ? -1 : dl->seq[t + 1]; }
    }
}

static void dataloader_free(DataLoader* dl) {
    stream_free(&dl->stream);
    free(dl->seq);
    free(dl->no_loss);
    free(dl->inputs);
    free(dl->targets);
}

// Back to the first batch. Every val evaluation rewinds, so it scores the same batches each time,
// and a resumed run logs the same val losses as an uninterrupted one.
static void dataloader_rewind(DataLoader* dl) {
    DataConfig dc = dl->dc;
    int split = dl->split, B = dl->B, T = dl->T;
    uint64_t seed = dl->seed;
    dataloader_free(dl);
    dataloader_init(dl, &dc, split, B, T, seed);
}

// Advances the stream by n batches (the ones other data-parallel ranks train on; a resumed run's past).
static void dataloader_skip(DataLoader* dl, long n) {
    for (long i = 0; i < n; i++) { dataloader_next_batch(dl); }
}

// ----------------------------------------------------------------------------
// The needle eval grid (README.md, "Retrieval metrics"): lengths × depths × samples. Every sample is fixed by the
// grid's seed and the val haystack (its own stream, read from the start), so every run and every
// model, on the GPU or the CPU, sees the same samples.

#define GRID_MAX 16
#define NEEDLE_GRID_SEED 20260615  // the default grid seed (--eval-seed, eval_needle -s): every run sees the same samples
#define GRID_MAX_TOKENS (1 << 30)  // every sample of a grid together (4 GiB of token ids)

typedef struct {
    int n_lengths, n_depths, samples;
    int lengths[GRID_MAX];      // tokens per sample
    double depths[GRID_MAX];    // needle position: 0 = start of the haystack, 1 = just before the question
    int retrieval_len;          // retrieval scores are measured on the samples of this length (the training T)
    uint64_t seed;
    int* tokens;                // every sample, cell after cell: sample i at tokens + offset[i]
    size_t* offset;             // (n_lengths * n_depths * samples)
    NeedleSample* meta;         // (n_lengths * n_depths * samples)
} NeedleGrid;

// sample s of cell (length li, depth di); the samples of one length are contiguous
static int grid_index(const NeedleGrid* g, int li, int di, int s) { return (li * g->n_depths + di) * g->samples + s; }

// The default grid around training length T: lengths T/4, T/2, T, 2T, 4T; depths 0, .25, .5, .75, 1.
static void needle_grid_default(NeedleGrid* g, int T, int samples, uint64_t seed) {
    memset(g, 0, sizeof(*g));
    const double mult[5] = {0.25, 0.5, 1.0, 2.0, 4.0};
    g->n_lengths = 5;
    g->n_depths = 5;
    for (int i = 0; i < 5; i++) {
        g->lengths[i] = (int)(mult[i] * T);
        g->depths[i] = 0.25 * i;
    }
    g->samples = samples;
    g->retrieval_len = T;
    g->seed = seed;
}

// Tokens of one needle's statement, question and answer under config c (fixed per config).
static int needle_task_len(const NeedleConfig* c, const Vocab* v) {
    Rng r;
    rng_init(&r, 1);
    Needle nd = needle_make(c, v, &r, NULL, 0);
    return nd.needle_len + nd.query_len + nd.answer_len;
}

// Drops the lengths shorter than min_len (text needles need longer samples than symbol needles).
static void needle_grid_drop_short(NeedleGrid* g, int min_len) {
    int kept = 0;
    for (int i = 0; i < g->n_lengths; i++) { if (g->lengths[i] >= min_len) { g->lengths[kept++] = g->lengths[i]; } }
    g->n_lengths = kept;
}

// Draws every sample: n haystack tokens of the val stream, then needle_fill_eval at the cell's depth.
static void needle_grid_build(NeedleGrid* g, const DataConfig* dc, const Vocab* v) {
    if (g->samples < 1 || g->n_lengths < 1 || g->n_depths < 1) { die("needle grid: %d samples, %d lengths, %d depths; each must be >= 1", g->samples, g->n_lengths, g->n_depths); }
    size_t n_samples = (size_t)g->n_lengths * g->n_depths * g->samples, total = 0;
    int max_len = 0;
    for (int i = 0; i < g->n_lengths; i++) {
        total += (size_t)g->lengths[i] * g->n_depths * g->samples;
        if (g->lengths[i] > max_len) { max_len = g->lengths[i]; }
    }
    if (total > GRID_MAX_TOKENS) {
        die("needle grid: %zu tokens in all (lengths x %d depths x %d samples), at most %d; fewer samples or shorter lengths",
            total, g->n_depths, g->samples, GRID_MAX_TOKENS);
    }
    g->offset = (size_t*)malloc_check(n_samples * sizeof(size_t));
    g->meta = (NeedleSample*)malloc_check(n_samples * sizeof(NeedleSample));
    total = 0;
    for (size_t i = 0; i < n_samples; i++) {
        g->offset[i] = total;
        total += g->lengths[i / (g->n_depths * g->samples)];
    }
    g->tokens = (int*)malloc_check(total * sizeof(int));
    TokenStream hay;
    stream_open(&hay, dc, 1, g->seed, (size_t)max_len);
    Rng rng;
    rng_init(&rng, g->seed);
    for (size_t i = 0; i < n_samples; i++) {
        int li = (int)(i / (g->n_depths * g->samples)), di = (int)(i / g->samples % g->n_depths);
        int* seq = g->tokens + g->offset[i];
        for (int t = 0; t < g->lengths[li]; t++) { seq[t] = stream_next(&hay); }
        g->meta[i] = needle_fill_eval(seq, g->lengths[li], g->depths[di], &dc->needles, v, &rng);
    }
    stream_free(&hay);
}

static void needle_grid_free(NeedleGrid* g) { free(g->tokens); free(g->offset); free(g->meta); }

// ----------------------------------------------------------------------------
// The recall eval set: held-out sequences of the recall task, T tokens each, drawn like training
// sequences (recall_fill) from the val haystack with the eval seed, so every run and every model
// sees the same queries. Queries are scored in bins of distance: bin b holds d in
// (edges[b-1], edges[b]], the last bin every d beyond the last edge. Default edges T/32, T/8, T/2
// (32, 128, 512 at T 1024): a query is inside window W exactly when d <= W.

#define RECALL_MAX_BINS 8
#define RECALL_SEED_MIX 0x7EC411ull  // the eval set's generator seed = the eval seed ^ this

typedef struct {
    int n_seqs, T, K;              // sequences, their length, pairs per sequence
    int n_bins;                    // bins of distance
    int edges[RECALL_MAX_BINS];    // (n_bins - 1) upper edges, ascending
    uint64_t seed;
    int* tokens;                   // (n_seqs, T)
    RecallPair* pairs;             // (n_seqs, K)
} RecallSet;

static int recall_bin(const RecallSet* s, int d) {
    int b = 0;
    while (b < s->n_bins - 1 && d > s->edges[b]) { b++; }
    return b;
}

// The default edges T/32, T/8, T/2 (those >= 1 and distinct).
static int recall_default_edges(int T, int* edges) {
    const int div[3] = {32, 8, 2};
    int n = 0;
    for (int i = 0; i < 3; i++) {
        int e = T / div[i];
        if (e >= 1 && (n == 0 || e > edges[n - 1])) { edges[n++] = e; }
    }
    return n;
}

// Draws the set: n_seqs sequences of T tokens of the val haystack, recall_fill on each. edges (n_edges
// of them, ascending; n_edges 0: the default).
static void recall_set_build(RecallSet* s, const DataConfig* dc, const Vocab* v, int T, int n_seqs, uint64_t seed,
                             const int* edges, int n_edges) {
    memset(s, 0, sizeof(*s));
    if (n_seqs < 1) { die("recall eval: %d sequences, expected >= 1", n_seqs); }
    if (n_edges >= RECALL_MAX_BINS) { die("recall eval: %d bin edges, at most %d", n_edges, RECALL_MAX_BINS - 1); }
    s->n_seqs = n_seqs;
    s->T = T;
    s->K = dc->needles.recall_keys;
    s->seed = seed;
    if (n_edges == 0) { n_edges = recall_default_edges(T, s->edges); }
    else { memcpy(s->edges, edges, (size_t)n_edges * sizeof(int)); }
    s->n_bins = n_edges + 1;
    s->tokens = (int*)malloc_check((size_t)n_seqs * T * sizeof(int));
    s->pairs = (RecallPair*)malloc_check((size_t)n_seqs * s->K * sizeof(RecallPair));
    TokenStream hay;
    stream_open(&hay, dc, 1, seed, (size_t)T);
    Rng rng;
    rng_init(&rng, seed ^ RECALL_SEED_MIX);
    for (int i = 0; i < n_seqs; i++) {
        int* seq = s->tokens + (size_t)i * T;
        for (int t = 0; t < T; t++) { seq[t] = stream_next(&hay); }
        recall_fill(seq, NULL, T, &dc->needles, v, &rng, s->pairs + (size_t)i * s->K);
    }
    stream_free(&hay);
}

static void recall_set_free(RecallSet* s) { free(s->tokens); free(s->pairs); }

// Entropy (nats) of the unigram distribution of the training targets over n_batches batches:
// the loss of a model that learned token frequencies only, the bar a model must get well below.
static double data_unigram_entropy(const DataConfig* dc, int B, int T, uint64_t seed, int n_batches) {
    DataLoader dl;
    dataloader_init(&dl, dc, 0, B, T, seed);
    size_t* counts = (size_t*)calloc_check((size_t)dl.vocab.vocab, sizeof(size_t));
    size_t total = 0;
    for (int i = 0; i < n_batches; i++) {
        dataloader_next_batch(&dl);
        for (int n = 0; n < B * T; n++) { if (dl.targets[n] >= 0) { counts[dl.targets[n]]++; total++; } }
    }
    double h = 0.0;
    for (int v = 0; v < dl.vocab.vocab; v++) {
        if (counts[v]) { double p = (double)counts[v] / total; h -= p * log(p); }
    }
    free(counts);
    dataloader_free(&dl);
    return h;
}

#endif // DATALOADER_H
