"""Freezing named parts and LoRA adapters (through `peft`) on either side of the backbone.

The backbone is shared, so "sides" are defined by what a weight serves:

* ``text``: what a causal LM has: the token embedding, every block's norms, attention and
  MLP, the final text norm and the LM head (the weights `unimodal init` takes from an LLM).
* ``visual``: what only the diffusion path has: x_embedder, the t/y embedders, every
  block's AdaLN-Zero modulation and the final layer.

`freeze` takes ``text``, ``visual``, ``all`` or fnmatch patterns over parameter names.
`lora` wraps chosen ``nn.Linear`` modules of a side with peft LoRA layers; the wrapped base
weights are frozen, every other weight trains unless frozen. Adapter tensors carry
``.lora_`` in their names; `split_adapter_state` / `join_adapter_state` convert between the
live names (``X.base_layer.weight``) and a checkpoint's plain base weights + adapter file.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError, check_fields, suggest

SIDES = ("text", "visual", "all")
PARTS = ("text", "visual", "all")
_VISUAL_PREFIXES = ("x_embedder.", "t_embedder.", "y_embedder.", "text_cond.", "final_layer.")
_TEXT_LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")  # inside blocks (lm_head is left alone: it may be tied)


def side_of(name: str) -> str:
    """'text' or 'visual' for a parameter or module name of the ACDiT (LoRA names included)."""
    name = name.replace(".base_layer", "") + "."
    if name.startswith(_VISUAL_PREFIXES) or ".adaLN_modulation" in name:
        return "visual"
    return "text"


def freeze(model: nn.Module, parts: list[str]) -> list[str]:
    """Set requires_grad=False on every parameter of the named parts; returns the frozen names.

    Raises:
        ConfigError: a name that is neither a part nor a pattern matching some parameter.
    """
    names = [n for n, _ in model.named_parameters()]
    frozen: set[str] = set()
    for part in parts:
        if part in PARTS:
            hit = [n for n in names if part == "all" or side_of(n) == part]
        else:
            hit = [n for n in names if fnmatch.fnmatchcase(n, part) or fnmatch.fnmatchcase(n.replace(".base_layer", ""), part)]
            if not hit:
                raise ConfigError(
                    f"freeze entry {part!r} matches no parameter: use one of {PARTS} or a pattern over parameter "
                    f"names such as 'blocks.0.*'.{suggest(part, list(PARTS))}"
                )
        frozen.update(hit)
    for n, p in model.named_parameters():
        if n in frozen:
            p.requires_grad_(False)
    return sorted(frozen)


@dataclass
class LoraSpec:
    """A recipe's `lora:` mapping.

    Attributes:
        r: adapter rank.
        alpha: LoRA alpha (the update is scaled by alpha / r).
        dropout: dropout on the adapter input (0 keeps training deterministic).
        target_modules: module-name patterns (fnmatch, matched against full names and their
            last components, e.g. ``qkv``, ``mlp.*``, ``blocks.0.attn.proj``); None: every
            Linear of `side` (text: attn.qkv, attn.proj, mlp.fc1, mlp.fc2; visual: every
            Linear of x_embedder, t/y embedders, AdaLN modulation and final layer).
        side: which side's Linears may be wrapped.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None
    side: str = "text"
    modules: list[str] = field(default_factory=list)  # resolved full module names (filled by `add_lora`)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoraSpec":
        check_fields(d, [f.name for f in fields(cls)], "lora key", plural="keys")  # `modules` round-trips from a checkpoint
        spec = cls(**d)
        spec.validate()
        return spec

    def validate(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"lora.r={self.r!r} is invalid: must be a positive integer")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ConfigError(f"lora.alpha={self.alpha!r} is invalid: must be > 0")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout={self.dropout!r} is invalid: must be in [0, 1)")
        if self.side not in SIDES:
            raise ConfigError(f"lora.side={self.side!r} is invalid: must be one of {SIDES}")
        if self.target_modules is not None and (
            not isinstance(self.target_modules, list) or not all(isinstance(t, str) for t in self.target_modules)
        ):
            raise ConfigError(f"lora.target_modules={self.target_modules!r} is invalid: must be a list of names")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolve(self, model: nn.Module) -> list[str]:
        """Full names of the Linear modules this spec wraps (in model order)."""
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]  # cpu_gemm.Linear too
        tied = getattr(getattr(model, "cfg", None), "tie_embeddings", False)
        if self.target_modules is None:
            if self.side in ("text", "all"):
                pool = [n for n in linears if n.startswith("blocks.") and n.split(".", 2)[2] in _TEXT_LINEARS]
            else:
                pool = []
            if self.side in ("visual", "all"):
                pool += [n for n in linears if side_of(n) == "visual"]
            chosen = [n for n in linears if n in pool]
        else:
            chosen = []
            for pat in self.target_modules:
                hit = [n for n in linears if (self.side == "all" or side_of(n) == self.side)
                       and any(fnmatch.fnmatchcase(n, p) for p in (pat, f"*.{pat}"))]
                if not hit:
                    raise ConfigError(
                        f"lora.target_modules entry {pat!r} matches no Linear on side {self.side!r}; Linear modules "
                        f"there end in: {sorted({n.split('.', 2)[-1] if n.startswith('blocks.') else n for n in linears if self.side == 'all' or side_of(n) == self.side})}"
                    )
                chosen += [n for n in hit if n not in chosen]
            chosen = [n for n in linears if n in chosen]
        if tied and "lm_head" in chosen:
            raise ConfigError("lora cannot wrap lm_head when tie_embeddings=True (it is the token embedding)")
        if not chosen:
            raise ConfigError(f"lora on side {self.side!r} wraps no module")
        return chosen


def add_lora(model: nn.Module, spec: LoraSpec, frozen: list[str] = ()) -> nn.Module:
    """Wrap the spec's modules in place with peft LoRA layers and set what trains.

    Adapters train; the wrapped base weights are frozen; any other weight trains unless it is
    in `frozen` (the result of `freeze`). `spec.modules` records the resolved names.
    """
    from peft import LoraConfig, inject_adapter_in_model

    spec.modules = spec.modules or spec.resolve(model)
    frozen_names = {n.replace(".base_layer", "") for n in frozen}
    keep = {n: p.requires_grad for n, p in model.named_parameters()}
    cfg = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                     target_modules="^(" + "|".join(re.escape(m) for m in spec.modules) + ")$")
    inject_adapter_in_model(cfg, model)
    wrapped = set(spec.modules)
    for n, p in model.named_parameters():
        if ".lora_" in n:
            p.requires_grad_(True)
        else:
            plain = n.replace(".base_layer", "")
            p.requires_grad_(plain.rsplit(".", 1)[0] not in wrapped and plain not in frozen_names and keep.get(plain, True))
    return model


def split_adapter_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base weights under their plain names, adapter tensors) of a LoRA-wrapped state dict."""
    base = {k.replace(".base_layer", ""): v for k, v in state.items() if ".lora_" not in k}
    return base, {k: v for k, v in state.items() if ".lora_" in k}


def join_adapter_state(base: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The live (LoRA-wrapped) state dict from plain base weights and adapter tensors."""
    wrapped = {k.split(".lora_")[0] for k in adapter}
    out = {}
    for k, v in base.items():
        mod, leaf = k.rsplit(".", 1)
        out[f"{mod}.base_layer.{leaf}" if mod in wrapped else k] = v
    out.update(adapter)
    return out


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base Linear and put the plain Linear back (in place)."""
    from peft.tuners.lora import LoraLayer

    for name, m in list(model.named_modules()):
        if isinstance(m, LoraLayer):
            m.merge()
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], m.get_base_layer())
    return model


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Parameter counts: total, trainable, adapter."""
    ps = list(model.named_parameters())
    return {"total": sum(p.numel() for _, p in ps), "trainable": sum(p.numel() for _, p in ps if p.requires_grad),
            "adapter": sum(p.numel() for n, p in ps if ".lora_" in n)}
