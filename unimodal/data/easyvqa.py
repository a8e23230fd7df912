"""easy-VQA (PyPI `easy-vqa`): 64x64 shapes with real questions, and captions derived from them.

Every image shows exactly one shape in one colour. The questions come from
fixed templates (upstream `gen_data/questions.py`), so each (question, answer)
pair is a fact about the image's colour or shape:

    "what color is the circle?" -> "red"   colour is red, shape is circle
    "what is the red shape?"    -> "circle"
    "is there not a blue shape?" -> "yes"  colour is not blue

`infer_attributes` intersects those facts. When they pin down both colour and
shape the image gets the caption "a red circle"; otherwise `caption == ""` and
`has_caption` is False. Nothing is read from pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import datasets
from PIL import Image

from unimodal.data.registry import DatasetSource, format_card, register_dataset

from ..errors import DataError, MissingFileError

COLORS = ("black", "gray", "red", "green", "blue", "yellow", "teal", "brown")
SHAPES = ("circle", "rectangle", "triangle")
IMAGE_SIZE = 64

Attribute = Literal["color", "shape"]
Fact = tuple[Attribute, str, bool]  # (attribute, value, whether the image has that value)


def question_facts(question: str, answer: str) -> list[Fact] | None:
    """What one (question, answer) pair says about the image; None if the question is not understood.

    "what ..." questions: the answer is the colour or shape, and a colour or
    shape named in the question is also present (each image has one shape).
    Yes/no questions name one colour or shape; "not"/"no" in the question flips
    the answer.
    """
    words = question.lower().rstrip("?").split()
    mentioned: list[tuple[Attribute, str]] = [
        ("color", w) if w in COLORS else ("shape", w) for w in words if w in COLORS or w in SHAPES
    ]
    if words[:1] == ["what"]:
        if answer in COLORS:
            return [("color", answer, True), *((attr, value, True) for attr, value in mentioned)]
        if answer in SHAPES:
            return [("shape", answer, True), *((attr, value, True) for attr, value in mentioned)]
        return None
    if answer in ("yes", "no") and len(mentioned) == 1:
        negated = "not" in words or "no" in words
        attr, value = mentioned[0]
        return [(attr, value, (answer == "yes") != negated)]
    return None


def infer_attributes(questions: Sequence[str], answers: Sequence[str]) -> tuple[str, str]:
    """(color, shape) implied by one image's answers; "" where they leave it open.

    Raises:
        ValueError: if the answers contradict each other.
    """
    allowed: dict[Attribute, set[str]] = {"color": set(COLORS), "shape": set(SHAPES)}
    for question, answer in zip(questions, answers, strict=True):
        for attr, value, holds in question_facts(question, answer) or ():
            allowed[attr] = allowed[attr] & {value} if holds else allowed[attr] - {value}
            if not allowed[attr]:
                raise DataError(f"answers contradict each other about the {attr} (at {question!r} -> {answer!r})")
    color, shape = (next(iter(allowed[a])) if len(allowed[a]) == 1 else "" for a in ("color", "shape"))
    return color, shape


def caption_for(color: str, shape: str) -> str:
    """'a red circle', or '' unless both are known."""
    return f"a {color} {shape}" if color and shape else ""


@cache
def _questions_by_image(split: str) -> dict[int, tuple[list[str], list[str]]]:
    import easy_vqa

    get = {"train": easy_vqa.get_train_questions, "test": easy_vqa.get_test_questions}[split]
    texts, answers, image_ids = get()
    by_image: dict[int, tuple[list[str], list[str]]] = {}
    for text, answer, image_id in zip(texts, answers, image_ids, strict=True):
        qs, ans = by_image.setdefault(int(image_id), ([], []))
        qs.append(text)
        ans.append(answer)
    return by_image


def _image_paths(split: str) -> dict[int, str]:
    import easy_vqa

    return {"train": easy_vqa.get_train_image_paths, "test": easy_vqa.get_test_image_paths}[split]()


def _image_bytes(path: str) -> bytes:
    data = Path(path).read_bytes()
    with Image.open(path) as im:  # header only: checks the file without decoding pixels
        if im.size != (IMAGE_SIZE, IMAGE_SIZE) or im.mode != "RGB":
            raise DataError(
                f"easy-VQA image {path} is {im.mode} {im.size[0]}x{im.size[1]}, expected RGB {IMAGE_SIZE}x{IMAGE_SIZE}"
            )
    return data


def caption_stats(split: str) -> dict[str, int]:
    """Counts of images, questions and images whose answers fix colour, shape, both (from questions only)."""
    by_image = _questions_by_image(split)
    stats = {"images": len(_image_paths(split)), "questions": sum(len(q) for q, _ in by_image.values())}
    stats.update(color=0, shape=0, captioned=0)
    for qs, ans in by_image.values():
        color, shape = infer_attributes(qs, ans)
        stats["color"] += bool(color)
        stats["shape"] += bool(shape)
        stats["captioned"] += bool(color and shape)
    return stats


@register_dataset
class EasyVQA(DatasetSource):
    """easy-VQA, one record per image (default) or per question (`view="qa"`)."""

    name = "easyvqa"
    version = "1"
    splits = ("train", "test")
    views = ("default", "qa")

    def features(self, view: str, **options: Any) -> datasets.Features:
        if view == "qa":
            return datasets.Features(
                {
                    "image": datasets.Image(),
                    "question": datasets.Value("string"),
                    "answer": datasets.Value("string"),
                    "image_id": datasets.Value("int32"),
                }
            )
        return datasets.Features(
            {
                "image": datasets.Image(),
                "image_id": datasets.Value("int32"),
                "questions": datasets.List(datasets.Value("string")),
                "answers": datasets.List(datasets.Value("string")),
                "caption": datasets.Value("string"),
                "has_caption": datasets.Value("bool"),
                "color": datasets.Value("string"),
                "shape": datasets.Value("string"),
            }
        )

    def data_version(self) -> str:
        # a new release of the package gets a new cache entry
        return metadata.version("easy-vqa")

    def examples(self, split: str | None, view: str) -> Iterator[dict[str, Any]]:
        assert split is not None
        by_image = _questions_by_image(split)
        paths = _image_paths(split)
        missing = sorted(set(by_image) - set(paths))
        if missing:
            raise MissingFileError(f"easy-VQA {split}: questions refer to images with no file: ids {missing[:10]}")
        for image_id in sorted(paths):
            image = {"bytes": _image_bytes(paths[image_id]), "path": None}
            questions, answers = by_image.get(image_id, ([], []))
            if view == "qa":
                for question, answer in zip(questions, answers, strict=True):
                    yield {"image": image, "question": question, "answer": answer, "image_id": image_id}
                continue
            try:
                color, shape = infer_attributes(questions, answers)
            except ValueError as err:
                raise DataError(f"easy-VQA {split} image {image_id}: {err}") from None
            caption = caption_for(color, shape)
            yield {
                "image": image,
                "image_id": image_id,
                "questions": questions,
                "answers": answers,
                "caption": caption,
                "has_caption": bool(caption),
                "color": color,
                "shape": shape,
            }

    def card(self) -> str:
        train, test = caption_stats("train"), caption_stats("test")

        def pct(s: dict[str, int], k: str) -> str:
            return f"{s[k]:,} ({100 * s[k] / s['images']:.1f}%)"

        return format_card(
            "easyvqa",
            "easy-VQA: 64x64 RGB images of one coloured shape (circle, rectangle, triangle; "
            f"{len(COLORS)} colours) with template questions and one-word answers.",
            {
                "splits": f"train {train['images']:,} images / {train['questions']:,} questions; "
                f"test {test['images']:,} images / {test['questions']:,} questions",
                "records": "default view: one per image (image, image_id, questions, answers, caption, "
                "has_caption, color, shape); view='qa': one per question (image, question, answer, image_id)",
                "captions (derived)": f"train {pct(train, 'captioned')}, test {pct(test, 'captioned')} of images",
                "colour known": f"train {pct(train, 'color')}, test {pct(test, 'color')}",
                "shape known": f"train {pct(train, 'shape')}, test {pct(test, 'shape')}",
                "source": f"PyPI package easy-vqa {metadata.version('easy-vqa')} "
                "(github.com/vzhou842/easy-VQA), no download",
                "licence": "not stated upstream (PyPI metadata: UNKNOWN)",
            },
            [
                "Captions ('a red circle') and the color/shape columns are derived from each image's own "
                "answers by intersecting the facts they state (yes/no answers included); they are empty "
                "when the answers leave colour or shape open. Nothing is read from the pixels.",
            ],
        )
