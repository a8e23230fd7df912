"""Tokenizers: SentencePiece text tokens, pixel patches and VAE latents."""

from unimodal.tokenizers.text import SPECIAL_IDS, TextTokenizer, load_transformers
from unimodal.tokenizers.visual import (
    VAETokenizer,
    grid_size,
    patchify,
    patchify_video,
    unpatchify,
    unpatchify_video,
)

__all__ = [
    "SPECIAL_IDS",
    "TextTokenizer",
    "VAETokenizer",
    "grid_size",
    "load_transformers",
    "patchify",
    "patchify_video",
    "unpatchify",
    "unpatchify_video",
]
