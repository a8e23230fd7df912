"""Benchmark loaders (VQAv2, GQA, POPE, TextVQA, COCO Karpathy) on tiny fixtures in the official file formats,
their metrics against hand-computed values and pycocoevalcap, and `run_eval` over the shipped benchmark tasks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unimodal.errors import MissingFileError, RecordError

BENCHMARK_TASKS = ["vqav2_val", "gqa_testdev", "pope_random", "pope_popular", "pope_adversarial", "textvqa_val", "coco_karpathy_test"]
SHORT = "\nAnswer the question using a single word or phrase."  # short_answer@1

VQAV2_QUESTIONS = [  # (question_id, image_id, question, answer_type, ten answers)
    (1000, 1, "Is there a cat?", "yes/no", ["yes"] * 10),
    (1001, 1, "How many dogs are there?", "number", ["2"] * 2 + ["3"] * 8),
    (1002, 2, "What color is the bus?", "other", ["red"] * 3 + ["blue"] * 7),
    (1003, 2, "What is on the table?", "other", ["apple"] * 6 + ["fruit"] * 4),
]
GQA_QUESTIONS = {  # qid -> (imageId, question, answer)
    "20968379": ("n15740", "Is the sky blue?", "yes"),
    "20968380": ("n15740", "What is the man holding?", "umbrella"),
    "01234567": ("n99", "Which color is the car?", "white"),
}
POPE = [("COCO_val2014_000000000001.jpg", "Is there a dog in the image?", "yes"),
        ("COCO_val2014_000000000001.jpg", "Is there a cat in the image?", "yes"),
        ("COCO_val2014_000000000002.jpg", "Is there a bus in the image?", "yes"),
        ("COCO_val2014_000000000002.jpg", "Is there a car in the image?", "no"),
        ("COCO_val2014_000000000001.jpg", "Is there a horse in the image?", "no"),
        ("COCO_val2014_000000000002.jpg", "Is there a bird in the image?", "no"),
        ("COCO_val2014_000000000001.jpg", "Is there a person in the image?", "yes")]
TEXTVQA = [(34602, "003a8ae2ef43b901", "what is the brand of this camera?", ["nous les gosses"] * 4 + ["dakota"] * 6),
           (34603, "00b1d2f1e3c4a5b6", "what number is on the jersey?", ["23"] * 9 + ["28"])]
KARPATHY = [  # (filepath, cocoid, split, raw sentences)
    ("val2014", 1, "test", ["A man's red T-shirt, on a small moped.", "A man riding a moped on a dirt road.",
                            "Two dogs don't play; they can't!", "A person on a scooter (small) outside.", "A man on a bike."]),
    ("val2014", 2, "test", ["A giraffe standing next to a tree.", "The giraffe is eating leaves from a tall tree.",
                            "A tall giraffe stands by the trees -- it's sunny.", "A giraffe near a tree in a zoo.", "Giraffe and tree."]),
    ("train2014", 3, "train", ["A kitchen with a stove.", "A stove in a kitchen.", "Kitchen.", "A small kitchen.", "An oven."]),
    ("val2014", 4, "test", ["A plate with broccoli, carrots and rice.", "Food on a white plate.", "A meal of rice and 2 vegetables.",
                            "Broccoli and carrots on a plate.", "It's 10:30 a.m. and Mr. Smith's lunch is ready."]),
]


def _image(path: Path, seed: int) -> None:
    """A small non-square JPEG, wider than the test model's 64 px (so it is resized like a real photo)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (60 + seed % 3 * 4, 80 + seed, 3), dtype=np.uint8)).save(path, quality=95)


def write_benchmarks(root: Path) -> Path:
    """The README's layout under `root` ($UNIMODAL_DATA), every file in its benchmark's official format."""
    coco = root / "coco"
    for image_id in (1, 2):
        _image(coco / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", image_id)
    _image(coco / "train2014" / "COCO_train2014_000000000003.jpg", 3)
    _image(coco / "val2014" / "COCO_val2014_000000000004.jpg", 4)
    # VQAv2: questions + annotations, images in the COCO folder
    (root / "vqav2").mkdir(parents=True)
    questions = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": "val2014",
                 "questions": [{"image_id": im, "question": q, "question_id": qid} for qid, im, q, _, _ in VQAV2_QUESTIONS]}
    annotations = {"info": {}, "license": {}, "data_subtype": "val2014", "annotations": [
        {"question_type": q.split()[0].lower(), "multiple_choice_answer": max(a, key=a.count), "answer_type": t,
         "answers": [{"answer": x, "answer_confidence": "yes", "answer_id": i + 1} for i, x in enumerate(a)],
         "image_id": im, "question_id": qid} for qid, im, q, t, a in reversed(VQAV2_QUESTIONS)]}  # order differs on purpose
    (root / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(questions))
    (root / "vqav2" / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(annotations))
    # GQA: one dict qid -> question
    gqa = {qid: {"semantic": [], "entailed": [], "equivalent": [qid], "question": q, "imageId": im, "isBalanced": True,
                 "groups": {"global": None, "local": "x"}, "answer": a, "semanticStr": "", "annotations": {},
                 "types": {"detailed": "existC", "semantic": "attr", "structural": "verify"}, "fullAnswer": f"The answer is {a}."}
           for qid, (im, q, a) in GQA_QUESTIONS.items()}
    (root / "gqa").mkdir()
    (root / "gqa" / "testdev_balanced_questions.json").write_text(json.dumps(gqa))
    for i, im in enumerate(sorted({im for im, _, _ in GQA_QUESTIONS.values()})):
        _image(root / "gqa" / "images" / f"{im}.jpg", 10 + i)
    # POPE: JSON lines, the same questions in each of the three files
    (root / "pope").mkdir()
    for split in ("random", "popular", "adversarial"):
        lines = [json.dumps({"question_id": i + 1, "image": im, "text": t, "label": lab}) for i, (im, t, lab) in enumerate(POPE)]
        (root / "pope" / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n")
    # TextVQA
    (root / "textvqa").mkdir()
    data = [{"question": q, "image_id": im, "image_classes": ["Camera"], "flickr_original_url": "", "flickr_300k_url": "",
             "image_width": 1024, "image_height": 768, "answers": a, "question_tokens": q.split(), "question_id": qid, "set_name": "val"}
            for qid, im, q, a in TEXTVQA]
    (root / "textvqa" / "TextVQA_0.5.1_val.json").write_text(json.dumps({"dataset_type": "val", "dataset_name": "textvqa",
                                                                         "dataset_version": "0.5.1", "data": data}))
    for i, (_, im, _, _) in enumerate(TEXTVQA):
        _image(root / "textvqa" / "train_images" / f"{im}.jpg", 20 + i)
    # COCO captions, Karpathy split
    images = [{"filepath": fp, "sentids": list(range(5 * i, 5 * i + 5)), "filename": f"COCO_{fp}_{cid:012d}.jpg", "imgid": i,
               "split": split, "sentences": [{"tokens": s.lower().split(), "raw": s, "imgid": i, "sentid": 5 * i + j} for j, s in enumerate(ss)],
               "cocoid": cid} for i, (fp, cid, split, ss) in enumerate(KARPATHY)]
    (coco / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_benchmarks(tmp_path_factory.mktemp("benchmarks"))


def _load(name, split, root, **options):
    from unimodal.data import load_dataset

    return load_dataset(name, split, **options)


def _same_image(decoded, path: Path) -> bool:
    return np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(Image.open(path).convert("RGB")))


# ---- loaders ------------------------------------------------------------------------------


def test_vqav2_records(data_root):
    ds = _load("vqav2", "val2014", data_root, path=data_root / "vqav2", images=data_root / "coco" / "val2014")
    assert len(ds) == len(VQAV2_QUESTIONS)
    for rec, (qid, im, q, t, answers) in zip(ds, VQAV2_QUESTIONS):  # questions-file order
        assert rec["question_id"] == qid and rec["image_id"] == im and rec["answer_type"] == t
        assert rec["raw_question"] == q and rec["question"] == q + SHORT
        assert rec["answers"] == answers and rec["answer"] == max(answers, key=answers.count)
        assert _same_image(rec["image"], data_root / "coco" / "val2014" / f"COCO_val2014_{im:012d}.jpg")
    plain = _load("vqav2", "val2014", data_root, path=data_root / "vqav2", images=data_root / "coco" / "val2014", prompt="plain@1")
    assert plain["question"] == [q for _, _, q, _, _ in VQAV2_QUESTIONS]


def test_gqa_records(data_root):
    ds = _load("gqa", "testdev", data_root, path=data_root / "gqa")  # images default to <path>/images
    assert ds["question_id"] == list(GQA_QUESTIONS)  # file order, ids kept as strings
    for rec, (im, q, a) in zip(ds, GQA_QUESTIONS.values()):
        assert rec["raw_question"] == q and rec["question"] == q + SHORT and rec["answer"] == a and rec["image_id"] == im
        assert rec["structural"] == "verify" and rec["full_answer"] == f"The answer is {a}."
        assert _same_image(rec["image"], data_root / "gqa" / "images" / f"{im}.jpg")


def test_pope_records(data_root):
    for split in ("random", "popular", "adversarial"):
        ds = _load("pope", split, data_root, path=data_root / "pope", images=data_root / "coco" / "val2014")
        assert ds["question_id"] == list(range(1, len(POPE) + 1))
        assert ds["raw_question"] == [t for _, t, _ in POPE] and ds["answer"] == [lab for _, _, lab in POPE]
        assert ds["question"][0] == POPE[0][1] + SHORT
        assert _same_image(ds[3]["image"], data_root / "coco" / "val2014" / POPE[3][0])


def test_textvqa_records(data_root):
    ds = _load("textvqa", "val", data_root, path=data_root / "textvqa")
    for rec, (qid, im, q, a) in zip(ds, TEXTVQA):
        assert rec["question_id"] == qid and rec["image_id"] == im and rec["raw_question"] == q and rec["answers"] == a
        assert _same_image(rec["image"], data_root / "textvqa" / "train_images" / f"{im}.jpg")


def test_coco_karpathy_records(data_root):
    ds = _load("coco_karpathy", "test", data_root, path=data_root / "coco")
    test = [k for k in KARPATHY if k[2] == "test"]
    assert ds["cocoid"] == [cid for _, cid, _, _ in test]
    assert ds["captions"] == [ss for _, _, _, ss in test]  # the raw sentences
    for rec, (fp, cid, _, _) in zip(ds, test):
        assert rec["file"] == f"{fp}/COCO_{fp}_{cid:012d}.jpg" and _same_image(rec["image"], data_root / "coco" / rec["file"])
    assert _load("coco_karpathy", "train", data_root, path=data_root / "coco")["cocoid"] == [3]


def test_loaders_keep_image_paths_and_subsets_are_seeded(data_root):
    from unimodal.eval.data import load_records

    opts = {"path": str(data_root / "vqav2"), "images": str(data_root / "coco" / "val2014")}
    ds = _load("vqav2", "val2014", data_root, **opts)
    raw = ds.with_format("arrow")[:]["image"].to_pylist()
    assert all(r["bytes"] is None and r["path"].endswith(".jpg") for r in raw)  # decoded only when read
    a, b = (load_records("vqav2", "val2014", opts, limit=2, seed=5) for _ in range(2))
    assert len(a) == 2 and a["question_id"] == b["question_id"]


def test_missing_files_name_the_file_and_the_download(data_root, tmp_path):
    shutil.copy(data_root / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json", tmp_path)
    with pytest.raises(MissingFileError, match=r"v2_mscoco_val2014_annotations.json does not exist; download v2_Annotations_Val_mscoco.zip"):
        _load("vqav2", "val2014", data_root, path=tmp_path, images=data_root / "coco" / "val2014")
    with pytest.raises(MissingFileError, match=r"testdev_balanced_questions.json does not exist; download questions1.2.zip"):
        _load("gqa", "testdev", data_root, path=tmp_path)
    with pytest.raises(MissingFileError, match=r"image folder .*val2014 does not exist; download the COCO val2014"):
        _load("pope", "random", data_root, path=data_root / "pope", images=tmp_path / "val2014")
    with pytest.raises(MissingFileError, match=r"folder .*nowhere does not exist"):
        _load("textvqa", "val", data_root, path=tmp_path / "nowhere")
    (tmp_path / "imgs").mkdir()
    with pytest.raises(MissingFileError, match=r"image .*COCO_val2014_000000000001.jpg does not exist; download the COCO"):
        _load("pope", "random", data_root, path=data_root / "pope", images=tmp_path / "imgs")


def test_malformed_entries_name_file_record_and_field(data_root, tmp_path):
    (tmp_path / "val2014").mkdir()
    bad = [json.dumps({"question_id": 1, "image": "x.jpg", "text": "Is there a cat?", "label": "maybe"})]
    (tmp_path / "coco_pope_random.json").write_text("\n".join(bad))
    with pytest.raises(RecordError, match=r"coco_pope_random.json: record 0, field 'label': must be 'yes' or 'no'"):
        _load("pope", "random", data_root, path=tmp_path)
    from unimodal.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown prompt template 'short@9'"):
        _load("gqa", "testdev", data_root, path=data_root / "gqa", prompt="short@9")


# ---- metrics ------------------------------------------------------------------------------


def test_vqa_accuracy_per_answer_type_by_hand():
    from unimodal.eval.metrics.vqa_breakdown import TypedReferences, vqa_accuracy_by_type

    preds = ["yes", "2", "red", "green"]
    refs = [TypedReferences(a, t) for _, _, _, t, a in VQAV2_QUESTIONS]
    # yes: 10/10 agree -> 1; "2" matches 2 of 10 -> (2*1/3 + 8*2/3)/10 = 0.6; "red" 3 of 10 -> (3*2/3 + 7*1)/10 = 0.9; 0
    got = vqa_accuracy_by_type(preds, refs)
    assert got == pytest.approx({"": (1 + 0.6 + 0.9 + 0) / 4, "yes_no": 1.0, "number": 0.6, "other": 0.45})
    assert vqa_accuracy_by_type(preds, [list(r) for r in refs], [t for *_, t, _ in VQAV2_QUESTIONS]) == got


def test_pope_confusion_counts_by_hand():
    from unimodal.eval.metrics.pope import PopeCounts, pope, pope_answer

    preds = ["Yes, there is a dog.", "no", "There is not a cat.", "No.", "yes", "I see a cat. No wait", "Nope"]
    assert [pope_answer(p) for p in preds] == ["yes", "no", "no", "no", "yes", "yes", "yes"]  # official rule
    labels = [lab for _, _, lab in POPE]  # yes yes yes no no no yes
    assert PopeCounts.of(preds, labels) == PopeCounts(tp=2, fp=2, tn=1, fn=2)
    assert pope(preds, [[lab] for lab in labels]) == pytest.approx(
        {"accuracy": 3 / 7, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 4 / 7})
    assert pope(["no"] * 3, [["yes"], ["no"], ["yes"]])["precision"] == 0.0  # no yes predictions: 0, not a crash


def test_gqa_exact_match_and_textvqa_accuracy_by_hand():
    from unimodal.eval.metrics import get_metric, score_text

    em = get_metric("exact_match")
    assert score_text(em, ["Yes", "umbrella ", "black"], [[a] for _, _, a in GQA_QUESTIONS.values()]) == pytest.approx(2 / 3)
    acc = get_metric("vqa_accuracy")
    # "dakota": 6 of 10 -> 1; "28": 1 of 10 -> (1*0 + 9*1/3)/10 = 0.3
    assert score_text(acc, ["dakota", "28"], [a for *_, a in TEXTVQA]) == pytest.approx((1 + 0.3) / 2)


CAPTION_PREDS = ["a man riding a small moped on a road.", "A giraffe standing next to a tall tree", "A plate of broccoli and rice."]


def _caption_refs():
    return [ss for _, _, split, ss in KARPATHY if split == "test"]


def test_our_ptb_tokenizer_equals_stanford_ptb():
    from unimodal.eval.metrics.coco_caption import backend, ptb_tokenize, stanford_ptb_tokenize

    if backend()["tokenizer"] != "stanford-ptb":
        pytest.skip("pycocoevalcap or java is missing: the Stanford PTB tokenizer cannot run (pip install pycocoevalcap; a JRE)")
    texts = CAPTION_PREDS + [s for ss in _caption_refs() for s in ss]
    assert [ptb_tokenize(t) for t in texts] == stanford_ptb_tokenize(texts)
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # and our run of the jar equals its class

    theirs = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    assert [theirs[i][0] for i in range(len(texts))] == stanford_ptb_tokenize(texts)


def test_our_bleu_and_cider_d_equal_pycocoevalcap(monkeypatch):
    pytest.importorskip("pycocoevalcap", reason="pycocoevalcap is not installed (pip install 'unimodal[coco]'): nothing to compare with")
    import contextlib
    import io

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    from unimodal.eval.metrics import coco_caption as cc

    hyps = [cc.ptb_tokenize(p) for p in CAPTION_PREDS]
    refs = [[cc.ptb_tokenize(r) for r in rs] for rs in _caption_refs()]
    gts, res = {i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    assert cc.bleu_scores(hyps, refs) == pytest.approx(bleu, rel=1e-12, abs=1e-15)
    assert cc.cider_d_score(hyps, refs) == pytest.approx(cider, rel=1e-12)
    assert 0 < cider and 0 < bleu[3] < bleu[0] < 1
    # the registered metrics give the same numbers with either backend
    expected = {"1": bleu[0], "2": bleu[1], "3": bleu[2], "4": bleu[3]}
    monkeypatch.setattr(cc, "backend", lambda: {"scorers": "unimodal", "tokenizer": "unimodal-ptb"})
    cc._tokenized.cache_clear()
    assert cc.coco_bleu(CAPTION_PREDS, _caption_refs()) == pytest.approx(expected, rel=1e-12)
    assert cc.coco_cider_d(CAPTION_PREDS, _caption_refs()) == pytest.approx(cider, rel=1e-12)
    monkeypatch.undo()
    cc._tokenized.cache_clear()
    if cc.backend()["tokenizer"] == "stanford-ptb":  # the full pycocoevalcap pipeline: its tokenizer and scorers
        assert cc.coco_bleu(CAPTION_PREDS, _caption_refs()) == pytest.approx(expected, rel=1e-12)
        assert cc.coco_cider_d(CAPTION_PREDS, _caption_refs()) == pytest.approx(cider, rel=1e-12)


# ---- the shipped tasks, end to end ---------------------------------------------------------


def test_shipped_benchmark_tasks_read_the_readme_layout(data_root, monkeypatch):
    from unimodal.eval import get_eval_task

    monkeypatch.setenv("UNIMODAL_DATA", str(data_root))
    for name in BENCHMARK_TASKS:
        t = get_eval_task(name)
        assert t.options["path"].startswith(str(data_root)) and t.version >= 1
        ds = _load(t.dataset, t.split, data_root, **t.options)
        assert len(ds) > 0


def test_run_eval_on_every_benchmark_produces_every_metric(text_checkpoint, data_root, monkeypatch, tmp_path):
    from unimodal.eval import run_eval

    monkeypatch.setenv("UNIMODAL_DATA", str(data_root))
    res = run_eval(text_checkpoint, BENCHMARK_TASKS, tmp_path / "results.json", limit=4, progress=False)
    m = {name: r["metrics"] for name, r in res["tasks"].items()}
    assert set(m["vqav2_val"]) == {"vqa_accuracy", "vqa_accuracy_by_type", "vqa_accuracy_by_type/yes_no",
                                   "vqa_accuracy_by_type/number", "vqa_accuracy_by_type/other"}
    assert m["vqav2_val"]["vqa_accuracy_by_type"] == pytest.approx(m["vqav2_val"]["vqa_accuracy"])
    assert set(m["gqa_testdev"]) == {"exact_match"}
    for split in ("random", "popular", "adversarial"):
        assert set(m[f"pope_{split}"]) == {f"pope/{k}" for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
        assert res["tasks"][f"pope_{split}"]["num_samples"] == 4  # --limit
    assert set(m["textvqa_val"]) == {"vqa_accuracy"}
    assert set(m["coco_karpathy_test"]) == {"coco_bleu/1", "coco_bleu/2", "coco_bleu/3", "coco_bleu/4", "coco_cider_d"}
    for name, metrics in m.items():
        for key, value in metrics.items():
            assert value is not None and value >= 0, (name, key)
    assert res["tasks"]["vqav2_val"]["settings"]["options"]["prompt"] == "short_answer@1"
    assert (tmp_path / "results.md").is_file()


def test_cli_missing_download_is_one_line_naming_the_file(text_checkpoint, tmp_path, monkeypatch, capsys):
    from unimodal.cli import main

    monkeypatch.setenv("UNIMODAL_DATA", str(tmp_path))
    (tmp_path / "pope").mkdir()
    rc = main(["eval", "--checkpoint", str(text_checkpoint), "--tasks", "pope_random", "--output", str(tmp_path / "r.json"),
               "--limit", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{tmp_path / 'pope' / 'coco_pope_random.json'} does not exist" in err and "RUCAIBox/POPE" in err
