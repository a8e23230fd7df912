"""POPE scores, equal to the official POPE evaluation script (RUCAIBox/POPE ``evaluate.py``).

The official rule turns a free-form answer into yes/no: keep the text before the
first ``"."``, delete commas, split on single spaces; the answer is **no** if one of
the words is exactly ``"No"``, ``"no"`` or ``"not"``, otherwise **yes** (so an empty
or unrelated answer counts as yes, and ``"NO"`` or ``"No,"``... as written). "yes"
is the positive class; a reference other than ``"no"`` counts as yes.

Reported (all over the whole set): accuracy, precision ``TP/(TP+FP)``, recall
``TP/(TP+FN)``, F1 and the yes-ratio (share of predictions that are yes; 0.5 on the
balanced POPE sets is unbiased, so its arrow in the report means nothing). Where
the official script would divide by zero (no yes predictions), precision and F1 are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import register_metric


def pope_answer(text: str) -> str:
    """The official POPE reading of an answer: "no" if its first sentence has the word no/No/not, else "yes"."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


@dataclass(frozen=True)
class PopeCounts:
    """The confusion counts of yes (positive) / no answers."""

    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def of(cls, predictions: list[str], labels: list[str]) -> "PopeCounts":
        pred = [pope_answer(p) != "no" for p in predictions]
        gold = [str(g) != "no" for g in labels]
        return cls(
            tp=sum(p and g for p, g in zip(pred, gold, strict=True)), fp=sum(p and not g for p, g in zip(pred, gold)),
            tn=sum(not p and not g for p, g in zip(pred, gold)), fn=sum(not p and g for p, g in zip(pred, gold)),
        )

    def scores(self) -> dict[str, float]:
        n = self.tp + self.fp + self.tn + self.fn
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"accuracy": (self.tp + self.tn) / n if n else 0.0, "precision": precision, "recall": recall, "f1": f1,
                "yes_ratio": (self.tp + self.fp) / n if n else 0.0}


@register_metric("pope", aggregation="corpus", higher_is_better=True, inputs="text")
def pope(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """POPE accuracy, precision, recall, F1 and yes-ratio (official yes/no rule), reported as ``pope/<name>``."""
    return PopeCounts.of(predictions, [refs[0] if refs else "" for refs in references]).scores()
