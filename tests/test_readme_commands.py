"""The README's commands that no other test runs: `unimodal info`, the Fashion-MNIST recipe
with `--resume auto`, and the multi-process `torchrun ... -m unimodal.cli train` launch."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from unimodal.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_info_lists_presets_and_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for preset in ("tiny", "S", "B", "L", "XL", "H"):
        assert f"\n  {preset:5s}" in out
    assert "attention backend (auto)" in out
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


def test_every_train_recipe_is_a_valid_config():
    from unimodal.train.config import TrainConfig

    recipes = sorted((ROOT / "configs" / "train").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"easyvqa_tiny", "fashion_mnist_cpu", "fashion_mnist_S", "imagenet256_XL"}
    for p in recipes:
        cfg = TrainConfig.from_file(p)
        assert cfg.tasks and cfg.visual_config().token_dim > 0


@pytest.mark.slow
def test_fashion_mnist_recipe_runs_and_resumes(tmp_path):
    args = ["train", "--config", str(ROOT / "configs/train/fashion_mnist_cpu.yaml"), "steps=1",
            "batch_size=4", "warmup_steps=0", "progress=false", f"out_dir={tmp_path}"]
    assert main([*args, "--resume", "auto"]) == 0
    assert main([*[a if a != "steps=1" else "steps=2" for a in args], "--resume", "auto"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 2 and (tmp_path / "checkpoints" / "step_0000002").is_dir()


@pytest.mark.slow
@pytest.mark.multiprocess
def _free_port() -> int:
    """A port the OS says is free now (a fixed port collides with a parallel run)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(tmp_path):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "unimodal.cli", "train",
           "--config", str(ROOT / "configs/train/easyvqa_tiny.yaml"), "steps=2", "batch_size=2", "warmup_steps=0",
           "progress=false", "tensorboard=false", f"out_dir={tmp_path}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = tmp_path / "checkpoints" / "step_0000002"
    assert (ckpt / "model.safetensors").is_file()
    assert (ckpt / "deepspeed").is_dir()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 2
