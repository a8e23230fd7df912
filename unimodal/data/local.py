"""The user's own data: a folder of class subfolders, or a file of records.

Both are validated record by record while they are read; a bad record raises
`RecordError`, which names the file, the record index and the field. They are
not cached (`load_dataset(..., cache=True)` opts in): the files are already local.

imagefolder: `path/<class>/<image>`; `split="x"` reads `path/x/<class>/<image>`.
    Records: image, label (index into the sorted class names, or into `classes=`), label_name,
    file (path relative to the folder read).

records: a parquet or JSON-lines file (`.parquet`, `.jsonl`, `.json`); with
    `split="x"` and a directory `path`, the file `path/x.{parquet,jsonl,json}`.
    Each record has `image` plus either `text` (kind "caption") or `question` and
    `answer` (kind "vqa"). `image` is a path (relative paths are relative to the
    records file), raw bytes, or a `{"bytes": ..., "path": ...}` dict as written
    by `datasets` to parquet.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import datasets
from PIL import Image, UnidentifiedImageError

from unimodal.data.registry import DatasetSource, format_card, register_dataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
RECORD_EXTENSIONS = (".parquet", ".jsonl", ".json")
RecordKind = Literal["auto", "caption", "vqa"]
KIND_FIELDS: dict[str, tuple[str, ...]] = {"caption": ("image", "text"), "vqa": ("image", "question", "answer")}


class RecordError(ValueError):
    """A bad record: `source` (file), `index` (0-based record number) and `field` say where."""

    def __init__(self, source: str | os.PathLike, index: int, field: str | None, problem: str) -> None:
        self.source, self.index, self.field = str(source), index, field
        where = f"record {index}" + (f", field {field!r}" if field else "")
        super().__init__(f"{source}: {where}: {problem}")


def _checked_image_bytes(data: bytes, source: str | os.PathLike, index: int, field: str = "image") -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # checks the file structure without a full decode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise RecordError(source, index, field, f"not a readable image ({err})") from None
    return data


# ---- imagefolder --------------------------------------------------------------------


def _split_root(path: str | os.PathLike, split: str | None) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder path {root} is not a directory")
    if split is None:
        return root
    if not (root / split).is_dir():
        subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"no split folder {root / split}; subfolders of {root}: {subdirs} (split=None reads {root} itself)"
        )
    return root / split


@register_dataset
class ImageFolder(DatasetSource):
    """A local directory of class subfolders."""

    name = "imagefolder"
    cached = False

    def features(self, view: str, **options: Any) -> datasets.Features:
        return datasets.Features(
            {
                "image": datasets.Image(),
                "label": datasets.ClassLabel(names=list(options["classes"])),
                "label_name": datasets.Value("string"),
                "file": datasets.Value("string"),
            }
        )

    def resolve_options(
        self, split: str | None, path: str | os.PathLike | None = None, classes: Sequence[str] | None = None
    ) -> dict[str, Any]:
        if path is None:
            raise TypeError("imagefolder needs path= (a directory of class subfolders)")
        root = _split_root(path, split)
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        strays = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if strays:
            raise ValueError(
                f"imagefolder {root}: images must sit in class subfolders, found {strays[:5]} directly in it"
            )
        if not found:
            raise ValueError(f"imagefolder {root} has no class subfolders")
        if classes is None:
            classes = found
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"imagefolder {root}: subfolders {unknown} are not in classes={list(classes)}")
        return {"path": str(Path(path).resolve()), "classes": list(classes)}

    def examples(
        self, split: str | None, view: str, path: str | os.PathLike | None = None, classes: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        assert path is not None and classes is not None
        root = _split_root(path, split)
        index = 0
        for label, name in enumerate(classes):
            folder = root / name
            if not folder.is_dir():
                continue  # a class absent from this split
            for file in sorted(folder.iterdir()):
                if file.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                data = _checked_image_bytes(file.read_bytes(), file, index)
                # path=None: `datasets` would otherwise store only the path of an existing file
                # and re-read it later; the dataset keeps the validated bytes instead
                yield {
                    "image": {"bytes": data, "path": None},
                    "label": label,
                    "label_name": name,
                    "file": str(file.relative_to(root)),
                }
                index += 1

    def card(self) -> str:
        return format_card(
            "imagefolder",
            "A local directory of class subfolders: `path/<class>/<image>` (or `path/<split>/<class>/<image>`).",
            {
                "options": "path (required), classes (list of class names fixing the label order; "
                "default: the sorted subfolder names of the folder read)",
                "records": "image (PIL), label (int, ClassLabel), label_name, file (relative path)",
                "images": ", ".join(IMAGE_EXTENSIONS) + "; each is checked to be readable",
                "licence": "whatever the user's data has",
            },
            ["Pass the same classes= for every split so a class missing from one split keeps its label."],
        )


# ---- records -----------------------------------------------------------------------


def _records_file(path: str | os.PathLike, split: str | None) -> Path:
    p = Path(path)
    if p.is_file():
        return p  # a file is the split, whatever its name
    if not p.is_dir():
        raise FileNotFoundError(f"records path {p} does not exist")
    if split is None:
        raise ValueError(
            f"records path {p} is a directory: pass split= to read {p}/<split>{{{','.join(RECORD_EXTENSIONS)}}}"
        )
    for ext in RECORD_EXTENSIONS:
        if (p / f"{split}{ext}").is_file():
            return p / f"{split}{ext}"
    looked = ", ".join(split + ext for ext in RECORD_EXTENSIONS)
    raise FileNotFoundError(f"no records file for split {split!r} in {p}: looked for {looked}")


def _read_records(file: Path) -> Iterator[Any]:
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(file).iter_batches(batch_size=256):
            yield from batch.to_pylist()
        return
    with file.open(encoding="utf-8") as f:
        for line_no, line in enumerate((raw for raw in f if raw.strip()), start=0):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(file, line_no, None, f"invalid JSON ({err.msg} at column {err.colno})") from None


def _record_kind(record: Any, file: Path) -> str:
    if not isinstance(record, dict):
        raise RecordError(file, 0, None, f"expected an object with fields, got {type(record).__name__}")
    if "question" in record or "answer" in record:
        return "vqa"
    if "text" in record:
        return "caption"
    raise RecordError(
        file, 0, None,
        f"cannot tell the kind: expected fields image+text or image+question+answer, found {sorted(record)}",
    )


def _image_from_record(value: Any, file: Path, index: int) -> dict[str, Any]:
    path: str | None = None
    data: bytes | None = None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        path = value
    else:
        problem = f"expected a path, bytes or {{'bytes', 'path'}}, got {type(value).__name__}"
        raise RecordError(file, index, "image", problem)
    if data is None:
        if not path:
            raise RecordError(file, index, "image", "has neither bytes nor a path")
        full = Path(path) if Path(path).is_absolute() else file.parent / path
        if not full.is_file():
            raise RecordError(file, index, "image", f"file {full} does not exist")
        data = full.read_bytes()
    # path=None keeps the bytes: `datasets` stores only the path of an existing file otherwise
    return {"bytes": _checked_image_bytes(data, file, index), "path": None}


@register_dataset
class Records(DatasetSource):
    """Image-text or image-question-answer records from parquet or JSON lines."""

    name = "records"
    cached = False

    def features(self, view: str, **options: Any) -> datasets.Features:
        fields = KIND_FIELDS[options["kind"]]
        return datasets.Features({f: datasets.Image() if f == "image" else datasets.Value("string") for f in fields})

    def resolve_options(
        self, split: str | None, path: str | os.PathLike | None = None, kind: RecordKind = "auto"
    ) -> dict[str, Any]:
        if path is None:
            raise TypeError("records needs path= (a .parquet/.jsonl file, or a directory of <split> files)")
        if kind not in ("auto", *KIND_FIELDS):
            raise ValueError(f"records kind must be one of {('auto', *KIND_FIELDS)}, got {kind!r}")
        file = _records_file(path, split)
        if file.suffix not in RECORD_EXTENSIONS:
            raise ValueError(f"records file {file} must end in one of {RECORD_EXTENSIONS}")
        if kind == "auto":
            first = next(_read_records(file), None)
            if first is None:
                raise ValueError(f"records file {file} holds no records")
            kind = _record_kind(first, file)  # type: ignore[assignment]
        return {"path": str(file.resolve()), "kind": kind}

    def examples(
        self, split: str | None, view: str, path: str | os.PathLike | None = None, kind: RecordKind = "auto"
    ) -> Iterator[dict[str, Any]]:
        assert path is not None and kind in KIND_FIELDS
        file = Path(path)
        fields = KIND_FIELDS[kind]
        for index, record in enumerate(_read_records(file)):
            if not isinstance(record, dict):
                raise RecordError(file, index, None, f"expected an object with fields, got {type(record).__name__}")
            for field in fields:
                if record.get(field) is None:
                    raise RecordError(file, index, field, f"is missing (a {kind} record needs {', '.join(fields)})")
            example: dict[str, Any] = {"image": _image_from_record(record["image"], file, index)}
            for field in fields[1:]:
                value = record[field]
                if not isinstance(value, str) or not value.strip():
                    raise RecordError(file, index, field, f"must be a non-empty string, got {value!r:.60}")
                example[field] = value
            yield example

    def card(self) -> str:
        return format_card(
            "records",
            "Local image-text or VQA records from a parquet or JSON-lines file.",
            {
                "options": "path (a file, or a directory holding <split>.parquet/.jsonl/.json), "
                "kind ('auto' from the first record, 'caption' or 'vqa')",
                "records": "caption: image, text; vqa: image, question, answer",
                "image field": "a path (relative to the records file), bytes, or {'bytes', 'path'}",
                "licence": "whatever the user's data has",
            },
            ["Every record is validated as it is read; a bad one raises RecordError naming its index and field."],
        )
