"""Resuming with changed schedule keys: the changes are printed, the schedule continues from the global step,
and a change that would restart the warm-up is refused before anything is written."""

from __future__ import annotations

import os

import pytest
from synthetic_source import SyntheticDigits, tiny_config

from unimodal.errors import ConfigError
from unimodal.train import train

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def snapshot(root):
    """Every file under `root` with its size and mtime (a refused resume must leave all of them untouched)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.relpath(os.path.join(dirpath, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


def test_changed_steps_and_lr_are_reported_and_the_schedule_continues(tmp_path, capsys):
    kw = dict(schedule="wsd", warmup_steps=2, decay_frac=0.5, ema_decay=0.0, ckpt_every=4, batch_size=2)
    first = train(tiny_config(tmp_path, steps=4, lr=1e-3, **kw), SyntheticDigits())
    assert [h["lr"] for h in first.history][:2] == pytest.approx([5e-4, 1e-3])  # warm-up: peak·(s+1)/2
    capsys.readouterr()

    resumed = train(tiny_config(tmp_path, steps=8, lr=2e-3, **kw), SyntheticDigits(), resume="auto")
    out = capsys.readouterr().out
    assert "resume: steps 4 -> 8" in out
    assert "resume: lr 0.001 -> 0.002" in out
    assert "resume: warmup_steps" not in out and "resume: schedule" not in out  # unchanged keys are not reported
    assert [h["step"] for h in resumed.history] == [5, 6, 7, 8]
    # by hand: WSD over 8 steps decays over the last round(0.5·8) = 4 steps, i.e. 0-based steps 4..7;
    # step 4 is the first decay step: lr = 2e-3·(1 − 1/4), not a warm-up restarted at the resumed step.
    assert resumed.history[0]["lr"] == pytest.approx(2e-3 * (1 - 1 / 4), abs=1e-15)
    assert [h["lr"] for h in resumed.history] == pytest.approx([1.5e-3, 1e-3, 5e-4, 0.0], abs=1e-15)


def test_a_warmup_that_would_restart_is_refused_and_nothing_is_written(tmp_path):
    kw = dict(schedule="constant", ema_decay=0.0, ckpt_every=4, batch_size=2)
    train(tiny_config(tmp_path, steps=4, warmup_steps=1, **kw), SyntheticDigits())
    before = snapshot(tmp_path)

    with pytest.raises(ConfigError) as e:
        train(tiny_config(tmp_path, steps=10, warmup_steps=6, **kw), SyntheticDigits(), resume="auto")
    msg = str(e.value)
    assert "\n" not in msg
    assert "warmup_steps 1 -> 6" in msg and "step 4 back inside the warm-up" in msg and "step_0000004" in msg
    assert snapshot(tmp_path) == before

    with pytest.raises(ConfigError, match=r"steps=3 is below the checkpoint's step 4"):
        train(tiny_config(tmp_path, steps=3, warmup_steps=1, **kw), SyntheticDigits(), resume="auto")
    assert snapshot(tmp_path) == before

    # a shorter warm-up the checkpoint is already past is a change like any other: continued, not refused
    res = train(tiny_config(tmp_path, steps=5, warmup_steps=3, **kw), SyntheticDigits(), resume="auto")
    assert [h["lr"] for h in res.history] == pytest.approx([1e-3])


@pytest.mark.parametrize("stage", [0, 3])
def test_resuming_on_another_process_count_is_refused_where_the_optimizer_state_is_partitioned(tmp_path, stage):
    """ZeRO-0 resumes on any count; ZeRO-1/2 go through a universal checkpoint (tests/train/test_elastic_zero.py);
    ZeRO-3 is refused before anything is written (DeepSpeed's ZeRO-3 universal load is not exact)."""
    import shutil

    from unimodal.errors import CheckpointError

    kw = dict(zero_stage=stage, schedule="constant", ema_decay=0.0, ckpt_every=2, batch_size=2)
    train(tiny_config(tmp_path, steps=2, **kw), SyntheticDigits())
    state = tmp_path / "checkpoints" / "step_0000002" / "deepspeed" / "state"
    parts = sorted(state.glob("*zero_pp_rank_*_optim_states.pt"))
    if stage == 0:  # ZeRO-0: the optimizer state is whole, so any number of processes may resume it
        assert parts == []
        return
    assert [p.name for p in parts] == ["zero_pp_rank_0_mp_rank_00_optim_states.pt"]
    for p in (parts[0], state / "zero_pp_rank_0_mp_rank_00_model_states.pt"):  # as a 2-process run writes them
        shutil.copy(p, state / p.name.replace("pp_rank_0", "pp_rank_1"))
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError) as e:
        train(tiny_config(tmp_path, steps=4, **kw), SyntheticDigits(), resume="auto")
    msg = str(e.value)
    assert "ZeRO stage 3 optimizer state partitioned over 2 processes" in msg and "this run has 1" in msg
    assert "ZeRO-0" in msg and "ZeRO stage 1 or 2" in msg and "shared Adam step tensor" in msg and "\n" not in msg
    assert snapshot(tmp_path) == before
