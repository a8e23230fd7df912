"""A 2-process ZeRO-3 LoRA run from a tiny Qwen3: ranks identical, only adapters and unfrozen weights change,
an exact resume, adapters saved with the checkpoint and merged by `unimodal export --merge`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from llm_helpers import make_llm
from model_helpers import run_ranks

from unimodal.checkpoint import ADAPTER_FILE, load_checkpoint, read_weights
from unimodal.cli import main
from unimodal.llm_init.finetune import side_of

WORKER = Path(__file__).with_name("lora_worker.py")


def launch(out: Path, llm: Path, world: int = 2, timeout: float = 400.0) -> list[dict]:
    return run_ranks(WORKER, [str(out), str(llm)], out, world, timeout)


@pytest.mark.multiprocess
def test_zero3_lora_two_ranks(tmp_path):
    llm = tmp_path / "llm"
    make_llm("qwen3", llm)
    ranks = launch(tmp_path, llm)
    # ranks identical after every step
    assert len(set(ranks[0]["digests"])) == 4 and ranks[0]["digests"] == ranks[1]["digests"]
    # resume from step 2 reproduces steps 3 and 4 bit for bit
    assert ranks[0]["resumed_digests"] == ranks[0]["digests"][2:] == ranks[1]["resumed_digests"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in h]  # noqa: E731
    assert strip(ranks[0]["resumed_history"]) == strip(ranks[0]["history"][2:])
    assert ranks[0]["history"][-1]["loss"] < ranks[0]["history"][0]["loss"] * 1.5  # finite, training

    # only adapters and unfrozen (visual-side) weights changed; the frozen text side is bit-identical to the LLM's
    from unimodal.llm_init.hf import init_from_llm

    start = init_from_llm(llm, token_dim=4, num_classes=10)[0].state_dict()
    ck = Path(ranks[0]["checkpoint"])
    base, adapter = read_weights(ck / "model.safetensors"), read_weights(ck / ADAPTER_FILE)
    assert base.keys() == start.keys() - ({"lm_head.weight"} if "lm_head.weight" not in base else set())
    for k, v in base.items():
        if side_of(k) == "text":
            assert torch.equal(v, start[k]), k
    changed_visual = [k for k, v in base.items() if side_of(k) == "visual" and not torch.equal(v, start[k])]
    assert "x_embedder.weight" in changed_visual and "final_layer.linear.weight" in changed_visual
    assert adapter and all(".lora_" in k for k in adapter)
    assert any(k.endswith("lora_B.default.weight") and v.abs().max() > 0 for k, v in adapter.items())  # B starts at 0

    # the checkpoint loads with its adapters; export --merge gives plain weights with the same outputs
    live = load_checkpoint(ck, use_ema=False).model
    assert main(["export", "--ckpt", str(ck), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    merged = load_checkpoint(tmp_path / "merged", use_ema=False).model
    assert not (tmp_path / "merged" / ADAPTER_FILE).exists() and not any(".lora_" in k for k in merged.state_dict())
    from synthetic_source_path import synthetic_batch

    b = synthetic_batch()
    with torch.no_grad():
        a, m = live(b), merged(b)
    torch.testing.assert_close(a.text_logits, m.text_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.pred, m.pred, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_lora_and_freeze_single_process_zero_stages(tmp_path, stage):
    from lora_worker import recipe

    from unimodal.train import train

    llm = tmp_path / "llm"
    make_llm("llama", llm, tied=True)
    from synthetic_source import SyntheticDigits  # tests/train is on sys.path through lora_worker

    cfg = recipe(tmp_path / "run", str(llm)).with_overrides([f"zero_stage={stage}", "steps=2", "lora.side=all",
                                                              "freeze=[all]", "ema_decay=0"])
    res = train(cfg, SyntheticDigits())
    from unimodal.llm_init.hf import init_from_llm

    start = init_from_llm(llm, token_dim=4, num_classes=10)[0].state_dict()
    base = read_weights(res.checkpoint / "model.safetensors")
    assert all(torch.equal(v, start[k]) for k, v in base.items())  # everything frozen but the adapters
    adapter = read_weights(res.checkpoint / ADAPTER_FILE)
    assert any(k.startswith("x_embedder.lora_B") for k in adapter) and any(".attn.qkv.lora_A" in k for k in adapter)
    assert "lm_head" not in " ".join(adapter)  # tied: never wrapped
