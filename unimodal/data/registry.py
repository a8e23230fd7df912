"""Dataset registry: names -> `datasets.Dataset`, built once and cached atomically.

A dataset is a `DatasetSource` subclass registered with `@register_dataset`.
`load_dataset(name, split, **options)` builds it with `Dataset.from_generator`
and, for built-in sources, saves it under

    <cache>/<name>/v<version>/<split>-<view>-<hash of options>/

where `<cache>` is `$UNIMODAL_CACHE/datasets`, else `~/.cache/unimodal/datasets`
(or the `cache_dir` argument). The dataset is written to a hidden temporary
directory next to it and renamed into place only when complete, so a crash can
never leave a half-written cache that a later run would trust. Later calls use
`Dataset.load_from_disk`. Bump a source's `version` whenever its examples change.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import datasets
from datasets.exceptions import DatasetGenerationError

from ..atomic import atomic_directory, remove_orphans
from ..errors import ConfigError, DataError, UnknownNameError
from ..registry import Registry

CACHE_ENV = "UNIMODAL_CACHE"


class DatasetSource(abc.ABC):
    """One named dataset: its features, how to generate its examples, its card.

    Options are the keyword arguments of `examples` after `split` and `view`;
    `load_dataset` rejects any other keyword, naming the valid ones.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"  # part of the cache path: bump when examples change
    splits: ClassVar[tuple[str, ...]] = ()  # () = free-form (local sources)
    views: ClassVar[tuple[str, ...]] = ("default",)
    cached: ClassVar[bool] = True  # local sources read the user's files each time

    @abc.abstractmethod
    def features(self, view: str, **options: Any) -> datasets.Features:
        """The `datasets.Features` of one example."""

    @abc.abstractmethod
    def examples(self, split: str | None, view: str, **options: Any) -> Iterator[dict[str, Any]]:
        """Yield the examples of one split, in a fixed order."""

    def resolve_options(self, split: str | None, **options: Any) -> dict[str, Any]:
        """Fill defaults that change the content (e.g. a data path from the env) and check inputs early.

        The result is passed to `examples` and `features`, and hashed into the cache key.
        """
        return options

    def data_version(self) -> str:
        """Version of the underlying data (e.g. a package version); part of the cache key."""
        return ""

    @abc.abstractmethod
    def card(self) -> str:
        """A markdown description: size, splits, licence, source, what is derived."""


class UnknownDatasetError(UnknownNameError):
    """An unregistered dataset name; the message lists the close matches."""


_REGISTRY: Registry[DatasetSource] = Registry("dataset", UnknownDatasetError)
S = TypeVar("S", bound=type[DatasetSource])


def register_dataset(cls: S) -> S:
    """Class decorator adding a `DatasetSource` to the registry under `cls.name`."""
    if cls.name in _REGISTRY:
        raise ValueError(f"dataset {cls.name!r} is already registered by {type(_REGISTRY[cls.name]).__name__}")
    _REGISTRY.add(cls.name, cls())
    return cls


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`, sorted."""
    return sorted(_REGISTRY)


def get_source(name: str) -> DatasetSource:
    """The registered source of `name`; unknown names list the close matches."""
    return _REGISTRY.get(name)


def dataset_card(name: str) -> str:
    """Markdown card of a registered dataset (sizes are computed, not hard-coded)."""
    return get_source(name).card()


def cache_root() -> Path:
    """Root of unimodal's caches: `$UNIMODAL_CACHE`, else `~/.cache/unimodal`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unimodal"


def _checked(name: str, split: str | None, view: str, options: dict[str, Any]) -> tuple[DatasetSource, dict[str, Any]]:
    source = get_source(name)
    if view not in source.views:
        raise DataError(f"dataset {name!r} has no view {view!r}; views: {', '.join(source.views)}")
    if source.splits and split not in source.splits:
        raise DataError(f"dataset {name!r} has no split {split!r}; splits: {', '.join(source.splits)}")
    _check_options(source, options)
    return source, source.resolve_options(split, **options)


def check_dataset(name: str, split: str | None = None, *, view: str = "default", cache: bool | None = None,
                  cache_dir: str | os.PathLike | None = None, **options: Any) -> dict[str, Any]:
    """Check what `load_dataset` would be asked (name, split, view, options, the files they name) without building it.

    Returns the resolved options. Raises the error `load_dataset` would raise, before any work.
    """
    return _checked(name, split, view, options)[1]


def load_dataset(
    name: str,
    split: str | None = None,
    *,
    view: str = "default",
    cache: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    **options: Any,
) -> datasets.Dataset:
    """Load a registered dataset split as a `datasets.Dataset`.

    Args:
        name: one of `list_datasets()`.
        split: e.g. "train"/"test" for built-ins; for local sources see their docs.
        view: alternative record layout, e.g. `view="qa"` for easy-VQA's one row per question.
        cache: save/reuse the built dataset on disk. Default: True for built-in
            sources, False for local ones (those are rebuilt in memory each call).
        cache_dir: directory of the dataset cache (default `cache_root()/"datasets"`).
        **options: source options, e.g. `path=` for `fashion_mnist`, `imagefolder`, `records`.

    Returns:
        The dataset; image columns decode to PIL images.
    """
    source, options = _checked(name, split, view, options)
    use_cache = source.cached if cache is None else cache
    if not use_cache:
        with tempfile.TemporaryDirectory(prefix="unimodal-build-") as tmp:
            return _generate_dataset(source, split, view, options, hf_cache=tmp, in_memory=True)

    key = json.dumps(
        {"split": split, "view": view, "data": source.data_version(), "options": options}, sort_keys=True, default=str
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "datasets"
    final = root / source.name / f"v{source.version}" / f"{split}-{view}-{digest}"
    if not final.is_dir():
        _build_into(final, source, split, view, options)
    try:
        return datasets.Dataset.load_from_disk(str(final))
    except Exception as err:  # only a hand-edited cache gets here: the build itself is atomic
        raise DataError(f"cached dataset {final} is unreadable ({err}); delete that directory to rebuild it") from err


def _check_options(source: DatasetSource, options: dict[str, Any]) -> None:
    params = inspect.signature(source.examples).parameters
    valid = [p for p in params if p not in ("split", "view") and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"dataset {source.name!r} got unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid) or '(none)'}"
        )


def _build_into(final: Path, source: DatasetSource, split: str | None, view: str, options: dict[str, Any]) -> None:
    """Build the dataset in a sibling temp dir, then write it to `final` by one rename (`unimodal.atomic`)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(final)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        ds = _generate_dataset(source, split, view, options, hf_cache=tmp / "hf", in_memory=False)
        with _quiet():  # a concurrent build that finished first is kept (replace=False)
            atomic_directory(final, ds.save_to_disk, replace=False)
        del ds  # release the memory map before the hf build files are removed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No `datasets` progress bars while we build (restores the caller's setting)."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _remove_orphans(final: Path) -> None:
    """Delete temp dirs of builds whose process died without cleaning up (e.g. SIGKILL)."""
    remove_orphans(final.parent)
    for tmp in final.parent.glob(".tmp-*"):
        pid = tmp.name.rsplit("-", 2)[-2]  # .tmp-<final name>-<pid>-<random>
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            pass  # not our naming, or another user's live process


def _generate_dataset(
    source: DatasetSource, split: str | None, view: str, options: dict[str, Any], hf_cache: Path | str, in_memory: bool
) -> datasets.Dataset:
    with _quiet():
        try:
            return datasets.Dataset.from_generator(
                _examples,
                features=source.features(view, **options),
                cache_dir=str(hf_cache),
                keep_in_memory=in_memory,
                gen_kwargs={"name": source.name, "split": split, "view": view, "options": options},
                fingerprint=uuid.uuid4().hex,  # our cache key is the path; skip hashing the generator
            )
        except DatasetGenerationError as err:
            # surface our own one-line error (e.g. RecordError) instead of datasets' generic wrapper
            if err.__cause__ is not None:
                raise err.__cause__ from None
            raise


def _examples(name: str, split: str | None, view: str, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    # module-level so `from_generator` pickles a name, not a source object
    yield from get_source(name).examples(split, view, **options)


def format_card(title: str, summary: str, fields: dict[str, str], notes: list[str] | None = None) -> str:
    """Shared markdown layout of dataset cards."""
    lines = [f"# {title}", "", summary, ""]
    lines += [f"- **{key}**: {value}" for key, value in fields.items()]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"
