"""Understanding task heads: captioning and VQA through the language-model head."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from unimodal.batch import Example
from unimodal.errors import ConfigError
from unimodal.generate import Generator, TextSampling, decode_text_events
from unimodal.layout import Layout, Text
from unimodal.media import save_image_grid

from .base import (
    ImageBank,
    RecordError,
    Task,
    decode_images,
    make_example,
    model_device,
    register_task,
)

if TYPE_CHECKING:
    from unimodal.diffusion.schedule import ScheduleConfig
    from unimodal.model import ACDiT


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return ["| # | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|",
            *[f"| {j} | " + " | ".join(cell(c) for c in r) + " |" for j, r in enumerate(rows, 1)]]


def _input_grid(task: Task, model: ACDiT, bank: ImageBank, indices: list[int], out: Path, stem: str) -> str:
    images = decode_images(bank.tokens[indices], task.visual, model_device(model))
    save_image_grid(images, out / f"{stem}.png", nrow=len(indices))
    return f"![{task.name} inputs]({stem}.png)"


class _ImageToText(Task):
    """Shared: an image as clean context, then text decoded greedily."""

    def context(self, question: str | None = None) -> list:
        """Segments before the generated text: <bos> <boi> [image] <eoi> (question)."""
        tail = [self.tok.eoi_id] + (self.encode(question) if question else [])
        return [Text([self.tok.bos_id, self.tok.boi_id], loss=False), self.image_segment(noisy=False), Text(tail, loss=False)]

    @torch.no_grad()
    def _decode(self, model, tokens: torch.Tensor, questions: list[str | None], max_new_tokens: int, batch_size: int) -> list[str]:
        out: list[str] = []
        stop = TextSampling(max_new_tokens=max_new_tokens, temperature=0.0, stop_tokens=(self.tok.eos_id,))
        for s in range(0, len(tokens), batch_size):
            chunk = tokens[s : s + batch_size]
            qs = questions[s : s + batch_size]
            g = Generator(model, len(chunk))
            g.prefill([Example(Layout(self.context(q)), t) for q, t in zip(qs, chunk)])
            ids = decode_text_events(list(g.stream_text(stop)), len(chunk))
            out += [self.tok.decode([i for i in row if i != self.tok.eos_id]).strip() for row in ids]
        return out


@register_task
class Captioning(_ImageToText):
    """Image → caption; cross-entropy on the caption and <eos>."""

    name = "captioning"

    def accepts(self, bank: ImageBank, index: int) -> bool:
        return bool(bank.columns.get("caption", [""] * (index + 1))[index])

    def example(self, bank: ImageBank, index: int, rng: np.random.Generator) -> Example:
        caption = bank.column("caption", index)
        if not caption:
            raise RecordError(f"{bank.name} record {index} has an empty 'caption'")
        ctx = self.context()
        ctx[-1] = Text([self.tok.eoi_id, *self.encode(caption), self.tok.eos_id])  # <eoi> predicts the first word
        return make_example(ctx, bank.tokens[index])

    def predict(self, model, tokens: torch.Tensor, max_new_tokens: int = 16, batch_size: int = 64) -> list[str]:
        """Greedy captions for (N, T, C) image tokens."""
        return self._decode(model, tokens, [None] * len(tokens), max_new_tokens, batch_size)

    def progress(self, model: ACDiT, bank: ImageBank, indices: list[int], schedule: ScheduleConfig, out: Path, stem: str) -> list[str]:
        """The records' images, and the model's greedy captions next to the truth."""
        pred = self.predict(model, bank.tokens[indices])
        rows = [[bank.column("caption", i), p] for i, p in zip(indices, pred)]
        return [_input_grid(self, model, bank, indices, out, stem), "", *_table(["caption (truth)", "caption (model)"], rows)]


def question_pattern(question: str, answer_words: set[str]) -> str:
    """The question with every word that is some answer masked: "is there a red shape?" -> "is there a _ shape"."""
    return " ".join("_" if w in answer_words else w for w in question.lower().rstrip(" ?").split())


def answer_balance_weights(questions: list[list[str]], answers: list[list[str]]) -> list[np.ndarray]:
    """Per record, a weight per (question, answer) pair that makes each question pattern's answers equally likely.

    The pattern of a question masks the words that are answers somewhere in the bank
    (`question_pattern`). A pair of pattern p and answer a weighs n_p / (k_p · n_pa): n_p questions
    of p, k_p distinct answers of p, n_pa of them answered a. Summed over the bank, every (p, a)
    then gets n_p / k_p: a pattern keeps its share of the questions, split evenly over its answers.
    """
    # a malformed record (not two lists of one length) counts for nothing here; drawing from it raises RecordError
    ok = [isinstance(q, list) and isinstance(a, list) and len(q) == len(a) for q, a in zip(questions, answers, strict=True)]
    ans = [[str(a).lower().strip() for a in rec] if good else [] for good, rec in zip(ok, answers)]
    answer_words = {w for rec in ans for a in rec for w in a.split()}
    pats = [[question_pattern(str(q), answer_words) for q in rec] if good else [] for good, rec in zip(ok, questions)]
    n_p: dict[str, int] = {}
    n_pa: dict[tuple[str, str], int] = {}
    for rec_p, rec_a in zip(pats, ans):
        for p, a in zip(rec_p, rec_a):
            n_p[p] = n_p.get(p, 0) + 1
            n_pa[p, a] = n_pa.get((p, a), 0) + 1
    k_p: dict[str, int] = {}
    for p, _ in n_pa:
        k_p[p] = k_p.get(p, 0) + 1
    return [np.array([n_p[p] / (k_p[p] * n_pa[p, a]) for p, a in zip(rec_p, rec_a)], dtype=np.float64)
            for rec_p, rec_a in zip(pats, ans)]


YES_NO = ("yes", "no")


def answer_groups(questions: list[list[str]], answers: list[list[str]]) -> dict[str, frozenset[str]]:
    """word -> its group: the one-word answers of the open (not yes/no) question patterns, merged where
    they share a word ("what color is the shape?" gives the colours, "what shape is present?" the shapes).

    Malformed records (not two lists of one length) are skipped here, as in `answer_balance_weights`.
    """
    ok = [isinstance(q, list) and isinstance(a, list) and len(q) == len(a) for q, a in zip(questions, answers, strict=True)]
    ans = [[str(a).lower().strip() for a in rec] if good else [] for good, rec in zip(ok, answers)]
    answer_words = {w for rec in ans for a in rec for w in a.split()}
    by_pattern: dict[str, set[str]] = {}
    for good, rec_q, rec_a in zip(ok, questions, ans):
        for q, a in zip(rec_q if good else [], rec_a):
            if a and a not in YES_NO and len(a.split()) == 1:
                by_pattern.setdefault(question_pattern(str(q), answer_words), set()).add(a)
    group: dict[str, frozenset[str]] = {}
    for words in by_pattern.values():  # merge overlapping answer sets (a small union of sets)
        merged = set(words).union(*(group[w] for w in words if w in group))
        for w in merged:
            group[w] = frozenset(merged)
    return {w: g for w, g in group.items() if len(g) > 1}


def complementary_pair(question: str, answer: str, truth: dict[frozenset[str], str], group: dict[str, frozenset[str]],
                       rng: np.random.Generator) -> tuple[str, str]:
    """A yes/no pair with its one group word w redrawn so that the image's own value is named half the time.

    truth: group -> the record's value (from its open answers). The new word w' is the true value with
    probability 1/2, else uniform over the group's other values; the answer flips exactly when "w is the
    image's value" and "w' is" differ, so negated templates ("is there not a red shape?") stay right with
    no parsing. Pairs that are not yes/no, name no group word or two of them, or whose group's value the
    record does not state, are returned as they are.
    """
    a = answer.lower().strip()
    words = question.split()
    hits = [i for i, w in enumerate(words) if w.lower().rstrip("?") in group]
    if a not in YES_NO or len(hits) != 1:
        return question, answer
    i = hits[0]
    w = words[i].lower().rstrip("?")
    t = truth.get(group[w])
    if t is None:
        return question, answer
    others = sorted(group[w] - {t})
    new = t if rng.random() < 0.5 else others[int(rng.integers(len(others)))]
    flip = (w == t) != (new == t)
    words[i] = new + words[i][len(words[i].rstrip("?")):]  # keep a trailing "?"
    return " ".join(words), (YES_NO[1] if a == "yes" else YES_NO[0]) if flip else answer


@register_task
class VQA(_ImageToText):
    """Image + question → answer; loss on the answer tokens (and <eos>) only.

    Reads per-image records (`questions`, `answers` lists: one pair drawn per example)
    or per-question records (`question`, `answer`).

    `qa_per_example` (the mixture's task field, default 1): with per-image records, draw up to
    that many distinct pairs of the record as turns after one image (``q1 a1 <eos> q2 a2 <eos>
    ...``, loss on the answers only, as a LLaVA conversation). One image then teaches several
    answers for the cost of its tokens once; the first turn is exactly the eval format.

    `balance_answers` (the mixture's task field, default false): with per-image records, draw a
    record's pairs with weights that make every answer of a question pattern equally likely over
    the bank (`answer_balance_weights`), as VQA v2 balanced its questions with complementary
    images. Without it a template such as "is there a red shape?" is "no" for 79% of easy-VQA
    images, and a young model answers from the question alone.

    `complementary_yes_no` (the mixture's task field, default false): with per-image records, every
    drawn yes/no turn that names one value of an answer group (a colour, a shape: `answer_groups`)
    is redrawn to name the image's own value half the time, its answer recomputed from the record's
    open answers (`complementary_pair`), as VQA v2 paired each question with a complementary image.
    Every such question is then yes exactly half the time, whatever its template, and the answer
    must compare the question's word with the image. Turns whose record states no value of the group
    are kept as drawn.
    """

    name = "vqa"
    qa_per_example = 1
    balance_answers = False
    complementary_yes_no = False

    def _record_pairs(self, bank: ImageBank, index: int) -> tuple[list[str], list[str]]:
        qs, ans = bank.column("questions", index), bank.column("answers", index)
        if not qs or len(qs) != len(ans):
            raise RecordError(f"{bank.name} record {index}: 'questions' and 'answers' must be non-empty and of equal length")
        return qs, ans

    def _pair_probs(self, bank: ImageBank, index: int) -> np.ndarray | None:
        """Draw probabilities of the record's pairs under `balance_answers`, else None (uniform)."""
        if not self.balance_answers:
            return None
        cache = self.__dict__.setdefault("_balance_cache", {})
        hit = cache.get(id(bank))
        if hit is None or hit[0] is not bank:
            hit = cache[id(bank)] = (bank, answer_balance_weights(bank.columns["questions"], bank.columns["answers"]))
        w = hit[1][index]
        return w / w.sum()

    def pair(self, bank: ImageBank, index: int, rng: np.random.Generator) -> tuple[str, str]:
        for on, opt in ((self.balance_answers, "balance_answers"), (self.complementary_yes_no, "complementary_yes_no")):
            if on and "questions" not in bank.columns:
                raise ConfigError(
                    f"task 'vqa': {opt} needs per-image records ('questions' and 'answers' lists); "
                    f"{bank.name or 'this dataset'} has one question per record (fields: {sorted(bank.columns)})"
                )
        if "questions" in bank.columns:
            qs, ans = self._record_pairs(bank, index)
            p = self._pair_probs(bank, index)
            k = int(rng.integers(len(qs))) if p is None else int(rng.choice(len(qs), p=p))
            return self._complement(bank, index, qs[k], ans[k], rng)
        return bank.column("question", index), bank.column("answer", index)

    def pairs(self, bank: ImageBank, index: int, rng: np.random.Generator) -> list[tuple[str, str]]:
        """The (question, answer) turns of one example: `pair`, or up to `qa_per_example` distinct ones."""
        if self.qa_per_example == 1 or "questions" not in bank.columns:
            return [self.pair(bank, index, rng)]
        qs, ans = self._record_pairs(bank, index)
        p = self._pair_probs(bank, index)
        pick = rng.choice(len(qs), size=min(self.qa_per_example, len(qs)), replace=False, p=p)
        return [self._complement(bank, index, qs[int(k)], ans[int(k)], rng) for k in pick]

    def _complement(self, bank: ImageBank, index: int, question: str, answer: str,
                    rng: np.random.Generator) -> tuple[str, str]:
        """`complementary_pair` of a drawn turn under `complementary_yes_no`, else the turn as drawn."""
        if not self.complementary_yes_no:
            return question, answer
        cache = self.__dict__.setdefault("_group_cache", {})
        hit = cache.get(id(bank))
        if hit is None or hit[0] is not bank:
            hit = cache[id(bank)] = (bank, answer_groups(bank.columns["questions"], bank.columns["answers"]))
        group = hit[1]
        qs, ans = self._record_pairs(bank, index)
        truth: dict[frozenset[str], str] = {}
        for a in ans:
            a = str(a).lower().strip()
            if a in group:
                if truth.setdefault(group[a], a) != a:
                    raise RecordError(f"{bank.name} record {index}: its answers name two values of one group "
                                      f"({truth[group[a]]!r} and {a!r}); complementary_yes_no needs one")
        return complementary_pair(question, answer, truth, group, rng)

    def example(self, bank: ImageBank, index: int, rng: np.random.Generator) -> Example:
        turns = self.pairs(bank, index, rng)
        if any(not q or not a for q, a in turns):
            raise RecordError(f"{bank.name} record {index}: empty question or answer")
        (q, a), rest = turns[0], turns[1:]
        segs = self.context(q) + [Text([*self.encode(a), self.tok.eos_id])]
        for q, a in rest:
            segs += [Text(self.encode(q), loss=False), Text([*self.encode(a), self.tok.eos_id])]
        return make_example(segs, bank.tokens[index])

    def predict(self, model, tokens: torch.Tensor, questions: list[str], max_new_tokens: int = 8, batch_size: int = 64) -> list[str]:
        """Greedy answers for (N, T, C) image tokens and their questions."""
        if len(questions) != len(tokens):
            raise ConfigError(f"{len(questions)} questions for {len(tokens)} images")
        return self._decode(model, tokens, list(questions), max_new_tokens, batch_size)

    def progress(self, model: ACDiT, bank: ImageBank, indices: list[int], schedule: ScheduleConfig, out: Path, stem: str) -> list[str]:
        """The records' images, one question each (fixed across steps), the model's answer next to the truth."""
        rng = np.random.default_rng(0)
        pairs = [self.pair(bank, i, rng) for i in indices]
        pred = self.predict(model, bank.tokens[indices], [q for q, _ in pairs])
        rows = [[q, a, p] for (q, a), p in zip(pairs, pred)]
        return [_input_grid(self, model, bank, indices, out, stem), "", *_table(["question", "answer (truth)", "answer (model)"], rows)]
