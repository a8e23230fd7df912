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
    """Values worked out by hand: warmup (s+1)/5, then 0.2 + 0.8·½(1 + cos(π·(s−5)/44)) over steps 5..49."""
    total, peak = 50, 1.0
    lrs = [cosine_lr(s, total, peak, warmup=5, min_ratio=0.2) for s in range(total)]
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[5] == pytest.approx(1.0)  # the first step after warmup: cos 0
    assert lrs[16] == pytest.approx(0.2 + 0.4 * (1 + 0.7071067811865476))  # a quarter of the way: cos(π/4)
    assert lrs[27] == pytest.approx(0.6)  # half way: cos(π/2) = 0, so the mean of 1.0 and 0.2
    assert lrs[38] == pytest.approx(0.2 + 0.4 * (1 - 0.7071067811865476))  # three quarters: cos(3π/4)
    assert lrs[-1] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert [constant_lr(s, 10, 2.0, warmup=2) for s in range(4)] == [1.0, 2.0, 2.0, 2.0]


def test_lr_at_dispatches_and_names_bad_schedule():
    """At step 8 of 10 (no warmup, floor 0) the three schedules differ; values by hand:
    wsd decays over round(0.15·10) = 2 steps from step 8, so step 8 is half way: 0.5;
    cosine is ½(1 + cos(8π/9)) = ½(1 − 0.9396926) = 0.0301537; constant stays 1."""
    assert lr_at("wsd", 8, 10, 1.0, 0, 0.15, 0.0) == pytest.approx(0.5)
    assert lr_at("cosine", 8, 10, 1.0, 0, 0.15, 0.0) == pytest.approx(0.030153689607045786)
    assert lr_at("constant", 8, 10, 1.0, 0, 0.15, 0.0) == 1.0
    assert lr_at("wsd", 9, 10, 2.0, 0, 0.15, 0.5) == pytest.approx(1.0)  # the floor, min_ratio·peak, at the last step
    with pytest.raises(ConfigError, match="'linear'.*wsd"):
        lr_at("linear", 0, 10, 1.0, 0, 0.15, 0.0)
