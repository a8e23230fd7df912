"""Fine-tuning memory and speed: full fine-tuning vs frozen text side vs LoRA, on CPU.

Each case runs in its own process (so peak RSS is its own): an ACDiT of the given preset
with an LLM-shaped text side (SwiGLU, grouped-query attention, 1-D RoPE on text, vocab
32000), AdamW, and a batch of interleaved text + image examples. Reported per case:

* trainable / total parameters,
* optimizer-state bytes (AdamW exp_avg + exp_avg_sq, measured after a step),
* gradient bytes,
* peak RSS of the process and its growth over the model alone (activations, grads, optimizer),
* median step time (forward + backward + AdamW step) over `--steps` steps after one warm-up.

Cases: `full` (everything trains), `frozen_text` (freeze: [text]; the visual side trains),
`lora` (freeze: [all] + LoRA r=16 on every Linear of both sides).

    nice -n 10 python benchmarks/finetune_memory.py [--preset S] [--steps 3]

prints a table and saves benchmarks/results/finetune_memory.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CASES = {
    "full": dict(freeze=[], lora=None),
    "frozen_text": dict(freeze=["text"], lora=None),
    "lora": dict(freeze=["all"], lora=dict(r=16, alpha=32.0, side="all")),
}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_case(name: str, preset: str, steps: int, batch: int) -> dict:
    """One case in this process; returns its measurements."""
    import torch

    from unimodal.batch import Example, collate
    from unimodal.config import ModelConfig
    from unimodal.diffusion.loss import compute_loss
    from unimodal.diffusion.schedule import NoiseSchedule, ScheduleConfig
    from unimodal.layout import Image, Layout, Text
    from unimodal.llm_init.finetune import LoraSpec, add_lora, freeze, trainable_summary
    from unimodal.llm_init.hf import rope_axes_for
    from unimodal.model import ACDiT

    torch.set_num_threads(2)
    torch.manual_seed(0)
    base = ModelConfig.from_name(preset)
    cfg = ModelConfig.from_name(preset, vocab_size=32000, mlp="swiglu", ffn_dim=int(base.d_model * 8 / 3) // 64 * 64,
                                mlp_bias=False, qkv_bias=False, proj_bias=False, qk_norm=False, n_kv_head=max(1, base.n_head // 3),
                                rope_freqs="shared", rope_axes=rope_axes_for(base.head_dim), token_dim=16, num_classes=0)
    model = ACDiT(cfg)
    spec = CASES[name]
    frozen = freeze(model, spec["freeze"]) if spec["freeze"] else []
    if spec["lora"]:
        add_lora(model, LoraSpec.from_dict(dict(spec["lora"])), frozen)
    rss_model = rss_mib()
    counts = trainable_summary(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    sched = NoiseSchedule(ScheduleConfig())
    g = torch.Generator().manual_seed(0)
    lay = Layout([Text(list(range(1, 65))), Image(16, 16, 4, 4), Text([2])])  # 64 text tokens, 256 clean + 256 noisy
    b = collate([Example(lay, torch.randn(256, 16, generator=g))] * batch, 16)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = compute_loss(model, b, sched, generator=torch.Generator().manual_seed(i))["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        if i:
            times.append(time.perf_counter() - t0)
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    return dict(case=name, preset=preset, batch=batch, tokens_per_row=len(lay), **counts, optimizer_state_bytes=state_bytes,
                grad_bytes=grad_bytes, peak_rss_mib=rss_mib(), rss_after_model_mib=rss_model,
                peak_rss_growth_mib=rss_mib() - rss_model, step_s=sorted(times)[len(times) // 2], loss=float(loss))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="S")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    a = ap.parse_args()
    if a.case:
        print(json.dumps(run_case(a.case, a.preset, a.steps, a.batch)))
        return
    rows = []
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", name, "--preset", a.preset, "--steps", str(a.steps),
                              "--batch", str(a.batch)], capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'case':12s} {'trainable':>12s} {'total':>12s} {'opt state MiB':>14s} {'grads MiB':>10s} "
          f"{'peak RSS MiB':>13s} {'growth MiB':>11s} {'step s':>8s}")
    for r in rows:
        print(f"{r['case']:12s} {r['trainable']:12,d} {r['total']:12,d} {r['optimizer_state_bytes'] / 2**20:14.1f} "
              f"{r['grad_bytes'] / 2**20:10.1f} {r['peak_rss_mib']:13.0f} {r['peak_rss_growth_mib']:11.0f} {r['step_s']:8.3f}")
    RESULTS.mkdir(exist_ok=True)
    import platform

    import torch

    (RESULTS / "finetune_memory.json").write_text(json.dumps(
        {"cases": rows, "machine": platform.machine(), "torch": torch.__version__, "threads": 2}, indent=2) + "\n")
    print(f"saved {RESULTS / 'finetune_memory.json'}")


if __name__ == "__main__":
    main()
