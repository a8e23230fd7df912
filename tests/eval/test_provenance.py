"""Provenance in every results JSON: per-sample outputs, template and checkpoint hashes, seeds, dtype, device."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from unimodal.eval import run_eval

TASKS = {
    "p_vqa.yaml": "name: p_vqa\ninclude: easyvqa_vqa\n",
    "p_caption.yaml": "name: p_caption\ninclude: easyvqa_caption\n",
    "p_c2i.yaml": (
        "name: p_c2i\ninclude: fmnist_c2i\ndataset: digits\ngeneration: {steps: 2, batch_size: 4}\n"
        "extractor_options: {max_train: 200, epochs: 1, max_test: 50}\n"
    ),
}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ptasks")
    for name, text in TASKS.items():
        (d / name).write_text(text)
    return d


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_text_results_carry_per_sample_outputs_and_hashes(text_checkpoint, task_dir, tmp_path):
    out = tmp_path / "r.json"
    res = run_eval(text_checkpoint, ["p_vqa", "p_caption"], out, limit=6, seed=5, include_paths=[task_dir], progress=False)
    on_disk = json.loads(out.read_text())
    prov = on_disk["provenance"]
    # the checkpoint: the weight file that was read (EMA if present) and the config, hashed independently here
    weights = "ema.safetensors" if res["used_ema"] else "model.safetensors"
    assert prov["checkpoint"]["files"] == {weights: _sha(text_checkpoint / weights), "config.yaml": _sha(text_checkpoint / "config.yaml")}
    assert prov["dtype"] == "float32" and prov["device"] == "cpu" and on_disk["seed"] == 5
    assert on_disk["versions"]["torch"] and on_disk["versions"]["unimodal"]
    for name in ("p_vqa", "p_caption"):
        t = on_disk["tasks"][name]
        assert t["prompt_template_sha256"] == hashlib.sha256(t["prompt_template"].encode()).hexdigest() and t["seed"] == 5
    assert on_disk["tasks"]["p_vqa"]["prompt_template"] != on_disk["tasks"]["p_caption"]["prompt_template"]
    # per-sample JSONL: one line per question, and the per-item scores average to the reported metric
    rows = [json.loads(line) for line in (tmp_path / prov["samples_file"]).read_text().splitlines()]
    vqa = [r for r in rows if r["task"] == "p_vqa"]
    cap = [r for r in rows if r["task"] == "p_caption"]
    assert len(vqa) == on_disk["tasks"]["p_vqa"]["num_samples"] and len(cap) == on_disk["tasks"]["p_caption"]["num_samples"]
    assert all(r["question"] and isinstance(r["prediction"], str) and r["references"] for r in vqa)
    for metric in ("vqa_accuracy", "exact_match"):
        assert np.mean([r["scores"][metric] for r in vqa]) == pytest.approx(on_disk["tasks"]["p_vqa"]["metrics"][metric])
    # each row's score is its own prediction's score (rows and scores are aligned)
    from unimodal.eval.metrics.vqa import vqa_accuracy

    assert all(r["scores"]["vqa_accuracy"] == vqa_accuracy(r["prediction"], r["references"]) for r in vqa)
    examples = on_disk["tasks"]["p_vqa"]["details"]["examples"]
    assert [(e["question"], e["prediction"]) for e in examples] == [(r["question"], r["prediction"]) for r in vqa[: len(examples)]]
    # corpus metrics (BLEU, CIDEr) have no per-item score; the mean ones do
    assert set(cap[0]["scores"]) == {"exact_match"}


def test_generation_results_hash_their_reference_statistics(class_checkpoint, task_dir, tmp_path, eval_cache):
    out = tmp_path / "g.json"
    res = run_eval(class_checkpoint, ["p_c2i"], out, limit=8, include_paths=[task_dir], progress=False)
    details = res["tasks"]["p_c2i"]["details"]
    # the cached reference statistics this run read, hashed here from the cache file
    files = sorted((eval_cache / "eval" / "reference").glob("digits-test-*.npz"), key=lambda p: p.stat().st_mtime)
    with np.load(files[-1]) as z:
        mu, sigma = z["mu"], z["sigma"]
    h = hashlib.sha256()
    for a in (mu, sigma):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode() + a.tobytes())
    assert details["reference_stats_sha256"] == h.hexdigest()
    rows = [json.loads(line) for line in out.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert [r["class_label"] for r in rows] == [i % 10 for i in range(8)]  # balanced labels, in order
    assert [r["batch_seed"] for r in rows] == [i // 4 for i in range(len(rows))]
