"""GPU readiness check (run by gpu_check.sh; at most a few minutes on any CUDA GPU).

1. FlexAttention (BlockMask from the SCAM rule) equals dense-mask SDPA, forward and backward, on a
   random packed text/image/video batch; their speed at ~4k tokens.
2. bf16 train-step MFU at the B preset (forward, loss, backward, AdamW), against the GPU's bf16
   matmul peak measured in the same run.
3. KV-cached sampling time (4 blocks x 25 DPM-Solver++ steps, CFG 1.5).

Writes benchmarks/results/gpu_check.json. Without a GPU it writes {"skipped": ...} and exits 0.
"""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import count_flops, save  # noqa: E402


def cuda_time(fn, repeats: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA GPU: gpu_check skipped")
        save("gpu_check", {"skipped": "no CUDA GPU"})
        return
    from unimodal.batch import Example, collate
    from unimodal.diffusion import NoiseSchedule, compute_loss
    from unimodal.generate import Generator, VisualSampling
    from unimodal.layout import Image, Layout, Text, Video
    from unimodal.model import create_model

    dev, out = torch.device("cuda"), {}
    mat = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    peak = 2 * 8192**3 / cuda_time(lambda: mat @ mat)
    out["bf16_matmul_peak_flops_per_s"] = peak
    mat = None

    # 1. flex == dense SDPA (fp32 outputs and gradients), then speed at ~4k tokens
    g = torch.Generator().manual_seed(0)

    def batch(rows, C, reps):
        exs = []
        for r in range(rows):
            docs = []
            for _ in range(reps):
                for lay in (Layout([Text([1, 2, 3]), Image(8, 8, 4, 4), Text([4, 5])]), Layout([Video(4, 4, 4, 2)])):
                    docs.append(Example(lay, torch.randn(lay.num_visual_tokens, C, generator=g), r % 10))
            exs.append(docs)
        b = collate(exs, C).to(dev)
        b.t = torch.randint(0, 1000, b.t.shape, device=dev)
        return b

    C = 16
    small = batch(2, C, 2)
    res = {}
    for backend in ("sdpa", "flex"):
        torch.manual_seed(0)
        m = create_model("tiny", token_dim=C, vocab_size=64, num_classes=10, attn_backend=backend).to(dev)
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.05)
        o = m(small)
        loss = (o.pred ** 2).sum() + (o.text_logits ** 2).sum()
        loss.backward()
        res[backend] = (o.pred.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    eps_err = (res["flex"][0] - res["sdpa"][0]).abs().max().item()
    grad_err = max((res["flex"][1][n] - res["sdpa"][1][n]).abs().max().item() for n in res["sdpa"][1])
    out["flex_vs_sdpa"] = {"eps_max_abs_diff": eps_err, "grad_max_abs_diff": grad_err, "ok": eps_err < 1e-3 and grad_err < 1e-2}
    print(f"flex vs dense SDPA: eps {eps_err:.2e}, grads {grad_err:.2e}", flush=True)
    big = batch(1, C, 16)  # ~4k tokens in one row
    speed = {"tokens": int(big.unit.shape[1])}
    for backend in ("sdpa", "flex"):
        m = create_model("B", token_dim=C, vocab_size=64, num_classes=10, attn_backend=backend).to(dev).set_precision("bf16")

        def fb():
            o = m(big)
            ((o.pred ** 2).sum() + (o.text_logits ** 2).sum()).backward()

        speed[f"{backend}_fwd_bwd_s"] = cuda_time(fb, repeats=3)
    out["speed_4k"] = speed
    print(f"4k tokens fwd+bwd (B, bf16): {speed}", flush=True)

    # 2. bf16 train-step MFU at B
    m = create_model("B", token_dim=C, vocab_size=0, num_classes=10).to(dev).set_precision("bf16")
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
    lay = Layout([Image(16, 16, 8, 8)])
    tb = collate([Example(lay, torch.randn(256, C, generator=g), i % 10) for i in range(64)], C).to(dev)
    sched = NoiseSchedule()

    def step():
        loss = compute_loss(m, tb, sched)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = cuda_time(step, repeats=5)
    flops = count_flops(lambda: compute_loss(m, tb, sched, prune=False)["loss"].backward())
    out["train_B_bf16"] = {"batch": 64, "tokens_per_row": 512, "step_s": t, "model_flops": flops, "mfu": flops / t / peak}
    print(f"B bf16 train step {t:.3f}s, MFU {flops / t / peak:.0%}", flush=True)

    # 3. cached sampling
    m.eval()

    def sample(compile: bool = False):
        return Generator(m, 8, seed=0, compile=compile).generate_visual(
            Image(16, 16, 8, 8), VisualSampling("dpm++", 25, cfg_scale=1.5), class_labels=torch.arange(8))

    out["sampling_B_bf16_s"] = cuda_time(sample, repeats=2, warmup=1)
    print(f"B bf16 cached sampling (8 images, 4 blocks x 25 steps, CFG 1.5): {out['sampling_B_bf16_s']:.2f}s")
    # the same with each denoising step one static-shape compiled graph (BlockStep); the warm-up call compiles
    out["sampling_B_bf16_compiled_s"] = cuda_time(lambda: sample(True), repeats=2, warmup=1)
    print(f"B bf16 cached sampling, compiled steps: {out['sampling_B_bf16_compiled_s']:.2f}s")
    save("gpu_check", out)


if __name__ == "__main__":
    main()
