"""The user's own data: a folder of class subfolders, or a file of records.

Both are validated record by record while they are read; a bad record raises
`RecordError`, which names the file, the record index and the field. They are
not cached (`load_dataset(..., cache=True)` opts in): the files are already local.

imagefolder: `path/<class>/<image>`; `split="x"` reads `path/x/<class>/<image>`.
    Records: image, label (index into the sorted class names, or into `classes=`), label_name,
    file (path relative to the folder read).

records: a parquet or JSON-lines file (`.parquet`, `.jsonl`, `.json`); with
    `split="x"` and a directory `path`, the file `path/x.{parquet,jsonl,json}`. A file `path`
    is read for `split=None`, or for a split its name starts with (`x.jsonl`, `x-0.parquet`);
    any other split is an error, never the same file again. (The `files` dataset,
    `unimodal.data.sources`, reads more formats, renames fields and declares splits.)
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

from ..errors import (
    ConfigError,
    DataError,
    MissingFileError,
    RecordError,  # re-exported
    check_path,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
RECORD_EXTENSIONS = (".parquet", ".jsonl", ".json")
RecordKind = Literal["auto", "caption", "vqa"]
KIND_FIELDS: dict[str, tuple[str, ...]] = {"caption": ("image", "text"), "vqa": ("image", "question", "answer")}




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
        raise MissingFileError(f"imagefolder path {root} is not a directory")
    if split is None:
        return root
    if not (root / split).is_dir():
        subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise MissingFileError(
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
            raise ConfigError("imagefolder needs path= (a directory of class subfolders)")
        root = _split_root(path, split)
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        strays = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if strays:
            raise DataError(
                f"imagefolder {root}: images must sit in class subfolders, found {strays[:5]} directly in it"
            )
        if not found:
            raise DataError(f"imagefolder {root} has no class subfolders")
        if classes is None:
            classes = found
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"imagefolder {root}: subfolders {unknown} are not in classes={list(classes)}")
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
        # one file is one split: split=None reads it; a named split must be in its name (train.jsonl,
        # train-00000-of-00002.parquet), never silently the same file for every split
        if split is not None and not (p.stem == split or any(p.name.startswith(split + sep) for sep in "-_.")):
            raise DataError(f"records path {p} is one file, not split {split!r}: name it {split}.jsonl (or {split}-*), "
                            "point path at a folder of <split> files, pass split=None (split: null), or use the "
                            "files dataset with splits= / split_column= / holdout=")
        return p
    check_path(p, "records path", kind="dir")
    if split is None:
        raise DataError(
            f"records path {p} is a directory: pass split= to read {p}/<split>{{{','.join(RECORD_EXTENSIONS)}}}"
        )
    for ext in RECORD_EXTENSIONS:
        if (p / f"{split}{ext}").is_file():
            return p / f"{split}{ext}"
    looked = ", ".join(split + ext for ext in RECORD_EXTENSIONS)
    raise MissingFileError(f"no records file for split {split!r} in {p}: looked for {looked}")


def _read_records(file: Path) -> Iterator[Any]:
    """Yield the records of a parquet or JSON-lines file; a broken file or line names itself."""
    if file.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(file).iter_batches(batch_size=256)
            for batch in batches:
                yield from batch.to_pylist()
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"records file {file} is not a readable parquet file ({one_line(err)})") from None
        return
    with file.open("rb") as f:
        index = 0
        for raw in f:
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise RecordError(file, index, None, f"is not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r})") from None
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(file, index, None, f"invalid JSON ({err.msg} at column {err.colno})") from None
            index += 1


def one_line(err: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__


def _confined(path: str, file: Path, index: int, allow_outside_root: bool) -> Path:
    """Resolve a record's image path against the records file's folder, refusing escapes.

    A relative path is read relative to the folder holding the records file (the dataset
    root). After resolving symlinks and ``..`` the file must lie inside that root, unless the
    source opts in with ``allow_outside_root=True``; absolute paths are allowed only then.
    """
    root = file.parent.resolve()
    given = Path(path)
    if given.is_absolute() and not allow_outside_root:
        raise RecordError(file, index, "image", f"absolute path {path!r} is outside the dataset root {root} "
                          "(use a path relative to the records file, or pass allow_outside_root=true)")
    full = (given if given.is_absolute() else root / given).resolve()
    if not allow_outside_root and not full.is_relative_to(root):
        raise RecordError(file, index, "image", f"path {path!r} resolves to {full}, outside the dataset root {root} "
                          "(pass allow_outside_root=true to read it anyway)")
    return full


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


def image_parts(value: Any) -> tuple[bytes | None, str | None]:
    """(bytes, path) of a record's image value: a path, raw bytes, or ``{"bytes", "path"}`` (HF's image dict).

    Raises:
        TypeError: any other value, with the sentence that names what is accepted.
    """
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, str):
        return None, value
    raise TypeError(f"expected an image path, bytes or {{'bytes', 'path'}}, got {type(value).__name__}")


def _image_from_record(value: Any, file: Path, index: int, allow_outside_root: bool = False) -> dict[str, Any]:
    try:
        data, path = image_parts(value)
    except TypeError as e:
        raise RecordError(file, index, "image", str(e)) from None
    if data is None:
        if not path:
            raise RecordError(file, index, "image", "has neither bytes nor a path")
        full = _confined(path, file, index, allow_outside_root)
        if not full.is_file():
            problem = f"{full} is a directory, not an image file" if full.is_dir() else f"file {full} does not exist"
            raise RecordError(file, index, "image", problem)
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
        self,
        split: str | None,
        path: str | os.PathLike | None = None,
        kind: RecordKind = "auto",
        allow_outside_root: bool = False,
    ) -> dict[str, Any]:
        if path is None:
            raise ConfigError("records needs path= (a .parquet/.jsonl file, or a directory of <split> files)")
        if kind not in ("auto", *KIND_FIELDS):
            raise DataError(f"records kind must be one of {('auto', *KIND_FIELDS)}, got {kind!r}")
        file = _records_file(path, split)
        if file.suffix not in RECORD_EXTENSIONS:
            raise DataError(f"records file {file} must end in one of {RECORD_EXTENSIONS}")
        if kind == "auto":
            first = next(_read_records(file), None)
            if first is None:
                raise DataError(f"records file {file} holds no records")
            kind = _record_kind(first, file)  # type: ignore[assignment]
        if not isinstance(allow_outside_root, bool):
            raise ConfigError(f"records allow_outside_root must be true or false, got {allow_outside_root!r}")
        return {"path": str(file.resolve()), "kind": kind, "allow_outside_root": allow_outside_root}

    def examples(
        self,
        split: str | None,
        view: str,
        path: str | os.PathLike | None = None,
        kind: RecordKind = "auto",
        allow_outside_root: bool = False,
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
            example: dict[str, Any] = {"image": _image_from_record(record["image"], file, index, allow_outside_root)}
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
                "kind ('auto' from the first record, 'caption' or 'vqa'), "
                "allow_outside_root (default false: image paths must resolve inside the records file's folder)",
                "records": "caption: image, text; vqa: image, question, answer",
                "image field": "a path (relative to the records file, confined to its folder), bytes, or {'bytes', 'path'}",
                "licence": "whatever the user's data has",
            },
            ["Every record is validated as it is read; a bad one raises RecordError naming its index and field."],
        )
