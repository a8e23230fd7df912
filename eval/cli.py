"""`unimodal eval`: run eval tasks on a checkpoint, or list the tasks and metrics that exist."""

from __future__ import annotations

import argparse

from unimodal.cli_args import device, int_at_least, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on eval tasks: results JSON + Markdown report")
    p.add_argument("--checkpoint", help="checkpoint directory")
    p.add_argument("--tasks", help="comma-separated eval task names (see --list)")
    p.add_argument("--output", default="results.json", help="results JSON; the report goes next to it (default %(default)s)")
    p.add_argument("--limit", type=positive_int, default=None, help="cap every task's number of samples (quick runs)")
    p.add_argument("--seed", type=int_at_least(0), default=None, help="override every task's seed")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR", help="extra directory of task YAML files (repeatable)")
    p.add_argument("--device", type=device, default="cpu", help="device of the model (default %(default)s)")
    p.add_argument("--inception-weights", default=None, metavar="FILE", help="local FID Inception weights (else $UNIMODAL_INCEPTION_WEIGHTS)")
    p.add_argument("--no-ema", action="store_true", help="evaluate the raw weights even if EMA weights exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--list", action="store_true", help="list eval tasks and metrics, then exit")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .errors import EvalError

    if args.list:
        _print_list(args.include_path)
        return 0
    if not args.checkpoint or not args.tasks:
        raise EvalError("--checkpoint and --tasks are required (or --list)")
    from .harness import run_eval

    results = run_eval(
        args.checkpoint, [t.strip() for t in args.tasks.split(",") if t.strip()], args.output,
        limit=args.limit, seed=args.seed, include_paths=args.include_path, device=args.device,
        inception_weights=args.inception_weights, use_ema=not args.no_ema, progress=not args.no_progress,
    )
    for name, r in results["tasks"].items():
        print(f"{name}: " + ", ".join(f"{m}={'n/a' if v is None else f'{v:.4f}'}" for m, v in r["metrics"].items()))
    print(f"wrote {args.output} and its report {str(args.output).rsplit('.', 1)[0]}.md")
    return 0


def _print_list(include_paths: list[str]) -> None:
    from .metrics import METRICS
    from .task_config import TaskRegistry

    reg = TaskRegistry(include_paths)
    print("eval tasks:")
    for name in reg.names():
        t = reg.get(name, expand=False)  # listing needs no environment variable set
        print(f"  {name:16s} {t.head:15s} {t.dataset}/{t.split:6s} {', '.join(t.metrics)}")
        if t.description:
            print(f"  {'':16s} {t.description}")
    print("metrics:")
    for name, m in sorted(METRICS.items()):
        print(f"  {name:22s} {'higher' if m.higher_is_better else 'lower'} is better, {m.aggregation:6s} {m.inputs:6s} {m.description}")
