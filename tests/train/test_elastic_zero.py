"""Elastic resume at ZeRO >= 1: a checkpoint of N processes resumed on M != N through a DeepSpeed universal checkpoint.

Every case trains 4 steps with a global batch of 4 examples (2 processes x batch 2, or 1 process x
batch 4) and checkpoints at step 2; that checkpoint is resumed on the other process count and its
steps 3-4 are compared with the uninterrupted run's. The one-process halves run in the test process,
the two-process halves in ranks started by `model_helpers.run_ranks` with this file as the worker
(``python test_elastic_zero.py OUT CASE...``), all cases in one launch.

Measured (tiny model, CPU, DeepSpeed 0.19.8), resumed vs uninterrupted over steps 3-4: fp32 ZeRO-1 and ZeRO-2,
both directions: loss <= 4.8e-7, weights <= 6.0e-8 (float rounding of the gradient sum over 1 vs 2 ranks);
bf16 ZeRO-1: first resumed loss equal, then loss <= 8.6e-3 and weights <= 2**-8, the size of the difference
between uninterrupted 1- and 2-process bf16 runs. About 35 s on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synthetic_source import SyntheticDigits, tiny_config  # noqa: E402

STEPS, CKPT, GLOBAL_BATCH = 4, 2, 4  # train 4 steps, resume from the checkpoint of step 2
CASES = ["1-fp32", "2-fp32", "1-bf16"]  # ZeRO stage - precision (bf16: bf16 engine weights, DeepSpeed's bf16 optimizer)
# Tolerances. One Adam step moves a weight by about lr (1e-3 here) whatever the gradient's size, so a lost
# moment, a restarted step count or a wrong weight decay shows as >= 1e-5 (DeepSpeed's ZeRO-3 universal load,
# whose shared step tensor runs the bias correction ahead, moved weights by 6e-5 in one step); the resumed run differs from the
# uninterrupted one only by the order in which the gradients are summed over 1 or 2 ranks.
# In bf16 the weights are stored in bf16 and gradients reduced in it: an uninterrupted 1-process and 2-process run
# already differ by 2**-8 in the weights (one bf16 ulp at 1) and 4.5e-3 in the loss by step 4, so there only the
# first resumed step's loss (the restored weights, before any reduction on the new process count) is held tight.
WEIGHT_ATOL = {"fp32": 1e-6, "bf16": 2**-7}
LOSS_ATOL = {"fp32": 1e-5, "bf16": 2e-2}
FIRST_LOSS_ATOL = 1e-5


def config(out: Path, world: int, case: str):
    stage, precision = case.split("-")
    return tiny_config(out, batch_size=GLOBAL_BATCH // world, steps=STEPS, ckpt_every=CKPT, zero_stage=int(stage),
                       precision=precision, weights_dtype=precision, weight_decay=0.1, ema_decay=0.0, warmup_steps=1, schedule="cosine", min_lr_ratio=0.1)


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}"


def resumable_copy(run: Path, dest: Path) -> Path:
    """`run`'s directory as it was right after the checkpoint of step CKPT (the later one removed)."""
    shutil.copytree(run, dest)
    shutil.rmtree(ckpt(dest, STEPS))
    return dest


def file_hashes(root: Path, skip: str | None = None) -> dict[str, str]:
    """sha256 of every file under `root` (not under a directory named `skip`)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != skip]
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def optimizer_state(checkpoint: Path) -> tuple[set[int], list[list[float]]]:
    """(the Adam step counts, each partition's per-group weight decays) in a checkpoint's optimizer partitions."""
    import torch

    steps, decays = set(), []
    for f in sorted((checkpoint / "deepspeed" / "state").glob("*optim_states.pt")):
        base = torch.load(f, map_location="cpu", weights_only=False)["optimizer_state_dict"]["base_optimizer_state"]
        steps |= {int(s["step"]) for s in base["state"].values()}
        decays.append([g["weight_decay"] for g in base["param_groups"]])
    return steps, decays


def worker() -> None:
    """Two ranks, per case: an uninterrupted 2-process run, and the 1-process run's checkpoint resumed on 2 processes."""
    from unimodal.train import train

    out, cases = Path(sys.argv[1]), sys.argv[2:]
    result = {}
    for case in cases:
        full = train(config(out / case / "two", 2, case), SyntheticDigits())
        resumed = train(config(out / case / "one_to_two", 2, case), SyntheticDigits(), resume="auto")
        result[case] = {"full": full.history, "resumed": resumed.history}
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(result))


def diffs(resumed: list[dict], full: list[dict], run_full: Path, run_resumed: Path) -> tuple[float, float]:
    """(max |loss difference| over the resumed steps, max |weight difference| after the last step)."""
    from unimodal.checkpoint import read_weights

    assert [h["step"] for h in resumed] == [h["step"] for h in full[CKPT:]] == [3, 4]
    assert [h["lr"] for h in resumed] == [h["lr"] for h in full[CKPT:]]  # the schedule continues at the global step
    assert [h["tokens"] for h in resumed] == [h["tokens"] for h in full[CKPT:]]  # the same examples
    assert resumed[0]["loss"] == pytest.approx(full[CKPT]["loss"], abs=FIRST_LOSS_ATOL)  # the weights were restored
    dloss = max(abs(a[k] - b[k]) for a, b in zip(resumed, full[CKPT:]) for k in ("loss", "diffusion", "text"))
    wa = read_weights(ckpt(run_full, STEPS) / "model.safetensors")
    wb = read_weights(ckpt(run_resumed, STEPS) / "model.safetensors")
    assert wa.keys() == wb.keys()
    return dloss, max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.mark.multiprocess
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_zero_checkpoints_resume_on_another_process_count(tmp_path, capsys):
    from model_helpers import run_ranks

    from unimodal.train import train
    from unimodal.train.run_state import UNIVERSAL_DIR

    one = {}
    for case in CASES:  # uninterrupted 1-process runs; their step-2 checkpoints are resumed on 2 processes
        one[case] = train(config(tmp_path / case / "one", 1, case), SyntheticDigits()).history
        resumable_copy(tmp_path / case / "one", tmp_path / case / "one_to_two")
    ranks = run_ranks(Path(__file__), [str(tmp_path), *CASES], tmp_path, 2, timeout=300)
    strip = lambda h: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in h]  # noqa: E731 - timings differ
    for c in CASES:  # both ranks report the same (all-reduced) losses
        for w in ("full", "resumed"):
            assert strip(ranks[0][c][w]) == strip(ranks[1][c][w])
    measured, first = {}, {}
    for case in CASES:
        base = tmp_path / case
        src = ckpt(resumable_copy(base / "two", base / "two_to_one"), CKPT)
        before = file_hashes(src)
        capsys.readouterr()
        resumed = first[case] = train(config(base / "two_to_one", 1, case), SyntheticDigits(), resume="auto").history
        out = capsys.readouterr().out
        notes = [line for line in out.splitlines() if line.startswith("elastic resume: 2 -> 1 processes")]
        assert len(notes) == 1 and "continue exactly" in notes[0] and "last bits" in notes[0], out
        # the original checkpoint is only read; the conversion sits beside it, complete, no temporary left
        assert file_hashes(src, skip=UNIVERSAL_DIR) == before
        assert sorted(p.name for p in src.iterdir() if p.name.startswith(".")) == []
        assert (src / UNIVERSAL_DIR / "latest_universal").read_text().strip() == "state"
        # the Adam step count continued (4, not 2) and each group kept its own weight decay
        for run in (base / "two_to_one", base / "one_to_two"):
            steps, decays = optimizer_state(ckpt(run, STEPS))
            assert steps == {STEPS}, (run, steps)
            assert all(d == [0.1, 0.0] for d in decays), (run, decays)  # TrainConfig.weight_decay; norms/biases 0
        precision = case.split("-")[1]
        for name, res, full, run_full, run_res in (
            ("2->1", resumed, ranks[0][case]["full"], base / "two", base / "two_to_one"),
            ("1->2", ranks[0][case]["resumed"], one[case], base / "one", base / "one_to_two"),
        ):
            dloss, dweight = diffs(res, full, run_full, run_res)
            measured[f"{case} {name}"] = (dloss, dweight)
            assert dloss <= LOSS_ATOL[precision] and dweight <= WEIGHT_ATOL[precision], (case, name, dloss, dweight)
    print("measured (max |loss diff|, max |weight diff|):", measured)

    # a second resume from the same checkpoint reuses the conversion instead of redoing it
    src = ckpt(tmp_path / CASES[0] / "two_to_one", CKPT)
    inode = (src / UNIVERSAL_DIR).stat().st_ino
    again = train(config(tmp_path / CASES[0] / "two_to_one", 1, CASES[0]), SyntheticDigits(), resume=src).history
    assert (src / UNIVERSAL_DIR).stat().st_ino == inode
    assert strip(again) == strip(first[CASES[0]])  # and continues the same way


if __name__ == "__main__":
    worker()
