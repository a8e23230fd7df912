"""Two gloo processes under DeepSpeed ZeRO-2 against one process with the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_helpers import run_ranks
from synthetic_source import SyntheticDigits, tiny_config

from unimodal.checkpoint import read_weights
from unimodal.train import train

WORKER = Path(__file__).with_name("multiprocess_worker.py")
B, STEPS = 2, 4  # per-rank batch, steps


def launch(out: Path, world: int = 2, timeout: float = 240.0) -> list[dict]:
    """Start `world` ranks with the variables torchrun would set; return each rank's JSON result."""
    return run_ranks(WORKER, [str(out), str(B), str(STEPS)], out, world, timeout)


@pytest.mark.multiprocess
def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    ranks = launch(tmp_path)

    # 1. DeepSpeed keeps the replicas bit-identical after every optimizer step
    assert len(ranks[0]["digests"]) == STEPS
    assert ranks[0]["digests"] == ranks[1]["digests"]
    # both ranks report the same (all-reduced) losses
    strip = lambda h: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in h]  # noqa: E731 - local timing
    assert strip(ranks[0]["history"]) == strip(ranks[1]["history"])

    # 2. one process with batch 2b, and one process with batch b x 2 accumulation steps, follow the same
    #    trajectory: rank r's batch is the r-th slice of the global batch and noise is drawn per example
    one = train(tiny_config(tmp_path / "one", batch_size=2 * B, steps=STEPS, zero_stage=2, ckpt_every=STEPS), SyntheticDigits())
    acc = train(tiny_config(tmp_path / "acc", batch_size=B, grad_accum=2, steps=STEPS, zero_stage=2, ckpt_every=STEPS),
                SyntheticDigits())
    for other in (one, acc):
        for a, b in zip(ranks[0]["history"], other.history, strict=True):
            for k in ("loss", "diffusion", "text", "lr", "tokens"):
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (k, a["step"])
    w2 = read_weights(Path(ranks[0]["checkpoint"]) / "model.safetensors")
    w1 = read_weights(one.checkpoint / "model.safetensors")
    assert w2.keys() == w1.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in (Path(ranks[0]["checkpoint"]) / "deepspeed" / "state").glob("zero_pp_rank_*optim_states.pt")) \
        == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]

    # 3. a NaN on one rank stops every rank (no hang), naming the step and the loss part, keeping earlier checkpoints
    for r in ranks:
        assert r["nan_error"] is not None and "step 3" in r["nan_error"] and "diffusion" in r["nan_error"]
    ckpts = sorted(p.name for p in (tmp_path / "nan" / "checkpoints").iterdir())
    assert ckpts == ["step_0000001", "step_0000002"]

    # 4. a refusal decided on rank 0 (out_dir holds a run) reaches every rank: no rank hangs or trains
    for r in ranks:
        assert r["refused"] is not None and "already holds a run" in r["refused"], r["refused"]
    assert not (tmp_path / "run" / ".lock").exists()
