"""One rank of the 2-process trainer test (launched by test_trainer_multiprocess.py with the torchrun variables set).

Usage: python multiprocess_worker.py OUT_DIR BATCH_SIZE STEPS

Runs (1) a ZeRO-2 training run recording a parameter digest after every step, then (2) a run whose
rank-1 batch turns NaN at step 2, which must stop every rank with TrainingDiverged, then (3) a fresh run into run (1)'s out_dir,
which every rank must refuse with RunDirError. Writes OUT_DIR/rank{R}.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_source import SyntheticDigits, params_digest, tiny_config  # noqa: E402


class NaNOnRank1(SyntheticDigits):
    def batch(self, step, rank, world_size, batch_size):
        b = super().batch(step, rank, world_size, batch_size)
        if step == 2 and rank == 1:
            b.visual[0][b.noisy[0]] = float("nan")  # noisy tokens: the diffusion loss turns NaN
        return b


def main() -> None:
    from unimodal.train import TrainingDiverged, train

    out, batch_size, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rank = int(os.environ["RANK"])
    digests: list[str] = []
    cfg = tiny_config(out / "run", batch_size=batch_size, steps=steps, zero_stage=2, ckpt_every=steps)
    res = train(cfg, SyntheticDigits(), step_hook=lambda step, module, rec: digests.append(params_digest(module)))
    result = {"history": res.history, "digests": digests, "checkpoint": str(res.checkpoint)}
    try:
        train(tiny_config(out / "nan", batch_size=batch_size, steps=steps, zero_stage=2, ckpt_every=1), NaNOnRank1())
        result["nan_error"] = None
    except TrainingDiverged as e:
        result["nan_error"] = str(e)
    from unimodal.errors import RunDirError

    try:  # a fresh run into the finished run's out_dir: rank 0 refuses it, every rank raises the same error
        train(cfg, SyntheticDigits())
        result["refused"] = None
    except RunDirError as e:
        result["refused"] = str(e)
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
