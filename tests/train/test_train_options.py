"""Trainer options and refusals no other test reaches: weight-decay groups, clip_grad, the exit code of a
diverged run, resuming without the EMA file, and a resume checkpoint holding a foreign pickle."""

from __future__ import annotations

import math
import os
import pickle

import pytest
import torch
from synthetic_source import SyntheticDigits, tiny_config

from unimodal.checkpoint import read_weights
from unimodal.cli import main
from unimodal.model import ACDiT
from unimodal.train import train
from unimodal.train.engine import param_groups

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def initial_weights(cfg) -> dict[str, torch.Tensor]:
    """The weights a run starts from: the trainer seeds torch with cfg.seed, then builds the model."""
    torch.manual_seed(cfg.seed)
    return {k: v.detach().clone() for k, v in ACDiT(cfg.model_config()).state_dict().items()}


def one_step(out, **kw) -> dict[str, torch.Tensor]:
    cfg = tiny_config(out, steps=1, ckpt_every=1, warmup_steps=1, ema_decay=0.0, **kw)  # step 0 runs at the peak lr
    result = train(cfg, SyntheticDigits())
    return read_weights(result.checkpoint / "model.safetensors")


def test_param_groups_decay_matrices_only():
    """nanoGPT's rule, by hand for Linear(3, 4) + LayerNorm(4): only the 4x3 weight decays."""
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    groups = param_groups(m, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [p is m[0].weight for p in groups[0]["params"]] == [True]
    assert {id(p) for p in groups[1]["params"]} == {id(m[0].bias), id(m[1].weight), id(m[1].bias)}
    frozen = torch.nn.Linear(2, 2)
    frozen.bias.requires_grad_(False)
    assert [len(g["params"]) for g in param_groups(frozen, 0.1)] == [1]  # no empty no-decay group, frozen skipped


def test_weight_decay_shrinks_matrices_and_leaves_vectors_alone(tmp_path):
    """AdamW's decoupled decay: w1(wd) - w1(0) = -lr·wd·w0 for matrices, exactly 0 for norms and biases."""
    lr, wd = 1e-3, 0.5
    cfg = tiny_config(tmp_path / "x")
    w0 = initial_weights(cfg)
    plain = one_step(tmp_path / "plain", lr=lr)
    decayed = one_step(tmp_path / "decayed", lr=lr, weight_decay=wd)
    assert plain.keys() == decayed.keys() == w0.keys()
    matrices = [k for k in w0 if w0[k].ndim >= 2 and w0[k].abs().sum() > 0]
    assert matrices and any(w0[k].ndim < 2 for k in w0)
    for k, v in w0.items():
        if v.ndim >= 2:
            torch.testing.assert_close(decayed[k] - plain[k], -lr * wd * v, rtol=0, atol=1e-7)
        else:
            assert torch.equal(decayed[k], plain[k]), k


def test_clip_grad_bounds_the_first_update(tmp_path):
    """Adam's first step moves each weight by lr·g/(|g| + eps). Unclipped, |g| >> eps and some weight moves by
    ~lr; with the global norm clipped to 1e-9, every |g| <= 1e-9 and no weight moves more than
    lr·1e-9/(1e-9 + 1e-8) = lr/11."""
    lr = 1e-3
    w0 = initial_weights(tiny_config(tmp_path / "x"))
    free = one_step(tmp_path / "free", lr=lr, clip_grad=0.0)
    clipped = one_step(tmp_path / "clipped", lr=lr, clip_grad=1e-9)
    move = lambda w: max((w[k] - w0[k]).abs().max().item() for k in w0)  # noqa: E731
    assert move(free) > 0.9 * lr
    assert 0 < move(clipped) <= lr / 11 * 1.001


def write_config(tmp_path, **kw):
    cfg = tiny_config(tmp_path / "run", **kw)
    path = tmp_path / "t.yaml"
    cfg.to_yaml(path)
    return path, tmp_path / "run"


def test_a_diverged_run_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    import unimodal.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_source", lambda *a, **k: SyntheticDigits(nan_at_step=2))
    path, out = write_config(tmp_path, steps=4, ckpt_every=1)
    assert main(["train", "--config", str(path)]) == 1  # 1: the run diverged (2: a usage error)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("unimodal train: error:") and "step 3" in err[0], err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000001", "step_0000002"]


def test_resume_without_the_ema_file_is_refused_unless_ema_is_off(tmp_path, capsys, monkeypatch):
    import unimodal.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_source", lambda *a, **k: SyntheticDigits())
    path, out = write_config(tmp_path, steps=2, ckpt_every=2)
    assert main(["train", "--config", str(path)]) == 0
    ck = out / "checkpoints" / "step_0000002"
    (ck / "ema.safetensors").unlink()
    capsys.readouterr()
    assert main(["train", "--config", str(path), "steps=3", "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume the EMA" in err and "ema.safetensors" in err and "ema_decay=0" in err
    assert not (out / "checkpoints" / "step_0000003").exists()
    assert main(["train", "--config", str(path), "steps=3", "ema_decay=0", "--resume", "auto"]) == 0
    assert f"resumed from {ck} at step 2" in capsys.readouterr().out
    assert (out / "checkpoints" / "step_0000003" / "model.safetensors").is_file()


class _Payload:
    """Unpickling this runs a command: what a tampered checkpoint could do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_foreign_pickle_without_running_it(tmp_path, capsys, monkeypatch):
    import unimodal.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_source", lambda *a, **k: SyntheticDigits())
    path, out = write_config(tmp_path, steps=2, ckpt_every=2)
    assert main(["train", "--config", str(path)]) == 0
    states = sorted((out / "checkpoints" / "step_0000002" / "deepspeed").rglob("*model_states.pt"))
    assert states
    marker = tmp_path / "payload-ran"
    with open(states[0], "wb") as f:
        pickle.dump({"module": _Payload(str(marker))}, f)
    capsys.readouterr()
    assert main(["train", "--config", str(path), "steps=3", "--resume", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot resume from" in err[0], err
    assert not marker.exists()  # weights_only loading never ran the payload
    assert not (out / "checkpoints" / "step_0000003").exists()



def test_tensorboard_gets_every_logged_scalar(tmp_path, monkeypatch):
    """With tensorboard=true, each metrics.jsonl entry (but step and time) goes to the writer as train/<key>
    at its step (a recording stand-in for SummaryWriter: tensorboard itself is optional)."""
    import json
    import sys
    import types

    calls, closed = [], []

    class Writer:
        def __init__(self, log_dir):
            calls.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def close(self):
            closed.append(True)

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    cfg = tiny_config(tmp_path / "run", steps=3, ckpt_every=3, tensorboard=True)
    train(cfg, SyntheticDigits())
    assert calls[0] == ("dir", str(tmp_path / "run" / "tensorboard")) and closed == [True]
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    want = [(f"train/{k}", v, e["step"]) for e in logged for k, v in e.items() if k not in ("step", "time")]
    assert calls[1:] == want and {"train/loss", "train/lr"} <= {t for t, _, _ in want}


def test_tokenizer_path_is_used_and_shipped_with_the_checkpoint(tmp_path):
    from unimodal.checkpoint import load_checkpoint
    from unimodal.tokenizers import TextTokenizer

    tok = TextTokenizer.train(["a red circle", "a blue square", "what colour is it"] * 20, vocab_size=290,
                              out_dir=tmp_path / "tok")
    overrides = {"num_classes": 10}  # vocab_size from the tokenizer
    cfg = tiny_config(tmp_path / "run", steps=1, ckpt_every=1, tokenizer={"path": str(tmp_path / "tok")},
                      model_overrides=overrides)
    result = train(cfg, SyntheticDigits())
    ck = load_checkpoint(result.checkpoint)
    assert ck.model.cfg.vocab_size == tok.vocab_size == 290
    assert ck.tokenizer_dir is not None and TextTokenizer.load(ck.tokenizer_dir) == tok


def test_bf16_trains_with_fp32_master_weights(tmp_path):
    """bf16 compute, fp32 weights saved; the first loss (same weights, same batch and noise) equals the fp32
    one to bf16 precision (8 mantissa bits: ~0.4% per operation), and the later ones stay finite."""
    fp32 = train(tiny_config(tmp_path / "fp32", steps=3, ckpt_every=3), SyntheticDigits())
    bf16 = train(tiny_config(tmp_path / "bf16", steps=3, ckpt_every=3, precision="bf16"), SyntheticDigits())
    w = read_weights(bf16.checkpoint / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in w.values())
    a, b = [h["loss"] for h in fp32.history], [h["loss"] for h in bf16.history]
    assert b[0] == pytest.approx(a[0], rel=1e-2) and b[0] != a[0]  # close, and not secretly fp32
    assert all(math.isfinite(x) for x in b)


def test_a_resumed_run_keeps_its_engine_weight_dtype(tmp_path):
    """DeepSpeed's bf16 optimizer state and a plain AdamW's cannot be loaded into each other: under
    weights_dtype auto a resumed run keeps its checkpoint's mode (read from meta.json, or for a checkpoint
    written before meta.json recorded it, from its precision), and an explicit other dtype is refused
    before anything is written."""
    import json

    from unimodal.errors import ConfigError

    out = tmp_path / "run"
    first = train(tiny_config(out, steps=2, ckpt_every=2, precision="bf16", weights_dtype="bf16"), SyntheticDigits())
    meta_file = first.checkpoint / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["engine_bf16"] is True
    del meta["engine_bf16"]  # as an older checkpoint: its precision (bf16) says the engine ran in bf16
    meta_file.write_text(json.dumps(meta))
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match="trained with bf16 weights in the engine, this config asks for fp32"):
        train(tiny_config(out, steps=3, ckpt_every=1, precision="bf16", weights_dtype="fp32"), SyntheticDigits(), resume="auto")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    resumed = train(tiny_config(out, steps=3, ckpt_every=1, precision="bf16"), SyntheticDigits(), resume="auto")
    assert json.loads((resumed.checkpoint / "meta.json").read_text())["engine_bf16"] is True
    assert [h["step"] for h in resumed.history] == [3] and math.isfinite(resumed.history[0]["loss"])
    fresh = train(tiny_config(tmp_path / "auto", steps=1, ckpt_every=1, precision="bf16"), SyntheticDigits())
    assert json.loads((fresh.checkpoint / "meta.json").read_text())["engine_bf16"] is torch.cuda.is_available()
