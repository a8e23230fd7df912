import pytest
import yaml

from unimodal.eval import EvalError, TaskRegistry, get_eval_task, list_eval_tasks

SHIPPED = ["coco_karpathy_test", "digits_probe", "easyvqa_caption", "easyvqa_probe", "easyvqa_t2i", "easyvqa_vqa", "fmnist_c2i", "fmnist_probe", "gqa_testdev", "imagenet_c2i", "pope_adversarial", "pope_popular", "pope_random", "textvqa_val", "vqav2_val"]


def _raw_task(name: str) -> dict:
    """A shipped task's YAML read by hand: its own keys over the keys of the file or task it includes."""
    from pathlib import Path

    import unimodal.eval

    files = {yaml.safe_load(f.read_text())["name"]: f for f in (Path(unimodal.eval.__file__).parent / "tasks").glob("*.yaml")}
    raw = yaml.safe_load(files[name].read_text())
    inc = raw.pop("include", None)
    if inc is None:
        return raw
    base = _raw_task(inc) if inc in files else yaml.safe_load((files[name].parent / inc).read_text())
    return {**base, **{k: ({**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v) for k, v in raw.items()}}


def test_every_shipped_task_loads_as_its_file_says(monkeypatch):
    monkeypatch.setenv("IMAGENET_DIR", "/data/imagenet")  # imagenet_c2i reads it
    monkeypatch.setenv("UNIMODAL_DATA", "/data/bench")
    assert list_eval_tasks() == SHIPPED
    for name in SHIPPED:
        t, raw = get_eval_task(name), _raw_task(name)
        assert t.name == name and t.version == raw.get("version", 1) >= 1
        for key in ("head", "dataset", "split", "metrics", "num_samples", "seed", "generation", "extractor", "probe", "metric_options"):
            if key in raw:
                assert getattr(t, key) == raw[key], (name, key)
        # options keep their values, with ${VAR} (and ${VAR:-default}) expanded from the environment
        for k, v in raw.get("options", {}).items():
            want = v.replace("${IMAGENET_DIR:-}", "/data/imagenet").replace("${UNIMODAL_DATA:-data}", "/data/bench") if isinstance(v, str) else v
            assert t.options[k] == want, (name, k)


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
    (tmp_path / "env.yaml").write_text("include: imagenet_c2i\nname: inet\nenv: [MY_DATA]\noptions: {path: '${MY_DATA}'}\n")
    reg = TaskRegistry([tmp_path])
    small = reg.get("easyvqa_vqa_small")
    assert small.num_samples == 10 and small.metrics == ["vqa_accuracy", "exact_match"]
    c2i = reg.get("fmnist_c2i")
    assert c2i.generation["steps"] == 4 and c2i.generation["cfg_scale"] == 1.5
    assert reg.get("inet").options["path"] == "/data/x" and reg.get("inet").env == ["MY_DATA"]


def test_environment_variables_are_confined(tmp_path, monkeypatch):
    monkeypatch.setenv("SOME_TOKEN", "s3cr3t")
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    monkeypatch.delenv("UNIMODAL_DATA", raising=False)
    base = "name: t\nhead: vqa\ndataset: easyvqa\nmetrics: [exact_match]\n"
    for leak in ("${SOME_TOKEN}", "${HOME}", "x-${SOME_TOKEN}-y"):
        (tmp_path / "t.yaml").write_text(base + f"description: '{leak}'\n")
        with pytest.raises(EvalError, match=r"description reads \$\{(SOME_TOKEN|HOME)\}, which the task does not declare") as e:
            TaskRegistry([tmp_path]).get("t")
        assert "s3cr3t" not in str(e.value)
    # an allowed but undefined variable is an error, not a literal; a default or $$ is honoured
    (tmp_path / "t.yaml").write_text(base + "options: {path: '${UNIMODAL_DATA}/vqa'}\n")
    with pytest.raises(EvalError, match=r"options.path reads \$\{UNIMODAL_DATA\}, which is not set"):
        TaskRegistry([tmp_path]).get("t")
    # imagenet_c2i's data path may stay unset (an ADM reference batch needs no images); the run then says so up front
    from unimodal.eval.harness import check_data

    with pytest.raises(EvalError, match=r"options \['path'\] are empty"):
        check_data(get_eval_task("imagenet_c2i"))
    (tmp_path / "t.yaml").write_text(base + "options: {path: '${UNIMODAL_DATA:-/d}/vqa', note: 'cost $$5'}\n")
    assert TaskRegistry([tmp_path]).get("t").options == {"path": "/d/vqa", "note": "cost $5"}
    monkeypatch.setenv("UNIMODAL_DATA", "/mnt")
    assert TaskRegistry([tmp_path]).get("t").options["path"] == "/mnt/vqa"
    # listing does not expand, so it works without the variables
    assert TaskRegistry([tmp_path]).get("imagenet_c2i", expand=False).options["path"] == "${IMAGENET_DIR:-}"
    (tmp_path / "t.yaml").write_text(base + "env: 'SOME_TOKEN'\n")
    with pytest.raises(EvalError, match="'env' must be a list"):
        TaskRegistry([tmp_path]).get("t")


def test_include_stays_inside_the_search_path(tmp_path):
    tasks, outside = tmp_path / "tasks" / "sub", tmp_path / "elsewhere"
    tasks.mkdir(parents=True)
    outside.mkdir()
    (outside / "x.yaml").write_text("name: x\nhead: vqa\ndataset: easyvqa\nmetrics: [exact_match]\n")
    for inc in ("../../elsewhere/x.yaml", str(outside / "x.yaml")):
        (tasks / "t.yaml").write_text(f"name: t\ninclude: '{inc}'\n")
        with pytest.raises(EvalError, match="outside the task search path"):
            TaskRegistry([tasks]).get("t")
    # the same file is fine once its directory is on the search path
    (tasks / "t.yaml").write_text("name: t\ninclude: '../../elsewhere/x.yaml'\nnum_samples: 3\n")
    assert TaskRegistry([tasks, outside]).get("t").num_samples == 3


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


BASE = "name: t\nhead: {head}\ndataset: {dataset}\nmetrics: [{metrics}]\n"


@pytest.mark.parametrize("extra, match", [
    ("probe: {pool: max}", r"probe.pool must be one of \['mean', 'tokens'\], got 'max'"),
    ("probe: {layers: [1, -2]}", "probe.layers must be 'all' or a non-empty list"),
    ("probe: {noisy_t: 2.5}", "probe.noisy_t must be an integer >= 0"),
    ("probe: {train_samples: 0}", "probe.train_samples must be an integer >= 1"),
    ("probe: {targets: color}", "probe.targets must be a non-empty list"),
    ("probe: {controls: 'no'}", "probe.controls must be true or false"),
    ("probe: {layer: [1]}", r"unknown probe option\(s\) \['layer'\]"),
    ("seed: -1", "seed must be an integer >= 0"),
    ("num_samples: 0", "num_samples must be an integer >= 1"),
])
def test_probe_options_are_checked_when_the_task_loads(tmp_path, extra, match):
    (tmp_path / "t.yaml").write_text(BASE.format(head="probe", dataset="digits", metrics="probe_accuracy") + extra + "\n")
    with pytest.raises(EvalError, match=match):
        TaskRegistry([tmp_path]).get("t")


@pytest.mark.parametrize("extra, match", [
    ("generation: {steps: 0}", "generation.steps must be an integer >= 1"),
    ("generation: {cfg_scale: .nan}", "generation.cfg_scale must be a finite number"),
    ("generation: {batch_size: 2.5}", "generation.batch_size must be an integer >= 1"),
    ("generation: {sampler: dpm+}", "dpm\\+\\+"),
    ("generation: {sampler_kwargs: 3}", "sampler_kwargs must be a mapping"),
    ("metric_options: {fid: {answer_processing: official}}", "names 'fid', which is not one of its metrics"),
    ("metric_options: {clip_score: {answer_processing: official}}", "option of metric 'clip_score'"),
])
def test_generation_and_metric_options_are_checked_when_the_task_loads(tmp_path, extra, match):
    (tmp_path / "t.yaml").write_text(BASE.format(head="text_to_image", dataset="easyvqa", metrics="clip_score") + extra + "\n")
    with pytest.raises(EvalError, match=match):
        TaskRegistry([tmp_path]).get("t")


def test_metric_options_reach_the_metric(tmp_path):
    from unimodal.eval.context import Evidence
    from unimodal.eval.harness import score

    (tmp_path / "a.yaml").write_text(BASE.format(head="vqa", dataset="easyvqa", metrics="vqa_accuracy").replace("name: t", "name: a"))
    (tmp_path / "b.yaml").write_text("name: b\ninclude: a\nmetric_options: {vqa_accuracy: {answer_processing: lmms_eval}}\n")
    (tmp_path / "c.yaml").write_text("name: c\ninclude: a\nmetric_options: {vqa_accuracy: {answer_processing: offical}}\n")
    reg = TaskRegistry([tmp_path])
    # ten identical references: the official scorer compares raw strings, lmms-eval normalises the prediction
    ev = Evidence((["Yes.", "two"], [["yes"] * 10, ["2"] * 10]), {})
    assert score(reg.get("a"), ev) == {"vqa_accuracy": 0.0}
    assert score(reg.get("b"), ev) == {"vqa_accuracy": 1.0}
    with pytest.raises(EvalError, match="answer_processing' must be one of 'official', 'lmms_eval', got 'offical'"):
        reg.get("c")


def test_output_path_is_checked_before_any_work(tmp_path):
    from unimodal.eval.harness import check_output

    (tmp_path / "f").write_text("x")
    check_output(tmp_path / "new" / "r.json")
    for bad, match in ((tmp_path, "is a directory"), (tmp_path / "r.txt", "must be a .json file"), (tmp_path / "f" / "r.json", "is a file")):
        with pytest.raises(EvalError, match=match):
            check_output(bad)


def test_dataset_files_are_checked_before_the_checkpoint_is_read(tmp_path, monkeypatch):
    from unimodal.eval import run_eval

    monkeypatch.setenv("UNIMODAL_DATA", str(tmp_path))
    (tmp_path / "pope").mkdir()
    # the checkpoint does not exist either: the data error comes first, so nothing was loaded or run
    with pytest.raises(EvalError, match=r"eval task 'pope_random': .*coco_pope_random.json does not exist"):
        run_eval(tmp_path / "no-checkpoint", ["easyvqa_vqa", "pope_random"], tmp_path / "r.json", progress=False)
    assert not (tmp_path / "r.json").exists()
