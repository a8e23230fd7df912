import numpy as np
import pytest
import torch

from unimodal.config import VisualConfig
from unimodal.diffusion import NoiseSchedule, compute_loss
from unimodal.layout import IGNORE, TEXT, Text
from unimodal.model import create_model
from unimodal.tasks import (
    ImageBank,
    RecordError,
    TaskMixture,
    build_image_bank,
    build_mixture,
    get_task_class,
    list_tasks,
)
from unimodal.tokenizers import TextTokenizer

V = VisualConfig(channels=3, image_size=64, patch_size=16, block_h=2, block_w=2)  # 4x4 tokens, 4 blocks


@pytest.fixture(scope="module")
def easyvqa():
    from unimodal.data import load_dataset

    return load_dataset("easyvqa", "test")


@pytest.fixture(scope="module")
def tok(easyvqa, tmp_path_factory):
    texts = [q for qs in easyvqa["questions"] for q in qs] + [c for c in easyvqa["caption"] if c]
    texts += [a for ans in easyvqa["answers"] for a in ans]
    return TextTokenizer.train(texts, vocab_size=320, out_dir=tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def bank(easyvqa):
    return build_image_bank(easyvqa.select(range(64)), V, name="easyvqa/test")


def targets_of(ex):
    lay = ex.layout
    return [int(t) for t in lay.text_target if t != IGNORE]


def test_registry_lists_tasks_and_suggests():
    from unimodal.tasks import VQA, Captioning, ClassToImage, ClassToVideo, TextToImage

    assert {"class_to_image", "text_to_image", "captioning", "vqa"} <= set(list_tasks())
    expect = {"class_to_image": ClassToImage, "text_to_image": TextToImage, "captioning": Captioning, "vqa": VQA,
              "class_to_video": ClassToVideo}
    for name, cls in expect.items():
        assert get_task_class(name) is cls, name  # each name builds its own head
    with pytest.raises(ValueError, match="captioning"):
        get_task_class("captionning")


def test_image_bank_round_trips_pixels(easyvqa, bank):
    from unimodal.data.transforms import to_tensor_images
    from unimodal.tasks import tokens_to_images

    imgs = to_tensor_images(easyvqa.select(range(4))["image"], channels=3)
    torch.testing.assert_close(tokens_to_images(bank.tokens[:4], V), imgs)


def test_vqa_trains_only_the_answer(tok):
    """A record with three (question, answer) pairs written out here: each example holds one question
    followed by *its* answer, only the answer (and EOS) is a target, and every pair gets picked."""
    pairs = [("what color is the shape?", "red"), ("is there a circle?", "yes"), ("what shape is it?", "circle")]
    bank = ImageBank(torch.zeros(1, 16, V.token_dim), {"questions": [[q for q, _ in pairs]], "answers": [[a for _, a in pairs]]},
                     "hand")
    vqa = get_task_class("vqa")(V, tok)
    seen = set()
    for seed in range(30):
        ex = vqa.example(bank, 0, np.random.default_rng(seed))
        ids = ex.layout.text_ids[ex.layout.modality == TEXT].tolist()
        matches = [k for k, (q, a) in enumerate(pairs)
                   if ids == [tok.bos_id, tok.boi_id, tok.eoi_id, *tok.encode(q), *tok.encode(a), tok.eos_id]]
        assert len(matches) == 1, tok.decode(ids)  # one question and its own answer, never another's
        assert targets_of(ex) == tok.encode(pairs[matches[0]][1]) + [tok.eos_id]
        assert ex.layout.num_noisy_blocks == 0  # understanding: the image is clean context only
        seen.add(matches[0])
    assert seen == {0, 1, 2}


def test_captioning_and_text_to_image_formats(tok, bank):
    i = next(i for i in range(len(bank)) if bank.columns["caption"][i])
    cap = bank.columns["caption"][i]
    ex = get_task_class("captioning")(V, tok).example(bank, i, np.random.default_rng(0))
    assert targets_of(ex) == tok.encode(cap) + [tok.eos_id]
    t2i = get_task_class("text_to_image")(V, tok, drop_prob=0.5)
    prompts = set()
    for s in range(40):
        e = t2i.example(bank, i, np.random.default_rng(s))
        assert e.layout.num_noisy_blocks == 4
        prompts.add(tuple(e.layout.text_ids[e.layout.modality == TEXT].tolist()))
    # with and without the caption (guidance dropout), nothing else
    assert prompts == {(tok.bos_id, *tok.encode(cap), tok.boi_id), (tok.bos_id, tok.boi_id)}
    # the caption is a language-model target by default (Transfusion), and not with prompt_loss: false
    assert targets_of(t2i.example(bank, i, np.random.default_rng(1))) != []


def test_vqa_turns_per_example_are_distinct_pairs_of_the_record_with_loss_on_answers(tok, bank):
    mix = build_mixture([{"name": "vqa", "dataset": "easyvqa", "split": "test", "qa_per_example": 3}], V, tok)
    task, _, _ = mix.entries[0]
    i = next(i for i in range(len(bank)) if len(bank.columns["questions"][i]) >= 4)
    pairs = list(zip(bank.columns["questions"][i], bank.columns["answers"][i]))
    for seed in range(5):
        ex = task.example(bank, i, np.random.default_rng(seed))
        texts = [s for s in ex.layout.segments if isinstance(s, Text)][1:]  # after <bos> <boi>: q, a, q, a, ...
        assert len(texts) == 6 and [s.loss for s in texts] == [False, True] * 3
        turns = []
        for q, a in zip(texts[0::2], texts[1::2]):
            q_ids = [t for t in q.ids if t != tok.eoi_id]
            assert a.ids[-1] == tok.eos_id
            turns.append((tok.decode(q_ids).strip(), tok.decode(list(a.ids[:-1])).strip()))
        assert len(set(turns)) == 3 and all(t in pairs for t in turns)  # distinct pairs of this record
        assert targets_of(ex) == [t for s in texts[1::2] for t in s.ids]  # loss on the answers (and <eos>) only
    # a record with fewer pairs gives them all; qa_per_example 1 is the single-question format exactly
    few = next(j for j in range(len(bank)) if len(bank.columns["questions"][j]) < 9)
    many = build_mixture([{"name": "vqa", "dataset": "easyvqa", "split": "test", "qa_per_example": 9}], V, tok).entries[0][0]
    n_turns = sum(s.loss for s in many.example(bank, few, np.random.default_rng(0)).layout.segments if isinstance(s, Text))
    assert n_turns == len(bank.columns["questions"][few])
    one = build_mixture([{"name": "vqa", "dataset": "easyvqa", "split": "test", "qa_per_example": 1}], V, tok).entries[0][0]
    a = one.example(bank, i, np.random.default_rng(5))
    b = get_task_class("vqa")(V, tok).example(bank, i, np.random.default_rng(5))
    assert a.layout.key == b.layout.key


def test_answer_balance_weights_split_each_pattern_evenly_over_its_answers():
    from unimodal.tasks.understanding import answer_balance_weights, question_pattern

    assert question_pattern("Is there a RED shape?", {"red", "yes"}) == "is there a _ shape"
    # pattern "is there a _ shape": 1 yes, 5 no (colour words are answers elsewhere); pattern "what color is it": 3 answers
    qs = [["is there a red shape?", "is there a blue shape?", "what color is it?"],
          ["is there a red shape?", "is there a green shape?", "is there a blue shape?", "what color is it?"],
          ["is there a blue shape?", "what color is it?"]]
    ans = [["yes", "no", "red"], ["no", "no", "no"] + ["green"], ["no", "blue"]]
    w = answer_balance_weights(qs, ans)
    assert [len(x) for x in w] == [3, 4, 3 - 1]
    mass: dict[tuple[str, str], float] = {}
    for rec_q, rec_a, rec_w in zip(qs, ans, w):
        for q, a, x in zip(rec_q, rec_a, rec_w):
            key = ("yn" if q.startswith("is") else "open", a if q.startswith("is") else "any")
            mass[key] = mass.get(key, 0.0) + x
    # each pattern keeps its question count (6 yes/no, 3 open), split evenly over its answers
    assert mass[("yn", "yes")] == pytest.approx(3.0) and mass[("yn", "no")] == pytest.approx(3.0)
    assert mass[("open", "any")] == pytest.approx(3.0)
    assert w[0][2] == pytest.approx(1.0)  # open answers are each seen once: weight 3 / (3 * 1)


def test_balance_answers_draws_a_skewed_patterns_answers_evenly(tok):
    from unimodal.config import ConfigError
    from unimodal.tasks.mixture import TaskSpec

    n = 400  # every record: one "yes" and four "no" questions of one pattern (the colour named differs)
    cols = ["red", "green", "blue", "gray", "teal"]
    questions = [[f"is there a {c} shape?" for c in cols] for _ in range(n)]
    answers = [["yes" if j == i % 5 else "no" for j in range(5)] for i in range(n)]
    bank = ImageBank(torch.zeros(n, V.grid**2, V.token_dim), {"questions": questions, "answers": answers}, name="skewed")

    def yes_share(balance: bool) -> float:
        task = get_task_class("vqa")(V, tok)
        task.balance_answers = balance
        assert TaskSpec.from_dict({"name": "vqa", "dataset": "x", "balance_answers": balance}).balance_answers is balance
        rng = np.random.default_rng(0)
        got = [task.pair(bank, i % n, rng)[1] for i in range(4000)]
        return got.count("yes") / len(got)

    assert abs(yes_share(False) - 0.2) < 0.03  # uniform over a record's pairs: the data's 1 in 5
    assert abs(yes_share(True) - 0.5) < 0.03   # balanced: a model cannot answer from the question alone
    # a malformed record raises when drawn, not while the weights of the others are built
    bad = ImageBank(bank.tokens[:2], {"questions": [questions[0], None], "answers": [answers[0], ["no"]]}, name="bad")
    task = get_task_class("vqa")(V, tok)
    task.balance_answers = True
    assert task.pair(bad, 0, np.random.default_rng(0))[0] in questions[0]
    with pytest.raises(RecordError, match="record 1"):
        task.pair(bad, 1, np.random.default_rng(0))
    # per-question records have nothing to balance: one clear error, not a silent no-op
    flat = ImageBank(bank.tokens[:1], {"question": ["is there a red shape?"], "answer": ["no"]}, name="flat")
    with pytest.raises(ConfigError, match="balance_answers needs per-image records"):
        task.pair(flat, 0, np.random.default_rng(0))


def test_complementary_yes_no_balances_every_template_and_keeps_answers_true(tok, easyvqa):
    """complementary_yes_no: on the real easy-VQA test records every drawn yes/no turn is 50/50 per
    template (the data's is ~88/12 for colours), and every answer stays true of the image, negated
    templates included: checked against the record's colour and shape as easy-VQA's own question
    parser (`question_facts`, `infer_attributes`) reads them."""
    from unimodal.config import ConfigError
    from unimodal.data.easyvqa import infer_attributes, question_facts
    from unimodal.tasks.mixture import TaskSpec
    from unimodal.tasks.understanding import answer_groups, question_pattern

    qs, ans = list(easyvqa["questions"]), list(easyvqa["answers"])
    groups = set(answer_groups(qs, ans).values())
    assert {len(g) for g in groups} == {3, 8} and any("circle" in g for g in groups) and any("red" in g for g in groups)
    n = 300
    bank = ImageBank(torch.zeros(n, V.grid**2, V.token_dim), {"questions": qs[:n], "answers": ans[:n]}, name="easyvqa")
    task = get_task_class("vqa")(V, tok)
    task.qa_per_example = 4
    assert TaskSpec.from_dict({"name": "vqa", "dataset": "x", "complementary_yes_no": True}).complementary_yes_no
    words = {w for rec in ans for a in rec for w in a.split()}
    for on in (False, True):
        task.complementary_yes_no = on
        rng = np.random.default_rng(0)
        yes: dict[str, list[bool]] = {}
        for i in range(n):
            color, shape = infer_attributes(qs[i], ans[i])
            for q, a in task.pairs(bank, i, rng):
                if a in ("yes", "no"):
                    facts = question_facts(q, a)
                    assert facts, q
                    for attr, value, holds in facts:  # the (possibly rewritten) answer is true of the image
                        truth = {"color": color, "shape": shape}[attr]
                        assert truth is None or (value == truth) == holds, (i, q, a, color, shape)
                    yes.setdefault(question_pattern(q, words), []).append(a == "yes")
        share = {p: np.mean(v) for p, v in yes.items() if len(v) >= 40}
        assert len(share) >= 8
        if on:
            assert all(abs(s - 0.5) < 0.2 for s in share.values()), share
        else:  # the data's own skew: some template is at least 80/20 (what the option removes)
            assert max(abs(s - 0.5) for s in share.values()) > 0.3, share
    # open turns, and records that state no value of the named group, are kept as drawn
    recs_q = [["what shape is present?", "what color is the shape?"], ["what shape is present?", "what color is the shape?"],
              ["what color is the shape?", "is there a circle?"], ["what color is the shape?", "what color is the shape?"]]
    recs_a = [["circle", "red"], ["rectangle", "blue"], ["red", "no"], ["red", "blue"]]
    odd = ImageBank(torch.zeros(4, V.grid**2, V.token_dim), {"questions": recs_q, "answers": recs_a}, name="odd")
    task.complementary_yes_no = True
    for seed in range(5):  # record 2 states no shape: its shape question stays as drawn
        assert dict(task.pairs(odd, 2, np.random.default_rng(seed))) == {"what color is the shape?": "red",
                                                                         "is there a circle?": "no"}
    # two values of one group in a record's answers: one clear error naming the record
    with pytest.raises(RecordError, match="odd record 3: its answers name two values of one group"):
        task.pairs(odd, 3, np.random.default_rng(0))
    flat = ImageBank(bank.tokens[:1], {"question": ["is there a red shape?"], "answer": ["no"]}, name="flat")
    with pytest.raises(ConfigError, match="complementary_yes_no needs per-image records"):
        task.pair(flat, 0, np.random.default_rng(0))


def test_prompt_loss_off_leaves_only_the_diffusion_loss_of_text_to_image(tok, bank):
    mix = build_mixture([{"name": "text_to_image", "dataset": "easyvqa", "split": "test", "prompt_loss": False,
                          "drop_prob": 0.0}], V, tok)
    task, _, _ = mix.entries[0]
    i = next(i for i in range(len(bank)) if bank.columns["caption"][i])
    ex = task.example(bank, i, np.random.default_rng(0))
    assert targets_of(ex) == [] and ex.layout.num_noisy_blocks == 4
    cap = bank.columns["caption"][i]
    assert tuple(ex.layout.text_ids[ex.layout.modality == TEXT].tolist()) == (tok.bos_id, *tok.encode(cap), tok.boi_id)


def test_prompt_loss_share_makes_the_caption_a_target_in_that_share_of_examples(tok, bank):
    """prompt_loss: p puts the caption's language-model targets in a share p of the examples (and the whole
    caption each time: the same targets as prompt_loss true); true and false draw no extra random numbers."""
    i = next(i for i in range(len(bank)) if bank.columns["caption"][i])

    def task(p):
        return build_mixture([{"name": "text_to_image", "dataset": "easyvqa", "split": "test", "prompt_loss": p,
                               "drop_prob": 0.0}], V, tok).entries[0][0]

    full = targets_of(task(True).example(bank, i, np.random.default_rng(0)))
    assert full
    rng, quarter = np.random.default_rng(1), task(0.25)
    got = [targets_of(quarter.example(bank, i, rng)) for _ in range(2000)]
    assert all(t in ([], full) for t in got)
    assert abs(np.mean([t == full for t in got]) - 0.25) < 0.03
    for p, want in ((True, full), (1.0, full), (False, []), (0.0, [])):
        rng = np.random.default_rng(2)
        assert targets_of(task(p).example(bank, i, rng)) == want
        ref = np.random.default_rng(2)
        ref.random()  # the prompt-dropout draw, the only one
        assert rng.random() == ref.random()


def test_class_to_image_label_dropout_rate():
    bank = ImageBank(torch.zeros(10, 16, V.token_dim), {"label": list(range(10))}, "fake")
    task = get_task_class("class_to_image")(V, None, drop_prob=0.25)
    rng = np.random.default_rng(0)
    labels = [task.example(bank, i % 10, rng).class_label for i in range(2000)]
    assert abs(np.mean([l == -1 for l in labels]) - 0.25) < 0.03
    assert all(l == i % 10 for i, l in enumerate(labels) if l != -1)


def test_bad_records_are_named():
    bank = ImageBank(torch.zeros(2, 16, V.token_dim), {"label": [1, "cat"]}, "fake")
    task = get_task_class("class_to_image")(V, None)
    with pytest.raises(RecordError, match="fake record 1"):
        task.example(bank, 1, np.random.default_rng(0))
    bank2 = ImageBank(torch.zeros(1, 16, V.token_dim), {"questions": [["q?"]], "answers": [[]]}, "fake2")
    with pytest.raises(RecordError, match="fake2 record 0"):
        get_task_class("vqa")(V, object()).example(bank2, 0, np.random.default_rng(0))


def test_mixture_is_deterministic_per_step_and_rank_and_every_task_learns(tok, monkeypatch, bank):
    import unimodal.tasks.mixture as mixture

    monkeypatch.setattr(mixture, "load_bank", lambda *a, **k: bank)
    specs = [
        {"name": "text_to_image", "dataset": "easyvqa", "weight": 2.0},
        {"name": "captioning", "dataset": "easyvqa"},
        {"name": "vqa", "dataset": "easyvqa"},
    ]
    mix = build_mixture(specs, V, tok, seed=3)
    a, b = mix.batch(5, 0, 2, 8), mix.batch(5, 0, 2, 8)
    assert torch.equal(a.visual, b.visual) and torch.equal(a.text_ids, b.text_ids)
    assert not torch.equal(mix.batch(5, 1, 2, 8).text_ids, a.text_ids)
    torch.manual_seed(0)
    m = create_model("tiny", token_dim=V.token_dim, vocab_size=tok.vocab_size)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    sched = NoiseSchedule()
    # a fixed held-out batch per task, scored with fixed noise: every task's own loss must fall
    singles = {t.name: TaskMixture([(t, 1.0, bank)], V.token_dim, seed=99).batch(0, 0, 1, 16) for t in mix.tasks}

    def task_losses():
        with torch.no_grad():
            return {n: compute_loss(m, b, sched, generator=torch.Generator().manual_seed(1))["loss"].item()
                    for n, b in singles.items()}

    before = task_losses()
    g = torch.Generator().manual_seed(0)
    for step in range(60):
        p = compute_loss(m, mix.batch(step, 0, 1, 16), sched, generator=g)
        opt.zero_grad()
        p["loss"].backward()
        opt.step()
    after = task_losses()
    for name in singles:
        assert after[name] < 0.8 * before[name], (name, before[name], after[name])


def test_packing_to_a_token_budget_keeps_documents_apart(tok, monkeypatch, bank):
    import unimodal.tasks.mixture as mixture

    monkeypatch.setattr(mixture, "load_bank", lambda *a, **k: bank)
    mix = build_mixture([{"name": "vqa", "dataset": "easyvqa"}, {"name": "captioning", "dataset": "easyvqa"}], V, tok)
    plain = mix.batch(0, 0, 1, 12)
    mix.pack_tokens = 96
    packed = mix.batch(0, 0, 1, 12)
    assert packed.shape[1] == 96 and packed.shape[0] < 12  # several documents per row
    assert (packed.text_target != IGNORE).sum() == (plain.text_target != IGNORE).sum()  # same examples, same targets
    docs = [set(r.tolist()) - {-1} for r in packed.doc]
    assert sum(len(d) for d in docs) == 12
    # each packed document gives the same outputs as its unpacked row
    torch.manual_seed(0)
    m = create_model("tiny", token_dim=V.token_dim, vocab_size=tok.vocab_size).eval()
    with torch.no_grad():
        lp, lq = m(packed).text_logits, m(plain).text_logits
    sel_p = packed.text_target != IGNORE
    sel_q = plain.text_target != IGNORE
    got = sorted(lp[sel_p].sum(-1).tolist())
    want = sorted(lq[sel_q].sum(-1).tolist())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_bad_records_are_skipped_and_counted_when_asked(tok):
    good = ImageBank(torch.zeros(3, 16, V.token_dim), {"label": [1, -5, 2]}, "fake")
    task = get_task_class("class_to_image")(V, None, drop_prob=0.0)
    mix = TaskMixture([(task, 1.0, good)], V.token_dim, skip_bad_records=True)
    b = mix.batch(0, 0, 1, 20)
    assert b.shape[0] == 20 and set(b.y[:, 0].tolist()) <= {1, 2}
    assert mix.bad_records == {("fake", 1)}
    strict = TaskMixture([(task, 1.0, good)], V.token_dim)
    with pytest.raises(RecordError, match="fake record 1"):
        for s in range(20):
            strict.batch(s, 0, 1, 4)


def test_label_out_of_the_models_range_is_named():
    bank = ImageBank(torch.zeros(2, 16, V.token_dim), {"label": [1, 12]}, "fake")
    task = get_task_class("class_to_image")(V, None, drop_prob=0.0)
    task.num_classes = 10
    assert task.example(bank, 0, np.random.default_rng(0)).class_label == 1
    with pytest.raises(RecordError, match="fake record 1: label 12 is out of range for a model of 10 classes"):
        task.example(bank, 1, np.random.default_rng(0))


def test_long_record_text_is_truncated_and_counted(tok, bank):
    """Audit finding 6: a 2 MB answer tried to allocate terabytes; now it is cut to max_text_tokens."""
    vqa = get_task_class("vqa")(V, tok, max_text_tokens=12)
    short = "what color is the shape"
    assert vqa.encode(short) == tok.encode(short) and vqa.truncated_texts == 0
    huge = "the shape is red " * 120_000  # ~2 MB
    with pytest.warns(UserWarning, match="max_text_tokens=12"):
        ids = vqa.encode(huge)
    assert ids == tok.encode(huge[:2000])[:12] and vqa.truncated_texts == 1
    long_bank = ImageBank(bank.tokens, {**bank.columns, "answers": [[huge] * len(q) for q in bank.columns["questions"]]}, bank.name)
    ex = vqa.example(long_bank, 0, np.random.default_rng(0))
    assert int((ex.layout.modality == TEXT).sum()) <= 2 * 12 + 8  # question and answer both bounded (+ specials)
    with pytest.raises(ValueError, match="max_text_tokens must be an integer >= 1"):
        get_task_class("vqa")(V, tok, max_text_tokens=0)


def test_mixture_weights_set_the_sampling_proportions(monkeypatch):
    """Weights 3 : 1 draw 75% / 25% of examples (4,000 draws: a binomial s.d. of 0.007, the margin 0.03)."""
    import unimodal.tasks.mixture as mixture

    banks = {name: ImageBank(torch.zeros(4, 16, V.token_dim), {"label": [lab] * 4}, name) for name, lab in (("a", 1), ("b", 2))}
    monkeypatch.setattr(mixture, "load_bank", lambda dataset, *a, **k: banks[dataset])
    specs = [{"name": "class_to_image", "dataset": "a", "weight": 3.0, "drop_prob": 0.0},
             {"name": "class_to_image", "dataset": "b", "weight": 1.0, "drop_prob": 0.0}]
    mix = build_mixture(specs, V, None, seed=0)
    labels = [ex.class_label for step in range(40) for ex in mix.examples(step, 0, 100)]
    assert set(labels) == {1, 2}
    assert abs(labels.count(1) / len(labels) - 0.75) < 0.03
    specs[1]["weight"] = 3.0  # equal weights: half and half
    labels = [ex.class_label for step in range(40) for ex in build_mixture(specs, V, None, seed=0).examples(step, 0, 100)]
    assert abs(labels.count(1) / len(labels) - 0.5) < 0.03


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ({"name": "vqa", "dataset": "easyvqa", "wieght": 2}, r"unknown task field 'wieght'.*Did you mean 'weight'"),
        ({"name": "vqa"}, r"a task entry needs 'dataset'"),
        ({"dataset": "easyvqa"}, r"a task entry needs 'name'"),
        ({"name": "vqa", "dataset": "easyvqa", "weight": 0}, r"task 'vqa': weight"),
        ({"name": "vqa", "dataset": "easyvqa", "weight": -1.0}, r"task 'vqa': weight"),
        ({"name": "vqa", "dataset": "easyvqa", "drop_prob": 1.0}, r"task 'vqa': drop_prob"),
        ({"name": "vqa", "dataset": "easyvqa", "prompt_loss": False}, r"prompt_loss applies only to text_to_image"),
        ({"name": "captioning", "dataset": "easyvqa", "qa_per_example": 2}, r"qa_per_example applies only to vqa"),
        ({"name": "vqa", "dataset": "easyvqa", "qa_per_example": 0}, r"qa_per_example"),
        ({"name": "vqa", "dataset": "easyvqa", "balance_answers": "yes"}, r"balance_answers must be true or false"),
        ({"name": "captioning", "dataset": "easyvqa", "balance_answers": True}, r"balance_answers applies only to vqa"),
        ({"name": "vqa", "dataset": "easyvqa", "complementary_yes_no": 1}, r"complementary_yes_no must be true or false"),
        ({"name": "text_to_image", "dataset": "easyvqa", "complementary_yes_no": True},
         r"complementary_yes_no applies only to vqa"),
        ({"name": "text_to_image", "dataset": "easyvqa", "prompt_loss": "no"}, r"prompt_loss \(true, false or a share in \[0, 1\]\)"),
        ({"name": "text_to_image", "dataset": "easyvqa", "prompt_loss": 1.5}, r"prompt_loss .* in \[0, 1\], got 1.5"),
    ],
)
def test_task_spec_errors_name_the_field(spec, pattern):
    from unimodal.config import ConfigError
    from unimodal.tasks.mixture import TaskSpec

    with pytest.raises(ConfigError, match=pattern):
        TaskSpec.from_dict(spec)


@torch.no_grad()
def test_greedy_vqa_and_captions_equal_a_step_by_step_argmax(tok, bank):
    """predict() in a batch equals, per image, the argmax of a full forward pass re-run after every token
    (no cache, batch 1), stopping at <eos> or max_new_tokens."""
    from model_helpers import randomize_

    from unimodal.batch import Example, collate
    from unimodal.layout import Layout, Text

    torch.manual_seed(0)
    m = randomize_(create_model("tiny", token_dim=V.token_dim, vocab_size=tok.vocab_size), std=0.05).eval()
    vqa, cap = get_task_class("vqa")(V, tok), get_task_class("captioning")(V, tok)
    questions = ["what color is the shape?", "is there a circle?", "what shape is it?"]

    def by_hand(task, image, question, max_new):
        ids: list[int] = []
        while len(ids) < max_new:
            segs = task.context(question) + ([Text(ids, loss=False)] if ids else [])
            logits = m(collate([Example(Layout(segs), image)], V.token_dim)).text_logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == tok.eos_id:
                break
            ids.append(nxt)
        return tok.decode(ids).strip()

    images = bank.tokens[:3]
    got = vqa.predict(m, images, questions, max_new_tokens=5, batch_size=2)  # 2 batches: a full and a partial one
    assert got == [by_hand(vqa, images[i], q, 5) for i, q in enumerate(questions)]
    assert cap.predict(m, images, max_new_tokens=6) == [by_hand(cap, images[i], None, 6) for i in range(3)]
    assert len(set(got)) > 1 or len(set(cap.predict(m, images, max_new_tokens=6))) > 1  # the inputs matter
