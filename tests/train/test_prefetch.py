"""Loader workers (`loader_workers`): the prefetched batches are the in-process ones, and training is unchanged."""

from __future__ import annotations

import pytest
import torch
from synthetic_source import SyntheticDigits, tiny_config
from test_trainer import strip

from unimodal.train import train
from unimodal.train.prefetch import Prefetched, requests_for

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def same(a, b) -> None:
    for name in ("text_ids", "visual", "unit", "noisy", "doc", "modality", "pos", "block_slot", "t", "y", "text_target"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_prefetched_batches_equal_the_sources_in_order_and_out_of_order():
    src = SyntheticDigits()
    reqs = requests_for(start=3, steps=7, grad_accum=2, world_size=2, rank=1, batch_size=4)
    assert reqs[:2] == [(3, 1, 4, 4), (3, 3, 4, 4)] and len(reqs) == 8
    pre = Prefetched(src, reqs, workers=2)
    try:
        for r in reqs[:5]:
            same(pre.batch(*r), src.batch(*r))
        same(pre.batch(99, 0, 1, 4), src.batch(99, 0, 1, 4))  # not the next expected: computed in-process
        for r in reqs[5:]:
            same(pre.batch(*r), src.batch(*r))
        assert pre.served == len(reqs)
        assert pre.seed == src.seed  # everything else is the source's
    finally:
        pre.close()
    pre.close()  # idempotent
    with pytest.raises(ValueError, match="at least one worker"):
        Prefetched(src, reqs, workers=0)


def test_training_with_loader_workers_equals_training_without(tmp_path, monkeypatch):
    import unimodal.train.prefetch as prefetch

    made = []

    class Counted(prefetch.Prefetched):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(prefetch, "Prefetched", Counted)
    kw = dict(steps=4, batch_size=4, grad_accum=2, ema_decay=0.0, ckpt_every=4)
    plain = train(tiny_config(tmp_path / "plain", **kw), SyntheticDigits())
    workers = train(tiny_config(tmp_path / "workers", loader_workers=2, **kw), SyntheticDigits())
    assert len(made) == 1 and made[0].served == 8  # every micro-batch came from the workers
    assert strip(workers.history) == strip(plain.history)
