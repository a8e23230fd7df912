"""Typed model configuration with named presets and YAML in/out.

`ModelConfig.from_name("B", vocab_size=32000)` gives a preset with overrides;
`ModelConfig.from_file("configs/model/B.yaml")` reads one; `cfg.to_yaml()`
writes the resolved config that travels with every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError, check_fields, suggest  # re-exported
from .registry import Registry

ATTN_BACKENDS = ("auto", "sdpa", "flex", "math", "bias")
CPU_LINEARS = ("auto", "aten", "onednn")
ROPE_STYLES = ("mrope", "acdit")
GATE_INITS = ("zero", "one")
ROPE_FREQS = ("axis", "shared")
ROPE_SCALINGS = ("linear", "llama3")
MLP_KINDS = ("gelu", "swiglu")

# name -> ModelConfig fields (n_layer, d_model); head dim is 64 for every preset (paper, DiT).
PRESETS: Registry[dict[str, Any]] = Registry("model preset", ConfigError)
PRESETS.add("tiny", dict(n_layer=2, d_model=128))  # CPU tests: 2 heads
PRESETS.add("S", dict(n_layer=12, d_model=384))  # DiT-S size: 6 heads
PRESETS.add("B", dict(n_layer=12, d_model=768))  # ACDiT-B 132M
PRESETS.add("L", dict(n_layer=24, d_model=1024))  # ACDiT-L 460M
PRESETS.add("XL", dict(n_layer=28, d_model=1152))  # ACDiT-XL 677M
PRESETS.add("H", dict(n_layer=32, d_model=1280))  # ACDiT-H 954M


@dataclass(frozen=True)
class PaperSampling:
    """The paper's sampling settings (docs/architecture.md, "Diffusion"), read by every default in the code.

    DPM-Solver++ (2nd order), 25 steps per block, classifier-free guidance 1.5 for images
    and 2.5 for video. YAML files (eval tasks) may spell the values out.
    """

    sampler: str = "dpm++"
    steps: int = 25
    cfg_image: float = 1.5
    cfg_video: float = 2.5

    def cfg(self, video: bool = False) -> float:
        """The guidance scale of images (or of video)."""
        return self.cfg_video if video else self.cfg_image


PAPER_SAMPLING = PaperSampling()


@dataclass
class ModelConfig:
    """Shape of an ACDiT backbone over interleaved text and visual tokens.

    Attributes follow docs/architecture.md, "Backbone"; every default carries its reason.
    """

    name: str = "tiny"
    n_layer: int = 2  # transformer blocks
    d_model: int = 128  # hidden width; n_head = d_model // head_dim
    head_dim: int = 64  # paper and DiT use 64 for every size
    mlp_ratio: float = 4.0  # DiT MLP ratio, tanh-GELU
    mlp: Literal["gelu", "swiglu"] = "gelu"  # gelu: DiT's tanh-GELU MLP; swiglu: Llama's silu(gate) * up
    ffn_dim: int = 0  # MLP hidden width; 0: int(d_model * mlp_ratio)
    mlp_bias: bool = True  # biases in the MLP linears (DiT: yes; Llama/Qwen: no)
    q_heads: int = 0  # query heads; 0: d_model // head_dim (Qwen3 decouples head_dim from d_model)
    n_kv_head: int = 0  # key/value heads (grouped-query attention); 0: as many as query heads
    qkv_bias: bool = True  # as the released ACDiT
    proj_bias: bool = True  # bias of the attention output projection (release: yes; Llama/Qwen: no)
    qk_norm: bool = True  # per-head RMSNorm on queries and keys (release, Qwen3); Llama/Qwen2: none
    norm_eps: float = 1e-6  # RMSNorm eps of the release
    vocab_size: int = 512  # text vocabulary (0: no text path)
    tie_embeddings: bool = False  # share token embedding and LM head
    token_dim: int = 48  # visual token width: channels * patch**2 (pixels) or VAE channels * patch**2
    num_classes: int = 0  # class-conditional label table size (0: none); null class = num_classes
    # text in a noisy block's condition: the mean token embedding of the text before the block in its
    # document, through an MLP, added to its AdaLN condition beside t and the class (as SD3's pooled
    # prompt vector); the prompt then steers every noisy token directly, not only through attention
    # (docs/architecture.md, "Conditioning"). Needs vocab_size > 0. The clean stream is unchanged.
    text_condition: bool = False
    # the noisy tokens' AdaLN residual gates. zero: the modulation's gate itself, zero at init (DiT's
    # adaLN-Zero; the paper and the release). one: 1 + the gate, so a noisy token starts with the clean
    # tokens' open residual and the noisy stream is the whole trunk from step 0; the modulation learns a
    # deviation (docs/architecture.md, "Conditioning"). The model output still starts at zero.
    gate_init: Literal["zero", "one"] = "zero"
    rope_axes: tuple[int, int, int] = (16, 24, 24)  # head dim split over (t, h, w); each even, sums to head_dim
    rope_theta: float = 10000.0  # rotary base for every axis
    rope_style: Literal["mrope", "acdit"] = "mrope"  # "acdit" reproduces the release's RoPE-ND quirks
    # mrope frequencies. axis: each axis its own ladder theta^(-2k/d_axis); shared: one 1-D ladder
    # theta^(-2k/head_dim) whose pairs are dealt to (t, h, w) in rope_axes order, so with equal
    # positions on the three axes (text) it is exactly a causal LM's 1-D RoPE
    rope_freqs: Literal["axis", "shared"] = "axis"
    # None, or {rope_type: linear, factor} / {rope_type: llama3, factor, low_freq_factor,
    # high_freq_factor, original_max_position_embeddings}, as in a Hugging Face config.json
    rope_scaling: dict[str, Any] | None = None
    # auto: flex on CUDA, SDPA + dense mask elsewhere (bf16 on CPU with <= 128 keys: written-out "math" attention;
    # compiled CPU graphs: written-out attention with an additive fp32 mask, "bias"). math / bias force those routes
    attn_backend: Literal["auto", "sdpa", "flex", "math", "bias"] = "auto"
    freq_dim: int = 256  # sinusoidal timestep embedding width (release: 256)
    # the GEMM of the token-wise projections (qkv, proj, MLP) in fp32 on a CPU: "onednn" (unimodal.model.cpu_gemm;
    # auto, where torch ships it) or "aten" (F.linear: the BLAS torch was built with). bf16, autocast and CUDA
    # always take F.linear. Both are true fp32 GEMMs; the parameters are the same
    cpu_linear: Literal["auto", "aten", "onednn"] = "auto"

    def __post_init__(self) -> None:
        self.rope_axes = tuple(int(a) for a in self.rope_axes)  # YAML gives lists
        self.validate()

    @property
    def n_head(self) -> int:
        """Query heads."""
        return self.q_heads or self.d_model // self.head_dim

    @property
    def kv_heads(self) -> int:
        """Key/value heads (equal to n_head without grouped-query attention)."""
        return self.n_kv_head or self.n_head

    @property
    def mlp_hidden(self) -> int:
        """MLP hidden width."""
        return self.ffn_dim or int(self.d_model * self.mlp_ratio)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field and what is valid."""
        for f in ("n_layer", "d_model", "head_dim", "token_dim", "freq_dim"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"ModelConfig.{f}={v!r} is invalid: must be a positive integer")
        for f in ("vocab_size", "num_classes", "ffn_dim", "q_heads", "n_kv_head"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"ModelConfig.{f}={v!r} is invalid: must be an integer >= 0")
        if self.n_head % self.kv_heads:
            raise ConfigError(
                f"ModelConfig.n_kv_head={self.n_kv_head} is invalid: must divide the {self.n_head} query heads"
            )
        if self.mlp not in MLP_KINDS:
            raise ConfigError(f"ModelConfig.mlp={self.mlp!r} is invalid: must be one of {MLP_KINDS}")
        if self.rope_freqs not in ROPE_FREQS:
            raise ConfigError(f"ModelConfig.rope_freqs={self.rope_freqs!r} is invalid: must be one of {ROPE_FREQS}")
        if self.rope_freqs == "shared" and self.rope_style != "mrope":
            raise ConfigError("ModelConfig.rope_freqs='shared' needs rope_style='mrope'")
        self._validate_rope_scaling()
        if not self.q_heads and self.d_model % self.head_dim:
            raise ConfigError(
                f"ModelConfig.d_model={self.d_model} is invalid: must be a multiple of head_dim={self.head_dim}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"ModelConfig.head_dim={self.head_dim} is invalid: must be even for rotary embeddings")
        if len(self.rope_axes) != 3 or any(a < 0 or a % 2 for a in self.rope_axes) or sum(self.rope_axes) != self.head_dim:
            raise ConfigError(
                f"ModelConfig.rope_axes={self.rope_axes} is invalid: need 3 even non-negative widths for (t, h, w) "
                f"summing to head_dim={self.head_dim}"
            )
        if self.mlp_ratio <= 0:
            raise ConfigError(f"ModelConfig.mlp_ratio={self.mlp_ratio} is invalid: must be > 0")
        if self.rope_theta <= 0:
            raise ConfigError(f"ModelConfig.rope_theta={self.rope_theta} is invalid: must be > 0")
        if self.rope_style not in ROPE_STYLES:
            raise ConfigError(f"ModelConfig.rope_style={self.rope_style!r} is invalid: must be one of {ROPE_STYLES}")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ConfigError(
                f"ModelConfig.attn_backend={self.attn_backend!r} is invalid: must be one of {ATTN_BACKENDS}"
            )
        if self.cpu_linear not in CPU_LINEARS:
            raise ConfigError(f"ModelConfig.cpu_linear={self.cpu_linear!r} is invalid: must be one of {CPU_LINEARS}")
        if self.tie_embeddings and self.vocab_size == 0:
            raise ConfigError("ModelConfig.tie_embeddings=True needs vocab_size > 0")
        if not isinstance(self.text_condition, bool):
            raise ConfigError(f"ModelConfig.text_condition={self.text_condition!r} is invalid: must be true or false")
        if self.text_condition and self.vocab_size == 0:
            raise ConfigError("ModelConfig.text_condition=True needs vocab_size > 0 (it pools the text embeddings)")
        if self.gate_init not in GATE_INITS:
            raise ConfigError(f"ModelConfig.gate_init={self.gate_init!r} is invalid: must be one of {GATE_INITS}")

    def _validate_rope_scaling(self) -> None:
        sc = self.rope_scaling
        if sc is None:
            return
        kind = sc.get("rope_type", sc.get("type")) if isinstance(sc, dict) else None
        if kind not in ROPE_SCALINGS:
            raise ConfigError(
                f"ModelConfig.rope_scaling={sc!r} is invalid: rope_type must be one of {ROPE_SCALINGS} (or null)"
            )
        need = ("factor",) if kind == "linear" else (
            "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        for k in need:
            v = sc.get(k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"ModelConfig.rope_scaling.{k}={v!r} is invalid: {kind} scaling needs it > 0")

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "ModelConfig":
        """Preset by name (`tiny`, `S`, `B`, `L`, `XL`, `H`) with field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; valid presets: {list(PRESETS)}.{suggest(name, list(PRESETS))}")
        return cls.from_dict({"name": name, **PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a mapping, rejecting unknown keys by name."""
        check_fields(d, [f.name for f in fields(cls)], "ModelConfig field")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        """Read a YAML file. A `preset:` key starts from that preset; other keys override it."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"model config file {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"model config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
        preset = data.pop("preset", None)
        return cls.from_name(preset, **data) if preset else cls.from_dict(data)

    @classmethod
    def resolve(cls, spec: "str | Path | ModelConfig", **overrides: Any) -> "ModelConfig":
        """A preset name, a YAML path, or a config (copied) — with overrides."""
        if isinstance(spec, ModelConfig):
            return dataclasses.replace(spec, **overrides)
        if str(spec) in PRESETS:
            return cls.from_name(str(spec), **overrides)
        cfg = cls.from_file(spec)
        return dataclasses.replace(cfg, **overrides) if overrides else cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rope_axes"] = list(self.rope_axes)
        return d

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The resolved config as YAML; also written to `path` when given."""
        return dump_yaml(self.to_dict(), path)

    def num_params_estimate(self) -> int:
        """Rough parameter count of the transformer blocks (12·D² per layer + adaLN 6·D² per layer)."""
        return self.n_layer * 18 * self.d_model**2


def dump_yaml(data: dict[str, Any], path: str | Path | None = None) -> str:
    """YAML text of a resolved config (key order kept); also written to `path` when given."""
    text = yaml.safe_dump(data, sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text


def list_presets() -> list[str]:
    return list(PRESETS)



@dataclass
class VisualConfig:
    """How pixels become visual tokens and blocks (pixel-space patches; a VAE adds `vae_dir`).

    The token grid is (image_size / (vae_downsample * patch_size))²; blocks are
    block_h × block_w tokens (video: frames_per_block whole frames).
    """

    channels: int = 3  # pixel channels, or VAE latent channels
    image_size: int = 64  # pixels per side
    patch_size: int = 8  # tokens are patch_size² pixels (latent cells with a VAE)
    block_h: int = 4  # block height in tokens
    block_w: int = 4  # block width in tokens
    frames: int = 1  # >1: video
    frames_per_block: int = 1
    vae_dir: str | None = None  # local AutoencoderKL directory (latent path); None: pixel space
    vae_downsample: int = 8  # SD-VAE spatial factor (used only with vae_dir)

    def __post_init__(self) -> None:
        for f in ("channels", "image_size", "patch_size", "block_h", "block_w", "frames", "frames_per_block", "vae_downsample"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"VisualConfig.{f}={v!r} is invalid: must be a positive integer")
        side = self.image_size // (self.vae_downsample if self.vae_dir else 1)
        if side % self.patch_size:
            raise ConfigError(
                f"VisualConfig.patch_size={self.patch_size} does not divide the {side}-pixel side "
                f"(image_size={self.image_size}{', after the VAE' if self.vae_dir else ''})"
            )
        g = side // self.patch_size
        if g % self.block_h or g % self.block_w:
            raise ConfigError(
                f"VisualConfig block {self.block_h}x{self.block_w} does not tile the {g}x{g} token grid"
            )
        if self.frames % self.frames_per_block:
            raise ConfigError(f"VisualConfig.frames={self.frames} is not divisible by frames_per_block={self.frames_per_block}")

    @property
    def grid(self) -> int:
        """Tokens per side."""
        return self.image_size // (self.vae_downsample if self.vae_dir else 1) // self.patch_size

    @property
    def token_dim(self) -> int:
        return self.channels * self.patch_size**2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VisualConfig":
        check_fields(d, [f.name for f in fields(cls)], "VisualConfig field")
        return cls(**d)
