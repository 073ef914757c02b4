/*
hopper.cuh — the Hopper (sm_90a) instructions the v3 kernels are built from: the tensor memory
accelerator (TMA) that copies a tile of a tensor into shared memory, the mbarriers a copy completes
on, warpgroup matrix products (wgmma) that read their operands from shared memory (or A from
registers), and setmaxnreg, which moves registers from the copying warps to the computing ones.

defines: tma_map_3d, mbar_init, mbar_expect_tx, mbar_arrive, mbar_arrive_cp_async, mbar_wait, tma_load_3d,
         smem_desc_k, smem_desc_mn, wgmma_ss<N>, wgmma_rs<N>, wg_fence, wg_commit, wg_wait<N>,
         wg_fence_acc<N>, reg_dealloc<R>, reg_alloc<R>, hopper_kernels_built

Shared-memory tiles. A tile of R rows × 64 bf16 (128 bytes a row) is what one TMA box brings in
with the 128-byte swizzle: row r at r·128, its 16-byte chunk c at chunk c ^ (r % 8), the tile on a
1024-byte boundary. A head of D = 64·s columns is s such slabs, slab i at i·R·128 bytes. That same
image is what wgmma reads through a matrix descriptor, in either orientation:
  K-major (the reduced dimension runs along the row): S = Q·Kᵀ reads Q (queries × d) and K
      (keys × d) this way. The k16 slice kk sits at slab kk/4, +32 bytes per slice inside it;
      8-row groups are 1024 bytes apart (SBO).
  MN-major (the reduced dimension runs down the rows): O = P·V reads V (keys × d) as B with
      N = d, K = keys. The k16 slice kk is rows 16kk.. (2048 bytes per slice); 8-row groups 1024
      bytes apart (SBO), 64-column slabs R·128 bytes apart (LBO).
Accumulators of an m64nN product: thread t of the warpgroup (warp w, lane l, g = l/4, c = l%4)
holds d[n][e], n < N/8, at row 16w + g + 8(e/2), column 8n + 2c + e%2 — the layout of mma.sync's
C tiles, so a 64×16 slice of P turned to bf16 pairs is directly wgmma's A-from-registers operand.
*/
#ifndef HOPPER_CUH
#define HOPPER_CUH

#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_bf16.h>
#include "cuda_common.cuh"  // defines: cudaCheck

// wgmma and setmaxnreg exist only in the sm_90a target; other targets compile these to a trap, and
// the launchers never pick the v3 kernels there (hopper_kernels_built).
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define HOPPER_ASM 1
#endif

// ----------------------------------------------------------------------------
// host: tensor maps

// A 3-d tensor map over bf16 `base` viewed as (batch, rows, cols) with row stride `row_stride`
// elements and batch stride `batch_stride` elements; boxes of box_rows × 64 columns, 128-byte
// swizzle. Rows past `rows` (the sequence end) arrive as zeros, so a tile never reads the next batch.
static CUtensorMap tma_map_3d(const void* base, int cols, int rows, int batches, size_t row_stride, size_t batch_stride,
                              int box_rows) {
    static PFN_cuTensorMapEncodeTiled_v12000 encode = NULL;
    if (encode == NULL) {
        cudaDriverEntryPointQueryResult q;
        cudaCheck(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", (void**)&encode, 12000, cudaEnableDefault, &q));
        if (q != cudaDriverEntryPointSuccess || encode == NULL) { die("CUDA driver: cuTensorMapEncodeTiled not found"); }
    }
    CUtensorMap map;
    cuuint64_t dims[3] = {(cuuint64_t)cols, (cuuint64_t)rows, (cuuint64_t)batches};
    cuuint64_t strides[2] = {row_stride * sizeof(__nv_bfloat16), batch_stride * sizeof(__nv_bfloat16)};  // bytes, dims 1 and 2
    cuuint32_t box[3] = {64, (cuuint32_t)box_rows, 1}, elem_strides[3] = {1, 1, 1};
    CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, (void*)base, dims, strides, box, elem_strides,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) { die("cuTensorMapEncodeTiled: error %d (cols %d, rows %d, row stride %zu)", (int)r, cols, rows, row_stride); }
    return map;
}

// ----------------------------------------------------------------------------
// device: mbarriers and TMA

__device__ static inline uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// one thread; a fence and a block barrier must follow before any other thread uses the barrier
__device__ static inline void mbar_init(uint64_t* bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
// one arrival that also raises the phase's expected bytes (the TMA copies that follow lower them)
__device__ static inline void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ static inline void mbar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}
// one arrival, made when this thread's earlier cp.async copies have landed (the thread goes on at
// once; the barrier's count includes these arrivals)
__device__ static inline void mbar_arrive_cp_async(uint64_t* bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_u32(bar)) : "memory");
}
// waits until the barrier's phase of parity `parity` has completed
__device__ static inline void mbar_wait(uint64_t* bar, int parity) {
    asm volatile(
        "{\n .reg .pred done;\n"
        "WAIT_%=:\n"
        " mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        " @!done bra WAIT_%=;\n}" ::"r"(smem_u32(bar)),
        "r"(parity)
        : "memory");
}
// the box at (col, row, batch) of `map` into dst; completes on bar
__device__ static inline void tma_load_3d(void* dst, const CUtensorMap* map, int col, int row, int batch, uint64_t* bar) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(
            smem_u32(dst)),
        "l"(map), "r"(col), "r"(row), "r"(batch), "r"(smem_u32(bar))
        : "memory");
}

// ----------------------------------------------------------------------------
// device: wgmma

// Matrix descriptor of a 128-byte-swizzled shared tile (see the top of the file): start address,
// leading and stride byte offsets, all in 16-byte units, swizzle mode 1 (128 B) in bits 62-63.
__device__ static inline uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)((lbo & 0x3FFFF) >> 4) << 16 | (uint64_t)((sbo & 0x3FFFF) >> 4) << 32 |
           1ull << 62;
}
// K-major slice kk (16 columns of the reduced dimension) of a tile of `rows` rows at smem address a
__device__ static inline uint64_t smem_desc_k(uint32_t a, int rows, int kk) {
    return smem_desc(a + (kk / 4) * rows * 128 + (kk % 4) * 32, 16, 1024);
}
// MN-major slice kk (rows 16kk..16kk+15) of a tile of `rows` rows at smem address a
__device__ static inline uint64_t smem_desc_mn(uint32_t a, int rows, int kk) { return smem_desc(a + kk * 2048, rows * 128, 1024); }

__device__ static inline void wg_fence() {
#ifdef HOPPER_ASM
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}
__device__ static inline void wg_commit() {
#ifdef HOPPER_ASM
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}
// waits until at most N committed groups are still running (groups finish in order)
template <int N>
__device__ static inline void wg_wait() {
#ifdef HOPPER_ASM
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
#endif
}
// keeps the compiler from moving accumulator reads or writes into a product's asynchronous window
template <int N>
__device__ static inline void wg_fence_acc(float (*d)[4]) {
#pragma unroll
    for (int n = 0; n < N / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) { asm volatile("" : "+f"(d[n][e])::"memory"); }
    }
}

#define ACC4(n) "+f"(d[n][0]), "+f"(d[n][1]), "+f"(d[n][2]), "+f"(d[n][3])
#define ACC32 ACC4(0), ACC4(1), ACC4(2), ACC4(3), ACC4(4), ACC4(5), ACC4(6), ACC4(7)
#define ACC64 ACC32, ACC4(8), ACC4(9), ACC4(10), ACC4(11), ACC4(12), ACC4(13), ACC4(14), ACC4(15)
#define REGS32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define REGS64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "          \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
               "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
               "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d (64 × N, fp32) (+)= A · B, one k16 slice, both operands in shared memory, both K-major.
// accumulate 0: d = A·B (d's old value ignored), 1: d += A·B.
template <int N>
__device__ static inline void wgmma_ss(float (*d)[4], uint64_t desc_a, uint64_t desc_b, int accumulate);
template <>
__device__ inline void wgmma_ss<64>(float (*d)[4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
#ifdef HOPPER_ASM
    asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %34, 0;\n"
                 " wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " REGS32 ", %32, %33, p, 1, 1, 0, 0;\n}"
                 : ACC32
                 : "l"(desc_a), "l"(desc_b), "r"(accumulate));
#endif
}
template <>
__device__ inline void wgmma_ss<128>(float (*d)[4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
#ifdef HOPPER_ASM
    asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %66, 0;\n"
                 " wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " REGS64 ", %64, %65, p, 1, 1, 0, 0;\n}"
                 : ACC64
                 : "l"(desc_a), "l"(desc_b), "r"(accumulate));
#endif
}

// d (64 × N, fp32) (+)= A · B, one k16 slice: A from registers (a[4]: this thread's bf16 pairs of
// the 64×16 slice, laid out as the accumulator), B in shared memory MN-major.
template <int N>
__device__ static inline void wgmma_rs(float (*d)[4], const uint32_t* a, uint64_t desc_b, int accumulate);
template <>
__device__ inline void wgmma_rs<64>(float (*d)[4], const uint32_t* a, uint64_t desc_b, int accumulate) {
#ifdef HOPPER_ASM
    asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %37, 0;\n"
                 " wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " REGS32 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}"
                 : ACC32
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));
#endif
}
template <>
__device__ inline void wgmma_rs<128>(float (*d)[4], const uint32_t* a, uint64_t desc_b, int accumulate) {
#ifdef HOPPER_ASM
    asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %69, 0;\n"
                 " wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " REGS64 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}"
                 : ACC64
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));
#endif
}

// setmaxnreg: the copying warpgroup gives registers back, the computing ones take them
template <int R>
__device__ static inline void reg_dealloc() {
#ifdef HOPPER_ASM
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(R));
#endif
}
template <int R>
__device__ static inline void reg_alloc() {
#ifdef HOPPER_ASM
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(R));
#endif
}

// Does this build's device code have the sm_90a instructions, for this GPU? A probe kernel says
// what it was compiled with (a build for another GPU_ARCH, plain sm_90 included, has no wgmma; its
// v3 kernels trap, and the launchers use v2). Run once, at the first call: before any graph capture.
__global__ void hopper_probe_kernel(int* has_asm) {
#ifdef HOPPER_ASM
    *has_asm = 1;
#else
    *has_asm = 0;
#endif
}
static int hopper_kernels_built(void) {
    static int cached = -1;
    if (cached < 0) {
        int dev, *d_flag, flag = 0;
        cudaDeviceProp p;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaGetDeviceProperties(&p, dev));
        if (p.major == 9) {
            cudaCheck(cudaMalloc(&d_flag, sizeof(int)));
            hopper_probe_kernel<<<1, 1>>>(d_flag);
            cudaCheck(cudaGetLastError());
            cudaCheck(cudaMemcpy(&flag, d_flag, sizeof(int), cudaMemcpyDeviceToHost));
            cudaCheck(cudaFree(d_flag));
        }
        cached = flag;
    }
    return cached;
}

#endif // HOPPER_CUH
