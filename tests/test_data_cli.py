from unimodal.cli import main
from unimodal.tokenizers import TextTokenizer


def test_data_list_info_and_unknown_name(capsys):
    assert main(["data", "list"]) == 0
    assert "easyvqa" in capsys.readouterr().out.split()
    assert main(["data", "info", "digits"]) == 0
    card = capsys.readouterr().out
    assert "digits" in card and ("1,797" in card or "1797" in card)
    assert main(["data", "info", "easyvq"]) == 2
    assert "did you mean 'easyvqa'" in capsys.readouterr().err


def test_tokenizer_train_from_dataset_and_file(tmp_path):
    f = tmp_path / "extra.txt"
    f.write_text("a purple hexagon\nwhat colour is it?\n")
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--data", "easyvqa:test", str(f), "--vocab-size", "320", "--out", str(out)]) == 0
    tok = TextTokenizer.load(out)
    for text in ("what color is the shape?", "a purple hexagon"):
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("what color is the shape?")) < len("what color is the shape?")  # merges were learned
