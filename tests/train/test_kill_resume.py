"""`unimodal train` killed with SIGKILL at random moments keeps its last checkpoint and `--resume auto` goes on.

The run is the real task mixture (class→image on sklearn's digits) on the tiny model with a
checkpoint after every step, so most of a step's wall time is spent writing a checkpoint and a
random kill usually lands inside a write. A damaged or foreign `--resume DIR` is one error line.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from unimodal.checkpoint import load_checkpoint
from unimodal.train.run_state import is_complete, latest_checkpoint, list_checkpoints

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

DIGITS_RUN = {
    "model": "tiny",
    "model_overrides": {"num_classes": 10, "vocab_size": 0},
    "visual": {"channels": 1, "image_size": 8, "patch_size": 2, "block_h": 2, "block_w": 2},
    "tasks": [{"name": "class_to_image", "dataset": "digits"}],
    "batch_size": 4,
    "steps": 100_000,  # never reached: the run is killed (the last run overrides steps)
    "lr": 1.0e-3,
    "schedule": "constant",
    "ema_decay": 0.9,
    "ckpt_every": 1,
    "keep_last": 2,
    "log_every": 1,
    "progress": False,
    "tensorboard": False,
}
_STEP_DIR = re.compile(r"^step_(\d{7,})$")
_RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


def write_config(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "run"
    cfg = tmp_path / "digits.yaml"
    cfg.write_text(yaml.safe_dump({**DIGITS_RUN, "out_dir": str(out)}, sort_keys=False))
    return cfg, out


def child_env() -> dict[str, str]:
    """One torch thread, offline hub; no rendezvous variables an in-process run of this pytest left behind
    (their MASTER_PORT is held by this process's own process group)."""
    env = {k: v for k, v in os.environ.items() if k not in _RENDEZVOUS}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def start(cfg: Path, log: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "unimodal.cli", "train", "--config", str(cfg), "--resume", "auto", *args]
    with open(log, "w") as fh:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, env=child_env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the trainer and anything it started
    proc.wait(timeout=30)


def newest_step(root: Path) -> int:
    ckpts = list_checkpoints(root)
    return ckpts[-1][0] if ckpts else 0


def wait_for_checkpoint_after(proc: subprocess.Popen, root: Path, step: int, log: Path, timeout: float = 180.0) -> int:
    """Poll until a complete checkpoint newer than `step` exists; returns its step."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        s = newest_step(root)
        if s > step:
            return s
        if proc.poll() is not None:
            pytest.fail(f"the training process exited ({proc.returncode}) before a checkpoint after step {step}:\n"
                        f"{log.read_text()[-4000:]}")
        time.sleep(0.02)
    kill(proc)
    pytest.fail(f"no checkpoint after step {step} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def check_after_kill(root: Path, at_least: int) -> tuple[int, list[str]]:
    """Every visible `step_*` directory is a complete, loadable checkpoint; the leftovers of a killed write
    are hidden and never listed. Returns (newest step, the hidden leftovers)."""
    names = sorted(os.listdir(root))
    visible = [n for n in names if not n.startswith(".")]
    hidden = [n for n in names if n.startswith(".")]
    assert visible and all(_STEP_DIR.match(n) for n in visible), names
    listed = [p.name for _, p in list_checkpoints(root)]
    assert listed == visible, (listed, names)  # nothing half-written under a checkpoint's name
    assert not set(hidden) & set(listed)
    for n in visible:
        assert is_complete(root / n), n
    newest = latest_checkpoint(root)
    step = int(_STEP_DIR.match(newest.name).group(1))
    assert step >= at_least, (step, at_least)  # the last checkpoint seen before the kill survived
    for use_ema in (True, False):  # both weight files read back in full
        ck = load_checkpoint(newest, use_ema=use_ema)
        assert ck.meta["step"] == step and ck.used_ema == use_ema
        assert all(torch.isfinite(p).all() for p in ck.model.parameters())
    return step, hidden


def resumed_from(log: Path) -> tuple[str, int] | None:
    m = re.search(r"resumed from (\S+) at step (\d+)", log.read_text())
    return (m.group(1), int(m.group(2))) if m else None


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigkill_at_random_moments_keeps_a_loadable_checkpoint_and_resume_auto_continues(tmp_path):
    cfg, out = write_config(tmp_path)
    root = out / "checkpoints"
    rng = random.Random(20240605)
    newest = 0
    leftovers = []
    for attempt in range(4):
        log = tmp_path / f"kill{attempt}.log"
        proc = start(cfg, log)
        try:
            seen = wait_for_checkpoint_after(proc, root, newest, log)  # it resumed and wrote a newer one
            time.sleep(rng.uniform(0.0, 0.6))
            seen = max(seen, newest_step(root))
        finally:
            kill(proc)
        assert proc.returncode == -signal.SIGKILL, log.read_text()[-4000:]
        assert (out / ".lock").is_file()  # left by the killed run: stale, taken over by the next one
        if attempt == 0:
            assert resumed_from(log) is None  # nothing to resume: a fresh start
        else:
            assert resumed_from(log) == (str(root / f"step_{newest:07d}"), newest), log.read_text()[-4000:]
        newest, hidden = check_after_kill(root, seen)
        leftovers.append(hidden)

    # the last run resumes from the newest checkpoint and finishes 3 steps later
    logged_before = len((out / "metrics.jsonl").read_text().splitlines())
    log = tmp_path / "final.log"
    proc = start(cfg, log, f"steps={newest + 3}")
    try:
        rc = proc.wait(timeout=180)
    finally:
        kill(proc)
    text = log.read_text()
    assert rc == 0, text[-4000:]
    assert resumed_from(log) == (str(root / f"step_{newest:07d}"), newest), text[-4000:]
    assert f"trained to step {newest + 3}; checkpoint: {root / f'step_{newest + 3:07d}'}" in text
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # each resume cut metrics.jsonl back to its checkpoint: every step logged exactly once, none of a killed attempt
    assert [x["step"] for x in lines] == list(range(1, newest + 4)), (logged_before, [x["step"] for x in lines])
    new_lines = lines[newest:]
    assert all(x["loss"] == x["loss"] and x["tokens_per_s"] > 0 for x in new_lines)
    # the leftovers of the killed writes are gone, pruning kept two
    assert sorted(os.listdir(root)) == [f"step_{newest + 2:07d}", f"step_{newest + 3:07d}"], (os.listdir(root), leftovers)
    assert load_checkpoint(root / f"step_{newest + 3:07d}").meta["step"] == newest + 3
    print(f"kills left hidden partial directories: {leftovers}")


def test_a_truncated_or_foreign_resume_directory_is_one_error_naming_the_file(tmp_path, capsys):
    from unimodal.cli import main

    cfg, out = write_config(tmp_path)
    assert main(["train", "--config", str(cfg), "steps=1", "ema_decay=0.9"]) == 0
    good = out / "checkpoints" / "step_0000001"
    capsys.readouterr()

    def error(target: Path) -> str:
        other = tmp_path / "other_run"
        rc = main(["train", "--config", str(cfg), "steps=2", f"out_dir={other}", "--resume", str(target)])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("unimodal train: error: "), captured
        assert not (other / "checkpoints").exists()  # nothing trained, nothing written
        return lines[0]

    for name in ("model.safetensors", "ema.safetensors"):
        bad = tmp_path / f"truncated_{name.split('.')[0]}"
        shutil.copytree(good, bad)
        size = (bad / name).stat().st_size
        with open(bad / name, "r+b") as fh:
            fh.truncate(size // 2)
        msg = error(bad)
        assert str(bad / name) in msg and "truncated" in msg, msg

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a checkpoint")
    msg = error(foreign)
    assert str(foreign) in msg and "model.safetensors" in msg, msg

    garbage = tmp_path / "garbage"
    shutil.copytree(good, garbage)
    (garbage / "model.safetensors").write_bytes(b"PK\x03\x04 a zip file, say" * 10)
    msg = error(garbage)
    assert str(garbage / "model.safetensors") in msg, msg

    msg = error(good / "model.safetensors")  # a file, not a checkpoint directory
    assert str(good / "model.safetensors") in msg and "not a checkpoint directory" in msg, msg
