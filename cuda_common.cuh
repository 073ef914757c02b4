/*
cuda_common.cuh — the GPU primitives every kernel file shares (llm.c's llmc/cuda_common.h): checked
CUDA calls, the build's precision (floatX), 16-byte loads and stores, warp and block sums, async
global-to-shared copies, and the grid size of an element-wise launch.

defines: cudaCheck, floatX, PRECISION_NAME, X128, x128, load128, store128, warp_sum, block_sum,
         REDUCE_THREADS, cp_async(_commit, _wait_all, _wait_but_last), bf16, mma_16816, lds32,
         pack_bf16, ldsm_x4(_t), ldsm_b2, blocks_for
*/
#ifndef CUDA_COMMON_CUH
#define CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include "utils.h"  // defines: die_at

// CUDA calls, checked the same way: one line with the CUDA error and the file:line of the call
static void cuda_check_at(cudaError_t err, const char* file, int line) {
    if (err != cudaSuccess) { die_at(file, line, "CUDA: %s", cudaGetErrorString(err)); }
}
#define cudaCheck(err) cuda_check_at((err), __FILE__, __LINE__)

// cudaFree of each pointer given, each checked: cudaFreeAll(a, b, c)
static void cuda_free_each(void* const* p, int n, const char* file, int line) {
    for (int i = 0; i < n; i++) { cuda_check_at(cudaFree(p[i]), file, line); }
}
#define cudaFreeAll(...)                                                                   \
    do {                                                                                   \
        void* const ptrs_[] = {__VA_ARGS__};                                               \
        cuda_free_each(ptrs_, (int)(sizeof(ptrs_) / sizeof(ptrs_[0])), __FILE__, __LINE__); \
    } while (0)

// Precision of the GPU build (compile time, llm.c style: make PRECISION=BF16|FP32). floatX is the
// type of activations, the parameters the kernels read, and matmul inputs/outputs; statistics (rstd,
// lse, recurrent state, gates), parameter gradients, master weights and AdamW state are fp32 in
// every build. FP32 is the build the tests diff against the CPU reference at fp32 tolerances.
#if defined(PRECISION_BF16)
#include <cuda_bf16.h>
typedef __nv_bfloat16 floatX;
#define PRECISION_NAME "bf16"
#elif defined(PRECISION_FP32)
typedef float floatX;
#define PRECISION_NAME "fp32"
#else
#error "define PRECISION_BF16 or PRECISION_FP32 (make PRECISION=BF16|FP32)"
#endif

// 16 bytes of floatX (8 bf16 or 4 fp32): one load or store instruction per thread. Element-wise
// kernels walk activation rows in these: rows (C, D, F, Vp) are multiples of 8 (gpu_check_config)
// and every activation tensor starts on 16 bytes (act_layout's align); parameters need not.
#define X128 (16 / (int)sizeof(floatX))
typedef struct __align__(16) { floatX v[X128]; } x128;
__device__ static inline x128 load128(const floatX* p) { return *(const x128*)p; }
__device__ static inline void store128(floatX* p, x128 x) { *(x128*)p = x; }

// Σ over a warp's lanes; every lane gets it (fixed order, so deterministic)
__device__ static inline float warp_sum(float v) {
    for (int off = 16; off > 0; off /= 2) { v += __shfl_xor_sync(0xffffffff, v, off); }
    return v;
}

// Asynchronous global -> shared copies (sm_80+): a block issues all of a tile's copies, keeps
// computing, and waits only when it needs the data. bytes 16 or 4; src_bytes 0 fills the
// destination with zeros (rows past the end of a sequence). Copies are grouped by commit; a wait
// covers this thread's copies only, so a __syncthreads must follow before others read them.
__device__ static inline void cp_async(void* smem, const void* gmem, int bytes, int src_bytes) {
    uint32_t dst = (uint32_t)__cvta_generic_to_shared(smem);
    if (bytes == 16) {  // src_bytes 0 fills the destination with zeros
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(src_bytes));
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(gmem), "r"(src_bytes));
    }
}
__device__ static inline void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ static inline void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }
__device__ static inline void cp_async_wait_but_last() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

// Σ over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total, in a
// fixed order, so deterministic. REDUCE_THREADS: the block size of the reduction kernels.
#define REDUCE_THREADS 256
__device__ static float block_sum(float v) {
    __shared__ float partial[32];
    v = warp_sum(v);
    if (threadIdx.x % 32 == 0) { partial[threadIdx.x / 32] = v; }
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < (int)(blockDim.x / 32); w++) { total += partial[w]; }
    __syncthreads();
    return total;
}

// ----------------------------------------------------------------------------
// bf16 tensor cores: mma.sync m16n8k16 (fp32 accumulate) and ldmatrix, shared by the attention's v2
// and the recurrence's v3 kernels. Fragments (PTX ISA), lane = 4g + t (g = lane/4, t = lane%4):
//   A (16x16, row-major)  a0 (row g, cols 2t,2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B (16x8, k x n)       b0 (k 2t,2t+1; n g)       b1 (k 2t+8, 2t+9; n g)
//   C (16x8, fp32)        c0 c1 (row g, cols 2t, 2t+1)   c2 c3 (row g+8, cols 2t, 2t+1)
// A register holds two bf16, the lower column in the low half.
typedef __nv_bfloat16 bf16;

__device__ static inline void mma_16816(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ static inline uint32_t lds32(const bf16* p) { return *(const uint32_t*)p; }
__device__ static inline uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t*)&v;
}

// ldmatrix.x4: four 8x8 bf16 matrices, lanes 8q..8q+7 give the row addresses of matrix q; each
// lane gets (row g, cols 2t, 2t+1) of every matrix, or with .trans the same of its transpose
__device__ static inline void ldsm_x4(uint32_t* r, const bf16* p) {
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ static inline void ldsm_x4_t(uint32_t* r, const bf16* p) {
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
// B fragments of the n8 tiles n0 and n0+8 of a row-major [k][n] tile, k rows k0..k0+15: one
// ldmatrix.x4.trans (lanes 0-15 address rows k0.. at column n0, lanes 16-31 the same rows at n0+8)
__device__ static inline void ldsm_b2(uint32_t* r, const bf16* tile, int ld, int k0, int n0) {
    int lane = threadIdx.x % 32;
    ldsm_x4_t(r, tile + (k0 + (lane & 15)) * ld + n0 + (lane >> 4) * 8);
}

// blocks of `threads` threads that cover n elements, one thread each
static int blocks_for(size_t n, int threads) { return (int)((n + threads - 1) / threads); }

#endif // CUDA_COMMON_CUH
