"""unimodal against the official ACDiT release at an equal config, side by side in one process.

Both models are built at the same size with the same weights (the release's parameter names are
unimodal's), then timed alternately, release then unimodal, pair after pair, so a busy machine
slows both alike; the report gives each side's median and the median of the per-pair ratios
(release time / unimodal time: above 1 means unimodal is faster).

* train step: forward, diffusion MSE, backward, AdamW step; a class->image batch of `--batch`
  rows, 4 blocks of 4x4 tokens on an 8x8 grid, 16-dim tokens, one t per block.
* sampling: `--images` images x 4 blocks x 25 DPM-Solver++ steps, CFG 1.5, with the KV cache
  (the release's `sample`, unimodal's `Generator`).

Configs: `issue` (hidden 256, depth 6, 4 heads: the release's defaults, 7.4M parameters) and `S`
(hidden 384, depth 12, 6 heads). Precisions: fp32 on both sides, and bf16 (the release under
`torch.autocast("cpu"|"cuda", torch.bfloat16)`, unimodal with `precision="bf16"`, its own
mixed-precision path). In the same run it measures this machine's fp32 and bf16 matmul peaks
(n x n matmuls) and reports the share of them each train step reaches (FLOPs counted by torch's
FlopCounterMode on the release's step: the same model FLOPs for both sides), and, for unimodal,
the cached-vs-recompute sampling speed-up next to its FLOP ideal.

With `--compile` it also times unimodal's train step with `compile: true` (`ACDiT.compile_forward`,
torch.compile/inductor, static shapes) against the same eager release; the one-time compile is
reported apart (`compile_s`), not in the step time. `--compile-sampling` adds compiled sampling
(`Generator(compile=True)`: each denoising step is one static-shape compiled `BlockStep`).

    python benchmarks/vs_official.py --official-src /path/to/ACDiT [--configs issue,S] [--pairs 5] [--compile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import count_flops, save  # noqa: E402
from official_release import load_release  # noqa: E402

CONFIGS = {"issue": dict(hidden=256, depth=6), "S": dict(hidden=384, depth=12)}
TOKEN_DIM, GRID, BLOCK, NUM_CLASSES = 16, 8, 4, 101


def peak_matmul(dtype: torch.dtype, n: int = 1024, repeats: int = 7) -> float:
    """Best achieved FLOP/s of an n x n matmul in `dtype` on this machine now."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def build(rel: Any, name: str, precision: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The release's ACDiT and unimodal's at config `name`, unimodal holding the release's weights."""
    from unimodal.model import create_model

    c = CONFIGS[name]
    torch.manual_seed(0)
    off = rel.ACDiT(patch_size=1, latent_size=TOKEN_DIM, block_size=BLOCK * BLOCK, in_channels=TOKEN_DIM,
                    hidden_size=c["hidden"], depth=c["depth"], num_heads=c["hidden"] // 64, num_classes=NUM_CLASSES,
                    ar_len=(GRID // BLOCK) ** 2, spatial_len=GRID * GRID, temporal_len=1)
    with torch.no_grad():  # non-zero adaLN / final layer, so both compute a real function
        g = torch.Generator().manual_seed(1)
        for n, p in off.named_parameters():
            if "adaLN" in n or "final_layer.linear" in n:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    ours = create_model("tiny", n_layer=c["depth"], d_model=c["hidden"], token_dim=TOKEN_DIM, num_classes=NUM_CLASSES,
                        vocab_size=0, rope_style="acdit", rope_axes=(0, 32, 32), rope_theta=100.0)
    missing, unexpected = ours.load_state_dict(off.state_dict(), strict=False)
    if missing or unexpected:
        raise SystemExit(f"parameter names differ: missing {missing}, unexpected {unexpected}")
    ours.set_precision(precision)
    return off, ours


def autocast(precision: str) -> Any:
    import contextlib

    if precision == "bf16":
        return torch.autocast("cpu", torch.bfloat16)
    return contextlib.nullcontext()


def train_steps(rel: Any, off: torch.nn.Module, ours: torch.nn.Module, batch: int, precision: str):
    """One train step of each side (closures), and the release step's FLOPs."""
    from unimodal.batch import Example, collate
    from unimodal.diffusion import NoiseSchedule, compute_loss
    from unimodal.layout import Image, Layout
    from unimodal.train.config import TrainConfig
    from unimodal.train.engine import adamw

    sched = NoiseSchedule()
    nb, bs = (GRID // BLOCK) ** 2, BLOCK * BLOCK
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, nb, bs, TOKEN_DIM, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    lay = Layout([Image(GRID, GRID, BLOCK, BLOCK)])
    ub = collate([Example(lay, x0[i].reshape(nb * bs, TOKEN_DIM), int(y[i])) for i in range(batch)], TOKEN_DIM)
    opt_o = torch.optim.AdamW(off.parameters(), lr=1e-4)  # the release's train.py
    opt_u = adamw([{"params": list(ours.parameters())}], TrainConfig(lr=1e-4))  # unimodal's trainer: fused AdamW

    def step_off() -> None:
        t = torch.randint(0, 1000, (batch, nb), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        xt = sched.add_noise(x0, noise, t[:, :, None])
        with autocast(precision):
            out = off(x0, xt, t, y)
        loss = (out.float() - noise.reshape(batch, nb * bs, TOKEN_DIM)).pow(2).mean()
        opt_o.zero_grad(set_to_none=True)
        loss.backward()
        opt_o.step()

    def step_ours() -> None:
        loss = compute_loss(ours, ub, sched, generator=g)["loss"]
        opt_u.zero_grad(set_to_none=True)
        loss.backward()
        opt_u.step()

    def fwd_bwd_off() -> None:
        t = torch.randint(0, 1000, (batch, nb), generator=g)
        off(x0, x0, t, y).float().pow(2).mean().backward()

    return step_off, step_ours, count_flops(fwd_bwd_off)


def samplers(rel: Any, off: torch.nn.Module, ours: torch.nn.Module, images: int, precision: str):
    """Cached sampling of each side, and unimodal without the cache (closures)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    from unimodal.generate import Generator, VisualSampling
    from unimodal.layout import Image

    labels = torch.arange(images) % NUM_CLASSES
    nb, bs = (GRID // BLOCK) ** 2, BLOCK * BLOCK
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def sample_off() -> torch.Tensor:
        sched = DPMSolverMultistepScheduler.from_config(DDIMScheduler().config)  # the release's sample_img.py
        with autocast(precision):
            return off.sample(labels, sched, 25, 1.5, (images, nb, bs, TOKEN_DIM),
                              generator=torch.Generator().manual_seed(0), dtype=dtype)

    def sample_ours(cache: bool = True) -> torch.Tensor:
        gen = Generator(ours, images, use_cache=cache, seed=0)
        return gen.generate_visual(Image(GRID, GRID, BLOCK, BLOCK), VisualSampling("dpm++", 25, cfg_scale=1.5),
                                   class_labels=labels)

    return sample_off, sample_ours


def alternate(a: Callable[[], Any], b: Callable[[], Any], pairs: int, warmup: int = 1) -> dict[str, Any]:
    """Time a and b alternately (a, b, a, b, ...): medians and the median per-pair ratio a/b."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(pairs):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    ratios = [x / y for x, y in zip(ta, tb)]
    return {"official_s": statistics.median(ta), "unimodal_s": statistics.median(tb),
            "ratio_median": statistics.median(ratios), "ratios": ratios, "official_all_s": ta, "unimodal_all_s": tb}


def compiled_rows(rel: Any, off: torch.nn.Module, ours: torch.nn.Module, name: str, precision: str, args: Any) -> list[dict]:
    """The train step (and, asked, sampling) of unimodal with `compile: true` against the release, eager.

    The first call compiles (its time is reported as compile_s, apart); the timed pairs follow.
    """
    off.train()
    ours.train()
    step_off, step_ours, _ = train_steps(rel, off, ours, args.batch, precision)
    ours.compile_forward()
    t0 = time.perf_counter()
    step_ours()
    compile_s = time.perf_counter() - t0
    r = alternate(step_off, step_ours, args.pairs)
    rows = [{"config": name, "precision": precision, "what": "train step (compiled)", "batch": args.batch,
             "compile_s": compile_s, **r}]
    print(f"{name:5s} {precision} train step, compiled: official {r['official_s']:.3f}s  unimodal {r['unimodal_s']:.3f}s  "
          f"official/unimodal {r['ratio_median']:.2f}x  (compile {compile_s:.0f}s, once)", flush=True)
    if args.compile_sampling and not args.no_sampling:
        off.eval()
        ours.eval()
        s_off, s_ours = samplers(rel, off, ours, args.images, precision)
        t0 = time.perf_counter()
        s_ours()
        compile_s = time.perf_counter() - t0
        r = alternate(s_off, s_ours, max(1, args.pairs - 2))
        rows.append({"config": name, "precision": precision, "what": "sampling (compiled)", "images": args.images,
                     "compile_s": compile_s, **r})
        print(f"{name:5s} {precision} sampling, compiled: official {r['official_s']:.3f}s  unimodal {r['unimodal_s']:.3f}s  "
              f"official/unimodal {r['ratio_median']:.2f}x  (compile {compile_s:.0f}s, once)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-src", required=True, help="a clone of github.com/thunlp/ACDiT")
    ap.add_argument("--configs", default="issue,S")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--pairs", type=int, default=5, help="alternating timing pairs per measurement")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--no-sampling", action="store_true")
    ap.add_argument("--cache-ideal", action="store_true", help="also time recompute sampling and count FLOPs (issue config)")
    ap.add_argument("--compile", action="store_true",
                    help="also time unimodal's train step with compile: true (ACDiT.compile_forward), compile time apart")
    ap.add_argument("--compile-sampling", action="store_true",
                    help="with --compile, also time compiled sampling (BlockStep: one compile per padded past length)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--name", default="vs_official")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the release prints on import and construction
        rel = load_release(args.official_src)
    peaks0 = {"fp32": peak_matmul(torch.float32), "bf16": peak_matmul(torch.bfloat16)}
    print(f"matmul peaks (1024^3): fp32 {peaks0['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks0['bf16'] / 1e9:.0f} GFLOP/s",
          flush=True)
    rows = []
    for name in args.configs.split(","):
        for precision in args.precisions.split(","):
            with contextlib.redirect_stdout(io.StringIO()):
                off, ours = build(rel, name, precision)
            step_off, step_ours, flops = train_steps(rel, off, ours, args.batch, precision)
            r = alternate(step_off, step_ours, args.pairs)
            row = {"config": name, "precision": precision, "what": "train step", "batch": args.batch,
                   "params": ours.num_params(), "model_flops": flops, **r}
            rows.append(row)
            print(f"{name:5s} {precision} train step: official {r['official_s']:.3f}s  unimodal {r['unimodal_s']:.3f}s  "
                  f"official/unimodal {r['ratio_median']:.2f}x  ({flops / 1e9:.0f} GFLOP)", flush=True)
            if not args.no_sampling:
                off.eval()
                ours.eval()
                s_off, s_ours = samplers(rel, off, ours, args.images, precision)
                r = alternate(s_off, s_ours, max(1, args.pairs - 2))
                row = {"config": name, "precision": precision, "what": "sampling", "images": args.images, **r}
                if args.cache_ideal and name == "issue":
                    f_c, f_r = count_flops(s_ours), count_flops(lambda: s_ours(False))
                    rec = alternate(lambda: s_ours(False), s_ours, 1, warmup=0)
                    row.update(cached_flops=f_c, recompute_flops=f_r, flop_speedup=f_r / f_c,
                               cache_speedup=rec["ratio_median"], cache_share_of_ideal=rec["ratio_median"] / (f_r / f_c))
                rows.append(row)
                print(f"{name:5s} {precision} sampling:   official {r['official_s']:.3f}s  unimodal {r['unimodal_s']:.3f}s  "
                      f"official/unimodal {r['ratio_median']:.2f}x"
                      + (f"  cache {row['cache_speedup']:.2f}x of {row['flop_speedup']:.2f}x ideal"
                         f" ({row['cache_share_of_ideal']:.0%})" if "cache_speedup" in row else ""), flush=True)
            if args.compile:
                rows += compiled_rows(rel, off, ours, name, precision, args)
    peaks1 = {"fp32": peak_matmul(torch.float32), "bf16": peak_matmul(torch.bfloat16)}
    peaks = {k: max(peaks0[k], peaks1[k]) for k in peaks0}
    for row in rows:
        if row["what"] == "train step":
            pk = peaks[row["precision"]]
            row["official_share_of_peak"] = row["model_flops"] / row["official_s"] / pk
            row["unimodal_share_of_peak"] = row["model_flops"] / row["unimodal_s"] / pk
            print(f"{row['config']:5s} {row['precision']} train step share of the {row['precision']} matmul peak: "
                  f"official {row['official_share_of_peak']:.0%}, unimodal {row['unimodal_share_of_peak']:.0%}")
    for name in args.configs.split(","):
        t = {r["precision"]: r for r in rows if r["config"] == name and r["what"] == "train step"}
        if "fp32" in t and "bf16" in t:
            print(f"{name:5s} bf16 speed-up of the train step: unimodal {t['fp32']['unimodal_s'] / t['bf16']['unimodal_s']:.2f}x, "
                  f"official {t['fp32']['official_s'] / t['bf16']['official_s']:.2f}x")
    save(args.name, {
        "peaks_flops_per_s": peaks, "peaks_before": peaks0, "peaks_after": peaks1,
        "loadavg_1min": os.getloadavg()[0], "threads": torch.get_num_threads(),
        "note": "ratio = official seconds / unimodal seconds, median over alternating pairs; model FLOPs = the "
                "release's forward+backward (FlopCounterMode), for both sides",
        "results": rows,
    })


if __name__ == "__main__":
    main()
