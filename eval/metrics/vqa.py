"""VQA accuracy with the answer normalisation of the official VQA evaluation (vqaEval.py).

Normalisation, in the official order: newlines/tabs to spaces and strip;
punctuation removed (or turned into a space where it glues two words);
periods dropped unless part of a number; lower case; number words to digits;
articles dropped; contractions restored ("dont" → "don't").

Accuracy: with several reference answers (VQA v2 has 10 per question) the
official leave-one-out average: for each reference, min(#matches among the
*other* references / 3, 1), averaged over the references (so 3 matches of 10
score 0.9, 4 or more score 1). With one reference (easy-VQA) it is exact match
after normalisation.
"""

from __future__ import annotations

import re

from .registry import register_metric

_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official pattern (drops periods not before a digit)
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_NUMBERS["none"] = "0"
_ARTICLES = {"a", "an", "the"}
# official table, restricted to the lower-case keys (answers are lower-cased before the lookup)
_CONTRACTIONS = dict(pair.split(":") for pair in """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've couldnt've:couldn't've
didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've hadn'tve:hadn't've hasnt:hasn't havent:haven't
hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd howll:how'll hows:how's isnt:isn't itd:it'd itd've:it'd've
it'dve:it'd've itll:it'll maam:ma'am mightnt:mightn't mightnt've:mightn't've mightn'tve:mightn't've mightve:might've
mustnt:mustn't mustve:must've neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't shant:shan't shed've:she'd've
she'dve:she'd've shouldve:should've shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've
somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's someoned:someone'd
someoned've:someone'd've someone'dve:someone'd've someonell:someone'll someones:someone's somethingd:something'd
somethingd've:something'd've something'dve:something'd've somethingll:something'll thats:that's thered:there'd
thered've:there'd've there'dve:there'd've therere:there're theres:there's theyd:they'd theyd've:they'd've
they'dve:they'd've theyll:they'll theyre:they're theyve:they've twas:'twas wasnt:wasn't wed've:we'd've we'dve:we'd've
weve:we've werent:weren't whatll:what'll whatre:what're whats:what's whatve:what've whens:when's whered:where'd
wheres:where's whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's whove:who've
whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't wouldnt've:wouldn't've
wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll yall'd've:y'all'd've y'alld've:y'all'd've
y'all'dve:y'all'd've youd:you'd youd've:you'd've you'dve:you'd've youll:you'll youre:you're youve:you've
""".split())


def _strip_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if p + " " in text or " " + p in text or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def normalize_answer(answer: str) -> str:
    """The official VQA answer normalisation (see the module docstring)."""
    text = _strip_punctuation(answer.replace("\n", " ").replace("\t", " ").strip())
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


@register_metric("vqa_accuracy", aggregation="mean", higher_is_better=True, inputs="text")
def vqa_accuracy(prediction: str, references: list[str]) -> float:
    """VQA accuracy: the official leave-one-out mean of min(#other matching references / 3, 1).

    Exact match (after normalisation) when there is one reference.
    """
    pred = normalize_answer(prediction)
    hits = [normalize_answer(r) == pred for r in references]
    if len(references) == 1:
        return float(hits[0])
    matches = sum(hits)
    return sum(min((matches - h) / 3.0, 1.0) for h in hits) / len(hits)


@register_metric("exact_match", aggregation="mean", higher_is_better=True, inputs="text")
def exact_match(prediction: str, references: list[str]) -> float:
    """1 if the prediction equals a reference after stripping and lower-casing, else 0."""
    return float(prediction.strip().lower() in {r.strip().lower() for r in references})
