"""Eval tasks as YAML files, discovered into a registry (lm-evaluation-harness style).

A task file names a dataset split, a task head, its settings and its metrics::

    name: fmnist_c2i
    version: 1
    head: class_to_image          # probe | vqa | captioning | class_to_image | text_to_image
    dataset: fashion_mnist
    split: test                   # evaluated / reference split
    num_samples: 1000             # capped by --limit
    seed: 0
    generation: {sampler: dpm++, steps: 25, cfg_scale: 1.5, batch_size: 100}
    extractor: domain             # domain | inception
    metrics: [fid, inception_score, precision, recall, class_accuracy]
    reference: {npz: FILE}        # optional (generation heads): the reference statistics of an ADM-style .npz

A variant starts from another task with ``include: base.yaml`` (a path relative
to the including file, or a task name) and overrides keys; nested mappings are
merged, everything else replaced. Tasks come from ``eval/tasks/*.yaml`` and from
any ``--include-path`` directory; a user task replaces a shipped one of the same
name.

Environment variables are confined. ``${VAR}`` (or ``${VAR:-default}``) in a
string value is expanded only for the variables of :data:`ALLOWED_ENV` and those
the task file (or a file it includes) declares with ``env: [NAME, ...]``, so a
third-party task cannot copy ``${HOME}`` or a token into the results. An
undeclared or undefined variable is an error naming the file and the key; ``$$``
writes a literal ``$``. ``include:`` resolves only to files inside the task search
path (the shipped directory and the ``--include-path`` directories).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml

from unimodal.errors import check_fields, check_float, check_positive_int, suggest, unknown
from unimodal.registry import Registry

from .errors import EvalError

TASK_DIR = Path(__file__).parent / "tasks"
Head = Literal["probe", "vqa", "captioning", "class_to_image", "text_to_image"]
# head -> (kind of metric inputs it produces, training task of unimodal.tasks it needs (None: any model))
HEADS: dict[str, tuple[str, str | None]] = {
    "probe": ("probe", None),
    "vqa": ("text", "vqa"),
    "captioning": ("text", "captioning"),
    "class_to_image": ("images", "class_to_image"),
    "text_to_image": ("images", "text_to_image"),
}
# variables any task may expand; a task declares others with ``env: [NAME]``
ALLOWED_ENV = ("IMAGENET_DIR", "ADM_REFERENCE", "UNIMODAL_DATA", "UNIMODAL_CACHE")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
GENERATION_KEYS = ("sampler", "steps", "cfg_scale", "sampler_kwargs", "batch_size", "max_new_tokens")
PROBE_DEFAULTS: dict[str, Any] = {
    "layers": "all",  # "all" (0..n_layer) or a list of block counts
    "pool": "mean",  # mean over the image's tokens, or "tokens" (concatenated)
    "noisy_t": None,  # probe the noisy stream at this (integer) timestep instead of the clean stream
    "targets": None,  # label columns; default per dataset (easy-VQA: color, shape)
    "train_samples": 2000,  # probe training set size (capped by --limit)
    "controls": True,  # also probe raw pixels and a randomly initialised model of the same shape
}
PROBE_POOLS = ("mean", "tokens")


@dataclass
class EvalTaskConfig:
    """One resolved eval task (see the module docstring for the YAML form)."""

    name: str
    head: Head
    dataset: str
    metrics: list[str]
    split: str = "test"
    train_split: str = "train"  # probe: split the probe is fitted on
    options: dict[str, Any] = field(default_factory=dict)  # load_dataset options (view, path, ...)
    num_samples: int | None = None  # None: the whole split
    seed: int = 0
    version: int = 1
    description: str = ""
    generation: dict[str, Any] = field(default_factory=dict)  # sampler/steps/cfg_scale/batch_size/max_new_tokens
    extractor: str = "domain"  # generation heads: feature extractor kind
    extractor_options: dict[str, Any] = field(default_factory=dict)
    clip: dict[str, Any] = field(default_factory=dict)  # {model: domain} or {model: ViT-B-32, weights: FILE}
    probe: dict[str, Any] = field(default_factory=dict)  # layers, pool, noisy_t, targets, train_samples, controls
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # {metric: {option: value}}
    # generation heads: {npz: FILE}, an ADM evaluator reference batch (arr_0 images, mu/sigma) read instead of
    # the split's images (eval/reference.py::npz_reference); npz "" (an unset ${VAR:-}) keeps the split
    reference: dict[str, Any] = field(default_factory=dict)
    env: list[str] = field(default_factory=list)  # environment variables the task declares it reads
    source: str = ""  # the YAML file (set by the loader)

    def __post_init__(self) -> None:
        from .metrics import get_metric

        if self.head not in HEADS:
            raise EvalError(f"task {self.name!r}: unknown head {self.head!r}; valid heads: {list(HEADS)}.{suggest(self.head, list(HEADS))}")
        if not self.metrics:
            raise EvalError(f"task {self.name!r} lists no metrics")
        kind = HEADS[self.head][0]
        for m in self.metrics:
            metric = get_metric(m)
            if metric.inputs != kind:
                from .metrics import list_metrics

                raise EvalError(
                    f"task {self.name!r}: metric {m!r} reads {metric.inputs}, head {self.head!r} gives {kind}; "
                    f"valid metrics for it: {list_metrics(kind)}"
                )
        from .extractors.base import EXTRACTORS

        if self.extractor not in EXTRACTORS:
            raise EvalError(f"task {self.name!r}: unknown extractor {self.extractor!r}; valid: {list(EXTRACTORS)}")
        if self.num_samples is not None:
            check_positive_int(f"task {self.name!r}: num_samples", self.num_samples, cls=EvalError)
        check_positive_int(f"task {self.name!r}: seed", self.seed, minimum=0, cls=EvalError)
        self._check_generation()
        self._check_probe()
        self._check_metric_options()
        self._check_reference()

    def _check_reference(self) -> None:
        r = self.reference
        if not isinstance(r, dict) or sorted(set(r) - {"npz"}):
            raise EvalError(f"task {self.name!r}: reference must be {{npz: FILE}}, got {r!r}")
        if r and not isinstance(r.get("npz"), str):
            raise EvalError(f"task {self.name!r}: reference.npz must be a file path, got {r.get('npz')!r}")
        if r.get("npz") and HEADS[self.head][0] != "images":
            raise EvalError(f"task {self.name!r}: reference.npz is for image-generation heads, not {self.head!r}")

    @property
    def reference_npz(self) -> str | None:
        """The ADM-style reference .npz, or None (the split's images are the reference)."""
        return self.reference.get("npz") or None

    def _check_generation(self) -> None:
        where, g = f"task {self.name!r}: generation", self.generation
        unknown_keys = sorted(set(g) - set(GENERATION_KEYS))
        if unknown_keys:
            raise EvalError(f"task {self.name!r}: unknown generation setting(s) {unknown_keys}; valid: {list(GENERATION_KEYS)}")
        for key in ("steps", "batch_size", "max_new_tokens"):
            if key in g:
                check_positive_int(f"{where}.{key}", g[key], cls=EvalError)
        if "cfg_scale" in g:
            check_float(f"{where}.cfg_scale", g["cfg_scale"], low=0.0, high=100.0, cls=EvalError)
        if "sampler_kwargs" in g and not isinstance(g["sampler_kwargs"], dict):
            raise EvalError(f"{where}.sampler_kwargs must be a mapping, got {g['sampler_kwargs']!r}")
        if "sampler" in g:
            from unimodal.diffusion.samplers import list_samplers

            if g["sampler"] not in list_samplers():
                raise unknown(f"sampler of task {self.name!r}", g["sampler"], list_samplers(), cls=EvalError)

    def _check_probe(self) -> None:
        where, p = f"task {self.name!r}: probe", self.probe
        bad = sorted(set(p) - set(PROBE_DEFAULTS))
        if bad:
            raise EvalError(f"task {self.name!r}: unknown probe option(s) {bad}; valid: {sorted(PROBE_DEFAULTS)}")
        layers = p.get("layers", "all")
        if layers != "all" and not (isinstance(layers, list) and layers and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in layers)):
            raise EvalError(f"{where}.layers must be 'all' or a non-empty list of block counts >= 0, got {layers!r}")
        if p.get("pool", "mean") not in PROBE_POOLS:
            raise EvalError(f"{where}.pool must be one of {list(PROBE_POOLS)}, got {p['pool']!r}")
        if p.get("noisy_t") is not None:
            check_positive_int(f"{where}.noisy_t", p["noisy_t"], minimum=0, cls=EvalError)
        targets = p.get("targets")
        if targets is not None and not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
            raise EvalError(f"{where}.targets must be a non-empty list of column names, got {targets!r}")
        if "train_samples" in p:
            check_positive_int(f"{where}.train_samples", p["train_samples"], cls=EvalError)
        if not isinstance(p.get("controls", True), bool):
            raise EvalError(f"{where}.controls must be true or false, got {p['controls']!r}")

    def _check_metric_options(self) -> None:
        from .metrics import get_metric
        from .metrics.registry import check_metric_options

        if not isinstance(self.metric_options, dict):
            raise EvalError(f"task {self.name!r}: metric_options must be a mapping {{metric: {{option: value}}}}, got {self.metric_options!r}")
        for name, opts in self.metric_options.items():
            if name not in self.metrics:
                raise EvalError(f"task {self.name!r}: metric_options names {name!r}, which is not one of its metrics {self.metrics}")
            check_metric_options(get_metric(name), opts, where=f"task {self.name!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalTaskConfig":
        check_fields(d, [f.name for f in fields(cls)], "field", where=f"task {d.get('name', '?')!r} ({d.get('source', '')}): ", cls=EvalError)
        for k in ("name", "head", "dataset", "metrics"):
            if k not in d:
                raise EvalError(f"task file {d.get('source', '?')} needs {k!r}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source"}


def _expand(value: Any, allowed: set[str], where: str, key: str = "") -> Any:
    """``value`` with ``${VAR}`` replaced, for the variables in ``allowed`` only."""
    if isinstance(value, dict):
        return {k: _expand(v, allowed, where, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, allowed, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name not in allowed:
            raise EvalError(
                f"{where}: {key} reads ${{{name}}}, which the task does not declare; environment variables "
                f"allowed are {list(ALLOWED_ENV)} plus those listed under 'env:' in the task file"
            )
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise EvalError(f"{where}: {key} reads ${{{name}}}, which is not set; set it (export {name}=...) or give a default: ${{{name}:-...}}")

    return _VAR.sub(sub, value)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise EvalError(f"task file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise EvalError(f"task file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


class TaskRegistry:
    """Task names -> YAML files, from the shipped directory and user include paths."""

    def __init__(self, include_paths: Iterable[str | os.PathLike] = ()):
        self.versions: dict[str, list[Path]] = {}  # name -> its files, the shipped one first
        self.roots: list[Path] = []  # the search path; ``include:`` never leaves it
        for directory in [TASK_DIR, *map(Path, include_paths)]:
            if not directory.is_dir():
                raise EvalError(f"include path {str(directory)!r} is not a directory of task YAML files")
            self.roots.append(directory.resolve())
            for f in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
                self.versions.setdefault(str(_read(f).get("name", f.stem)), []).append(f)
        self.files: Registry[Path] = Registry("eval task", EvalError)  # name -> the file that wins (user over shipped)
        for name, files in self.versions.items():
            self.files.add(name, files[-1])

    def names(self) -> list[str]:
        return sorted(self.files)

    def get(self, name: str, expand: bool = True) -> EvalTaskConfig:
        """The resolved task `name`; an unknown name lists the close matches.

        ``expand=False`` leaves ``${VAR}`` literal (for listing tasks whose variables are not set).
        """
        file = self.files.get(name)  # an unknown name lists the tasks and the close matches
        data, declared = self._resolve(file, ())
        if expand:
            data = _expand(data, set(ALLOWED_ENV) | declared, str(self.files[name]))
        return EvalTaskConfig.from_dict({**data, "env": sorted(declared), "name": name, "source": str(self.files[name])})

    def _inside(self, target: Path) -> bool:
        real = target.resolve()
        return any(real.is_relative_to(root) for root in self.roots)

    def _resolve(self, path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], set[str]]:
        """The merged (unexpanded) mapping of ``path`` and the files it includes, and their declared variables."""
        if path in chain:
            raise EvalError(f"task files include each other in a cycle: {' -> '.join(map(str, (*chain, path)))}")
        data = _read(path)
        env = data.pop("env", [])
        if not isinstance(env, list) or not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) for v in env):
            raise EvalError(f"{path}: 'env' must be a list of environment variable names, got {env!r}")
        declared = set(env)
        inc = data.pop("include", None)
        if inc is not None:
            # a file next to this one, else the newest file of that task name not already in the chain
            # (so a user task can include the shipped task it replaces)
            if not isinstance(inc, str) or not inc:
                raise EvalError(f"{path}: include must be a file name or a task name, got {inc!r}")
            beside = path.parent / inc
            if Path(inc).is_absolute() or (beside.exists() and not self._inside(beside)):
                raise EvalError(
                    f"{path}: include {inc!r} is outside the task search path; include a task name or a file in "
                    f"{[str(r) for r in self.roots]} (add a directory with --include-path)"
                )
            shadowed = [f for f in self.versions.get(inc, []) if f not in (*chain, path)]
            target = beside if beside.is_file() else (shadowed[-1] if shadowed else None)
            if target is None:
                raise EvalError(f"{path}: include {inc!r} is neither a file next to it nor a task name.{suggest(inc, self.names())}")
            base, base_env = self._resolve(Path(target), (*chain, path))
            data, declared = _merge(base, data), declared | base_env
        return data, declared


def list_eval_tasks(include_paths: Iterable[str | os.PathLike] = ()) -> list[str]:
    return TaskRegistry(include_paths).names()


def get_eval_task(name: str, include_paths: Iterable[str | os.PathLike] = ()) -> EvalTaskConfig:
    return TaskRegistry(include_paths).get(name)
