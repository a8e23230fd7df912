"""VQA accuracy equal to the official VQA challenge scorer (vqaEval.py) (docs/architecture.md, "The evaluation harness").

**Ten references (VQA v2): the official rules, exactly.**

1. Prediction and references: ``"\\n"`` and ``"\\t"`` become spaces, then ``strip()``.
2. Only when the ten stripped references are *not* all the same string are the
   prediction and the references normalised (punctuation, then digits/articles/
   contractions, below). When all ten agree the stripped raw strings are compared,
   so ``"Yes"`` or ``"yes."`` scores 0 against ten ``"yes"`` (as in the official script).
3. Accuracy: the mean over the ten leave-one-out subsets of
   ``min(1, #matches in the other nine / 3)`` (3 matches of 10 score 0.9, 4+ score 1).

Normalisation, in the official order:

* punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted if it
  touches a space in the input (or the input has a comma between two digits),
  otherwise replaced by a space; then periods not followed by a digit are deleted;
  the official call passes ``re.UNICODE`` (= 32) as the *count* of ``re.sub``, so at
  most the first 32 such periods go. The official script is Python 2, where ``\\d``
  without the UNICODE flag means ``[0-9]``: the patterns here are ``re.ASCII`` so an
  Arabic-Indic ``"٣"`` is not a digit;
* lower case, split on whitespace; number words ``none``/``zero``..``ten`` to digits;
  articles ``a an the`` dropped; the official contraction table applied word by word
  (all its entries, also those whose keys can never match a lower-cased word).

**Other reference counts** (the rule documented before this module matched the scorer):
both sides are always normalised; one reference (easy-VQA) is exact match after
normalisation, several use the same leave-one-out mean.

**answer_processing** (a metric option, ``metric_options: {vqa_accuracy: {answer_processing: ...}}``
in a task YAML):

* ``"official"`` (default): the rules above.
* ``"lmms_eval"``: what lmms-eval's VQAv2 task reports. Before scoring, the prediction goes
  through its EvalAI answer processor: lower case; ``","`` and ``"?"`` deleted; ``"'s"``
  becomes ``" 's"``; newlines/tabs to spaces and strip; punctuation and digits/articles/
  contractions as above. lmms-eval runs on Python 3, so its ``\\d`` matches any Unicode
  digit, its comma test is ``(?<=\\d)(,)+(?=\\d)``, and it uses these same variants in the
  second normalisation of step 2. With ten references its scoring loop is then the
  official one; with other counts the rule for other counts above applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .registry import register_metric

ANSWER_PROCESSING = ("official", "lmms_eval")
OFFICIAL_REFERENCES = 10  # the reference count of VQA v1/v2, where the official rules apply exactly

_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_MAX_PERIODS = 32  # re.UNICODE passed as re.sub's count in the official processPunctuation
_NUMBERS = {"none": "0", **{w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}}
_ARTICLES = frozenset({"a", "an", "the"})
# The official contraction table, every entry (whitespace-separated key:value pairs).
CONTRACTIONS: dict[str, str] = dict(pair.split(":") for pair in """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've couldnt've:couldn't've
didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've hadn'tve:hadn't've hasnt:hasn't havent:haven't
hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd howll:how'll hows:how's Id've:I'd've I'dve:I'd've
Im:I'm Ive:I've isnt:isn't itd:it'd itd've:it'd've it'dve:it'd've itll:it'll let's:let's
maam:ma'am mightnt:mightn't mightnt've:mightn't've mightn'tve:mightn't've mightve:might've
mustnt:mustn't mustve:must've neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't
ow's'at:'ow's'at 'ows'at:'ow's'at 'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've
she's:she's shouldve:should've shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've
somebody'd:somebodyd somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll
somebodys:somebody's someoned:someone'd someoned've:someone'd've someone'dve:someone'd've
someonell:someone'll someones:someone's somethingd:something'd somethingd've:something'd've
something'dve:something'd've somethingll:something'll thats:that's thered:there'd thered've:there'd've
there'dve:there'd've therere:there're theres:there's theyd:they'd theyd've:they'd've
they'dve:they'd've theyll:they'll theyre:they're theyve:they've twas:'twas wasnt:wasn't
wed've:we'd've we'dve:we'd've weve:we've werent:weren't whatll:what'll whatre:what're
whats:what's whatve:what've whens:when's whered:where'd wheres:where's whereve:where've
whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's whove:who've whyll:why'll
whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't wouldnt've:wouldn't've
wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll yall'd've:y'all'd've
y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've you'dve:you'd've
youll:you'll youre:you're youve:you've
""".split())


@dataclass(frozen=True)
class _Normaliser:
    """One flavour of the VQA answer normalisation: the two regular expressions differ between scorers."""

    comma: re.Pattern[str]  # its search decides whether punctuation is deleted or spaced
    period: re.Pattern[str]  # periods it matches are deleted (at most _MAX_PERIODS)

    def punctuation(self, text: str) -> str:
        """processPunctuation: delete or space out punctuation, then delete periods not before a digit."""
        glued_number = self.comma.search(text) is not None
        out = text
        for p in _PUNCT:
            if glued_number or p + " " in text or " " + p in text:
                out = out.replace(p, "")
            else:
                out = out.replace(p, " ")
        return self.period.sub("", out, count=_MAX_PERIODS)

    @staticmethod
    def digit_article(text: str) -> str:
        """processDigitArticle: lower case, number words to digits, drop articles, restore contractions."""
        words = [_NUMBERS.get(w, w) for w in text.lower().split()]
        return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)

    def normalise(self, text: str) -> str:
        """Punctuation then digits/articles/contractions (the input already stripped)."""
        return self.digit_article(self.punctuation(text))


_OFFICIAL = _Normaliser(re.compile(r"(\d)(,)(\d)", re.ASCII), re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII))
_LMMS_EVAL = _Normaliser(re.compile(r"(?<=\d)(,)+(?=\d)"), re.compile(r"(?!<=\d)(\.)(?!\d)"))


def _clean(text: str) -> str:
    """Step 1 of the scorer: newlines and tabs to spaces, then strip."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def _normaliser(answer_processing: str) -> _Normaliser:
    if answer_processing not in ANSWER_PROCESSING:
        from unimodal.errors import unknown

        from ..errors import EvalError

        raise unknown("vqa_accuracy answer_processing", answer_processing, ANSWER_PROCESSING, cls=EvalError)
    return _OFFICIAL if answer_processing == "official" else _LMMS_EVAL


def evalai_answer(prediction: str) -> str:
    """lmms-eval's EvalAI answer processor applied to a prediction (``answer_processing="lmms_eval"``)."""
    text = prediction.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return _LMMS_EVAL.normalise(_clean(text))


def normalize_answer(answer: str, answer_processing: str = "official") -> str:
    """The VQA answer normalisation: clean, punctuation, digits/articles/contractions (module docstring)."""
    return _normaliser(answer_processing).normalise(_clean(answer))


def _leave_one_out(prediction: str, references: list[str]) -> float:
    """Mean over references of min(1, #matches among the other references / 3)."""
    hits = [r == prediction for r in references]
    matches = sum(hits)
    return sum(min(1.0, (matches - h) / 3.0) for h in hits) / len(hits)


@register_metric(
    "vqa_accuracy", aggregation="mean", higher_is_better=True, inputs="text",
    options={"answer_processing": ANSWER_PROCESSING},
)
def vqa_accuracy(prediction: str, references: list[str], answer_processing: str = "official") -> float:
    """VQA accuracy, equal to the official scorer with 10 references (leave-one-out min(#matches/3, 1)).

    Exact match after normalisation with one reference; ``answer_processing`` is
    ``"official"`` or ``"lmms_eval"`` (see the module docstring).
    """
    norm = _normaliser(answer_processing)
    pred = evalai_answer(prediction) if answer_processing == "lmms_eval" else _clean(prediction)
    refs = [_clean(r) for r in references]
    if not refs:
        return 0.0
    if len(refs) == OFFICIAL_REFERENCES:
        if len(set(refs)) > 1:
            pred, refs = norm.normalise(pred), [norm.normalise(r) for r in refs]
        return _leave_one_out(pred, refs)
    pred, refs = norm.normalise(pred), [norm.normalise(r) for r in refs]
    if len(refs) == 1:
        return float(refs[0] == pred)
    return _leave_one_out(pred, refs)


@register_metric("exact_match", aggregation="mean", higher_is_better=True, inputs="text")
def exact_match(prediction: str, references: list[str]) -> float:
    """1 if the prediction equals a reference after stripping and lower-casing, else 0."""
    return float(prediction.strip().lower() in {r.strip().lower() for r in references})
