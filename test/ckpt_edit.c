/*
ckpt_edit.c — edits one value of a checkpoint and reseals it (a new checksum), for the shell tests
(test_bad_input.sh, test_resume.sh): a file whose checksum is right but whose header field is out of
range, or whose parameters or AdamW state are not finite, must still be refused on load.

    test/ckpt_edit FILE header INDEX VALUE    # int32 header field INDEX (0..255) := VALUE
    test/ckpt_edit FILE param|m|v INDEX VALUE  # float INDEX of the parameters, AdamW m or v := VALUE (nan, inf, 1e38)
*/
#include "../checkpoint.h"
#include "test_ckpt.h"

int main(int argc, char** argv) {
    if (argc != 5) { die("usage: %s FILE header|param|m|v INDEX VALUE", argv[0]); }
    size_t n;
    unsigned char* buf = file_read_all(argv[1], &n);
    const char* where = argv[2];
    long idx = strtol(argv[3], NULL, 10);
    int32_t* h = (int32_t*)buf;
    if (n < CKPT_HEADER_INTS * sizeof(int32_t)) { die("%s: shorter than a checkpoint header", argv[1]); }
    if (strcmp(where, "header") == 0) {
        if (idx < 0 || idx >= CKPT_HEADER_INTS) { die("header index %ld: expected 0..%d", idx, CKPT_HEADER_INTS - 1); }
        h[idx] = (int32_t)strtol(argv[4], NULL, 10);
    } else {
        size_t params = (size_t)(uint32_t)h[15] | ((size_t)(uint32_t)h[16] << 31);
        int part = strcmp(where, "param") == 0 ? 0 : strcmp(where, "m") == 0 ? 1 : strcmp(where, "v") == 0 ? 2 : -1;
        if (part < 0) { die("'%s': expected header, param, m or v", where); }
        size_t at = CKPT_HEADER_INTS * sizeof(int32_t) + (part * params + (size_t)idx) * sizeof(float);
        if (idx < 0 || (size_t)idx >= params || at + sizeof(float) > n) { die("%s index %ld: outside the file", where, idx); }
        float x = strtof(argv[4], NULL);
        memcpy(buf + at, &x, sizeof(x));
    }
    ckpt_reseal(buf, n);
    file_write_all(argv[1], buf, n);
    free(buf);
    return 0;
}
