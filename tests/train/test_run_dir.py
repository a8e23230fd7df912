"""The run directory is safe to reuse: refusals happen before any write, one writer per out_dir, clean stops.

Every refusal test compares the sha256 of every file under out_dir (hidden ones included) before and
after: a refused run leaves the disk exactly as it found it (docs/architecture.md, "Files on disk").
One test per finding of the audit:

1. a new run into an out_dir holding a run is refused (``--overwrite`` moves the old one aside);
2. a second writer is refused by out_dir/.lock (a stale lock is taken over);
3. a resume that does not fit the config is refused before config.yaml is rewritten;
4. non-finite or out-of-range floats are refused by TrainConfig;
5. Ctrl-C stops with one line and exit 130, keeping the checkpoint;
6. an unwritable out_dir is one RunDirError naming the path;
7. a full disk while writing a checkpoint is one CheckpointError "disk full while writing ...".
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from synthetic_source import SyntheticDigits, tiny_config

from unimodal.checkpoint import load_checkpoint
from unimodal.cli import main
from unimodal.errors import CheckpointError, ConfigError, Interrupted, RunDirError
from unimodal.run_dir import LOCK_FILE, RunLock
from unimodal.train import TrainConfig, train
from unimodal.train.run_state import list_checkpoints

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

DIGITS_RUN = {  # the real task mixture on the tiny model (as in test_kill_resume.py)
    "model": "tiny",
    "model_overrides": {"num_classes": 10, "vocab_size": 0},
    "visual": {"channels": 1, "image_size": 8, "patch_size": 2, "block_h": 2, "block_w": 2},
    "tasks": [{"name": "class_to_image", "dataset": "digits"}],
    "batch_size": 4,
    "steps": 100_000,
    "lr": 1.0e-3,
    "schedule": "constant",
    "ema_decay": 0.9,
    "ckpt_every": 1,
    "keep_last": 2,
    "log_every": 1,
    "progress": False,
    "tensorboard": False,
}


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (hidden files too), by relative path; directories as 'dir'."""
    if not root.exists():
        return {}
    found = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        found[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return found


def steps_logged(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def cli_config(tmp_path: Path, **over) -> Path:
    cfg = tmp_path / "digits.yaml"
    cfg.write_text(yaml.safe_dump({**DIGITS_RUN, **over}, sort_keys=False))
    return cfg


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("unimodal train: error: "), err
    return err[0]


# --- 1. an existing run is never overwritten silently ----------------------------------------------
def test_a_new_run_into_an_existing_run_is_refused_and_overwrite_moves_it_aside(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tiny_config(out, steps=3, ckpt_every=1)
    train(cfg, SyntheticDigits())
    before = snapshot(out)
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [1, 2, 3] and LOCK_FILE not in before

    # a shorter fresh run would rewrite step_0000001 and leave the old run's step_0000003 for --resume auto
    with pytest.raises(RunDirError, match=r"already holds a run \(checkpoints, metrics.jsonl, config.yaml\).*"
                                          r"--resume auto.*--overwrite"):
        train(cfg.with_overrides(["steps=1", "lr=5e-3"]), SyntheticDigits())
    assert snapshot(out) == before
    with pytest.raises(RunDirError, match="exclude each other"):
        train(cfg, SyntheticDigits(), resume="auto", overwrite=True)
    assert snapshot(out) == before

    # the same refusal from the command line: one line, exit 2, nothing written
    assert main(["train", "--config", str(cli_config(tmp_path)), "steps=1", f"out_dir={out}"]) == 2
    assert "already holds a run" in one_error_line(capsys)
    assert snapshot(out) == before

    # --overwrite: the old run moves whole to run.old-<time>, the new one starts in an empty directory
    res = train(cfg.with_overrides(["steps=1"]), SyntheticDigits(), overwrite=True)
    (old,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert snapshot(old) == before  # moved, not touched: no lock left in it
    assert res.checkpoint == out / "checkpoints" / "step_0000001"
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [1] and steps_logged(out) == [1]
    assert not (out / LOCK_FILE).exists()


# --- 2. one writer per out_dir -------------------------------------------------------------------------------
def test_a_second_writer_is_refused_by_the_lock_and_a_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(out, steps=2, ckpt_every=1)
    out.mkdir()
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}  # a live process
    (out / LOCK_FILE).write_text(json.dumps(owner))
    before = snapshot(out)
    with pytest.raises(RunDirError, match=rf"in use by another run: pid {os.getpid()} on host '{socket.gethostname()}'"):
        train(cfg, SyntheticDigits(), resume="auto")  # refused up front, also with --resume
    assert snapshot(out) == before
    (out / LOCK_FILE).write_text(json.dumps({**owner, "host": "elsewhere"}))  # cannot be checked: refused
    with pytest.raises(RunDirError, match=r"host 'elsewhere'.*if that run is gone, delete"):
        train(cfg, SyntheticDigits())

    # while a run holds the lock, nobody else gets it; it is released when the run ends
    (out / LOCK_FILE).unlink()
    seen = []

    def try_lock(step, module, record):
        seen.append(json.loads((out / LOCK_FILE).read_text())["pid"])
        with pytest.raises(RunDirError, match=f"pid {os.getpid()}"):
            RunLock(out).acquire()

    train(cfg, SyntheticDigits(), step_hook=try_lock)
    assert seen == [os.getpid()] * 2 and not (out / LOCK_FILE).exists()

    # a lock left by a dead process on this host (kill -9) is reported and taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_FILE).write_text(json.dumps({**owner, "pid": int(dead.stdout)}))
    with pytest.warns(UserWarning, match=rf"stale lock of pid {int(dead.stdout)}"):
        res = train(cfg.with_overrides(["steps=3"]), SyntheticDigits(), resume="auto")
    assert [h["step"] for h in res.history] == [3] and not (out / LOCK_FILE).exists()
    assert steps_logged(out) == [1, 2, 3]  # one run's lines, each step once

    # released on an exception too; a resumed run logs the re-trained steps once (metrics cut back to the checkpoint)
    class Crash(Exception):
        pass

    def crash(step, module, record):  # step 6 crashes before it is logged or saved
        if step == 6:
            raise Crash

    longer = cfg.with_overrides(["steps=7", "ckpt_every=2"])
    with pytest.raises(Crash):
        train(longer, SyntheticDigits(), resume="auto", step_hook=crash)
    assert not (out / LOCK_FILE).exists() and steps_logged(out) == [1, 2, 3, 4, 5]
    res = train(longer, SyntheticDigits(), resume="auto")  # from step_0000004: step 5 is trained again
    assert res.history[0]["step"] == 5 and steps_logged(out) == [1, 2, 3, 4, 5, 6, 7]


# --- 3. a refused resume writes nothing --------------------------------------------------------------------
def test_a_resume_that_does_not_fit_the_config_is_refused_before_any_write_naming_the_fields(tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(out, steps=2, ckpt_every=2)
    train(cfg, SyntheticDigits())
    before = snapshot(out)
    n_layer = cfg.model_config().n_layer
    other = cfg.with_overrides(["steps=4", f"model_overrides.n_layer={n_layer + 2}", "model_overrides.num_classes=7"])
    with pytest.raises(CheckpointError, match=rf"checkpoint has n_layer={n_layer}, config asks {n_layer + 2}; "
                                              r"num_classes=10, config asks 7") as e:
        train(other, SyntheticDigits(), resume="auto")
    assert "missing" not in str(e.value) and "\n" not in str(e.value)  # field names, not state-dict keys
    assert snapshot(out) == before  # config.yaml not rewritten, no lock left

    # --resume DIR into a new out_dir: that directory is not even created
    fresh = tmp_path / "fresh"
    with pytest.raises(CheckpointError, match="n_layer"):
        train(other.with_overrides([f"out_dir={fresh}"]), SyntheticDigits(), resume=out / "checkpoints" / "step_0000002")
    assert not fresh.exists()
    # an EMA run cannot resume from a checkpoint without an EMA: refused before any write as well
    train(cfg.with_overrides([f"out_dir={tmp_path / 'no_ema'}", "ema_decay=0"]), SyntheticDigits())
    before = snapshot(tmp_path / "no_ema")
    with pytest.raises(CheckpointError, match="ema.safetensors.*is missing"):
        train(cfg.with_overrides([f"out_dir={tmp_path / 'no_ema'}", "steps=3"]), SyntheticDigits(), resume="auto")
    assert snapshot(tmp_path / "no_ema") == before


# --- 4. every float option is finite and in range ---------------------------------------------------
@pytest.mark.parametrize(
    "override, pattern",
    [
        ("lr=.nan", r"TrainConfig.lr must be a finite number in \(0, inf\), got nan"),
        ("lr=.inf", r"TrainConfig.lr .*got inf"),
        ("lr=-1e-3", r"TrainConfig.lr .*got -0.001"),
        ("lr=0", r"TrainConfig.lr .*got 0"),
        ("weight_decay=-.inf", r"TrainConfig.weight_decay .*\[0, inf\), got -inf"),
        ("adam_eps=0", r"TrainConfig.adam_eps .*\(0, inf\), got 0"),
        ("clip_grad=.nan", r"TrainConfig.clip_grad .*got nan"),
        ("decay_frac=1.5", r"TrainConfig.decay_frac .*\[0, 1\], got 1.5"),
        ("min_lr_ratio=.nan", r"TrainConfig.min_lr_ratio .*got nan"),
        ("ema_decay=.nan", r"TrainConfig.ema_decay .*got nan"),
        ("ema_decay=-0.5", r"TrainConfig.ema_decay .*got -0.5"),
        ("betas=[.nan, 0.9]", r"TrainConfig.betas\[0\] .*got nan"),
        ("betas=[0.9, 1.0]", r"TrainConfig.betas=\[0.9, 1.0\] is invalid"),
        ("loss.diffusion=.inf", r"TrainConfig.loss.diffusion .*got inf"),
        ("loss.text=-1", r"TrainConfig.loss.text .*got -1"),
    ],
)
def test_non_finite_or_out_of_range_floats_are_refused_by_name(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig().with_overrides([override])


def test_a_nan_lr_on_the_command_line_is_one_line_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(cli_config(tmp_path)), "lr=.nan", f"out_dir={out}"]) == 2
    assert "TrainConfig.lr" in one_error_line(capsys) and not out.exists()


# --- 5. Ctrl-C ------------------------------------------------------------------------------------------------
def test_an_interrupt_is_raised_as_interrupted_naming_the_step_and_checkpoint(tmp_path):
    out = tmp_path / "run"

    def ctrl_c(step, module, record):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match=rf"interrupted at step 3; last checkpoint: {out / 'checkpoints' / 'step_0000002'}$") as e:
        train(tiny_config(out, steps=6, ckpt_every=2), SyntheticDigits(), step_hook=ctrl_c)
    assert e.value.exit_code == 130
    assert sorted(os.listdir(out / "checkpoints")) == ["step_0000002"] and not (out / LOCK_FILE).exists()
    assert load_checkpoint(out / "checkpoints" / "step_0000002").meta["step"] == 2


_RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


@pytest.mark.multiprocess
def test_sigint_stops_the_cli_with_one_line_and_exit_130_keeping_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    cfg = cli_config(tmp_path, out_dir=str(out))
    env = {k: v for k, v in os.environ.items() if k not in _RENDEZVOUS}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    log = tmp_path / "stderr.log"
    with open(log, "w") as fh:
        # SIGINT back to its default in the child: a runner that starts the suite as a background job of a
        # non-interactive shell passes SIGINT on as ignored, and Python then keeps it ignored (so would the CLI)
        proc = subprocess.Popen([sys.executable, "-m", "unimodal.cli", "train", "--config", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=fh, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        t0 = time.monotonic()
        while not list_checkpoints(out / "checkpoints"):
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() - t0 < 180, "no checkpoint within 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    err = log.read_text()
    assert rc == 130, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    last = [x for x in err.splitlines() if x.startswith("unimodal train:")]
    assert len(last) == 1 and "interrupted at step" in last[0] and "last checkpoint: " in last[0], err[-4000:]
    newest = list_checkpoints(out / "checkpoints")[-1][1]
    assert load_checkpoint(newest).meta["step"] >= 1
    assert not (out / LOCK_FILE).exists()
    assert not [n for n in os.listdir(out / "checkpoints") if n.startswith(".")]  # no staging left behind


# --- 6. an unwritable out_dir ------------------------------------------------------------------------------------
def test_an_unwritable_out_dir_is_one_run_dir_error_naming_the_path(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError, match=rf"cannot create out_dir '{blocker / 'sub'}': '{blocker}' is a file"):
        train(tiny_config(blocker / "sub", steps=1), SyntheticDigits())
    with pytest.raises(RunDirError, match=rf"out_dir '{blocker}' is a file, not a directory"):
        train(tiny_config(blocker, steps=1), SyntheticDigits())
    assert snapshot(tmp_path) == before

    # a read-only parent (tests run as root, so chmod would not stop a write: os.access says no instead)
    parent = tmp_path / "readonly"
    parent.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == parent else real(p, mode, **kw))
    with pytest.raises(RunDirError, match=rf"parent '{parent}' is not writable"):
        train(tiny_config(parent / "run", steps=1), SyntheticDigits())
    assert list(parent.iterdir()) == []


# --- 7. a full disk ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4416 vs 4304"),  # torch.save's form
])
def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_keeps_the_old_one(tmp_path, monkeypatch, error):
    out = tmp_path / "run"
    cfg = tiny_config(out, steps=2, ckpt_every=2)
    train(cfg, SyntheticDigits())
    before = snapshot(out / "checkpoints")

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "save", full)  # DeepSpeed writes its optimizer state with torch.save
    with pytest.raises(CheckpointError) as e:
        train(cfg.with_overrides(["steps=4"]), SyntheticDigits(), resume="auto")
    msg = str(e.value)
    assert msg.startswith(f"disk full while writing {out / 'checkpoints' / 'step_0000004'}") and "\n" not in msg, msg
    assert snapshot(out / "checkpoints") == before  # no step_0000004, no hidden staging directories
    assert not (out / LOCK_FILE).exists()
