"""What a run reports: a tqdm bar, a JSONL metrics log and (when installed) TensorBoard. Rank 0 only.

Each line of `metrics.jsonl` is one logging window::

    {"step": 200, "lr": 0.0003, "loss": 0.41, "diffusion": 0.38, "text": 0.03,
     "grad_norm": 0.9, "tokens_per_s": 51234.0, "elapsed_s": 81.2, "time": 1764430000.1}

Loss parts are means over the window's steps; tokens/s counts non-padding tokens of all ranks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

LOSS_PARTS = ("loss", "diffusion", "text")


class MetricsLog:
    """Progress bar, metrics.jsonl and TensorBoard for one run.

    Args:
        out_dir: the run directory (metrics.jsonl and tensorboard/ go there).
        total: the run's steps; initial: steps already done (resume).
        log_every: steps per JSONL line.
        progress: show a tqdm bar; tensorboard: also log there when importable.
        enabled: False on ranks other than 0 (then every method does nothing).
    """

    def __init__(self, out_dir: Path, total: int, initial: int, log_every: int, progress: bool = True,
                 tensorboard: bool = True, enabled: bool = True) -> None:
        self.enabled, self.log_every, self.total = enabled, log_every, total
        self.start = time.time()
        self.window: list[dict[str, float]] = []
        self.window_start = time.perf_counter()
        self.bar = self.tb = self.file = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(out_dir / "metrics.jsonl", "a")
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(out_dir / "tensorboard"))

    def step(self, record: dict[str, float]) -> dict[str, Any] | None:
        """Record one optimizer step; returns the JSONL entry when a window closes."""
        if not self.enabled:
            return None
        self.window.append(record)
        step = int(record["step"])
        if self.bar is not None:
            self.bar.update(1)
            post = {k: f"{record[k]:.4f}" for k in LOSS_PARTS if k in record}
            post["lr"] = f"{record['lr']:.2e}"
            post["tok/s"] = f"{record.get('tokens_per_s', 0.0):.0f}"
            self.bar.set_postfix(post, refresh=False)
        if step % self.log_every and step != self.total:
            return None
        return self.flush()

    def flush(self) -> dict[str, Any] | None:
        if not self.enabled or not self.window:
            return None
        w, now = self.window, time.perf_counter()
        entry: dict[str, Any] = {"step": int(w[-1]["step"]), "lr": w[-1]["lr"]}
        for k in (*LOSS_PARTS, "grad_norm"):
            vals = [r[k] for r in w if k in r]
            if vals:
                entry[k] = sum(vals) / len(vals)
        entry["tokens_per_s"] = sum(r.get("tokens", 0.0) for r in w) / max(now - self.window_start, 1e-9)
        entry["elapsed_s"] = time.time() - self.start
        entry["time"] = time.time()
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in entry.items():
                if k not in ("step", "time"):
                    self.tb.add_scalar(f"train/{k}", v, entry["step"])
        self.window, self.window_start = [], now
        return entry

    def message(self, text: str) -> None:
        """A line above the bar (rank 0)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        """Write what the last (partial) window holds, then close bar, file and writer."""
        self.flush()
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.file is not None:
            self.file.close()
        self.bar = self.tb = self.file = None
