"""Prepared shards: a source encoded once (VAE posterior moments or pixels, texts, labels), read by index.

`prepare(spec, out)` (CLI: ``unimodal data prepare --source SPEC --out DIR``) writes::

    DIR/prepare.json         what is being prepared (fingerprints, shard size, dtype): a resume must match it
    DIR/shard-00000.arrow    Arrow IPC stream files (what HF `datasets.Dataset.from_file` reads)
    DIR/shard-00000.json     the shard's record count, byte size and SHA-256, written after the shard
    DIR/manifest.json        written last: schema version, fingerprints, tokenizer, every shard

Shard ``k`` holds the source's good records ``k·shard_size … (k+1)·shard_size - 1`` in source
order. Every file is written by `unimodal.atomic` (temporary name, fsync, rename), and a shard
counts as done only when its sidecar names its SHA-256; so a killed prepare started again skips
the done shards and rewrites the others, with no duplicate and no missing record. Under
torchrun (``RANK``/``WORLD_SIZE``) or with ``num_proc`` workers, worker ``r`` of ``w`` encodes
the shards ``k`` with ``k % w == r``; worker 0 writes ``prepare.json`` first and the manifest
once every shard is done.

Columns of a shard: ``position`` (the record's index among the source's good records);
``moments`` (VAE: posterior mean and logvar, ``(2, C, h, w)``, unscaled) or ``pixels``
(no VAE: ``(C, H, W)`` uint8 after `fit_image`); ``flip_moments`` with ``flip=True`` (the
VAE moments of the horizontally flipped image, as MAR stores them; pixels flip exactly at
read time); the source's other columns (caption, label, question, answer, conversation, ...);
and ``<column>_ids`` (token ids) for each text column when a tokenizer is given.

Why Arrow and not parquet: training reads one record at a time in a random order. An Arrow
IPC file is read in place (one ``pread`` of a fixed-size row, a few µs); parquet must decode a
compressed row group per access (``benchmarks/data_scale.py`` measures both, see its JSON).

`PreparedData(path, visual)` opens a prepared directory, checks it (schema version, every shard
present with its size and SHA-256, the visual config and VAE it was made with) and reads
records by global index. Visual rows are read with ``pread`` and the other columns through a
memory map, so memory does not grow with the dataset.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path, remove_orphans, write_text
from ..config import VisualConfig
from ..errors import ConfigError, DataError, MissingFileError, check_fields

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
INTENT = "prepare.json"
DTYPES = ("float16", "float32")
OPEN_TABLES = 4096  # shards whose memory-mapped table a reader keeps (no file descriptor each)


def _open_files_limit(wanted: int) -> int:
    """File descriptors a reader may keep open: raises the soft limit toward `wanted` (up to the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 256 if hard == resource.RLIM_INFINITY else min(hard, wanted + 256)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(16, (soft if soft != resource.RLIM_INFINITY else wanted + 256) - 128)


# ---- the source spec ------------------------------------------------------------------------------------


@dataclass
class SourceSpec:
    """What to prepare: a registered dataset (default `files`), its split and options, and the visual config."""

    dataset: str = "files"
    split: str | None = "train"
    options: dict[str, Any] = field(default_factory=dict)
    visual: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: str | os.PathLike | dict[str, Any]) -> "SourceSpec":
        """From a dict, or a YAML/JSON file holding ``{dataset, split, options, visual}``."""
        if not isinstance(spec, dict):
            path = Path(spec)
            if not path.is_file():
                raise MissingFileError(f"--source {spec}: no such file (a YAML file: dataset, split, options, visual)")
            import yaml

            spec = yaml.safe_load(path.read_text()) or {}
            if not isinstance(spec, dict):
                raise ConfigError(f"--source {path}: expected a mapping with dataset, split, options, visual")
        check_fields(spec, list(cls.__dataclass_fields__), "key", where="source spec: ", plural="keys")
        return cls(**spec)

    def visual_config(self, vae_dir: str | None = None) -> VisualConfig:
        d = dict(self.visual)
        if vae_dir is not None:
            d["vae_dir"] = str(vae_dir)
        return VisualConfig.from_dict(d)


# ---- fingerprints --------------------------------------------------------------------------------------


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def vae_fingerprint(vae_dir: str | os.PathLike) -> str:
    """SHA-256 of the VAE's config and weight files (names and bytes)."""
    h = hashlib.sha256()
    root = Path(vae_dir)
    for f in sorted(root.iterdir()):
        if f.is_file() and (f.name == "config.json" or f.name.startswith("diffusion_pytorch_model")):
            h.update(f.name.encode())
            h.update(file_sha256(f).encode())
    return h.hexdigest()


def visual_fingerprint(visual: VisualConfig) -> str:
    """The visual fields that change what a shard holds (the VAE's path does not: its bytes are fingerprinted)."""
    d = asdict(visual)
    d["vae_dir"] = bool(visual.vae_dir)
    return _sha({k: d[k] for k in ("channels", "image_size", "vae_dir", "vae_downsample")})


def source_fingerprint(dataset: str, split: str | None, options: dict[str, Any]) -> str:
    """The resolved options plus the name, size and mtime of every data file they name."""
    files = options.get("path")
    stats = []
    for f in files if isinstance(files, list) else [files] if isinstance(files, str) else []:
        p = Path(str(f))
        if p.is_file():
            st = p.stat()
            stats.append([str(p), st.st_size, st.st_mtime_ns])
        elif p.is_dir():
            stats += [[str(q), q.stat().st_size, q.stat().st_mtime_ns] for q in sorted(p.rglob("*")) if q.is_file()]
    return _sha({"dataset": dataset, "split": split, "options": options, "files": stats})


# ---- reading the source as a stream of good records ----------------------------------------------------


def source_records(dataset: str, split: str | None, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(iterator of example dicts, resolved options). `files` streams; other sources are loaded first."""
    from . import get_source, load_dataset
    from .registry import check_dataset
    from .sources import Files

    resolved = check_dataset(dataset, split, **options)
    source = get_source(dataset)
    if isinstance(source, Files):
        return (ex for _, ok, ex in source.read(split, **resolved) if ok), resolved
    ds = load_dataset(dataset, split, **options)
    return iter(ds), resolved


def _pil(value: Any) -> Any:
    from PIL import Image

    if isinstance(value, dict):
        return Image.open(io.BytesIO(value["bytes"]))
    return value


# ---- writing -------------------------------------------------------------------------------------------


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _done(out: Path, k: int) -> dict[str, Any] | None:
    """The sidecar of shard k if the shard is complete and matches it."""
    side, shard = out / f"{_shard_name(k)}.json", out / f"{_shard_name(k)}.arrow"
    if not side.is_file() or not shard.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError:
        return None
    if shard.stat().st_size != meta.get("bytes") or file_sha256(shard) != meta.get("sha256"):
        return None
    return meta


def _encode(images: list[Any], visual: VisualConfig, vae: Any, flip: bool, dtype: str) -> dict[str, np.ndarray]:
    from .transforms import fit_image, to_tensor_images

    channels = 3 if vae is not None else visual.channels
    pil = [fit_image(_pil(im), visual.image_size, channels) for im in images]
    if vae is None:
        arr = np.stack([np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], -1).transpose(2, 0, 1) for im in pil])
        return {"pixels": arr.reshape(len(arr), -1)}
    x = to_tensor_images(pil, channels=3)
    out = {}
    for name, batch in (("moments", x), ("flip_moments", x.flip(-1))) if flip else (("moments", x),):
        with torch.no_grad():
            dist = vae.vae.encode(batch.to(vae.device, vae.dtype)).latent_dist
        m = torch.cat([dist.mean.float(), dist.logvar.float()], 1).cpu().numpy()  # (B, 2C, h, w)
        out[name] = m.astype(dtype).reshape(len(m), -1)
    return out


def _write_shard(out: Path, k: int, rows: list[dict[str, Any]], positions: list[int], visual: VisualConfig, vae: Any,
                 flip: bool, dtype: str, tokenizer: Any, batch: int) -> dict[str, Any]:
    import pyarrow as pa

    arrays: dict[str, Any] = {"position": pa.array(positions, pa.int64())}
    parts: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(rows), batch):
        for name, arr in _encode([r["image"] for r in rows[s : s + batch]], visual, vae, flip, dtype).items():
            parts.setdefault(name, []).append(arr)
    for name, chunks in parts.items():
        flat = np.concatenate(chunks)
        arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
    for col in (c for c in rows[0] if c != "image"):
        values = [r[col] for r in rows]
        arrays[col] = pa.array(values)
        if tokenizer is not None and isinstance(values[0], str):
            arrays[f"{col}_ids"] = pa.array([tokenizer.encode(v) for v in values], pa.list_(pa.int32()))
    table = pa.record_batch(list(arrays.values()), names=list(arrays))
    shard = out / f"{_shard_name(k)}.arrow"
    with atomic_path(shard) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_batch(table)
    offsets = _visual_offsets(shard)
    meta = {"file": shard.name, "records": len(rows), "first_position": positions[0], "bytes": shard.stat().st_size,
            "sha256": file_sha256(shard), "visual_offsets": offsets,
            "schema": {f.name: str(f.type) for f in table.schema}}
    write_text(out / f"{_shard_name(k)}.json", json.dumps(meta, indent=1))
    return meta


def _visual_offsets(shard: Path) -> dict[str, int]:
    """Byte offset in the file of each fixed-size visual column's values (read later with pread)."""
    import pyarrow as pa

    with pa.memory_map(str(shard)) as mm:
        base = mm.read_buffer().address  # the whole file, zero-copy: buffer addresses minus this are file offsets
        mm.seek(0)
        table = pa.ipc.open_stream(mm).read_all()
        out = {}
        for name in ("pixels", "moments", "flip_moments"):
            if name in table.column_names:
                chunk = table.column(name).chunk(0)
                values = chunk.values
                out[name] = int(values.buffers()[1].address - base + values.offset * values.type.byte_width)
        return out


def prepare(
    spec: SourceSpec | dict[str, Any] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    vae_dir: str | None = None,
    shard_size: int = 1024,
    num_proc: int = 1,
    flip: bool = False,
    dtype: str = "float16",
    tokenizer: str | os.PathLike | None = None,
    batch: int = 64,
    rank: int | None = None,
    world: int | None = None,
    progress: bool = False,
) -> Path:
    """Encode a source into prepared shards under `out`; returns the manifest's path (see the module docstring).

    Args:
        spec: `SourceSpec` or what `SourceSpec.load` reads.
        vae_dir: overrides ``visual.vae_dir`` (a local AutoencoderKL); none: pixel shards.
        shard_size: records per shard.
        num_proc: local worker processes (each encodes every num_proc-th shard).
        flip: also store the moments of the horizontally flipped image.
        dtype: of the stored moments (float16 halves the disk; float32 keeps them bit-exact).
        tokenizer: a saved TextTokenizer directory: text columns also get their token ids.
        rank, world: this worker's share (default: torchrun's RANK/WORLD_SIZE, else 0/1).
    """
    spec = spec if isinstance(spec, SourceSpec) else SourceSpec.load(spec)
    if not isinstance(shard_size, int) or shard_size <= 0:
        raise ConfigError(f"shard_size must be a positive integer, got {shard_size!r}")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    visual = spec.visual_config(vae_dir)
    if visual.frames > 1:
        raise ConfigError("prepare encodes images; video (visual.frames > 1) is not supported")
    out = Path(out)
    if num_proc > 1 and rank is None:
        return _prepare_pool(spec, out, vae_dir, shard_size, num_proc, flip, dtype, tokenizer, batch)
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
    records, resolved = source_records(spec.dataset, spec.split, spec.options)
    intent = {
        "schema_version": SCHEMA_VERSION,
        "source": {"dataset": spec.dataset, "split": spec.split, "options": resolved},
        "source_fingerprint": source_fingerprint(spec.dataset, spec.split, resolved),
        "visual": {k: v for k, v in asdict(visual).items() if k != "vae_dir"},
        "visual_fingerprint": visual_fingerprint(visual),
        "vae": None,
        "encoding": "vae_moments" if visual.vae_dir else "pixels",
        "dtype": dtype if visual.vae_dir else "uint8",
        "flip": bool(flip) and bool(visual.vae_dir),
        "shard_size": shard_size,
        "tokenizer": None,
    }
    vae = None
    if visual.vae_dir:
        from unimodal.tasks.base import bank_vae

        local = int(os.environ.get("LOCAL_RANK", rank))
        device = f"cuda:{local % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
        vae = bank_vae(visual, device)  # each torchrun rank encodes on its own GPU
        intent["vae"] = {"dir": str(visual.vae_dir), "fingerprint": vae_fingerprint(visual.vae_dir),
                         "scaling_factor": vae.scaling_factor, "shift_factor": vae.shift_factor}
    tok = None
    if tokenizer is not None:
        from unimodal.tokenizers import TextTokenizer

        tok = TextTokenizer.load(tokenizer)
        intent["tokenizer"] = {"path": str(tokenizer), "sha256": file_sha256(Path(tokenizer) / "tokenizer.model"),
                               "vocab_size": tok.vocab_size}
    out.mkdir(parents=True, exist_ok=True)
    remove_orphans(out)
    if rank != 0:  # worker 0 writes prepare.json; the others check theirs against it
        deadline = time.monotonic() + 600
        while not (out / INTENT).is_file():
            if time.monotonic() > deadline:
                raise DataError(f"prepare: worker {rank} waited 10 minutes for worker 0 to write {out / INTENT}")
            time.sleep(0.2)
    _check_intent(out, intent)
    rows: list[dict[str, Any]] = []
    positions: list[int] = []
    n = 0
    k = 0
    done_cache: dict[int, bool] = {}

    def mine(k: int) -> bool:
        if k % world != rank:
            return False
        if k not in done_cache:
            done_cache[k] = _done(out, k) is not None
        return not done_cache[k]

    t0 = time.perf_counter()
    for example in records:
        k = n // shard_size
        if mine(k):
            rows.append(example)
            positions.append(n)
        n += 1
        if n % shard_size == 0 and rows:
            _write_shard(out, k, rows, positions, visual, vae, intent["flip"], dtype, tok, batch)
            if progress:
                print(f"shard {k} written ({n} records read, {time.perf_counter() - t0:.0f}s)", flush=True)
            rows, positions = [], []
    if rows:
        _write_shard(out, (n - 1) // shard_size, rows, positions, visual, vae, intent["flip"], dtype, tok, batch)
    if n == 0:
        raise DataError(f"prepare: source {spec.dataset}/{spec.split} yielded no record")
    from .sources import last_skipped

    skipped = int(last_skipped.get("skipped", 0)) if spec.dataset == "files" else 0
    if rank != 0:
        return out / INTENT  # worker 0 writes the manifest once every shard is done
    return _finish(out, intent, n, skipped, wait=world > 1)


def _check_intent(out: Path, intent: dict[str, Any]) -> None:
    f = out / INTENT
    if f.is_file():
        old = json.loads(f.read_text())
        for key in ("schema_version", "source_fingerprint", "visual_fingerprint", "vae", "encoding", "dtype", "flip",
                    "shard_size", "tokenizer"):
            if old.get(key) != intent.get(key):
                raise DataError(f"prepare: {out} holds a prepare with a different {key} ({old.get(key)!r:.80} vs "
                                f"{intent.get(key)!r:.80}); use a new --out or delete it")
        return
    if any(not p.name.startswith(".") for p in out.iterdir()):  # temporaries of other workers do not count
        raise DataError(f"prepare: {out} is not empty and holds no {INTENT}; use a new or empty --out")
    write_text(f, json.dumps(intent, indent=1, default=str))


def _finish(out: Path, intent: dict[str, Any], n: int, skipped: int, wait: bool, timeout: float = 3600) -> Path:
    count = -(-n // intent["shard_size"])
    shards = []
    deadline = time.monotonic() + timeout
    for k in range(count):
        while (meta := _done(out, k)) is None:
            if not wait or time.monotonic() > deadline:
                raise DataError(f"prepare: shard {_shard_name(k)} never completed (a worker died?); run prepare again")
            time.sleep(1.0)
        shards.append(meta)
    manifest = {**intent, "records": n, "skipped": skipped, "shards": shards, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if sum(s["records"] for s in shards) != n:
        raise DataError(f"prepare: shards hold {sum(s['records'] for s in shards)} records, the source {n}; run prepare again")
    write_text(out / MANIFEST, json.dumps(manifest, indent=1, default=str))
    return out / MANIFEST


def _worker(args: tuple) -> None:
    spec, out, vae_dir, shard_size, flip, dtype, tokenizer, batch, rank, world = args
    torch.set_num_threads(1)
    prepare(spec, out, vae_dir=vae_dir, shard_size=shard_size, flip=flip, dtype=dtype, tokenizer=tokenizer, batch=batch,
            rank=rank, world=world)


def _prepare_pool(spec: SourceSpec, out: Path, vae_dir: Any, shard_size: int, num_proc: int, flip: bool, dtype: str,
                  tokenizer: Any, batch: int) -> Path:
    import multiprocessing as mp

    base_rank = int(os.environ.get("RANK", 0))
    base_world = int(os.environ.get("WORLD_SIZE", 1))
    world = base_world * num_proc
    jobs = [(spec, out, vae_dir, shard_size, flip, dtype, tokenizer, batch, base_rank * num_proc + i, world)
            for i in range(num_proc)]
    with mp.get_context("spawn").Pool(num_proc) as pool:
        pool.map(_worker, jobs)  # worker 0 of rank 0 waits for every shard, then writes the manifest
    manifest = out / MANIFEST
    return manifest if manifest.is_file() else out / INTENT


# ---- reading -------------------------------------------------------------------------------------------


class _Column:
    """One non-visual column of every shard, read lazily by global index."""

    def __init__(self, data: "PreparedData", name: str):
        self.data, self.name = data, name

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        k, i = self.data.locate(int(index))
        return self.data.table(k).column(self.name)[i].as_py()


class PreparedData:
    """A prepared directory, checked, read by global record index.

    Args:
        path: the ``--out`` directory of `prepare`.
        visual: the training run's visual config: must match the one prepared (and its VAE's bytes).
        verify: check every shard's SHA-256 (False: only presence and size, for a quick start).
    """

    def __init__(self, path: str | os.PathLike, visual: VisualConfig | None = None, verify: bool = True):
        self.path = Path(path)
        file = self.path / MANIFEST
        if not file.is_file():
            hint = f" (it holds {INTENT}: the prepare has not finished; run it again)" if (self.path / INTENT).is_file() else ""
            raise MissingFileError(f"prepared data {self.path}: no {MANIFEST}{hint}")
        try:
            m = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"prepared data {file}: not valid JSON ({err.msg})") from None
        if m.get("schema_version") != SCHEMA_VERSION:
            raise DataError(f"prepared data {file}: schema_version {m.get('schema_version')!r}, this unimodal reads "
                            f"{SCHEMA_VERSION}; prepare the source again")
        self.manifest = m
        for s in m["shards"]:
            shard = self.path / s["file"]
            if not shard.is_file():
                raise MissingFileError(f"prepared data {self.path}: shard {s['file']} is missing")
            if shard.stat().st_size != s["bytes"] or (verify and file_sha256(shard) != s["sha256"]):
                raise DataError(f"prepared data {self.path}: shard {s['file']} is corrupted (its size or SHA-256 differs "
                                "from the manifest); prepare again")
        if visual is not None:
            self.check_visual(visual)
        self.counts = np.cumsum([0] + [s["records"] for s in m["shards"]])
        self.open_files = _open_files_limit(len(m["shards"]))  # one descriptor per shard: no reopening in a random order
        self.encoding = m["encoding"]
        self.columns = [c for c in m["shards"][0]["schema"] if c not in ("position", "pixels", "moments", "flip_moments")]
        self._tables: OrderedDict[int, Any] = OrderedDict()  # the most recently read shards stay open (LRU)
        self._fds: OrderedDict[int, int] = OrderedDict()
        self.vae = m.get("vae") or {}
        v = m["visual"]
        if self.encoding == "pixels":
            self.row_shape = (v["channels"], v["image_size"], v["image_size"])
            self.row_dtype = np.dtype(np.uint8)
        else:
            side = v["image_size"] // v["vae_downsample"]
            self.row_shape = (2 * v["channels"], side, side)
            self.row_dtype = np.dtype(m["dtype"])
        self.row_bytes = int(np.prod(self.row_shape)) * self.row_dtype.itemsize

    def check_visual(self, visual: VisualConfig) -> None:
        """Refuse a visual config (or VAE) other than the one the shards were made with, naming the field."""
        m = self.manifest
        if bool(visual.vae_dir) != (m["encoding"] == "vae_moments"):
            raise DataError(f"prepared data {self.path}: visual.vae_dir is {'set' if visual.vae_dir else 'unset'} but the "
                            f"shards hold {m['encoding']}")
        for key in ("channels", "image_size", "vae_downsample"):
            if key == "vae_downsample" and not visual.vae_dir:
                continue
            if m["visual"].get(key) != getattr(visual, key):
                raise DataError(f"prepared data {self.path}: visual.{key} is {getattr(visual, key)} but the shards were "
                                f"prepared with {m['visual'].get(key)}")
        if visual.vae_dir and vae_fingerprint(visual.vae_dir) != m["vae"]["fingerprint"]:
            raise DataError(f"prepared data {self.path}: vae fingerprint differs: {visual.vae_dir} is not the VAE the shards "
                            f"were prepared with ({m['vae']['dir']})")

    def __len__(self) -> int:
        return int(self.counts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        k = int(np.searchsorted(self.counts, index, side="right")) - 1
        return k, index - int(self.counts[k])

    def table(self, k: int) -> Any:
        """Shard k's Arrow table, memory-mapped (pages are read on access, not held)."""
        if k in self._tables:
            self._tables.move_to_end(k)
            return self._tables[k]
        import pyarrow as pa

        with pa.memory_map(str(self.path / self.manifest["shards"][k]["file"])) as mm:
            self._tables[k] = pa.ipc.open_stream(mm).read_all()  # zero-copy: the buffers keep the map alive
        if len(self._tables) > OPEN_TABLES:
            self._tables.popitem(last=False)
        return self._tables[k]

    def column(self, name: str) -> _Column:
        return _Column(self, name)

    def visual_row(self, index: int, name: str | None = None) -> np.ndarray:
        """The stored visual row of a record (pixels, or moments / flip_moments) with one pread."""
        k, i = self.locate(index)
        name = name or ("pixels" if self.encoding == "pixels" else "moments")
        shard = self.manifest["shards"][k]
        if name not in shard["visual_offsets"]:
            raise DataError(f"prepared data {self.path}: shard {shard['file']} holds no {name!r} (prepare with flip=True)")
        if k in self._fds:
            self._fds.move_to_end(k)
        else:
            self._fds[k] = os.open(self.path / shard["file"], os.O_RDONLY)
            if len(self._fds) > self.open_files:
                os.close(self._fds.popitem(last=False)[1])
        raw = os.pread(self._fds[k], self.row_bytes, shard["visual_offsets"][name] + i * self.row_bytes)
        return np.frombuffer(raw, self.row_dtype).reshape(self.row_shape)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tables": OrderedDict(), "_fds": OrderedDict()}

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
