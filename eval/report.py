"""The Markdown report next to results.json, with PNG sample grids and probe plots (PIL only)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from .context import Evidence
from .metrics.linear_probe import ProbeSweep

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (127, 127, 127)]


def save_grid(images: torch.Tensor, path: Path, cols: int = 8, min_tile: int = 64, pad: int = 2) -> Path:
    """(N, C, H, W) images in [-1, 1] as one PNG, `cols` per row; tiny images are scaled up (nearest)."""
    from unimodal.data import to_pil_images

    tiles = to_pil_images(images)
    w, h = tiles[0].size
    scale = max(1, math.ceil(min_tile / max(w, h)))
    w, h = w * scale, h * scale
    rows = math.ceil(len(tiles) / cols)
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for i, t in enumerate(tiles):
        grid.paste(t.convert("RGB").resize((w, h), Image.Resampling.NEAREST), (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def line_plot(series: dict[str, dict[int, float]], hlines: dict[str, float], path: Path, title: str, size: tuple[int, int] = (560, 360)) -> Path:
    """Accuracy (y in [0, 1]) against layer (x) for each series, plus dashed horizontal reference lines."""
    W, H = size
    left, right, top, bottom = 50, 150, 30, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xs = sorted({x for s in series.values() for x in s}) or [0]
    x0, x1 = xs[0], max(xs[-1], xs[0] + 1)
    px = lambda x: left + (x - x0) / (x1 - x0) * (W - left - right)  # noqa: E731
    py = lambda y: top + (1 - y) * (H - top - bottom)  # noqa: E731
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    for y in (0.0, 0.25, 0.5, 0.75, 1.0):
        d.line([left - 4, py(y), left, py(y)], fill="black")
        d.text((8, py(y) - 6), f"{y:.2f}", fill="black", font=font)
    for x in xs:
        d.line([px(x), H - bottom, px(x), H - bottom + 4], fill="black")
        d.text((px(x) - 3, H - bottom + 6), str(x), fill="black", font=font)
    d.text((left, 8), title, fill="black", font=font)
    d.text(((W - right + left) // 2 - 15, H - 16), "layer", fill="black", font=font)
    entries = [(n, s, None) for n, s in series.items()] + [(n, None, y) for n, y in hlines.items() if y is not None]
    for i, (name, s, y) in enumerate(entries):
        c = PALETTE[i % len(PALETTE)]
        if s:
            pts = [(px(x), py(v)) for x, v in sorted(s.items())]
            if len(pts) > 1:
                d.line(pts, fill=c, width=2)
            for p in pts:
                d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=c)
        else:
            for xa in range(left, W - right, 10):
                d.line([xa, py(y), min(xa + 5, W - right), py(y)], fill=c, width=2)
        ly = top + 10 + 16 * i
        d.line([W - right + 10, ly, W - right + 30, ly], fill=c, width=3)
        d.text((W - right + 35, ly - 6), name, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}" if isinstance(v, float) else str(v)


def _probe_section(name: str, sweeps: list[ProbeSweep], files: Path, rel: str) -> list[str]:
    out = []
    for s in sweeps:
        layers = sorted(s.trained)
        out += [f"**Linear probe, target `{s.target}`** (C chosen on a held-out 20% of train; best layer by held-out accuracy: "
                f"{ProbeSweep.best(s.trained)[0]})", "", "| layer | trained | random init |", "|---|---|---|"]
        out += [f"| {k} | {_fmt(s.trained[k].accuracy)} | {_fmt(s.random[k].accuracy) if k in s.random else 'n/a'} |" for k in layers]
        out += ["", f"Raw pixels: {_fmt(s.pixels.accuracy if s.pixels else None)}; chance (majority class): {_fmt(s.chance)}.", ""]
        series = {"trained": {k: f.accuracy for k, f in s.trained.items()}}
        if s.random:
            series["random init"] = {k: f.accuracy for k, f in s.random.items()}
        png = line_plot(series, {"pixels": s.pixels.accuracy if s.pixels else None, "chance": s.chance},
                        files / f"{name}_probe_{s.target}.png", f"{name}: linear probe accuracy ({s.target})")
        out += [f"![probe sweep]({rel}/{png.name})", ""]
    return out


def write_report(path: Path, results: dict[str, Any], evidence: dict[str, Evidence]) -> Path:
    """Write `path` (Markdown) and its PNGs into `<stem>_files/` next to it."""
    files = path.parent / f"{path.stem}_files"
    rel = files.name
    lines = [f"# Evaluation of `{results['checkpoint']}`", "",
             f"seed {results['seed']}, limit {results['limit']}, device {results['device']}, "
             f"wall time {results['wall_time_s']:.1f} s", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()), ""]
    comparable, not_comparable = [], []
    for name, r in results["tasks"].items():
        ev = evidence[name]
        lines += [f"## {name}", "", f"head `{r['head']}` on {r['dataset']}/{r['split']}, task version {r['version']}, "
                  f"{r['num_samples']} samples, {r['wall_time_s']:.1f} s", "", "| metric | value | better |", "|---|---|---|"]
        for m, v in r["metrics"].items():
            lines.append(f"| {m} | {_fmt(v)} | {'↑' if r['metric_info'][m.split('/')[0]]['higher_is_better'] else '↓'} |")
        lines.append("")
        lines += [f"- *{n}*" for n in ev.notes] + ([""] if ev.notes else [])
        if ev.comparable is not None:
            (comparable if ev.comparable else not_comparable).append(name)
        if isinstance(ev.inputs, list) and ev.inputs and isinstance(ev.inputs[0], ProbeSweep):
            d = ev.details
            stream = "clean stream" if d.get("noisy_t") is None else f"noisy stream at t={d['noisy_t']}"
            lines += [f"Features: hidden states of the {stream}, {'mean-pooled over' if d.get('pool') == 'mean' else 'concatenated'} "
                      f"the image's tokens; {d.get('train_examples')} train / {d.get('test_examples')} test images.", ""]
            lines += _probe_section(name, ev.inputs, files, rel)
        for ex in ev.details.get("examples", [])[:8]:
            if isinstance(ex, dict):
                lines.append("- " + "; ".join(f"{k}: {v}" for k, v in ex.items()))
        if ev.details.get("examples"):
            lines.append("")
        if ev.grid is not None and len(ev.grid):
            png = save_grid(ev.grid, files / f"{name}_samples.png", ev.grid_cols)
            lines += [f"![{name} samples]({rel}/{png.name})", ""]
    if comparable or not_comparable:
        lines += ["## Comparability with published numbers", "",
                  f"- Comparable (standard Inception weights, ≥50K samples): {', '.join(comparable) or 'none'}",
                  f"- Not comparable (in-domain extractor, non-standard weights or fewer samples): {', '.join(not_comparable) or 'none'}", ""]
    path.write_text("\n".join(lines))
    return path
