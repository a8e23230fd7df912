"""`TrainConfig`: one typed, flat record of a training run, YAML in and out.

`TrainConfig.from_file("configs/train/x.yaml", overrides=["lr=1e-3", "visual.image_size=32"])`
reads a run; `cfg.to_yaml()` is the resolved config that travels with every
checkpoint. Overrides take dotted keys (an optional leading `train.` is
dropped) and YAML values; unknown keys and wrong types are rejected by name.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from unimodal.config import PRESETS, ModelConfig, VisualConfig, dump_yaml
from unimodal.configs import shipped_names, shipped_path
from unimodal.diffusion.loss import LossWeights
from unimodal.diffusion.schedule import ScheduleConfig
from unimodal.errors import ConfigError, check_float, suggest

LR_SCHEDULES = ("wsd", "cosine", "constant")
PRECISIONS = ("fp32", "bf16", "auto")
WEIGHTS_DTYPES = ("auto", "fp32", "bf16")

# Float options: (name, low, high, low_open). Each must be finite and in [low, high] ((low, high] when low_open).
_FLOAT_RANGES = (
    ("lr", 0.0, None, True),  # a zero peak lr trains nothing; the schedule may still reach 0
    ("weight_decay", 0.0, None, False),
    ("adam_eps", 0.0, None, True),
    ("clip_grad", 0.0, None, False),  # 0 disables clipping
    ("decay_frac", 0.0, 1.0, False),
    ("min_lr_ratio", 0.0, 1.0, False),
    ("ema_decay", 0.0, 1.0, False),  # 1 is refused separately: [0, 1)
)

# DeepSpeed keys the trainer owns: a DeepSpeed JSON may not set them to something else.
_OWNED_DS_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                  "gradient_clipping", "bf16", "fp16", "optimizer", "scheduler")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data source. Defaults follow the paper where it says.

    Nested mappings (`model_overrides`, `visual`, `diffusion`, `loss`) are checked
    against ModelConfig, VisualConfig, ScheduleConfig and LossWeights; `tasks` and
    `tokenizer` pass through to the data side (`unimodal.tasks.build_batch_source`).

    Resuming with changed schedule keys (`steps`, `lr`, `schedule`, `warmup_steps`, `decay_frac`,
    `min_lr_ratio`): rank 0 prints each change as `resume: key old -> new`. The lr of optimizer
    step s is always the *new* config's schedule at the global step s (`schedules.lr_at`), so
    the run continues that schedule from the checkpoint's step and the warm-up never restarts.
    Refused before anything is written: a changed `warmup_steps` larger than the checkpoint's
    step (the resumed step would be back inside a warm-up), and `steps` below it
    (`unimodal.train.trainer.schedule_changes`).
    """

    # --- what is trained ---------------------------------------------------------------
    model: str = "tiny"  # model preset name or model YAML path
    model_overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields over the preset
    visual: dict[str, Any] = field(default_factory=dict)  # VisualConfig fields; the model's token_dim follows it
    diffusion: dict[str, Any] = field(default_factory=dict)  # ScheduleConfig fields (paper: DDPM linear, 1000 steps)
    loss: dict[str, float] = field(default_factory=dict)  # LossWeights fields: diffusion, text
    tokenizer: dict[str, Any] = field(default_factory=dict)  # data side: path (a saved TextTokenizer), vocab_size, ...
    tasks: list[dict[str, Any]] = field(default_factory=list)  # data side: [{name, dataset, weight, ...}]
    # --- start from a pretrained LLM, freezing, LoRA (unimodal.llm_init) ------------------
    init: dict[str, Any] = field(default_factory=dict)  # {llm: DIR}: text side + tokenizer from a local HF causal LM
    freeze: list[str] = field(default_factory=list)  # parts to freeze: text, visual, all, or parameter-name patterns
    lora: dict[str, Any] = field(default_factory=dict)  # LoRA adapters: {r, alpha, dropout, target_modules, side}
    # --- batch ---------------------------------------------------------------------------
    batch_size: int = 32  # examples per rank per micro-step; global batch = batch_size * grad_accum * world
    grad_accum: int = 1  # micro-steps per optimizer step
    steps: int = 10000  # optimizer steps of the whole run
    pack_tokens: int | None = None  # pack examples first-fit into rows of this many tokens; None: pad each to the longest
    skip_bad_records: bool = False  # skip (and count) records a task cannot use instead of stopping with their error
    # --- optimiser: AdamW ------------------------------------------------------------------
    lr: float = 3e-4  # peak learning rate (paper)
    weight_decay: float = 0.0  # paper: none; when > 0 only matrices decay
    betas: tuple[float, float] = (0.9, 0.999)  # torch / DiT default (the paper gives none)
    adam_eps: float = 1e-8
    clip_grad: float = 1.0  # global grad-norm clip; 0 disables
    # --- learning-rate schedule ------------------------------------------------------------
    schedule: Literal["wsd", "cosine", "constant"] = "wsd"  # paper: warmup-stable-decay
    warmup_steps: int = 0  # linear warmup from lr/warmup_steps (the paper gives none)
    decay_frac: float = 0.15  # WSD: share of steps in the final decay (paper: last 15%)
    min_lr_ratio: float = 0.0  # lr at the last step, as a fraction of the peak
    # --- engine ------------------------------------------------------------------------------
    # bf16: mixed precision (ACDiT.set_precision): bf16 matmuls under autocast, fp32 weights (the master copy),
    # norms, softmax statistics and loss; auto: bf16 where the CPU (AMX/AVX512-BF16) or GPU supports it
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    # under bf16, what the DeepSpeed engine holds the weights and gradients in. fp32: autocast alone, the model's
    # fp32 weights are the master copy. bf16: DeepSpeed's bf16 mode (bf16 weights and gradients: half the weight
    # memory and gradient all-reduce traffic; an fp32 master copy in its bf16 optimizer). auto: bf16 on a GPU,
    # fp32 on CPU, where autocast alone steps 1.1x faster (benchmarks/trainer_precision.py); a resumed run keeps
    # what its checkpoint used
    weights_dtype: Literal["auto", "fp32", "bf16"] = "auto"
    # torch.compile the backbone's forward (ACDiT.compile_forward; inductor, CPU or GPU): elementwise work
    # (modulate, norms, rotary, gates) fused. Uniform-stream layouts (class->image) compile once each (~1 min on
    # 2 CPU cores); packed text+image batches share one dynamic-shape graph per block (~25 s, once); ZeRO 0-2
    compile: bool = False
    # processes that compute the coming batches ahead while the model trains (unimodal.train.prefetch);
    # the batches are the in-process ones (same order, exact resume). 0: in the training process
    loader_workers: int = 0
    zero_stage: int | None = None  # ZeRO 0..3; None: the DeepSpeed JSON's stage, else 0
    deepspeed: str | None = None  # DeepSpeed JSON for the other engine knobs: a path or "zero0".."zero3"
    cpu_shm_comm: bool = False  # CPU: use DeepSpeed's shared-memory all-reduce op (30-60 s first compile; set per process)
    # --- EMA ---------------------------------------------------------------------------------
    ema_decay: float = 0.9999  # paper; 0 disables the EMA
    # --- bookkeeping ---------------------------------------------------------------------------
    out_dir: str = "runs/train"  # checkpoints/, metrics.jsonl, config.yaml, tensorboard/
    ckpt_every: int = 1000  # steps between checkpoints (one is always written at the end)
    keep_last: int = 3  # checkpoints kept; 0 keeps all
    log_every: int = 10  # steps between metrics lines
    sample_every: int = 0  # steps between progress samples (out_dir/samples/step_N/samples.md); 0 never
    seed: int = 0  # model init, data order, noise and timesteps
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool = True  # also log to TensorBoard when torch.utils.tensorboard imports

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)  # YAML gives lists
        self.validate()

    # --- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the first bad field and what is valid."""
        hints = typing.get_type_hints(TrainConfig)
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        for name in ("batch_size", "grad_accum", "steps", "ckpt_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)} is invalid: must be > 0")
        if self.pack_tokens is not None and self.pack_tokens <= 0:
            raise ConfigError(f"TrainConfig.pack_tokens={self.pack_tokens} is invalid: must be a positive token count or null")
        for name in ("warmup_steps", "keep_last", "sample_every", "seed", "loader_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)} is invalid: must be >= 0")
        if self.warmup_steps > self.steps:
            raise ConfigError(f"TrainConfig.warmup_steps={self.warmup_steps} is invalid: exceeds steps={self.steps}")
        self._validate_floats()
        if self.schedule not in LR_SCHEDULES:
            raise ConfigError(f"TrainConfig.schedule={self.schedule!r} is invalid: must be one of {LR_SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"TrainConfig.precision={self.precision!r} is invalid: must be one of {PRECISIONS}")
        if self.weights_dtype not in WEIGHTS_DTYPES:
            raise ConfigError(f"TrainConfig.weights_dtype={self.weights_dtype!r} is invalid: must be one of {WEIGHTS_DTYPES}")
        if self.weights_dtype == "bf16" and self.precision == "fp32":
            raise ConfigError("TrainConfig.weights_dtype='bf16' needs precision 'bf16' or 'auto' (got precision='fp32')")
        if self.zero_stage is not None and self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"TrainConfig.zero_stage={self.zero_stage} is invalid: must be one of (0, 1, 2, 3)")
        if self.compile and self.zero_stage == 3:  # (a DeepSpeed JSON's stage 3: checked by the trainer)
            raise ConfigError("TrainConfig.compile=true needs zero_stage 0, 1 or 2: ZeRO-3 gathers each parameter in "
                              "module hooks that a compiled forward does not run")
        for name, cls in (("visual", VisualConfig), ("diffusion", ScheduleConfig), ("loss", LossWeights),
                          ("model_overrides", ModelConfig)):
            _check_keys(name, getattr(self, name), [f.name for f in fields(cls)])
        for i, t in enumerate(self.tasks):
            if "name" not in t:
                raise ConfigError(f"TrainConfig.tasks[{i}]={t} is invalid: a task entry needs a 'name'")
        self.visual_config(), self.schedule_config(), self.loss_weights()  # their own checks, named by field
        self._validate_finetune()
        self.model_config()
        self.deepspeed_base()

    def _validate_floats(self) -> None:
        """Every float option is finite and in its range (NaN and inf included), checked by name.

        A NaN learning rate used to pass here and fail inside torch after out_dir had been
        written; all checks run before anything touches the disk (docs/architecture.md, "Errors").
        """
        for name, low, high, low_open in _FLOAT_RANGES:
            check_float(f"TrainConfig.{name}", getattr(self, name), low=low, high=high, low_open=low_open)
        if self.ema_decay == 1.0:
            raise ConfigError(f"TrainConfig.ema_decay={self.ema_decay} is invalid: must be in [0, 1) (0 disables)")
        for i, b in enumerate(self.betas):
            check_float(f"TrainConfig.betas[{i}]", b, low=0.0, high=1.0)
            if b == 1.0:
                raise ConfigError(f"TrainConfig.betas={list(self.betas)} is invalid: both must be in [0, 1)")
        for k, v in self.loss.items():
            check_float(f"TrainConfig.loss.{k}", v, low=0.0)

    def _validate_finetune(self) -> None:
        """`init`, `freeze` and `lora` keys, checked by name (their targets are checked on the model)."""
        _check_keys("init", self.init, ["llm"])
        if self.init and not isinstance(self.init.get("llm"), str):
            raise ConfigError(f"TrainConfig.init={self.init!r} is invalid: expected {{llm: DIR}}")
        if self.init and self.tokenizer.get("path"):
            raise ConfigError("TrainConfig.init.llm brings its own tokenizer: remove tokenizer.path")
        if self.lora:
            from unimodal.llm_init.finetune import LoraSpec

            _nested("lora", LoraSpec.from_dict, self.lora)

    # --- the component configs ---------------------------------------------------------------
    def visual_config(self) -> VisualConfig:
        return _nested("visual", VisualConfig.from_dict, self.visual)

    def schedule_config(self) -> ScheduleConfig:
        return _nested("diffusion", lambda d: ScheduleConfig(**d), self.diffusion)

    def loss_weights(self) -> LossWeights:
        return _nested("loss", lambda d: LossWeights(**{k: float(v) for k, v in d.items()}), self.loss)

    def model_config(self, vocab_size: int | None = None) -> ModelConfig:
        """The model: preset or YAML, its token_dim from `visual`, its vocab from the tokenizer, then overrides.

        Args:
            vocab_size: the text tokenizer's vocabulary (default: `tokenizer.vocab_size` when set).
        """
        if self.init.get("llm"):  # the LLM fixes the text side; visual-side fields come from here
            from unimodal.llm_init.hf import model_config_from_llm, read_llm_config

            src = read_llm_config(self.init["llm"])
            over = {"token_dim": self.visual_config().token_dim, **self.model_overrides}
            return _nested("init", lambda d: model_config_from_llm(src, vocab_size, **d), over)
        if self.model not in PRESETS and not Path(self.model).is_file():
            raise ConfigError(
                f"TrainConfig.model={self.model!r} is neither a model preset {list(PRESETS)} nor a YAML file."
                f"{suggest(self.model, list(PRESETS))}"
            )
        auto: dict[str, Any] = {"token_dim": self.visual_config().token_dim}
        vocab = vocab_size if vocab_size is not None else self.tokenizer.get("vocab_size")
        if vocab is not None and vocab != "auto":  # auto: known once the tokenizer is trained
            auto["vocab_size"] = int(vocab)
        for k, v in auto.items():
            if k in self.model_overrides and self.model_overrides[k] != v:
                source = "visual (channels * patch_size**2)" if k == "token_dim" else "the tokenizer"
                raise ConfigError(
                    f"TrainConfig.model_overrides.{k}={self.model_overrides[k]} contradicts {k}={v} from {source}"
                )
        return _nested("model_overrides", lambda d: ModelConfig.resolve(self.model, **d), {**auto, **self.model_overrides})

    def deepspeed_base(self) -> dict[str, Any]:
        """The DeepSpeed JSON named by `deepspeed` ({} when unset), checked against the fields the trainer owns."""
        if self.deepspeed is None:
            return {}
        path = Path(self.deepspeed)
        named = shipped_path(f"deepspeed/{self.deepspeed}.json")  # zero0..zero3, shipped as package data
        if not path.is_file() and named.is_file():
            path = named
        if not path.is_file():
            names = shipped_names("deepspeed", ".json")
            raise ConfigError(f"TrainConfig.deepspeed={self.deepspeed!r}: no such file (named configs: {names})")
        try:
            base = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"TrainConfig.deepspeed={self.deepspeed!r}: {path} is not valid JSON: {e}") from None
        if not isinstance(base, dict):
            raise ConfigError(f"TrainConfig.deepspeed={self.deepspeed!r}: {path} must hold a JSON object")
        owned = [k for k in _OWNED_DS_KEYS if k in base]
        if owned:
            raise ConfigError(
                f"DeepSpeed config {path} sets {owned}: these come from TrainConfig (batch_size, grad_accum, "
                f"clip_grad, precision; AdamW and the lr schedule are the trainer's) — remove them from the JSON"
            )
        stage = base.get("zero_optimization", {}).get("stage")
        if stage is not None and self.zero_stage is not None and stage != self.zero_stage:
            raise ConfigError(f"TrainConfig.zero_stage={self.zero_stage} contradicts zero_optimization.stage={stage} in {path}")
        return base

    @property
    def resolved_zero_stage(self) -> int:
        if self.zero_stage is not None:
            return self.zero_stage
        return int(self.deepspeed_base().get("zero_optimization", {}).get("stage", 0))

    def engine_bf16(self, resumed: bool | None = None) -> bool:
        """Whether the DeepSpeed engine runs in its bf16 mode (see `weights_dtype`).

        `resumed`: the mode of the checkpoint being resumed (`run_state.engine_bf16_of`), if any. Under "auto"
        the resumed run keeps it: DeepSpeed's bf16 optimizer state (its fp32 master groups) and a plain
        AdamW's cannot be loaded into each other. An explicit `weights_dtype` that differs is an error.
        """
        from ..model.acdit import resolve_precision

        if resolve_precision(self.precision) != "bf16":
            want = False
        elif self.weights_dtype != "auto":
            want = self.weights_dtype == "bf16"
        elif resumed is not None:
            return resumed
        else:
            import torch

            want = torch.cuda.is_available()
        if resumed is not None and resumed != want:
            was, now = ("bf16", "fp32") if resumed else ("fp32", "bf16")
            raise ConfigError(
                f"the checkpoint to resume was trained with {was} weights in the engine, this config asks for {now} "
                f"(precision={self.precision!r}, weights_dtype={self.weights_dtype!r}); resume with "
                f"{'precision=bf16 ' if resumed else ''}weights_dtype={was} or auto, or start a new run"
            )
        return want

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping, rejecting unknown keys by name."""
        if not isinstance(d, dict):
            raise ConfigError(f"a training config must be a mapping, got {type(d).__name__}")
        valid = [f.name for f in fields(cls)]
        for k in d:
            if k not in valid:
                raise ConfigError(f"unknown TrainConfig key {k!r}; valid keys: {valid}.{suggest(str(k), valid)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "TrainConfig":
        """Read a YAML mapping of TrainConfig keys, then apply `key=value` overrides."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config file {str(path)!r} does not exist")
        try:
            data = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"training config file {str(path)!r} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"training config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
        return cls.from_dict(apply_overrides(data, overrides))

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> "TrainConfig":
        """A copy with `key=value` overrides applied."""
        return TrainConfig.from_dict(apply_overrides(self.to_dict(), overrides))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The resolved config as YAML; also written to `path` when given."""
        return dump_yaml(self.to_dict(), path)


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads `1e-3` as a float (YAML 1.2; PyYAML's 1.1 rules need `1.0e-3`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """yaml.safe_load with YAML 1.2 floats (`1e-3`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `key=value` strings to a config mapping (a deep copy is returned).

    Keys are dotted paths (`lr`, `train.lr`, `visual.image_size`, `tasks.0.weight`);
    values are parsed with yaml.safe_load (plus `1e-3` floats) (`1e-3`, `true`, `[0.9, 0.95]`, `{name: x}`).

    Raises:
        ConfigError: malformed override, unknown top-level key, or a path through a non-container.
    """
    import copy

    data = copy.deepcopy(data)
    valid = [f.name for f in fields(TrainConfig)]
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        parts = key.split(".")
        if parts[0] == "train" and len(parts) > 1:
            parts = parts[1:]
        if parts[0] not in valid:
            raise ConfigError(
                f"unknown TrainConfig key {parts[0]!r} in override {item!r}; valid keys: {valid}.{suggest(parts[0], valid)}"
            )
        try:
            value = load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value {raw!r} is not valid YAML") from None
        node: Any = data
        for i, p in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, dict):
                if p not in node or node[p] is None:
                    node[p] = {}
                node = node[p]
            elif isinstance(node, list) and p.isdigit() and int(p) < len(node):
                node = node[int(p)]
            else:
                raise ConfigError(f"override {item!r}: {where!r} is not a mapping or list index")
        last = parts[-1]
        if isinstance(node, dict):
            node[last] = value
        elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        else:
            where = ".".join(parts[:-1])
            raise ConfigError(f"override {item!r}: {where!r} is not a mapping or list index (it holds {node!r})")
    return data


# --- helpers ---------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return f"one of {get_args(tp)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp)) if origin is None else str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin is Literal:
        return value in get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in get_args(tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        args = get_args(tp)
        return isinstance(value, (tuple, list)) and len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin is list:
        (a,) = get_args(tp)
        return isinstance(value, list) and all(_matches(v, a) for v in value)
    if origin is dict:
        k, v = get_args(tp)
        return isinstance(value, dict) and all(_matches(x, k) and _matches(y, v) for x, y in value.items())
    return isinstance(value, tp)


def _check_type(name: str, value: Any, tp: Any) -> None:
    if not _matches(value, tp):
        raise ConfigError(f"TrainConfig.{name}={value!r} is invalid: expected {_type_name(tp)}")


def _check_keys(name: str, d: dict[str, Any], valid: list[str]) -> None:
    for k in d:
        if k not in valid:
            full = [f"{name}.{v}" for v in valid]
            raise ConfigError(f"unknown key {name}.{k!s}; valid keys: {full}.{suggest(f'{name}.{k}', full)}")


def _nested(name: str, build: Any, d: dict[str, Any]) -> Any:
    """Build a component config; its own ConfigError (or a TypeError) is re-raised naming the TrainConfig key."""
    try:
        return build(dict(d))
    except ConfigError as e:
        raise ConfigError(f"TrainConfig.{name}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"TrainConfig.{name}={d} is invalid: {e}") from None
