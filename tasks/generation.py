"""Generation task heads: class→image and text→image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from unimodal.batch import Example
from unimodal.diffusion.schedule import ScheduleConfig
from unimodal.generate import Generator, VisualSampling
from unimodal.layout import Layout, Text
from unimodal.media import save_image_grid

from .base import (
    ImageBank,
    RecordError,
    Task,
    decode_images,
    make_example,
    model_device,
    register_task,
)

if TYPE_CHECKING:
    from unimodal.model import ACDiT


@register_task
class ClassToImage(Task):
    """Class-conditional image generation; the label is dropped (null class) with `drop_prob`."""

    name = "class_to_image"
    needs_text = False
    needs_class = True

    def example(self, bank: ImageBank, index: int, rng: np.random.Generator) -> Example:
        return make_example([self.image_segment(noisy=True)], bank.tokens[index], self.class_label(bank, index, rng))

    @torch.no_grad()
    def generate_tokens(self, model, labels: list[int], sampling: VisualSampling, seed: int = 0) -> torch.Tensor:
        """Visual tokens (N, T, C) in natural raster order for the given class labels."""
        g = Generator(model, len(labels), seed=seed)
        return g.generate_visual(self.image_segment(False), sampling, class_labels=torch.tensor(labels)).cpu()

    def generate(self, model, labels: list[int], sampling: VisualSampling, seed: int = 0) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] for the given class labels (latent tokens decoded by the VAE)."""
        return decode_images(self.generate_tokens(model, labels, sampling, seed), self.visual, model_device(model))

    def progress(self, model: ACDiT, bank: ImageBank, indices: list[int], schedule: ScheduleConfig, out: Path, stem: str) -> list[str]:
        """A grid of samples for classes 0, 1, 2, ... (one per record picked), with the paper's sampling settings."""
        labels = [i % model.cfg.num_classes for i in range(len(indices))]
        tokens = self.generate_tokens(model, labels, VisualSampling.paper(schedule=schedule))
        save_image_grid(decode_images(tokens, self.visual, model_device(model)), out / f"{stem}.png", nrow=len(labels))
        return [f"![{self.name}]({stem}.png)", "", f"Class labels, left to right: {labels}"]


@register_task
class TextToImage(Task):
    """Caption → image; the caption is dropped (prompt `<bos> <boi>`) with `drop_prob` for guidance.

    `prompt_loss` (the mixture's task field, default True as in Transfusion): whether the caption
    is also a language-model target. Off, the text loss is spent on the understanding heads only:
    an unconditional caption prior is worth nothing to captioning, which reads the image. A number
    p in (0, 1): the caption is a target in a share p of the examples, drawn from the example's rng
    (the prompt loss at weight p in expectation; true and false draw nothing, so their data stream
    is unchanged).
    """

    name = "text_to_image"
    prompt_loss = True

    def accepts(self, bank: ImageBank, index: int) -> bool:
        return bool(bank.columns.get("caption", [""] * (index + 1))[index])

    def prompt(self, caption: str | None) -> list[int]:
        body = self.encode(caption) if caption else []
        return [self.tok.bos_id, *body, self.tok.boi_id]

    def example(self, bank: ImageBank, index: int, rng: np.random.Generator) -> Example:
        caption = bank.column("caption", index)
        if not caption:
            raise RecordError(f"{bank.name} record {index} has an empty 'caption'")
        prompt = self.prompt(None if rng.random() < self.drop_prob else caption)
        p = self.prompt_loss
        loss = p if isinstance(p, bool) else bool(p >= 1.0 or (p > 0.0 and rng.random() < p))
        return make_example([Text(prompt, loss=loss), self.image_segment(noisy=True)], bank.tokens[index])

    @torch.no_grad()
    def generate_tokens(self, model, captions: list[str], sampling: VisualSampling, seed: int = 0) -> torch.Tensor:
        """Visual tokens (N, T, C) for the captions (CFG's unconditional branch drops the caption)."""
        n = len(captions)
        g = Generator(model, n, seed=seed)
        cond = [Example(Layout([Text(self.prompt(c))])) for c in captions]
        uncond = [Example(Layout([Text(self.prompt(None))]))] * n if sampling.cfg_scale != 1.0 else None
        g.prefill(cond, uncond=uncond)
        return g.generate_visual(self.image_segment(False), sampling).cpu()

    def generate(self, model, captions: list[str], sampling: VisualSampling, seed: int = 0) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] for the captions (latent tokens decoded by the VAE)."""
        return decode_images(self.generate_tokens(model, captions, sampling, seed), self.visual, model_device(model))

    def progress(self, model: ACDiT, bank: ImageBank, indices: list[int], schedule: ScheduleConfig, out: Path, stem: str) -> list[str]:
        """A grid of samples for the captions of the records picked, with the paper's sampling settings."""
        captions = [str(bank.column("caption", i)) for i in indices]
        tokens = self.generate_tokens(model, captions, VisualSampling.paper(schedule=schedule))
        save_image_grid(decode_images(tokens, self.visual, model_device(model)), out / f"{stem}.png", nrow=len(captions))
        return [f"![{self.name}]({stem}.png)", "", "Prompts, left to right:", "",
                *[f"{j}. {c}" for j, c in enumerate(captions, 1)]]
