import math

import pytest

from unimodal.config import ConfigError
from unimodal.train.schedules import constant_lr, cosine_lr, lr_at, wsd_lr


def test_wsd_warms_up_holds_then_decays_linearly_to_the_floor_at_the_last_step():
    total, peak = 100, 3e-4
    lrs = [wsd_lr(s, total, peak, warmup=10, decay_frac=0.15, min_ratio=0.1) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / 10) and lrs[9] == pytest.approx(peak)
    assert all(lr == peak for lr in lrs[10:85])  # stable phase: the last 15 steps decay (paper: last 15%)
    assert lrs[-1] == pytest.approx(0.1 * peak)
    decay = lrs[84:]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    steps = [a - b for a, b in zip(decay, decay[1:])]
    assert max(steps) == pytest.approx(min(steps))  # linear


def test_wsd_decay_yields_to_warmup_when_they_overlap():
    lrs = [wsd_lr(s, 10, 1.0, warmup=9, decay_frac=0.5) for s in range(10)]
    assert lrs[:9] == pytest.approx([(s + 1) / 9 for s in range(9)]) and lrs[9] == 0.0


def test_cosine_and_constant():
    total, peak = 50, 1.0
    lrs = [cosine_lr(s, total, peak, warmup=5, min_ratio=0.2) for s in range(total)]
    assert lrs[4] == pytest.approx(peak) and lrs[-1] == pytest.approx(0.2)
    mid = 5 + (total - 5 - 1) / 2
    assert cosine_lr(int(mid), total, peak, 5, 0.2) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * (int(mid) - 5) / 44)))
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert [constant_lr(s, 10, 2.0, warmup=2) for s in range(4)] == [1.0, 2.0, 2.0, 2.0]


def test_lr_at_dispatches_and_names_bad_schedule():
    assert lr_at("wsd", 3, 10, 1.0, 0, 0.15, 0.0) == wsd_lr(3, 10, 1.0, 0, 0.15, 0.0)
    with pytest.raises(ConfigError, match="'linear'.*wsd"):
        lr_at("linear", 0, 10, 1.0, 0, 0.15, 0.0)
