"""VQA accuracy equals the official VQA challenge scorer (vqaEval.py) on 10-reference inputs.

The class below is an independent port of the official scorer's rules, written to mirror
vqaEval.py's structure (``processPunctuation``, ``processDigitArticle``, the ``evaluate`` loop
over answer records with ids). It runs on Python 3 but keeps the Python 2 semantics the
official script has: ``\\d`` without the UNICODE flag is ASCII-only, and ``re.UNICODE`` is
passed where ``re.sub`` expects its count. ``vqa_accuracy`` must return exactly the same
float on every generated case (docs/architecture.md, "The evaluation harness").
"""

from __future__ import annotations

import random
import re

import pytest

from unimodal.eval.metrics.vqa import CONTRACTIONS, vqa_accuracy


class OfficialVQAEval:
    """The official scorer's per-question rules (vqaEval.py, Python 2 semantics)."""

    contractions = {
        'aint': "ain't", 'arent': "aren't", 'cant': "can't", 'couldve': "could've", 'couldnt': "couldn't",
        "couldn'tve": "couldn't've", "couldnt've": "couldn't've", 'didnt': "didn't", 'doesnt': "doesn't", 'dont': "don't",
        'hadnt': "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", 'hasnt': "hasn't", 'havent': "haven't",
        'hed': "he'd", "hed've": "he'd've", "he'dve": "he'd've", 'hes': "he's", 'howd': "how'd",
        'howll': "how'll", 'hows': "how's", "Id've": "I'd've", "I'dve": "I'd've", 'Im': "I'm",
        'Ive': "I've", 'isnt': "isn't", 'itd': "it'd", "itd've": "it'd've", "it'dve": "it'd've",
        'itll': "it'll", "let's": "let's", 'maam': "ma'am", 'mightnt': "mightn't", "mightnt've": "mightn't've",
        "mightn'tve": "mightn't've", 'mightve': "might've", 'mustnt': "mustn't", 'mustve': "must've", 'neednt': "needn't",
        'notve': "not've", 'oclock': "o'clock", 'oughtnt': "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
        "'ow'sat": "'ow's'at", 'shant': "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
        'shouldve': "should've", 'shouldnt': "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": 'somebodyd',
        "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", 'somebodyll': "somebody'll", 'somebodys': "somebody's", 'someoned': "someone'd",
        "someoned've": "someone'd've", "someone'dve": "someone'd've", 'someonell': "someone'll", 'someones': "someone's", 'somethingd': "something'd",
        "somethingd've": "something'd've", "something'dve": "something'd've", 'somethingll': "something'll", 'thats': "that's", 'thered': "there'd",
        "thered've": "there'd've", "there'dve": "there'd've", 'therere': "there're", 'theres': "there's", 'theyd': "they'd",
        "theyd've": "they'd've", "they'dve": "they'd've", 'theyll': "they'll", 'theyre': "they're", 'theyve': "they've",
        'twas': "'twas", 'wasnt': "wasn't", "wed've": "we'd've", "we'dve": "we'd've", 'weve': "we've",
        'werent': "weren't", 'whatll': "what'll", 'whatre': "what're", 'whats': "what's", 'whatve': "what've",
        'whens': "when's", 'whered': "where'd", 'wheres': "where's", 'whereve': "where've", 'whod': "who'd",
        "whod've": "who'd've", "who'dve": "who'd've", 'wholl': "who'll", 'whos': "who's", 'whove': "who've",
        'whyll': "why'll", 'whyre': "why're", 'whys': "why's", 'wont': "won't", 'wouldve': "would've",
        'wouldnt': "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", 'yall': "y'all", "yall'll": "y'all'll",
        "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", 'youd': "you'd",
        "youd've": "you'd've", "you'dve": "you'd've", 'youll': "you'll", 'youre': "you're", 'youve': "you've",    }
    manualMap = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
    articles = ["a", "an", "the"]
    periodStrip = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)  # Python 2: str \d is [0-9]
    commaStrip = re.compile(r"(\d)(\,)(\d)", re.ASCII)
    punct = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]

    def processPunctuation(self, inText):
        outText = inText
        for p in self.punct:
            if (p + " " in inText or " " + p in inText) or (re.search(self.commaStrip, inText) is not None):
                outText = outText.replace(p, "")
            else:
                outText = outText.replace(p, " ")
        # the official call is periodStrip.sub("", outText, re.UNICODE): the flag lands on count
        outText = self.periodStrip.sub("", outText, count=int(re.UNICODE))
        return outText

    def processDigitArticle(self, inText):
        outText = []
        for word in inText.lower().split():
            word = self.manualMap.setdefault(word, word)
            if word not in self.articles:
                outText.append(word)
        for wordId, word in enumerate(outText):
            if word in self.contractions:
                outText[wordId] = self.contractions[word]
        return " ".join(outText)

    def preprocess_prediction(self, resAns):
        return resAns

    def score(self, resAns, answers):
        """The body of evaluate() for one question: prediction string, list of reference strings."""
        gts = [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)]
        for ansDic in gts:
            ansDic["answer"] = ansDic["answer"].replace("\n", " ").replace("\t", " ").strip()
        resAns = self.preprocess_prediction(resAns)
        resAns = resAns.replace("\n", " ").replace("\t", " ").strip()
        gtAcc = []
        gtAnswers = [ans["answer"] for ans in gts]
        if len(set(gtAnswers)) > 1:
            for ansDic in gts:
                ansDic["answer"] = self.processPunctuation(ansDic["answer"])
                ansDic["answer"] = self.processDigitArticle(ansDic["answer"])
            resAns = self.processPunctuation(resAns)
            resAns = self.processDigitArticle(resAns)
        for gtAnsDatum in gts:
            otherGTAns = [item for item in gts if item != gtAnsDatum]
            matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
            acc = min(1, float(len(matchingAns)) / 3)
            gtAcc.append(acc)
        return float(sum(gtAcc)) / len(gtAcc)


class LmmsEvalVQA(OfficialVQAEval):
    """lmms-eval's VQAv2 scoring: EvalAI answer processor on the prediction, Python 3 regexes."""

    periodStrip = re.compile(r"(?!<=\d)(\.)(?!\d)")
    commaStrip = re.compile(r"(?<=\d)(\,)+(?=\d)")

    def preprocess_prediction(self, item):
        item = item.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
        item = item.replace("\n", " ").replace("\t", " ").strip()
        return self.processDigitArticle(self.processPunctuation(item))


# ---------------------------------------------------------------- random cases exercising every rule
WORDS = [
    "yes", "no", "Yes", "YES", "cat", "red", "blue", "two", "Two", "none", "zero", "ten", "one", "three",
    "a", "an", "the", "The", "dont", "isnt", "Im", "im", "Ive", "somebody'd", "let's", "she's", "'ows'at",
    "ow's'at", "'ow'sat", "couldn'tve", "couldnt've", "y'allll", "oclock", "twas", "yall'd've", "hes",
    "2", "3", "10", "1,000", "3.5", "٣", "٣,٣", "٣.٣", "1.5", "５", "1,2", "1,,2", "café", "İ", "ǅ",
]
PUNCT = list(";/[]\"{}()=+\\_->@`,?!<.'")
SEPARATORS = [" ", " ", " ", "", "-", ", ", ",", ".", " . ", "/", "\t", "\n"]


def random_answer(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.choice([1, 1, 2, 2, 3, 4]))]
    text = words[0]
    for w in words[1:]:
        text += rng.choice(SEPARATORS) + w
    roll = rng.random()
    if roll < 0.15:
        text += "." * rng.randint(1, 3)
    elif roll < 0.25:
        text = rng.choice(PUNCT) + text + rng.choice(PUNCT)
    elif roll < 0.32:  # more than 32 periods: the official count limit
        n = rng.randint(30, 45)
        text = ".".join([text] * n) if rng.random() < 0.5 else text + "." * n
    elif roll < 0.36:
        text = ". ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 40))) + "."
    if rng.random() < 0.15:
        text = rng.choice([" ", "\n", "\t", "  "]) + text + rng.choice([" ", "\n", "\t", ""])
    return text


def variant(rng: random.Random, text: str) -> str:
    """A spelling of `text` that differs only in what normalisation removes (or not)."""
    return rng.choice([
        text, text, text.upper(), text.capitalize(), text + ".", text + "!", " " + text + "\n",
        "the " + text, "a " + text, text.replace(" ", "-"), text + " .", "(" + text + ")",
    ])


def random_case(rng: random.Random) -> tuple[str, list[str]]:
    base = random_answer(rng)
    kind = rng.random()
    if kind < 0.35:  # all ten identical: raw comparison
        refs = [base] * 10
    elif kind < 0.7:  # spellings of one answer, and a few others
        refs = [variant(rng, base) if rng.random() < 0.8 else random_answer(rng) for _ in range(10)]
    else:
        pool = [random_answer(rng) for _ in range(rng.randint(2, 4))]
        refs = [rng.choice(pool) for _ in range(10)]
    roll = rng.random()
    pred = variant(rng, base) if roll < 0.6 else rng.choice(refs) if roll < 0.8 else random_answer(rng)
    return pred, refs


CASES = [random_case(random.Random(seed)) for seed in range(4000)]


def test_the_cases_exercise_every_rule():
    official = OfficialVQAEval()
    identical = [c for c in CASES if len({r.strip() for r in c[1]}) == 1]
    assert len(identical) > 1000
    assert any(vqa_accuracy(p, r) == 0 and official.processDigitArticle(official.processPunctuation(p.strip()))
               == official.processDigitArticle(official.processPunctuation(r[0].strip())) for p, r in identical)
    texts = [t for p, refs in CASES for t in (p, *refs)]
    assert sum(t.count(".") > 32 for t in texts) > 200
    assert any("٣" in t for t in texts) and any(re.search(r"[0-9],[0-9]", t) for t in texts)
    lower_keys = [k for k in official.contractions if k == k.lower()]
    seen = {w for t in texts for w in t.lower().split()}
    assert {"somebody'd", "let's", "she's", "'ows'at", "ow's'at", "'ow'sat"} <= seen & set(lower_keys)
    assert len({vqa_accuracy(p, r) for p, r in CASES}) >= 8  # many distinct scores, not only 0 and 1


def test_contraction_table_is_the_official_one():
    assert CONTRACTIONS == OfficialVQAEval.contractions


@pytest.mark.parametrize("start", range(0, len(CASES), 1000))
def test_equals_the_official_scorer_exactly(start):
    official = OfficialVQAEval()
    for pred, refs in CASES[start:start + 1000]:
        assert vqa_accuracy(pred, refs) == official.score(pred, refs), (pred, refs)


def test_lmms_eval_processing_equals_lmms_eval(start=0):
    lmms = LmmsEvalVQA()
    for pred, refs in CASES:
        assert vqa_accuracy(pred, refs, answer_processing="lmms_eval") == lmms.score(pred, refs), (pred, refs)


def test_documented_edge_cases():
    ten_yes = ["yes"] * 10
    assert vqa_accuracy("yes", ten_yes) == 1.0
    assert vqa_accuracy(" yes\n", ten_yes) == 1.0  # stripping happens before the comparison
    assert vqa_accuracy("Yes", ten_yes) == 0.0 and vqa_accuracy("yes.", ten_yes) == 0.0  # no normalisation
    mixed = ["yes"] * 9 + ["Yes"]
    assert vqa_accuracy("YES.", mixed) == 1.0  # not all identical: normalised
    assert vqa_accuracy("Yes", ten_yes, answer_processing="lmms_eval") == 1.0  # lmms-eval lower-cases first
    # "somebody'd" -> "somebodyd" in the official table (a key our old table lacked)
    assert vqa_accuracy("somebody'd", ["somebodyd"] * 5 + ["x"] * 5) == 1.0
    # an Arabic-Indic digit is not a digit to the official (Python 2) regex: the period goes
    assert vqa_accuracy("٣.٣", ["٣٣"] * 4 + ["x"] * 6) == 1.0
    # at most 32 periods are removed
    many = "a" + "." * 40
    assert vqa_accuracy(many, ["a" + "." * 8] * 4 + ["x"] * 6) == 0.0
    assert vqa_accuracy(many, ["b" + "." * 8] * 4 + ["x"] * 6) == 0.0


def test_other_reference_counts_keep_the_documented_rule():
    assert vqa_accuracy("The Circle.", ["circle"]) == 1.0  # one reference: exact match after normalisation
    assert vqa_accuracy("Yes", ["yes", "yes", "yes"]) == pytest.approx(2 / 3)  # normalised even when all agree
    with pytest.raises(Exception, match="answer_processing.*'lmms_eval'"):
        vqa_accuracy("a", ["a"], answer_processing="lmms")
