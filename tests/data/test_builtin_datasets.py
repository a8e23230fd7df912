"""Built-in datasets: sizes, derived captions, the QA view, IDX parsing, atomic caching."""

from __future__ import annotations

import gzip
import re
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from unimodal.data import UnknownDatasetError, cache_root, dataset_card, get_source, list_datasets, load_dataset
from unimodal.data import easyvqa as ev
from unimodal.data import fashion_mnist as fm
from unimodal.errors import ConfigError

# Shape colours from upstream easy-VQA's generator (color.py); a test-only reference.
EASYVQA_RGB = {
    "black": (0, 0, 0), "gray": (128, 128, 128), "red": (255, 0, 0), "green": (0, 255, 0),
    "blue": (0, 0, 255), "yellow": (255, 255, 0), "teal": (0, 128, 128), "brown": (165, 42, 42),
}


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dataset-cache")


@pytest.fixture(scope="session")
def easyvqa_test(cache: Path):
    return load_dataset("easyvqa", "test", cache_dir=cache)


# ---- registry -----------------------------------------------------------------------


def test_registry_names_and_errors(cache: Path) -> None:
    assert list_datasets() == ["coco_karpathy", "digits", "easyvqa", "fashion_mnist", "files", "gqa", "imagefolder", "moving_fmnist", "pope", "records", "textvqa", "vqav2"]
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset 'easy_vqa'; valid: .*Did you mean 'easyvqa'"):
        load_dataset("easy_vqa", "train")
    with pytest.raises(UnknownDatasetError, match="'fashion_mnist'"):
        dataset_card("fashion-mnist")
    with pytest.raises(ValueError, match="no split 'validation'; splits: train, test"):
        load_dataset("digits", "validation", cache_dir=cache)
    with pytest.raises(ValueError, match="no view 'qa'; views: default"):
        load_dataset("digits", "train", view="qa", cache_dir=cache)
    with pytest.raises(ConfigError, match="unknown option.*paht; valid: path"):
        load_dataset("fashion_mnist", "train", paht="/x", cache_dir=cache)


# ---- easy-VQA -----------------------------------------------------------------------


def test_easyvqa_sizes_and_columns(cache: Path, easyvqa_test) -> None:
    train = load_dataset("easyvqa", "train", cache_dir=cache)
    assert (len(train), len(easyvqa_test)) == (4000, 1000)
    assert train["image_id"] == list(range(4000))
    columns = {"image", "image_id", "questions", "answers", "caption", "has_caption", "color", "shape"}
    assert set(easyvqa_test.column_names) == columns
    im = train[0]["image"]
    assert (im.mode, im.size) == ("RGB", (64, 64))
    # record i is upstream's image i with upstream's questions for it, in upstream's order
    import easy_vqa
    from PIL import Image as PILImage

    paths = easy_vqa.get_train_image_paths()
    texts, answers, image_ids = easy_vqa.get_train_questions()
    for i in (0, 1, 2375, 3999):
        upstream = np.asarray(PILImage.open(paths[i]).convert("RGB"))
        assert np.array_equal(np.asarray(train[i]["image"]), upstream), i
        assert train[i]["questions"] == [q for q, k in zip(texts, image_ids) if k == i], i
        assert train[i]["answers"] == [a for a, k in zip(answers, image_ids) if k == i], i
    assert not np.array_equal(np.asarray(train[0]["image"]), np.asarray(train[1]["image"]))


def _consistent(question: str, answer: str, color: str, shape: str) -> bool:
    """Independent reference: does (question, answer) hold for an image of `color` `shape`?"""
    words = question.rstrip("?").split()
    if answer in ev.COLORS:
        return answer == color and all(w == shape for w in words if w in ev.SHAPES)
    if answer in ev.SHAPES:
        return answer == shape and all(w == color for w in words if w in ev.COLORS)
    (named,) = [w for w in words if w in ev.COLORS + ev.SHAPES]
    present = named in (color, shape)
    negated = "not" in words or "no" in words
    return (answer == "yes") == (present != negated)


def test_easyvqa_captions_agree_with_answers_and_pixels(easyvqa_test) -> None:
    rows = easyvqa_test.remove_columns("image").to_list()
    for r in rows:  # brute force: which (colour, shape) pairs fit every answer of this image?
        qa = list(zip(r["questions"], r["answers"]))
        fits = [(c, s) for c in ev.COLORS for s in ev.SHAPES if all(_consistent(q, a, c, s) for q, a in qa)]
        assert fits, r["image_id"]
        colors, shapes = {c for c, _ in fits}, {s for _, s in fits}
        assert r["color"] == (colors.pop() if len(colors) == 1 else "")
        assert r["shape"] == (shapes.pop() if len(shapes) == 1 else "")
        assert r["has_caption"] == (len(fits) == 1)
        assert r["caption"] == (f"a {r['color']} {r['shape']}" if len(fits) == 1 else "")
    captioned = [r for r in rows if r["has_caption"]]
    assert len(captioned) > 800
    # the named colour is the shape's exact fill colour in the image (upstream draws solid fills)
    for r in captioned[:60]:
        pixels = np.asarray(easyvqa_test[r["image_id"]]["image"]).reshape(-1, 3)
        assert (pixels == EASYVQA_RGB[r["color"]]).all(axis=1).sum() >= 4, r["image_id"]


@pytest.mark.parametrize(
    "question, answer, facts",
    [  # what each pair says, worked out by hand
        ("what color is the circle?", "red", [("color", "red", True), ("shape", "circle", True)]),
        ("what is the blue shape?", "rectangle", [("shape", "rectangle", True), ("color", "blue", True)]),
        ("is there not a blue shape?", "yes", [("color", "blue", False)]),
        ("is there not a blue shape?", "no", [("color", "blue", True)]),
        ("is no triangle present?", "no", [("shape", "triangle", True)]),
        ("does the image contain a rectangle?", "yes", [("shape", "rectangle", True)]),
        ("is there a green shape?", "no", [("color", "green", False)]),
        ("what is the weather?", "sunny", None),
        ("is it a red circle?", "yes", None),  # two attributes in a yes/no question: not an easy-VQA form
    ],
)
def test_question_facts_by_hand(question, answer, facts) -> None:
    assert ev.question_facts(question, answer) == facts


def test_easyvqa_every_question_is_understood() -> None:
    import easy_vqa

    for get in (easy_vqa.get_train_questions, easy_vqa.get_test_questions):
        texts, answers, _ = get()
        assert all(ev.question_facts(q, a) for q, a in zip(texts, answers))


def test_infer_attributes_uses_yes_no_elimination() -> None:
    qs = [f"is there a {c} shape?" for c in ev.COLORS[:-1]] + ["is no circle present?", "is there not a triangle?"]
    assert ev.infer_attributes(qs, ["no"] * 7 + ["yes", "yes"]) == (ev.COLORS[-1], "rectangle")
    assert ev.infer_attributes(["is there a red shape?"], ["no"]) == ("", "")
    with pytest.raises(ValueError, match="contradict .* color"):
        ev.infer_attributes(["what color is the shape?", "is there a red shape?"], ["blue", "yes"])


def test_easyvqa_card_counts_match_the_dataset(cache: Path, easyvqa_test) -> None:
    card = dataset_card("easyvqa")
    m = re.search(r"captions \(derived\)\*\*: train ([\d,]+) \(.*\), test ([\d,]+) ", card)
    assert m, card
    assert int(m.group(2).replace(",", "")) == sum(easyvqa_test["has_caption"])
    train = load_dataset("easyvqa", "train", cache_dir=cache)
    assert int(m.group(1).replace(",", "")) == sum(train["has_caption"])
    assert "licence" in card and "4,000 images" in card


def test_easyvqa_qa_view_matches_per_image_questions(cache: Path, easyvqa_test) -> None:
    qa = load_dataset("easyvqa", "test", view="qa", cache_dir=cache)
    assert qa.column_names == ["image", "question", "answer", "image_id"]
    grouped: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for r in qa.remove_columns("image"):
        grouped[r["image_id"]].append((r["question"], r["answer"]))
    per_image = easyvqa_test.remove_columns("image")
    assert len(qa) == sum(len(q) for q in per_image["questions"])
    for r in per_image:
        assert grouped[r["image_id"]] == list(zip(r["questions"], r["answers"]))
    for i in (0, 500, len(qa) - 1):  # a QA row carries the same pixels as its image's row
        row = qa[i]
        assert np.array_equal(np.asarray(row["image"]), np.asarray(easyvqa_test[row["image_id"]]["image"]))


# ---- caching ------------------------------------------------------------------------


def test_cache_reload_is_equal_and_skips_the_build(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset("digits", "test", cache_dir=cache)
    entries = list((cache / "digits" / "v1").iterdir())
    assert [p.name for p in entries if p.name.startswith("test-default-")]

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt instead of reading the cache")

    monkeypatch.setattr(type(get_source("digits")), "examples", boom)
    again = load_dataset("digits", "test", cache_dir=cache)
    assert again.to_dict() == first.to_dict()
    assert again.features == first.features


def test_crashed_build_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = get_source("digits")
    real = type(source).examples

    def crash_midway(self, split, view):
        for i, example in enumerate(real(self, split, view)):
            if i == 100:
                raise KeyboardInterrupt  # like a Ctrl-C halfway through the build
            yield example

    monkeypatch.setattr(type(source), "examples", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("digits", "train", cache_dir=tmp_path)
    assert list((tmp_path / "digits" / "v1").iterdir()) == []  # neither a final nor a temp dir
    monkeypatch.setattr(type(source), "examples", real)
    # a build killed with SIGKILL leaves a hidden temp dir: never trusted, removed by the next build
    dead = tmp_path / "digits" / "v1" / ".tmp-train-default-0123456789ab-999999999-deadbeef"
    (dead / "dataset").mkdir(parents=True)
    ds = load_dataset("digits", "train", cache_dir=tmp_path)
    assert len(ds) == 1500 and not dead.exists()


def test_cache_root_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIMODAL_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    load_dataset("digits", "test")
    assert len(list((tmp_path / "c" / "datasets" / "digits" / "v1").iterdir())) == 1
    in_memory = load_dataset("digits", "test", cache=False)
    assert len(list((tmp_path / "c" / "datasets" / "digits" / "v1").iterdir())) == 1
    assert in_memory["label"] == load_dataset("digits", "test")["label"]
    monkeypatch.delenv("UNIMODAL_CACHE")
    assert cache_root() == Path.home() / ".cache" / "unimodal"


# ---- digits -------------------------------------------------------------------------


def test_digits_split_and_pixels(cache: Path) -> None:
    from sklearn.datasets import load_digits

    ref = load_digits()
    train, test = load_dataset("digits", "train", cache_dir=cache), load_dataset("digits", "test", cache_dir=cache)
    assert (len(train), len(test)) == (1500, 297)
    assert list(train["label"]) + list(test["label"]) == ref.target.tolist()
    for ds, offset in ((train, 0), (test, 1500)):
        for i in (0, 7, len(ds) - 1):
            im = ds[i]["image"]
            assert (im.mode, im.size) == ("L", (8, 8))
            np.testing.assert_array_equal(np.asarray(im), np.rint(ref.images[offset + i] * 255 / 16))
    assert max(np.asarray(im).max() for im in test["image"]) == 255  # 16 -> 255


# ---- Fashion-MNIST ------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with gzip.open(path.with_name(path.name + ".gz"), "wb") if gz else path.open("wb") as f:
        f.write(data)


@pytest.fixture
def fake_fashion(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 5, 1, 8], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images, gz=True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gz=False)  # plain files work too
    return tmp_path, images, labels


def test_fashion_mnist_parses_fake_idx(fake_fashion, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, images, labels = fake_fashion
    ds = load_dataset("fashion_mnist", "test", path=root, cache_dir=cache)
    assert len(ds) == 7 and ds["label"] == labels.tolist()
    assert ds["label_name"] == [fm.CLASSES[i] for i in labels]
    for i in range(7):
        np.testing.assert_array_equal(np.asarray(ds[i]["image"]), images[i])
    monkeypatch.setenv("UNIMODAL_FASHION_MNIST", str(root))
    assert load_dataset("fashion_mnist", "test", cache_dir=cache)["label"] == labels.tolist()


def test_fashion_mnist_errors_name_the_files(fake_fashion, tmp_path: Path) -> None:
    root, _, _ = fake_fashion
    both = r"train files missing in .*: train-images-idx3-ubyte\[.gz\], train-labels-idx1-ubyte\[.gz\]"
    with pytest.raises(FileNotFoundError, match=both):
        load_dataset("fashion_mnist", "train", path=root)
    (root / "t10k-labels-idx1-ubyte").unlink()
    one = r"missing in .*: t10k-labels-idx1-ubyte\[.gz\] \(the directory holds \['t10k-images"
    with pytest.raises(FileNotFoundError, match=one):
        load_dataset("fashion_mnist", "test", path=root)
    bad = tmp_path / "bad-idx"
    bad.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match=r"shape \(10,\) \(10 bytes\) but the file holds 3 bytes"):
        fm.read_idx(bad)


@pytest.mark.skipif(not fm.DEFAULT_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_real_files(cache: Path) -> None:
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = fm.split_files(split, fm.DEFAULT_DIR)
        assert fm.read_idx_header(images) == (np.dtype(">u1"), (n, 28, 28))
        assert fm.read_idx_header(labels) == (np.dtype(">u1"), (n,))
    test = load_dataset("fashion_mnist", "test", path=fm.DEFAULT_DIR, cache_dir=cache)  # ~1 s
    assert len(test) == 10000 and np.bincount(test["label"]).tolist() == [1000] * 10
    # the IDX format read by hand: a 16-byte header (magic, n, rows, cols), then n·28·28 bytes row-major;
    # labels after an 8-byte header
    import gzip

    images, labels = fm.split_files("test", fm.DEFAULT_DIR)
    opener = gzip.open if images.suffix == ".gz" else open
    with opener(images, "rb") as f:
        raw = f.read()
    with (gzip.open if labels.suffix == ".gz" else open)(labels, "rb") as f:
        raw_labels = f.read()
    assert int.from_bytes(raw[:4], "big") == 0x803 and int.from_bytes(raw_labels[:4], "big") == 0x801
    for i in (0, 1, 9999):
        want = np.frombuffer(raw, np.uint8, 784, 16 + 784 * i).reshape(28, 28)
        assert np.array_equal(np.asarray(test[i]["image"]), want), i
        assert test[i]["label"] == raw_labels[8 + i], i
    assert test.features["label"].names == list(fm.CLASSES)
