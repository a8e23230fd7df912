"""A run's training checkpoints: where they live, how one is written atomically by many ranks, which to resume, pruning.

(`unimodal.checkpoint` is the file format of one checkpoint's weights; this module is the training side.)

    out_dir/checkpoints/step_0001000/
        model.safetensors, ema.safetensors, config.yaml, meta.json, tokenizer/   (unimodal.checkpoint format)
        deepspeed/state/...   DeepSpeed's own files: optimizer moments, fp32 master weights, client state
        deepspeed-universal/  (only after an elastic resume of a ZeRO >= 1 checkpoint) the same state as a
                              DeepSpeed universal checkpoint: latest_universal, state/zero/<param>/{fp32,exp_avg,...}.pt

Writing: every rank saves its DeepSpeed shard into a hidden staging directory;
rank 0 then writes the weights (itself atomically), moves the DeepSpeed files
in and renames the whole into place (`unimodal.atomic.publish_directory`). A `step_*`
directory therefore exists only complete; a crash leaves at most hidden `.step_*` directories,
which the next run removes. (Several nodes need a shared filesystem, as
DeepSpeed's own checkpoints do.) A write that fails (a full disk is named as such)
removes its staging directories and raises CheckpointError on every rank
(docs/architecture.md, "Files on disk").
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from unimodal import atomic
from unimodal.checkpoint import CONFIG_FILE, EMA_FILE, META_FILE, MODEL_FILE
from unimodal.errors import CheckpointError
from unimodal.run_dir import is_disk_full

from .distributed import DistInfo, any_rank, barrier
from .engine import DS_TAG

DS_DIR = "deepspeed"
UNIVERSAL_DIR = "deepspeed-universal"  # a checkpoint's DeepSpeed state converted for another process count
_STEP_RE = re.compile(r"^step_(\d{7,})$")
_PARTIAL_RE = re.compile(r"^\.+step_\d{7,}\..*partial")  # staging dirs and atomic_directory's temporaries of them


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:07d}"


def is_complete(path: Path) -> bool:
    """A checkpoint the trainer can resume from: weights, config, meta and DeepSpeed state all present."""
    return all((path / f).is_file() for f in (MODEL_FILE, CONFIG_FILE, META_FILE)) and (path / DS_DIR / DS_TAG).is_dir()


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first, as (step, path)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and is_complete(p)]
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


def resolve_resume(resume: str | Path | None, root: Path) -> Path | None:
    """`None` → fresh start; "auto" → the newest complete checkpoint under `root` (or a fresh start); else that dir."""
    if resume is None:
        return None
    if str(resume) == "auto":
        path = latest_checkpoint(root)
        if path is not None:
            check_weights_readable(path)
        return path
    path = Path(resume)
    if not path.is_dir():
        what = "is not a checkpoint directory" if path.exists() else "does not exist"
        raise CheckpointError(f"resume checkpoint {str(path)!r} {what}")
    if not is_complete(path):
        raise CheckpointError(
            f"resume checkpoint {str(path)!r} is incomplete: needs {MODEL_FILE}, {CONFIG_FILE}, {META_FILE} and "
            f"{DS_DIR}/{DS_TAG}/ (a weights-only checkpoint cannot resume training exactly)"
        )
    check_weights_readable(path)
    return path


def check_weights_readable(path: Path) -> None:
    """Fail early, naming the file, when a checkpoint's safetensors file is truncated or foreign.

    Resuming restores the weights from deepspeed/, so without this a damaged
    model.safetensors would go unnoticed. Only the headers are read (safetensors
    checks that they cover the whole file), no tensor.
    """
    from safetensors import safe_open

    for name in (MODEL_FILE, EMA_FILE):
        file = path / name
        if not file.is_file():
            continue
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
            raise CheckpointError(
                f"resume checkpoint {str(path)!r}: weights file {str(file)!r} is truncated or not a safetensors "
                f"file ({type(e).__name__}: {e})"
            ) from None


def remove_partials(root: Path) -> None:
    """Delete hidden staging directories that an interrupted save left behind (rank 0, before training)."""
    if root.is_dir():
        for p in root.iterdir():
            if _PARTIAL_RE.match(p.name) or (p.name.startswith(".step_") and atomic.is_temporary(p.name)):
                shutil.rmtree(p, ignore_errors=True)


def prune(root: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints (0 keeps all); returns the deleted ones."""
    if keep_last <= 0:
        return []
    old = [p for _, p in list_checkpoints(root)[:-keep_last]]
    for p in old:
        atomic.discard_directory(p)  # out of sight at once; removal may take long
    return old


# --- elastic resume: DeepSpeed universal checkpoints ------------------------------------------------
def optimizer_partitions(path: Path) -> list[Path]:
    """The per-rank optimizer partition files of checkpoint `path` (none where the optimizer state is whole: ZeRO-0)."""
    return sorted((path / DS_DIR / DS_TAG).glob("*zero_pp_rank_*_optim_states.pt"))


def partition_kind(path: Path) -> str:
    """How checkpoint `path` partitions its optimizer state, read from the file names DeepSpeed wrote.

    "zero3" (per-rank model-states files too), "bf16" (DeepSpeed's bf16 optimizer, `bf16_zero_pp_rank_*`:
    bf16 at ZeRO-1), "zero12" (ZeRO-1 or -2: one model-states file, per-rank optimizer files), "whole" (ZeRO-0).
    """
    state = path / DS_DIR / DS_TAG
    if not optimizer_partitions(path):
        return "whole"
    if any(state.glob("zero_pp_rank_*_model_states.pt")):
        return "zero3"
    if any(state.glob("bf16_zero_pp_rank_*_optim_states.pt")):
        return "bf16"
    return "zero12"


PARTITION_KINDS = {"zero12": "ZeRO stage 1 or 2", "bf16": "ZeRO-1 with bf16 (DeepSpeed's bf16 optimizer)",
                   "zero3": "ZeRO stage 3", "whole": "ZeRO-0"}


def engine_bf16_of(path: Path) -> bool:
    """Whether checkpoint `path` was written by a DeepSpeed engine in its bf16 mode (`TrainConfig.weights_dtype`).

    Read from its meta.json (`engine_bf16`); a checkpoint from before that key was recorded ran the engine in bf16
    exactly when its training config's precision resolved to bf16.
    """
    import json

    import yaml

    from ..model.acdit import resolve_precision

    try:
        meta = json.loads((path / META_FILE).read_text())
        if isinstance(meta, dict) and isinstance(meta.get("engine_bf16"), bool):
            return meta["engine_bf16"]
        train = (yaml.safe_load((path / CONFIG_FILE).read_text()) or {}).get("train") or {}
        return resolve_precision(str(train.get("precision", "fp32"))) == "bf16"
    except (OSError, ValueError, AttributeError, yaml.YAMLError) as e:
        raise CheckpointError(f"{str(path)!r}: cannot tell the engine's weight dtype from meta.json/config.yaml: {e}") from None


CONVERTIBLE = ("zero12", "bf16")  # converted by ds_to_universal and loaded back exactly (tests/train/test_elastic_zero.py)
NOT_CONVERTIBLE = {  # why the others are refused
    "zero3": "its ZeRO-3 universal load gives every parameter group one shared Adam step tensor, which AdamW "
             "advances once per group per step (the bias correction of all groups but the first runs ahead), and the "
             "first group's hyperparameters (the norms' and biases' weight_decay 0 is lost)",
}


def universal_checkpoint(path: Path) -> Path | None:
    """The complete universal checkpoint of checkpoint `path` (a directory holding `latest_universal` and tag
    DS_TAG), or None. It appears only complete: `convert_to_universal` publishes it with one rename."""
    found = path / UNIVERSAL_DIR
    return found if (found / "latest_universal").is_file() and (found / DS_TAG / "zero").is_dir() else None


def convert_to_universal(path: Path) -> Path:
    """Rank 0: convert checkpoint `path`'s DeepSpeed state into `path/deepspeed-universal` (reused if present).

    DeepSpeed's `ds_to_universal` reads deepspeed/state/ and writes one directory per parameter with its
    fp32 master weights and Adam moments, unpartitioned, which an engine on any number of processes
    loads (DeepSpeed config `checkpoint.load_universal`). The original files are only read. The output
    is staged under a hidden temporary name inside `path` and renamed into place when complete
    (`unimodal.atomic.atomic_directory`), so a crash mid-conversion leaves no directory that would be
    trusted (its temporary is removed by the next conversion). Serial (no worker processes); its
    console output is kept out of the log and quoted on failure.

    Raises:
        CheckpointError: the conversion failed (the partial output is removed).
    """
    import argparse
    import contextlib
    import io

    done = universal_checkpoint(path)
    if done is not None:
        return done
    atomic.remove_orphans(path)  # the temporary of a conversion that was killed
    from deepspeed.checkpoint import ds_to_universal

    said = io.StringIO()

    def write(tmp: Path) -> None:
        args = argparse.Namespace(
            input_folder=str(path / DS_DIR / DS_TAG), output_folder=str(tmp / DS_TAG), num_extract_workers=1,
            num_merge_workers=1, keep_temp_folder=False, strict=True,
            inject_missing_state=True,  # the model carries no UNIVERSAL_CHECKPOINT_INFO; added in memory only
        )
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            ds_to_universal.main(args)  # also writes tmp/latest_universal naming the tag
        if not (tmp / "latest_universal").is_file():
            raise RuntimeError("ds_to_universal wrote no latest_universal file")

    target = path / UNIVERSAL_DIR
    try:
        return atomic.atomic_directory(target, write, replace=False)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - DeepSpeed raises assorted types (AssertionError, KeyError, ...)
        tail = one_line(RuntimeError(said.getvalue()[-600:])) if said.getvalue().strip() else ""
        detail = one_line(e)
        if is_disk_full(e):
            raise CheckpointError(f"disk full while converting {path / DS_DIR} to a universal checkpoint ({detail})") from None
        raise CheckpointError(
            f"converting {str(path / DS_DIR)!r} to a DeepSpeed universal checkpoint failed: {type(e).__name__}: {detail}"
            + (f" (ds_to_universal said: {tail})" if tail else "")
        ) from e


def one_line(error: BaseException) -> str:
    """An exception's message on one line (torch's C++ errors span several)."""
    return "; ".join(x.strip() for x in str(error).splitlines() if x.strip()) or type(error).__name__


def write_checkpoint(
    engine: Any,
    root: Path,
    step: int,
    dist_info: DistInfo,
    client_state: dict[str, Any],
    write_weights: Callable[[Path], Path],
) -> Path:
    """Write checkpoint `step` from every rank; returns its path. A collective: call it on all ranks.

    Args:
        engine: the DeepSpeed engine (its optimizer and client state go to deepspeed/).
        root: the checkpoints directory.
        client_state: small picklable state for DeepSpeed's file (the step, ...).
        write_weights: on rank 0, writes a unimodal checkpoint to the given path (save_checkpoint).

    Raises:
        CheckpointError (on every rank) when any rank failed; no `step_*` directory is left behind.
    """
    target = checkpoint_dir(root, step)
    stage = root / f".{target.name}.{DS_DIR}-partial"  # the same path on every rank
    weights = root / f".{target.name}.weights-partial"
    if dist_info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
    barrier()
    error: BaseException | None = None
    try:
        engine.save_checkpoint(str(stage), tag=DS_TAG, client_state=client_state, save_latest=False)
    except KeyboardInterrupt:  # Ctrl-C mid-save: leave no staging behind, then stop
        if dist_info.is_main:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    except Exception as e:  # noqa: BLE001 - reported to every rank below
        error = e
    failed = any_rank(error is not None, dist_info.device)
    if dist_info.is_main and not failed:
        try:
            shutil.rmtree(weights, ignore_errors=True)
            write_weights(weights)  # atomic on its own: `weights` appears complete or not at all
            os.replace(stage, weights / DS_DIR)
            # fsynced, then renamed into place; a rerun's `target` in the same out_dir is replaced
            atomic.publish_directory(weights, target)
        except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt too: clean up, then re-raise
            error = e
    failed = any_rank(error is not None, dist_info.device)
    if dist_info.is_main:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(weights, ignore_errors=True)
    if error is not None:
        if isinstance(error, CheckpointError) or not isinstance(error, Exception):
            raise error
        detail = one_line(error)
        if is_disk_full(error):  # ENOSPC, or torch.save's "[enforce fail at inline_container.cc] unexpected pos"
            raise CheckpointError(f"disk full while writing {target} ({detail}); the staging files were removed") from None
        raise CheckpointError(f"writing checkpoint {str(target)!r} failed: {type(error).__name__}: {detail}") from error
    if failed:
        raise CheckpointError(f"writing checkpoint {str(target)!r} failed on another rank (see its log)")
    return target
