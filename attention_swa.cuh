/*
attention_swa.cuh — sliding-window causal attention: query i sees keys j with i-W < j <= i.

defines: swa_forward_gpu, swa_backward_gpu

The kernels are full_attn.cuh's: they take the window and visit only the tiles inside the band
(attn_key_range / attn_query_range), so a query tile reads at most ceil((W + TILE - 1)/TILE) + 1 key
tiles and the work grows with T·W, not T². With W >= T the band covers every causal tile and the
result equals full attention. The file stays thin on purpose: the band is full_attn.cuh's own tile
loop, so SWA needs no kernels of its own; this is its entry point and the check of W.
*/
#ifndef ATTENTION_SWA_CUH
#define ATTENTION_SWA_CUH

#include "full_attn.cuh"

// out (B,T,C), lse (B,T,H) from qkvr (B,T,3C), window W >= 1
static void swa_forward_gpu(floatX* out, float* lse, const floatX* qkvr, int B, int T, int C, int H, int window,
                            cudaStream_t stream) {
    if (window < 1) { die("sliding-window attention: window %d, expected >= 1", window); }
    attention_forward_gpu(out, lse, qkvr, B, T, C, H, window, stream);
}

// dqkvr (B,T,3C) from dout (B,T,C); delta (B,T,H) is scratch
static void swa_backward_gpu(floatX* dqkvr, float* delta, const floatX* dout, const floatX* out, const float* lse,
                             const floatX* qkvr, int B, int T, int C, int H, int window, cudaStream_t stream) {
    if (window < 1) { die("sliding-window attention: window %d, expected >= 1", window); }
    attention_backward_gpu(dqkvr, delta, dout, out, lse, qkvr, B, T, C, H, window, stream);
}

#endif // ATTENTION_SWA_CUH
