"""Training throughput of the real engine (`unimodal.train.train`, DeepSpeed) for the tiny and S presets, 1 and 2 processes.

Each configuration is a real run: N processes (N = 1, 2) launched with the
variables torchrun sets (RANK, WORLD_SIZE, MASTER_PORT, ...), gloo on CPU,
ZeRO-0, fp32, client AdamW, EMA on, one torch thread per process. The data is a
synthetic pure-image source: 4 blocks of 16 tokens (an 8×8 token grid, blocks
4×4, token_dim 48), clean and noisy streams (128 tokens per row), class labels
— the layout of benchmarks/forward_backward.py.

Per configuration it reports the median optimizer-step time (from the
trainer's own per-step records, which exclude the final checkpoint write),
tokens/s over all ranks (the tokens the trainer counts: non-padding positions
of both streams), the FLOPs of one step — torch's FlopCounterMode on one
forward+backward of the plain model on one rank's batch, times the number of
ranks — and the achieved FLOP/s, next to a plain fp32 n×n matmul on one thread
measured in the same run (before and after the training runs; the machine may
be shared). The tokens/s of the run's metrics.jsonl (one window over all steps)
is kept as a cross-check, and so are each rank's CPU share (process CPU time /
wall time of its train() call) and the 1-minute load average: on a shared
machine a 2-process run that does not scale shows up as a low CPU share.

    python benchmarks/train_throughput.py [--presets tiny,S] [--worlds 1,2] [--batch tiny=32,S=8] [--steps tiny=30,S=10]

S is slow on CPU (seconds per step), hence its smaller default batch and fewer steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

C = 48  # token_dim: 3 channels, 4×4 patches
VISUAL = {"channels": 3, "image_size": 32, "patch_size": 4, "block_h": 4, "block_w": 4}  # 8×8 tokens, 4 blocks of 16
MODEL_OVERRIDES = {"num_classes": 10, "vocab_size": 0}


class ImageBlocks:
    """Pure-image batches (class-conditional, random token values): a function of (step, rank) only."""

    def __init__(self) -> None:
        from unimodal.layout import Image, Layout

        self.layout = Layout([Image(8, 8, 4, 4)])

    def batch(self, step: int, rank: int, world_size: int, batch_size: int):
        from unimodal.batch import Example, collate

        g = torch.Generator().manual_seed(1_000_003 * step + rank)
        rows = [Example(self.layout, torch.randn(64, C, generator=g), (rank * batch_size + i) % 10)
                for i in range(batch_size)]
        return collate(rows, C)


def train_config(preset: str, batch: int, steps: int, out_dir: str):
    from unimodal.train import TrainConfig

    return TrainConfig(
        model=preset, model_overrides=dict(MODEL_OVERRIDES), visual=dict(VISUAL), batch_size=batch, steps=steps,
        lr=1e-4, schedule="constant", warmup_steps=0, ema_decay=0.9999, zero_stage=0, precision="fp32",
        ckpt_every=steps, keep_last=1, log_every=steps, out_dir=out_dir, progress=False, tensorboard=False, seed=0,
    )


# --- one rank of one configuration -------------------------------------------------------------------
def worker(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    torch.set_num_threads(1)
    from unimodal.train import train

    cfg = train_config(spec["preset"], spec["batch"], spec["steps"], spec["out_dir"])
    rank = int(os.environ.get("RANK", "0"))
    t0, c0 = time.perf_counter(), time.process_time()
    res = train(cfg, ImageBlocks())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"train_call_s": wall, "cpu_share": cpu / wall}  # < 1: the rank waited (collectives, or a busy machine)
    if rank == 0:
        log = [json.loads(x) for x in (Path(spec["out_dir"]) / "metrics.jsonl").read_text().splitlines()]
        out.update(history=res.history, metrics=log)
    Path(f"{spec['result']}.rank{rank}").write_text(json.dumps(out))


def launch(spec: dict, world: int, timeout: float) -> dict:
    """Start `world` ranks of this script in worker mode with torchrun's variables; rank 0's result."""
    from unimodal.train.distributed import free_port

    spec_file = Path(spec["out_dir"]).with_suffix(".spec.json")
    spec_file.write_text(json.dumps(spec))
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", str(spec_file)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, log) in enumerate(zip(procs, logs)):
        if p.returncode != 0:
            raise RuntimeError(f"rank {rank} of {spec['preset']} x{world} failed ({p.returncode}):\n{log[-4000:]}")
    ranks = [json.loads(Path(f"{spec['result']}.rank{r}").read_text()) for r in range(world)]
    return {**ranks[0], "cpu_share_per_rank": [r["cpu_share"] for r in ranks]}


def step_flops(preset: str, batch: int) -> tuple[int, float]:
    """FLOPs of forward+backward of the plain model on one rank's batch (FlopCounterMode); its params in M."""
    from common import count_flops

    from unimodal.diffusion import NoiseSchedule, compute_loss
    from unimodal.model import ACDiT

    cfg = train_config(preset, batch, 1, "unused")
    torch.manual_seed(0)
    model = ACDiT(cfg.model_config())
    b = ImageBlocks().batch(0, 0, 1, batch)
    sched, g = NoiseSchedule(), torch.Generator().manual_seed(0)

    def fwd_bwd() -> None:
        compute_loss(model, b, sched, generator=g)["loss"].backward()

    flops = count_flops(fwd_bwd)
    return flops, model.num_params() / 1e6


def parse_map(text: str, presets: list[str], name: str) -> dict[str, int]:
    out = {}
    for item in text.split(","):
        k, sep, v = item.partition("=")
        if not sep:
            out = {p: int(k) for p in presets}
            continue
        out[k.strip()] = int(v)
    missing = [p for p in presets if p not in out]
    if missing:
        raise SystemExit(f"--{name} gives no value for {missing}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,S")
    ap.add_argument("--worlds", default="1,2", help="process counts to run")
    ap.add_argument("--batch", default="tiny=32,S=8", help="per-rank batch per preset (or one number for all)")
    ap.add_argument("--steps", default="tiny=30,S=10", help="optimizer steps per run (or one number for all)")
    ap.add_argument("--skip", type=int, default=2, help="first steps left out of the step-time median (warm-up)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import matmul_flops_per_s, save

    torch.set_num_threads(1)  # the yardstick on one thread, as each rank runs
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    worlds = [int(w) for w in args.worlds.split(",")]
    batches, steps = parse_map(args.batch, presets, "batch"), parse_map(args.steps, presets, "steps")
    yard_before = matmul_flops_per_s()
    print(f"fp32 1024x1024 matmul, 1 thread: {yard_before / 1e9:.1f} GFLOP/s")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="train_throughput_"))
    try:
        for preset in presets:
            flops_rank, params_m = step_flops(preset, batches[preset])
            for world in worlds:
                name = f"{preset}_x{world}"
                spec = {"preset": preset, "batch": batches[preset], "steps": steps[preset],
                        "out_dir": str(tmp / name), "result": str(tmp / f"{name}.result.json")}
                t0, load0 = time.perf_counter(), os.getloadavg()[0]
                res = launch(spec, world, args.timeout)
                launch_s = time.perf_counter() - t0
                timed = res["history"][args.skip:] or res["history"]
                secs = [h["tokens"] / h["tokens_per_s"] for h in timed]
                step_s = statistics.median(secs)
                tokens = timed[0]["tokens"]  # global tokens per optimizer step
                flops = flops_rank * world
                row = {
                    "preset": preset, "params_M": params_m, "processes": world, "threads_per_process": 1,
                    "batch_per_rank": batches[preset], "global_batch": batches[preset] * world, "tokens_per_row": 128,
                    "tokens_per_step": tokens, "steps": steps[preset], "timed_steps": len(timed),
                    "step_s_median": step_s, "step_s_min": min(secs), "step_s_max": max(secs),
                    "tokens_per_s": tokens / step_s,
                    "tokens_per_s_metrics_jsonl": res["metrics"][-1]["tokens_per_s"],
                    "flops_per_step": flops, "achieved_flops_per_s": flops / step_s,
                    "final_loss": res["history"][-1]["loss"],
                    "launch_s": launch_s, "train_call_s": res["train_call_s"],
                    "cpu_share_per_rank": res["cpu_share_per_rank"],
                    "loadavg_1min_before_after": [load0, os.getloadavg()[0]],
                }
                rows.append(row)
                print(f"{preset:5s} x{world}  {params_m:5.1f}M  batch {row['global_batch']:3d}  "
                      f"{step_s * 1e3:8.1f} ms/step  {row['tokens_per_s']:9.0f} tok/s  "
                      f"{row['achieved_flops_per_s'] / 1e9:6.2f} GFLOP/s  "
                      f"({row['achieved_flops_per_s'] / (yard_before * world):.0%} of {world} x matmul)  "
                      f"[metrics.jsonl {row['tokens_per_s_metrics_jsonl']:.0f} tok/s; run {launch_s:.0f} s; "
                      f"cpu share {'/'.join(f'{c:.2f}' for c in row['cpu_share_per_rank'])}; "
                      f"load {row['loadavg_1min_before_after'][0]:.1f}->{row['loadavg_1min_before_after'][1]:.1f}]",
                      flush=True)
                shutil.rmtree(tmp / name, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    yard_after = matmul_flops_per_s()
    print(f"fp32 1024x1024 matmul, 1 thread, after: {yard_after / 1e9:.1f} GFLOP/s")
    for row in rows:
        row["fraction_of_matmul"] = row["achieved_flops_per_s"] / (max(yard_before, yard_after) * row["processes"])
    save("train_throughput", {
        "matmul_flops_per_s": yard_before, "matmul_flops_per_s_after": yard_after,
        "matmul": "fp32 1024x1024, 1 thread (each rank runs on 1 thread; fraction_of_matmul divides by processes x best matmul)",
        "engine": "unimodal.train.train: DeepSpeed ZeRO-0, fp32, gloo, AdamW, EMA on",
        "data": "synthetic pure-image: 8x8 tokens in 4 blocks of 16, token_dim 48, clean+noisy streams (128 tokens/row)",
        "flops": "FlopCounterMode on one forward+backward of the plain model on one rank's batch, x processes",
        "results": rows,
    })


if __name__ == "__main__":
    main()
