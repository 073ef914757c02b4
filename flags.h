/*
flags.h — the command line of every program: one table of flags (FlagSpec rows: flag, type,
destination, range, choices, help) drives parsing, the -h text with defaults and ranges, and the
errors, so they cannot disagree. Any problem is one line naming the flag and the value as typed.

defines: FlagSpec, FLAG_* types, MAX_FLAGS, SEED_MAX, flags_parse, flags_print_help, flag_given,
         flags_parse_list
*/
#ifndef FLAGS_H
#define FLAGS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "utils.h"  // defines: die

#define MAX_FLAGS 80  // room in a FlagSpec table: the shared flags plus a trainer's own
enum { FLAG_INT, FLAG_LONG, FLAG_DOUBLE, FLAG_FLOAT, FLAG_STR, FLAG_BOOL, FLAG_CHOICE };
typedef struct {
    const char* flag;     // "-p", "--pos-full"
    int type;
    void* dst;
    double lo, hi;        // numbers: the accepted range, inclusive (-h lists it)
    const char* choices;  // FLAG_CHOICE: "rope|nope", the value stored is the index
    const char* help;
} FlagSpec;

#define SEED_MAX 4611686018427387904.0  // 2^62: seeds are 0..2^62, exactly representable as a double

static void flags_print_help(const char* prog, const FlagSpec* f, int n) {
    printf("usage: %s [flags]\n", prog);
    for (int i = 0; i < n; i++) {
        char def[96] = "", range[64] = "";
        switch (f[i].type) {
            case FLAG_INT: snprintf(def, sizeof(def), "%d", *(int*)f[i].dst); break;
            case FLAG_LONG: snprintf(def, sizeof(def), "%ld", *(long*)f[i].dst); break;
            case FLAG_DOUBLE: snprintf(def, sizeof(def), "%g", *(double*)f[i].dst); break;
            case FLAG_FLOAT: snprintf(def, sizeof(def), "%g", *(float*)f[i].dst); break;
            case FLAG_STR: {
                const char* v = *(const char**)f[i].dst;
                snprintf(def, sizeof(def), v == NULL ? "none" : v[0] == '\0' ? "\"\"" : "%s", v);
                break;
            }
            case FLAG_BOOL: snprintf(def, sizeof(def), "%s", *(int*)f[i].dst ? "on" : "off"); break;
            case FLAG_CHOICE: {
                const char* c = f[i].choices;  // the index-th word of "a|b|c"
                for (int k = *(int*)f[i].dst; k > 0 && strchr(c, '|'); k--) { c = strchr(c, '|') + 1; }
                snprintf(def, sizeof(def), "%.*s", (int)(strchr(c, '|') ? strchr(c, '|') - c : (long)strlen(c)), c);
                break;
            }
        }
        if (f[i].type <= FLAG_LONG) { snprintf(range, sizeof(range), ", %.0f..%.0f", f[i].lo, f[i].hi); }
        else if (f[i].type <= FLAG_FLOAT) { snprintf(range, sizeof(range), ", %g..%g", f[i].lo, f[i].hi); }
        // the value's placeholder: N integer, X number, S string, or the choices
        const char* value[] = {" N", " N", " X", " X", " S", "", " "};
        char name[64];
        snprintf(name, sizeof(name), "%s%s%s", f[i].flag, value[f[i].type], f[i].type == FLAG_CHOICE ? f[i].choices : "");
        printf("  %-26s %s (default %s%s)\n", name, f[i].help, def, range);
    }
    printf("  %-26s this help\n", "-h");
}

static int choice_index(const char* choices, const char* value) {
    int idx = 0;
    size_t len = strlen(value);
    for (const char* c = choices; c; idx++) {
        const char* bar = strchr(c, '|');
        size_t n = bar ? (size_t)(bar - c) : strlen(c);
        if (n == len && strncmp(c, value, n) == 0) { return idx; }
        c = bar ? bar + 1 : NULL;
    }
    return -1;
}

// Parses argv against the table; any problem is one line naming the flag and the value as typed,
// and exit 1. Integers are checked for overflow, numbers for being finite, both against the range.
// given (n entries, or NULL): given[k] = 1 for each flag k on the command line.
static void flags_parse(const FlagSpec* f, int n, int argc, char** argv, int* given) {
    int seen[MAX_FLAGS] = {0};
    if (n > MAX_FLAGS) { die("flags_parse: %d flags, more than MAX_FLAGS %d", n, MAX_FLAGS); }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { flags_print_help(argv[0], f, n); exit(0); }
        int k = 0;
        while (k < n && strcmp(f[k].flag, argv[i]) != 0) { k++; }
        if (k == n) { die("unknown flag '%s' (-h lists the flags)", argv[i]); }
        // a second value would silently win over the first: say so instead
        if (seen[k]++) { die("flag %s given twice: give it once", argv[i]); }
        if (given) { given[k] = 1; }
        if (f[k].type == FLAG_BOOL) { *(int*)f[k].dst = 1; continue; }
        if (i + 1 >= argc) { die("flag %s needs a value", argv[i]); }
        const char* v = argv[++i];
        char* end = NULL;
        errno = 0;
        switch (f[k].type) {
            case FLAG_INT:
            case FLAG_LONG: {
                long long x = strtoll(v, &end, 10);
                if (*v == '\0' || *end != '\0') { die("flag %s: '%s' is not an integer", f[k].flag, v); }
                // compared as integers: a double holds 2^62 + 1 as 2^62, so a value just past a large bound would pass
                if (errno == ERANGE || x < (long long)f[k].lo || x > (long long)f[k].hi) {
                    die("flag %s: '%s' is out of range, expected %.0f..%.0f", f[k].flag, v, f[k].lo, f[k].hi);
                }
                if (f[k].type == FLAG_INT) { *(int*)f[k].dst = (int)x; } else { *(long*)f[k].dst = (long)x; }
                break;
            }
            case FLAG_DOUBLE:
            case FLAG_FLOAT: {
                double x = strtod(v, &end);
                if (*v == '\0' || *end != '\0') { die("flag %s: '%s' is not a number", f[k].flag, v); }
                if (!isfinite(x)) { die("flag %s: '%s' is not a finite number", f[k].flag, v); }
                if (x < f[k].lo || x > f[k].hi) { die("flag %s: '%s' is out of range, expected %g..%g", f[k].flag, v, f[k].lo, f[k].hi); }
                if (f[k].type == FLAG_DOUBLE) { *(double*)f[k].dst = x; } else { *(float*)f[k].dst = (float)x; }
                break;
            }
            case FLAG_STR: *(const char**)f[k].dst = v; break;
            case FLAG_CHOICE: {
                int idx = choice_index(f[k].choices, v);
                if (idx < 0) { die("flag %s: '%s', expected one of %s", f[k].flag, v, f[k].choices); }
                *(int*)f[k].dst = idx;
                break;
            }
        }
    }
}

// Was the flag that writes dst on the command line? (given: as flags_parse filled it)
static int flag_given(const FlagSpec* f, const int* given, int n, const void* dst) {
    for (int i = 0; i < n; i++) { if (f[i].dst == dst) { return given[i]; } }
    return 0;
}

// A list flag's value "a,b,c" -> values, each finite, in [lo, hi] (integral when integer) and distinct; returns the
// count. Exits with a clear line on a bad list, showing the value as typed.
static int flags_parse_list(const char* flag, const char* s, double lo, double hi, int integer, double* out, int max) {
    int n = 0;
    const char* p = s;
    while (*p) {
        char* end = NULL;
        double x = strtod(p, &end);
        int len = (int)(end > p ? end - p : (long)strcspn(p, ","));
        if (end == p || (*end != ',' && *end != '\0')) { die("%s '%s': expected numbers separated by commas", flag, s); }
        if (!isfinite(x) || x < lo || x > hi || (integer && x != floor(x))) {
            die("%s '%s': '%.*s' is not %s in %.10g..%.10g", flag, s, len, p, integer ? "an integer" : "a number", lo, hi);
        }
        if (n == max) { die("%s '%s': at most %d values", flag, s, max); }
        out[n++] = x;
        p = *end == ',' ? end + 1 : end;
    }
    if (n == 0) { die("%s: empty list", flag); }
    for (int i = 0; i < n; i++) {  // a value twice is a typo, never what was meant
        for (int j = 0; j < i; j++) { if (out[i] == out[j]) { die("%s '%s': %.10g is there twice", flag, s, out[i]); } }
    }
    return n;
}

// An integer list flag whose values must ascend ("32,128,512") -> out (at most max); returns the count.
static int flags_parse_ascending(const char* flag, const char* s, double lo, double hi, int* out, int max) {
    double x[64];
    if (max > 64) { die("flags_parse_ascending: room for %d values, at most 64", max); }
    int n = flags_parse_list(flag, s, lo, hi, 1, x, max);
    for (int i = 0; i < n; i++) {
        out[i] = (int)x[i];
        if (i > 0 && out[i] <= out[i - 1]) { die("%s %s: edges must ascend", flag, s); }
    }
    return n;
}

#endif // FLAGS_H
