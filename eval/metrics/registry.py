"""Metric registry: every metric is registered with its aggregation, direction and input kind.

    @register_metric("vqa_accuracy", aggregation="mean", higher_is_better=True, inputs="text")
    def vqa_accuracy(prediction: str, references: list[str]) -> float: ...

* ``aggregation="mean"``: `fn` scores one item; the task score is the mean over items.
* ``aggregation="corpus"``: `fn` scores the whole set at once (BLEU, CIDEr, FID, ...).

``inputs`` says what a metric reads, and so which task heads can use it:
``"text"`` (predictions, references), ``"images"`` (a `SampleSet` of generated
and reference images) or ``"probe"`` (a list of `ProbeSweep`). The harness applies
the aggregation of text metrics; image and probe metrics always receive the
whole set, and their aggregation documents how they combine samples.

A metric may declare ``options``: keyword arguments a task can set with
``metric_options: {name: {option: value}}``, each with its valid values (e.g.
``vqa_accuracy``'s ``answer_processing``). They are checked when the task loads.

A metric returns a float, or a dict whose "" entry is the headline value and
whose other entries are reported as ``name/key`` (e.g. ``class_accuracy/color``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from unimodal.registry import Registry

from ..errors import EvalError

Aggregation = Literal["mean", "corpus"]
Inputs = Literal["text", "images", "probe"]
AGGREGATIONS, INPUTS = ("mean", "corpus"), ("text", "images", "probe")


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., Any]
    aggregation: Aggregation
    higher_is_better: bool
    inputs: Inputs
    options: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # option -> its valid values

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


METRICS: Registry[Metric] = Registry("metric", EvalError)


def register_metric(
    name: str,
    aggregation: Aggregation,
    higher_is_better: bool,
    inputs: Inputs = "text",
    options: dict[str, tuple[Any, ...]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding `fn` to the registry under `name` (the function itself is returned unchanged).

    ``options`` maps each keyword argument a task may set to its valid values.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} must be one of {AGGREGATIONS}")
    if inputs not in INPUTS:
        raise ValueError(f"inputs {inputs!r} must be one of {INPUTS}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        METRICS.add(name, Metric(name, fn, aggregation, higher_is_better, inputs, dict(options or {})))
        return fn

    return deco


def list_metrics(inputs: Inputs | None = None) -> list[str]:
    return sorted(n for n, m in METRICS.items() if inputs is None or m.inputs == inputs)


def get_metric(name: str) -> Metric:
    """The registered metric `name`; an unknown name lists the close matches."""
    return METRICS.get(name)


def check_metric_options(metric: Metric, options: Any, where: str = "") -> dict[str, Any]:
    """Return ``options`` if every key is an option of ``metric`` with a valid value, else one-line EvalError."""
    from unimodal.errors import unknown

    prefix = f"{where}: " if where else ""
    if not isinstance(options, dict):
        raise EvalError(f"{prefix}metric_options of {metric.name!r} must be a mapping, got {options!r}")
    for key, value in options.items():
        if key not in metric.options:
            err = unknown(f"option of metric {metric.name!r}", key, metric.options, cls=EvalError)
            raise EvalError(f"{prefix}{err}")
        if value not in metric.options[key]:
            valid = ", ".join(repr(v) for v in metric.options[key])
            raise EvalError(f"{prefix}metric {metric.name!r} option {key!r} must be one of {valid}, got {value!r}")
    return dict(options)


def score_text(metric: Metric, predictions: list[str], references: list[list[str]], **options: Any) -> float | dict[str, float]:
    """Apply a text metric (with its ``options``): the mean of per-item scores, or the corpus score.

    A corpus metric may return a dict (headline "" and ``name/key`` entries, see the module docstring).
    """
    if metric.aggregation == "mean":
        return float(sum(metric.fn(p, r, **options) for p, r in zip(predictions, references)) / max(len(predictions), 1))
    value = metric.fn(predictions, references, **options)
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else float(value)
