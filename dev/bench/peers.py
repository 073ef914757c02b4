"""
peers.py — the PyTorch peers of bench_step, measured on this GPU: the same kernels and the same
gpt2s training steps in PyTorch, written to a JSON file that `bench_step -p` reads to print each
peer and the ratio beside our row. Runs on a GPU machine with PyTorch (2.5 or newer, for
FlexAttention); the trainer never needs it.

    python3 dev/bench/peers.py                          # -> dev/bench/peers.json
    python3 dev/bench/peers.py --fla PATH                # also fla's Gated DeltaNet / gla and RRRF
    python3 dev/bench/peers.py --fla PATH --kernels-only --recurrence-only   # fla's kernels alone
    python3 dev/bench/peers.py --fla PATH --steps-only                        # the torch.compile steps alone
    ./dev/bench/bench_step -p dev/bench/peers.json       # our rows beside these

PATH is a source tree of flash-linear-attention (fla), e.g.
    git clone https://github.com/fla-org/flash-linear-attention    # PATH = flash-linear-attention
Measured (B 8, T 4096, bf16, forward + backward; median of --reps after warm-up, CUDA events):
  attention full     SDPA causal (H 12, D 64), its forward alone; and at D 128 (H 6)
  SWA W 64/512/2048  FlexAttention with a compiled sliding-window block mask
  Gated DeltaNet     fla chunk_gated_delta_rule (H 12, D 64; and D 128, H 6)   [--fla]
  gla                fla chunk_simple_gla (scalar decay)                        [--fla]
  steps F, SSSF      torch.compile of the gpt2s model (V 50304 tied, C 768, L 12, H 12, SwiGLU 2048,
                     RMSNorm, RoPE; SDPA for F layers, FlexAttention W 512 for S layers), AdamW
  step RRRF          the same with fla's GatedDeltaNet layers for R                [--fla]
fla refuses its gated backward on Hopper with Triton 3.4-3.7.0 because it computes wrong results
there (fla issue 640); --fla lifts that guard, so those times are speed figures only.
"""
import argparse
import json
import os
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

B, T = 8, 4096


def timed(fn, reps, warmup=3):
    """median ms of fn() over reps calls, CUDA events, after warmup calls"""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        torch.cuda.synchronize()
        ms.append(e0.elapsed_time(e1))
    return statistics.median(ms)


def fwd_bwd(f, inputs, dout):
    """a closure running f forward and backward (gradients of every input)"""
    def run():
        out = f(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        torch.autograd.backward(out, dout)
    return run


def rand(*shape):
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)


def sliding_window_mask(window):
    from torch.nn.attention.flex_attention import create_block_mask
    def band(b, h, q, k):
        return (k <= q) & (q - k < window)
    return create_block_mask(band, None, None, T, T, device="cuda")


def bench_kernels(args, fla, out, save):
    """fills out[name] = {"ms", "fwd_ms", "peer"}; save() after each, so a run cut short keeps them"""
    if not args.recurrence_only:
        bench_attention(args, out, save)
    if fla is not None:
        bench_recurrence(args, out, save)


def bench_attention(args, out, save):
    from torch.nn.attention.flex_attention import flex_attention
    for H, D, name in ((12, 64, "attention full"), (6, 128, "attention full D128")):
        q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
        dout = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
        sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        total = timed(fwd_bwd(sdpa, (q, k, v), dout), args.reps)
        with torch.no_grad():
            fwd = timed(lambda: sdpa(q, k, v), args.reps)
        out[name] = {"ms": total, "fwd_ms": fwd, "peer": "SDPA"}
        print(f"{name:22s} SDPA          {total:7.3f} ms (forward {fwd:.3f})", flush=True)
        save()
    flex = torch.compile(flex_attention)
    q, k, v = rand(B, 12, T, 64), rand(B, 12, T, 64), rand(B, 12, T, 64)
    dout = torch.randn(B, 12, T, 64, device="cuda", dtype=torch.bfloat16)
    for w in (64, 512, 2048):
        mask = sliding_window_mask(w)
        total = timed(fwd_bwd(lambda q, k, v: flex(q, k, v, block_mask=mask), (q, k, v), dout), args.reps)
        with torch.no_grad():
            fwd = timed(lambda: flex(q, k, v, block_mask=mask), args.reps)
        out[f"SWA W {w}"] = {"ms": total, "fwd_ms": fwd, "peer": "FlexAttention"}
        print(f"{'SWA W %d' % w:22s} FlexAttention {total:7.3f} ms (forward {fwd:.3f})", flush=True)
        save()


def bench_recurrence(args, out, save):
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    from fla.ops.simple_gla import chunk_simple_gla
    for H, D, name in ((12, 64, "Gated DeltaNet"), (6, 128, "Gated DeltaNet D128"), (12, 64, "gla")):
        # fla's layout (B, T, H, D); q, k L2-normalised; beta in (0,1); g = log alpha in (-0.5, 0)
        q = F.normalize(torch.randn(B, T, H, D, device="cuda"), dim=-1).bfloat16().requires_grad_()
        k = F.normalize(torch.randn(B, T, H, D, device="cuda"), dim=-1).bfloat16().requires_grad_()
        v = rand(B, T, H, D)
        g = (-0.5 * torch.rand(B, T, H, device="cuda")).requires_grad_()
        dout = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
        if name == "gla":
            f, inputs = (lambda q, k, v, g: chunk_simple_gla(q, k, v, g=g)), (q, k, v, g)
        else:
            beta = torch.rand(B, T, H, device="cuda").bfloat16().requires_grad_()
            f, inputs = (lambda q, k, v, g, beta: chunk_gated_delta_rule(q, k, v, g, beta)), (q, k, v, g, beta)
        total = timed(fwd_bwd(f, inputs, dout), args.reps)
        with torch.no_grad():
            fwd = timed(lambda: f(*inputs), args.reps)
        out[name] = {"ms": total, "fwd_ms": fwd, "peer": "fla"}
        print(f"{name:22s} fla           {total:7.3f} ms (forward {fwd:.3f})", flush=True)
        save()


# ----------------------------------------------------------------------------
# the gpt2s model, as train_hybrid's (README "The model")

V, VP, C, L, H, FMLP, WINDOW = 50257, 50304, 768, 12, 12, 2048, 512


def rope_tables(D):
    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, device="cuda").float() / D))
    ang = torch.arange(T, device="cuda").float()[:, None] * inv[None, :]
    return torch.cos(ang), torch.sin(ang)  # (T, D/2)


def rope(x, cos, sin):  # x (B, H, T, D), rotate-half
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.qkv = nn.Linear(C, 3 * C, bias=False)
        self.o = nn.Linear(C, C, bias=False)
        self.mask = mask  # None: full causal (SDPA); a block mask: sliding window (FlexAttention)

    def forward(self, x, cos, sin):
        from torch.nn.attention.flex_attention import flex_attention
        q, k, v = self.qkv(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if self.mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = flex_attention(q, k, v, block_mask=self.mask)
        return self.o(y.transpose(1, 2).reshape(B, T, C))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        from fla.layers import GatedDeltaNet
        self.mix = GatedDeltaNet(hidden_size=C, expand_v=1, head_dim=C // H, num_heads=H, mode="chunk")

    def forward(self, x, cos, sin):
        return self.mix(x)[0]


class Block(nn.Module):
    def __init__(self, kind, mask):
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(C, eps=1e-6), nn.RMSNorm(C, eps=1e-6)
        self.mixer = Recurrent() if kind == "R" else Attention(mask if kind == "S" else None)
        self.w1, self.w3 = nn.Linear(C, FMLP, bias=False), nn.Linear(C, FMLP, bias=False)
        self.w2 = nn.Linear(FMLP, C, bias=False)

    def forward(self, x, cos, sin):
        x = x + self.mixer(self.n1(x), cos, sin)
        h = self.n2(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class Model(nn.Module):
    def __init__(self, pattern, mask):
        super().__init__()
        self.wte = nn.Embedding(VP, C)
        self.blocks = nn.ModuleList(Block(pattern[i % len(pattern)], mask) for i in range(L))
        self.norm = nn.RMSNorm(C, eps=1e-6)
        self.cos, self.sin = rope_tables(C // H)

    def forward(self, tokens, targets):
        x = self.wte(tokens)
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        logits = self.norm(x) @ self.wte.weight[:V].t()  # tied, the V real rows
        return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))


def bench_step(pattern, args):
    torch.manual_seed(0)
    mask = sliding_window_mask(WINDOW) if "S" in pattern else None
    model = Model(pattern, mask).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    cmodel = torch.compile(model)
    tokens = torch.randint(0, V, (B, T), device="cuda")
    targets = torch.randint(0, V, (B, T), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = cmodel(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    torch.cuda.reset_peak_memory_stats()
    ms = timed(step, args.steps, warmup=3)  # the first warm-up compiles
    gib = torch.cuda.max_memory_allocated() / 2**30
    del model, opt, cmodel
    torch.cuda.empty_cache()
    return {"ms": ms, "tok_s": B * T / (ms / 1e3), "gib": gib, "peer": "torch.compile"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("-o", "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers.json"))
    ap.add_argument("--fla", default="", help="path of a flash-linear-attention source tree (fla kernels, RRRF)")
    ap.add_argument("--reps", type=int, default=20, help="timed calls per kernel")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per config")
    ap.add_argument("--step", action="append", choices=["F", "SSSF", "RRRF"],
                    help="only this step config (repeatable; default all: each compiles for a minute or two)")
    ap.add_argument("--kernels-only", action="store_true")
    ap.add_argument("--steps-only", action="store_true", help="the training steps alone, no kernel peers")
    ap.add_argument("--recurrence-only", action="store_true", help="of the kernels, only fla's (with --fla)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("peers.py: no CUDA GPU found")
    fla = None
    if args.fla:
        if not os.path.isdir(os.path.join(args.fla, "fla")):
            sys.exit(f"peers.py: --fla {args.fla}: expected a flash-linear-attention source tree (with fla/ in it)")
        sys.path.insert(0, os.path.abspath(args.fla))
        import fla
        import fla.ops.common.chunk_o as chunk_o
        chunk_o.TRITON_ABOVE_3_7_1 = True  # lift the Hopper guard (fla issue 640): a speed figure only
    torch.backends.cuda.matmul.allow_tf32 = True
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "B": B, "T": T, "kernels": {}, "steps": {}}
    save = lambda: write(res, args.out)  # after each measurement, so a run cut short keeps what it has
    if not args.steps_only:
        bench_kernels(args, fla, res["kernels"], save)
    for name in ([] if args.kernels_only else args.step or ["F", "SSSF", "RRRF"]):
        if "R" in name and fla is None:
            print("step RRRF skipped: needs --fla")
            continue
        r = bench_step(name, args)
        res["steps"][name] = r
        print(f"step {name:5s} torch.compile {r['ms']:7.1f} ms  {r['tok_s'] / 1e3:6.1f}k tok/s  {r['gib']:5.1f} GiB", flush=True)
        save()
    print(f"wrote {args.out}")


def write(res, path):
    with open(path, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
