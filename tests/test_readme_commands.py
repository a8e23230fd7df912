"""The README's commands that no other test runs: `unimodal info`, the Fashion-MNIST recipe
with `--resume auto`, and the multi-process `torchrun ... -m unimodal.cli train` launch."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from model_helpers import require_fashion_mnist

from unimodal.checkpoint import read_weights
from unimodal.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_info_lists_presets_and_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for preset in ("tiny", "S", "B", "L", "XL", "H"):
        assert f"\n  {preset:5s}" in out
    assert "attention backend (auto)" in out
    # the paper's depth x width (the DiT sizes), heads of 64 channels, each row as `info` prints it
    for preset, layers, width, heads in (("B", 12, 768, 12), ("L", 24, 1024, 16), ("XL", 28, 1152, 18), ("H", 32, 1280, 20)):
        assert f"\n  {preset:5s} {layers:3d} layers x {width:5d}  heads {heads:3d}" in out, preset
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


def test_version_matches_the_package_metadata(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"unimodal {version('unimodal')}"  # pyproject.toml's version


def test_info_forward_runs_one_step_of_the_preset(capsys):
    import math
    import re

    assert main(["info", "--forward", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"forward\+backward of 'tiny' \(([\d.]+)M params\) on .*, batch 4: (\d+) ms", out)
    assert m, out
    tiny_row = re.search(r"\n  tiny\s.*?([\d.]+)M params", out)
    assert tiny_row and float(m.group(1)) == pytest.approx(float(tiny_row.group(1)), abs=0.06)  # the same model
    parts = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split())
    assert {"loss", "diffusion", "text"} <= set(parts) and all(math.isfinite(float(v)) for v in parts.values())
    assert float(parts["loss"]) > 0


def test_every_train_recipe_is_a_valid_config():
    """Each README recipe loads, and keeps the settings the README quotes for it (a recipe edited into
    another one, say a CPU recipe that grew the XL model, fails here)."""
    from unimodal.train.config import TrainConfig

    recipes = {p.stem: p for p in sorted((ROOT / "configs" / "train").glob("*.yaml"))}
    assert set(recipes) >= {"easyvqa_tiny", "fashion_mnist_cpu", "fashion_mnist_S", "imagenet256_XL"}
    for p in recipes.values():
        cfg = TrainConfig.from_file(p)
        assert cfg.tasks and cfg.visual_config().token_dim > 0
    fm = TrainConfig.from_file(recipes["fashion_mnist_cpu"])
    # 32x32 grey images in 4x4 patches: 8x8 tokens of 1*4*4 values, 10 classes, v-prediction (README)
    assert fm.visual_config().token_dim == 16 and fm.model_config().num_classes == 10
    assert (fm.model_config().n_layer, fm.model_config().d_model) == (4, 256)
    assert [t["dataset"] for t in fm.tasks] == ["fashion_mnist"]
    xl = TrainConfig.from_file(recipes["imagenet256_XL"]).model_config()
    assert (xl.n_layer, xl.d_model) == (28, 1152)  # the paper's XL


@pytest.mark.slow
def test_fashion_mnist_recipe_runs_and_resumes(tmp_path, capsys):
    """`--resume auto` continues at step 1: the step-1 metrics line of the first run is kept verbatim
    (a run restarted from step 0 would log step 1 again, with a new time stamp) and the run says so."""
    require_fashion_mnist()
    args = ["train", "--config", str(ROOT / "configs/train/fashion_mnist_cpu.yaml"), "steps=1",
            "batch_size=4", "warmup_steps=0", "progress=false", f"out_dir={tmp_path}"]
    assert main([*args, "--resume", "auto"]) == 0
    first = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in first] == [1]
    capsys.readouterr()
    assert main([*[a if a != "steps=1" else "steps=2" for a in args], "--resume", "auto"]) == 0
    assert f"resumed from {tmp_path / 'checkpoints' / 'step_0000001'} at step 1" in capsys.readouterr().out
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == first[0] and [json.loads(line)["step"] for line in lines] == [1, 2]
    assert (tmp_path / "checkpoints" / "step_0000002").is_dir()


def _free_port() -> int:
    """A port the OS says is free now (a fixed port collides with a parallel run)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_two_processes(tmp_path):
    """The README's torchrun launch trains the same model as one process reading the same global batch
    as two accumulation steps: each rank reads its own slice (identical data on both ranks, or replicas
    that drift apart, give other losses and weights)."""
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    recipe = ["--config", str(ROOT / "configs/train/easyvqa_tiny.yaml"), "steps=2", "batch_size=2", "warmup_steps=0",
              "progress=false", "tensorboard=false", "log_every=1", "compile=false"]  # the data split is under test here
    two, one = tmp_path / "two", tmp_path / "one"
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "unimodal.cli", "train",
           *recipe, f"out_dir={two}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = two / "checkpoints" / "step_0000002"
    assert (ckpt / "model.safetensors").is_file()
    assert (ckpt / "deepspeed").is_dir()
    assert main(["train", *recipe, "grad_accum=2", f"out_dir={one}"]) == 0

    def losses(run):
        return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    got, want = losses(two), losses(one)
    assert [s for s, _ in got] == [1, 2] and [s for s, _ in want] == [1, 2]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4)
    w2 = read_weights(ckpt / "model.safetensors")
    w1 = read_weights(one / "checkpoints" / "step_0000002" / "model.safetensors")
    assert w2.keys() == w1.keys()
    # allreduce and grad accumulation sum in different orders; Adam can amplify that on near-zero gradients
    # to ~lr/100 on single elements, while a data bug moves the loss by ~0.45
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-4)
