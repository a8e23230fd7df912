from pathlib import Path

import pytest
import yaml

from unimodal.config import PRESETS, ConfigError, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
# (layers, width): DiT's S/B/L/XL sizes, ACDiT's H, and the 2x128 test model
SHAPES = {"tiny": (2, 128), "S": (12, 384), "B": (12, 768), "L": (24, 1024), "XL": (28, 1152), "H": (32, 1280)}


def test_presets_have_paper_shapes():
    expect = {"B": (12, 768), "L": (24, 1024), "XL": (28, 1152), "H": (32, 1280)}
    for name, (layers, width) in expect.items():
        cfg = ModelConfig.from_name(name)
        assert (cfg.n_layer, cfg.d_model, cfg.head_dim) == (layers, width, 64)
        assert cfg.n_head == width // 64


def test_yaml_round_trip(tmp_path):
    cfg = ModelConfig.from_name("S", vocab_size=1000, num_classes=10, rope_axes=(0, 32, 32))
    p = tmp_path / "m.yaml"
    cfg.to_yaml(p)
    assert ModelConfig.from_file(p) == cfg


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(d_model=100), "d_model"),
        (dict(rope_axes=(16, 16, 16)), "rope_axes"),
        (dict(attn_backend="cuda"), "attn_backend"),
        (dict(n_layer=0), "n_layer"),
        (dict(vocab_size=-1), "vocab_size"),
    ],
)
def test_bad_values_are_named(overrides, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_name("tiny", **overrides)


def test_unknown_names_suggest_close_matches():
    # the suggestion is the closest name first, not just the list of valid names (which holds them all)
    with pytest.raises(ConfigError, match=r"unknown model preset 'XXL'.*\. Did you mean 'XL'"):
        ModelConfig.from_name("XXL")
    with pytest.raises(ConfigError, match=r"unknown model preset 'tny'.*\. Did you mean 'tiny'\?$"):
        ModelConfig.from_name("tny")
    with pytest.raises(ConfigError, match=r"unknown ModelConfig field 'n_layers'.*\. Did you mean 'n_layer'"):
        ModelConfig.from_name("tiny", n_layers=3)
    with pytest.raises(ConfigError) as e:
        ModelConfig.from_name("zzzzzz")
    assert "Did you mean" not in str(e.value)  # nothing close: no guess


def test_every_yaml_under_configs_loads():
    files = sorted((ROOT / "configs").rglob("*.yaml"))
    assert files, "configs/ holds no YAML"
    model_files = {p.stem for p in (ROOT / "configs" / "model").glob("*.yaml")}
    assert set(PRESETS) <= model_files
    for p in files:
        data = yaml.safe_load(p.read_text())
        assert isinstance(data, dict), p
        if p.parent.name == "model":
            cfg = ModelConfig.from_file(p)
            assert cfg.name == p.stem
            assert (cfg.n_layer, cfg.d_model) == SHAPES[p.stem], p  # the preset's own sizes, not another's
