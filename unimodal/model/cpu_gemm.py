"""fp32 linear layers on a CPU through oneDNN's GEMM instead of the BLAS behind `F.linear`.

`F.linear` in fp32 on a CPU calls the BLAS torch was built with (MKL). oneDNN, which torch also
ships (`torch.ops.mkldnn._linear_pointwise`), picks its kernels from the CPU's ISA alone. On the
AMD EPYC host of our measurements (AVX-512, 2 cores) it ran the token-wise projections of the
release's config 7-20% faster forward, and the input gradient 5-40% faster (a (3584 x 768) x
(768 x 256) product: 137 against 190 GFLOP/s); MKL stays faster for the weight gradient, so that
one keeps `mm`. Both are true fp32 GEMMs (oneDNN's fp32 math mode is left at "ieee").

`Linear` is an `nn.Linear` (same parameters and state dict, so checkpoints, LoRA wrapping and
ZeRO hooks are unchanged) whose forward takes the oneDNN route only for fp32 inputs on a CPU
outside autocast, when its `route` says so (ModelConfig.cpu_linear, set by the model). Everything
else (bf16, autocast, CUDA or empty inputs) calls `F.linear` unchanged.

The route is a registered custom op (`unimodal::onednn_linear`) with a fake kernel and its own
backward, so torch.compile keeps it as one extern call in the graph (inductor's own lowering of
the oneDNN op accepts constant, frozen weights only). See docs/architecture.md, "Backbone".
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

CPU_LINEARS = ("aten", "onednn")  # routes; ModelConfig.cpu_linear adds "auto" (onednn where available)


def onednn_available() -> bool:
    """True when this torch build ships oneDNN's linear kernel (x86 and ARM CPU wheels do)."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@torch.library.custom_op("unimodal::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x (N, in) · weightᵀ (in, out) + bias, fp32, by oneDNN's inner-product primitive."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@onednn_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


def _setup(ctx, inputs, output) -> None:  # noqa: ANN001
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN202
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad  # a frozen weight (LoRA's base) costs no weight GEMM
    grad_x = onednn_linear(grad, weight.t().contiguous(), None) if need_x else None  # (N, out)·(out, in): oneDNN
    grad_w = grad.t() @ x if need_w else None  # (out, N) · (N, in): MKL's mm is the faster one here
    return grad_x, grad_w, grad.sum(0) if ctx.has_bias and need_b else None


onednn_linear.register_autograd(_backward, setup_context=_setup)


@register_flop_formula(torch.ops.unimodal.onednn_linear)
def _flops(x_shape, weight_shape, *args, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    """2·N·in·out, as FlopCounterMode counts `addmm`: FLOP counts and shares of peak see this GEMM too."""
    return 2 * x_shape[0] * x_shape[1] * weight_shape[0]


def takes_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a linear of these operands may take the oneDNN route (fp32 CPU tensors, no CPU autocast)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and x.numel() > 0)


class Linear(nn.Linear):
    """`nn.Linear` whose fp32 CPU forward runs through oneDNN when `route == "onednn"`."""

    route: str = "aten"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.route == "onednn" and takes_onednn(x, self.weight):
            lead = x.shape[:-1]
            y = onednn_linear(x.reshape(-1, x.shape[-1]), self.weight, self.bias)
            return y.view(*lead, self.out_features)
        return F.linear(x, self.weight, self.bias)


def set_cpu_linear(model: nn.Module, route: str) -> None:
    """Set the route of every `Linear` in `model` ("aten" or "onednn")."""
    if route not in CPU_LINEARS:
        raise ValueError(f"cpu_linear={route!r} is invalid: must be one of {CPU_LINEARS}")
    if route == "onednn" and not onednn_available():
        route = "aten"
    for m in model.modules():
        if isinstance(m, Linear):
            m.route = route
