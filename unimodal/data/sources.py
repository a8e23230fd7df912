"""`files`: the user's data read as it is stored, into the columns the task heads read.

    >>> load_dataset("files", "train", path="data/train-*.jsonl", columns={"caption": "text"})

Formats (``format: auto`` picks one from the file names):

* ``jsonl`` / ``json``: one object per line, or a JSON array (a ``.json`` file is an array when its
  first character is ``[``). LLaVA-style conversation files are this format: a record with
  ``conversations: [{from: human|gpt, value}, ...]`` gets a ``conversation`` column (see below).
* ``csv``: a header line, then one record per line.
* ``parquet``: image bytes (``{bytes, path}`` structs or binary) or image paths.
* ``webdataset``: ``.tar`` shards; members sharing a key (the name up to its first dot) are one
  record: ``.jpg/.jpeg/.png/.webp`` is the image, ``.txt`` the caption, ``.cls`` the label, and the
  fields of ``.json`` are merged in.
* ``imagefolder``: ``path/<class>/<image>`` (label = index of the sorted class names, or of ``classes``).

``path`` is a file, a directory, a glob (``data/train-*-of-*.parquet``) or a list of these; an
fsspec URL (``memory://``, ``file://``, ...) works for the data files (image paths then must be
absolute or ``image_root`` a local folder).

Columns. The heads read ``image``, ``caption`` (captioning, text→image), ``label`` (class→image),
``question`` + ``answer`` (VQA) and ``conversation`` (the conversation head).
``columns: {caption: text, image: file_name}`` names the source field each of them comes from;
a record's other fields are dropped. A field named in ``columns`` that a record lacks is a bad record.

Splits, one of:

* ``splits: {train: "train-*.jsonl", test: "test.jsonl"}`` (files per split, relative to ``path``
  when that is a directory);
* ``split_column: subset``: the records whose field ``subset`` equals the split;
* ``holdout: 0.1`` (``holdout_seed``, ``holdout_split: test``): a seeded hash of each record's
  position sends that fraction to ``holdout_split`` and the rest to ``train``;
* none of them: split ``None`` reads every file; split ``x`` reads the files whose name starts
  with ``x`` followed by ``-``, ``_`` or ``.`` (``train-00000-of-00004.parquet``), or the folder ``x``.

A split that none of these yields is a `DataError` listing what exists: never another split's data.

Bad records. ``on_bad_record: error`` (default) raises `RecordError` naming the file and its line
(or record number for parquet/tar); ``skip`` drops the record, counts it, and warns once at the end
with the count and the first reason (`last_skipped` holds the counts of the last read).

Conversations. ``conversation`` is a list of ``{role: user|assistant, text}`` turns that alternate,
starting with the user. LLaVA's ``from: human|gpt`` and ``value`` are accepted; the ``<image>``
placeholder is removed from the text (ACDiT sees the one image before the first turn), so a record
may hold at most one.
"""

from __future__ import annotations

import csv
import glob as globlib
import hashlib
import io
import json
import os
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets

from unimodal.data.local import IMAGE_EXTENSIONS, _checked_image_bytes, image_parts, one_line
from unimodal.data.registry import DatasetSource, format_card, register_dataset

from ..errors import ConfigError, DataError, MissingFileError, RecordError

FORMATS = ("auto", "jsonl", "json", "csv", "parquet", "webdataset", "imagefolder")
EXTENSIONS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".tar": "webdataset"}
WDS_IMAGE = (".jpg", ".jpeg", ".png", ".webp")
STRING_COLUMNS = ("caption", "question", "answer", "label_name")
LIST_COLUMNS = ("captions", "questions", "answers")
KNOWN_COLUMNS = ("image", "label", *STRING_COLUMNS, *LIST_COLUMNS, "conversation")
IMAGE_PLACEHOLDER = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
DEFAULT_COLUMNS = {  # source field per column when `columns` does not name one (first present wins)
    "image": ("image", "jpg", "jpeg", "png", "webp", "img", "file_name"),
    "caption": ("caption", "txt"),
    "label": ("label", "cls"),
    "conversation": ("conversation", "conversations"),
}
last_skipped: dict[str, Any] = {"skipped": 0, "read": 0, "first": None}


# ---- files ---------------------------------------------------------------------------------------------


def _is_url(p: str) -> bool:
    return "://" in p and not p.startswith("file://")


def _expand(pattern: str, base: Path | None) -> list[str]:
    """Files of one path entry: a URL (fsspec glob), a file, a directory (its files, recursively) or a glob."""
    if _is_url(pattern):
        import fsspec

        files = [f.full_name if hasattr(f, "full_name") else f.path for f in fsspec.open_files(pattern)]
        return sorted(f if "://" in f else f"{pattern.split('://')[0]}://{f.lstrip('/')}" for f in files)
    p = Path(pattern.removeprefix("file://")).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    if p.is_file():
        return [str(p.resolve())]
    if p.is_dir():
        return sorted(str(f.resolve()) for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    return sorted(str(Path(f).resolve()) for f in globlib.glob(str(p), recursive=True) if Path(f).is_file())


def _format_of(files: list[str], fmt: str) -> str:
    if fmt != "auto":
        return fmt
    kinds = {EXTENSIONS[Path(f).suffix.lower()] for f in files if Path(f).suffix.lower() in EXTENSIONS}
    if len(kinds) == 1:
        return kinds.pop()
    if not kinds and files and all(Path(f).suffix.lower() in IMAGE_EXTENSIONS for f in files):
        return "imagefolder"
    found = sorted({Path(f).suffix or Path(f).name for f in files})[:8]
    raise DataError(f"files: cannot tell the format from the file names (kinds {sorted(kinds) or 'none'}, suffixes {found}); "
                    f"pass format= one of {FORMATS[1:]}")


def _split_files(path: Any, split: str | None, splits: dict[str, Any] | None) -> tuple[list[str], Path | None]:
    """The files of `split` and the folder they are relative to (None for URLs)."""
    entries = [path] if isinstance(path, (str, os.PathLike)) else list(path or [])
    if not entries and not splits:
        raise ConfigError("files needs path= (a file, a folder, a glob or a list of them) or splits=")
    base = None
    if len(entries) == 1 and not _is_url(str(entries[0])) and Path(str(entries[0])).expanduser().is_dir():
        base = Path(str(entries[0])).expanduser().resolve()
    if splits is not None:
        if not isinstance(splits, dict):
            raise ConfigError(f"files splits= must map split names to files, got {type(splits).__name__}")
        if split not in splits:
            raise DataError(f"files: no split {split!r}; splits= declares {sorted(splits)}")
        wanted = splits[split]
        wanted = [wanted] if isinstance(wanted, (str, os.PathLike)) else list(wanted)
        files = sorted({f for w in wanted for f in _expand(str(w), base)})
        if not files:
            raise MissingFileError(f"files: split {split!r} names {wanted}, which match no file" + (f" under {base}" if base else ""))
        return files, base
    files = sorted({f for e in entries for f in _expand(str(e), None)})
    if not files:
        raise MissingFileError(f"files: path {path} matches no file")
    return files, base


def _named_split(files: list[str], split: str, base: Path | None) -> list[str]:
    """Files whose name (or first folder under `base`) is the split: `train.jsonl`, `train-00001-of-00004.tar`, `train/...`."""
    def belongs(f: str) -> bool:
        name = f.rsplit("/", 1)[-1]
        if name == split or any(name.startswith(split + sep) for sep in "-_."):
            return True
        if base is not None and not _is_url(f):
            rel = Path(f).relative_to(base).parts if Path(f).is_relative_to(base) else ()
            return len(rel) > 1 and rel[0] == split
        return False

    return [f for f in files if belongs(f)]


# ---- raw records: (where, record) with where = "file:line" or "file: record i" -------------------------


def _open(f: str, mode: str = "rb") -> Any:
    if _is_url(f):
        import fsspec

        return fsspec.open(f, mode).open()
    return open(f.removeprefix("file://"), mode)


def _read_json(f: str) -> Iterator[tuple[str, int, Any]]:
    with _open(f) as fh:
        data = fh.read()
    text = data.decode("utf-8", errors="replace")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{f}:{err.lineno}: invalid JSON array ({err.msg} at column {err.colno})") from None
        for i, item in enumerate(items):
            yield f"{f}: array item", i, item
        return
    yield from _read_jsonl_text(f, text)


def _read_jsonl_text(f: str, text: str) -> Iterator[tuple[str, int, Any]]:
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{f}:{lineno}", lineno, json.loads(line)
        except json.JSONDecodeError as err:
            yield f"{f}:{lineno}", lineno, _Bad(f"invalid JSON ({err.msg} at column {err.colno})")


def _read_jsonl(f: str) -> Iterator[tuple[str, int, Any]]:
    with _open(f) as fh:
        text = fh.read().decode("utf-8", errors="replace")
    yield from _read_jsonl_text(f, text)


def _read_csv(f: str) -> Iterator[tuple[str, int, Any]]:
    with _open(f) as fh:
        reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8", newline=""))
        width = len(reader.fieldnames or [])
        for row in reader:
            if None in row or len(row) != width or any(v is None for v in row.values()):
                yield f"{f}:{reader.line_num}", reader.line_num, _Bad(f"has a different number of fields than the header ({width})")
                continue
            yield f"{f}:{reader.line_num}", reader.line_num, row


def _read_parquet(f: str) -> Iterator[tuple[str, int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    i = 0
    try:
        with _open(f) as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=256):
                for row in batch.to_pylist():
                    yield f"{f}: row", i, row
                    i += 1
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{f} is not a readable parquet file ({one_line(err)})") from None


def _read_tar(f: str) -> Iterator[tuple[str, int, Any]]:
    """webdataset: consecutive members with one key form a record."""
    record: dict[str, Any] = {}
    key, i = None, 0
    try:
        with _open(f) as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, name = member.name.rpartition("/")
                if name.startswith("."):
                    continue
                stem, _, ext = name.partition(".")
                k = f"{folder}/{stem}" if folder else stem
                if key is not None and k != key:
                    yield f"{f}: sample {key!r}", i, record
                    record, i = {}, i + 1
                key = k
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                record[ext.lower()] = data
    except tarfile.TarError as err:
        raise DataError(f"{f} is not a readable tar shard ({one_line(err)})") from None
    if key is not None:
        yield f"{f}: sample {key!r}", i, record


def _wds_fields(raw: dict[str, bytes], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ext, data in raw.items():
        last = ext.rsplit(".", 1)[-1]
        if "." + last in WDS_IMAGE:
            out.setdefault(ext, data)
        elif last in ("txt", "cls"):
            text = data.decode("utf-8", errors="replace").strip()
            out[ext] = int(text) if last == "cls" and text.lstrip("-").isdigit() else text
        elif last == "json":
            try:
                fields = json.loads(data)
            except json.JSONDecodeError as err:
                raise _BadRecord(f"its .json is invalid ({err.msg})") from None
            if isinstance(fields, dict):
                for k, v in fields.items():
                    out.setdefault(k, v)
        else:
            out[ext] = data
    return out


class _Bad:
    """A raw record that could not even be parsed (its reason)."""

    def __init__(self, reason: str):
        self.reason = reason


class _BadRecord(Exception):
    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason, self.field = reason, field


READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet, "webdataset": _read_tar}


# ---- normalising one record ----------------------------------------------------------------------------


def _source_field(column: str, record: dict[str, Any], columns: dict[str, str]) -> str | None:
    if column in columns:
        return columns[column]
    for name in DEFAULT_COLUMNS.get(column, (column,)):
        if name in record:
            return name
    return None


def _image(value: Any, root: Path | None, allow_outside_root: bool) -> dict[str, Any]:
    try:
        data, path = image_parts(value)
    except TypeError as e:
        raise _BadRecord(str(e), "image") from None
    if data is None:
        if not path:
            raise _BadRecord("has neither bytes nor a path", "image")
        given = Path(path)
        if given.is_absolute() and not allow_outside_root:
            raise _BadRecord(f"absolute path {path!r} is outside the image root {root} (pass allow_outside_root=true)", "image")
        if root is None and not given.is_absolute():
            raise _BadRecord(f"relative path {path!r} but the data files are remote: pass image_root=", "image")
        full = (given if given.is_absolute() else root / given).resolve()  # type: ignore[operator]
        if not allow_outside_root and root is not None and not full.is_relative_to(root.resolve()):
            raise _BadRecord(f"path {path!r} resolves to {full}, outside the image root {root} (pass allow_outside_root=true)", "image")
        if not full.is_file():
            raise _BadRecord(f"file {full} does not exist", "image")
        data = full.read_bytes()
    try:
        _checked_image_bytes(data, "", 0)
    except RecordError as err:
        raise _BadRecord(str(err).split("field 'image': ", 1)[-1], "image") from None
    return {"bytes": data, "path": None}


def _turns(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _BadRecord("must be a non-empty list of turns", "conversation")
    turns, images = [], 0
    for j, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise _BadRecord(f"turn {j} is a {type(turn).__name__}, not {{from, value}}", "conversation")
        role = ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        text = turn.get("value", turn.get("text", turn.get("content")))
        if role is None or not isinstance(text, str):
            raise _BadRecord(f"turn {j} needs from: human|gpt (or role: user|assistant) and a text value", "conversation")
        images += text.count(IMAGE_PLACEHOLDER)
        text = " ".join(text.replace(IMAGE_PLACEHOLDER, " ").split())
        if role != ("user" if j % 2 == 0 else "assistant"):
            raise _BadRecord(f"turn {j} is from the {role}: turns must alternate user, assistant, starting with the user",
                             "conversation")
        if not text:
            raise _BadRecord(f"turn {j} is empty", "conversation")
        turns.append({"role": role, "text": text})
    if images > 1:
        raise _BadRecord(f"holds {images} {IMAGE_PLACEHOLDER} placeholders; a record has one image", "conversation")
    if len(turns) % 2:
        turns = turns[:-1]  # a trailing question without an answer trains nothing
        if not turns:
            raise _BadRecord("has no answered turn", "conversation")
    return turns


def _normalise(record: Any, want: tuple[str, ...], columns: dict[str, str], classes: list[str] | None,
               root: Path | None, allow_outside_root: bool) -> dict[str, Any]:
    if isinstance(record, _Bad):
        raise _BadRecord(record.reason)
    if not isinstance(record, dict):
        raise _BadRecord(f"expected an object with fields, got {type(record).__name__}")
    out: dict[str, Any] = {}
    for col in want:
        src = _source_field(col, record, columns)
        if src is None or record.get(src) is None:
            raise _BadRecord(f"is missing (looked for {src or ' or '.join(DEFAULT_COLUMNS.get(col, (col,)))}); "
                             f"fields: {sorted(record)}", col)
        value = record[src]
        if col == "image":
            out[col] = _image(value, root, allow_outside_root)
        elif col == "label":
            out[col] = _label(value, classes)
        elif col == "conversation":
            out[col] = _turns(value)
        elif col in LIST_COLUMNS:
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise _BadRecord(f"must be a list of non-empty strings, got {value!r:.60}", col)
            out[col] = value
        else:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                raise _BadRecord(f"must be a non-empty string, got {value!r:.60}", col)
            out[col] = value.strip()
    return out


def _label(value: Any, classes: list[str] | None) -> int:
    if isinstance(value, str) and classes is not None:
        if value not in classes:
            raise _BadRecord(f"class {value!r} is not in classes= ({len(classes)} names)", "label")
        return classes.index(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _BadRecord(f"must be a non-negative integer (or a class name with classes=), got {value!r:.40}", "label")
    return value


def _held_out(seed: int, position: int, fraction: float) -> bool:
    h = hashlib.sha256(f"{seed}:{position}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


# ---- the source ---------------------------------------------------------------------------------------


@register_dataset
class Files(DatasetSource):
    """The user's files (JSONL/JSON/CSV/parquet/webdataset/image folder), mapped to the heads' columns."""

    name = "files"
    cached = False

    def features(self, view: str, **options: Any) -> datasets.Features:
        feats: dict[str, Any] = {}
        for col in options["want"]:
            if col == "image":
                feats[col] = datasets.Image()
            elif col == "label":
                feats[col] = datasets.Value("int64")
            elif col in LIST_COLUMNS:
                feats[col] = datasets.Sequence(datasets.Value("string"))
            elif col == "conversation":
                feats[col] = [{"role": datasets.Value("string"), "text": datasets.Value("string")}]
            else:
                feats[col] = datasets.Value("string")
        return datasets.Features(feats)

    def resolve_options(
        self,
        split: str | None,
        path: Any = None,
        format: str = "auto",
        columns: dict[str, str] | None = None,
        splits: dict[str, Any] | None = None,
        split_column: str | None = None,
        holdout: float | None = None,
        holdout_seed: int = 0,
        holdout_split: str = "test",
        classes: Sequence[str] | None = None,
        image_root: str | None = None,
        allow_outside_root: bool = False,
        on_bad_record: str = "error",
        limit: int | None = None,
    ) -> dict[str, Any]:
        if format not in FORMATS:
            raise ConfigError(f"files format={format!r} is unknown; valid: {', '.join(FORMATS)}")
        if on_bad_record not in ("skip", "error"):
            raise ConfigError(f"files on_bad_record must be 'skip' or 'error', got {on_bad_record!r}")
        columns = dict(columns or {})
        unknown = sorted(set(columns) - set(KNOWN_COLUMNS))
        if unknown:
            raise ConfigError(f"files columns= maps unknown column(s) {unknown}: the heads read {', '.join(KNOWN_COLUMNS)} "
                              "(columns: {caption: text} reads the caption from the field 'text')")
        ways = [w for w, v in (("splits", splits), ("split_column", split_column), ("holdout", holdout)) if v is not None]
        if len(ways) > 1:
            raise ConfigError(f"files: give one way of splitting, got {' and '.join(ways)}")
        if holdout is not None:
            if not (isinstance(holdout, (int, float)) and 0 < holdout < 1):
                raise ConfigError(f"files holdout must be a fraction in (0, 1), got {holdout!r}")
            if split not in ("train", holdout_split):
                raise DataError(f"files: holdout={holdout} makes the splits 'train' and {holdout_split!r}, not {split!r}")
        files, base = _split_files(path, split if splits is not None else None, splits)
        if splits is None and split_column is None and holdout is None and split is not None:
            named = _named_split(files, split, base)
            if not named:
                shown = [f.rsplit("/", 1)[-1] for f in files[:6]]
                raise DataError(f"files: no file of split {split!r} under {path} (names starting '{split}-', '{split}_', "
                                f"'{split}.' or a folder '{split}/'); files: {shown}{' ...' if len(files) > 6 else ''}. "
                                "Declare splits=, split_column= or holdout=")
            files = named
        fmt = _format_of(files, format)
        if fmt != "imagefolder":  # a folder also holds the images the records name
            own = [f for f in files if EXTENSIONS.get(Path(f).suffix.lower()) in (fmt, "json" if fmt == "jsonl" else fmt)]
            files = own or files
        if fmt == "imagefolder":
            files = [f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
            root = base if base is not None else Path(os.path.commonpath([str(Path(f).parent.parent) for f in files]))
            if split is not None and splits is None and (root / split).is_dir():
                root = root / split
            found = sorted({Path(f).relative_to(root).parts[0] for f in files if len(Path(f).relative_to(root).parts) > 1})
            if classes is None:
                classes = found
            missing = sorted(set(found) - set(classes))
            if missing:
                raise DataError(f"files imagefolder {root}: class folders {missing} are not in classes={list(classes)}")
            want: tuple[str, ...] = ("image", "label", "label_name")
            image_dir = str(root)
        else:
            first = self._first(files, fmt)
            want = tuple(c for c in KNOWN_COLUMNS if c != "label_name" and (
                c in columns or (first is not None and _source_field(c, first, {}) is not None)))
            if "conversation" in want and "caption" in want and "caption" not in columns:
                want = tuple(c for c in want if c != "caption")
            if "image" not in want:
                raise DataError(f"files: records of {files[0]} have no image field (fields: {sorted(first or {})}); "
                                "map one with columns: {image: FIELD}")
            if len(want) == 1:
                raise DataError(f"files: records of {files[0]} hold only an image (fields: {sorted(first or {})}); "
                                f"map the text or label with columns= (columns the heads read: {', '.join(KNOWN_COLUMNS[1:])})")
            image_dir = image_root or (str(Path(files[0]).parent) if not _is_url(files[0]) else None)
        return {"path": files, "format": fmt, "columns": columns, "want": list(want), "split_column": split_column,
                "holdout": holdout, "holdout_seed": int(holdout_seed), "holdout_split": holdout_split,
                "classes": list(classes) if classes is not None else None,
                "image_root": image_dir, "image_root_given": image_root is not None,
                "allow_outside_root": bool(allow_outside_root), "on_bad_record": on_bad_record, "limit": limit}

    @staticmethod
    def _first(files: list[str], fmt: str) -> dict[str, Any] | None:
        for f in files:
            for _, _, rec in READERS[fmt](f):
                if isinstance(rec, dict):
                    return _wds_fields(rec, "") if fmt == "webdataset" else rec
        return None

    def examples(self, split: str | None, view: str, path: Any = None, format: str = "auto",
                 columns: dict[str, str] | None = None, splits: dict[str, Any] | None = None,
                 split_column: str | None = None, holdout: float | None = None, holdout_seed: int = 0,
                 holdout_split: str = "test", classes: Sequence[str] | None = None, image_root: str | None = None,
                 allow_outside_root: bool = False, on_bad_record: str = "error", limit: int | None = None,
                 **resolved: Any) -> Iterator[dict[str, Any]]:
        """The split's good records (the options are those `resolve_options` returned)."""
        options = dict(path=path, format=format, columns=columns or {}, split_column=split_column, holdout=holdout,
                       holdout_seed=holdout_seed, holdout_split=holdout_split, classes=classes, image_root=image_root,
                       allow_outside_root=allow_outside_root, on_bad_record=on_bad_record, limit=limit, **resolved)
        for _where, ok, example in self.read(split, **options):
            if ok:
                yield example

    def read(self, split: str | None, path: list[str], format: str, columns: dict[str, str], want: list[str],
             split_column: str | None, holdout: float | None, holdout_seed: int, holdout_split: str,
             classes: list[str] | None, image_root: str | None, image_root_given: bool, allow_outside_root: bool,
             on_bad_record: str, limit: int | None = None) -> Iterator[tuple[str, bool, Any]]:
        """Yield (where, ok, example) for every raw record of the split: ok=False carries the reason (skip mode)."""
        stats = {"skipped": 0, "read": 0, "first": None}
        last_skipped.clear()
        last_skipped.update(stats)
        position = kept = 0
        matched_split = set()
        for where, index, raw, root in self._raw(path, format, classes, image_root, image_root_given):
            pos, position = position, position + 1
            if holdout is not None:
                held = _held_out(holdout_seed, pos, holdout)
                if held != (split == holdout_split):
                    continue
            try:
                if isinstance(raw, dict) and format == "webdataset":
                    raw = _wds_fields(raw, where)
                if split_column is not None:
                    value = raw.get(split_column) if isinstance(raw, dict) else None
                    matched_split.add(str(value))
                    if str(value) != str(split):
                        continue
                example = raw if format == "imagefolder" else _normalise(
                    raw, tuple(want), columns, classes, Path(root) if root else None, allow_outside_root)
            except _BadRecord as bad:
                field = f", field {bad.field!r}" if bad.field else ""
                reason = f"{where}{f' {index}' if not where.endswith(str(index)) else ''}{field}: {bad.reason}"
                if on_bad_record == "error":
                    raise RecordError(reason + " (on_bad_record: skip drops such records)") from None
                last_skipped["skipped"] += 1
                last_skipped["first"] = last_skipped["first"] or reason
                yield where, False, reason
                continue
            last_skipped["read"] += 1
            kept += 1
            yield where, True, example
            if limit is not None and kept >= limit:
                break
        if split_column is not None and kept == 0 and last_skipped["skipped"] == 0:
            raise DataError(f"files: no record has {split_column} == {split!r}; values seen: {sorted(matched_split)[:10]}")
        if last_skipped["skipped"]:
            warnings.warn(f"files: skipped {last_skipped['skipped']} bad record(s), kept {kept}; first: {last_skipped['first']}",
                          stacklevel=2)
        if kept == 0:
            raise DataError(f"files: split {split!r} of {path[0]}{' ...' if len(path) > 1 else ''} holds no usable record")

    @staticmethod
    def _raw(files: list[str], fmt: str, classes: list[str] | None, image_root: str | None,
             image_root_given: bool) -> Iterator[tuple[str, int, Any, str | None]]:
        if fmt == "imagefolder":
            root = Path(image_root or "/")
            by_class: dict[str, list[Path]] = {}
            for f in files:
                rel = Path(f).relative_to(root)
                if len(rel.parts) > 1:
                    by_class.setdefault(rel.parts[0], []).append(Path(f))
            i = 0
            for label, name in enumerate(classes or []):
                for f in sorted(by_class.get(name, [])):
                    try:
                        example = {"image": _image(f.read_bytes(), None, True), "label": label, "label_name": name}
                    except _BadRecord as bad:
                        yield str(f), i, _Bad(bad.reason), None
                    else:
                        yield str(f), i, example, None
                    i += 1
            return
        for f in files:
            root = image_root if image_root_given else (str(Path(f).parent) if not _is_url(f) else None)
            for where, index, raw in READERS[fmt](f):
                yield where, index, raw, root

    def card(self) -> str:
        return format_card(
            "files",
            "The user's data as stored: JSONL/JSON (LLaVA conversations too), CSV, parquet, webdataset tar shards, image folders.",
            {
                "options": "path (file, folder, glob, list, fsspec URL), format (auto|" + "|".join(FORMATS[1:]) + "), "
                "columns ({column: source field}), splits ({split: files}) | split_column | holdout (+ holdout_seed, "
                "holdout_split), classes, image_root, allow_outside_root, on_bad_record (error|skip), limit",
                "columns": "image + what the records hold of " + ", ".join(KNOWN_COLUMNS[1:]),
                "splits": "declared, a split column, a seeded held-out fraction, or file names starting with the split; "
                "a missing split is an error",
                "licence": "whatever the user's data has",
            },
            ["Module docstring of unimodal.data.sources: the full rules (column defaults, webdataset keys, conversations)."],
        )
