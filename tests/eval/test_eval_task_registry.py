import pytest
import yaml

from unimodal.eval import EvalError, TaskRegistry, get_eval_task, list_eval_tasks

SHIPPED = ["digits_probe", "easyvqa_caption", "easyvqa_probe", "easyvqa_t2i", "easyvqa_vqa", "fmnist_c2i", "fmnist_probe", "imagenet_c2i"]


def test_every_shipped_task_loads_and_is_listed():
    assert list_eval_tasks() == SHIPPED
    for name in SHIPPED:
        t = get_eval_task(name)
        assert t.name == name and t.metrics and t.version >= 1


def test_include_merges_base_and_variant():
    t = get_eval_task("digits_probe")
    base = get_eval_task("fmnist_probe")
    assert t.dataset == "digits" and t.head == base.head and t.metrics == base.metrics
    assert t.probe["train_samples"] == 1500 and t.probe["pool"] == base.probe["pool"]  # nested mapping merged
    assert t.num_samples is None


def test_unknown_names_list_close_matches(tmp_path):
    with pytest.raises(EvalError, match="did you mean 'easyvqa_vqa'|Did you mean 'easyvqa_vqa'"):
        get_eval_task("easyvqa_vq")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"name": "bad", "head": "vqa", "dataset": "easyvqa", "metrics": ["vqa_acuracy"]}))
    with pytest.raises(EvalError, match="'vqa_accuracy'"):
        get_eval_task("bad", [tmp_path])


def test_metric_must_fit_the_head(tmp_path):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"name": "t", "head": "vqa", "dataset": "easyvqa", "metrics": ["fid"]}))
    with pytest.raises(EvalError, match="metric 'fid' reads images, head 'vqa' gives text"):
        get_eval_task("t", [tmp_path])


def test_include_path_adds_and_overrides_tasks(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("name: easyvqa_vqa_small\ninclude: easyvqa_vqa\nnum_samples: 10\n")
    (tmp_path / "over.yaml").write_text("include: fmnist_c2i\nname: fmnist_c2i\ngeneration: {steps: 4}\n")
    monkeypatch.setenv("MY_DATA", "/data/x")
    (tmp_path / "env.yaml").write_text("include: imagenet_c2i\nname: inet\noptions: {path: '${MY_DATA}'}\n")
    reg = TaskRegistry([tmp_path])
    small = reg.get("easyvqa_vqa_small")
    assert small.num_samples == 10 and small.metrics == ["vqa_accuracy", "exact_match"]
    c2i = reg.get("fmnist_c2i")
    assert c2i.generation["steps"] == 4 and c2i.generation["cfg_scale"] == 1.5
    assert reg.get("inet").options["path"] == "/data/x"


def test_bad_files_give_one_clear_error(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\ninclude: b.yaml\n")
    (tmp_path / "b.yaml").write_text("name: b\ninclude: a.yaml\n")
    with pytest.raises(EvalError, match="cycle"):
        TaskRegistry([tmp_path]).get("a")
    (tmp_path / "a.yaml").write_text("name: a\nhead: vqa\ndataset: easyvqa\nmetrics: [exact_match]\nsplitt: test\n")
    (tmp_path / "b.yaml").unlink()
    with pytest.raises(EvalError, match="unknown field 'splitt'.*'split'"):
        TaskRegistry([tmp_path]).get("a")
    (tmp_path / "a.yaml").write_text("name: a\ninclude: easyvqa_t2i\ngeneration: {stpes: 4}\n")
    with pytest.raises(EvalError, match="unknown generation setting.*stpes"):
        TaskRegistry([tmp_path]).get("a")
    with pytest.raises(EvalError, match="not a directory"):
        TaskRegistry([tmp_path / "missing"])
