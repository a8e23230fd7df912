"""An independent yardstick for issue 18's text->image target: a minimal DiT, written apart from unimodal.

It answers one question: is "shape at chance" a fault of unimodal, or what pixel-space diffusion
learns in this budget? The network shares no code with `unimodal.model`: a plain DiT (Peebles &
Xie) with adaLN-Zero, 2D sin-cos positions and one class embedding per (colour, shape) pair, so
the condition is a clean label, easier than a caption. It trains on the same easy-VQA train images
at the quickstart's size (32 px, 4x4 patches: 64 tokens of 48 values, hidden 256, 4 layers, 4
heads, bf16 autocast) with the quickstart's objective (rectified flow, logit-normal sigma, 10%
label drop, EMA with warm-up), then samples 300 images, 25 Euler steps, CFG on the velocity, and
scores colour and shape with the same in-domain CNN as the shipped `easyvqa_t2i` eval task.

    python benchmarks/reference_dit.py [--steps 1500] [--output velocity|x0]

`--output x0` predicts the clean image and takes the loss on the velocity it implies ((x_t - x0)/sigma,
sigma clipped at 0.05), as JiT (Li & He, 2025) does for pixel-space tokens. Rows are appended to
benchmarks/results/reference_dit.json (keyed by output and steps). 1500 steps take ~6 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, machine  # noqa: E402

P, D, LAYERS, HEADS, SIDE = 4, 256, 4, 4, 32
GRID = SIDE // P
T = GRID * GRID  # tokens per image


def patchify(im: torch.Tensor) -> torch.Tensor:
    """(B, 3, 32, 32) -> (B, 64, 48), row-major patches."""
    return im.reshape(len(im), 3, GRID, P, GRID, P).permute(0, 2, 4, 1, 3, 5).reshape(len(im), T, 3 * P * P)


def unpatchify(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), GRID, GRID, 3, P, P).permute(0, 3, 1, 4, 2, 5).reshape(len(x), 3, SIDE, SIDE)


def sincos(pos: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    freqs = base ** (-torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    angles = pos[:, None].float() * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], -1)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(approximate="tanh"), nn.Linear(4 * D, D))
        self.ada = nn.Linear(D, 6 * D)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c))[:, None].chunk(6, -1)
        a = self.norm1(h) * (1 + scale1) + shift1
        q, k, v = self.qkv(a).reshape(len(h), T, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(len(h), T, D)
        h = h + gate1 * self.proj(a)
        return h + gate2 * self.mlp(self.norm2(h) * (1 + scale2) + shift2)


class DiT(nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes  # label n_classes is the dropped (unconditional) label
        self.inp, self.out = nn.Linear(3 * P * P, D), nn.Linear(D, 3 * P * P)
        rows, cols = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
        self.register_buffer("pos", torch.cat([sincos(rows.flatten(), D // 2), sincos(cols.flatten(), D // 2)], -1)[None])
        self.time = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.label = nn.Embedding(n_classes + 1, D)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(D, elementwise_affine=False)
        self.ada = nn.Linear(D, 2 * D)
        for m in (self.ada, self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        c = self.time(sincos(sigma * 1000, 256)) + self.label(label)
        h = self.inp(x) + self.pos
        for blk in self.blocks:
            h = blk(h, c)
        shift, scale = self.ada(F.silu(c))[:, None].chunk(2, -1)
        return self.out(self.norm(h) * (1 + scale) + shift)


def velocity(net: DiT, x: torch.Tensor, sigma: torch.Tensor, label: torch.Tensor, output: str) -> torch.Tensor:
    """The flow velocity noise - x0 the network implies at (x_t, sigma)."""
    with torch.autocast("cpu", torch.bfloat16):
        out = net(x, sigma, label).float()
    if output == "x0":
        return (x - out) / sigma.clamp(min=0.05)[:, None, None]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--output", choices=("velocity", "x0"), default="velocity")
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    from unimodal.eval.extractors.domain_cnn import DomainCNNConfig, dataset_images, load_domain_cnn

    images, cols, _ = dataset_images("easyvqa", "train", SIDE, 3, None, 0)
    keep = [i for i, (c, s) in enumerate(zip(cols["color"], cols["shape"])) if c and s]
    colours, shapes = sorted({cols["color"][i] for i in keep}), sorted({cols["shape"][i] for i in keep})
    n_classes = len(colours) * len(shapes)
    data = patchify(images[keep])
    labels = torch.tensor([colours.index(cols["color"][i]) * len(shapes) + shapes.index(cols["shape"][i]) for i in keep])

    torch.manual_seed(0)
    net = DiT(n_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    losses, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):  # warm-up 100 steps, constant, linear decay over the last 20% (WSD)
        decay = min(1.0, (args.steps - step) / (0.2 * args.steps) + 1e-3)
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / 100) * decay
        idx = torch.randint(0, len(data), (args.batch,))
        x0, label = data[idx], labels[idx].clone()
        label[torch.rand(args.batch) < 0.1] = n_classes
        sigma = torch.sigmoid(torch.randn(args.batch))
        noise = torch.randn_like(x0)
        xt = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        loss = F.mse_loss(velocity(net, xt, sigma, label, args.output), noise - x0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        d = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].lerp_(v, 1 - d)
        losses.append(loss.item())
        if step % 250 == 0:
            print(f"step {step}: loss {sum(losses[-250:]) / 250:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    train_s = time.perf_counter() - t0
    net.load_state_dict(ema)
    net.eval()

    extractor = load_domain_cnn(DomainCNNConfig("easyvqa", SIDE, 3))
    want = torch.arange(args.samples) % n_classes
    want_colour = torch.tensor([extractor.heads["color"].index(colours[k // len(shapes)]) for k in want.tolist()])
    want_shape = torch.tensor([extractor.heads["shape"].index(shapes[k % len(shapes)]) for k in want.tolist()])
    row = {"output": args.output, "steps": args.steps, "batch": args.batch, "lr": args.lr, "train_s": round(train_s, 1),
           "final_loss_last10pct": sum(losses[-args.steps // 10:]) / max(1, args.steps // 10), "by_cfg": {}}
    for cfg in (1.5, 3.0):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(args.samples, T, 3 * P * P, generator=g)
        sig = torch.linspace(1.0, 0.0, 26)
        with torch.no_grad():
            for i in range(25):
                s = torch.full((args.samples,), float(sig[i]))
                v = velocity(net, torch.cat([x, x]), torch.cat([s, s]), torch.cat([want, torch.full_like(want, n_classes)]), args.output)
                cond, uncond = v.chunk(2)
                x = x + (sig[i + 1] - sig[i]) * (uncond + cfg * (cond - uncond))
        _, logits = extractor(unpatchify(x).clamp(-1, 1))
        colour = float((torch.from_numpy(logits["color"]).argmax(-1) == want_colour).float().mean())
        shape = float((torch.from_numpy(logits["shape"]).argmax(-1) == want_shape).float().mean())
        both = float(((torch.from_numpy(logits["color"]).argmax(-1) == want_colour)
                      & (torch.from_numpy(logits["shape"]).argmax(-1) == want_shape)).float().mean())
        row["by_cfg"][str(cfg)] = {"colour_shape": both, "colour": colour, "shape": shape}
        print(f"cfg {cfg}: colour+shape {both:.3f}, colour {colour:.3f}, shape {shape:.3f}", flush=True)

    path = RESULTS / "reference_dit.json"
    data_out = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    data_out["machine"] = machine()
    data_out["runs"][f"{args.output}@{args.steps}"] = row
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data_out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
