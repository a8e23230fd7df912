import json
from pathlib import Path

import pytest
import torch

from unimodal.cli import main
from unimodal.config import ConfigError
from unimodal.train import TrainConfig
from unimodal.train.engine import deepspeed_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_paper_and_round_trip_through_yaml(tmp_path):
    cfg = TrainConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.schedule, cfg.decay_frac, cfg.ema_decay) == (3e-4, 0.0, "wsd", 0.15, 0.9999)
    cfg = TrainConfig(visual={"image_size": 32, "patch_size": 4}, tasks=[{"name": "class_to_image", "dataset": "digits"}],
                      betas=(0.9, 0.95), zero_stage=2)
    p = tmp_path / "t.yaml"
    cfg.to_yaml(p)
    assert TrainConfig.from_file(p) == cfg
    assert cfg.model_config().token_dim == 3 * 4 * 4  # follows the visual config


def test_overrides_dotted_prefixed_and_yaml_typed(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("lr: 1e-4\ntasks:\n  - {name: a, dataset: digits}\n")
    cfg = TrainConfig.from_file(p, ["train.lr=1e-3", "steps=50", "visual.image_size=32", "betas=[0.9, 0.95]",
                                    "tasks.0.weight=2", "model_overrides.n_layer=3", "deepspeed=zero2"])
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float) and cfg.steps == 50 and cfg.betas == (0.9, 0.95)
    assert cfg.visual == {"image_size": 32} and cfg.tasks == [{"name": "a", "dataset": "digits", "weight": 2}]
    assert cfg.model_config().n_layer == 3 and cfg.resolved_zero_stage == 2
    assert TrainConfig.from_file(p).lr == 1e-4  # '1e-4' in YAML is a float here, not PyYAML's string


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("lrr=1e-3", r"unknown TrainConfig key 'lrr'.*Did you mean 'lr'"),
        ("steps=abc", r"TrainConfig.steps='abc' is invalid: expected int"),
        ("lr=fast", r"TrainConfig.lr='fast'"),
        ("betas=[0.9]", r"TrainConfig.betas"),
        ("schedule=linear", r"TrainConfig.schedule='linear'.*wsd"),
        ("zero_stage=4", r"zero_stage=4"),
        ("seed=-1", r"TrainConfig.seed=-1 is invalid: must be >= 0"),
        ("pack_tokens=0", r"TrainConfig.pack_tokens=0 is invalid: must be a positive token count"),
        ("skip_bad_records=maybe", r"TrainConfig.skip_bad_records"),
        ("ema_decay=1", r"ema_decay=1 is invalid"),
        ("visual.image_sz=8", r"visual.image_sz.*Did you mean 'visual.image_size'"),
        ("visual.patch_size=5", r"TrainConfig.visual: .*patch_size=5"),
        ("model_overrides.token_dim=7", r"model_overrides.token_dim=7 contradicts token_dim=192"),
        ("model=Tiny", r"TrainConfig.model='Tiny' is neither a model preset.*Did you mean 'tiny'"),
        ("loss.txt=1", r"loss.txt.*Did you mean 'loss.text'"),
        ("deepspeed=zero9", r"deepspeed='zero9'.*zero0"),
        ("lr", r"not of the form key=value"),
        ("steps.x=1", r"'steps' is not a mapping"),
    ],
)
def test_bad_overrides_name_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig().with_overrides([override])


def test_weights_dtype_follows_a_resumed_checkpoint_and_refuses_a_change():
    cfg = TrainConfig(precision="bf16")
    assert cfg.engine_bf16(resumed=True) is True and cfg.engine_bf16(resumed=False) is False  # auto keeps it
    with pytest.raises(ConfigError, match="trained with bf16 weights in the engine, this config asks for fp32"):
        cfg.with_overrides(["weights_dtype=fp32"]).engine_bf16(resumed=True)
    with pytest.raises(ConfigError, match="trained with fp32 weights in the engine, this config asks for bf16"):
        cfg.with_overrides(["weights_dtype=bf16"]).engine_bf16(resumed=False)
    with pytest.raises(ConfigError, match="trained with bf16 weights.*precision=bf16"):
        TrainConfig(precision="fp32").engine_bf16(resumed=True)
    with pytest.raises(ConfigError, match=r"weights_dtype='bf16' needs precision 'bf16' or 'auto'"):
        TrainConfig(precision="fp32", weights_dtype="bf16")
    with pytest.raises(ConfigError, match=r"weights_dtype='fp16' is invalid"):
        TrainConfig(precision="bf16", weights_dtype="fp16")


def test_deepspeed_json_files_and_the_engine_config(tmp_path):
    for stage in range(4):
        data = json.loads((ROOT / "configs" / "deepspeed" / f"zero{stage}.json").read_text())
        assert data["zero_optimization"]["stage"] == stage
        cfg = TrainConfig(deepspeed=f"zero{stage}", batch_size=3, grad_accum=2, clip_grad=0.5, precision="bf16")
        ds = deepspeed_config(cfg)
        assert ds["zero_optimization"] == data["zero_optimization"]
        assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (3, 2, 0.5)
        assert ds["steps_per_print"] >= 10**6 and ds["wall_clock_breakdown"] is False
        assert ds["bf16"] == {"enabled": torch.cuda.is_available()}  # weights_dtype auto: bf16 weights on a GPU only
        assert deepspeed_config(cfg.with_overrides(["weights_dtype=bf16"]))["bf16"] == {"enabled": True}
        assert deepspeed_config(cfg.with_overrides(["precision=fp32"]))["bf16"] == {"enabled": False}
    with pytest.raises(ConfigError, match="zero_stage=1 contradicts zero_optimization.stage=3"):
        TrainConfig(deepspeed="zero3", zero_stage=1)
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"optimizer": {"type": "Adam"}, "zero_optimization": {"stage": 1}}))
    with pytest.raises(ConfigError, match=r"sets \['optimizer'\]"):
        TrainConfig(deepspeed=str(bad))


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    p = tmp_path / "t.yaml"
    p.write_text("steps: 10\n")
    assert main(["train", "--config", str(p), "lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unimodal train: error:" in err and "'lrr'" in err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    p.write_text("- a list\n")
    assert main(["train", "--config", str(p)]) == 2
    assert "must hold a mapping" in capsys.readouterr().err
