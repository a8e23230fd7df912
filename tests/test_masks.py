import random

import numpy as np
import pytest
import torch

from unimodal.layout import Image, Layout, Text, Video, pack
from unimodal.masks import dense_mask, scam_mask_mod, skip_causal_mask


def rule_by_hand(unit, noisy, doc, q, k):
    """docs/architecture.md "SCAM" written out independently as branches."""
    if doc[q] != doc[k]:
        return False
    if not noisy[q]:
        return (not noisy[k]) and unit[k] <= unit[q]
    if not noisy[k]:
        return unit[k] < unit[q]
    return unit[k] == unit[q]


def random_layout(r: random.Random) -> Layout:
    segs = []
    for _ in range(r.randint(1, 4)):
        kind = r.choice("tiv")
        if kind == "t":
            segs.append(Text([r.randint(0, 50) for _ in range(r.randint(1, 4))]))
        elif kind == "i":
            bh, bw = r.choice([1, 2]), r.choice([1, 2])
            h, w = bh * r.randint(1, 2), bw * r.randint(1, 2)
            n = (h // bh) * (w // bw)
            noisy = r.choice([True, False, tuple(i for i in range(n) if r.random() < 0.5)])
            segs.append(Image(h, w, bh, bw, noisy=noisy))
        else:
            fb = r.choice([1, 2])
            segs.append(Video(fb * r.randint(1, 2), 1, r.randint(1, 2), fb, noisy=r.choice([True, False])))
    return Layout(segs)


def test_dense_mask_equals_brute_force_on_random_layouts():
    r = random.Random(0)
    for _ in range(220):
        lays = [random_layout(r) for _ in range(r.randint(1, 3))]
        total = sum(len(l) for l in lays)
        row = pack(lays, total + r.randint(0, 3))
        mask = dense_mask(*(torch.from_numpy(a)[None] for a in (row.unit, row.noisy, row.doc)))[0].numpy()
        L = len(row.unit)
        ref = np.array([[rule_by_hand(row.unit, row.noisy, row.doc, q, k) for k in range(L)] for q in range(L)])
        assert (mask == ref).all()
        assert mask.any(axis=1).all(), "every query (padding included) must see at least one key"
        real = row.doc >= 0
        assert not mask[np.ix_(real, ~real)].any(), "a real token attends padding"


def test_mask_mod_matches_dense():
    lay = Layout([Text([1, 2]), Image(2, 2, 1, 2), Text([3])])
    row = pack([lay, lay], 2 * len(lay) + 2)
    unit, noisy, doc = (torch.from_numpy(a)[None] for a in (row.unit, row.noisy, row.doc))
    mm = scam_mask_mod(unit, noisy, doc)
    L = unit.shape[1]
    q, k = torch.meshgrid(torch.arange(L), torch.arange(L), indexing="ij")
    via_mod = mm(torch.zeros_like(q), 0, q, k)
    assert torch.equal(via_mod, dense_mask(unit, noisy, doc)[0])


@pytest.mark.parametrize("N,B", [(1, 1), (1, 5), (4, 1), (4, 16), (3, 4)])
def test_skip_causal_mask_matches_paper(N, B):
    m = skip_causal_mask(N, B).numpy()
    assert m.shape == (2 * N * B, 2 * N * B)
    for q in range(2 * N * B):
        for k in range(2 * N * B):
            qn, kn = q >= N * B, k >= N * B
            qb, kb = (q % (N * B)) // B, (k % (N * B)) // B
            if not qn:
                expect = (not kn) and kb <= qb  # clean block i sees clean blocks j <= i
            elif not kn:
                expect = kb < qb  # noised block i sees clean blocks j < i
            else:
                expect = kb == qb  # ... and itself
            assert m[q, k] == expect


def test_block_size_one_clean_is_causal_and_one_block_noisy_sees_itself():
    N = 6
    m = skip_causal_mask(N, 1)
    assert torch.equal(m[:N, :N], torch.ones(N, N, dtype=torch.bool).tril())
    B = 7
    m = skip_causal_mask(1, B)
    assert m[B:, B:].all() and not m[B:, :B].any() and not m[:B, B:].any()
