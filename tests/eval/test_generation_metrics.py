import numpy as np
import pytest
import scipy.linalg
import torch

from unimodal.eval.metrics.fid import frechet_distance, gaussian_stats
from unimodal.eval.metrics.inception_score import inception_score
from unimodal.eval.metrics.precision_recall import precision_recall


def test_fid_equals_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))  # = |Δμ|² + Σ(√v1 − √v2)²
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-8)


def _reference_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Independent float64 route: tr((Σ1 Σ2)^½) = Σ √eig(Σ1^½ Σ2 Σ1^½), all symmetric (scipy.linalg.eigh)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = scipy.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(scipy.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def test_fid_matches_float64_scipy_reference_on_full_covariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12))
    y = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12)) + 0.5
    fid = frechet_distance(*gaussian_stats(x.astype(np.float32)), *gaussian_stats(y.astype(np.float32)))
    assert fid == pytest.approx(_reference_fid(x, y), rel=1e-5)


def test_precision_recall_identical_sets_and_far_apart_sets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)
    p, r = precision_recall(x, x + 100.0, k=3)
    assert p == 0.0 and r == 0.0


def test_precision_recall_sees_mode_dropping():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 20])  # two modes
    fake = rng.normal(size=(200, 2))  # only the first mode: faithful but not diverse
    p, r = precision_recall(real, fake, k=3)
    assert p > 0.9 and 0.35 < r < 0.6


def test_inception_score_extremes():
    K = 10
    confident = torch.full((100, K), -1e4)
    confident[torch.arange(100), torch.arange(100) % K] = 0.0  # one-hot, balanced over K classes
    assert inception_score(confident, splits=1)[0] == pytest.approx(K, rel=1e-6)
    assert inception_score(torch.zeros(100, K), splits=5) == pytest.approx((1.0, 0.0))


class _FixedExtractor:
    """Returns the given logits (and features) whatever the images: the metric's arithmetic alone is tested."""

    name = "fixed"

    def __init__(self, logits: dict, feats=None):
        self.logits, self.feats, self.calls = logits, feats, 0

    def __call__(self, images):
        self.calls += 1
        feats = self.feats if self.feats is not None else np.asarray(images).reshape(len(images), -1)
        return feats, self.logits


def test_class_accuracy_by_hand():
    from unimodal.eval.metrics.conditional import class_accuracy
    from unimodal.eval.samples import SampleSet

    onehot = lambda idx, n: np.eye(n)[idx]  # noqa: E731
    logits = {"color": onehot([0, 1, 2, 1], 3), "shape": onehot([2, 2, 0, 1], 3)}
    targets = {"color": np.array([0, 1, 0, 1]), "shape": np.array([2, 0, 0, 1])}
    s = SampleSet(torch.zeros(4, 3, 2, 2), _FixedExtractor(logits), targets=targets)
    # colour right on 0, 1, 3; shape right on 0, 2, 3; both right on 0 and 3
    assert class_accuracy(s) == {"": 0.5, "color": 0.75, "shape": 0.75}
    one = SampleSet(torch.zeros(4, 3, 2, 2), _FixedExtractor({"label": onehot([1, 1, 0, 2], 3)}),
                    targets={"label": np.array([1, 0, 0, 2])})
    assert class_accuracy(one) == 0.75
    with pytest.raises(ValueError, match="class_accuracy needs requested classes"):
        class_accuracy(SampleSet(torch.zeros(1, 3, 2, 2), _FixedExtractor({})))


def test_clip_score_is_the_mean_of_the_per_sample_scores():
    from unimodal.eval.metrics.conditional import clip_score
    from unimodal.eval.samples import SampleSet

    class Clip:
        def score(self, images, captions):
            assert captions == ["a red circle", "a blue square"]
            return np.array([10.0, 30.0])

    s = SampleSet(torch.zeros(2, 3, 2, 2), _FixedExtractor({}), captions=["a red circle", "a blue square"], clip=Clip())
    assert clip_score(s) == 20.0
    with pytest.raises(ValueError, match="clip_score needs captions and a CLIP model"):
        clip_score(SampleSet(torch.zeros(2, 3, 2, 2), _FixedExtractor({})))


def test_scoring_maps_non_finite_values_to_none():
    """A NaN or inf metric is reported as null (JSON has no NaN), each key of a dict result on its own."""
    import types

    from unimodal.eval.context import Evidence
    from unimodal.eval.harness import score
    from unimodal.eval.samples import SampleSet

    class Clip:
        def __init__(self, v):
            self.v = v

        def score(self, images, captions):
            return np.array(self.v)

    task = types.SimpleNamespace(metrics=["clip_score", "class_accuracy"], metric_options={})
    logits = {"color": np.eye(2)[[0, 1]], "shape": np.eye(2)[[0, 0]]}
    for v, want in (([np.nan, 1.0], None), ([np.inf, 1.0], None), ([10.0, 30.0], 20.0)):
        s = SampleSet(torch.zeros(2, 3, 2, 2), _FixedExtractor(logits), captions=["a", "b"], clip=Clip(v),
                      targets={"color": np.array([0, 1]), "shape": np.array([0, 1])})
        got = score(task, Evidence(s, {}))
        assert got == {"clip_score": want, "class_accuracy": 0.5, "class_accuracy/color": 1.0, "class_accuracy/shape": 0.5}


def test_reference_features_are_computed_once_and_keyed(tmp_path):
    import datasets
    from PIL import Image

    from unimodal.eval.reference import reference_features

    images = [Image.fromarray(np.full((4, 4, 3), i * 40, dtype=np.uint8)) for i in range(5)]
    ds = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    feats = np.arange(10.0).reshape(5, 2) ** 1.5
    ex = _FixedExtractor({}, feats=feats)
    key = {"dataset": "toy", "split": "test", "seed": 0}
    f1, (mu, sigma) = reference_features(ds, ex, 4, 3, key, cache_dir=tmp_path)
    np.testing.assert_array_equal(f1, feats)
    np.testing.assert_allclose(mu, feats.mean(0))
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False))  # by numpy, not gaussian_stats
    f2, _ = reference_features(ds, ex, 4, 3, key, cache_dir=tmp_path)
    assert ex.calls == 1 and np.array_equal(f1, f2)  # the second call reads the cache
    assert len(list(tmp_path.glob("toy-test-fixed-*.npz"))) == 1
    reference_features(ds, ex, 4, 3, {**key, "seed": 1}, cache_dir=tmp_path)  # another subset: another file
    reference_features(ds, ex, 8, 3, key, cache_dir=tmp_path)  # another image space: another file
    assert ex.calls == 3 and len(list(tmp_path.glob("toy-test-fixed-*.npz"))) == 3
