"""Prepared-shard loader at 10^4, 10^5 and 10^6 records: peak RSS and samples per second.

Records are synthetic S-preset-sized ImageNet-256 latents: SD-VAE posterior moments
(mean + logvar) of a 32x32x4 latent, float16, 16 KiB a record, plus a class label; the
visual config is `configs/train/imagenet256_*.yaml`'s (patch 1, 1024 tokens, blocks 16x16).
One shard of 10^4 records is written once; larger datasets list that shard's file
hard-linked under more names (10^6 records = 100 links: 16 GB of manifest, 160 MB of disk).
So the RSS and CPU costs are those of the real sizes, but every shard shares one page cache:
disk read speed is not measured (a real 10^6 dataset must come from disk or the page cache).

Each size runs in a fresh process: open the directory (`verify=False`: no SHA-256 pass),
build the class→image mixture in epoch order (`dataset: prepared`), draw `--batches`
batches of `--batch` through `TaskMixture.batch` (the trainer's call: Feistel index,
pread, posterior sample, patchify, layout, collate). Reports peak RSS (VmHWM) after
opening and after the batches, samples per wall second, and samples per CPU second of
the process (what one dedicated core delivers; wall time on a shared machine is noisy).
The loader ratios use the samples per CPU second of the slowest size. The smallest size is
also drawn through `--workers` loader processes (`loader_workers`, `unimodal.train.prefetch`),
in wall samples/s of the training process, and the report gives how many one-core workers
reach 10x the GPU estimate below.

Also measured: random access to one record in an Arrow shard (pread) vs the same records
in parquet (row groups of 1024), the reason shards are Arrow; and what the S preset
consumes (samples/s of a training step), from `benchmarks/results/forward_backward.json`
(CPU, measured) scaled to the 2048-token ImageNet rows, and a stated GPU estimate.

    python benchmarks/data_scale.py [--sizes 10000,100000,1000000] [--batches 20] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, save  # noqa: E402

BASE = 10_000
VISUAL = {"channels": 4, "image_size": 256, "patch_size": 1, "block_h": 16, "block_w": 16, "vae_downsample": 8}
MOMENTS = (8, 32, 32)  # mean and logvar of 4x32x32


def rss_mb() -> float:
    """Peak resident set of this process (VmHWM: unlike ru_maxrss it is not inherited over fork/exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_base(root: Path) -> dict:
    """One shard of BASE synthetic records and its sidecar fields."""
    import pyarrow as pa

    from unimodal.data.prepare import _visual_offsets, file_sha256

    rng = np.random.default_rng(0)
    mean = rng.standard_normal((BASE, 4, 32, 32), dtype=np.float32) * 5
    logvar = np.full((BASE, 4, 32, 32), -8.0, np.float32)
    moments = np.concatenate([mean, logvar], 1).astype(np.float16).reshape(BASE, -1)
    batch = pa.record_batch([pa.array(np.arange(BASE), pa.int64()),
                             pa.FixedSizeListArray.from_arrays(pa.array(moments.reshape(-1)), moments.shape[1]),
                             pa.array(rng.integers(0, 1000, BASE), pa.int64())], names=["position", "moments", "label"])
    shard = root / "base.arrow"
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_batches([batch]), root / "base.parquet", row_group_size=1024)
    return {"records": BASE, "bytes": shard.stat().st_size, "sha256": file_sha256(shard),
            "visual_offsets": _visual_offsets(shard), "schema": {f.name: str(f.type) for f in batch.schema}}


def make_dataset(root: Path, base: dict, n: int) -> Path:
    from unimodal.data.prepare import MANIFEST, SCHEMA_VERSION

    out = root / f"n{n}"
    out.mkdir()
    shards = []
    for k in range(n // BASE):
        name = f"shard-{k:05d}.arrow"
        os.link(root / "base.arrow", out / name)
        shards.append({**base, "file": name, "first_position": k * BASE})
    manifest = {"schema_version": SCHEMA_VERSION, "encoding": "vae_moments", "dtype": "float16", "flip": False,
                "visual": {**VISUAL, "vae_dir": None, "frames": 1, "frames_per_block": 1},
                "vae": {"dir": "synthetic", "fingerprint": "synthetic", "scaling_factor": 0.18215, "shift_factor": 0.0},
                "records": n, "skipped": 0, "shards": shards, "tokenizer": None}
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def child(path: str, batches: int, batch: int, workers: int = 0) -> None:
    """One size: open, draw batches (in-process, or through `workers` loader processes), print JSON."""
    import torch

    torch.set_num_threads(1)
    from unimodal.config import VisualConfig
    from unimodal.data.prepare import PreparedData
    from unimodal.tasks import ImageBank, TaskMixture, get_task_class
    from unimodal.tasks.base import PreparedTokens

    start_rss = rss_mb()
    t0 = time.perf_counter()
    visual = VisualConfig(**VISUAL, vae_dir="synthetic")  # the token grid of the latents (a synthetic VAE: nothing to check)
    data = PreparedData(path, verify=False)
    bank = ImageBank(PreparedTokens(data, visual, "sample"), {c: data.column(c) for c in data.columns}, "synthetic")
    bank.validated = True  # type: ignore[attr-defined]
    task = get_task_class("class_to_image")(visual, None)
    mix = TaskMixture([(task, 1.0, bank)], visual.token_dim, seed=0)
    mix.orders = ["epoch"]
    open_s = time.perf_counter() - t0
    open_rss = rss_mb()
    mix.batch(0, 0, 1, batch)  # warm-up
    source = mix
    if workers:
        from unimodal.train.prefetch import Prefetched, requests_for

        source = Prefetched(mix, requests_for(1, batches + 1, 1, 1, 0, batch), workers)
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(1, batches + 1):
        b = source.batch(step, 0, 1, batch)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if workers:
        source.close()
    print(json.dumps({"records": len(bank), "workers": workers, "open_s": open_s, "rss_start_mb": start_rss, "rss_open_mb": open_rss,
                      "rss_peak_mb": rss_mb(), "samples_per_s": batches * batch / seconds,
                      "samples_per_cpu_s": batches * batch / cpu,
                      "batch_shape": list(b.visual.shape)}))


def random_access(root: Path, base: dict, reads: int = 500) -> dict:
    """Seconds per random record: Arrow pread vs parquet (decode the row group, take one row)."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    idx = rng.integers(0, BASE, reads)
    row = int(np.prod(MOMENTS)) * 2
    fd = os.open(root / "base.arrow", os.O_RDONLY)
    t0 = time.perf_counter()
    for i in idx:
        np.frombuffer(os.pread(fd, row, base["visual_offsets"]["moments"] + int(i) * row), np.float16)
    arrow_s = (time.perf_counter() - t0) / reads
    os.close(fd)
    pf = pq.ParquetFile(root / "base.parquet")
    t0 = time.perf_counter()
    for i in idx[:100]:
        g = int(i) // 1024
        pf.read_row_group(g, columns=["moments"]).column(0)[int(i) - g * 1024].values.to_numpy()
    parquet_s = (time.perf_counter() - t0) / 100
    return {"arrow_pread_s_per_record": arrow_s, "parquet_s_per_record": parquet_s, "ratio": parquet_s / arrow_s}


def consumption() -> dict:
    """Samples/s an S-preset training step consumes on ImageNet-256 rows (clean + noisy: 2048 tokens)."""
    fb = json.loads((RESULTS / "forward_backward.json").read_text())
    s = next(r for r in fb["results"] if r["preset"] == "S")
    flops_per_sample = s["flops_per_step"] / s["batch"] * (2048 / s["tokens_per_row"])  # linear in tokens (attention is a few %)
    cpu = s["achieved_flops_per_s"] / flops_per_sample
    gpu_flops = 989e12 * 0.4  # H100/H200 dense bf16 peak at 40% utilisation: a generous estimate for a 33M model
    return {"flops_per_sample": flops_per_sample, "cpu_measured_samples_per_s": cpu,
            "gpu_estimate_samples_per_s": gpu_flops / flops_per_sample,
            "gpu_assumption": "989 TFLOP/s dense bf16 (H100/H200) at 40% utilisation"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="also time the smallest size through this many loader workers")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.batches, args.batch, args.child_workers)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="data_scale-") as tmp:
        root = Path(tmp)
        base = write_base(root)
        access = random_access(root, base)
        sizes = [int(s) for s in args.sizes.split(",")]
        paths = {n: make_dataset(root, base, n) for n in sizes}
        runs = [(n, 0) for n in sizes] + ([(sizes[0], args.workers)] if args.workers else [])
        for n, w in runs:
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, __file__, "--child", str(paths[n]), "--batches", str(args.batches),
                                  "--batch", str(args.batch), "--child-workers", str(w)], capture_output=True, text=True, env=env)
            if out.returncode:
                raise SystemExit(f"size {n} failed:\n{out.stderr}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    need = consumption()
    single = [r for r in rows if not r["workers"]]
    pooled = [r for r in rows if r["workers"]]
    worst = min(r["samples_per_cpu_s"] for r in single)  # per CPU second: what one dedicated core delivers
    import math

    cores_for_10x = math.ceil(10 * need["gpu_estimate_samples_per_s"] / worst)
    save("data_scale", {
        "what": "prepared-shard loader (TaskMixture.batch over dataset: prepared, epoch order), one process, one thread",
        "record": "float16 VAE moments 8x32x32 (16 KiB) + int64 label; tokens 1024 x 4 after patchify (patch 1)",
        "note": "sizes above 10^4 hard-link one 10^4-record shard: RSS and CPU are real, disk reads are not measured",
        "batch": args.batch, "batches": args.batches, "results": single, "random_access": access,
        "with_loader_workers": pooled,
        "workers_note": "loader_workers=N (unimodal.train.prefetch): N processes compute the coming batches; wall "
                        "samples/s of the training process, on this 2-core machine (the workers share its cores)",
        "s_preset_consumption": need,
        "loader_over_cpu_step": worst / need["cpu_measured_samples_per_s"],
        "loader_over_gpu_estimate": worst / need["gpu_estimate_samples_per_s"],
        "loader_workers_for_10x_gpu_estimate": cores_for_10x,
        "rss_growth_mb_1e4_to_largest": single[-1]["rss_peak_mb"] - single[0]["rss_peak_mb"],
    })
    print(f"one core: {worst:.0f} samples/s = {worst / need['gpu_estimate_samples_per_s']:.2f}x the GPU estimate; "
          f"loader_workers={cores_for_10x} (one core each) reach 10x", flush=True)


if __name__ == "__main__":
    main()
