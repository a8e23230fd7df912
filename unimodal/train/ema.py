"""Exponential moving average of a model's parameters, kept in fp32.

    shadow ← decay · shadow + (1 − decay) · param          (after every optimizer step)

Works under every ZeRO stage: with ZeRO-3 each parameter is partitioned, so
`update` gathers the parameters in chunks (`deepspeed.zero.GatheredParameters`)
on every rank, and only the ranks that `store` the average keep a copy. The
trainer stores it on rank 0 only: one fp32 copy of the model, not one per rank.

Only trainable parameters (requires_grad) are averaged: a frozen weight never changes,
so its average is itself, and a LoRA or frozen-text run keeps no copy of the frozen
LLM. `state_dict(live)` fills the frozen names in from the live weights, so a saved
EMA is still a full state; `frozen_state(model)` gathers them (a collective under ZeRO-3).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

GATHER_CHUNK = 50_000_000  # ZeRO-3: gather at most this many elements at a time (200 MB in fp32)


def is_zero3_param(p: torch.nn.Parameter) -> bool:
    return hasattr(p, "ds_id")  # DeepSpeed marks ZeRO-3 partitioned parameters with ds_* attributes


@contextmanager
def gathered(params: list[torch.nn.Parameter], modifier_rank: int | None = None) -> Iterator[None]:
    """Full values of `params` inside the block (a no-op unless they are ZeRO-3 partitioned)."""
    if params and any(is_zero3_param(p) for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
            yield
    else:
        yield


def param_chunks(named: list[tuple[str, torch.nn.Parameter]], limit: int = GATHER_CHUNK) -> Iterator[list[tuple[str, torch.nn.Parameter]]]:
    """Split parameters into consecutive groups of at most `limit` elements (ZeRO-3 uses ds_numel)."""
    chunk: list[tuple[str, torch.nn.Parameter]] = []
    size = 0
    for name, p in named:
        n = int(getattr(p, "ds_numel", p.numel()))
        if chunk and size + n > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append((name, p))
        size += n
    if chunk:
        yield chunk


class EMA:
    """fp32 moving average of the parameters of `model` (named as in `model.named_parameters()`).

    Args:
        model: the module whose parameters are averaged (plain or ZeRO-3 partitioned).
        decay: the EMA decay in [0, 1).
        store: keep the average on this rank; False on ranks that only take part in ZeRO-3 gathers.
    """

    def __init__(self, model: torch.nn.Module, decay: float, store: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay} is invalid: must be in [0, 1)")
        self.decay = decay
        self.store = store
        self.shadow: dict[str, torch.Tensor] = {}
        self.frozen = [n for n, p in model.named_parameters() if not p.requires_grad]  # not averaged (see above)
        for chunk in param_chunks(self._tracked(model)):
            with gathered([p for _, p in chunk]):
                if store:
                    for name, p in chunk:
                        self.shadow[name] = p.detach().float().clone()  # on the parameter's device

    def _tracked(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        frozen = set(self.frozen)
        return [(n, p) for n, p in model.named_parameters() if n not in frozen]

    def decay_at(self, step: int | None) -> float:
        """The decay used at optimizer step `step` (1-based): min(decay, (1 + step) / (10 + step)).

        The warm-up keeps short runs from averaging in their random initialisation
        (with decay 0.999, 600 plain updates would still hold 55% of it); it is a pure
        function of the step, so an exact resume needs no extra state. None: no warm-up.
        """
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int | None = None) -> None:
        """shadow ← d·shadow + (1 − d)·param with d = decay_at(step). A collective under ZeRO-3: call it on every rank."""
        d = self.decay_at(step)
        for chunk in param_chunks(self._tracked(model)):
            with gathered([p for _, p in chunk]):
                if self.store:
                    for name, p in chunk:
                        self.shadow[name].lerp_(p.detach().float(), 1.0 - d)

    @torch.no_grad()
    def frozen_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """fp32 CPU copies of the frozen (not averaged) parameters of `model`, for `state_dict(live)`.

        A collective under ZeRO-3: call it on every rank; empty on ranks that do not store.
        """
        frozen = set(self.frozen)
        out: dict[str, torch.Tensor] = {}
        for chunk in param_chunks([(n, p) for n, p in model.named_parameters() if n in frozen]):
            with gathered([p for _, p in chunk]):
                if self.store:
                    out.update({n: p.detach().float().cpu().clone() for n, p in chunk})
        return out

    def state_dict(self, live: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The averaged parameters by name (fp32, on CPU); empty on ranks that do not store.

        With frozen parameters, `live` (the model's full state, or `frozen_state(model)`) supplies
        their values, so the result is a full parameter state; without `live` they are left out.
        """
        out = {k: v.detach().to("cpu", copy=True) for k, v in self.shadow.items()}
        if self.store and self.frozen and live is not None:
            missing = [n for n in self.frozen if n not in live]
            if missing:
                raise KeyError(f"EMA state_dict: `live` lacks the frozen parameters {missing[:5]}")
            out.update({n: live[n].detach().float().to("cpu", copy=True) for n in self.frozen})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the average (e.g. on resume); names and shapes must match (frozen names are ignored)."""
        if not self.store:
            return
        frozen = set(self.frozen)
        state = {k: v for k, v in state.items() if k not in frozen}
        missing, unexpected = sorted(set(self.shadow) - set(state)), sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(f"EMA state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for k, v in state.items():
            if v.shape != self.shadow[k].shape:
                raise ValueError(f"EMA state {k}: shape {tuple(v.shape)} vs model {tuple(self.shadow[k].shape)}")
            self.shadow[k].copy_(v)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Write the average into `model`'s averaged parameters (frozen ones are left as they are).
        Under ZeRO-3 the storing rank must be rank 0."""
        for chunk in param_chunks(self._tracked(model)):
            with gathered([p for _, p in chunk], modifier_rank=0):
                if self.store:
                    for name, p in chunk:
                        p.copy_(self.shadow[name].to(p.device, p.dtype))
