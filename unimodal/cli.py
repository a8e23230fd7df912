"""The `unimodal` command line. Each subcommand lives in a small `_cmd_*` function."""

from __future__ import annotations

import argparse
import errno
import os
import platform
import sys
import time
import traceback
from importlib import metadata

from . import __version__
from .cli_args import OneLineParser
from .config import PRESETS, ModelConfig
from .errors import UnimodalError


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .model import ACDiT

    print(f"unimodal {__version__}")
    print(f"python {platform.python_version()} on {platform.machine()}")
    for pkg in ("torch", "diffusers", "transformers", "deepspeed", "datasets", "sentencepiece", "open-clip-torch", "scikit-learn"):
        print(f"  {pkg:16s} {_version(pkg)}")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    print(f"device: {device}" + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
    try:
        import torch.nn.attention.flex_attention  # noqa: F401

        flex = "available" + ("" if cuda else " (forward only on CPU)")
    except ImportError:
        flex = "not available"
    print(f"attention backend (auto): {'flex' if cuda else 'sdpa + dense SCAM mask'} for training; FlexAttention {flex}")
    print("model presets:")
    for name in PRESETS:
        cfg = ModelConfig.from_name(name)
        with torch.device("meta"):
            n = ACDiT(cfg).num_params()
        print(f"  {name:5s} {cfg.n_layer:3d} layers x {cfg.d_model:5d}  heads {cfg.n_head:3d}  {n / 1e6:8.1f}M params")
    if args.forward:
        _forward_report(args.preset)
    return 0


def _forward_report(preset: str) -> None:
    """One forward + backward of a preset on an interleaved text+image example, with timings."""
    import torch

    from .batch import Example, collate
    from .diffusion.loss import compute_loss
    from .diffusion.schedule import NoiseSchedule, ScheduleConfig
    from .layout import Image, Layout, Text
    from .model import create_model

    torch.manual_seed(0)
    model = create_model(preset, num_classes=10)
    C = model.cfg.token_dim
    lay = Layout([Text([1, 17, 42, 3]), Image(8, 8, 4, 4), Text([4, 99, 2])])
    batch = collate([Example(lay, torch.randn(64, C), 3)] * 4, C)
    t0 = time.perf_counter()
    parts = compute_loss(model, batch, NoiseSchedule(ScheduleConfig()))
    parts["loss"].backward()
    dt = time.perf_counter() - t0
    print(f"forward+backward of '{preset}' ({model.num_params() / 1e6:.2f}M params) on {lay}, batch 4: {dt * 1e3:.0f} ms")
    print("  " + "  ".join(f"{k}={v.item():.4f}" for k, v in parts.items()))


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="unimodal",
        description="Unified multimodal understanding and generation on one ACDiT backbone.",
    )
    p.add_argument("--version", action="version", version=f"unimodal {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="versions, model presets and the attention backend")
    info.add_argument("--forward", action="store_true", help="also run and time one forward+backward pass")
    info.add_argument("--preset", default="tiny", choices=list(PRESETS), help="preset for --forward")
    info.set_defaults(func=_cmd_info)
    for register in _REGISTRARS:
        register(sub)
    return p


# Later subcommands (sample, train, eval, ...) add themselves here: each is a function(subparsers).
def _register_sample(sub: argparse._SubParsersAction) -> None:
    from .sample_cli import register

    register(sub)


def _register_data(sub: argparse._SubParsersAction) -> None:
    from .data_cli import register

    register(sub)


def _register_quickstart(sub: argparse._SubParsersAction) -> None:
    from .quickstart import register

    register(sub)


_REGISTRARS: list = [_register_quickstart, _register_sample, _register_data]
_REGISTRARS.append(lambda sub: __import__("unimodal.convert.cli", fromlist=["register"]).register(sub))
_REGISTRARS.append(lambda sub: __import__("unimodal.eval.cli", fromlist=["register"]).register(sub))
_REGISTRARS.append(lambda sub: __import__("unimodal.train.cli", fromlist=["register"]).register(sub))
_REGISTRARS.append(lambda sub: __import__("unimodal.llm_init.cli", fromlist=["register_init"]).register_init(sub))
_REGISTRARS.append(lambda sub: __import__("unimodal.llm_init.cli", fromlist=["register_export"]).register_export(sub))


def _is_rank0() -> bool:
    """True unless this process is a non-zero rank of a launcher (torchrun/deepspeed set RANK)."""
    return os.environ.get("RANK", "0") in ("", "0")


def _report(command: str, message: str) -> None:
    if _is_rank0():
        print(f"unimodal {command}: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; return its exit code.

    Error contract (docs/architecture.md, "Errors"): a :class:`UnimodalError` (anything the
    user can cause) is one stderr line and its ``exit_code`` (2; 1 for a diverged run; 130
    for Ctrl-C). A full disk is named as such. Anything else is a bug: one line saying so,
    then the traceback. Under torchrun only rank 0 prints.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UnimodalError as e:
        _report(args.command, f"error: {one_line(e)}")
        return e.exit_code
    except KeyboardInterrupt:
        _report(args.command, "interrupted")
        return 130
    except OSError as e:
        if e.errno == errno.ENOSPC:
            _report(args.command, f"error: disk full{f' while writing {e.filename}' if e.filename else ''} ({e.strerror})")
            return 2
        if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM) and e.filename:
            _report(args.command, f"error: cannot write {e.filename}: {e.strerror}")
            return 2
        _internal(args.command)
        return 1
    except Exception:  # noqa: BLE001  (a bug: say so, keep the traceback)
        _internal(args.command)
        return 1


def one_line(e: BaseException) -> str:
    """The error's message on one line (inner newlines become '; ')."""
    return "; ".join(part.strip() for part in str(e).splitlines() if part.strip()) or type(e).__name__


def _internal(command: str) -> None:
    if _is_rank0():
        print(f"unimodal {command}: internal error (a bug in unimodal or a library; please report it with the traceback below)",
              file=sys.stderr)
        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
