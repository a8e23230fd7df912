"""`unimodal eval` end to end on tiny trained checkpoints."""

from __future__ import annotations

import json

import pytest

from unimodal.cli import main

# tiny variants of the shipped tasks: few sampling steps, in-domain extractors trained for seconds
TINY_TASKS = {
    "t_vqa.yaml": "name: t_vqa\ninclude: easyvqa_vqa\n",
    "t_caption.yaml": "name: t_caption\ninclude: easyvqa_caption\n",
    "t_probe.yaml": "name: t_probe\ninclude: easyvqa_probe\nprobe: {layers: [1, 2]}\n",
    "t_t2i.yaml": (
        "name: t_t2i\ninclude: easyvqa_t2i\ngeneration: {steps: 3, batch_size: 8}\n"
        "extractor_options: {max_train: 300, epochs: 1, max_test: 100}\nclip: {max_train: 200, epochs: 1}\n"
    ),
    "t_c2i.yaml": (
        "name: t_c2i\ninclude: fmnist_c2i\ndataset: digits\ngeneration: {steps: 3, batch_size: 10}\n"
        "extractor_options: {max_train: 300, epochs: 1, max_test: 100}\n"
    ),
}
TEXT_TASKS = ["t_vqa", "t_caption", "t_probe", "t_t2i"]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    for name, text in TINY_TASKS.items():
        (d / name).write_text(text)
    return d


def run(ckpt, tasks, out, task_dir, *extra) -> int:
    return main(["eval", "--checkpoint", str(ckpt), "--tasks", ",".join(tasks), "--output", str(out),
                 "--limit", "12", "--include-path", str(task_dir), "--no-progress", *extra])


def without_timings(obj):
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if "time" not in k}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


def test_eval_produces_every_metric_and_is_deterministic(text_checkpoint, class_checkpoint, task_dir, tmp_path):
    from unimodal.eval import get_eval_task

    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}" / "results.json"
        assert run(text_checkpoint, TEXT_TASKS, out, task_dir, "--seed", "3") == 0
        assert run(class_checkpoint, ["t_c2i", "digits_probe"], out.with_name("class.json"), task_dir, "--seed", "3") == 0
        runs.append([json.loads(out.read_text()), json.loads(out.with_name("class.json").read_text())])
    for res in runs[0]:
        assert res["seed"] == 3 and res["limit"] == 12 and res["versions"]["torch"]
        for name, r in res["tasks"].items():
            task = get_eval_task(name, [task_dir])
            for m in task.metrics:
                assert m in r["metrics"], (name, m)
                assert r["metrics"][m] is not None, (name, m)
            assert r["num_samples"] and r["num_samples"] <= 12
            assert r["wall_time_s"] > 0 and r["settings"]["version"] == task.version
    text, cls = runs[0]
    assert 0 <= text["tasks"]["t_vqa"]["metrics"]["vqa_accuracy"] <= 1
    assert {"probe_accuracy/color", "probe_accuracy/shape"} <= set(text["tasks"]["t_probe"]["metrics"])
    assert {"class_accuracy/color", "class_accuracy/shape"} <= set(text["tasks"]["t_t2i"]["metrics"])
    assert cls["tasks"]["t_c2i"]["comparable_with_published"] is False
    acc = cls["tasks"]["t_c2i"]["details"]["extractor"]["test_accuracy"]["label"]
    assert 0.0 <= acc <= 1.0 and acc * 100 == pytest.approx(round(acc * 100))  # a fraction of max_test=100 images
    # same seed, same results (timings aside)
    assert without_timings(runs[0]) == without_timings(runs[1])
    # the report: Markdown with sample grids and the probe plots
    md = (tmp_path / "run0" / "results.md").read_text()
    assert "## t_t2i" in md and "NOT comparable" in md and "Linear probe" in md
    files = tmp_path / "run0" / "results_files"
    assert (files / "t_t2i_samples.png").is_file() and (files / "t_probe_probe_color.png").is_file()
    assert (tmp_path / "run0" / "class_files" / "t_c2i_samples.png").is_file()


def test_list_shows_tasks_and_metrics(capsys, task_dir):
    assert main(["eval", "--list", "--include-path", str(task_dir)]) == 0
    out = capsys.readouterr().out
    assert "fmnist_c2i" in out and "t_c2i" in out and "vqa_accuracy" in out and "lower is better" in out
    lines = out.splitlines()
    row = lambda name: next(x for x in lines if x.split()[:1] == [name])  # noqa: E731
    # each task row: name, head, dataset/split, its metrics (as its YAML lists them)
    assert row("easyvqa_vqa").split()[1:] == ["vqa", "easyvqa/test", "vqa_accuracy,", "exact_match"]
    assert row("fmnist_c2i").split()[1:3] == ["class_to_image", "fashion_mnist/test"]
    assert row("t_c2i").split()[1:3] == ["class_to_image", "digits/test"]  # the include-path task, its dataset override
    # each metric row states its direction: FID is the only lower-is-better one of these
    assert row("fid").split()[1:4] == ["lower", "is", "better,"]
    for m in ("vqa_accuracy", "class_accuracy", "bleu4", "precision"):
        assert row(m).split()[1:4] == ["higher", "is", "better,"], m


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("unimodal eval: error:"), err
    return err


def test_bad_requests_give_one_clear_error(text_checkpoint, class_checkpoint, task_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    assert run(text_checkpoint, ["easyvqa_vq"], out, task_dir) == 2
    err = one_error(capsys)
    assert "unknown eval task 'easyvqa_vq'" in err and "Did you mean 'easyvqa_vqa'" in err
    # a class-conditional model cannot answer questions
    assert run(class_checkpoint, ["t_probe", "easyvqa_vqa"], out, task_dir) == 2
    assert "needs a text model" in one_error(capsys)
    # a text model without a class table cannot do class→image
    assert run(text_checkpoint, ["t_c2i"], out, task_dir) == 2
    assert "needs a class-conditional model" in one_error(capsys)
    # missing weight files: Inception and a standard CLIP
    monkeypatch.delenv("UNIMODAL_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("IMAGENET_DIR", str(tmp_path))  # the task reads it; the weights are checked first
    assert run(class_checkpoint, ["imagenet_c2i"], out, task_dir, "--inception-weights", str(tmp_path / "nope.pth")) == 2
    assert "nope.pth' does not exist" in one_error(capsys)
    (task_dir / "t_clip.yaml").write_text(f"name: t_clip\ninclude: easyvqa_t2i\nclip: {{model: ViT-B-32, weights: {tmp_path / 'clip.bin'}}}\n")
    assert run(text_checkpoint, ["t_clip"], out, task_dir) == 2
    assert "clip.bin' does not exist" in one_error(capsys)
    # not a checkpoint at all
    assert run(tmp_path, ["t_vqa"], out, task_dir) == 2
    assert "not a unimodal checkpoint" in one_error(capsys)
    # missing arguments, and a limit below 1
    assert main(["eval", "--tasks", "t_vqa", "--output", str(out)]) == 2
    assert "--checkpoint and --tasks are required" in one_error(capsys)
    assert main(["eval", "--checkpoint", str(text_checkpoint), "--output", str(out)]) == 2
    assert "--checkpoint and --tasks are required" in one_error(capsys)
    with pytest.raises(SystemExit) as e:
        run(text_checkpoint, ["t_vqa"], out, task_dir, "--limit", "0")
    assert e.value.code == 2 and "--limit: 0 is invalid: must be an integer >= 1" in capsys.readouterr().err
    assert not out.exists()


def test_checkpoint_must_be_trained_for_the_head(text_checkpoint):
    from unimodal.checkpoint import load_checkpoint
    from unimodal.eval import EvalError, check_checkpoint, get_eval_task

    ckpt = load_checkpoint(text_checkpoint)
    ckpt.extra["tasks"] = [{"name": "vqa", "dataset": "easyvqa"}]
    check_checkpoint(get_eval_task("easyvqa_vqa"), ckpt, tokenizer=object())
    check_checkpoint(get_eval_task("easyvqa_probe"), ckpt, tokenizer=object())  # any model can be probed
    with pytest.raises(EvalError, match="needs a checkpoint trained on task 'captioning'.*\\['vqa'\\]"):
        check_checkpoint(get_eval_task("easyvqa_caption"), ckpt, tokenizer=object())


def _by_hand(pred: str, ref: str) -> bool:
    """easy-VQA's single-reference rule, written out: lower case, punctuation and articles dropped."""
    words = lambda s: [w for w in "".join(c if c.isalnum() or c.isspace() else " " for c in s.lower()).split()  # noqa: E731
                       if w not in ("a", "an", "the")]
    return words(pred) == words(ref)


def test_text_scores_are_the_mean_over_the_listed_predictions(text_checkpoint, task_dir, tmp_path):
    """With few enough questions that results.json lists every prediction, each text metric is
    recomputed by hand from those predictions and their references."""
    out = tmp_path / "r.json"
    assert main(["eval", "--checkpoint", str(text_checkpoint), "--tasks", "t_vqa,t_caption", "--output", str(out),
                 "--limit", "8", "--include-path", str(task_dir), "--no-progress"]) == 0
    res = json.loads(out.read_text())["tasks"]
    vqa, cap = res["t_vqa"], res["t_caption"]
    ex = vqa["details"]["examples"]
    assert 2 <= vqa["num_samples"] == len(ex) <= 8 and all(len(e["references"]) == 1 for e in ex)
    hand = sum(_by_hand(e["prediction"], e["references"][0]) for e in ex) / len(ex)
    assert 0 < hand < 1  # some right, some wrong: a constant score cannot match
    assert vqa["metrics"]["vqa_accuracy"] == pytest.approx(hand)
    exact = sum(e["prediction"].strip().lower() == e["references"][0].strip().lower() for e in ex) / len(ex)
    assert vqa["metrics"]["exact_match"] == pytest.approx(exact)
    cex = cap["details"]["examples"]
    assert cap["num_samples"] == len(cex) == 8
    exact = sum(e["prediction"].strip().lower() in [r.strip().lower() for r in e["references"]] for e in cex) / 8
    assert cap["metrics"]["exact_match"] == pytest.approx(exact)
    assert 0.0 <= cap["metrics"]["bleu4"] <= 1.0 and cap["metrics"]["cider_d"] >= 0.0
