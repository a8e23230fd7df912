"""Long-horizon video: memory and time per block when generating 1×, 2× and 4× the trained length.

The sliding window keeps the last `window` blocks (default: trained blocks − 1),
re-encoded at the trained positions when it slides (Generator.stream_visual,
`window`). For contrast, the 4× run is repeated without a window (the cache and
the positions grow with the video).

Per block it records: KV-cache size in tokens and bytes (exact), process RSS
(/proc/self/statm; includes allocator caching, so noisy), the peak of
torch.cuda.max_memory_allocated on CUDA, and wall time. Writes
benchmarks/results/long_video.json.

    python benchmarks/long_video.py                      # tiny model, CPU, a minute or so
    python benchmarks/long_video.py --preset B --device cuda --steps 25
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from unimodal.generate import BlockEvent, Generator, VisualSampling
from unimodal.layout import Video
from unimodal.model import create_model


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux
        return float("nan")


def cache_size(gen: Generator) -> tuple[int, int]:
    """(tokens, bytes) held by the main context's KV cache."""
    c = gen.ctx.cache
    if c is None or len(c) == 0:
        return 0, 0
    return len(c), sum(t.nbytes for t in [*c.k, *c.v] if t is not None)


def run(model, args, frames: int, window: int | None) -> dict:
    seg = Video(frames, args.grid, args.grid, args.frames_per_block)
    gen = Generator(model, args.batch, seed=0)
    labels = torch.arange(args.batch) % model.cfg.num_classes
    sampling = VisualSampling("dpm++", args.steps, args.cfg)
    rows, t0 = [], time.perf_counter()
    cuda = model.x_embedder.weight.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    stream = gen.stream_visual(seg, sampling, class_labels=labels.to(model.x_embedder.weight.device), window=window,
                               collect=False)
    for ev in stream:
        if not isinstance(ev, BlockEvent):
            continue
        tokens, nbytes = cache_size(gen)
        row = {"block": ev.index, "frames_done": (ev.index + 1) * args.frames_per_block, "cache_tokens": tokens,
               "cache_mb": round(nbytes / 2**20, 4), "rss_mb": round(rss_mb(), 1),
               "seconds": round(time.perf_counter() - t0, 4)}
        if cuda:
            row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 2)
            torch.cuda.reset_peak_memory_stats()
        rows.append(row)
        t0 = time.perf_counter()
    return {
        "frames": frames, "window_blocks": window, "blocks": len(rows),
        "max_cache_tokens": max(r["cache_tokens"] for r in rows),
        "max_cache_mb": max(r["cache_mb"] for r in rows),
        "rss_mb_first_last": [rows[0]["rss_mb"], rows[-1]["rss_mb"]],
        "mean_seconds_per_block": round(sum(r["seconds"] for r in rows) / len(rows), 4),
        **({"max_cuda_peak_mb": max(r["cuda_peak_mb"] for r in rows)} if cuda else {}),
        "per_block": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--grid", type=int, default=8, help="tokens per frame side")
    p.add_argument("--trained-frames", type=int, default=16)
    p.add_argument("--frames-per-block", type=int, default=2)
    p.add_argument("--window", type=int, default=None, help="blocks kept (default trained blocks - 1)")
    p.add_argument("--steps", type=int, default=5, help="sampler steps per block (paper: 25)")
    p.add_argument("--cfg", type=float, default=2.5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "long_video.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    model = create_model(args.preset, token_dim=16, vocab_size=0, num_classes=10).to(args.device).eval()
    trained_blocks = args.trained_frames // args.frames_per_block
    window = args.window or max(1, trained_blocks - 1)
    runs = [run(model, args, k * args.trained_frames, window) for k in (1, 2, 4)]
    runs.append(run(model, args, 4 * args.trained_frames, None))  # contrast: no window
    result = {
        "benchmark": "long_video", "preset": args.preset, "device": args.device, "torch": torch.__version__,
        "machine": platform.machine(), "threads": torch.get_num_threads(),
        "tokens_per_block": args.grid**2 * args.frames_per_block, "trained_frames": args.trained_frames,
        "frames_per_block": args.frames_per_block, "steps": args.steps, "cfg": args.cfg, "batch": args.batch,
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{'frames':>7} {'window':>7} {'max cache tok':>14} {'max cache MB':>13} {'RSS first→last MB':>19} {'s/block':>8}")
    for r in runs:
        rss = f"{r['rss_mb_first_last'][0]:.0f}→{r['rss_mb_first_last'][1]:.0f}"
        print(f"{r['frames']:7d} {str(r['window_blocks']):>7} {r['max_cache_tokens']:14d} {r['max_cache_mb']:13.3f} "
              f"{rss:>19} {r['mean_seconds_per_block']:8.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
