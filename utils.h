/*
utils.h — what every program of hybrid.cu shares below the model: errors that name the file:line of
the call and the OS's reason, and exit non-zero; checked open, read and allocation; the check that an
input is a regular file; a 64-bit hash for checksums and fingerprints. (llm.c's llmc/utils.h.)

defines: die, die_at, fopen_check, fread_check, malloc_check, calloc_check, file_kind,
         input_file_check, hash64, now_s, stop_request, stop_requested
*/
#ifndef UTILS_H
#define UTILS_H

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

// ----------------------------------------------------------------------------
// A trainer's request to stop (its signal handler's flag): evals, val and samples check it between
// samples and return early, so a signal is answered within a second or two whatever is running.
// NULL outside a trainer (eval_needle, the tests): nothing stops early.
static volatile sig_atomic_t* stop_request;
static int stop_requested(void) { return stop_request != NULL && *stop_request != 0; }

// ----------------------------------------------------------------------------
// errors: every failure names the file:line of the call and exits non-zero

// stdout is flushed first, so in `prog > log 2>&1` the error is the last line
static void die_at(const char* file, int line, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " [%s:%d]\n", file, line);
    va_end(ap);
    exit(EXIT_FAILURE);
}
#define die(...) die_at(__FILE__, __LINE__, __VA_ARGS__)

static FILE* fopen_check_at(const char* path, const char* mode, const char* file, int line) {
    FILE* f = fopen(path, mode);
    if (f == NULL) { die_at(file, line, "cannot open '%s' for %s: %s", path, mode[0] == 'r' ? "reading" : "writing", strerror(errno)); }
    return f;
}
#define fopen_check(path, mode) fopen_check_at(path, mode, __FILE__, __LINE__)

// Reads n items or exits naming the file and why: the OS error, or an end of file before n items.
static void fread_check_at(void* p, size_t size, size_t n, FILE* f, const char* path, const char* file, int line) {
    if (fread(p, size, n, f) == n) { return; }
    die_at(file, line, "'%s': read failed: %s", path, ferror(f) ? strerror(errno) : "unexpected end of file");
}
#define fread_check(p, size, n, f, path) fread_check_at(p, size, n, f, path, __FILE__, __LINE__)

// What a path that is not a regular file is, for the messages below.
static const char* file_kind(mode_t mode) {
    if (S_ISDIR(mode)) { return "a directory"; }
    if (S_ISFIFO(mode)) { return "a FIFO (named pipe)"; }
    if (S_ISCHR(mode) || S_ISBLK(mode)) { return "a device"; }
    if (S_ISSOCK(mode)) { return "a socket"; }
    return "not a regular file";
}

// Every input (shard, byte file, checkpoint) must be a regular file, checked before it is opened:
// a FIFO would block the read forever, a directory or a device reads as garbage. Returns its size.
// `what` names it in the message: "shard", "-r", ...
static size_t input_file_check_at(const char* what, const char* path, const char* file, int line) {
    struct stat st;
    if (stat(path, &st) != 0) { die_at(file, line, "%s '%s': %s", what, path, strerror(errno)); }
    if (!S_ISREG(st.st_mode)) { die_at(file, line, "%s '%s' is %s, expected a regular file", what, path, file_kind(st.st_mode)); }
    return (size_t)st.st_size;
}
#define input_file_check(what, path) input_file_check_at(what, path, __FILE__, __LINE__)

// 64-bit FNV-1a over 8-byte little-endian words, then the last n % 8 bytes one at a time. Each step
// h -> (h ^ w) * prime is a bijection of h, so any single changed word always changes the result.
// Checkpoints carry one over header and payload; the data's fingerprint is one too.
#define HASH64_INIT 0xcbf29ce484222325ull
static uint64_t hash64(uint64_t h, const void* p, size_t n) {
    const uint64_t prime = 0x100000001b3ull;
    const unsigned char* b = (const unsigned char*)p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * prime;
    }
    for (; i < n; i++) { h = (h ^ b[i]) * prime; }
    return h;
}

static void* malloc_check_at(size_t size, const char* file, int line) {
    void* p = malloc(size > 0 ? size : 1);
    if (p == NULL) { die_at(file, line, "out of host memory allocating %zu bytes", size); }
    return p;
}
#define malloc_check(size) malloc_check_at(size, __FILE__, __LINE__)

static void* calloc_check_at(size_t n, size_t size, const char* file, int line) {
    void* p = calloc(n > 0 ? n : 1, size);
    if (p == NULL) { die_at(file, line, "out of host memory allocating %zu bytes", n * size); }
    return p;
}
#define calloc_check(n, size) calloc_check_at(n, size, __FILE__, __LINE__)

// seconds on a monotonic clock
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#endif // UTILS_H
