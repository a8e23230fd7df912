"""In-domain CNN and CLIP (trained tiny here), and the Inception extractor from a local weight file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unimodal.eval import EvalError, build_extractor
from unimodal.eval.extractors.inception import resolve_weights


def test_domain_cnn_is_cached_and_deterministic(eval_cache):
    opts = {"max_train": 200, "epochs": 1, "max_test": 50, "seed": 1}
    a = build_extractor("domain", opts, dataset="digits", image_size=8, channels=1)
    cached = list((eval_cache / "eval" / "extractors").glob(f"{a.name}/*"))
    assert sorted(p.name for p in cached) == ["info.json", "model.safetensors"]
    assert not list((eval_cache / "eval" / "extractors").glob(".*tmp*"))  # the atomic write left no temp dir
    assert a.heads["label"] == [str(d) for d in range(10)] and 0 <= a.info["test_accuracy"]["label"] <= 1
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    f1, l1 = a(images)
    assert f1.shape == (6, 128) and l1["label"].shape == (6, 10)
    # a fresh training run with the same settings gives the same weights as the cached file
    from unimodal.eval.extractors.domain_cnn import DomainCNNConfig, train_domain_cnn

    net, _, info = train_domain_cnn(DomainCNNConfig.from_dict({"dataset": "digits", "image_size": 8, "channels": 1, **opts}))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, a.net.state_dict()[k], rtol=0, atol=0)
    assert info["test_accuracy"] == a.info["test_accuracy"]
    with pytest.raises(EvalError, match="unknown domain extractor option 'epoch'.*'epochs'"):
        build_extractor("domain", {"epoch": 1}, dataset="digits", image_size=8, channels=1)


def test_inception_needs_an_existing_weight_file(tmp_path, monkeypatch):
    monkeypatch.delenv("UNIMODAL_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(EvalError, match="needs a local weight file"):
        resolve_weights(None)
    with pytest.raises(EvalError, match="missing.pth' does not exist.*--inception-weights"):
        build_extractor("inception", {"weights": tmp_path / "missing.pth"}, dataset="x", image_size=32, channels=3)


def test_inception_runs_from_a_local_file_with_random_weights(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    # build the architecture once without weights, save random ones: the real loading path then reads that file
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
    torch.manual_seed(0)
    net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    monkeypatch.undo()
    torch.save(net.state_dict(), tmp_path / "random-inception.pth")
    ex = build_extractor("inception", {"weights": str(tmp_path / "random-inception.pth")}, dataset="x", image_size=32, channels=1)
    assert not ex.comparable and ex.info["standard_weights"] is False  # not the published file
    real, seen = ex.net, []

    def recording(x):
        seen.append(x.clone())
        return real(x)

    ex.net = recording
    grey = torch.tensor([-1.0, -0.5, 0.0, 1.0]).repeat(2, 1, 32, 8)  # (2, 1, 32, 32), columns cycle the 4 values
    feats, logits = ex(grey)
    assert feats.shape == (2, 2048) and logits["imagenet"].shape == (2, 1008) and np.isfinite(feats).all()
    # what the network gets: uint8 in [0, 255] (torch-fidelity's contract), the grey channel copied to RGB;
    # [-1, -0.5, 0, 1] -> (v + 1)·127.5 = [0, 63.75, 127.5, 255] -> rounded [0, 64, 128, 255] (half to even)
    (x,) = seen
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 32, 32)
    assert x[0, :, 0, :4].tolist() == [[0, 64, 128, 255]] * 3
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])


def test_only_the_published_inception_file_is_comparable(tmp_path, monkeypatch):
    """The FID is marked comparable with published numbers exactly when the weight file's SHA-256 starts
    with 6726825d (the digest in torch-fidelity's file name weights-inception-2015-12-05-6726825d.pth)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    import unimodal.eval.extractors.inception as inc

    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "__init__", lambda self, *a, **k: torch.nn.Module.__init__(self))
    w = tmp_path / "w.pth"
    w.write_bytes(b"weights")
    for digest, comparable in (("6726825d" + "0" * 56, True), ("6726825e" + "0" * 56, False), ("0" * 56 + "6726825d", False)):
        monkeypatch.setattr(inc, "sha256", lambda path, d=digest: d)
        ex = build_extractor("inception", {"weights": str(w)}, dataset="x", image_size=32, channels=3)
        assert ex.comparable is comparable and ex.info["standard_weights"] is comparable, digest
        assert ex.name == f"inception-v3-compat-{digest[:12]}"


def test_domain_clip_prefers_the_right_caption(eval_cache):
    from unimodal.eval.data import load_records, model_images
    from unimodal.eval.extractors.clip import build_clip

    # a one-layer CLIP and ~40 small steps tell colours apart (the shipped default: 2 layers, ~280 steps of 128)
    small = {"max_train": 300, "epochs": 4, "batch_size": 32, "width": 32, "embed_dim": 32, "layers": 1}
    clip = build_clip({"model": "domain", **small}, dataset="easyvqa", image_size=64, channels=3)
    ds = load_records("easyvqa", "test", limit=64, seed=0, keep=lambda c: [bool(x) for x in c["caption"]])
    images, captions = model_images(ds, 64, 3), list(ds["caption"])
    right = clip.score(images, captions)
    wrong = clip.score(images, captions[1:] + captions[:1])
    assert right.mean() > wrong.mean() + 5, (right.mean(), wrong.mean())
    assert (right >= 0).all() and (right <= 100).all()
