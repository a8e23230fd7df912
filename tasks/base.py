"""Task heads: what an example is for a task, and the registry that names them.

A task turns a dataset record into an `Example` (layout + visual tokens + class
label); the loss is always the shared `compute_loss`, the layout's text targets
and noisy blocks say what is trained. Images are tokenised once per dataset into
an `ImageBank`, shared by every task that reads the same data.

Sequence formats (ids of `<bos> <boi> <eoi> <eos>` come from the tokenizer):

* class→image:  [image, noised]                          (class label via AdaLN)
* text→image:   <bos> caption <boi> [image, noised]      (caption dropped: <bos> <boi>)
* captioning:   <bos> <boi> [image, clean] <eoi> caption <eos>
* VQA:          <bos> <boi> [image, clean] <eoi> question answer <eos>   (loss on the answer)
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from unimodal.atomic import atomic_path
from unimodal.batch import Example
from unimodal.config import VisualConfig
from unimodal.errors import (
    ConfigError,
    RecordError,  # re-exported
    check_positive_int,
)
from unimodal.layout import Image, Layout, Text
from unimodal.registry import Registry
from unimodal.tokenizers.visual import patchify, unpatchify

TASKS: Registry[type["Task"]] = Registry("task", ConfigError)


def register_task(cls: type["Task"]) -> type["Task"]:
    """Class decorator: make a task available by its `name`."""
    return TASKS.add(cls.name, cls)


def list_tasks() -> list[str]:
    return sorted(TASKS)


def get_task_class(name: str) -> type["Task"]:
    """The task class registered as `name`; an unknown name lists the valid ones and close matches."""
    return TASKS.get(name)




@dataclass
class ImageBank:
    """All images of one dataset split as visual tokens, plus the raw records' other columns.

    tokens: (N, T, C) float tokens in natural raster order, pixels scaled to [-1, 1].
    columns: the dataset's non-image columns as Python lists.
    """

    tokens: torch.Tensor
    columns: dict[str, list[Any]]
    name: str = ""

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def column(self, key: str, index: int) -> Any:
        if key not in self.columns:
            raise RecordError(f"{self.name} record {index} has no field {key!r}; fields: {sorted(self.columns)}")
        return self.columns[key][index]


def images_to_tokens(images: torch.Tensor, visual: VisualConfig) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] → (N, T, token_dim) pixel-space tokens."""
    return patchify(images, visual.patch_size)


def tokens_to_images(tokens: torch.Tensor, visual: VisualConfig) -> torch.Tensor:
    """(N, T, token_dim) → (N, C, H, W), clamped to [-1, 1]."""
    g = visual.grid * visual.patch_size
    return unpatchify(tokens, g, g, visual.patch_size, visual.channels).clamp(-1, 1)


@functools.lru_cache(maxsize=4)
def _vae(vae_dir: str, device: str) -> Any:
    from unimodal.tokenizers.visual import VAETokenizer

    return VAETokenizer.from_pretrained(vae_dir, device=device)


def bank_vae(visual: VisualConfig, device: str | torch.device = "cpu") -> Any:
    """The local AutoencoderKL of a latent-space visual config (loaded once per process), checked against it."""
    vae = _vae(str(visual.vae_dir), str(device))
    if vae.latent_channels != visual.channels or vae.downsample_factor != visual.vae_downsample:
        raise ConfigError(
            f"VAE at {visual.vae_dir} has {vae.latent_channels} latent channels and downsamples {vae.downsample_factor}x, "
            f"but the visual config says channels={visual.channels}, vae_downsample={visual.vae_downsample}"
        )
    return vae


def decode_images(tokens: torch.Tensor, visual: VisualConfig, device: str | torch.device = "cpu") -> torch.Tensor:
    """Generated (N, T, token_dim) tokens → (N, 3|C, H, W) images in [-1, 1].

    Pixel-space tokens are unpatchified; latent tokens (`visual.vae_dir` set) are
    unpatchified to the latent grid and decoded by the local AutoencoderKL.
    """
    if visual.vae_dir is None:
        return tokens_to_images(tokens, visual)
    side = visual.grid * visual.patch_size
    latents = unpatchify(tokens.float(), side, side, visual.patch_size, visual.channels)
    return bank_vae(visual, device).decode(latents.to(device)).clamp(-1, 1).cpu()


def _latent_cache_file(dataset: Any, visual: VisualConfig) -> Path | None:
    """Where a dataset's latent tokens are cached: keyed by its fingerprint, the VAE's files and the visual config."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if not fingerprint:
        return None
    from unimodal.data.registry import cache_root

    h = hashlib.sha256(json.dumps({"dataset": fingerprint, "visual": asdict(visual)}, sort_keys=True).encode())
    root = Path(str(visual.vae_dir))
    for f in sorted(root.iterdir()):
        if f.is_file() and (f.name == "config.json" or f.name.startswith("diffusion_pytorch_model")):
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
    return cache_root() / "latents" / f"{h.hexdigest()[:20]}.safetensors"


COLUMN_ALIASES = {"caption": "text"}  # the `records` source names its captions `text`


def bank_columns(columns: dict[str, Any]) -> dict[str, Any]:
    """A dataset's columns as the heads read them: `caption` is also found under `text` (the `records` source)."""
    for column, alias in COLUMN_ALIASES.items():
        if column not in columns and alias in columns:
            columns[column] = columns[alias]
    return columns


def build_image_bank(dataset: Any, visual: VisualConfig, name: str = "", batch: int = 512, vae_batch: int = 64) -> ImageBank:
    """Tokenise every image of a `datasets.Dataset` (column `image`).

    Pixel path: images are converted to `visual.channels` channels and to
    `visual.image_size` by `unimodal.data.transforms.fit_image` (kept, zero-padded when a
    smaller square, e.g. Fashion-MNIST 28 → 32, else resized on the shorter side and
    centre-cropped).
    Latent path (`visual.vae_dir`): RGB images at `visual.image_size` are encoded by
    the local AutoencoderKL (posterior mean, scaled) and the latents patchified. A
    dataset is encoded once: its latent tokens are cached under
    `<cache>/latents/` (keyed by the dataset's fingerprint, the VAE's files and the
    visual config) and written by atomic rename.
    """
    from unimodal.data.transforms import fit_image, to_tensor_images

    if "image" not in dataset.column_names:
        raise RecordError(f"dataset {name!r} has no 'image' column; columns: {dataset.column_names}")
    cols = bank_columns({c: dataset[c] for c in dataset.column_names if c != "image"})
    vae = bank_vae(visual) if visual.vae_dir else None
    cache = _latent_cache_file(dataset, visual) if vae is not None else None
    if cache is not None and cache.is_file():
        from safetensors.torch import load_file

        return ImageBank(load_file(cache)["tokens"], cols, name)
    out = []
    for start in range(0, len(dataset), batch):
        channels = 3 if vae is not None else visual.channels
        imgs = [fit_image(im, visual.image_size, channels) for im in dataset[start : start + batch]["image"]]
        x = to_tensor_images(imgs, channels=channels)
        if vae is not None:
            x = torch.cat([vae.encode(x[i : i + vae_batch]).float().cpu() for i in range(0, len(x), vae_batch)])
        out.append(images_to_tokens(x, visual))
    tokens = torch.cat(out)
    if cache is not None:
        from safetensors.torch import save_file

        with atomic_path(cache) as tmp:
            save_file({"tokens": tokens.contiguous()}, str(tmp))
    return ImageBank(tokens, cols, name)


class Task:
    """Base class of a task head.

    Args:
        visual: token grid and block shape of images.
        tokenizer: the text tokenizer (TextTokenizer) for tasks with text; may be None otherwise.
        drop_prob: probability of dropping the condition (label / prompt) for guidance.
        max_text_tokens: longest text (caption, question, answer) a record may give, in
            tokens. A longer one is truncated to this length and counted in
            ``truncated_texts`` (warned once per task), so a 2 MB answer cannot blow up a batch.
    """

    name: ClassVar[str] = ""
    needs_text: ClassVar[bool] = True
    needs_class: ClassVar[bool] = False

    def __init__(self, visual: VisualConfig, tokenizer: Any = None, drop_prob: float = 0.1, max_text_tokens: int = 256):
        if self.needs_text and tokenizer is None:
            raise ConfigError(f"task {self.name!r} needs a text tokenizer")
        if not (isinstance(drop_prob, (int, float)) and 0.0 <= drop_prob < 1.0):
            raise ConfigError(f"drop_prob={drop_prob} is invalid: must be in [0, 1)")
        check_positive_int(f"task {self.name!r}: max_text_tokens", max_text_tokens)
        self.visual, self.tok, self.drop_prob = visual, tokenizer, drop_prob
        self.max_text_tokens, self.truncated_texts = max_text_tokens, 0

    # --- formats shared by training and prediction -----------------------------------------
    def image_segment(self, noisy: bool) -> Image:
        g, v = self.visual.grid, self.visual
        return Image(g, g, v.block_h, v.block_w, noisy=noisy)

    def accepts(self, bank: ImageBank, index: int) -> bool:
        """Whether record `index` can train this task (e.g. it has a caption)."""
        return True

    def example(self, bank: ImageBank, index: int, rng: np.random.Generator) -> Example:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Token ids of a record's text, cut to ``max_text_tokens`` (each cut counted in ``truncated_texts``)."""
        limit = self.max_text_tokens
        ids = self.tok.encode(text[: 64 * limit])  # a piece is at most 16 chars: the cut keeps >= limit tokens and bounds the work
        if len(ids) > limit or len(text) > 64 * limit:
            if self.truncated_texts == 0:
                warnings.warn(f"task {self.name!r}: a record's text is longer than max_text_tokens={limit}; "
                              "truncating (counted in truncated_texts)", stacklevel=2)
            self.truncated_texts += 1
            ids = ids[:limit]
        return ids

    def progress(self, model: Any, bank: ImageBank, indices: list[int], schedule: Any, out: Path, stem: str) -> list[str]:
        """Show what the model makes of records `indices` now (a training run's progress samples).

        Writes files under `out` named from `stem` and returns the Markdown lines that present
        them. The base class shows nothing: a head without a progress view is left out.

        Args:
            model: eval-mode model (the run's EMA weights).
            schedule: the run's `ScheduleConfig` (generation samples with it).
        """
        return []

    num_classes: int | None = None  # set from the model config by the mixture: labels are checked against it

    def class_label(self, bank: ImageBank, index: int, rng: np.random.Generator) -> int:
        """The record's `label`, checked, or -1 (the null class) with probability `drop_prob`."""
        label = bank.column("label", index)
        if not isinstance(label, (int, np.integer)) or isinstance(label, bool) or label < 0:
            raise RecordError(f"{bank.name} record {index}: label {label!r} must be a non-negative integer")
        if self.num_classes is not None and label >= self.num_classes:
            raise RecordError(f"{bank.name} record {index}: label {label} is out of range for a model of {self.num_classes} classes")
        return -1 if rng.random() < self.drop_prob else int(label)


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


@functools.lru_cache(maxsize=4096)
def _layout(segments: tuple) -> Layout:
    return Layout(segments)


def make_example(segments: list, tokens: torch.Tensor | None, label: int = -1) -> Example:
    """An example of these segments; equal segment lists share one (read-only) `Layout`, built once.

    Building a layout costs milliseconds for a 1024-token image, more than reading the record,
    and a class→image head asks for the same one every time.
    """
    return Example(_layout(tuple(segments)), tokens, label)


TextFn = Callable[[str], list[int]]
__all__ = [
    "Task", "TASKS", "register_task", "list_tasks", "get_task_class", "ImageBank", "RecordError",
    "build_image_bank", "images_to_tokens", "tokens_to_images", "make_example", "Text",
]


class PreparedTokens:
    """`ImageBank.tokens` of prepared shards (`unimodal.data.prepare`): each row read when indexed.

    Indexing gives the tokens `build_image_bank` would hold: pixels scaled to [-1, 1] and
    patchified, or the VAE posterior's scaled, patchified latents. With ``posterior="sample"``
    (and ``flip``), a draw inside a task mixture samples the posterior (and picks the flipped
    copy with probability 1/2) from a generator seeded by `key`, which the mixture sets to
    (seed, step, rank, example) before each draw, so a resumed run draws the same noise.
    With `key` None (progress samples, eval) the mean of the unflipped image is returned.
    """

    def __init__(self, data: Any, visual: VisualConfig, posterior: str = "mean", flip: bool = False):
        if posterior not in ("mean", "sample"):
            raise ConfigError(f"prepared posterior must be 'mean' or 'sample', got {posterior!r}")
        if flip and data.encoding != "pixels" and not data.manifest.get("flip"):
            raise ConfigError(f"prepared data {data.path} holds no flipped copies: prepare it with --flip, or set flip: false")
        self.data, self.visual, self.posterior, self.flip = data, visual, posterior, flip
        self.key: tuple[int, ...] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.data), self.visual.grid**2, self.visual.token_dim)

    def __len__(self) -> int:
        return len(self.data)

    def row(self, index: int, key: tuple[int, ...] | None = None) -> torch.Tensor:
        """(T, token_dim) tokens of record `index` (drawn with `key`, see the class docstring)."""
        g = torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0])) if key else None
        flipped = bool(self.flip and g is not None and torch.rand((), generator=g) < 0.5)
        if self.data.encoding == "pixels":
            x = torch.from_numpy(self.data.visual_row(index).copy()).float().div_(127.5).sub_(1.0)
            x = x.flip(-1) if flipped else x
        else:
            m = torch.from_numpy(self.data.visual_row(index, "flip_moments" if flipped else "moments").astype(np.float32))
            mean, logvar = m.chunk(2, dim=0)
            z = mean
            if self.posterior == "sample" and g is not None:
                z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * torch.randn(mean.shape, generator=g)
            vae = self.data.vae
            x = (z - vae["shift_factor"]) * vae["scaling_factor"]
        return patchify(x[None], self.visual.patch_size)[0]

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self.row(int(index), self.key)
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        if isinstance(index, torch.Tensor):
            index = index.tolist()
        return torch.stack([self.row(int(i)) for i in index])


def prepared_bank(path: str, visual: VisualConfig, name: str = "", verify: bool = True, posterior: str = "sample",
                  flip: bool = False) -> ImageBank:
    """An `ImageBank` over prepared shards: tokens and columns read by index, so memory stays flat."""
    from unimodal.data.prepare import PreparedData

    data = PreparedData(path, visual, verify=verify)
    bank = ImageBank(PreparedTokens(data, visual, posterior, flip), bank_columns({c: data.column(c) for c in data.columns}),  # type: ignore[arg-type]
                     name or f"prepared:{path}")
    bank.validated = True  # type: ignore[attr-defined]  # prepare kept only good records
    return bank
