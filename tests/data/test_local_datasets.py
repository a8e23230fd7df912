"""imagefolder and records: labels, image forms, and errors that name the bad record and field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from unimodal.data import RecordError, load_dataset
from unimodal.errors import ConfigError, DataError


def _png(value: int, size: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for split, classes in (("train", ("cat", "dog", "emu")), ("test", ("dog", "emu"))):
        for k, name in enumerate(classes):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                (tmp_path / split / name / f"{i}.png").write_bytes(_png(10 * k + i))
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image, ignored")
    return tmp_path


def test_imagefolder_labels_follow_sorted_or_given_classes(folder: Path) -> None:
    train = load_dataset("imagefolder", "train", path=folder)
    assert train["label_name"] == ["cat", "cat", "dog", "dog", "emu", "emu"]
    assert train["label"] == [0, 0, 1, 1, 2, 2]
    assert np.asarray(train[3]["image"])[0, 0, 0] == 11 and train[3]["file"] == "dog/1.png"
    classes = train.features["label"].names
    test = load_dataset("imagefolder", "test", path=folder, classes=classes)
    assert test["label"] == [1, 1, 2, 2]  # a class missing from the split keeps the label order
    assert load_dataset("imagefolder", None, path=folder / "test")["label"] == [0, 0, 1, 1]
    cached = load_dataset("imagefolder", "train", path=folder, cache=True, cache_dir=folder.parent / "cache")
    assert cached.to_dict() == train.to_dict()
    (folder / "train" / "cat" / "0.png").unlink()  # the dataset holds the bytes, not a reference
    assert np.asarray(train[0]["image"]).shape == (6, 6, 3)


def test_imagefolder_errors(folder: Path) -> None:
    (folder / "train" / "emu" / "1.png").write_bytes(b"not a png")
    with pytest.raises(RecordError, match=r"emu/1\.png: record 5, field 'image': not a readable image") as e:
        load_dataset("imagefolder", "train", path=folder)
    assert (e.value.index, e.value.field) == (5, "image")
    with pytest.raises(FileNotFoundError, match=r"no split folder .*/val; subfolders of .*: \['test', 'train'\]"):
        load_dataset("imagefolder", "val", path=folder)
    with pytest.raises(ValueError, match=r"subfolders \['cat'\] are not in classes=\['dog', 'emu'\]"):
        load_dataset("imagefolder", "train", path=folder, classes=["dog", "emu"])
    (folder / "test" / "stray.png").write_bytes(_png(0))
    with pytest.raises(ValueError, match=r"must sit in class subfolders, found \['stray.png'\]"):
        load_dataset("imagefolder", "test", path=folder)


def test_records_jsonl_captions_with_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for i in range(3):
        (tmp_path / "img" / f"{i}.png").write_bytes(_png(40 * i))
    lines = [json.dumps({"image": f"img/{i}.png", "text": f"caption {i}", "extra": i}) for i in range(3)]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n\n")
    ds = load_dataset("records", "train", path=tmp_path)
    assert ds.column_names == ["image", "text"] and ds["text"] == ["caption 0", "caption 1", "caption 2"]
    assert np.asarray(ds[2]["image"])[0, 0, 0] == 80
    assert load_dataset("records", path=tmp_path / "train.jsonl")["text"] == ds["text"]


def test_records_parquet_vqa_with_bytes(tmp_path: Path) -> None:
    table = pa.table(
        {
            "image": [{"bytes": _png(i), "path": None} for i in range(4)],
            "question": [f"q{i}?" for i in range(4)],
            "answer": ["yes", "no", "red", "circle"],
        }
    )
    pq.write_table(table, tmp_path / "test.parquet")
    ds = load_dataset("records", "test", path=tmp_path)
    assert ds.column_names == ["image", "question", "answer"]
    assert ds["answer"] == ["yes", "no", "red", "circle"]
    assert np.asarray(ds[3]["image"])[0, 0, 0] == 3


@pytest.mark.parametrize(
    ("record", "match", "field"),
    [
        ({"image": "a.png", "question": "q?"}, r"field 'answer': is missing \(a vqa record needs image, question, answer", "answer"),
        ({"image": "nope.png", "question": "q?", "answer": "no"}, "field 'image': file .*nope.png does not exist", "image"),
        ({"image": "bad.png", "question": "q?", "answer": "no"}, "field 'image': not a readable image", "image"),
        ({"image": "a.png", "question": "q?", "answer": 3}, "field 'answer': must be a non-empty string, got 3", "answer"),
        ({"image": "a.png", "question": "  ", "answer": "x"}, "field 'question': must be a non-empty string", "question"),
    ],
)
def test_records_errors_name_record_and_field(tmp_path: Path, record: dict, match: str, field: str) -> None:
    (tmp_path / "a.png").write_bytes(_png(0))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    good = {"image": "a.png", "question": "q?", "answer": "yes"}
    file = tmp_path / "r.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in (good, good, record)))
    with pytest.raises(RecordError, match=f"r.jsonl: record 2, {match}") as e:
        load_dataset("records", path=file)
    assert (e.value.index, e.value.field) == (2, field)


def test_records_file_level_errors(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(_png(0))
    file = tmp_path / "r.jsonl"
    file.write_text('{"image": "a.png", "text": "ok"}\n{"image": "a.png", "text": \n')
    with pytest.raises(RecordError, match=r"record 1: invalid JSON"):
        load_dataset("records", path=file)
    file.write_text('{"image": "a.png", "caption": "wrong field name"}\n')
    with pytest.raises(RecordError, match=r"record 0: cannot tell the kind: .* found \['caption', 'image'\]"):
        load_dataset("records", path=file)
    with pytest.raises(FileNotFoundError, match="no records file for split 'val'"):
        load_dataset("records", "val", path=tmp_path)
    with pytest.raises(ConfigError, match="records needs path="):
        load_dataset("records", "train")


def _tree_hashes(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("escape", ["../outside/x.png", "sub/../../outside/x.png", "ABSOLUTE", "link/x.png"])
def test_record_image_paths_are_confined_to_the_dataset_root(tmp_path: Path, escape: str) -> None:
    """Audit finding 4: '../' and absolute image paths (and symlinks out) were read and trained on."""
    root, outside = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "x.png").write_bytes(_png(7))
    (root / "link").symlink_to(outside, target_is_directory=True)
    path = str(outside / "x.png") if escape == "ABSOLUTE" else escape
    (root / "train.jsonl").write_text(json.dumps({"image": path, "text": "a caption"}) + "\n")
    before = _tree_hashes(tmp_path)
    with pytest.raises(RecordError, match=r"train\.jsonl: record 0, field 'image': .*outside the dataset root") as e:
        load_dataset("records", "train", path=root)
    assert "allow_outside_root" in str(e.value)
    assert _tree_hashes(tmp_path) == before  # nothing written next to the data
    ok = load_dataset("records", "train", path=root, allow_outside_root=True)  # the explicit opt-in reads it
    assert np.asarray(ok[0]["image"])[0, 0, 0] == 7


def test_records_inside_the_root_still_read_through_subfolders(tmp_path: Path) -> None:
    (tmp_path / "img" / "a").mkdir(parents=True)
    (tmp_path / "img" / "a" / "x.png").write_bytes(_png(3))
    (tmp_path / "train.jsonl").write_text(json.dumps({"image": "img/b/../a/x.png", "text": "t"}) + "\n")
    assert np.asarray(load_dataset("records", "train", path=tmp_path)[0]["image"])[0, 0, 0] == 3
    with pytest.raises(ConfigError, match="allow_outside_root must be true or false"):
        load_dataset("records", "train", path=tmp_path, allow_outside_root="yes")


def test_unreadable_record_files_name_the_file_and_record(tmp_path: Path) -> None:
    """Audit finding 9: non-UTF-8 JSONL and a corrupt parquet named no file or record."""
    good = json.dumps({"image": "x.png", "text": "t"}).encode()
    (tmp_path / "x.png").write_bytes(_png(1))
    (tmp_path / "train.jsonl").write_bytes(good + b"\n" + b'{"image": "x.png", "text": "caf\xe9"}\n')
    with pytest.raises(RecordError, match=r"train\.jsonl: record 1: is not UTF-8 text"):
        load_dataset("records", "train", path=tmp_path)
    (tmp_path / "val.parquet").write_bytes(b"PAR1" + b"\x00garbage" * 10)
    with pytest.raises(DataError, match=r"val\.parquet is not a readable parquet file"):
        load_dataset("records", "val", path=tmp_path)
