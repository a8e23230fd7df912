"""TextTokenizer: fixed special ids, exact round trips, save/load, transformers parity."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from unimodal.tokenizers.text import MODEL_FILE, SPECIAL_IDS, TextTokenizer, load_transformers

COLORS = "red green blue yellow gray teal black brown".split()
SHAPES = "circle rectangle triangle".split()


def _corpus() -> list[str]:
    rnd = random.Random(0)
    lines = []
    for _ in range(600):
        c, s = rnd.choice(COLORS), rnd.choice(SHAPES)
        lines += [f"a {c} {s}", f"what color is the {s}?", f"is there a {c} shape in the image?",
                  f"The {s} on the left is {c}, and it is {rnd.randint(2, 99)} pixels wide."]
    return lines


HELD_OUT = [
    "a purple hexagon is next to the small red circle",  # unseen words
    "  two leading spaces, two  inner  spaces, a trailing one ",
    "tabs\tand\nnewlines\n",
    "Ünïcödé, 日本語 and an emoji 🙂 never seen in training",
    "<boi> literal special strings are plain text <eoi>",
    "",
]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(_corpus(), vocab_size=400)


def test_special_ids_are_fixed(tok: TextTokenizer) -> None:
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.boi_id, tok.eoi_id, tok.unk_id) == (0, 1, 2, 3, 4, 5)
    assert [tok.id_to_piece(i) for i in range(6)] == list(SPECIAL_IDS)
    assert tok.vocab_size == 400


def test_round_trip_is_exact_on_held_out_text(tok: TextTokenizer) -> None:
    for text in HELD_OUT:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.unk_id not in ids  # byte fallback covers unseen characters
    # the string "<boi>" in text never becomes the control token
    assert tok.boi_id not in tok.encode(HELD_OUT[4]) and tok.eoi_id not in tok.encode(HELD_OUT[4])


def test_batch_encode_and_specials(tok: TextTokenizer) -> None:
    batch = tok.encode(HELD_OUT)
    assert batch == [tok.encode(t) for t in HELD_OUT]
    ids = tok.encode("a red circle", add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert ids[1:-1] == tok.encode("a red circle")
    framed = [tok.pad_id, tok.bos_id, tok.boi_id, *ids[1:-1], tok.eoi_id, tok.eos_id, tok.pad_id]
    assert tok.decode(framed) == "a red circle"  # specials are skipped
    assert tok.decode(batch) == HELD_OUT
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])


def test_training_is_deterministic_and_reads_files(tok: TextTokenizer, tmp_path: Path) -> None:
    again = TextTokenizer.train(_corpus(), vocab_size=400)
    assert again.model_proto == tok.model_proto
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("\n".join(_corpus()) + "\n", encoding="utf-8")
    from_file = TextTokenizer.train([corpus_file], vocab_size=400)
    assert from_file.model_proto == tok.model_proto


def test_save_load_gives_identical_ids(tok: TextTokenizer, tmp_path: Path) -> None:
    tok.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [MODEL_FILE, "unimodal_tokenizer.json"]
    loaded = TextTokenizer.load(tmp_path / "tok")
    assert loaded == tok
    assert loaded.encode(HELD_OUT) == tok.encode(HELD_OUT)


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        TextTokenizer.load(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty" / MODEL_FILE)):
        TextTokenizer.load(tmp_path / "empty")


def test_vocab_size_errors_name_the_limit() -> None:
    small = ["hello world", "a red circle"]
    with pytest.raises(ValueError, match=r"vocab_size=5000 is too large .* most BPE can reach is \d+"):
        TextTokenizer.train(small, vocab_size=5000)
    with pytest.raises(ValueError, match=r"vocab_size=100 is too small.* at least \d+"):
        TextTokenizer.train(small, vocab_size=100)
    with pytest.raises(ValueError, match="empty corpus"):
        TextTokenizer.train(["", ""], vocab_size=300)


def test_transformers_tokenizer_gives_the_same_ids(tok: TextTokenizer, tmp_path: Path) -> None:
    hf = load_transformers(tok.save(tmp_path / "tok"))
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2, 5)
    assert hf.convert_tokens_to_ids(["<boi>", "<eoi>"]) == [3, 4]
    assert len(hf) == tok.vocab_size
    rnd = random.Random(1)
    alphabet = list("abcdefghij  xyz\n\t.,?Ü日🙂") + ["red ", "circle", " the "]
    texts = [t for t in HELD_OUT if "<boi>" not in t] + _corpus()[:50]
    texts += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 25))) for _ in range(300)]
    for text in texts:
        ids = tok.encode(text)
        assert hf.encode(text, add_special_tokens=False) == ids, repr(text)
        assert hf.decode(ids) == tok.decode(ids), repr(text)
    in_memory = tok.to_transformers()
    assert in_memory.encode(texts[0], add_special_tokens=False) == tok.encode(texts[0])


def test_auto_vocab_takes_the_most_the_corpus_supports_up_to_the_cap() -> None:
    words = ["red", "green", "blue", "teal", "circle", "rectangle", "triangle"]
    corpus = [f"a {c} {s}" for c in words[:4] for s in words[4:]] * 5
    with pytest.raises(ValueError, match=r"the most BPE can reach is (\d+)") as err:
        TextTokenizer.train(corpus, vocab_size=5000)
    reachable = int(err.value.args[0].split("can reach is ")[1].split(".")[0])
    auto = TextTokenizer.train_auto(iter(corpus))  # an iterator is read once and kept
    assert auto.vocab_size == reachable
    assert auto.encode("a teal triangle") == [auto.encode(w)[0] for w in ("a", "teal", "triangle")]  # whole words
    assert auto == TextTokenizer.train(corpus, vocab_size=reachable)  # deterministic: the same model
    assert TextTokenizer.train_auto(corpus, cap=reachable - 3).vocab_size == reachable - 3
