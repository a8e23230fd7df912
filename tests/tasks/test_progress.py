"""Progress samples of a training run: the page for class->image on digits, and a failing view."""

from __future__ import annotations

import pytest
import torch
from model_helpers import randomize_
from PIL import Image as PILImage

from unimodal.config import VisualConfig
from unimodal.model import create_model
from unimodal.tasks import ClassToImage, build_mixture
from unimodal.tasks.progress import ProgressSamples

V = VisualConfig(channels=1, image_size=8, patch_size=2, block_h=2, block_w=2)


class Broken(ClassToImage):
    name = "broken_view"

    def progress(self, *args, **kwargs):
        raise RuntimeError("boom")


def test_pages_show_every_task_and_survive_a_failing_view(tmp_path):
    mix = build_mixture([{"name": "class_to_image", "dataset": "digits"}], V, None, seed=0)
    mix.entries.append((Broken(V, None), 1.0, mix.entries[0][2]))
    mix.indices.append(mix.indices[0])
    model = randomize_(create_model("tiny", token_dim=V.token_dim, vocab_size=0, num_classes=10), std=0.02).eval()
    hook = ProgressSamples(mix, tmp_path, num=4)
    with pytest.warns(UserWarning, match="broken_view.*boom"):
        shown = hook(3, model)
    page = (shown / "samples.md").read_text()
    assert "## class_to_image (digits/train)" in page and "Class labels, left to right: [0, 1, 2, 3]" in page
    assert "## broken_view" in page and "RuntimeError: boom" in page
    assert PILImage.open(shown / "0_class_to_image.png").size == (2 + 4 * 10, 10 + 2)
    # the same step again replaces its folder; the samples are deterministic
    before = (shown / "0_class_to_image.png").read_bytes()
    with pytest.warns(UserWarning):
        again = hook(3, model)
    assert again == shown and (shown / "0_class_to_image.png").read_bytes() == before
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["step_0000003"]
    assert torch.is_grad_enabled()  # the hook's no_grad does not leak
