"""`unimodal train --config ... key=value` in-process through `unimodal.cli.main`: checkpoints, metrics, exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image as PILImage

from unimodal.checkpoint import load_checkpoint
from unimodal.cli import main
from unimodal.data import load_dataset
from unimodal.train.run_state import list_checkpoints

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

REPO = Path(__file__).resolve().parents[2]
DIGITS_RUN = {  # the real task mixture: class -> image on sklearn's digits, tiny model
    "model": "tiny",
    "model_overrides": {"num_classes": 10, "vocab_size": 0},
    "visual": {"channels": 1, "image_size": 8, "patch_size": 2, "block_h": 2, "block_w": 2},
    "tasks": [{"name": "class_to_image", "dataset": "digits"}],
    "batch_size": 4,
    "steps": 100,
    "lr": 1.0e-3,
    "ema_decay": 0.9,
    "ckpt_every": 1,
    "keep_last": 2,
    "log_every": 1,
    "progress": False,
    "tensorboard": False,
    "out_dir": "runs/should_be_overridden",
}


def metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_checkpoints_and_metrics_and_exits_0(tmp_path, capsys):
    cfg = tmp_path / "digits.yaml"
    cfg.write_text(yaml.safe_dump(DIGITS_RUN, sort_keys=False))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "steps=3", f"out_dir={out}", "train.lr=2e-3"]) == 0
    root = out / "checkpoints"
    assert f"trained to step 3; checkpoint: {root / 'step_0000003'}" in capsys.readouterr().out
    assert [s for s, _ in list_checkpoints(root)] == [2, 3]  # keep_last 2
    ck = load_checkpoint(root / "step_0000003")
    assert ck.used_ema and ck.meta["step"] == 3 and ck.visual.image_size == 8
    assert ck.config["train"]["lr"] == 2e-3 and ck.config["train"]["steps"] == 3  # overrides reach the saved config
    assert ck.config["tasks"] == DIGITS_RUN["tasks"]
    lines = metrics(out)
    assert [x["step"] for x in lines] == [1, 2, 3]
    assert all(x["lr"] == 2e-3 and x["loss"] > 0 and x["tokens_per_s"] > 0 for x in lines)
    assert "text" not in lines[0]  # class -> image: no text loss
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["steps"] == 3 and saved["out_dir"] == str(out)

    # --resume auto in the same out_dir continues at step 4
    assert main(["train", "--config", str(cfg), "steps=5", f"out_dir={out}", "--resume", "auto"]) == 0
    assert f"resumed from {root / 'step_0000003'} at step 3" in capsys.readouterr().out
    assert [x["step"] for x in metrics(out)] == [1, 2, 3, 4, 5]
    assert [s for s, _ in list_checkpoints(root)] == [4, 5]


def test_bad_override_is_one_error_naming_the_key(tmp_path, capsys):
    cfg = tmp_path / "digits.yaml"
    cfg.write_text(yaml.safe_dump(DIGITS_RUN, sort_keys=False))
    assert main(["train", "--config", str(cfg), "stepz=3", f"out_dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stepz" in err[0] and "steps" in err[0], err
    assert main(["train", "--config", str(cfg), "batch_size=four", f"out_dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_size" in err[0], err
    assert not (tmp_path / "x").exists()


def test_the_easyvqa_recipe_runs_from_the_command_line(tmp_path, capsys):
    """`unimodal train --config configs/train/easyvqa_tiny.yaml steps=2 batch_size=4 ... out_dir=...` (README form).
    The recipe warms up for 100 steps, so a 2-step run sets warmup_steps=0 (warmup longer than the run is refused)."""
    out = tmp_path / "easyvqa"
    argv = ["train", "--config", str(REPO / "configs/train/easyvqa_tiny.yaml"), "steps=2", "batch_size=4",
            "warmup_steps=0", "progress=false", "tensorboard=false", "sample_every=1", f"out_dir={out}"]
    assert main(argv) == 0
    ck_dir = out / "checkpoints" / "step_0000002"
    assert f"trained to step 2; checkpoint: {ck_dir}" in capsys.readouterr().out
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [2]  # ckpt_every 500: only the final one
    ck = load_checkpoint(ck_dir)
    assert ck.used_ema and ck.meta["step"] == 2 and ck.tokenizer_dir is not None
    assert {t["name"] for t in ck.config["tasks"]} == {"text_to_image", "captioning", "vqa"}
    # the recipe's mixture weights and tokenizer size (configs/train/easyvqa_tiny.yaml) reach the run
    assert {t["name"]: t["weight"] for t in ck.config["tasks"]} == {"text_to_image": 1.5, "captioning": 1.0, "vqa": 2.0}
    # vocab_size auto: the whole-word pieces easy-VQA's train text supports (475); the pooled prompt condition is on
    assert ck.model.cfg.vocab_size == 475 and (ck.model.cfg.n_layer, ck.model.cfg.d_model) == (4, 256)
    assert ck.model.cfg.text_condition and ck.model.text_cond is not None
    assert ck.config["train"]["batch_size"] == 4 and ck.config["train"]["steps"] == 2  # the command-line overrides
    lines = metrics(out)
    assert [x["step"] for x in lines] == [2]  # log_every 20: the run's last step closes the window
    assert lines[0]["text"] > 0 and lines[0]["diffusion"] > 0
    # progress samples after every step: one section per task, the same records at every step
    pages = [(out / "samples" / f"step_000000{s}" / "samples.md").read_text() for s in (1, 2)]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000001", "step_0000002"]  # no partials
    for page in pages:
        for k, name in enumerate(["text_to_image", "captioning", "vqa"]):
            assert f"## {name} (easyvqa/train)" in page and f"]({k}_{name}.png)" in page
    truth = lambda page: [r.split(" | ")[1] for r in page.splitlines() if r.startswith("| ") and not r.startswith("| #")]  # noqa: E731
    assert truth(pages[0]) == truth(pages[1]) and len(truth(pages[0])) == 16  # 8 captions + 8 questions
    ds = load_dataset("easyvqa", "train")
    captions = set(ds["caption"])
    assert all(c in captions for c in truth(pages[0])[:8])
    for k, name in enumerate(["text_to_image", "captioning", "vqa"]):
        assert PILImage.open(out / "samples" / "step_0000002" / f"{k}_{name}.png").size == (2 + 8 * 34, 34 + 2)
