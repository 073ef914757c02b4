/*
kernels/matmul.cuh — matmuls on cuBLAS (row-major views of column-major GEMMs).
Math and layouts as in hybrid_cpu.h; each kernel's launcher follows it.
defines: gemm, matmul_forward(_ld)_gpu, matmul_backward(_ld)_gpu
*/
#ifndef KERNELS_MATMUL_CUH
#define KERNELS_MATMUL_CUH

#include "gpu_context.cuh"  // defines: GpuContext, OUT_WRITE/OUT_ADD, WARPS_PER_BLOCK (and cuda_common.cuh)

// Matmuls on cuBLAS. Row-major (N, IC) · (OC, IC)ᵀ is, read column-major, W(IC,OC)ᵀ · X(IC,N).
// Inputs are floatX, accumulation fp32; the FP32 build asks for pedantic fp32 (no TF32), so it can
// be diffed against the CPU reference. Weight gradients are fp32 in every build.

#if defined(PRECISION_BF16)
#define CUDA_R_X CUDA_R_16BF
#define BLAS_COMPUTE CUBLAS_COMPUTE_32F
#else
#define CUDA_R_X CUDA_R_32F
#define BLAS_COMPUTE CUBLAS_COMPUTE_32F_PEDANTIC
#endif

// column-major C (m,n) = op(A) op(B) + beta C, A and B floatX, C of type ctype
static void gemm(const GpuContext* g, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const floatX* A,
                 int lda, const floatX* B, int ldb, float beta, void* Cm, cudaDataType ctype, int ldc) {
    float one = 1.0f;
    cublasCheck(cublasGemmEx(g->blas, ta, tb, m, n, k, &one, A, CUDA_R_X, lda, B, CUDA_R_X, ldb, &beta, Cm, ctype, ldc,
                             BLAS_COMPUTE, CUBLAS_GEMM_DEFAULT));
}

// out (N,OC) = inp (N,IC) · w (OC,IC)ᵀ, plus the old out with OUT_ADD (the residual add); out rows
// ldo apart (ldo ≥ OC: the R layer's input projection, padded rows)
static void matmul_forward_ld_gpu(const GpuContext* g, floatX* out, int ldo, const floatX* inp, const floatX* w, int N,
                                  int IC, int OC, int out_mode) {
    gemm(g, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, w, IC, inp, IC, out_mode == OUT_ADD ? 1.0f : 0.0f, out, CUDA_R_X, ldo);
}
static void matmul_forward_gpu(const GpuContext* g, floatX* out, const floatX* inp, const floatX* w, int N, int IC,
                               int OC, int out_mode) {
    matmul_forward_ld_gpu(g, out, OC, inp, w, N, IC, OC, out_mode);
}
// dinp (N,IC) = (or += with OUT_ADD) dout (N,OC) · w;  dw (OC,IC) += doutᵀ · inp (fp32); dout rows ldo apart
static void matmul_backward_ld_gpu(const GpuContext* g, floatX* dinp, float* dw, const floatX* dout, int ldo,
                                   const floatX* inp, const floatX* w, int N, int IC, int OC, int dinp_mode) {
    float beta = dinp_mode == OUT_ADD ? 1.0f : 0.0f;
    gemm(g, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, w, IC, dout, ldo, beta, dinp, CUDA_R_X, IC);
    gemm(g, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, inp, IC, dout, ldo, 1.0f, dw, CUDA_R_32F, IC);
}
static void matmul_backward_gpu(const GpuContext* g, floatX* dinp, float* dw, const floatX* dout, const floatX* inp,
                                const floatX* w, int N, int IC, int OC, int dinp_mode) {
    matmul_backward_ld_gpu(g, dinp, dw, dout, OC, inp, w, N, IC, OC, dinp_mode);
}

#endif // KERNELS_MATMUL_CUH
