"""COCO caption scores (BLEU-1..4, CIDEr-D) equal to pycocoevalcap's, the coco-caption reference code.

Pipeline, as in pycocoevalcap's ``COCOEvalCap``: every prediction and reference is
PTB-tokenised (Stanford PTBTokenizer, ``-preserveLines -lowerCase``) and the tokens of
its punctuation list dropped; then BLEU (``option="closest"`` brevity penalty, with
its ``1e-15``/``1e-9`` smoothing constants) and CIDEr (pycocoevalcap's ``Cider``, which
is CIDEr-D: clipped TF-IDF n-grams, Gaussian length penalty ``sigma=6``, ×10, document
frequencies from this corpus's references) score the tokens.

Backends, chosen per call by what is installed (:func:`backend`):

* ``pycocoevalcap``'s scorers when it is installed (``pip install 'unimodal[coco]'``),
  else the equivalent implementations here (:func:`bleu_scores`, :func:`cider_d_score`);
* the Stanford PTB tokeniser (pycocoevalcap's jar, run the way its ``PTBTokenizer``
  runs it) when pycocoevalcap is installed *and* ``java`` is on the PATH, else
  :func:`ptb_tokenize`, a pure-Python equivalent for ordinary English captions
  (contractions, possessives, brackets, hyphens and numbers as PTB splits them;
  rarer PTB rules are not covered). ``tests/eval/test_benchmarks.py`` checks both
  equal pycocoevalcap's on its fixture.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from functools import lru_cache

from ..errors import EvalError
from .registry import register_metric

# pycocoevalcap's tokenizer/ptbtokenizer.py list: tokens dropped after PTB tokenisation
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"])
_TINY, _SMALL = 1e-15, 1e-9  # BleuScorer's smoothing constants

# ---- tokenisation ------------------------------------------------------------------------

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_LEADING = {'"': "``", "`": "`", "'": "`", **_BRACKETS, "$": "$", "#": "#"}
_TRAILING = {'"': "''", "'": "'", "`": "`", ",": ",", ";": ";", ":": ":", "!": "!", "?": "?", "%": "%", "/": "/", **_BRACKETS}
_ABBREVIATIONS = frozenset("mr mrs ms dr st jr sr vs etc mt ft ave inc co ltd jan feb mar apr aug sep sept oct nov dec".split())
_CONTRACTION = re.compile(r"^(.*[a-z0-9])(n't|'s|'re|'ve|'ll|'d|'m)$")
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "wanna": ["wan", "na"], "gotta": ["got", "ta"]}


def _core(word: str) -> list[str]:
    """A word without surrounding punctuation -> its PTB tokens (contractions split from the right)."""
    if word in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[word])
    tail: list[str] = []
    while m := _CONTRACTION.match(word):  # "n't" takes the n: do|n't, ca|n't, wo|n't; they|'d|'ve
        word = m.group(1)
        tail.insert(0, m.group(2))
    return ([word] if word else []) + tail


def _chunk(chunk: str) -> list[str]:
    """One whitespace-separated chunk (lower case) -> PTB tokens."""
    head: list[str] = []
    while chunk and chunk[0] in _LEADING and len(chunk) > 1:
        head.append(_LEADING[chunk[0]])
        chunk = chunk[1:]
    tail: list[str] = []
    while chunk:
        if chunk.endswith("..."):
            tail.insert(0, "...")
            chunk = chunk[:-3]
        elif chunk[-1] in _TRAILING and len(chunk) > 1:
            tail.insert(0, _TRAILING[chunk[-1]])
            chunk = chunk[:-1]
        elif chunk.endswith(".") and len(chunk) > 1 and not ("." in chunk[:-1] or chunk[:-1] in _ABBREVIATIONS):
            tail.insert(0, ".")
            chunk = chunk[:-1]
        else:
            break
    if chunk in _BRACKETS:
        return head + [_BRACKETS[chunk]] + tail
    if chunk in {'"', "'", "`"}:
        return head + ["``" if chunk == '"' else "'"] + tail
    parts = re.split(r"(?<!\d),|,(?!\d)", chunk)  # a comma splits unless it sits between digits
    core: list[str] = []
    for i, part in enumerate(parts):
        if i:
            core.append(",")
        if part:
            core += _core(part)
    return head + core + tail


def ptb_tokenize(text: str) -> str:
    """The pure-Python equivalent of pycocoevalcap's tokenisation: PTB tokens, lower case, punctuation dropped."""
    tokens = [t for chunk in text.replace("\n", " ").lower().split() for t in _chunk(chunk)]
    return " ".join(t for t in tokens if t not in PUNCTUATIONS)


def _pycocoevalcap() -> bool:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return False
    return True


def backend() -> dict[str, str]:
    """Which implementation scores and which tokenises, in this environment."""
    have = _pycocoevalcap()
    return {"scorers": "pycocoevalcap" if have else "unimodal",
            "tokenizer": "stanford-ptb" if have and shutil.which("java") else "unimodal-ptb"}


def stanford_ptb_tokenize(texts: list[str]) -> list[str]:
    """pycocoevalcap's jar and flags (as its ``PTBTokenizer`` runs them), its punctuation dropped, one line per text."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar_dir = os.path.dirname(os.path.abspath(ptbtokenizer.__file__))
    jar = os.path.join(jar_dir, ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    sentences = "\n".join(t.replace("\n", " ") for t in texts)
    with tempfile.TemporaryDirectory(prefix="unimodal-ptb-") as tmp:
        src = os.path.join(tmp, "captions.txt")
        with open(src, "wb") as f:
            f.write(sentences.encode())
        cmd = ["java", "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", src]
        try:
            done = subprocess.run(cmd, capture_output=True, check=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as err:
            raise EvalError(f"the Stanford PTB tokenizer (java) failed: {' '.join(str(err).split())}; "
                            "fix java or remove it from the PATH to use the built-in tokeniser") from None
    lines = done.stdout.decode().split("\n")
    if len(lines) < len(texts):
        raise EvalError(f"the Stanford PTB tokenizer returned {len(lines)} lines for {len(texts)} captions")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines[: len(texts)]]


@lru_cache(maxsize=4)
def _tokenized(texts: tuple[str, ...]) -> tuple[str, ...]:
    if backend()["tokenizer"] == "stanford-ptb":
        return tuple(stanford_ptb_tokenize(list(texts)))
    return tuple(ptb_tokenize(t) for t in texts)


def tokenize_corpus(predictions: list[str], references: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Predictions and references tokenised by the active tokenizer (one call for the whole corpus)."""
    if len(predictions) != len(references):
        raise EvalError(f"{len(predictions)} predictions but {len(references)} reference lists")
    flat = tuple(predictions) + tuple(r for refs in references for r in refs)
    out = list(_tokenized(flat))
    hyps, rest = out[: len(predictions)], out[len(predictions):]
    refs, i = [], 0
    for r in references:
        refs.append(rest[i : i + len(r)])
        i += len(r)
    return hyps, refs


# ---- scorers on tokenised text (whitespace-separated tokens) -------------------------------


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu_scores(hyps: list[str], refs: list[list[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n of tokenised captions, as pycocoevalcap's ``BleuScorer(option="closest")``."""
    guess, correct = [0] * n, [0] * n
    test_len = ref_len = 0
    for hyp, rs in zip(hyps, refs, strict=True):
        words, ref_words = hyp.split(), [r.split() for r in rs]
        if not ref_words:
            raise EvalError("every caption needs at least one reference")
        test_len += len(words)
        ref_len += min((abs(len(r) - len(words)), len(r)) for r in ref_words)[1]
        for k in range(1, n + 1):
            max_ref: Counter = Counter()
            for r in ref_words:
                max_ref |= _ngrams(r, k)
            correct[k - 1] += sum(min(c, max_ref[g]) for g, c in _ngrams(words, k).items())
            guess[k - 1] += max(len(words) - k + 1, 0)
    scores, bleu = [], 1.0
    for k in range(n):
        bleu *= float(correct[k] + _TINY) / (guess[k] + _SMALL)
        scores.append(bleu ** (1.0 / (k + 1)))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def cider_d_score(hyps: list[str], refs: list[list[str]], n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D of tokenised captions, as pycocoevalcap's ``Cider`` (its ``CiderScorer``)."""
    cooked = [[{k: _ngrams(r.split(), k) for k in range(1, n + 1)} for r in rs] for rs in refs]
    df: Counter = Counter()
    for rs in cooked:
        df.update({g for r in rs for k in r for g in r[k]})
    log_n = math.log(float(len(cooked))) if cooked else 0.0

    def vec(counts: dict[int, Counter]) -> tuple[list[dict], list[float], int]:
        v = [{g: float(tf) * (log_n - math.log(max(1.0, df[g]))) for g, tf in counts[k].items()} for k in range(1, n + 1)]
        return v, [math.sqrt(sum(x * x for x in d.values())) for d in v], sum(counts[1].values())

    scores = []
    for hyp, rs in zip(hyps, cooked, strict=True):
        vh, nh, lh = vec({k: _ngrams(hyp.split(), k) for k in range(1, n + 1)})
        total = [0.0] * n
        for r in rs:
            vr, nr, lr = vec(r)
            for k in range(n):
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * math.e ** (-(float(lh - lr) ** 2) / (2 * sigma**2))
        scores.append(sum(total) / n / len(rs) * 10.0)
    return sum(scores) / len(scores) if scores else 0.0


def _ids(hyps: list[str], refs: list[list[str]]) -> tuple[dict, dict]:
    return {i: list(r) for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}


def _score_bleu(hyps: list[str], refs: list[list[str]]) -> list[float]:
    if backend()["scorers"] == "pycocoevalcap":
        from pycocoevalcap.bleu.bleu import Bleu

        with contextlib.redirect_stdout(io.StringIO()):  # BleuScorer prints its counts
            score, _ = Bleu(4).compute_score(*_ids(hyps, refs))
        return [float(s) for s in score]
    return bleu_scores(hyps, refs)


def _score_cider(hyps: list[str], refs: list[list[str]]) -> float:
    if backend()["scorers"] == "pycocoevalcap":
        from pycocoevalcap.cider.cider import Cider

        score, _ = Cider().compute_score(*_ids(hyps, refs))
        return float(score)
    return cider_d_score(hyps, refs)


@register_metric("coco_bleu", aggregation="corpus", higher_is_better=True, inputs="text")
def coco_bleu(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """COCO BLEU-1..4 (pycocoevalcap's tokenisation and scorer), reported as ``coco_bleu/1`` .. ``coco_bleu/4``."""
    if not predictions:
        return {str(k): 0.0 for k in range(1, 5)}
    scores = _score_bleu(*tokenize_corpus(predictions, references))
    return {str(k + 1): s for k, s in enumerate(scores)}


@register_metric("coco_cider_d", aggregation="corpus", higher_is_better=True, inputs="text")
def coco_cider_d(predictions: list[str], references: list[list[str]]) -> float:
    """COCO CIDEr-D (pycocoevalcap's tokenisation and ``Cider`` scorer, sigma 6, ×10)."""
    if not predictions:
        return 0.0
    return _score_cider(*tokenize_corpus(predictions, references))
