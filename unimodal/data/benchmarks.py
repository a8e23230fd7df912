"""Loaders of standard understanding benchmarks, reading the user's downloaded files in their official formats.

Each is a registered dataset (``unimodal.data.load_dataset("vqav2", "val2014", path=...)``;
the eval tasks ``eval/tasks/{vqav2_val,gqa_testdev,pope_*,textvqa_val,coco_karpathy_test}.yaml``
name them) and is read afresh on every call (not cached, like the other local sources). Records
hold the image as a *path*: ``datasets`` decodes an image only when a record is read,
so loading a 200K-question split keeps the annotations in memory, never the images,
and a seeded ``num_samples`` subset decodes only its own images. Records come in the
official file order, so a seeded subset is the same on every machine.

=============  ====================================================  ============================
dataset        annotation files (``path=``)                           images (``images=``)
=============  ====================================================  ============================
vqav2          ``v2_OpenEnded_mscoco_<split>_questions.json``,        ``COCO_<split>_<12-digit id>.jpg``
               ``v2_mscoco_<split>_annotations.json``                 (default ``<path>/<split>``)
gqa            ``<split>_balanced_questions.json``                    ``<imageId>.jpg`` (default ``<path>/images``)
pope           ``coco_pope_<split>.json`` (JSON lines)                COCO val2014 (default ``<path>/val2014``)
textvqa        ``TextVQA_0.5.1_<split>.json``                         ``<image_id>.jpg`` (default ``<path>/train_images``)
coco_karpathy  ``dataset_coco.json``                                  ``<filepath>/<filename>`` (default ``<path>``)
=============  ====================================================  ============================

Question records: ``question`` (the pinned prompt template applied, see
:data:`PROMPTS`), ``raw_question``, ``answer`` and (VQAv2, TextVQA) the ten
``answers`` the official scorer reads. Caption records: ``captions`` (the raw
reference sentences). A missing file raises one `MissingFileError` naming the
file expected and what to download; a malformed entry raises `RecordError`
naming the file, the entry and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import datasets

from unimodal.data.registry import DatasetSource, format_card, register_dataset
from unimodal.errors import ConfigError, DataError, MissingFileError, RecordError, unknown

# ---- prompt templates ----------------------------------------------------------------------
# A template is named ``<name>@<version>``; its text never changes once shipped. A new wording
# is a new version (and the eval tasks using it bump their own ``version``), so a result file's
# ``settings.options.prompt`` says exactly what the model was asked. Loaders put the filled
# template in ``question`` and the benchmark's own text in ``raw_question``.
PROMPTS: dict[str, str] = {
    # the question exactly as the benchmark gives it
    "plain@1": "{question}",
    # the short-answer instruction LLaVA-style evaluations append for VQAv2, GQA, POPE and TextVQA
    "short_answer@1": "{question}\nAnswer the question using a single word or phrase.",
}


def render_prompt(template: str, question: str) -> str:
    """The question as ``template`` asks it; an unknown template name lists the shipped ones."""
    if template not in PROMPTS:
        raise unknown("prompt template", template, PROMPTS)
    return PROMPTS[template].format(question=question)


DEFAULT_PROMPT = "short_answer@1"


def _read_json(file: Path, what: str) -> Any:
    try:
        with file.open("rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{what} file {file} is not valid JSON ({' '.join(str(err).split())}); download it again") from None


def _field(record: Any, key: str, file: Path, index: int, kind: type | tuple[type, ...] = str) -> Any:
    """``record[key]``, checked to be of ``kind`` (a non-empty string for ``str``)."""
    if not isinstance(record, dict):
        raise RecordError(file, index, None, f"expected an object, got {type(record).__name__}")
    value = record.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise RecordError(file, index, key, f"is missing or not a {getattr(kind, '__name__', kind)} (got {value!r:.60})")
    return value


def _bad_answer(file: Path, index: int) -> str:
    raise RecordError(file, index, "answers", "every entry must be an object with a string 'answer'")


class _Images:
    """Checks that each image file exists (once per file), naming what to download when one does not."""

    def __init__(self, root: Path, download: str):
        self.root, self.download, self.seen = root, download, set()

    def __call__(self, relative: str) -> str:
        full = self.root / relative
        if relative not in self.seen:
            if not full.is_file():
                raise MissingFileError(f"image {full} does not exist; {self.download}")
            self.seen.add(relative)
        return str(full)


class BenchmarkSource(DatasetSource):
    """Shared options of the benchmark loaders: ``path`` (annotations), ``images``, ``prompt``.

    Subclasses give ``files`` (the annotation files of a split and how to get them)
    and ``image_default`` (the image folder relative to ``path``), and yield records.
    """

    cached = False
    image_default: ClassVar[str] = "images"
    image_download: ClassVar[str] = ""
    takes_prompt: ClassVar[bool] = True

    def files(self, split: str) -> dict[str, tuple[str, str]]:
        """role -> (file name inside ``path``, what to download to get it)."""
        raise NotImplementedError

    def image_dir(self, split: str) -> str:
        return self.image_default.format(split=split)

    def resolve_options(
        self, split: str | None, path: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
        prompt: str = DEFAULT_PROMPT,
    ) -> dict[str, Any]:
        if path is None:
            raise ConfigError(f"dataset {self.name!r} needs path= (the folder holding {self._names(split)})")
        root = Path(path).expanduser()
        if not root.is_dir():
            raise MissingFileError(f"{self.name} folder {root} does not exist; create it and put {self._names(split)} in it ({self._hint(split)})")
        for file, download in self.files(str(split)).values():
            if not (root / file).is_file():
                raise MissingFileError(f"{self.name}: {root / file} does not exist; {download}")
        image_root = Path(images).expanduser() if images is not None else root / self.image_dir(str(split))
        if not image_root.is_dir():
            raise MissingFileError(f"{self.name} image folder {image_root} does not exist; {self.image_download}")
        if self.takes_prompt and prompt not in PROMPTS:
            render_prompt(prompt, "")  # raises, listing the templates
        return {"path": str(root.resolve()), "images": str(image_root.resolve()), "prompt": prompt}

    def _names(self, split: str | None) -> str:
        return " and ".join(f for f, _ in self.files(str(split)).values())

    def _hint(self, split: str | None) -> str:
        return "; ".join(d for _, d in self.files(str(split)).values())

    def _question(self, prompt: str, text: str) -> dict[str, str]:
        return {"question": render_prompt(prompt, text), "raw_question": text}


_QA_BASE = {
    "image": datasets.Image(),
    "question": datasets.Value("string"),
    "raw_question": datasets.Value("string"),
    "answer": datasets.Value("string"),
}


@register_dataset
class VQAv2(BenchmarkSource):
    """VQA v2 (Goyal et al. 2017) open-ended questions with their ten human answers."""

    name = "vqav2"
    version = "1"
    splits = ("val2014", "train2014")
    image_default = "{split}"
    image_download = "download the COCO images (e.g. http://images.cocodataset.org/zips/val2014.zip) and unzip them"

    def files(self, split: str) -> dict[str, tuple[str, str]]:
        site = "https://visualqa.org/download.html"
        part = "Val" if split == "val2014" else "Train"
        return {
            "questions": (f"v2_OpenEnded_mscoco_{split}_questions.json", f"download v2_Questions_{part}_mscoco.zip from {site} and unzip it there"),
            "annotations": (f"v2_mscoco_{split}_annotations.json", f"download v2_Annotations_{part}_mscoco.zip from {site} and unzip it there"),
        }

    def features(self, view: str, **options: Any) -> datasets.Features:
        return datasets.Features({
            **_QA_BASE,
            "answers": datasets.Sequence(datasets.Value("string")),
            "answer_type": datasets.Value("string"),
            "question_type": datasets.Value("string"),
            "question_id": datasets.Value("int64"),
            "image_id": datasets.Value("int64"),
        })

    def examples(self, split: str | None, view: str, path: str | None = None, images: str | None = None,
                 prompt: str = DEFAULT_PROMPT) -> Iterator[dict[str, Any]]:
        assert path is not None and images is not None and split is not None
        files = {role: Path(path) / f for role, (f, _) in self.files(split).items()}
        ann_file = files["annotations"]
        annotations = _read_json(ann_file, "VQAv2 annotations").get("annotations")
        if not isinstance(annotations, list):
            raise DataError(f"VQAv2 annotations file {ann_file} has no 'annotations' list; is it v2_mscoco_{split}_annotations.json?")
        by_id: dict[int, dict[str, Any]] = {}
        for i, a in enumerate(annotations):
            answers = _field(a, "answers", ann_file, i, list)
            by_id[_field(a, "question_id", ann_file, i, int)] = {
                "answers": [x["answer"] if isinstance(x, dict) and isinstance(x.get("answer"), str) else _bad_answer(ann_file, i) for x in answers],
                "answer": a.get("multiple_choice_answer") or "",
                "answer_type": _field(a, "answer_type", ann_file, i),
                "question_type": a.get("question_type") or "",
            }
        del annotations
        q_file = files["questions"]
        questions = _read_json(q_file, "VQAv2 questions").get("questions")
        if not isinstance(questions, list):
            raise DataError(f"VQAv2 questions file {q_file} has no 'questions' list; is it v2_OpenEnded_mscoco_{split}_questions.json?")
        image = _Images(Path(images), self.image_download)
        for i, q in enumerate(questions):
            qid, image_id = _field(q, "question_id", q_file, i, int), _field(q, "image_id", q_file, i, int)
            if qid not in by_id:
                raise RecordError(q_file, i, "question_id", f"{qid} has no annotation in {ann_file}")
            yield {
                "image": image(f"COCO_{split}_{image_id:012d}.jpg"),
                **self._question(prompt, _field(q, "question", q_file, i)),
                **by_id[qid], "question_id": qid, "image_id": image_id,
            }

    def card(self) -> str:
        return format_card(
            "vqav2", "VQA v2 open-ended questions on COCO images, ten human answers each (read from the user's files).",
            {"splits": ", ".join(self.splits), "options": "path (annotation folder), images (COCO image folder), prompt",
             "files": "v2_OpenEnded_mscoco_<split>_questions.json, v2_mscoco_<split>_annotations.json, <split>/COCO_<split>_<id>.jpg",
             "source": "https://visualqa.org/download.html", "licence": "CC BY 4.0 (annotations); COCO images: Flickr terms"},
        )


@register_dataset
class GQA(BenchmarkSource):
    """GQA (Hudson & Manning 2019) balanced questions; one answer each, scored by exact match."""

    name = "gqa"
    version = "1"
    splits = ("testdev", "val", "train")
    image_default = "images"
    image_download = "download images.zip from https://cs.stanford.edu/people/dorarad/gqa/download.html and unzip it"

    def files(self, split: str) -> dict[str, tuple[str, str]]:
        return {"questions": (f"{split}_balanced_questions.json",
                              "download questions1.2.zip from https://cs.stanford.edu/people/dorarad/gqa/download.html and unzip it there")}

    def features(self, view: str, **options: Any) -> datasets.Features:
        return datasets.Features({
            **_QA_BASE,
            "full_answer": datasets.Value("string"),
            "structural": datasets.Value("string"),
            "semantic": datasets.Value("string"),
            "question_id": datasets.Value("string"),
            "image_id": datasets.Value("string"),
        })

    def examples(self, split: str | None, view: str, path: str | None = None, images: str | None = None,
                 prompt: str = DEFAULT_PROMPT) -> Iterator[dict[str, Any]]:
        assert path is not None and images is not None and split is not None
        file = Path(path) / self.files(split)["questions"][0]
        questions = _read_json(file, "GQA questions")
        if not isinstance(questions, dict):
            raise DataError(f"GQA questions file {file} must map question ids to questions, got {type(questions).__name__}")
        image = _Images(Path(images), self.image_download)
        for i, (qid, q) in enumerate(questions.items()):
            types = q.get("types") if isinstance(q, dict) and isinstance(q.get("types"), dict) else {}
            image_id = _field(q, "imageId", file, i)
            yield {
                "image": image(f"{image_id}.jpg"),
                **self._question(prompt, _field(q, "question", file, i)),
                "answer": _field(q, "answer", file, i),
                "full_answer": q.get("fullAnswer") or "",
                "structural": types.get("structural") or "", "semantic": types.get("semantic") or "",
                "question_id": str(qid), "image_id": image_id,
            }

    def card(self) -> str:
        return format_card(
            "gqa", "GQA balanced compositional questions on Visual Genome images (read from the user's files).",
            {"splits": ", ".join(self.splits), "options": "path (question folder), images, prompt",
             "files": "<split>_balanced_questions.json, images/<imageId>.jpg",
             "source": "https://cs.stanford.edu/people/dorarad/gqa/download.html", "licence": "CC BY 4.0"},
        )


@register_dataset
class POPE(BenchmarkSource):
    """POPE (Li et al. 2023) object-hallucination yes/no questions on COCO val2014 images."""

    name = "pope"
    version = "1"
    splits = ("random", "popular", "adversarial")
    image_default = "val2014"
    image_download = "download the COCO val2014 images (http://images.cocodataset.org/zips/val2014.zip) and unzip them"

    def files(self, split: str) -> dict[str, tuple[str, str]]:
        return {"questions": (f"coco_pope_{split}.json",
                              f"download output/coco/coco_pope_{split}.json from https://github.com/RUCAIBox/POPE")}

    def features(self, view: str, **options: Any) -> datasets.Features:
        return datasets.Features({**_QA_BASE, "question_id": datasets.Value("int64"), "image_file": datasets.Value("string")})

    def examples(self, split: str | None, view: str, path: str | None = None, images: str | None = None,
                 prompt: str = DEFAULT_PROMPT) -> Iterator[dict[str, Any]]:
        from unimodal.data.local import _read_records

        assert path is not None and images is not None and split is not None
        file = Path(path) / self.files(split)["questions"][0]
        image = _Images(Path(images), self.image_download)
        for i, r in enumerate(_read_records(file)):  # one JSON object per line
            label = _field(r, "label", file, i)
            if label not in ("yes", "no"):
                raise RecordError(file, i, "label", f"must be 'yes' or 'no', got {label!r:.40}")
            name = _field(r, "image", file, i)
            yield {"image": image(name), **self._question(prompt, _field(r, "text", file, i)), "answer": label,
                   "question_id": _field(r, "question_id", file, i, int), "image_file": name}

    def card(self) -> str:
        return format_card(
            "pope", "POPE yes/no object-existence questions on COCO val2014 (read from the user's files).",
            {"splits": ", ".join(self.splits), "options": "path (folder of coco_pope_<split>.json), images (COCO val2014), prompt",
             "source": "https://github.com/RUCAIBox/POPE", "licence": "MIT (questions); COCO images: Flickr terms"},
        )


@register_dataset
class TextVQA(BenchmarkSource):
    """TextVQA 0.5.1 (Singh et al. 2019): questions about text in images, ten answers each."""

    name = "textvqa"
    version = "1"
    splits = ("val", "train")
    image_default = "train_images"  # the val questions use the train image set
    image_download = "download train_val_images.zip from https://textvqa.org/dataset/ and unzip it"

    def files(self, split: str) -> dict[str, tuple[str, str]]:
        return {"questions": (f"TextVQA_0.5.1_{split}.json", f"download TextVQA_0.5.1_{split}.json from https://textvqa.org/dataset/")}

    def features(self, view: str, **options: Any) -> datasets.Features:
        return datasets.Features({
            **_QA_BASE, "answers": datasets.Sequence(datasets.Value("string")),
            "question_id": datasets.Value("int64"), "image_id": datasets.Value("string"),
        })

    def examples(self, split: str | None, view: str, path: str | None = None, images: str | None = None,
                 prompt: str = DEFAULT_PROMPT) -> Iterator[dict[str, Any]]:
        assert path is not None and images is not None and split is not None
        file = Path(path) / self.files(split)["questions"][0]
        data = _read_json(file, "TextVQA").get("data")
        if not isinstance(data, list):
            raise DataError(f"TextVQA file {file} has no 'data' list; is it TextVQA_0.5.1_{split}.json?")
        image = _Images(Path(images), self.image_download)
        for i, q in enumerate(data):
            answers = _field(q, "answers", file, i, list)
            if not all(isinstance(a, str) for a in answers):
                raise RecordError(file, i, "answers", "must be a list of strings")
            image_id = _field(q, "image_id", file, i)
            yield {
                "image": image(f"{image_id}.jpg"), **self._question(prompt, _field(q, "question", file, i)),
                "answer": max(answers, key=answers.count) if answers else "", "answers": answers,
                "question_id": _field(q, "question_id", file, i, int), "image_id": image_id,
            }

    def card(self) -> str:
        return format_card(
            "textvqa", "TextVQA 0.5.1 questions that need reading text in the image (read from the user's files).",
            {"splits": ", ".join(self.splits), "options": "path (folder of TextVQA_0.5.1_<split>.json), images (train_images), prompt",
             "source": "https://textvqa.org/dataset/", "licence": "CC BY 4.0"},
        )


@register_dataset
class COCOKarpathy(BenchmarkSource):
    """COCO captions in the Karpathy split (5000 test, 5000 val images), five reference sentences each."""

    name = "coco_karpathy"
    version = "1"
    splits = ("test", "val", "train", "restval")
    image_default = "."
    image_download = "download the COCO train2014 and val2014 images (http://images.cocodataset.org/zips/{train,val}2014.zip) and unzip them"
    takes_prompt = False  # the captioning head asks for a caption in its own fixed format

    def files(self, split: str) -> dict[str, tuple[str, str]]:
        return {"karpathy": ("dataset_coco.json", "download caption_datasets.zip (Karpathy's splits, "
                             "https://cs.stanford.edu/people/karpathy/deepimagesent/) and unzip dataset_coco.json there")}

    def features(self, view: str, **options: Any) -> datasets.Features:
        return datasets.Features({
            "image": datasets.Image(), "captions": datasets.Sequence(datasets.Value("string")),
            "cocoid": datasets.Value("int64"), "file": datasets.Value("string"),
        })

    def examples(self, split: str | None, view: str, path: str | None = None, images: str | None = None,
                 prompt: str = DEFAULT_PROMPT) -> Iterator[dict[str, Any]]:
        assert path is not None and images is not None and split is not None
        file = Path(path) / "dataset_coco.json"
        entries = _read_json(file, "Karpathy COCO").get("images")
        if not isinstance(entries, list):
            raise DataError(f"{file} has no 'images' list; is it Karpathy's dataset_coco.json?")
        image = _Images(Path(images), self.image_download)
        for i, e in enumerate(entries):
            if _field(e, "split", file, i) != split:
                continue
            sentences = _field(e, "sentences", file, i, list)
            captions = [_field(s, "raw", file, i) for s in sentences]
            rel = f"{_field(e, 'filepath', file, i)}/{_field(e, 'filename', file, i)}"
            yield {"image": image(rel), "captions": captions, "cocoid": _field(e, "cocoid", file, i, int), "file": rel}

    def card(self) -> str:
        return format_card(
            "coco_karpathy", "COCO 2014 images with five captions each, in Karpathy's splits (read from the user's files).",
            {"splits": ", ".join(self.splits), "options": "path (folder of dataset_coco.json), images (COCO root holding train2014/ and val2014/)",
             "source": "https://cs.stanford.edu/people/karpathy/deepimagesent/", "licence": "CC BY 4.0 (captions); COCO images: Flickr terms"},
        )
