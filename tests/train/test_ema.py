import pytest
import torch
from synthetic_source import SyntheticDigits, tiny_config

from unimodal.train.ema import EMA

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch deprecations inside DeepSpeed's ZeRO-3


def test_ema_follows_the_formula_and_round_trips():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    ema = EMA(m, decay=0.9)
    ref = {k: v.detach().clone() for k, v in m.named_parameters()}
    for _ in range(3):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p))
        ema.update(m)
        ref = {k: 0.9 * ref[k] + 0.1 * p.detach() for k, p in m.named_parameters()}
    sd = ema.state_dict()
    assert sd.keys() == ref.keys() and all(v.dtype == torch.float32 for v in sd.values())
    for k in ref:
        torch.testing.assert_close(sd[k], ref[k])
    other = EMA(m, decay=0.9)
    other.load_state_dict(sd)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    other.copy_to(fresh)
    for k, p in fresh.named_parameters():
        assert torch.equal(p, sd[k])
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({})


def test_ema_of_a_zero3_partitioned_model_equals_the_ema_of_its_gathered_weights(tmp_path):
    """Under ZeRO-3 each parameter is a partition; the EMA gathers them and must see the full values."""
    from unimodal.diffusion.loss import compute_loss
    from unimodal.diffusion.schedule import NoiseSchedule
    from unimodal.model import ACDiT
    from unimodal.train.distributed import init_distributed
    from unimodal.train.engine import create_engine
    from unimodal.train.trainer import full_state

    init_distributed()
    cfg = tiny_config(tmp_path, zero_stage=3, batch_size=4)
    torch.manual_seed(0)
    engine, _ = create_engine(ACDiT(cfg.model_config()), cfg)
    try:
        assert any(hasattr(p, "ds_id") and p.numel() == 0 for p in engine.module.parameters())  # really partitioned
        ema = EMA(engine.module, decay=0.7)
        ref = full_state(engine.module, keep=True)
        initial = dict(ref)
        assert ema.state_dict().keys() == ref.keys()
        src, schedule = SyntheticDigits(), NoiseSchedule()
        for step in range(3):
            loss = compute_loss(engine, src.batch(step, 0, 1, 4), schedule, generator=torch.Generator().manual_seed(step))
            engine.backward(loss["loss"])
            engine.step()
            ema.update(engine.module)
            now = full_state(engine.module, keep=True)
            ref = {k: 0.7 * ref[k] + 0.3 * now[k] for k in ref}
        assert any(not torch.equal(now[k], initial[k]) for k in now)  # the weights did move
        for k, v in ema.state_dict().items():
            torch.testing.assert_close(v, ref[k])
    finally:
        engine.destroy()


def test_ema_warmup_follows_the_step_and_caps_at_decay():
    import torch

    from unimodal.train.ema import EMA

    m = torch.nn.Linear(2, 2, bias=False)
    ema = EMA(m, 0.999)
    assert ema.decay_at(None) == 0.999 and ema.decay_at(1) == 2 / 11 and ema.decay_at(10**6) == 0.999
    with torch.no_grad():
        m.weight.fill_(1.0)
    before = ema.state_dict()["weight"].clone()
    ema.update(m, step=1)  # d = 2/11: the average moves 9/11 of the way to the new weights
    torch.testing.assert_close(ema.state_dict()["weight"], before + (1.0 - before) * 9 / 11)
