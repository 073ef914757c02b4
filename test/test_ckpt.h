/*
test_ckpt.h — file and checkpoint surgery for the tests (test_cpu.c, test_fuzz.c, ckpt_edit.c):
read a file whole, write one, and reseal a checkpoint (recompute its checksum) after an edit, so
that the checks behind the checksum (header ranges, finite contents) are the ones reached.
Include after checkpoint.h.
*/
#ifndef TEST_CKPT_H
#define TEST_CKPT_H

// The bytes of path (malloc'd), their count in *n.
static unsigned char* file_read_all(const char* path, size_t* n) {
    *n = input_file_check("test file", path);
    unsigned char* buf = (unsigned char*)malloc_check(*n);
    FILE* f = fopen_check(path, "rb");
    fread_check(buf, 1, *n, f, path);
    fclose(f);
    return buf;
}

static void file_write_all(const char* path, const void* data, size_t n) {
    FILE* f = fopen_check(path, "wb");
    if (fwrite(data, 1, n, f) != n || fclose(f) != 0) { die("%s: write failed: %s", path, strerror(errno)); }
}

// Recomputes the checksum of a version-2 checkpoint held in buf (n bytes) as checkpoint_write does:
// over the header, the parameters and, when the header says so, AdamW m and v. A file whose size
// does not match its header gets a checksum over the whole payload (its size check refuses it first).
static void ckpt_reseal(unsigned char* buf, size_t n) {
    int32_t* h = (int32_t*)buf;
    const size_t header = CKPT_HEADER_INTS * sizeof(int32_t);
    const float* p = (const float*)(buf + header);
    size_t params = (size_t)(uint32_t)h[15] | ((size_t)(uint32_t)h[16] << 31);
    int has_opt = h[13] == 1;
    if (n == header + (has_opt ? 3 : 1) * params * sizeof(float)) {
        checkpoint_seal(h, p, has_opt ? p + params : NULL, has_opt ? p + 2 * params : NULL, params);
    } else {
        checkpoint_seal(h, p, NULL, NULL, (n - header) / sizeof(float));
    }
}

#endif // TEST_CKPT_H
