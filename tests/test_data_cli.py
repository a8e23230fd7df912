from unimodal.cli import main
from unimodal.tokenizers import TextTokenizer


def test_data_list_info_and_unknown_name(capsys):
    from unimodal.data import list_datasets

    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == list_datasets() and {"digits", "easyvqa", "fashion_mnist", "imagefolder", "records"} <= set(listed)
    assert main(["data", "info", "digits"]) == 0
    card = capsys.readouterr().out
    assert "digits" in card and ("1,797" in card or "1797" in card)
    assert main(["data", "info", "easyvq"]) == 2
    assert "Did you mean 'easyvqa'" in capsys.readouterr().err


def test_tokenizer_train_from_dataset_and_file(tmp_path):
    """Both --data inputs are read: the accented letters occur only in the file, so they are pieces of the
    vocabulary (é, è, û), not byte-fallback pieces <0xC3><0xA9> as they would be from easy-VQA alone."""
    f = tmp_path / "extra.txt"
    f.write_text("a purple hexagon\nwhat colour is it?\ncafé crème brûlée\n")
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--data", "easyvqa:test", str(f), "--vocab-size", "320", "--out", str(out)]) == 0
    tok = TextTokenizer.load(out)
    for text in ("what color is the shape?", "a purple hexagon", "café crème brûlée"):
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("what color is the shape?")) < len("what color is the shape?")  # merges were learned
    for ch in "éèû":
        pieces = [tok.id_to_piece(i) for i in tok.encode(ch)]
        assert ch in pieces and not any(p.startswith("<0x") for p in pieces), (ch, pieces)
    easy_only = tmp_path / "tok_easy"
    assert main(["tokenizer", "train", "--data", "easyvqa:test", "--vocab-size", "320", "--out", str(easy_only)]) == 0
    pieces = [TextTokenizer.load(easy_only).id_to_piece(i) for i in TextTokenizer.load(easy_only).encode("é")]
    assert "<0xC3>" in pieces and "<0xA9>" in pieces  # the control: without the file, é is two UTF-8 bytes
