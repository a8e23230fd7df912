"""One rank of the 2-process ZeRO-3 LoRA test (launched by test_zero3_lora.py with the torchrun variables set).

Usage: python lora_worker.py OUT_DIR LLM_DIR

(1) 4 steps of a Qwen3-initialised model with the text side frozen and LoRA on the text side, under
ZeRO-3, recording a digest of the gathered weights after every step; (2) a second run that resumes
run (1)'s step-2 checkpoint and trains to step 4 again. Writes OUT_DIR/rank{R}.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "train"))

from synthetic_source import SyntheticDigits, tiny_config  # noqa: E402


def recipe(out_dir: Path, llm: str):
    return tiny_config(out_dir, model_overrides={"num_classes": 10}, init={"llm": llm}, freeze=["text"],
                       lora={"r": 4, "alpha": 8.0, "side": "text"}, zero_stage=3, batch_size=2, steps=4, ckpt_every=2,
                       schedule="constant", warmup_steps=0)


def digest(module) -> str:
    from unimodal.train.trainer import full_state

    state = full_state(module, keep=True)  # a collective under ZeRO-3
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    import torch

    from unimodal.train import train

    torch.set_num_threads(1)
    out, llm = Path(sys.argv[1]), sys.argv[2]
    rank = int(os.environ["RANK"])
    digests: list[str] = []
    res = train(recipe(out / "run", llm), SyntheticDigits(), step_hook=lambda s, m, r: digests.append(digest(m)))
    again: list[str] = []
    res2 = train(recipe(out / "resumed", llm), SyntheticDigits(), resume=str(out / "run" / "checkpoints" / "step_0000002"),
                 step_hook=lambda s, m, r: again.append(digest(m)))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "digests": digests, "resumed_digests": again, "history": res.history, "resumed_history": res2.history,
        "checkpoint": str(res.checkpoint), "resumed_checkpoint": str(res2.checkpoint)}))


if __name__ == "__main__":
    main()
