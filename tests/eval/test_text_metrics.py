import math

import pytest

from unimodal.eval.metrics.captioning import bleu4, cider_d
from unimodal.eval.metrics.vqa import exact_match, normalize_answer, vqa_accuracy

# (raw answer, normalised) — cases of the official VQA evaluation's processPunctuation / processDigitArticle
NORMALISATION = [
    ("Yes", "yes"),
    ("  two\n", "2"),
    ("The red circle.", "red circle"),
    ("an apple", "apple"),
    ("none", "0"),
    ("dont know", "don't know"),
    ("isnt it", "isn't it"),
    ("black-and-white", "black and white"),  # a hyphen glued between words becomes a space
    ("hello, world", "hello world"),  # ", " : punctuation next to a space is removed
    ("1,000", "1000"),  # comma inside a number is removed
    ("3.5", "3.5"),  # a decimal point survives
    ("what?!", "what"),
    ("Ten", "10"),
]


@pytest.mark.parametrize("raw, expected", NORMALISATION)
def test_vqa_normalisation(raw, expected):
    assert normalize_answer(raw) == expected


def test_vqa_accuracy_rules():
    ten = ["2"] * 2 + ["two"] + ["3"] * 7  # three annotators said two (in two spellings)
    assert vqa_accuracy("Two", ten) == pytest.approx(0.9)  # 3 of 10: leave-one-out (3 x 2/3 + 7 x 1) / 10
    assert vqa_accuracy("3", ten) == 1.0  # 7 of 10: every 9-subset still has >= 3
    assert vqa_accuracy("4", ten) == 0.0
    assert vqa_accuracy("2", ["2", "3", "3", "3"]) == pytest.approx(0.25)  # (0 + 3 x 1/3) / 4
    assert vqa_accuracy("2", ["2", "2", "3"]) == pytest.approx(4 / 9)  # (1/3 + 1/3 + 2/3) / 3
    # one reference (easy-VQA): exact match after normalisation
    assert vqa_accuracy("The Circle.", ["circle"]) == 1.0
    assert vqa_accuracy("square", ["circle"]) == 0.0
    assert exact_match(" Red ", ["red"]) == 1.0 and exact_match("red.", ["red"]) == 0.0


def test_bleu4_hand_cases():
    ref = [["the cat sat on the mat"]]
    assert bleu4(["the cat sat on the mat"], ref) == pytest.approx(1.0)
    # p1..p4 = 6/7, 4/6, 3/5, 2/4; longer than the reference: no brevity penalty
    assert bleu4(["the cat sat on the red mat"], ref) == pytest.approx((6 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25)
    # all n-grams match but 5 words for 6: brevity penalty exp(1 - 6/5)
    assert bleu4(["the cat sat on the"], ref) == pytest.approx(math.exp(1 - 6 / 5))
    assert bleu4(["a dog ran"], ref) == 0.0
    # the closest of several references sets the length; clipping by the max count over references
    assert bleu4(["the the the the"], [["the cat", "the the the the"]]) == pytest.approx(1.0)


def test_cider_d_hand_cases():
    refs = [["a small red circle"], ["a big blue square"], ["the green triangle here"]]
    assert cider_d(["a small red circle", "a big blue square", "the green triangle here"], refs) == pytest.approx(10.0)
    # three-word references have no 4-gram, so that quarter of the score is 0 (as in coco-caption)
    short = [["red circle now"], ["blue square now"], ["green triangle here"]]
    assert cider_d(["red circle now", "blue square now", "green triangle here"], short) == pytest.approx(7.5)
    assert cider_d(["big dog", "big dog", "big dog"], [["red circle"], ["blue square"], ["green triangle"]]) == 0.0
    # "a" is in every image's references: weight log(3) - log(3) = 0, so sharing only it scores 0
    assert cider_d(["a cat", "a dog", "a cow"], [["a red circle"], ["a blue square"], ["a green triangle"]]) == 0.0
    # some n-grams right: strictly between, and a longer caption is penalised (Gaussian length penalty)
    part = cider_d(["a small red square", "a big blue square", "the green triangle here"], refs)
    longer = cider_d(["a small red square is here now ok", "a big blue square", "the green triangle here"], refs)
    assert 0 < longer < part < 10.0


def test_cider_d_single_image_value():
    # two images; image 0's caption shares unigram "red" and nothing else with its one reference.
    refs = [["red circle"], ["blue square"]]
    # weights: every n-gram has df 1 -> idf log 2; hyp "red box": unigram vectors red, box (box df 0 -> log 2 - log 1)
    # cos of unigrams = (log2·log2) / (√2·log2 · √2·log2) = 1/2; higher n-grams 0; no length difference.
    # Image 1 is exact but two words long: unigram and bigram cosines 1, no 3- or 4-grams.
    score = cider_d(["red box", "blue square"], refs)
    assert score == pytest.approx((10 * (0.5 / 4) + 10 * (2 / 4)) / 2)


# The official normalisation of the test vocabulary, worked out by hand from vqaEval.py: number words to
# digits ("none" is 0), the article "a" dropped, the final period deleted and lower case.
OFFICIAL_FORM = {"2": "2", "two": "2", "3": "3", "yes": "yes", "no": "no", "a cat": "cat", "the cat": "cat", "cat": "cat",
                 "cats": "cats", "Red.": "red", "red": "red", "none": "0", "0": "0", "none of these": "0 of these"}


def official_vqa_accuracy(prediction: str, references: list[str]) -> float:
    """The loop of the official vqaEval.py, on answer records with ids (brute-force reference)."""
    gts = [{"answer": OFFICIAL_FORM[a], "answer_id": i} for i, a in enumerate(references)]
    res = OFFICIAL_FORM[prediction]
    accs = []
    for gt in gts:
        others = [item for item in gts if item != gt]
        accs.append(min(1.0, len([item for item in others if item["answer"] == res]) / 3))
    return sum(accs) / len(accs)


def test_vqa_accuracy_equals_the_official_leave_one_out_loop():
    import random

    rng = random.Random(0)
    vocab = ["2", "two", "3", "yes", "no", "a cat", "the cat", "cat", "cats", "Red.", "red", "none", "0"]
    for _ in range(500):
        refs = [rng.choice(vocab) for _ in range(rng.choice([2, 3, 5, 10]))]
        pred = rng.choice(vocab + ["none of these"])
        assert vqa_accuracy(pred, refs) == pytest.approx(official_vqa_accuracy(pred, refs)), (pred, refs)
