"""`train(cfg)`: the training loop, on DeepSpeed for every world size.

One optimizer step ``s`` (0-based) is ``grad_accum`` micro-steps on each of the
``world`` ranks. Micro-step ``m`` of rank ``r`` reads the batch of *virtual rank*
``m·world + r`` out of ``grad_accum·world``::

    batch = source.batch(s, m * world + r, grad_accum * world, batch_size)

and example ``i`` of that batch draws its timesteps and noise from a generator
seeded by (seed, s, virtual_rank·batch_size + i). So the data and the noise of a
step are a function of (seed, step) and the global batch alone: a run resumes
exactly with no data-loader or RNG state, and 1 process × batch 2b, 1 process ×
batch b × 2 accumulation steps and 2 processes × batch b see the same examples
with the same noise (with equal-length examples their losses agree to float error).

The run directory (`unimodal.run_dir`, docs/architecture.md "Run directories"): every check
(writable, not locked by a live run, a resume checkpoint complete and fitting the model, an
existing run only continued with ``resume`` or replaced with ``overwrite``) passes before the
first write; then rank 0 holds ``out_dir/.lock`` until `train` returns or raises. Ctrl-C
raises `unimodal.errors.Interrupted` naming the step and the newest checkpoint, which stays intact.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from unimodal import atomic
from unimodal.batch import SequenceBatch
from unimodal.checkpoint import CONFIG_FILE, EMA_FILE, META_FILE, load_state_into, read_state, save_checkpoint
from unimodal.config import ModelConfig
from unimodal.diffusion.loss import compute_loss
from unimodal.diffusion.schedule import NoiseSchedule
from unimodal.errors import CheckpointError, ConfigError, Interrupted, RunDirError, TrainingDiverged, UnimodalError
from unimodal.layout import PAD_DOC
from unimodal.run_dir import RunLock, check_lock, check_writable, is_disk_full, move_aside, run_entries

from . import run_state as ckpt
from .config import TrainConfig
from .data_side import data_side
from .distributed import DistInfo, all_reduce_sum, any_rank, barrier, broadcast_object, init_distributed
from .ema import EMA, gathered, param_chunks
from .engine import create_engine, load_engine_state, set_lr
from .metrics import LOSS_PARTS, MetricsLog
from .schedules import lr_at


class BatchSource(Protocol):
    """The data side: a pure function of (seed, step, rank), so resuming needs no loader state."""

    def batch(self, step: int, rank: int, world_size: int, batch_size: int) -> SequenceBatch: ...


SampleHook = Callable[[int, torch.nn.Module], Any]  # (step, fp32 eval-mode model with the EMA weights); a Path is logged
StepHook = Callable[[int, torch.nn.Module, dict[str, float]], None]  # (step, engine.module, record), every rank


__all__ = ["BatchSource", "Interrupted", "RunDirError", "TrainResult", "TrainingDiverged", "train"]  # errors re-exported


@dataclass
class TrainResult:
    """What a run did.

    Attributes:
        step: optimizer steps done in total (including those before a resume).
        out_dir: the run directory.
        checkpoint: the newest complete checkpoint (None if none was written or resumed).
        history: one record per step this call ran: step, lr, loss parts, tokens, grad_norm (every rank).
    """

    step: int
    out_dir: Path
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)


# --- per-example noise -----------------------------------------------------------------------------
def example_seed(seed: int, step: int, index: int, stream: int) -> int:
    """A 64-bit seed for one example's `stream` (0: timesteps, 1: noise) at one step."""
    return int(np.random.SeedSequence([seed, step, index, stream]).generate_state(1, np.uint64)[0])


def example_noise(
    batch: SequenceBatch, schedule: NoiseSchedule, seed: int, step: int, first_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps (B, NB) and noise (B, L, C) of each row from its own generators (row i: index first_index + i).

    Without packing row i is example first_index + i; packed rows hold several examples each.
    """
    B, L = batch.shape
    NB, C = batch.t.shape[1], batch.visual.shape[-1]
    t = torch.empty(B, NB, dtype=torch.long)
    noise = torch.empty(B, L, C)
    for i in range(B):
        g_t = torch.Generator().manual_seed(example_seed(seed, step, first_index + i, 0))
        g_n = torch.Generator().manual_seed(example_seed(seed, step, first_index + i, 1))
        t[i] = schedule.sample_timesteps((NB,), generator=g_t)
        noise[i] = torch.randn(L, C, generator=g_n)
    return t.to(batch.t.device), noise.to(batch.visual.device, batch.visual.dtype)


# --- data and tokenizer ------------------------------------------------------------------------------
def build_tokenizer(cfg: TrainConfig) -> Any:
    """The text tokenizer: the LLM's (`init.llm`), `tokenizer.path` (a saved TextTokenizer), else the data side's."""
    if cfg.init.get("llm"):  # the pretrained LLM's tokenizer (unimodal.llm_init)
        from unimodal.llm_init.recipe import recipe_tokenizer

        return recipe_tokenizer(cfg)
    path = cfg.tokenizer.get("path")
    if path:
        from unimodal.tokenizers.text import TextTokenizer

        return TextTokenizer.load(path)
    return data_side().build_tokenizer(cfg)


def default_sample_hook(source: BatchSource, out: Path, schedule: Any) -> SampleHook | None:
    """Progress samples of the data side (task mixtures: `unimodal.tasks.progress`); None for other sources."""
    return data_side().sample_hook(source, out, schedule)


def build_source(cfg: TrainConfig, model_cfg: ModelConfig, tokenizer: Any) -> BatchSource:
    """The batch source of `cfg.tasks`, built by the data side (`unimodal.train.data_side`)."""
    if not cfg.tasks:
        raise ConfigError("TrainConfig.tasks is empty: list at least one task ({name, dataset, weight})")
    return data_side().build_source(cfg, model_cfg, cfg.visual_config(), tokenizer)


# --- weights -----------------------------------------------------------------------------------------
class _Weights:
    """What save_checkpoint needs of a model (its config and state dict) without building one."""

    def __init__(self, cfg: ModelConfig, state: dict[str, torch.Tensor]) -> None:
        self.cfg, self._state = cfg, state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def full_state(module: torch.nn.Module, keep: bool) -> dict[str, torch.Tensor]:
    """fp32 CPU copy of every parameter and buffer; a collective under ZeRO-3 (gathered in chunks)."""
    state: dict[str, torch.Tensor] = {}
    for chunk in param_chunks(list(module.named_parameters())):
        with gathered([p for _, p in chunk]):
            if keep:
                state.update({n: p.detach().float().cpu().clone() for n, p in chunk})
    if keep:
        state.update({n: b.detach().cpu().clone() for n, b in module.named_buffers()})
    return state


def params_finite(module: torch.nn.Module, device: torch.device) -> bool:
    """All weights finite on every rank (ZeRO-3: each rank checks its own partition)."""
    bad = False
    with torch.no_grad():
        for p in module.parameters():
            local = getattr(p, "ds_tensor", p)
            if local.numel() and not bool(torch.isfinite(local).all()):
                bad = True
                break
    return not any_rank(bad, device)


# --- the loop ---------------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    batch_source: BatchSource | None = None,
    resume: str | Path | None = None,
    sample_hook: SampleHook | None = None,
    step_hook: StepHook | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train `cfg` on DeepSpeed; single process by default, N processes under torchrun/deepspeed.

    Nothing is written into `cfg.out_dir` before every check has passed (docs/architecture.md,
    "Run directories"): the directory is writable, no live run holds its lock, a resume checkpoint
    is complete and fits `cfg`'s model, and a directory that already holds a run is only
    continued (`resume`) or replaced (`overwrite`). Then rank 0 takes `out_dir/.lock`
    (`unimodal.run_dir`) and keeps it until the call returns or raises.

    Args:
        cfg: the run.
        batch_source: the data (default: `unimodal.tasks.build_batch_source(cfg, ...)`); every rank builds its own.
        resume: None (fresh start; refused when out_dir already holds a run), "auto" (newest complete checkpoint
            under out_dir/checkpoints, else a fresh start) or a checkpoint directory.
        sample_hook: called on rank 0 every `sample_every` steps with a fresh fp32 eval-mode model holding
            the EMA weights (the live weights when the EMA is off). Default for a task mixture:
            `unimodal.tasks.progress.ProgressSamples` (image grids, captions, VQA answers under out_dir/samples/).
        step_hook: called on every rank after every optimizer step with (step, engine.module, record).
        overwrite: start anew in an out_dir that holds a run: it is first renamed whole to
            ``<out_dir>.old-<YYYYmmdd-HHMMSS>`` (`unimodal.run_dir.move_aside`). Excludes `resume`.

    Returns:
        TrainResult with the newest checkpoint and the per-step history.

    Raises:
        TrainingDiverged: a loss part or the weights became NaN/inf (nothing is saved from that state).
        Interrupted: Ctrl-C / SIGINT; the newest complete checkpoint is kept and named.
        RunDirError: out_dir holds another run, is locked by a live one, or is not writable.
        ConfigError, CheckpointError: bad configuration, a resume checkpoint that is damaged or does not
            fit the config, or a checkpoint that could not be written (a full disk is named as such).
    """
    info = init_distributed()
    out = Path(cfg.out_dir)
    root = out / "checkpoints"
    tokenizer = build_tokenizer(cfg)
    model_cfg = cfg.model_config(tokenizer.vocab_size if tokenizer is not None else None)
    visual = cfg.visual_config()
    schedule = NoiseSchedule(cfg.schedule_config())
    weights = cfg.loss_weights()
    source = batch_source if batch_source is not None else build_source(cfg, model_cfg, tokenizer)
    if sample_hook is None and cfg.sample_every and info.is_main:
        sample_hook = default_sample_hook(source, out, schedule.config)

    lock, resume_dir = _claim_run_dir(cfg, model_cfg, out, resume, overwrite, tokenizer, info)
    tokenizer_dir = _tokenizer_dir(cfg, tokenizer, out)
    last_ckpt = resume_dir
    step_done = 0
    try:
        barrier()
        if cfg.compile and cfg.resolved_zero_stage == 3:
            raise ConfigError("TrainConfig.compile=true needs ZeRO stage 0, 1 or 2; the DeepSpeed JSON sets stage 3")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        from unimodal.llm_init.recipe import build_model  # init.llm, freeze, lora (plain ACDiT without them)

        model, lora = build_model(cfg, model_cfg, load_llm=resume_dir is None)
        model.set_precision(cfg.precision)  # bf16: autocast matmuls, fp32 master weights (ACDiT.set_precision)
        resumed_bf16 = ckpt.engine_bf16_of(resume_dir) if resume_dir is not None else None
        engine, optimizer = create_engine(model, cfg, load_universal=needs_universal(resume_dir, info.world_size),
                                          resumed_bf16=resumed_bf16)
        log: MetricsLog | None = None
        prefetched = None
        try:
            ema = EMA(engine.module, cfg.ema_decay, store=info.is_main) if cfg.ema_decay > 0 else None
            if cfg.compile:
                engine.module.compile_forward()
            start = step_done = _resume(engine, ema, resume_dir, info)
            if cfg.loader_workers:
                from .prefetch import Prefetched, requests_for

                source = prefetched = Prefetched(source, requests_for(start, cfg.steps, cfg.grad_accum, info.world_size,
                                                                      info.rank, cfg.batch_size), cfg.loader_workers)
            log = MetricsLog(out, cfg.steps, start, cfg.log_every, cfg.progress, cfg.tensorboard, enabled=info.is_main)
            if resume_dir is not None:
                log.message(f"resumed from {resume_dir} at step {start}")
            history: list[dict[str, float]] = []

            def save(step: int) -> Path:
                return _save(engine, ema, lora, step, cfg, model_cfg, visual, schedule, tokenizer_dir, root, info, log, last_ckpt)

            engine.train()
            own_grad_norm = cfg.resolved_zero_stage == 0 and not engine.bfloat16_enabled()  # DeepSpeed reports none there
            grad_norm = None
            for step in range(start, cfg.steps):
                t0 = time.perf_counter()
                lr = lr_at(cfg.schedule, step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.decay_frac, cfg.min_lr_ratio)
                set_lr(optimizer, lr)
                totals, own = _optimizer_step(engine, source, schedule, weights, cfg, info, step, own_grad_norm, last_ckpt)
                grad_norm = own if own_grad_norm else grad_norm
                done = step_done = step + 1
                if ema is not None:
                    ema.update(engine.module, step=done)
                if not own_grad_norm:
                    grad_norm = engine.get_global_grad_norm()
                record = _record(done, lr, totals, grad_norm, time.perf_counter() - t0)
                history.append(record)
                if step_hook is not None:
                    step_hook(done, engine.module, record)
                log.step(record)
                if cfg.sample_every and done % cfg.sample_every == 0:
                    shown = _run_sample_hook(sample_hook, done, engine.module, ema, model_cfg, info, lora)
                    if isinstance(shown, Path):
                        log.message(f"samples: {shown / 'samples.md'}")
                if done % cfg.ckpt_every == 0 or done == cfg.steps:
                    last_ckpt = save(done)
                    log.message(f"saved {last_ckpt}")
            barrier()  # every rank leaves the run together: none exits with a peer's collective in flight
        finally:
            if log is not None:
                log.close()
            if prefetched is not None:
                prefetched.close()  # loader workers
            _destroy(engine)
    except KeyboardInterrupt:
        # Ctrl-C: one line instead of a traceback (docs/architecture.md, "Errors"). A checkpoint write in
        # flight has removed its staging directories; the newest complete checkpoint is untouched.
        raise Interrupted(f"interrupted at step {step_done}; last checkpoint: {last_ckpt or 'none'}") from None
    finally:
        if lock is not None:
            lock.release()
    return TrainResult(step=max(start, cfg.steps), out_dir=out, checkpoint=last_ckpt, history=history)


def _claim_run_dir(
    cfg: TrainConfig, model_cfg: ModelConfig, out: Path, resume: str | Path | None, overwrite: bool, tokenizer: Any, info: DistInfo
) -> tuple[RunLock | None, Path | None]:
    """Rank 0 checks, locks and prepares out_dir; every rank learns the outcome (and raises the same error)."""
    lock: RunLock | None = None
    resume_dir: Path | None = None
    error: UnimodalError | None = None
    if info.is_main:
        try:
            lock, resume_dir = _open_run_dir(cfg, model_cfg, out, resume, overwrite, tokenizer, info.world_size)
        except UnimodalError as e:
            error = e
        except KeyboardInterrupt:
            error = Interrupted("interrupted before training started; nothing was trained")
    resume_dir, error = broadcast_object((resume_dir, error))
    if error is not None:
        raise error
    return lock, resume_dir


def _optimizer_step(
    engine: Any, source: BatchSource, schedule: NoiseSchedule, weights: Any, cfg: TrainConfig, info: DistInfo,
    step: int, own_grad_norm: bool, last_ckpt: Path | None,
) -> tuple[torch.Tensor, float | None]:
    """One optimizer step over `cfg.grad_accum` micro-batches: (summed loss statistics, our grad norm or None).

    Raises TrainingDiverged on every rank when any rank's loss is NaN/inf (nothing is stepped from it).
    """
    world, gas, B = info.world_size, cfg.grad_accum, cfg.batch_size
    totals = torch.zeros(_STATS, dtype=torch.float64)
    grad_norm = None
    for micro in range(gas):
        vrank = micro * world + info.rank  # this micro-batch's slice of the global batch
        batch = source.batch(step, vrank, world * gas, B).to(info.device)
        t, noise = example_noise(batch, schedule, cfg.seed, step, vrank * B)  # rows <= B even when packed
        parts = compute_loss(engine, batch, schedule, weights, t=t, noise=noise)
        stats = _global_stats(parts, batch, info.device)  # a collective: every rank learns of a NaN anywhere
        bad = [f"{k} is NaN/inf on {int(stats[3 * j + 2])} rank(s)" for j, k in enumerate(LOSS_PARTS) if stats[3 * j + 2]]
        if bad:
            raise TrainingDiverged(
                f"non-finite loss at step {step + 1} (batch source step {step}, micro-step {micro}): "
                f"{', '.join(bad)}; stopped without saving. Last good checkpoint: {last_ckpt or 'none'}"
            )
        totals += stats
        engine.backward(parts["loss"])
        if micro == gas - 1 and own_grad_norm:
            grad_norm = _grad_norm(engine.module)  # all-reduced, not yet clipped or cleared
        engine.step()
    return totals, grad_norm


def _save(
    engine: Any, ema: EMA | None, lora: Any, step: int, cfg: TrainConfig, model_cfg: ModelConfig, visual: Any,
    schedule: NoiseSchedule, tokenizer_dir: Path | None, root: Path, info: DistInfo, log: MetricsLog, last_ckpt: Path | None,
) -> Path:
    """Write checkpoint `step` (weights, EMA, DeepSpeed state) and prune old ones; a collective on every rank."""
    if not params_finite(engine.module, info.device):
        raise TrainingDiverged(f"weights became NaN/inf by step {step}; not saving. Last good checkpoint: {last_ckpt or 'none'}")
    state = full_state(engine.module, keep=info.is_main)

    def write_weights(path: Path) -> Path:
        return save_checkpoint(
            path, _Weights(model_cfg, state), ema=ema.state_dict(state) if ema is not None else None,  # frozen: live
            visual=visual, schedule=schedule.config, tokenizer_dir=tokenizer_dir,
            extra={"train": cfg.to_dict(), "tasks": cfg.tasks}, meta={"step": step, "world_size": info.world_size, "engine_bf16": engine.bfloat16_enabled()},
            lora=lora,
        )

    path = ckpt.write_checkpoint(engine, root, step, info, {"step": step}, write_weights)
    if info.is_main:
        for p in ckpt.prune(root, cfg.keep_last):
            log.message(f"removed old checkpoint {p.name}")
    barrier()
    return path


def _open_run_dir(
    cfg: TrainConfig, model_cfg: ModelConfig, out: Path, resume: str | Path | None, overwrite: bool, tokenizer: Any,
    world: int = 1,
) -> tuple[RunLock, Path | None]:
    """Rank 0: check out_dir and the resume request, lock out_dir, then prepare it; returns (lock, resume dir).

    Every check runs before the first write, and again under the lock (another run may have
    finished in between). Only then: an old run is moved aside (`overwrite`), leftovers of a
    killed checkpoint write are removed, config.yaml and the tokenizer are written and
    metrics.jsonl is cut back to the resumed step (so it never holds lines of steps that are
    trained again). The caller releases the lock.
    """
    _preflight(cfg, model_cfg, out, resume, overwrite, world=world)  # reads only
    lock = RunLock(out)
    lock.acquire()
    try:
        resume_dir = _preflight(cfg, model_cfg, out, resume, overwrite, locked=True, world=world)
        for line in schedule_changes(resume_dir, cfg) if resume_dir is not None else []:
            print(line, flush=True)  # rank 0 only: the caller is rank 0
        if overwrite and run_entries(out):
            moved = move_aside(lock)
            print(f"--overwrite: moved the previous run in {out} to {moved}", flush=True)
        lock.keep_dir()
        root = out / "checkpoints"
        try:
            ckpt.remove_partials(root)
            atomic.write_text(out / "config.yaml", cfg.to_yaml())
            if not cfg.tokenizer.get("path") and tokenizer is not None and hasattr(tokenizer, "save"):
                tokenizer.save(out / "tokenizer")
            _cut_metrics(out / "metrics.jsonl", _checkpoint_step(resume_dir) if resume_dir is not None else 0)
        except OSError as e:
            where = e.filename or out
            if is_disk_full(e):
                raise RunDirError(f"disk full while writing {where}") from None
            raise RunDirError(f"cannot write into out_dir {str(out)!r}: {where}: {e.strerror or e}") from None
    except BaseException:
        lock.release()
        raise
    return lock, resume_dir


def _preflight(
    cfg: TrainConfig, model_cfg: ModelConfig, out: Path, resume: str | Path | None, overwrite: bool, locked: bool = False,
    world: int = 1,
) -> Path | None:
    """Every check on out_dir and the resume request, writing nothing; returns the checkpoint to resume from.

    `locked`: this process holds out_dir's lock already (the lock check is skipped).
    """
    if overwrite and resume is not None:
        raise RunDirError(f"--overwrite and --resume {resume} exclude each other: continue the run in {str(out)!r} or replace it")
    check_writable(out)
    if not locked:
        check_lock(out)
    entries = run_entries(out)
    if entries and resume is None and not overwrite:
        raise RunDirError(
            f"out_dir {str(out)!r} already holds a run ({', '.join(entries)}): pass --resume auto to continue it, "
            f"--overwrite to move it aside to {out.name}.old-<time> and start anew, or choose another out_dir"
        )
    resume_dir = ckpt.resolve_resume(resume, out / "checkpoints")
    if resume_dir is not None:
        _check_fits(resume_dir, cfg, model_cfg)
        schedule_changes(resume_dir, cfg)  # refuses a change that would restart the warm-up
        check_world_size(resume_dir, world)
    return resume_dir


def needs_universal(resume_dir: Path | None, world: int) -> bool:
    """Whether resuming `resume_dir` on `world` processes goes through a DeepSpeed universal checkpoint:
    its optimizer state is partitioned (ZeRO >= 1, or the bf16 optimizer) over another number of processes."""
    if resume_dir is None:
        return False
    parts = ckpt.optimizer_partitions(resume_dir)
    return bool(parts) and len(parts) != world


def check_world_size(resume_dir: Path, world: int) -> None:
    """Refuse, before anything is written, an elastic resume (N processes -> M) that no path supports.

    Reads file names only. ZeRO-0 keeps the optimizer state whole in the model-states file, so
    any process count loads it as it is. ZeRO 1-3 write one `*zero_pp_rank_<r>_*optim_states.pt`
    per rank (bf16 at ZeRO-1 runs DeepSpeed's bf16 optimizer, `bf16_zero_pp_rank_*`): on the same
    count they load as they are; on another count `_resume` first has rank 0 convert them into a
    DeepSpeed universal checkpoint (`run_state.convert_to_universal`, into
    `<checkpoint>/deepspeed-universal`, kept for later resumes; the original files are only read)
    and every rank loads that with DeepSpeed's `checkpoint.load_universal`. Weights, Adam moments
    and step counts, the lr schedule and the data order (a function of the global batch
    `batch_size x grad_accum x processes`: keep it equal) continue exactly; the losses and weights
    of later steps differ from an uninterrupted N-process run by float rounding only, because the
    gradients are summed over M ranks in another order (measured in
    tests/train/test_elastic_zero.py, fp32 ZeRO-1/2, two more steps of the tiny model: at most 4.8e-7
    in the loss and 6e-8 in any weight; in bf16, whose 1- and 2-process runs differ by a bf16 ulp
    anyway, 8.6e-3 and 2**-8). Refused, naming the stage, both counts and what is
    supported: ZeRO-3 (`run_state.NOT_CONVERTIBLE` says why), i.e. any layout outside
    `run_state.CONVERTIBLE`.
    """
    parts = ckpt.optimizer_partitions(resume_dir)
    if not parts or len(parts) == world:
        return
    kind = ckpt.partition_kind(resume_dir)
    if kind not in ckpt.CONVERTIBLE:
        from importlib.metadata import version

        why = ckpt.NOT_CONVERTIBLE.get(kind, "no conversion is known for it")
        raise CheckpointError(
            f"resume checkpoint {str(resume_dir)!r} holds {ckpt.PARTITION_KINDS[kind]} optimizer state partitioned "
            f"over {len(parts)} processes, and this run has {world}: resume it on {len(parts)} processes. Resuming on "
            f"another number of processes is supported for ZeRO-0 (whole optimizer state) and, through a DeepSpeed "
            f"universal checkpoint, for {' and '.join(ckpt.PARTITION_KINDS[k] for k in ckpt.CONVERTIBLE)}; not for "
            f"{ckpt.PARTITION_KINDS[kind]} (DeepSpeed {version('deepspeed')}: {why})"
        )


ELASTIC_NOTE = (
    "elastic resume: {n} -> {m} processes through DeepSpeed universal checkpoint {where}; weights, optimizer "
    "moments, step, lr schedule and data order continue exactly (keep batch_size x grad_accum x processes = "
    "{global_batch}); later losses may differ from an uninterrupted {n}-process run in the last bits "
    "(gradients are summed over {m} process(es) in another order)"
)


SCHEDULE_KEYS = ("steps", "lr", "schedule", "warmup_steps", "decay_frac", "min_lr_ratio")


def schedule_changes(resume_dir: Path, cfg: TrainConfig) -> list[str]:
    """The lr-schedule keys `cfg` changes against the checkpoint's run, one `key: old -> new` line each.

    The rule (TrainConfig, "Resuming with changed schedule keys"): the lr of step s is always
    `lr_at(new config, s)` of the *global* step s, so a resumed run continues the new schedule
    at the checkpoint's step; nothing restarts. Refused, naming the keys: a changed
    `warmup_steps` that puts the resumed step back inside the warm-up (the lr would drop and
    climb again), and `steps` below the checkpoint's step (nothing to train). A checkpoint
    without its training config (written by an older version) reports no changes.

    Raises:
        ConfigError: a refused change; it is raised before anything is written.
    """
    import yaml

    try:
        saved = (yaml.safe_load((resume_dir / CONFIG_FILE).read_text()) or {}).get("train")
    except (OSError, yaml.YAMLError, AttributeError):
        saved = None
    if not isinstance(saved, dict):
        return []
    step = _checkpoint_step(resume_dir)
    asked = cfg.to_dict()
    changed = [k for k in SCHEDULE_KEYS if k in saved and saved[k] != asked[k]]
    lines = [f"resume: {k} {saved[k]!r} -> {asked[k]!r}" for k in changed]
    where = f"resume checkpoint {str(resume_dir)!r} (step {step})"
    if cfg.steps < step:
        raise ConfigError(
            f"{where}: steps={cfg.steps} is below the checkpoint's step {step}, so there is nothing to train; "
            f"set steps >= {step} (the run had steps={saved.get('steps')!r})"
        )
    if "warmup_steps" in changed and step < cfg.warmup_steps:
        raise ConfigError(
            f"{where}: warmup_steps {saved['warmup_steps']!r} -> {cfg.warmup_steps} would put step {step} back inside "
            f"the warm-up (the lr of a step follows the global step, so it would drop to "
            f"{cfg.lr * (step + 1) / cfg.warmup_steps:.3g} and climb again); keep warmup_steps={saved['warmup_steps']!r}, "
            f"set it <= {step}, or start a new run"
        )
    if lines:
        lr = lr_at(cfg.schedule, step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.decay_frac, cfg.min_lr_ratio)
        lines.append(f"resume: the lr schedule continues from step {step} with the new values (lr of step {step + 1}: {lr:.6g})")
    return lines


def _check_fits(resume_dir: Path, cfg: TrainConfig, model_cfg: ModelConfig) -> None:
    """Refuse a resume checkpoint whose model differs from `cfg`'s, naming each differing field."""
    import json

    import yaml

    try:
        saved = (yaml.safe_load((resume_dir / CONFIG_FILE).read_text()) or {}).get("model")
    except (OSError, yaml.YAMLError, AttributeError) as e:
        raise CheckpointError(f"resume checkpoint {str(resume_dir)!r}: cannot read {CONFIG_FILE}: {e}") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"resume checkpoint {str(resume_dir)!r}: {CONFIG_FILE} has no 'model' mapping")
    asked = json.loads(json.dumps(model_cfg.to_dict(), default=str))  # tuples as lists, like the YAML
    unset = "<unset>"
    diffs = [f"{k}={saved.get(k, unset)!r}, config asks {asked.get(k, unset)!r}"
             for k in list(asked) + [k for k in saved if k not in asked] if saved.get(k, unset) != asked.get(k, unset)]
    if diffs:
        raise CheckpointError(
            f"resume checkpoint {str(resume_dir)!r} does not fit this config: checkpoint has {'; '.join(diffs)} "
            f"(resume with the checkpoint's model settings, or start a new run in another out_dir)"
        )
    if cfg.ema_decay > 0 and not (resume_dir / EMA_FILE).is_file():
        raise CheckpointError(
            f"cannot resume the EMA: {str(resume_dir / EMA_FILE)!r} is missing (ema_decay={cfg.ema_decay}; "
            f"set ema_decay=0 to resume without one)"
        )
    cfg.engine_bf16(ckpt.engine_bf16_of(resume_dir))  # ConfigError when the engine's weight dtype would change


def _checkpoint_step(path: Path) -> int:
    """The step recorded in a checkpoint's meta.json (0 when it is unreadable)."""
    import json

    try:
        step = json.loads((path / META_FILE).read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return 0
    return step if isinstance(step, int) and step >= 0 else 0


def _cut_metrics(path: Path, step: int) -> None:
    """Keep only the lines of metrics.jsonl up to `step` (atomically): a resumed run logs the later steps again.

    Lines of steps after the resumed checkpoint were logged by the interrupted attempt and are
    trained again; a half-written last line (kill -9) is dropped too.
    """
    import json

    if not path.is_file():
        return
    kept, changed = [], False
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            keep = isinstance(entry, dict) and int(entry.get("step", 0)) <= step
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            changed = True
    if changed:
        atomic.write_text(path, "".join(x + "\n" for x in kept))


_STATS = 3 * len(LOSS_PARTS) + 1  # per loss part: sum of values, ranks reporting it, ranks where it is NaN/inf; tokens


def _global_stats(parts: dict[str, torch.Tensor], batch: SequenceBatch, device: torch.device) -> torch.Tensor:
    """Loss parts and non-padding tokens of one micro-batch, summed over ranks (float64, on CPU)."""
    local = torch.zeros(_STATS, dtype=torch.float64)
    for j, k in enumerate(LOSS_PARTS):
        if k in parts:
            v = float(parts[k].detach())
            finite = math.isfinite(v)
            local[3 * j : 3 * j + 3] = torch.tensor([v if finite else 0.0, 1.0, 0.0 if finite else 1.0])
    local[-1] = float((batch.doc != PAD_DOC).sum())
    return all_reduce_sum(local.to(device)).cpu()


def _record(step: int, lr: float, totals: torch.Tensor, grad_norm: Any, seconds: float) -> dict[str, float]:
    """One history entry: mean loss parts over ranks and micro-steps, tokens, grad norm, tokens/s."""
    record: dict[str, float] = {"step": step, "lr": lr, "tokens": float(totals[-1])}
    for j, k in enumerate(LOSS_PARTS):
        if totals[3 * j + 1] > 0:
            record[k] = float(totals[3 * j] / totals[3 * j + 1])
    if grad_norm is not None:
        record["grad_norm"] = float(grad_norm)
    record["tokens_per_s"] = record["tokens"] / max(seconds, 1e-9)
    return record


def _grad_norm(module: torch.nn.Module) -> float:
    """Global L2 norm of the (already all-reduced) gradients of an unpartitioned model."""
    grads = [p.grad.detach().float() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0


def _resume(engine: Any, ema: EMA | None, resume_dir: Path | None, info: DistInfo) -> int:
    """Restore engine (weights, optimizer) and EMA from `resume_dir`; returns the step to continue from."""
    if resume_dir is None:
        return 0
    if needs_universal(resume_dir, info.world_size):
        client = _load_universal(engine, resume_dir, info)
    else:
        client = load_engine_state(engine, resume_dir)
    start = client.get("step")
    if not isinstance(start, int) or start < 0:
        raise CheckpointError(f"{str(resume_dir)!r}: the DeepSpeed client state holds no step (got {start!r})")
    if ema is not None and info.is_main:
        ema_file = resume_dir / EMA_FILE
        if not ema_file.is_file():
            raise CheckpointError(f"cannot resume the EMA: {str(ema_file)!r} is missing (ema_decay > 0)")
        ema.load_state_dict(read_state(resume_dir, ema=True))  # LoRA adapters joined in when the run has them
    return start


def _load_universal(engine: Any, resume_dir: Path, info: DistInfo) -> dict[str, Any]:
    """Elastic resume of a partitioned optimizer state: rank 0 converts it (or reuses the conversion of an earlier
    resume), every rank loads it (a collective); returns the client state. Errors reach every rank."""
    n = len(ckpt.optimizer_partitions(resume_dir))
    error: CheckpointError | None = None
    if info.is_main:
        try:
            ckpt.convert_to_universal(resume_dir)
        except CheckpointError as e:
            error = e
    error = broadcast_object(error)  # also the barrier: no rank reads before the directory is in place
    if error is not None:
        raise error
    where = ckpt.universal_checkpoint(resume_dir)
    if where is None:
        raise CheckpointError(f"{str(resume_dir / ckpt.UNIVERSAL_DIR)!r} is not visible on rank {info.rank} "
                              f"(several nodes need a shared filesystem)")
    client = load_engine_state(engine, resume_dir, ds_dir=where)
    if info.is_main:
        import yaml

        try:
            train = (yaml.safe_load((resume_dir / CONFIG_FILE).read_text()) or {}).get("train") or {}
            global_batch = f"{train['batch_size'] * train['grad_accum'] * n}"
        except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
            global_batch = "that of the checkpoint's run"
        print(ELASTIC_NOTE.format(n=n, m=info.world_size, where=where, global_batch=global_batch), flush=True)
    return client


def _tokenizer_dir(cfg: TrainConfig, tokenizer: Any, out: Path) -> Path | None:
    """Where the tokenizer is copied from into every checkpoint (rank 0 saved it into the run dir when it has no path)."""
    if cfg.tokenizer.get("path"):
        return Path(cfg.tokenizer["path"])
    if tokenizer is None or not hasattr(tokenizer, "save"):
        return None
    return out / "tokenizer"


def _run_sample_hook(
    hook: SampleHook | None, step: int, module: torch.nn.Module, ema: EMA | None, model_cfg: ModelConfig, info: DistInfo,
    lora: dict[str, Any] | None = None,
) -> Any:
    """Rank 0 calls `hook` with a fresh fp32 model holding the EMA (else the live) weights; returns what it returns."""
    if ema is None:
        state = full_state(module, keep=info.is_main)  # a collective under ZeRO-3: every rank takes part
    else:
        live = ema.frozen_state(module)  # the weights the EMA does not average (a collective under ZeRO-3)
        if info.is_main:
            state = ema.state_dict(live)
    if not info.is_main or hook is None:
        return None
    from unimodal.llm_init.recipe import fresh_model

    model = fresh_model(model_cfg, lora)
    load_state_into(model, state, f"weights at step {step}")
    return hook(step, model.to(info.device).eval())


def _destroy(engine: Any) -> None:
    """Release the engine's hooks and buffers (ZeRO-3 keeps hooks on the module otherwise)."""
    destroy = getattr(engine, "destroy", None)
    if destroy is not None:
        try:
            destroy()
        except Exception:  # noqa: BLE001 - best effort at teardown; the run's own error matters more
            pass
