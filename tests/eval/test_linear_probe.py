import numpy as np
import torch

from unimodal.config import VisualConfig
from unimodal.eval.features import hidden_features
from unimodal.eval.metrics.linear_probe import linear_probe
from unimodal.model import create_model


def blobs(n: int, k: int, d: int, seed: int, sep: float = 10.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    y = np.arange(n) % k
    return centres[y] + rng.normal(size=(n, d)), y


def test_probe_separable_features_near_perfect():
    x, y = blobs(600, 4, 16, seed=0)
    fit = linear_probe(x[:400], y[:400], x[400:], y[400:])
    assert fit.accuracy >= 0.99 and fit.val_accuracy >= 0.99


def test_probe_shuffled_labels_at_chance():
    x, y = blobs(1200, 4, 16, seed=1)
    y_shuffled = np.random.default_rng(2).permutation(y)
    fit = linear_probe(x[:800], y_shuffled[:800], x[800:], y_shuffled[800:])
    assert abs(fit.accuracy - 0.25) < 0.08


def test_clean_stream_features_match_a_direct_forward_and_ignore_batching():
    torch.manual_seed(0)
    V = VisualConfig(channels=1, image_size=8, patch_size=2, block_h=2, block_w=2)
    model = create_model("tiny", token_dim=V.token_dim, vocab_size=0).eval()
    tokens = torch.randn(5, 16, V.token_dim)
    a = hidden_features(model, tokens, V, [0, 1, 2], batch_size=2)
    b = hidden_features(model, tokens, V, [0, 1, 2], batch_size=5)
    for k in (0, 1, 2):
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)
    # layer 0 is the input embedding, mean-pooled over the image's tokens
    emb = model.x_embedder(tokens).mean(1).detach().numpy()
    np.testing.assert_allclose(a[0], emb, atol=1e-5)
    per_token = hidden_features(model, tokens, V, [2], pool="tokens")
    assert per_token[2].shape == (5, 16 * model.cfg.d_model)
    noisy = hidden_features(model, tokens, V, [2], noisy_t=500)
    assert noisy[2].shape == a[2].shape and not np.allclose(noisy[2], a[2])
