"""Captioning scores: corpus BLEU-4 and CIDEr-D, as computed by coco-caption.

Captions are lower-cased and stripped of punctuation before n-grams are counted
(coco-caption's PTB tokeniser does the same for plain English captions).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from .registry import register_metric


def tokenize(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


@register_metric("bleu4", aggregation="corpus", higher_is_better=True, inputs="text")
def bleu4(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU-4 (Papineni et al.): clipped 1–4-gram precisions, brevity penalty on the closest reference length."""
    matched, total = np.zeros(4), np.zeros(4)
    hyp_len = ref_len = 0
    for pred, refs in zip(predictions, references, strict=True):
        h, rs = tokenize(pred), [tokenize(r) for r in refs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]  # closest length, ties to the shorter
        for n in range(1, 5):
            max_ref: Counter = Counter()
            for r in rs:
                max_ref |= ngrams(r, n)
            matched[n - 1] += sum((ngrams(h, n) & max_ref).values())
            total[n - 1] += max(len(h) - n + 1, 0)
    if hyp_len == 0 or (matched == 0).any():
        return 0.0
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return float(brevity * np.exp(np.mean(np.log(matched / total))))


def _tfidf(counts: dict[int, Counter], df: Counter, log_n: float) -> tuple[list[dict], np.ndarray]:
    vec = [{g: tf * (log_n - math.log(max(1.0, df[g]))) for g, tf in counts[n].items()} for n in range(1, 5)]
    return vec, np.array([math.sqrt(sum(v * v for v in d.values())) for d in vec])


@register_metric("cider_d", aggregation="corpus", higher_is_better=True, inputs="text")
def cider_d(predictions: list[str], references: list[list[str]], sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al.): clipped TF-IDF n-gram cosine with a length penalty, ×10, averaged over images.

    Document frequencies come from the references of this corpus, so a score
    depends on the whole set (n-grams in every image's references weigh 0).
    """
    refs_counts = [[{n: ngrams(tokenize(r), n) for n in range(1, 5)} for r in refs] for refs in references]
    df: Counter = Counter()
    for refs in refs_counts:
        df.update({g for rc in refs for n in rc for g in rc[n]})  # once per image
    log_n = math.log(float(len(references)))
    scores = []
    for pred, refs in zip(predictions, refs_counts, strict=True):
        h = tokenize(pred)
        vec_h, norm_h = _tfidf({n: ngrams(h, n) for n in range(1, 5)}, df, log_n)
        total = np.zeros(4)
        for rc in refs:
            vec_r, norm_r = _tfidf(rc, df, log_n)
            len_r = sum(rc[1].values())
            for n in range(4):
                val = sum(min(v, vec_r[n].get(g, 0.0)) * vec_r[n].get(g, 0.0) for g, v in vec_h[n].items())
                if norm_h[n] and norm_r[n]:
                    val /= norm_h[n] * norm_r[n]
                total[n] += val * math.exp(-((len(h) - len_r) ** 2) / (2 * sigma**2))
        scores.append(10.0 * total.mean() / len(refs))
    return float(np.mean(scores)) if scores else 0.0
