"""The lmms-eval adapter: `lmms-eval --model unimodal` on a local task over a local dataset, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install -e '.[dev]' installs it)")

from lmms_eval.api.instance import Instance  # noqa: E402

from unimodal.eval.errors import EvalError  # noqa: E402

COLORS = ["red", "blue", "green", "red", "teal", "gray"]
QUESTIONS = ["what color is the shape?", "what shape is in the image?", "is there a red shape?"] * 2


def _images():
    from PIL import Image, ImageDraw

    out = []
    for i, c in enumerate(COLORS):
        im = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(im).ellipse((8 + i, 8, 50, 56 - i), fill=c)
        out.append(im)
    return out


@pytest.fixture(scope="module")
def local_task(tmp_path_factory):
    """A saved DatasetDict and two lmms-eval task YAMLs (generate_until, multiple_choice) reading it."""
    import datasets

    root = tmp_path_factory.mktemp("lmms")
    feats = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": _images(), "question": QUESTIONS, "answer": COLORS}, features=feats)
    datasets.DatasetDict({"test": ds}).save_to_disk(str(root / "data"))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(
        "def doc_to_visual(doc):\n    return [doc['image'].convert('RGB')]\n\n"
        "def doc_to_text(doc, lmms_eval_specific_kwargs=None):\n    return '<image>\\n' + doc['question']\n\n"
        "def doc_to_choice(doc):\n    return ['red', 'blue', 'green']\n"
    )
    common = (f"dataset_path: {root / 'data'}\ndataset_kwargs:\n  load_from_disk: true\ntest_split: test\n"
              "doc_to_visual: !function utils.doc_to_visual\ndoc_to_text: !function utils.doc_to_text\ndoc_to_target: answer\n")
    (tasks / "um_local_vqa.yaml").write_text(
        "task: um_local_vqa\n" + common + "output_type: generate_until\n"
        "generation_kwargs:\n  max_new_tokens: 4\n  temperature: 0\n  until: ['\\n']\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (tasks / "um_local_mc.yaml").write_text(
        "task: um_local_mc\n" + common + "output_type: multiple_choice\ndoc_to_choice: !function utils.doc_to_choice\n"
        "metric_list:\n  - metric: acc\n"
    )
    return root


def test_the_plugin_is_registered_through_the_entry_point():
    from lmms_eval.models import get_model

    from unimodal.eval.lmms_adapter import UnimodalLMM

    assert get_model("unimodal") is UnimodalLMM


def test_lmms_eval_cli_runs_local_tasks_and_answers_as_our_vqa_head(text_checkpoint, local_task, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["HF_DATASETS_CACHE"] = str(tmp_path / "hf-cache")
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # one process: no process group, no port
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "unimodal", "--model_args", f"pretrained={text_checkpoint}", "--batch_size", "4",
         "--tasks", "um_local_vqa,um_local_mc", "--include_path", str(local_task / "tasks"), "--output_path", str(tmp_path / "out"),
         "--log_samples"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = sorted((tmp_path / "out").rglob("*_results.json"))
    assert found, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(found[0].read_text())["results"]
    assert set(results) == {"um_local_vqa", "um_local_mc"}
    assert 0 <= results["um_local_vqa"]["exact_match,none"] <= 1 and 0 <= results["um_local_mc"]["acc,none"] <= 1
    # every answer equals what our own VQA head answers for the same image and question
    import datasets

    from unimodal.checkpoint import load_checkpoint
    from unimodal.tasks import VQA, build_image_bank
    from unimodal.tokenizers import TextTokenizer

    ckpt = load_checkpoint(text_checkpoint)
    head = VQA(ckpt.visual, TextTokenizer.load(ckpt.tokenizer_dir))
    bank = build_image_bank(datasets.load_from_disk(str(local_task / "data"))["test"], ckpt.visual)
    ours = head.predict(ckpt.model.eval(), bank.tokens, QUESTIONS, max_new_tokens=4)
    rows = [json.loads(line) for line in next((tmp_path / "out").rglob("*_samples_um_local_vqa.jsonl")).read_text().splitlines()]
    theirs = {r["doc_id"]: r["filtered_resps"] for r in rows}
    assert [theirs[i] for i in range(len(QUESTIONS))] == [a.split("\n")[0].strip() for a in ours]


def _adapter(checkpoint, **kw):
    import datasets

    from unimodal.eval.lmms_adapter import UnimodalLMM

    lm = UnimodalLMM(pretrained=str(checkpoint), **kw)
    lm.task_dict = {"t": {"test": datasets.Dataset.from_dict({"image": _images(), "question": QUESTIONS})}}
    return lm


def _visual(doc):
    return [doc["image"]]


def _req(kind: str, args: tuple) -> Instance:
    return Instance(kind, args, 0, metadata={"task": args[4], "doc_id": args[3], "repeats": 1})


def test_loglikelihood_equals_step_by_step_cached_decoding(text_checkpoint):
    from unimodal.batch import Example
    from unimodal.generate import Generator
    from unimodal.layout import Layout

    lm = _adapter(text_checkpoint, batch_size=3)
    reqs = [_req("loglikelihood", (QUESTIONS[i], " " + COLORS[i], _visual, i, "t", "test")) for i in range(6)]
    scored = lm.loglikelihood(reqs)
    tokens = lm._tokens(_images())
    for i, (ll, greedy) in enumerate(scored):
        cont = lm.head.encode(COLORS[i])
        g = Generator(lm.model, 1)
        g.prefill([Example(Layout(lm.head.context(QUESTIONS[i])), tokens[i])])
        ref, all_greedy = 0.0, True
        for t in cont:  # one token at a time through the KV cache: an independent path to the same probabilities
            logp = torch.log_softmax(g.logits[0].float(), -1)
            ref += float(logp[t])
            all_greedy &= int(logp.argmax()) == t
            g.feed_text(torch.tensor([t]))
        assert ll == pytest.approx(ref, abs=1e-4) and greedy == all_greedy
    # the model's own greedy answer is greedy under loglikelihood too
    answer = lm.generate_until([_req("generate_until", (QUESTIONS[0], {"max_new_tokens": 3, "until": []}, _visual, 0, "t", "test"))])[0]
    if answer:
        (_, greedy), = lm.loglikelihood([_req("loglikelihood", (QUESTIONS[0], answer, _visual, 0, "t", "test"))])
        assert greedy


def test_generate_until_honours_until_and_max_new_tokens(text_checkpoint):
    lm = _adapter(text_checkpoint)
    req = lambda kw: _req("generate_until", (QUESTIONS[1], kw, _visual, 1, "t", "test"))  # noqa: E731
    long = lm.generate_until([req({"max_new_tokens": 6, "until": []})])[0]
    short = lm.generate_until([req({"max_new_tokens": 1, "until": []})])[0]
    assert long.startswith(short)
    if len(long) > 1:
        cut = lm.generate_until([req({"max_new_tokens": 6, "until": [long[1:2]]})])[0]
        assert cut == long[: long.index(long[1:2])].strip()


def test_bad_model_args_are_one_clear_error(text_checkpoint, tmp_path):
    with pytest.raises(EvalError, match=r"unknown argument\(s\) \['bogus'\]; valid: pretrained"):
        _adapter(text_checkpoint, bogus=1)
    with pytest.raises(EvalError, match="batch_size=0 is invalid"):
        _adapter(text_checkpoint, batch_size=0)
    with pytest.raises(EvalError, match="use_ema.*|not a boolean"):
        _adapter(text_checkpoint, use_ema="maybe")
    with pytest.raises(Exception, match="does not exist|not a unimodal checkpoint"):
        _adapter(tmp_path / "none")
    lm = _adapter(text_checkpoint)
    two = lambda doc: [doc["image"], doc["image"]]  # noqa: E731
    with pytest.raises(EvalError, match="2 images in one request"):
        lm.generate_until([_req("generate_until", ("q", {}, two, 0, "t", "test"))])
