/*
test_common.h — the checklist harness shared by the test programs.

defines: check() (one PASS/FAIL line per check), skip(), skip_all(), tmp_path(), run_child() (code in a child process, its
         stderr and exit status), expect_die() (checks that it exits non-zero with a given message), test_summary() (the final
         "N passed, N failed, N skipped" line), rel_err()
*/
#ifndef TEST_COMMON_H
#define TEST_COMMON_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int tests_passed, tests_failed, tests_skipped;

// One line per check: "PASS name: detail" or "FAIL name: detail". Returns ok.
static int check(int ok, const char* name, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s %s: ", ok ? "PASS" : "FAIL", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (ok) { tests_passed++; } else { tests_failed++; }
    return ok;
}

static void skip(const char* name, const char* why) {
    printf("SKIP %s: %s\n", name, why);
    fflush(stdout);
    tests_skipped++;
}

// n checks skipped for one reason, as one line: "SKIP what (n checks): why"
static void skip_all(const char* what, int n, const char* why) {
    printf("SKIP %s (%d checks): %s\n", what, n, why);
    fflush(stdout);
    tests_skipped += n;
}

static int test_summary(void) {
    printf("%d passed, %d failed, %d skipped\n", tests_passed, tests_failed, tests_skipped);
    return tests_failed > 0;
}

// /tmp/hybrid_test_<pid>_<name>: a scratch file of this test process (the last 8 stay valid)
static const char* tmp_path(const char* name) {
    static char buf[8][256];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof(buf[k]), "/tmp/hybrid_test_%d_%s", (int)getpid(), name);
    return buf[k];
}

// ||a - b|| / max(||a||, ||b||), 0 when both are exactly 0
static double rel_err(const double* a, const double* b, size_t n) {
    double d = 0.0, na = 0.0, nb = 0.0;
    for (size_t i = 0; i < n; i++) { d += (a[i] - b[i]) * (a[i] - b[i]); na += a[i] * a[i]; nb += b[i] * b[i]; }
    double den = sqrt(na > nb ? na : nb);
    return den == 0.0 ? 0.0 : sqrt(d) / den;
}

// Runs fn(arg) in a child process with its stderr captured into err (the first line, NUL-terminated)
// and a 10 s alarm against hangs; returns the wait status (fn returning counts as exit 0). The pipe
// is drained to the end (what does not fit err is dropped), so a chatty child cannot block on it.
static int run_child(void (*fn)(void*), void* arg, char* err, size_t err_size) {
    int fds[2];
    err[0] = '\0';
    if (pipe(fds) != 0) { return -1; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        alarm(10);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    char sink[256];
    while ((r = read(fds[0], got < err_size - 1 ? err + got : sink, got < err_size - 1 ? err_size - 1 - got : sizeof(sink))) > 0) {
        if (got < err_size - 1) { got += (size_t)r; }
    }
    err[got] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    char* nl = strchr(err, '\n');
    if (nl) { *nl = '\0'; }
    return status;
}

// Runs fn(arg) in a child. Passes when the child exits with a non-zero status (not a signal) and
// its stderr contains `expect`.
static int expect_die(const char* name, void (*fn)(void*), void* arg, const char* expect) {
    char err[2048];
    int status = run_child(fn, arg, err, sizeof(err));
    int exited_nonzero = WIFEXITED(status) && WEXITSTATUS(status) != 0;
    return check(exited_nonzero && strstr(err, expect) != NULL, name, "%s -> \"%s\"",
                 WIFSIGNALED(status) ? "killed by a signal" : exited_nonzero ? "exit != 0" : "exit 0", err);
}

#endif // TEST_COMMON_H
