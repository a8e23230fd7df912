"""`unimodal quickstart` end to end on CPU with a step budget: every artefact, each headline figure the
eval metric it is named after (on the easy-VQA test split), and the printed summary showing those values."""

import json
import math
from pathlib import Path

import pytest

from unimodal.cli import main

# headline key -> (eval task, metric), written out by hand from the README's description of the summary
HEADLINE = {
    "vqa_accuracy": ("easyvqa_vqa", "vqa_accuracy"),
    "caption_exact_match": ("easyvqa_caption", "exact_match"),
    "t2i_colour_shape_accuracy": ("easyvqa_t2i", "class_accuracy"),
    "t2i_fid_in_domain": ("easyvqa_t2i", "fid"),
    "probe_accuracy_best_layer": ("easyvqa_probe", "probe_accuracy"),
    "probe_pixel_control": ("easyvqa_probe", "pixel_probe_accuracy"),
    "probe_random_model_control": ("easyvqa_probe", "random_probe_accuracy"),
}


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    rc = main(["quickstart", "--steps", "3", "--eval-limit", "16", "--out", str(out), "--quiet", "batch_size=8"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for path in summary["artefacts"].values():
        assert Path(path).exists(), path
    for name in ("t2i_heldout_captions.png", "heldout_images.png", "understanding.md", "eval/results.json", "eval/results.md"):
        assert (out / name).is_file(), name
    assert summary["steps"] == 3 and summary["checkpoint"] == str(out / "run" / "checkpoints" / "step_0000003")
    assert (out / "run" / "checkpoints" / "step_0000003" / "model.safetensors").is_file()
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["tasks"]) == {"easyvqa_vqa", "easyvqa_caption", "easyvqa_t2i", "easyvqa_probe"}
    assert results["limit"] == 16 and results["checkpoint"] == summary["checkpoint"]
    for name, task in results["tasks"].items():
        assert (task["dataset"], task["split"]) == ("easyvqa", "test"), name  # scored on held-out data
        assert task["metrics"], task
        for metric, value in task["metrics"].items():
            assert isinstance(value, float) and math.isfinite(value), (metric, value)
    assert results["tasks"]["easyvqa_vqa"]["num_samples"] >= 16  # every question of 16 test images
    assert set(summary["headline"]) == set(HEADLINE)
    for key, (task, metric) in HEADLINE.items():
        assert summary["headline"][key] == results["tasks"][task]["metrics"][metric], key
    for key in ("vqa_accuracy", "caption_exact_match", "t2i_colour_shape_accuracy", "probe_accuracy_best_layer"):
        assert 0.0 <= summary["headline"][key] <= 1.0, key
    printed = capsys.readouterr().out
    h = summary["headline"]
    assert f"VQA accuracy (easy-VQA test)        {h['vqa_accuracy']:.3f}" in printed
    assert f"caption exact match                 {h['caption_exact_match']:.3f}" in printed
    assert f"colour+shape accuracy   {h['t2i_colour_shape_accuracy']:.3f}" in printed
    assert f"(pixels {h['probe_pixel_control']:.3f}, random model {h['probe_random_model_control']:.3f})" in printed
    assert str(out / "eval" / "results.md") in printed


def test_headline_takes_each_figure_from_its_own_metric():
    """Every metric a distinct value: a headline key wired to another task's or metric's value fails
    (after 3 training steps, end to end, VQA accuracy and caption exact match are both 0 and cannot tell)."""
    from unimodal.quickstart import headline

    tasks: dict = {}
    for i, (task, metric) in enumerate(HEADLINE.values()):
        tasks.setdefault(task, {"metrics": {}})["metrics"][metric] = 0.1 + i / 100
    tasks["easyvqa_vqa"]["metrics"]["exact_match"] = 0.99  # a same-named metric of another task
    got = headline({"tasks": tasks})
    assert got == {key: 0.1 + i / 100 for i, key in enumerate(HEADLINE)}
    del tasks["easyvqa_t2i"]
    assert headline({"tasks": tasks})["t2i_fid_in_domain"] is None  # a task not run: n/a, not an error


@pytest.mark.slow
def test_minutes_calibration_divides_the_budget_by_the_measured_step_time(monkeypatch):
    """A clock that advances 0.25 s per reading: each probe step measures 0.25 s, plus the 10% overhead
    allowance is 0.275 s, so 1 minute is int(60 / 0.275) = 218 steps and 0.1 s still gets 1 step."""
    import itertools

    import unimodal.quickstart as qs
    from unimodal.train.config import TrainConfig

    ticks = itertools.count()
    monkeypatch.setattr(qs.time, "perf_counter", lambda: next(ticks) * 0.25)
    cfg = TrainConfig.from_file(qs.config_file("train/easyvqa_tiny.yaml"), ["batch_size=2", "pack_tokens=null", "compile=false"])
    steps, per_step = qs.calibrate_steps(cfg, 60.0, probe_steps=2)
    assert per_step == pytest.approx(0.275) and steps == 218
    assert qs.calibrate_steps(cfg, 0.1, probe_steps=1)[0] == 1

    # the probe runs at the recipe's precision, compiled when the recipe compiles; a compiling first step
    # (0.25 s on this clock) is reserved twice out of the budget (one recompile): int((60 - 0.5) / 0.275) = 216 steps
    from unimodal.model import ACDiT

    seen = []
    monkeypatch.setattr(ACDiT, "set_precision", lambda self, p: seen.append(p) or self)
    monkeypatch.setattr(ACDiT, "compile_forward", lambda self: seen.append("compiled") or self)
    assert qs.calibrate_steps(cfg.with_overrides(["precision=bf16", "compile=true"]), 60.0, probe_steps=2)[0] == 216
    assert seen == ["bf16", "compiled"]


def test_minutes_must_be_positive(capsys):
    with pytest.raises(SystemExit) as e:
        main(["quickstart", "--minutes", "0"])
    assert e.value.code == 2 and "--minutes" in capsys.readouterr().err
