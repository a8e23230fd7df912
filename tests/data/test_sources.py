"""The `files` source: each format written here in its real layout loads with the heads' columns and trains a head."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from unimodal.config import VisualConfig
from unimodal.data import load_dataset
from unimodal.data.transforms import fit_image
from unimodal.diffusion import NoiseSchedule, compute_loss
from unimodal.errors import ConfigError, DataError, RecordError
from unimodal.layout import IGNORE
from unimodal.model import create_model
from unimodal.tasks import TaskMixture, build_image_bank, build_mixture, get_task_class

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
V = VisualConfig(channels=3, image_size=16, patch_size=8, block_h=1, block_w=1)  # 2x2 tokens of 192
WORDS = ["red", "blue", "green", "round", "square", "small", "big"]


def png(i: int, size: tuple[int, int] = (20, 14), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    """A distinct image per i, of any size and mode."""
    rng = np.random.default_rng(i)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def caption(i: int) -> str:
    return f"a {WORDS[i % 7]} {WORDS[(i + 3) % 7]} shape"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from unimodal.tokenizers import TextTokenizer

    texts = [caption(i) for i in range(40)] + ["what color is it?", "is it big?", "yes", "no", "and the shape?"]
    return TextTokenizer.train(texts * 4, vocab_size=300, out_dir=tmp_path_factory.mktemp("tok"))


def steps_lower_loss(mix: TaskMixture, tok, steps: int = 4) -> None:
    """A few AdamW steps on the mixture's batches with a tiny model: finite losses, every head has targets."""
    torch.manual_seed(0)
    model = create_model("tiny", token_dim=V.token_dim, vocab_size=tok.vocab_size, num_classes=8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = NoiseSchedule()
    for step in range(steps):
        batch = mix.batch(step, 0, 1, 4)
        loss = compute_loss(model, batch, sched, generator=torch.Generator().manual_seed(step))["loss"]
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()


def mixture(ds, names: list[str], tok) -> TaskMixture:
    bank = build_image_bank(ds, V, name="src")
    tasks = [(get_task_class(n)(V, tok), 1.0, bank) for n in names]
    return TaskMixture(tasks, V.token_dim, seed=0)


# ---- formats ------------------------------------------------------------------------------------------


def test_jsonl_with_an_image_folder_and_split_files(tmp_path: Path, tok) -> None:
    (tmp_path / "images").mkdir()
    for split, rng in (("train", range(6)), ("test", range(6, 8))):
        lines = []
        for i in rng:
            (tmp_path / "images" / f"{i}.jpg").write_bytes(png(i, fmt="JPEG"))
            lines.append(json.dumps({"file": f"images/{i}.jpg", "text": caption(i), "id": i}))
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    opts = {"path": str(tmp_path), "columns": {"caption": "text", "image": "file"}}
    train = load_dataset("files", "train", **opts)
    assert train.column_names == ["image", "caption"] and train["caption"] == [caption(i) for i in range(6)]
    assert load_dataset("files", "test", **opts)["caption"] == [caption(6), caption(7)]
    with pytest.raises(DataError, match=r"no file of split 'val'.*Declare splits="):
        load_dataset("files", "val", **opts)
    steps_lower_loss(mixture(train, ["captioning", "text_to_image"], tok), tok)


def test_csv_with_a_split_column(tmp_path: Path, tok) -> None:
    with open(tmp_path / "data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption", "label", "subset"])
        for i in range(8):
            (tmp_path / f"{i}.png").write_bytes(png(i, size=(16, 16), mode="L"))
            w.writerow([f"{i}.png", caption(i), i % 3, "val" if i >= 6 else "train"])
    opts = {"path": str(tmp_path / "data.csv"), "columns": {"image": "path"}, "split_column": "subset"}
    train = load_dataset("files", "train", **opts)
    assert train.column_names == ["image", "label", "caption"] and train["label"] == [0, 1, 2, 0, 1, 2]
    assert len(load_dataset("files", "val", **opts)) == 2
    with pytest.raises(DataError, match=r"no record has subset == 'test'; values seen: \['train', 'val'\]"):
        load_dataset("files", "test", **opts)
    steps_lower_loss(mixture(train, ["class_to_image", "captioning"], tok), tok)


def test_sharded_parquet_with_bytes_and_paths_and_a_seeded_holdout(tmp_path: Path, tok) -> None:
    for shard in range(2):  # image bytes as HF writes them: {bytes, path} structs
        rows = range(shard * 10, shard * 10 + 10)
        pq.write_table(pa.table({"image": [{"bytes": png(i), "path": None} for i in rows],
                                 "question": ["what color is it?"] * 10, "answer": [WORDS[i % 3] for i in rows]}),
                       tmp_path / f"train-{shard:05d}-of-00002.parquet")
    opts = {"path": str(tmp_path / "train-*-of-*.parquet"), "holdout": 0.3, "holdout_seed": 1}
    train, test = load_dataset("files", "train", **opts), load_dataset("files", "test", **opts)
    assert train.column_names == ["image", "question", "answer"]
    assert len(train) + len(test) == 20 and 0 < len(test) < 10
    assert load_dataset("files", "test", **opts)["answer"] == test["answer"]  # seeded: the same records every time
    with pytest.raises(DataError, match=r"holdout=0.3 makes the splits 'train' and 'test', not 'val'"):
        load_dataset("files", "val", **opts)
    (tmp_path / "img").mkdir()  # image paths instead of bytes
    (tmp_path / "img" / "a.webp").write_bytes(png(3, fmt="WEBP"))
    pq.write_table(pa.table({"image": ["img/a.webp"], "caption": ["a webp"]}), tmp_path / "paths.parquet")
    assert load_dataset("files", None, path=str(tmp_path / "paths.parquet"))["caption"] == ["a webp"]
    steps_lower_loss(mixture(train, ["vqa"], tok), tok)


def test_llava_conversations_json_array_multi_turn_loss_on_answers_only(tmp_path: Path, tok) -> None:
    (tmp_path / "coco").mkdir()
    records = []
    for i in range(5):
        (tmp_path / "coco" / f"{i}.png").write_bytes(png(i))
        records.append({"id": str(i), "image": f"coco/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat color is it?"}, {"from": "gpt", "value": WORDS[i % 3]},
            {"from": "human", "value": "is it big?"}, {"from": "gpt", "value": "yes" if i % 2 else "no"}]})
    (tmp_path / "llava.json").write_text(json.dumps(records, indent=2))  # a JSON array, not JSON lines
    ds = load_dataset("files", None, path=str(tmp_path / "llava.json"))
    assert ds.column_names == ["image", "conversation"]
    assert ds[0]["conversation"][0] == {"role": "user", "text": "what color is it?"}  # <image> removed
    bank = build_image_bank(ds, V, name="llava")
    head = get_task_class("conversation")(V, tok)
    ex = head.example(bank, 1, np.random.default_rng(0))
    targets = [int(t) for t in ex.layout.text_target if t != IGNORE]
    assert targets == [*tok.encode("blue"), tok.eos_id, *tok.encode("yes"), tok.eos_id]  # answers only
    # one turn is exactly the VQA head's sequence
    one = {"conversation": [[{"role": "user", "text": "what color is it?"}, {"role": "assistant", "text": "red"}]]}
    from unimodal.tasks import ImageBank

    b1 = ImageBank(bank.tokens[:1], {**one, "question": ["what color is it?"], "answer": ["red"]}, "one")
    vqa = get_task_class("vqa")(V, tok).example(b1, 0, np.random.default_rng(0))
    conv = head.example(b1, 0, np.random.default_rng(0))
    assert np.array_equal(vqa.layout.text_ids, conv.layout.text_ids) and np.array_equal(vqa.layout.text_target, conv.layout.text_target)
    steps_lower_loss(mixture(ds, ["conversation"], tok), tok)
    bad = [{"image": "coco/0.png", "conversations": [{"from": "gpt", "value": "hi"}]}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(RecordError, match=r"bad.json: array item 0, field 'conversation': turn 0 is from the assistant"):
        load_dataset("files", None, path=str(tmp_path / "bad.json"))


def write_tar(path: Path, samples: list[dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for k, sample in enumerate(samples):
            for ext, data in sample.items():
                info = tarfile.TarInfo(f"{k:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_webdataset_tar_shards(tmp_path: Path, tok) -> None:
    exts = ["jpg", "png", "webp"]
    for shard in range(2):
        samples = []
        for j in range(4):
            i = shard * 4 + j
            ext = exts[i % 3]
            samples.append({ext: png(i, fmt={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]),
                            "txt": caption(i).encode(), "cls": str(i % 4).encode(),
                            "json": json.dumps({"source": "synthetic", "width": 20}).encode()})
        write_tar(tmp_path / f"train-{shard:05d}.tar", samples)
    ds = load_dataset("files", "train", path=str(tmp_path))
    assert ds.column_names == ["image", "label", "caption"]
    assert ds["label"] == [0, 1, 2, 3] * 2 and ds["caption"][5] == caption(5)
    steps_lower_loss(mixture(ds, ["class_to_image", "text_to_image"], tok), tok)


def test_image_folder(tmp_path: Path, tok) -> None:
    for c, name in enumerate(("cat", "dog")):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "train" / name / f"{i}.png").write_bytes(png(10 * c + i, size=(30, 18), mode="RGBA"))
    ds = load_dataset("files", "train", path=str(tmp_path))
    assert ds["label"] == [0, 0, 0, 1, 1, 1] and ds["label_name"][3] == "dog"
    steps_lower_loss(mixture(ds, ["class_to_image"], tok), tok)


# ---- conversion, bad records, errors -------------------------------------------------------------------


def test_fit_image_is_the_one_documented_conversion() -> None:
    wide = Image.fromarray(np.arange(40 * 20 * 3, dtype=np.uint8).reshape(20, 40, 3))
    out = fit_image(wide, 16)
    assert out.size == (16, 16) and out.mode == "RGB"
    expect = wide.resize((32, 16), Image.Resampling.BICUBIC).crop((8, 0, 24, 16))  # shorter side, centre crop
    assert np.array_equal(np.asarray(out), np.asarray(expect))
    small = Image.new("L", (12, 12), 200)
    padded = np.asarray(fit_image(small, 16, channels=1))
    assert padded.shape == (16, 16) and padded[0, 0] == 0 and padded[8, 8] == 200  # small squares are padded
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # fully transparent: composited over black
    assert np.asarray(fit_image(rgba, 16)).max() == 0


def test_bad_records_error_names_file_and_line_or_are_skipped_and_counted(tmp_path: Path) -> None:
    from unimodal.data import sources

    (tmp_path / "a.png").write_bytes(png(0))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG no")
    lines = [json.dumps({"image": "a.png", "caption": "fine"}), '{"image": "a.png", "caption": ',
             json.dumps({"image": "broken.png", "caption": "x"}), json.dumps({"image": "a.png"}),
             json.dumps({"image": "a.png", "caption": "also fine"})]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"train\.jsonl:2: invalid JSON .*on_bad_record: skip"):
        load_dataset("files", "train", path=str(tmp_path))
    with pytest.warns(UserWarning, match=r"skipped 3 bad record\(s\), kept 2; first: .*train\.jsonl:2"):
        ds = load_dataset("files", "train", path=str(tmp_path), on_bad_record="skip")
    assert ds["caption"] == ["fine", "also fine"] and sources.last_skipped["skipped"] == 3
    (tmp_path / "train.jsonl").write_text("\n".join([lines[0], lines[3]]) + "\n")
    with pytest.raises(RecordError, match=r"train\.jsonl:2, field 'caption': is missing"):
        load_dataset("files", "train", path=str(tmp_path))
    with open(tmp_path / "t.csv", "w") as f:
        f.write("image,caption\na.png,ok\na.png,too,many\n")
    with pytest.raises(RecordError, match=r"t\.csv:3: has a different number of fields"):
        load_dataset("files", None, path=str(tmp_path / "t.csv"))
    with pytest.raises(ConfigError, match=r"columns= maps unknown column\(s\) \['captoin'\]"):
        load_dataset("files", "train", path=str(tmp_path), columns={"captoin": "text"})
    with pytest.raises(ConfigError, match="on_bad_record must be 'skip' or 'error'"):
        load_dataset("files", "train", path=str(tmp_path), on_bad_record="ignore")
    with pytest.raises(DataError, match=r"no split 'test'; splits= declares \['train'\]"):
        load_dataset("files", "test", path=str(tmp_path), splits={"train": "train.jsonl"})


def test_records_captions_train_captioning_and_a_wrong_column_says_why(tmp_path: Path, tok) -> None:
    """The `records` source's `text` column now trains captioning; a source lacking the column says which it needs."""
    (tmp_path / "a.png").write_bytes(png(0))
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps({"image": "a.png", "text": caption(i)}) for i in range(3)))
    mix = build_mixture([{"name": "captioning", "dataset": "records", "options": {"path": str(tmp_path)}}], V, tok)
    assert mix.batch(0, 0, 1, 2).text_ids.shape[0] == 2
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "a.png").write_bytes(png(0))
    (tmp_path / "q" / "train.jsonl").write_text(json.dumps({"image": "a.png", "question": "q?", "answer": "a"}))
    with pytest.raises(ConfigError, match=r"no record of .* can train it: it reads the column\(s\) caption but .* has "
                                          r"\['answer', 'question'\].*columns: \{caption: FIELD\}"):
        build_mixture([{"name": "captioning", "dataset": "records", "options": {"path": str(tmp_path / "q")}}], V, tok)


def test_tokenizer_training_reads_the_tasks_dataset_options(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from unimodal.tasks import build_tokenizer

    (tmp_path / "a.png").write_bytes(png(0))
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps({"image": "a.png", "t": caption(i) + " zebra"}) for i in range(30)))
    cfg = SimpleNamespace(tasks=[{"name": "captioning", "dataset": "files",
                                  "options": {"path": str(tmp_path), "columns": {"caption": "t"}}}],
                          tokenizer={"vocab_size": 300})
    with pytest.warns(UserWarning, match=r"256 of its 300 pieces are byte pieces and only 38 are learned"):
        tok = build_tokenizer(cfg)
    assert "zebra" in tok.decode(tok.encode("zebra"))
    # the default, vocab_size auto: as many pieces as this corpus supports, so the source's words are whole
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the most this corpus supports: nothing to warn about
        auto = build_tokenizer(SimpleNamespace(tasks=cfg.tasks, tokenizer={}))
    assert auto.vocab_size > 300 and len(auto.encode("zebra")) == 1
    for bad in ("big", 0, True, 2.5):
        with pytest.raises(ConfigError, match=r"tokenizer.vocab_size=.* is invalid: must be 'auto' or a positive integer"):
            build_tokenizer(SimpleNamespace(tasks=cfg.tasks, tokenizer={"vocab_size": bad}))


def test_eval_tasks_run_on_a_files_source(tmp_path: Path, tok, tmp_path_factory) -> None:
    """VQA and captioning eval tasks read a parquet source (train/test files) through the same column mapping."""
    from unimodal.checkpoint import save_checkpoint
    from unimodal.cli import main

    data = tmp_path / "data"
    data.mkdir()
    for split, rows in (("train", range(12)), ("test", range(12, 16))):
        pq.write_table(pa.table({"img": [{"bytes": png(i), "path": None} for i in rows], "desc": [caption(i) for i in rows],
                                 "question": ["what color is it?"] * len(rows), "answer": [WORDS[i % 3] for i in rows]}),
                       data / f"{split}.parquet")
    options = {"path": str(data), "columns": {"image": "img", "caption": "desc"}}
    specs = [{"name": n, "dataset": "files", "options": options} for n in ("vqa", "captioning")]
    mix = build_mixture(specs, V, tok, seed=0)
    torch.manual_seed(0)
    model = create_model("tiny", token_dim=V.token_dim, vocab_size=tok.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(3):
        loss = compute_loss(model, mix.batch(step, 0, 1, 4), NoiseSchedule(), generator=torch.Generator().manual_seed(step))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    tok_dir = tmp_path / "tok"
    tok.save(tok_dir)
    ckpt = save_checkpoint(tmp_path / "ckpt", model.eval(), visual=V, tokenizer_dir=tok_dir, extra={"tasks": specs})
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, head, metrics in (("my_vqa", "vqa", "[vqa_accuracy]"), ("my_caption", "captioning", "[bleu4]")):
        (tasks / f"{name}.yaml").write_text(f"name: {name}\nversion: 1\ndescription: test\nhead: {head}\ndataset: files\n"
                                            f"split: test\noptions: {json.dumps(options)}\nnum_samples: 4\nseed: 0\n"
                                            f"generation: {{max_new_tokens: 4, batch_size: 4}}\nmetrics: {metrics}\n")
    out = tmp_path / "results.json"
    assert main(["eval", "--checkpoint", str(ckpt), "--tasks", "my_vqa,my_caption", "--output", str(out),
                 "--include-path", str(tasks), "--no-progress"]) == 0
    results = json.loads(out.read_text())["tasks"]
    assert 0 <= results["my_vqa"]["metrics"]["vqa_accuracy"] <= 100 and results["my_caption"]["metrics"]["bleu4"] >= 0


def test_a_single_records_file_is_not_every_split(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(0))
    (tmp_path / "mine.jsonl").write_text(json.dumps({"image": "a.png", "text": "x"}) + "\n")
    assert len(load_dataset("records", None, path=str(tmp_path / "mine.jsonl"))) == 1
    with pytest.raises(DataError, match=r"mine\.jsonl is one file, not split 'test'"):
        load_dataset("records", "test", path=str(tmp_path / "mine.jsonl"))
    (tmp_path / "test.jsonl").write_text(json.dumps({"image": "a.png", "text": "y"}) + "\n")
    assert load_dataset("records", "test", path=str(tmp_path / "test.jsonl"))["text"] == ["y"]


def test_fsspec_url_data_files(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    buf = io.BytesIO()
    pq.write_table(pa.table({"image": [{"bytes": png(i), "path": None} for i in range(3)], "caption": ["a", "b", "c"]}), buf)
    fs.pipe("/bucket/train-00000.parquet", buf.getvalue())
    ds = load_dataset("files", "train", path="memory://bucket/train-*.parquet")
    assert ds["caption"] == ["a", "b", "c"] and np.asarray(ds[1]["image"]).shape == (14, 20, 3)


def test_the_readme_recipes_are_valid_task_entries() -> None:
    """Every `tasks:` entry of README "Train on your data" parses, and its options are the files source's."""
    import inspect

    import yaml

    from unimodal.data.sources import Files
    from unimodal.tasks import TaskSpec

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Train on your data", 1)[1].split("\n## ", 1)[0]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    entries = yaml.safe_load(block)
    assert len(entries) == 6
    valid = set(inspect.signature(Files.resolve_options).parameters) - {"self", "split"}
    for entry in entries:
        spec = TaskSpec.from_dict(entry)
        get_task_class(spec.name)
        assert spec.dataset == "files" and set(spec.options) <= valid, entry
