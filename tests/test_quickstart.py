"""`unimodal quickstart` end to end on CPU with a step budget: every artefact, every metric finite."""

import json
import math

import pytest

from unimodal.cli import main


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    rc = main(["quickstart", "--steps", "3", "--eval-limit", "16", "--out", str(out), "--quiet", "batch_size=8"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for path in summary["artefacts"].values():
        assert (tmp_path / path).exists() or __import__("pathlib").Path(path).exists(), path
    for name in ("t2i_heldout_captions.png", "heldout_images.png", "understanding.md", "eval/results.json", "eval/results.md"):
        assert (out / name).is_file(), name
    assert (out / "run" / "checkpoints" / "step_0000003" / "model.safetensors").is_file()
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["tasks"]) == {"easyvqa_vqa", "easyvqa_caption", "easyvqa_t2i", "easyvqa_probe"}
    for task in results["tasks"].values():
        assert task["metrics"], task
        for name, value in task["metrics"].items():
            assert isinstance(value, float) and math.isfinite(value), (name, value)
    for name, value in summary["headline"].items():
        assert value is not None and math.isfinite(value), (name, value)
    printed = capsys.readouterr().out
    assert "VQA accuracy" in printed and str(out / "eval" / "results.md") in printed
