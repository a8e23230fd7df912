"""The EMA averages only trainable parameters; saved EMA states stay full (frozen weights at their live values)."""

import pytest
import torch
from synthetic_source import SyntheticDigits, tiny_config

from unimodal.train.ema import EMA

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_frozen_parameters_are_not_copied_and_are_filled_from_the_live_weights():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    m[0].requires_grad_(False)
    ema = EMA(m, decay=0.9)
    assert sorted(ema.shadow) == ["1.bias", "1.weight"] and ema.frozen == ["0.weight", "0.bias"]
    with torch.no_grad():
        m[1].weight.add_(1.0)
    ema.update(m)
    live = {k: v.detach().clone() for k, v in m.state_dict().items()}
    assert sorted(ema.state_dict()) == ["1.bias", "1.weight"]  # without `live`: the averaged ones only
    full = ema.state_dict(live)
    assert full.keys() == live.keys() and all(torch.equal(full[k], live[k]) for k in ("0.weight", "0.bias"))
    assert ema.frozen_state(m).keys() == {"0.weight", "0.bias"}
    other = EMA(m, decay=0.9)
    other.load_state_dict(full)  # a full state (frozen names included) loads
    assert torch.equal(other.shadow["1.weight"], full["1.weight"])
    with pytest.raises(KeyError, match="lacks the frozen"):
        ema.state_dict({"1.weight": live["1.weight"]})


def test_lora_run_saves_a_full_ema_and_resumes_it_exactly(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "llm_init"))
    from llm_helpers import make_llm

    from unimodal.checkpoint import EMA_ADAPTER_FILE, EMA_FILE, read_weights
    from unimodal.train import train

    llm = tmp_path / "llm"
    make_llm("qwen3", llm)

    def cfg(out):
        return tiny_config(out, model_overrides={"num_classes": 10}, init={"llm": str(llm)}, freeze=["text"],
                           lora={"r": 4, "alpha": 8.0, "side": "text"}, batch_size=2, steps=4, ckpt_every=2,
                           schedule="constant", warmup_steps=0, ema_decay=0.9, sample_every=4)

    seen = {}
    res = train(cfg(tmp_path / "run"), SyntheticDigits(), sample_hook=lambda step, m: seen.update(m.state_dict()))
    again = train(cfg(tmp_path / "resumed"), SyntheticDigits(), resume=str(tmp_path / "run" / "checkpoints" / "step_0000002"))
    for f in (EMA_FILE, EMA_ADAPTER_FILE):
        a, b = read_weights(res.checkpoint / f), read_weights(again.checkpoint / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    ema, model = read_weights(res.checkpoint / EMA_FILE), read_weights(res.checkpoint / "model.safetensors")
    assert ema.keys() == model.keys()  # a full state: frozen weights included
    assert torch.equal(ema["tok_embeddings.weight"], model["tok_embeddings.weight"])  # frozen: its live value
    assert not torch.equal(ema["x_embedder.weight"], model["x_embedder.weight"])  # trained: averaged
    # the sample hook's model holds the EMA, frozen weights filled in from the live ones
    assert torch.equal(seen["x_embedder.weight"], ema["x_embedder.weight"])
    assert torch.equal(seen["tok_embeddings.weight"], model["tok_embeddings.weight"])
