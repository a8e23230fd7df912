import pytest
import torch

from unimodal.batch import Example, collate
from unimodal.layout import IGNORE, PAD_DOC, VIDEO, Image, Layout, LayoutError, Text, Video, pack


def test_image_blocks_raster_order():
    lay = Layout([Image(4, 4, 2, 2)])
    # block 0 = top-left 2x2 of a 4x4 raster grid, then top-right, bottom-left, bottom-right
    assert [b.tokens.tolist() for b in lay.blocks] == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert lay.unit.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert lay.noisy.sum() == 16 and not lay.noisy[:16].any()


def test_video_blocks_are_whole_frames():
    lay = Layout([Video(frames=4, h=2, w=3, frames_per_block=2)])
    assert len(lay.blocks) == 2
    assert lay.blocks[1].tokens.tolist() == list(range(12, 24))
    assert (lay.modality == VIDEO).all()


def test_positions_text_then_visual_then_text():
    lay = Layout([Text([7, 8]), Image(2, 3, 1, 3), Text([9])])
    # text at 0, 1; image span starts at n=2 with rows 2..3 and cols 2..4; resumes at 2 + max(1,2,3) = 5
    clean = lay.pos[: lay.n_clean]
    assert clean[0].tolist() == [0, 0, 0] and clean[1].tolist() == [1, 1, 1]
    vis = {tuple(lay.pos[p]) for p in range(2, 8)}
    assert vis == {(2, 2 + i, 2 + j) for i in range(2) for j in range(3)}
    assert clean[-1].tolist() == [5, 5, 5]
    # noisy twins share unit and positions with their clean twins
    for b in lay.blocks:
        c0, c1 = b.clean
        n0, n1 = b.noisy
        assert (lay.pos[c0:c1] == lay.pos[n0:n1]).all()
        assert (lay.unit[n0:n1] == b.unit).all() and (lay.visual_index[c0:c1] == lay.visual_index[n0:n1]).all()


def test_visual_tokens_each_appear_once_per_stream():
    lay = Layout([Text([1]), Image(4, 6, 2, 3), Video(2, 2, 2, 1), Text([2, 3])])
    clean_idx = lay.visual_index[: lay.n_clean]
    assert sorted(clean_idx[clean_idx >= 0].tolist()) == list(range(4 * 6 + 2 * 2 * 2))
    assert sorted(lay.visual_index[lay.n_clean :].tolist()) == list(range(32))


def test_noisy_choice_all_none_some():
    assert Layout([Image(4, 4, 2, 2, noisy=False)]).num_noisy_blocks == 0
    lay = Layout([Image(4, 4, 2, 2, noisy=(1, 3))])
    assert [b.slot for b in lay.blocks] == [-1, 0, -1, 1]
    assert len(lay) == 16 + 8
    with pytest.raises(LayoutError, match="out of range"):
        Image(4, 4, 2, 2, noisy=(4,))


def test_text_targets_respect_loss_flags_and_images():
    lay = Layout([Text([10, 11], loss=False), Text([12, 13]), Image(2, 2, 2, 2), Text([14, 15])])
    tgt = lay.text_target[: lay.n_clean]
    # 10 -> 11 not trained (loss=False on 11); 11 -> 12, 12 -> 13 trained; 13 -> image: none; 14 -> 15
    assert tgt.tolist() == [IGNORE, 12, 13, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, 15, IGNORE]


def test_bad_segments_are_named():
    with pytest.raises(LayoutError, match="not divisible"):
        Image(5, 4, 2, 2)
    with pytest.raises(LayoutError, match="frames_per_block"):
        Video(5, 2, 2, 2)
    with pytest.raises(LayoutError, match="empty"):
        Text([])


def test_pack_and_collate():
    a = Layout([Text([1, 2]), Image(2, 2, 1, 2)])
    b = Layout([Text([3])])
    row = pack([a, b], 16)
    assert row.doc.tolist()[: len(a) + 1] == [0] * len(a) + [1]
    assert (row.doc[len(a) + 1 :] == PAD_DOC).all()
    vis = torch.arange(4 * 3, dtype=torch.float).view(4, 3)
    batch = collate([[Example(a, vis, 5), Example(b)], Example(a, vis)], token_dim=3, seq_len=16)
    assert batch.shape == (2, 16) and batch.t.shape == (2, 2)
    assert batch.y.tolist() == [[5, 5], [-1, -1]]
    # clean and noisy copies of visual token k hold row k of `vis`
    for p in range(len(a)):
        if a.visual_index[p] >= 0:
            assert torch.equal(batch.visual[0, p], vis[a.visual_index[p]])
    with pytest.raises(LayoutError, match="row 0 example 0"):
        collate([Example(a, vis[:3])], token_dim=3)
    with pytest.raises(LayoutError, match="seq_len"):
        pack([a, b], 4)


def _tail(lay: Layout, clean_from: int, noisy_from: int) -> dict:
    """The per-token arrays of `lay` from clean index `clean_from` and noisy index `noisy_from` on."""
    cols = list(range(clean_from, lay.n_clean)) + list(range(lay.n_clean + noisy_from, len(lay)))
    return {k: getattr(lay, k)[cols].tolist() for k in ("unit", "pos", "noisy", "modality", "text_ids", "text_target")}


@pytest.mark.parametrize(
    "past, tail",
    [
        ([Text([1, 2, 3])], [Text([4])]),
        ([Text([1]), Image(4, 4, 2, 2, noisy=False)], [Text([5, 6]), Image(2, 6, 1, 3, noisy=(0, 3))]),
        ([Text([1, 2]), Video(4, 2, 3, 2, noisy=False), Text([9])], [Video(6, 2, 3, 2), Text([7, 8], loss=False)]),
        ([Image(2, 2, 1, 1, noisy=(2,))], [Video(2, 4, 4, 1, noisy=(1,)), Text([3])]),
    ],
)
def test_continuation_equals_the_full_layouts_tail(past, tail):
    first = Layout(past)
    cont = Layout.continuation(tail, first.next_unit, first.next_pos)
    full = Layout(past + tail)  # built independently, from the start
    assert _tail(full, first.n_clean, len(first) - first.n_clean) == _tail(cont, 0, 0)
    assert (cont.next_unit, cont.next_pos) == (full.next_unit, full.next_pos)
    assert first.continued(tail).key == cont.key != Layout(tail).key  # the start is part of its identity
    # the continuation's blocks: same units as the full layout's last blocks, spans into the continuation
    assert [b.unit for b in cont.blocks] == [b.unit for b in full.blocks[len(first.blocks) :]]
    for b in cont.blocks:
        assert (cont.unit[b.clean[0] : b.clean[1]] == b.unit).all()


def test_continuation_start_is_checked():
    with pytest.raises(LayoutError, match="start_pos=-1"):
        Layout.continuation([Text([1])], 0, -1)


def test_left_padding_moves_padding_in_front():
    a = Layout([Text([1, 2]), Image(2, 2, 1, 2, noisy=False)])
    right, left = pack([a], 9), pack([a], 9, left=True)
    n = len(a)
    assert left.offsets == [9 - n]
    for k in ("unit", "noisy", "doc", "modality", "pos", "text_ids", "text_target", "block_slot"):
        r, lf = getattr(right, k), getattr(left, k)
        assert (lf[9 - n :] == r[:n]).all() and (lf[: 9 - n] == r[n:]).all(), k
    assert left.unit[: 9 - n].tolist() == list(range(9 - n)) and (left.doc[: 9 - n] == PAD_DOC).all()
