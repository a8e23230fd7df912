"""Convert a released ACDiT checkpoint (thunlp/ACDiT) into a unimodal checkpoint.

A released file is `torch.save` of a dict: `model` (state dict), `ema` (state
dict, when present), `opt`, and `args` (an `argparse.Namespace` of the training
run). It is read with `torch.load(weights_only=True)` and only
`argparse.Namespace` allow-listed, so nothing else is ever unpickled.

The mapping (docs/architecture.md, "Converting a released checkpoint"):

* Keys: unimodal's ACDiT names its parameters as the release does, so every key
  keeps its name; the set of keys must match exactly (the error lists the
  missing and unexpected ones).
* Patch tokens: the release flattens a p×p patch of C latent channels as
  (row, col, channel); unimodal's `patchify` is channel-major (channel, row,
  col). For p > 1 the columns of `x_embedder.weight` and the rows of
  `final_layer.linear` are permuted, so the converted model reads and writes
  unimodal tokens and its ε is the release's ε, re-ordered (p = 1: identity).
* RoPE-ND: `rope_style="acdit"` with the release's head-dim split (images
  (h, w) = (32, 32) → rope_axes (0, 32, 32); video (t, h, w) = (16, 24, 24)) and
  base 100·(⌊⌊8·L/π⌋/100⌋ + 1) per axis, L the axis' length in the release's
  position table (the latent grid side, and the frame count for video): 100 for
  every released model.
* Layout: image blocks are √block_size × √block_size squares in raster order;
  video blocks are block_size / tokens-per-frame whole frames.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import (
    CheckpointError,
    load_state_into,
    save_checkpoint,
    state_mismatch,
)
from ..config import PAPER_SAMPLING, PRESETS, ConfigError, ModelConfig, VisualConfig
from ..diffusion.schedule import ScheduleConfig
from ..errors import check_path
from ..model import ACDiT

SOURCE = "acdit-official"
HEAD_DIM = 64  # RopeND of the release is built for head_dim 64
NEEDED_ARGS = ("vae_latent_size", "patch_size", "block_size", "ar_len", "num_frames", "image_size", "vae_patch_pixels")
# args.model -> (depth, hidden) of the release's size table, to cross-check the state dict: the
# released sizes are the B, L, XL and H presets.
RELEASE_SIZES = {f"ACDiT-{k}": (PRESETS[k]["n_layer"], PRESETS[k]["d_model"]) for k in ("B", "L", "XL", "H")}


def rope_base(max_len: int) -> int:
    """The release's automatic RoPE base of one axis: 100·(⌊⌊8·L/π⌋/100⌋ + 1)."""
    return (int(8 * max_len / math.pi) // 100 + 1) * 100


def read_release_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a released `.pt` file safely (tensors, containers and argparse.Namespace only).

    Raises:
        CheckpointError: missing, truncated or corrupt file, a foreign pickled object,
            or a file that is not a dict with `model` and `args`.
    """
    path = Path(path)
    check_path(path, "release checkpoint", kind="file", cls=CheckpointError)

    def load(mmap: bool) -> Any:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            obj = load(mmap=True)  # maps the tensors instead of reading the optimizer state into memory
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = load(mmap=False)  # legacy (non-zip) serialization
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found and "unsupported global" not in str(e).lower():
            first = str(e).splitlines()[0] if str(e) else ""  # random bytes and foreign opcodes look alike here
            raise CheckpointError(
                f"release checkpoint {str(path)!r} is not a torch.save file of tensors, or holds an object that is not "
                f"allowed ({first}); only tensors, containers and argparse.Namespace are read"
            ) from None
        what = f"a pickled object of type {found.group(1)}" if found else "a pickled object"
        raise CheckpointError(
            f"release checkpoint {str(path)!r} holds {what}, which is not allowed: only tensors, containers "
            "and argparse.Namespace are read (nothing else is unpickled)"
        ) from None
    except Exception as e:  # noqa: BLE001  (random bytes raise IndexError, struct.error, ... inside the unpickler)
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"release checkpoint {str(path)!r} is truncated or not a torch.save file ({type(e).__name__}: {first})"
        ) from None
    if not isinstance(obj, dict) or "model" not in obj or "args" not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"release checkpoint {str(path)!r} is not in the released format: expected a dict with 'model' "
            f"(state dict), 'args' (argparse.Namespace) and optionally 'ema'; got {keys}"
        )
    return obj


def plain_args(args: Any) -> dict[str, Any]:
    """The training Namespace as a YAML-safe dict (other values as strings)."""
    d = vars(args) if isinstance(args, argparse.Namespace) else dict(args)

    def plain(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return str(v)

    return {str(k): plain(v) for k, v in d.items()}


def rope_axes_of(nd_split: Any, video: bool) -> tuple[int, int, int]:
    """(t, h, w) head-dim widths of the release's RopeND: 2·s_i·(32 // Σs) per axis."""
    if nd_split is None:
        split = [2, 3, 3] if video else [1, 1]
    else:
        try:
            split = [int(x) for x in str(nd_split).split("_")]
        except ValueError:
            raise CheckpointError(f"args.nd_split={nd_split!r} is invalid: expected e.g. '2_3_3' or '1_1'") from None
    if len(split) != (3 if video else 2) or min(split) <= 0:
        raise CheckpointError(f"args.nd_split={nd_split!r} does not fit a {'video (t_h_w)' if video else 'image (h_w)'} model")
    dims = [2 * s * (HEAD_DIM // 2 // sum(split)) for s in split]
    if sum(dims) != HEAD_DIM:
        raise CheckpointError(f"args.nd_split={nd_split!r} gives head-dim split {dims}, which does not sum to {HEAD_DIM}")
    return (dims[0], dims[1], dims[2]) if video else (0, dims[0], dims[1])


def release_configs(args: Any, state: dict[str, torch.Tensor], vae_dir: str | None = None) -> tuple[ModelConfig, VisualConfig]:
    """The ModelConfig and VisualConfig that reproduce the released model.

    Raises:
        CheckpointError: an `args` field is missing or the state dict's shapes do not fit.
    """
    a = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    missing = [k for k in NEEDED_ARGS if a.get(k) is None]
    if missing:
        raise CheckpointError(f"the checkpoint's args lack {missing}: cannot tell the token grid and blocks")
    if a.get("use_rope", True) is False:
        raise CheckpointError("args.use_rope=False: only the released RoPE-ND models can be converted")
    need = ("x_embedder.weight", "y_embedder.embedding_table.weight", "blocks.0.attn.q_norm.weight", "t_embedder.mlp.0.weight")
    absent = [k for k in need if k not in state]
    if absent:
        raise CheckpointError(f"state dict has no {absent}: cannot read the model's sizes (missing keys)")
    d_model, token_dim = state["x_embedder.weight"].shape
    channels, patch = int(a["vae_latent_size"]), int(a["patch_size"])
    if token_dim != channels * patch**2:
        raise CheckpointError(
            f"x_embedder.weight has {token_dim} inputs but args give vae_latent_size*patch_size² = {channels}*{patch}² "
            f"= {channels * patch**2}"
        )
    head_dim = int(state["blocks.0.attn.q_norm.weight"].shape[0])
    if head_dim != HEAD_DIM:
        raise CheckpointError(
            f"blocks.0.attn.q_norm.weight has size {head_dim}; the release's RoPE-ND needs head dim {HEAD_DIM}"
        )
    layers = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    n_layer = max(layers) + 1
    name = str(a.get("model", "acdit"))
    if name in RELEASE_SIZES:
        depth, hidden = RELEASE_SIZES[name]
        if hidden != d_model:
            raise CheckpointError(f"args.model={name!r} has hidden size {hidden} but x_embedder.weight gives {d_model}")
        n_layer = depth  # a wholly missing last layer is then reported as missing keys
    frames = int(a["num_frames"])
    video = frames > 1
    side = int(a["image_size"]) // int(a["vae_patch_pixels"])  # latent side
    if side % patch:
        raise CheckpointError(f"latent side {side} (image_size/vae_patch_pixels) is not divisible by patch_size={patch}")
    grid = side // patch
    block_size, ar_len = int(a["block_size"]), int(a["ar_len"])
    if video:
        if block_size % (grid * grid):
            raise CheckpointError(f"video block_size={block_size} is not a whole number of {grid}x{grid}-token frames")
        fpb, block_h = block_size // (grid * grid), grid
    else:
        block_h, fpb = math.isqrt(block_size), 1
        if block_h * block_h != block_size or grid % block_h:
            raise CheckpointError(f"image block_size={block_size} is not a square block tiling the {grid}x{grid} grid")
    n_tokens = frames * grid * grid
    if n_tokens != block_size * ar_len:
        raise CheckpointError(
            f"args give {n_tokens} tokens but ar_len*block_size = {ar_len}*{block_size} = {ar_len * block_size}"
        )
    max_lens = [frames, grid, grid] if video else [grid, grid]  # the release's position table
    bases = sorted({rope_base(m) for m in max_lens})
    if len(bases) != 1:
        raise CheckpointError(f"per-axis RoPE bases {bases} differ (axis lengths {max_lens}); unimodal has one rope_theta")
    try:
        model_cfg = ModelConfig(
            name=name, n_layer=n_layer, d_model=int(d_model), head_dim=head_dim,
            mlp_ratio=(state["blocks.0.mlp.fc1.weight"].shape[0] / d_model) if "blocks.0.mlp.fc1.weight" in state else 4.0,
            vocab_size=0, token_dim=int(token_dim),
            num_classes=int(state["y_embedder.embedding_table.weight"].shape[0]) - 1,
            rope_axes=rope_axes_of(a.get("nd_split"), video), rope_theta=float(bases[0]), rope_style="acdit",
            freq_dim=int(state["t_embedder.mlp.0.weight"].shape[1]),
        )
        visual = VisualConfig(
            channels=channels, image_size=int(a["image_size"]), patch_size=patch, block_h=block_h, block_w=block_h,
            frames=frames, frames_per_block=fpb, vae_dir=vae_dir, vae_downsample=int(a["vae_patch_pixels"]),
        )
    except ConfigError as e:
        raise CheckpointError(f"the released settings do not give a valid unimodal config: {e}") from None
    return model_cfg, visual


def token_permutation(channels: int, patch: int) -> torch.Tensor:
    """perm with unimodal_token = release_token[..., perm].

    Release order (row, col, channel): r = (y·p + x)·C + c; unimodal (channel, row, col): o = c·p² + y·p + x.
    """
    c, y, x = torch.meshgrid(torch.arange(channels), torch.arange(patch), torch.arange(patch), indexing="ij")
    return ((y * patch + x) * channels + c).reshape(-1)  # indexed by o in (c, y, x) order


def map_state(state: dict[str, torch.Tensor], channels: int, patch: int) -> dict[str, torch.Tensor]:
    """Release state dict -> unimodal state dict (same names; patch tokens re-ordered channel-major)."""
    out = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    if patch > 1:
        perm = token_permutation(channels, patch)
        if "x_embedder.weight" in out:
            out["x_embedder.weight"] = out["x_embedder.weight"][:, perm].contiguous()
        for k in ("final_layer.linear.weight", "final_layer.linear.bias"):
            if k in out:
                out[k] = out[k][perm].contiguous()
    return out


def check_keys(model: ACDiT, state: dict[str, torch.Tensor], source: str) -> None:
    """One error listing every missing, unexpected and mis-shaped key (release names)."""
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{source} does not match the released ACDiT layout: {problem}")


def convert_acdit(
    input_path: str | Path,
    output_dir: str | Path,
    use_ema: bool = False,
    vae_dir: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a released ACDiT `.pt` file into a unimodal checkpoint directory.

    Args:
        input_path: the released file (e.g. ACDiT-XL-img.pt).
        output_dir: checkpoint directory to write (atomically; nothing is written on error).
        use_ema: take the EMA weights (`ema`) instead of the raw weights (`model`).
        vae_dir: local SD-VAE directory recorded in the visual config (needed to sample pixels).
        overwrite: replace an existing non-empty `output_dir`.

    Returns:
        the checkpoint directory.

    Raises:
        CheckpointError: unreadable or foreign file, unknown/missing keys, inconsistent settings.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise CheckpointError(f"output {str(output_dir)!r} exists and is not empty: pass overwrite (--overwrite) to replace it")
    if vae_dir is not None:
        check_path(vae_dir, "VAE directory", kind="dir", cls=CheckpointError)
        vae_dir = str(Path(vae_dir).resolve())
    ckpt = read_release_checkpoint(input_path)
    which = "ema" if use_ema else "model"
    state = ckpt.get(which)
    if state is None:
        raise CheckpointError(f"release checkpoint {str(input_path)!r} has no {which!r} weights; keys: {sorted(ckpt)}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"release checkpoint {str(input_path)!r}: {which!r} is not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    if not isinstance(ckpt["args"], (argparse.Namespace, dict)):
        raise CheckpointError(f"release checkpoint {str(input_path)!r}: 'args' is a {type(ckpt['args']).__name__}, "
                              "expected the training argparse.Namespace")
    model_cfg, visual = release_configs(ckpt["args"], state, vae_dir)
    with torch.device("meta"):  # shapes only: no memory, no random init of ~1B parameters
        model = ACDiT(model_cfg)
    check_keys(model, state, f"{str(input_path)!r} [{which}]")
    model = model.to_empty(device="cpu")  # every tensor is then overwritten: the key sets match exactly
    load_state_into(model, map_state(state, visual.channels, visual.patch_size), f"{str(input_path)!r} [{which}]")
    extra = {
        "source": SOURCE,
        "args": plain_args(ckpt["args"]),
        "weights": which,
        # the paper's sampling settings, recorded with the converted checkpoint
        "sampling": {"sampler": PAPER_SAMPLING.sampler, "steps": PAPER_SAMPLING.steps, "cfg": PAPER_SAMPLING.cfg(visual.frames > 1)},
        # latent model: tokens are SD-VAE latents (scaling 0.18215), grid = image_size / vae_downsample / patch
        "requires_vae": True,
    }
    return save_checkpoint(
        output_dir, model, visual=visual, schedule=ScheduleConfig(), extra=extra, meta={"converted_from": str(input_path)}
    )
