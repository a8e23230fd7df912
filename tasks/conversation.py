"""The conversation head: multi-turn image chat (LLaVA-style records), loss on the answers only.

Sequence: ``<bos> <boi> [image, clean] <eoi> user₁ answer₁ <eos> user₂ answer₂ <eos> ...``.
The user turns are context (no loss); each answer and the ``<eos>`` that ends it are targets.
A one-turn conversation is exactly the VQA head's sequence, so a model trained on either
answers the other. Records come from the ``conversation`` column (``unimodal.data.sources``:
alternating ``{role, text}`` turns, the ``<image>`` placeholder removed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unimodal.batch import Example
from unimodal.layout import Text

from .base import ImageBank, RecordError, make_example, register_task
from .understanding import _ImageToText


@register_task
class Conversation(_ImageToText):
    """Image + alternating user/assistant turns; cross-entropy on every assistant turn and its <eos>."""

    name = "conversation"

    def accepts(self, bank: ImageBank, index: int) -> bool:
        return "conversation" in bank.columns and bool(bank.columns["conversation"][index])

    def turns(self, bank: ImageBank, index: int) -> list[tuple[str, str]]:
        """The record's (user, assistant) pairs, checked."""
        turns = bank.column("conversation", index)
        if not turns or len(turns) % 2:
            raise RecordError(f"{bank.name} record {index}: 'conversation' needs user/assistant pairs, got {len(turns or [])} turns")
        pairs = []
        for j in range(0, len(turns), 2):
            user, assistant = turns[j], turns[j + 1]
            if user.get("role") != "user" or assistant.get("role") != "assistant" or not user.get("text") or not assistant.get("text"):
                raise RecordError(f"{bank.name} record {index}: turn {j} and {j + 1} must be a non-empty user then assistant turn")
            pairs.append((user["text"], assistant["text"]))
        return pairs

    def example(self, bank: ImageBank, index: int, rng: np.random.Generator) -> Example:
        pairs = self.turns(bank, index)
        segs: list[Any] = self.context(pairs[0][0])
        segs.append(Text([*self.encode(pairs[0][1]), self.tok.eos_id]))
        for user, answer in pairs[1:]:
            segs += [Text(self.encode(user), loss=False), Text([*self.encode(answer), self.tok.eos_id])]
        return make_example(segs, bank.tokens[index])

    def predict(self, model, tokens: torch.Tensor, questions: list[str], max_new_tokens: int = 16, batch_size: int = 64) -> list[str]:
        """Greedy first answers for (N, T, C) image tokens and their first user turns."""
        return self._decode(model, tokens, list(questions), max_new_tokens, batch_size)
