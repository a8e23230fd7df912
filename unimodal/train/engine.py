"""The DeepSpeed engine: its config from a TrainConfig, AdamW, and weights-only loading of its checkpoints.

DeepSpeed is imported here (and in `ema.py` for ZeRO-3 gathers) and nowhere
else in the project.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig

DS_TAG = "state"  # the one tag inside a checkpoint's deepspeed/ directory


def import_deepspeed(cfg: TrainConfig) -> Any:
    """Import DeepSpeed quietly, on the CPU accelerator when there is no GPU.

    On CPU, DeepSpeed JIT-compiles a shared-memory all-reduce op the first time a
    process group is wrapped (30-60 s, then cached in ~/.cache/torch_extensions).
    gloo does the same job, so unless `cfg.cpu_shm_comm` the op is marked
    unavailable and never built.
    """
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import deepspeed.ops

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu" and not cfg.cpu_shm_comm:
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # a cached dict DeepSpeed reads before building
    return deepspeed


def deepspeed_config(cfg: TrainConfig, load_universal: bool = False, resumed_bf16: bool | None = None) -> dict[str, Any]:
    """The engine config: `cfg.deepspeed` JSON (other knobs) + the fields TrainConfig owns.

    `load_universal`: the engine will load a DeepSpeed universal checkpoint (an elastic resume,
    `run_state.universal_checkpoint`); DeepSpeed reads the key at load time, not at initialize.
    `resumed_bf16`: the engine mode of the checkpoint to resume (`run_state.engine_bf16_of`), if any.
    """
    ds = copy.deepcopy(cfg.deepspeed_base())
    if load_universal:
        ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds["gradient_accumulation_steps"] = cfg.grad_accum
    ds["gradient_clipping"] = cfg.clip_grad
    ds.setdefault("zero_optimization", {})["stage"] = cfg.resolved_zero_stage
    ds["bf16"] = {"enabled": cfg.engine_bf16(resumed_bf16)}  # bf16 weights in the engine (TrainConfig.weights_dtype)
    ds["zero_allow_untested_optimizer"] = True  # the client torch AdamW
    ds.setdefault("steps_per_print", 1_000_000_000)  # the trainer logs; DeepSpeed stays quiet
    ds.setdefault("wall_clock_breakdown", False)
    return ds


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay, vectors (norms, biases) never do (nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if other:
        groups.append({"params": other, "weight_decay": 0.0})
    return groups


def adamw(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.AdamW:
    """torch's AdamW with the fused kernel where every parameter's device has one (CPU and CUDA do).

    The same update as the per-tensor loop in one pass over each tensor: on 2 CPU cores it takes
    ~4 ms a step for 7.4M parameters against ~12-16 ms (benchmarks/vs_official.py times it in the step).
    Its state (exp_avg, exp_avg_sq, a tensor step) has the same keys, so checkpoints load either way.
    """
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = bool(devices) and devices <= {"cpu", "cuda"}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, fused=fused)


def create_engine(
    model: torch.nn.Module, cfg: TrainConfig, load_universal: bool = False, resumed_bf16: bool | None = None
) -> tuple[Any, torch.optim.Optimizer]:
    """Wrap `model` in a DeepSpeed engine with a client AdamW; returns (engine, the AdamW).

    `load_universal`, `resumed_bf16`: the checkpoint to resume from, as `deepspeed_config` takes them.
    """
    deepspeed = import_deepspeed(cfg)
    opt = adamw(param_groups(model, cfg.weight_decay), cfg)
    ds = deepspeed_config(cfg, load_universal, resumed_bf16)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds)
    use_weights_only_loading(engine)
    return engine, opt


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """DeepSpeed's ZeRO and bf16 wrappers share the client optimizer's param_groups, so this reaches them all."""
    for g in optimizer.param_groups:
        g["lr"] = lr


# --- loading DeepSpeed checkpoints without unpickling arbitrary objects ----------------------------
def _safe_globals() -> list[Any]:
    """The non-tensor classes DeepSpeed puts in its checkpoint files (found with
    torch.serialization.get_unsafe_globals_in_checkpoint on ZeRO 0-3, fp32 and bf16)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


@functools.cache
def weights_only_engine_class() -> type:
    """TorchCheckpointEngine whose `load` is torch.load(weights_only=True) with `_safe_globals()` allowed."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location: Any = None) -> Any:
            with torch.serialization.safe_globals(_safe_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)

    return WeightsOnlyCheckpointEngine


def use_weights_only_loading(engine: Any) -> None:
    """Make the engine read its checkpoints with torch.load(weights_only=True) and a short allow-list.

    DeepSpeed's TorchCheckpointEngine calls torch.load(weights_only=False). Only that
    plain engine is switched (to a subclass, state kept); engines a user's DeepSpeed
    JSON selects (fast/decoupled writers) are left as they are.
    """
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    current = getattr(engine, "checkpoint_engine", None)
    if type(current) is TorchCheckpointEngine:
        current.__class__ = weights_only_engine_class()


def load_engine_state(engine: Any, checkpoint_dir: Path, ds_dir: Path | None = None) -> dict[str, Any]:
    """Restore weights, optimizer state and client state from `checkpoint_dir/deepspeed`; returns the client state.

    `ds_dir`: another DeepSpeed directory holding tag `DS_TAG` (the universal checkpoint of an elastic
    resume, read by an engine made with `load_universal`).
    """
    from unimodal.checkpoint import CheckpointError

    ds_dir = ds_dir if ds_dir is not None else checkpoint_dir / "deepspeed"
    try:
        path, client = engine.load_checkpoint(
            str(ds_dir), tag=DS_TAG, load_module_strict=True, load_optimizer_states=True, load_lr_scheduler_states=False
        )
    except Exception as e:  # DeepSpeed raises assorted types (RuntimeError, AssertionError, UnpicklingError)
        raise CheckpointError(f"cannot resume from {str(ds_dir)!r}: {type(e).__name__}: {e}") from e
    if path is None:
        raise CheckpointError(f"cannot resume from {str(ds_dir)!r}: DeepSpeed found no checkpoint tagged {DS_TAG!r}")
    return client or {}
