"""VQA accuracy overall and per answer type (VQAv2's ``yes/no``, ``number``, ``other``), as the official scorer reports.

The official VQA evaluation averages the per-question accuracy (:func:`.vqa.vqa_accuracy`)
over all questions and, separately, over the questions of each ``answer_type`` of the
annotations. A question's type travels with its references: the VQA head passes
:class:`TypedReferences` (a list of answers with an ``answer_type``) when the records
have an ``answer_type`` column. Types are reported as ``vqa_accuracy_by_type/<type>``
with ``/`` written ``_`` (``yes_no``).
"""

from __future__ import annotations

from collections import defaultdict

from ..errors import EvalError
from .registry import register_metric
from .vqa import vqa_accuracy

OFFICIAL_TYPES = ("yes_no", "number", "other")  # VQAv2's answer types, as result keys


class TypedReferences(list):
    """The reference answers of one question, with the question's ``answer_type`` (e.g. ``"yes/no"``)."""

    def __init__(self, answers, answer_type: str):
        super().__init__(answers)
        self.answer_type = str(answer_type)


def type_key(answer_type: str) -> str:
    """``"yes/no"`` -> ``"yes_no"``: a result key may not hold the ``/`` that separates metric and key."""
    return answer_type.replace("/", "_").replace(" ", "_")


@register_metric("vqa_accuracy_by_type", aggregation="corpus", higher_is_better=True, inputs="text")
def vqa_accuracy_by_type(predictions: list[str], references: list[list[str]], answer_types: list[str] | None = None) -> dict[str, float]:
    """VQA accuracy over all questions ("") and per answer type (``yes_no``, ``number``, ``other``)."""
    if answer_types is None:
        answer_types = [getattr(r, "answer_type", None) for r in references]
    if any(t is None for t in answer_types):
        raise EvalError("vqa_accuracy_by_type needs each question's answer_type (records with an 'answer_type' column, e.g. vqav2)")
    groups: dict[str, list[float]] = defaultdict(list)
    overall = []
    for pred, refs, kind in zip(predictions, references, answer_types, strict=True):
        acc = vqa_accuracy(pred, list(refs))
        overall.append(acc)
        groups[type_key(str(kind))].append(acc)
    out = {"": sum(overall) / len(overall) if overall else 0.0}
    for k in OFFICIAL_TYPES:  # always reported (NaN, written null, when a subset has none of them)
        groups.setdefault(k, [])
    out.update({k: sum(v) / len(v) if v else float("nan") for k, v in sorted(groups.items())})
    return out
