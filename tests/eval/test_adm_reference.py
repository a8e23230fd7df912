"""`reference: {npz: FILE}`: a class→image task scored against an ADM evaluator reference batch
(`arr_0` uint8 NHWC images, optional precomputed `mu`/`sigma`) instead of the dataset split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unimodal.eval import run_eval
from unimodal.eval.errors import EvalError
from unimodal.eval.metrics.fid import gaussian_stats
from unimodal.eval.provenance import array_sha256
from unimodal.eval.reference import _npz_images, npz_reference


class Pixels:
    """A stand-in extractor: the flattened pixels are the features (8x8 gray: 64-d)."""

    name = "pixels"

    def __init__(self):
        self.calls = 0

    def __call__(self, images: torch.Tensor):
        self.calls += 1
        return images.flatten(1).numpy().astype(np.float64), {}


def adm_batch(n: int = 20, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)  # NHWC RGB, as ADM's


def spd(d: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    a = g.standard_normal((d, d))
    return g.standard_normal(d), a @ a.T / d + np.eye(d)


def test_the_npz_mu_sigma_are_used_and_arr_0_only_when_needed(tmp_path):
    mu, sigma = spd(64)
    path = tmp_path / "VIRTUAL_tiny_labeled.npz"
    np.savez(path, arr_0=adm_batch(), mu=mu, sigma=sigma)
    ex = Pixels()
    feats, (m, s), info = npz_reference(path, ex, 8, 1, need_features=False, cache_dir=tmp_path / "cache")
    assert feats is None and ex.calls == 0  # FID alone: the file's statistics, no image is read
    assert np.array_equal(m, mu) and np.array_equal(s, sigma) and info["stats"] == "npz mu/sigma" and info["num_images"] == 20

    feats, (m, s), _ = npz_reference(path, ex, 8, 1, need_features=True, cache_dir=tmp_path / "cache")
    assert feats.shape == (20, 64) and np.array_equal(m, mu) and np.array_equal(s, sigma)  # still the file's mu/sigma

    # 3-d statistics against 64-d features: one error naming the file and both sizes
    np.savez(tmp_path / "wrong.npz", arr_0=adm_batch(), mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(EvalError, match=r"wrong\.npz.*'mu' has 3 dimensions.*64"):
        npz_reference(tmp_path / "wrong.npz", ex, 8, 1, need_features=True, cache_dir=tmp_path / "cache")


def test_without_mu_sigma_the_statistics_come_from_arr_0_with_the_extractor(tmp_path):
    images = adm_batch()
    path = tmp_path / "images_only.npz"
    np.savez(path, arr_0=images)
    ex = Pixels()
    _, (m, s), info = npz_reference(path, ex, 8, 1, need_features=False, cache_dir=tmp_path / "cache")
    x = _npz_images(images, 8, 1)  # RGB uint8 -> gray in [-1, 1], as the model's inputs
    assert x.shape == (20, 1, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1
    want = gaussian_stats(ex(x)[0])
    assert np.allclose(m, want[0]) and np.allclose(s, want[1]) and info["stats"] == "computed from arr_0 with pixels"
    calls = ex.calls
    npz_reference(path, ex, 8, 1, need_features=False, cache_dir=tmp_path / "cache")
    assert ex.calls == calls  # cached


@pytest.mark.parametrize("case", ["missing", "not_npz", "no_arrays", "mu_alone", "float_images", "stats_only_pr"])
def test_a_missing_or_malformed_npz_is_one_error_naming_the_file_and_the_arrays(tmp_path, case):
    path = tmp_path / f"{case}.npz"
    if case == "not_npz":
        path.write_text("not a zip")
    elif case == "no_arrays":
        np.savez(path, images=adm_batch())
    elif case == "mu_alone":
        np.savez(path, arr_0=adm_batch(), mu=np.zeros(64))
    elif case == "float_images":
        np.savez(path, arr_0=adm_batch().astype(np.float32))
    elif case == "stats_only_pr":
        np.savez(path, mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(EvalError) as e:
        npz_reference(path, Pixels(), 8, 1, need_features=case == "stats_only_pr", cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "'arr_0'" in msg
    if case != "stats_only_pr":
        assert "'mu'" in msg and "'sigma'" in msg


def test_a_class_to_image_task_scores_against_the_npz(class_checkpoint, tmp_path):
    mu, sigma = spd(128)  # the digits domain CNN's 128-d features
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=adm_batch(12), mu=mu, sigma=sigma)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "a.yaml").write_text(
        "name: a_c2i\ninclude: fmnist_c2i\ndataset: digits\ngeneration: {steps: 2, batch_size: 6}\n"
        "extractor_options: {max_train: 200, epochs: 1, max_test: 50}\nmetrics: [fid, precision, recall]\n"
        f"reference: {{npz: {ref}}}\n"
    )
    res = run_eval(class_checkpoint, ["a_c2i"], None, limit=6, include_paths=[tasks], progress=False)
    t = res["tasks"]["a_c2i"]
    assert t["details"]["reference_stats_sha256"] == array_sha256(mu, sigma)  # the statistics used are the file's
    assert t["details"]["reference"]["stats"] == "npz mu/sigma" and t["details"]["num_reference"] == 12
    assert t["num_samples"] == 6 and all(t["metrics"][m] is not None for m in ("fid", "precision", "recall"))

    (tasks / "b.yaml").write_text(f"name: b_c2i\ninclude: a_c2i\nreference: {{npz: {tmp_path / 'absent.npz'}}}\n")
    with pytest.raises(EvalError, match=r"absent\.npz.* does not exist.*'arr_0'"):
        run_eval(class_checkpoint, ["b_c2i"], None, limit=6, include_paths=[tasks], progress=False)
