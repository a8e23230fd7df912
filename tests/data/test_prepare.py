"""`unimodal data prepare`: shards equal the in-memory path, a kill -9 resumes to identical shards, every bad case errors,
and training reads the shards by global sample index (epoch order, exact and elastic resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from unimodal.cli import main
from unimodal.config import VisualConfig
from unimodal.data import load_dataset
from unimodal.data.prepare import MANIFEST, PreparedData, prepare
from unimodal.errors import DataError, MissingFileError
from unimodal.tasks import build_image_bank, build_mixture
from unimodal.tasks.mixture import load_bank, permuted_index

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
PIXELS = {"channels": 3, "image_size": 16, "patch_size": 8, "block_h": 1, "block_w": 1}


def write_folder(root: Path, n: int = 10) -> Path:
    """An image folder of two classes with images of mixed sizes, plus captions in a JSONL file."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        size = (16, 16) if i % 2 else (24, 18)
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"img/{i}.png", "caption": f"picture {i}", "label": i % 2}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root


def spec(root: Path, visual: dict | None = None) -> dict:
    return {"dataset": "files", "split": "train", "options": {"path": str(root)}, "visual": visual or PIXELS}


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=8, sample_size=16, scaling_factor=0.18215)
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


def latent_visual(vae_dir: Path) -> dict:
    return {"channels": 4, "image_size": 16, "patch_size": 2, "block_h": 2, "block_w": 2, "vae_dir": str(vae_dir),
            "vae_downsample": 2}


def test_pixel_shards_equal_the_in_memory_bank_and_read_as_hf_datasets(tmp_path: Path) -> None:
    import datasets

    root = write_folder(tmp_path / "src")
    prepare(spec(root), tmp_path / "prep", shard_size=4)
    m = json.loads((tmp_path / "prep" / MANIFEST).read_text())
    assert m["schema_version"] == 1 and m["records"] == 10 and [s["records"] for s in m["shards"]] == [4, 4, 2]
    assert all(len(s["sha256"]) == 64 for s in m["shards"]) and m["visual_fingerprint"] and m["source_fingerprint"]
    v = VisualConfig(**PIXELS)
    bank = load_bank("prepared", "train", v, {"path": str(tmp_path / "prep")})
    memory = build_image_bank(load_dataset("files", "train", path=str(root)), v)
    assert torch.equal(bank.tokens[list(range(10))], memory.tokens)  # bit-identical pixel tokens
    assert [bank.columns["caption"][i] for i in range(10)] == memory.columns["caption"]
    assert [bank.columns["label"][i] for i in range(10)] == memory.columns["label"]
    shard = datasets.Dataset.from_file(str(tmp_path / "prep" / "shard-00001.arrow"))
    assert shard["position"] == [4, 5, 6, 7] and shard.column_names == ["position", "pixels", "label", "caption"]


def test_vae_moments_give_the_in_memory_latents_and_a_seeded_posterior_sample(tmp_path: Path, vae_dir: Path,
                                                                              monkeypatch) -> None:
    monkeypatch.setenv("UNIMODAL_CACHE", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "src", n=6)
    tok_dir = tmp_path / "tok"
    from unimodal.tokenizers import TextTokenizer

    tok = TextTokenizer.train([f"picture {i}" for i in range(50)], vocab_size=280, out_dir=tok_dir)
    visual = latent_visual(vae_dir)
    prepare(spec(root, visual), tmp_path / "prep", shard_size=4, dtype="float32", flip=True, tokenizer=tok_dir)
    v = VisualConfig(**visual)
    memory = build_image_bank(load_dataset("files", "train", path=str(root)), v)
    mean = load_bank("prepared", "train", v, {"path": str(tmp_path / "prep"), "posterior": "mean"})
    torch.testing.assert_close(mean.tokens[list(range(6))], memory.tokens, rtol=1e-5, atol=1e-6)
    sample = load_bank("prepared", "train", v, {"path": str(tmp_path / "prep"), "flip": True})
    a, b = sample.tokens.row(2, (0, 5, 0, 1)), sample.tokens.row(2, (0, 5, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, mean.tokens[2])  # a seeded posterior draw
    data = PreparedData(tmp_path / "prep")
    assert data.manifest["tokenizer"]["vocab_size"] == tok.vocab_size and data.manifest["flip"]
    assert data.table(0).column("caption_ids")[1].as_py() == tok.encode("picture 1")
    # fp16 moments: half the bytes, the same tokens to fp16 precision
    prepare(spec(root, visual), tmp_path / "half", shard_size=4)
    half = load_bank("prepared", "train", v, {"path": str(tmp_path / "half"), "posterior": "mean"})
    torch.testing.assert_close(half.tokens[list(range(6))], memory.tokens, rtol=2e-3, atol=2e-3)


KILLED = """
import sys, time
import unimodal.data.prepare as p
real = p._write_shard
def slow(*a, **k):
    meta = real(*a, **k)
    time.sleep(0.4)
    return meta
p._write_shard = slow
p.prepare({spec!r}, {out!r}, shard_size=3)
"""


def test_kill_9_during_prepare_resumes_to_identical_shards(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "src", n=14)
    prepare(spec(root), tmp_path / "clean", shard_size=3)
    out = tmp_path / "killed"
    script = textwrap.dedent(KILLED.format(spec=spec(root), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 60
    while not (out / "shard-00001.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "prepare ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / MANIFEST).exists()
    with pytest.raises(MissingFileError, match="the prepare has not finished; run it again"):
        PreparedData(out)
    prepare(spec(root), out, shard_size=3)
    clean, resumed = (json.loads((d / MANIFEST).read_text()) for d in (tmp_path / "clean", out))
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in clean["shards"]]
    assert resumed["records"] == 14 and sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    positions = [p for k in range(5) for p in PreparedData(out).table(k).column("position").to_pylist()]
    assert positions == list(range(14))  # no duplicate, no missing record


def test_every_bad_prepared_case_names_the_shard_or_field(tmp_path: Path, vae_dir: Path) -> None:
    root = write_folder(tmp_path / "src", n=6)
    out = tmp_path / "prep"
    prepare(spec(root), out, shard_size=4)
    v = VisualConfig(**PIXELS)
    shard = out / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"shard shard-00001.arrow is corrupted"):
        PreparedData(out, v)
    shard.unlink()
    with pytest.raises(MissingFileError, match=r"shard shard-00001.arrow is missing"):
        PreparedData(out, v)
    prepare(spec(root), out, shard_size=4)  # a re-run rewrites the missing shard
    PreparedData(out, v)
    with pytest.raises(DataError, match=r"visual.image_size is 32 but the shards were prepared with 16"):
        PreparedData(out, VisualConfig(**{**PIXELS, "image_size": 32}))
    with pytest.raises(DataError, match=r"visual.vae_dir is set but the shards hold pixels"):
        PreparedData(out, VisualConfig(**latent_visual(vae_dir)))
    m = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**m, "schema_version": 99}))
    with pytest.raises(DataError, match=r"schema_version 99, this unimodal reads 1"):
        PreparedData(out, v)
    with pytest.raises(DataError, match=r"holds a prepare with a different visual_fingerprint"):
        prepare(spec(root, {**PIXELS, "image_size": 32, "patch_size": 16}), out, shard_size=4)
    # a VAE with other weights than the one the shards were made with
    visual = latent_visual(vae_dir)
    prepare(spec(root, visual), tmp_path / "lat", shard_size=4)
    from diffusers import AutoencoderKL

    other = tmp_path / "vae2"
    vae = AutoencoderKL.from_pretrained(vae_dir)
    with torch.no_grad():
        next(vae.parameters()).add_(1.0)
    vae.save_pretrained(other)
    with pytest.raises(DataError, match=r"vae fingerprint differs"):
        PreparedData(tmp_path / "lat", VisualConfig(**{**visual, "vae_dir": str(other)}))


def test_training_reads_shards_by_global_index_in_epoch_order(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "src", n=10)
    prepare(spec(root), tmp_path / "prep", shard_size=4)
    v = VisualConfig(**PIXELS)
    tasks = [{"name": "class_to_image", "dataset": "prepared", "options": {"path": str(tmp_path / "prep")}}]
    mix = build_mixture(tasks, v, None, seed=3)
    from unimodal.tasks.mixture import AllRecords
    from unimodal.tasks.progress import ProgressSamples

    assert mix.orders == ["epoch"] and isinstance(mix.indices[0], AllRecords) and len(mix.indices[0]) == 10
    picks = ProgressSamples(mix, tmp_path / "run").picks[0]  # a progress view picks records of a prepared bank too
    assert len(picks) == 8 and set(picks) <= set(range(10))

    def records(step: int, rank: int, world: int, b: int) -> list[int]:
        return [int(e.class_label) for e in mix.examples(step, rank, b, world)]

    # one epoch (10 records at 5 per step) is a permutation: every record once
    seen = [permuted_index(p, 10, 3, 0) for p in range(10)]
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    assert sorted(permuted_index(p, 10, 3, 1) for p in range(10)) == list(range(10))
    assert [permuted_index(p, 10, 3, 1) for p in range(10)] != seen  # each epoch its own order
    # elastic: 1 process x 4 == 2 processes x 2 (virtual ranks), a pure function of (seed, step): exact resume
    tokens = lambda step, rank, world, b: mix.batch(step, rank, world, b).visual  # noqa: E731
    one = tokens(7, 0, 1, 4)
    two = torch.cat([tokens(7, 0, 2, 2), tokens(7, 1, 2, 2)])
    assert torch.equal(one, two) and torch.equal(tokens(7, 0, 1, 4), one)
    assert len(records(0, 0, 1, 4)) == 4


def test_cli_prepare_then_train_a_few_steps(tmp_path: Path, capsys) -> None:
    from unimodal.train import TrainConfig, train

    root = write_folder(tmp_path / "src", n=8)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec(root)))
    assert main(["data", "prepare", "--source", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "prep"),
                 "--shard-size", "3"]) == 0
    assert "prepared 8 records (0 bad skipped) into 3 shard(s) of pixels" in capsys.readouterr().out
    cfg = TrainConfig(model="tiny", model_overrides={"num_classes": 2, "vocab_size": 0}, visual=dict(PIXELS), batch_size=4,
                      steps=3, lr=1e-3, warmup_steps=1, ema_decay=0.0, ckpt_every=3, keep_last=0, log_every=1,
                      out_dir=str(tmp_path / "run"), progress=False, tensorboard=False, sample_every=0,
                      tasks=[{"name": "class_to_image", "dataset": "prepared", "options": {"path": str(tmp_path / "prep")}}])
    res = train(cfg)
    assert len(res.history) == 3 and all(np.isfinite(h["loss"]) for h in res.history)


def test_workers_split_the_shards_and_worker_0_writes_the_manifest(tmp_path: Path) -> None:
    """Rank r of w encodes shards k % w == r (torchrun's RANK/WORLD_SIZE or --num-proc); rank 0 writes the manifest."""
    root = write_folder(tmp_path / "src", n=10)
    prepare(spec(root), tmp_path / "one", shard_size=3)
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "two"
    with ThreadPoolExecutor(2) as pool:  # as two torchrun ranks: 1 waits for 0's prepare.json, 0 for 1's shards
        one_done = pool.submit(prepare, spec(root), out, shard_size=3, rank=1, world=2)
        zero_done = pool.submit(prepare, spec(root), out, shard_size=3, rank=0, world=2)
        assert one_done.result(timeout=120).name == "prepare.json"  # rank 1 leaves the manifest to rank 0
        assert zero_done.result(timeout=120).name == MANIFEST
    sides = {k: json.loads((out / f"shard-{k:05d}.json").read_text()) for k in range(4)}
    assert [sides[k]["records"] for k in range(4)] == [3, 3, 3, 1]
    one, two = (json.loads((d / MANIFEST).read_text()) for d in (tmp_path / "one", out))
    assert [s["sha256"] for s in two["shards"]] == [s["sha256"] for s in one["shards"]] and two["records"] == 10


def test_text_heads_and_the_tokenizer_read_prepared_shards_and_bad_records_are_counted(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from unimodal.tasks import build_tokenizer

    root = write_folder(tmp_path / "src", n=8)
    with open(root / "train.jsonl", "a") as f:
        f.write('{"image": "img/missing.png", "caption": "gone"}\n{"image": "img/0.png"}\n')
    with pytest.raises(Exception, match=r"train\.jsonl:9, field 'image': file .*missing\.png does not exist"):
        prepare(spec(root), tmp_path / "strict", shard_size=4)
    s = spec(root)
    s["options"]["on_bad_record"] = "skip"
    with pytest.warns(UserWarning, match=r"skipped 2 bad record\(s\), kept 8"):
        prepare(s, tmp_path / "prep", shard_size=4)
    m = json.loads((tmp_path / "prep" / MANIFEST).read_text())
    assert (m["records"], m["skipped"]) == (8, 2)
    tasks = [{"name": n, "dataset": "prepared", "options": {"path": str(tmp_path / "prep")}} for n in ("captioning", "text_to_image")]
    with pytest.warns(UserWarning, match="byte pieces"):
        tok = build_tokenizer(SimpleNamespace(tasks=tasks, tokenizer={"vocab_size": 290}))
    mix = build_mixture(tasks, VisualConfig(**PIXELS), tok, seed=0)
    batch = mix.batch(0, 0, 1, 4)
    assert batch.text_ids.shape[0] == 4 and (batch.text_target >= 0).any()


def test_imagenet_protocol_at_tiny_scale_prepare_an_image_folder_with_a_vae_then_the_shipped_recipe(tmp_path: Path, vae_dir: Path,
                                                                                                      capsys) -> None:
    """`data prepare` of an ImageFolder with a (tiny, random) AutoencoderKL, then `train --config imagenet256_XL.yaml`
    with the model, visual grid and data overridden to tiny sizes: class->image reads the prepared VAE moments."""
    rng = np.random.default_rng(0)
    for c in ("n01440764", "n01443537", "n01484850"):
        (tmp_path / "imagenet" / "train" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "imagenet" / "train" / c / f"{i}.JPEG")
    visual = latent_visual(vae_dir)
    src = {"dataset": "files", "split": "train", "options": {"path": str(tmp_path / "imagenet")},
           "visual": {k: v for k, v in visual.items() if k != "vae_dir"}}
    (tmp_path / "imagenet.yaml").write_text(yaml.safe_dump(src))
    prep = tmp_path / "prepared"
    assert main(["data", "prepare", "--source", str(tmp_path / "imagenet.yaml"), "--out", str(prep), "--vae", str(vae_dir),
                 "--shard-size", "5", "--flip"]) == 0
    assert "prepared 12 records (0 bad skipped) into 3 shard(s) of vae_moments" in capsys.readouterr().out
    m = json.loads((prep / MANIFEST).read_text())
    assert m["flip"] and m["vae"]["fingerprint"] and m["shards"][0]["schema"]["label"] == "int64"
    config = Path(__file__).resolve().parents[2] / "configs" / "train" / "imagenet256_XL.yaml"
    task = json.dumps({"name": "class_to_image", "dataset": "prepared", "drop_prob": 0.1,
                       "options": {"path": str(prep), "flip": True}})
    assert main(["train", "--config", str(config), "model=tiny", f"visual={json.dumps(visual)}", f"tasks=[{task}]",
                 "batch_size=4", "steps=2", "precision=fp32", "zero_stage=0", f"out_dir={tmp_path / 'run'}", "ckpt_every=2",
                 "sample_every=0", "log_every=1", "ema_decay=0.9", "progress=false", "tensorboard=false"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2] and all(np.isfinite(r["loss"]) for r in lines if "loss" in r)


ELASTIC_RANK = """
import json, sys
from unimodal.train import TrainConfig, train
cfg = TrainConfig(**json.loads(sys.argv[1]))
res = train(cfg, resume=sys.argv[2] if sys.argv[2] != "none" else None)
"""


def _elastic_cfg(prep: Path, out: Path, batch: int, steps: int) -> dict:
    return dict(model="tiny", model_overrides={"num_classes": 2, "vocab_size": 0}, visual=dict(PIXELS), batch_size=batch,
                steps=steps, lr=1e-3, warmup_steps=1, ema_decay=0.0, ckpt_every=2, keep_last=0, log_every=1,
                out_dir=str(out), progress=False, tensorboard=False, sample_every=0, zero_stage=0, precision="fp32",
                schedule="constant", tasks=[{"name": "class_to_image", "dataset": "prepared", "options": {"path": str(prep)}}])


def _launch(cfg: dict, world: int, resume: str = "none") -> None:
    from unimodal.train.distributed import free_port

    port, procs = str(free_port()), []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", ELASTIC_RANK, json.dumps(cfg), resume], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-3000:]}"


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.multiprocess
def test_elastic_resume_2_to_1_and_1_to_2_processes_continues_the_same_data_order(tmp_path: Path) -> None:
    """The data order is a function of global sample indices: a ZeRO-0 run checkpointed on N processes resumes on M
    (same global batch) and continues the uninterrupted run's losses (equal to float error, the reduction order differs)."""
    from unimodal.train import TrainConfig, train

    root = write_folder(tmp_path / "src", n=12)
    prep = tmp_path / "prep"
    prepare(spec(root), prep, shard_size=5)
    train(TrainConfig(**_elastic_cfg(prep, tmp_path / "full", 4, 4)))
    full = _losses(tmp_path / "full")
    # 2 -> 1: two ranks of batch 2 for steps 1-2, then one process of batch 4 resumes for steps 3-4
    _launch(_elastic_cfg(prep, tmp_path / "two_one", 2, 2), world=2)
    resumed = train(TrainConfig(**_elastic_cfg(prep, tmp_path / "two_one", 4, 4)), resume="auto")
    assert [h["step"] for h in resumed.history] == [3, 4]  # it continued from the 2-process checkpoint
    # 1 -> 2
    train(TrainConfig(**_elastic_cfg(prep, tmp_path / "one_two", 4, 2)))
    _launch(_elastic_cfg(prep, tmp_path / "one_two", 2, 4), world=2, resume="auto")
    meta = json.loads((tmp_path / "one_two" / "checkpoints" / "step_0000004" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 4
    for run in ("two_one", "one_two"):
        got = _losses(tmp_path / run)
        assert sorted(got) == [1, 2, 3, 4]
        np.testing.assert_allclose([got[s] for s in (1, 2, 3, 4)], [full[s] for s in (1, 2, 3, 4)], rtol=1e-4, atol=1e-6)
