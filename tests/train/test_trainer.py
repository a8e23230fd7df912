"""The real `train()` entry point on a tiny model and synthetic data: ZeRO stages, exact resume, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from synthetic_source import SyntheticDigits, params_digest, tiny_config

from unimodal.checkpoint import CheckpointError, load_checkpoint, read_weights
from unimodal.diffusion.loss import compute_loss
from unimodal.diffusion.schedule import NoiseSchedule
from unimodal.model import ACDiT
from unimodal.train import TrainingDiverged, train
from unimodal.train.trainer import example_noise

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch deprecations inside DeepSpeed's ZeRO-3


def fixed_batch_loss(model: torch.nn.Module) -> float:
    """Loss of `model` on one held-out batch with fixed noise (step 10_000 is never trained on)."""
    src = SyntheticDigits()
    batch = src.batch(10_000, 0, 1, 32)
    schedule = NoiseSchedule()
    t, noise = example_noise(batch, schedule, 0, 10_000, 0)
    with torch.no_grad():
        return float(compute_loss(model, batch, schedule, t=t, noise=noise)["loss"])


def strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in history]  # wall-clock dependent


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_every_zero_stage_lowers_the_loss_and_saves_the_trained_weights(tmp_path, stage):
    cfg = tiny_config(tmp_path, deepspeed=f"zero{stage}", steps=16, batch_size=8, lr=3e-3, schedule="constant",
                      ema_decay=0.0, ckpt_every=16)
    res = train(cfg, SyntheticDigits())
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 16 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4]), losses
    # the checkpoint holds the trained weights (gathered from the partitions under ZeRO-3)
    ck = load_checkpoint(res.checkpoint)
    torch.manual_seed(cfg.seed)
    fresh = ACDiT(cfg.model_config())
    assert ck.meta["step"] == 16 and not ck.used_ema
    assert fixed_batch_loss(ck.model) < 0.6 * fixed_batch_loss(fresh)

    # the schedule's lr reaches the optimizer inside DeepSpeed's wrappers: a step at lr 0 (WSD decayed to 0)
    # leaves the weights untouched although AdamW was built with lr=3e-3
    still = train(cfg.with_overrides(["steps=1", "warmup_steps=0", "schedule=wsd", "decay_frac=1.0", f"out_dir={tmp_path / 'zero_lr'}"]),
                  SyntheticDigits())
    assert still.history[0]["lr"] == 0.0
    assert params_digest(load_checkpoint(still.checkpoint).model) == params_digest(fresh)


@pytest.mark.parametrize("stage", [1, 3])
def test_resume_after_a_crash_is_exact(tmp_path, stage):
    kw = dict(zero_stage=stage, steps=6, ckpt_every=3, batch_size=2, grad_accum=2, ema_decay=0.8, schedule="wsd",
              decay_frac=0.5, warmup_steps=1)
    full = train(tiny_config(tmp_path / "full", **kw), SyntheticDigits())

    class Crash(Exception):
        pass

    def crash_at_5(step, module, record):
        if step == 5:
            raise Crash

    with pytest.raises(Crash):  # steps 1..5 ran, the checkpoint of step 3 is the newest
        train(tiny_config(tmp_path / "cut", **kw), SyntheticDigits(), step_hook=crash_at_5)
    resumed = train(tiny_config(tmp_path / "cut", **kw), SyntheticDigits(), resume="auto")

    assert [h["step"] for h in resumed.history] == [4, 5, 6]
    assert strip(resumed.history) == strip(full.history[3:])  # losses, lr, grad norms: bit-identical
    assert resumed.checkpoint.name == full.checkpoint.name == "step_0000006"
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = read_weights(full.checkpoint / f), read_weights(resumed.checkpoint / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    lrs = [h["lr"] for h in full.history]
    # wsd, peak 1e-3, 1 warmup step, decay over round(0.5·6) = 3 steps to 0 (by hand)
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3, 0.0], abs=1e-12)


def test_nan_loss_stops_naming_step_and_part_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, steps=6, ckpt_every=2)
    with pytest.raises(TrainingDiverged, match=r"step 4 .*diffusion is NaN/inf.*step_0000002"):
        train(cfg, SyntheticDigits(nan_at_step=3))  # batch step 3 = the 4th optimizer step
    root = tmp_path / "checkpoints"
    assert sorted(os.listdir(root)) == ["step_0000002"]
    ck = load_checkpoint(root / "step_0000002")
    assert ck.meta["step"] == 2 and all(torch.isfinite(p).all() for p in ck.model.parameters())
    logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]

    # weights that turn NaN without a NaN loss are caught before they are saved
    def poison(step, module, record):
        if step == 4:
            with torch.no_grad():
                next(module.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match="weights became NaN/inf by step 4"):
        train(tiny_config(tmp_path / "w", steps=6, ckpt_every=2), SyntheticDigits(), step_hook=poison)
    assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == ["step_0000002"]


def test_a_crash_while_writing_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    real, calls = safetensors.torch.save_file, []

    def flaky(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 3:  # checkpoint 1 wrote model + ema; checkpoint 2 dies half-way through its model file
            Path(filename).write_bytes(b"\x00" * 10)
            raise OSError("No space left on device (injected)")
        return real(tensors, filename, metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", flaky)
    cfg = tiny_config(tmp_path, steps=4, ckpt_every=2)
    with pytest.raises(CheckpointError, match="step_0000004.*No space left"):
        train(cfg, SyntheticDigits())
    root = tmp_path / "checkpoints"
    assert sorted(os.listdir(root)) == ["step_0000002"]  # no step_0000004, no hidden staging directories
    monkeypatch.undo()
    res = train(cfg, SyntheticDigits(), resume="auto")
    assert [h["step"] for h in res.history] == [3, 4] and res.checkpoint == root / "step_0000004"
    assert load_checkpoint(res.checkpoint).meta["step"] == 4


def test_keep_last_and_auto_resume_ignore_incomplete_directories(tmp_path):
    cfg = tiny_config(tmp_path, steps=5, ckpt_every=1, keep_last=2, ema_decay=0.0)
    train(cfg, SyntheticDigits())
    root = tmp_path / "checkpoints"
    assert sorted(os.listdir(root)) == ["step_0000004", "step_0000005"]
    assert not (root / "step_0000005" / "ema.safetensors").exists()  # EMA off

    (root / "step_0000009").mkdir()  # newer but incomplete: weights without DeepSpeed state
    (root / "step_0000009" / "model.safetensors").write_bytes((root / "step_0000005" / "model.safetensors").read_bytes())
    (root / ".step_0000006.deepspeed-partial").mkdir()  # what a killed save leaves
    with pytest.raises(CheckpointError, match="step_0000009.*incomplete"):
        train(cfg.with_overrides(["steps=7"]), SyntheticDigits(), resume=root / "step_0000009")
    res = train(cfg.with_overrides(["steps=7"]), SyntheticDigits(), resume="auto")
    assert [h["step"] for h in res.history] == [6, 7]
    assert sorted(os.listdir(root)) == ["step_0000006", "step_0000007", "step_0000009"]  # pruning keeps 2 complete


def test_sample_hook_gets_the_ema_weights_and_metrics_are_logged(tmp_path):
    seen = {}

    def hook(step, model):
        seen[step] = (params_digest(model), model.training)

    cfg = tiny_config(tmp_path, steps=4, sample_every=2, ckpt_every=2, log_every=2, ema_decay=0.5)
    res = train(cfg, SyntheticDigits(), sample_hook=hook)
    assert sorted(seen) == [2, 4] and not any(training for _, training in seen.values())
    assert seen[4][0] == params_digest(load_checkpoint(res.checkpoint, use_ema=True).model)
    assert seen[4][0] != params_digest(load_checkpoint(res.checkpoint, use_ema=False).model)

    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    for x in lines:
        assert {"lr", "loss", "diffusion", "text", "tokens_per_s", "elapsed_s"} <= set(x) and x["tokens_per_s"] > 0
    assert lines[1]["loss"] == pytest.approx(sum(h["loss"] for h in res.history[2:]) / 2)  # window mean
    assert (tmp_path / "config.yaml").is_file()
    saved = load_checkpoint(res.checkpoint).config
    assert saved["train"] == cfg.to_dict() and saved["tasks"] == cfg.tasks and saved["visual"]["image_size"] == 4
