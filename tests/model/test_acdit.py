import copy
import shutil

import pytest
import torch
from model_helpers import randomize_

from unimodal.batch import Example, collate
from unimodal.layout import Image, Layout, Text, Video
from unimodal.model import create_model

C = 12  # visual token width


def make_model(**kw):
    torch.manual_seed(0)
    return randomize_(create_model("tiny", token_dim=C, vocab_size=64, num_classes=5, **kw)).eval()


def mixed_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lay = Layout([Text([1, 5, 6]), Image(4, 4, 2, 2), Text([7, 8, 2])])
    vid = Layout([Video(4, 2, 2, 2), Text([9, 10])])
    rows = [
        Example(lay, torch.randn(16, C, generator=g), 2),
        [Example(vid, torch.randn(16, C, generator=g), 4), Example(Layout([Text([3, 4, 5])]))],
    ]
    b = collate(rows, C, seq_len=48)
    b.t = torch.randint(0, 1000, b.t.shape, generator=g)
    return b, lay


@pytest.mark.parametrize("text_condition", [False, True], ids=["plain", "text_condition"])
@torch.no_grad()
def test_clean_stream_independent_of_t_label_and_noisy_tokens(text_condition):
    m = make_model(text_condition=text_condition)
    b, _ = mixed_batch()
    layers = tuple(range(m.cfg.n_layer + 1))
    ref = m(b, hidden_layers=layers)
    b2 = b.replace(
        t=torch.randint(0, 1000, b.t.shape),
        y=torch.randint(-1, 5, b.y.shape),
        visual=torch.where(b.noisy[..., None], torch.randn_like(b.visual), b.visual),
    )
    out = m(b2, hidden_layers=layers)
    clean = ~b.noisy
    for i in layers:
        torch.testing.assert_close(out.hidden[i][clean], ref.hidden[i][clean])
    torch.testing.assert_close(out.text_logits, ref.text_logits)
    assert not torch.allclose(out.pred[b.noisy], ref.pred[b.noisy]), "the perturbation changed nothing"


@pytest.mark.parametrize("text_condition", [False, True], ids=["plain", "text_condition"])
@torch.no_grad()
def test_eps_of_block_i_ignores_later_clean_blocks_and_other_noisy_blocks(text_condition):
    m = make_model(text_condition=text_condition)
    b, lay = mixed_batch()
    ref = m(b).pred
    for i, blk in enumerate(lay.blocks):
        vis = b.visual.clone()
        for j, other in enumerate(lay.blocks):
            if j >= i:  # clean blocks >= i
                vis[0, other.clean[0] : other.clean[1]] += torch.randn(other.clean[1] - other.clean[0], C)
            if j != i:  # other noisy blocks
                vis[0, other.noisy[0] : other.noisy[1]] += torch.randn(other.noisy[1] - other.noisy[0], C)
        t = b.t.clone()
        t[0, [s.slot for s in lay.blocks if s.slot != blk.slot]] = 3  # other blocks' timesteps
        out = m(b.replace(visual=vis, t=t)).pred
        n0, n1 = blk.noisy
        torch.testing.assert_close(out[0, n0:n1], ref[0, n0:n1])
        if i > 0:  # an earlier clean block does matter
            vis2 = b.visual.clone()
            c0, c1 = lay.blocks[i - 1].clean
            vis2[0, c0:c1] += 1.0
            assert not torch.allclose(m(b.replace(visual=vis2)).pred[0, n0:n1], ref[0, n0:n1])


@torch.no_grad()
def test_text_logits_causal():
    m = make_model()
    lay = Layout([Text(list(range(1, 11)))])
    b = collate([Example(lay)], C)
    ref = m(b).text_logits
    for p in range(9):
        ids = b.text_ids.clone()
        ids[0, p + 1 :] = torch.randint(11, 64, (10 - p - 1,))
        out = m(b.replace(text_ids=ids)).text_logits
        torch.testing.assert_close(out[0, : p + 1], ref[0, : p + 1])
        assert not torch.allclose(out[0, p + 1 :], ref[0, p + 1 :])


@pytest.mark.parametrize("text_condition", [False, True], ids=["plain", "text_condition"])
@torch.no_grad()
def test_packed_documents_do_not_interact(text_condition):
    m = make_model(text_condition=text_condition)
    g = torch.Generator().manual_seed(3)
    a = Example(Layout([Text([1, 2]), Image(2, 4, 2, 2)]), torch.randn(8, C, generator=g), 1)
    c = Example(Layout([Image(2, 2, 1, 1), Text([4])]), torch.randn(4, C, generator=g), 3)
    packed = collate([[a, c]], C, seq_len=40)
    packed.t = torch.tensor([[10, 500, 20, 30, 40, 50]])
    alone_a = collate([a], C)
    alone_a.t = packed.t[:, :2]
    alone_c = collate([c], C)
    alone_c.t = packed.t[:, 2:]
    out = m(packed)
    oa, oc = m(alone_a), m(alone_c)
    La, Lc = alone_a.shape[1], alone_c.shape[1]
    torch.testing.assert_close(out.pred[0, :La], oa.pred[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pred[0, La : La + Lc], oc.pred[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.text_logits[0, La : La + Lc], oc.text_logits[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_text_condition_pools_the_text_before_each_block_in_its_own_document():
    """`text_condition`: each noisy block slot pools the mean token embedding of the text before it in its
    document (none for an image that opens its document, nothing from a packed neighbour or from text after
    the image); its prediction then follows that text, and text after the image changes nothing."""
    from unimodal.model.acdit import pooled_text, slot_doc_unit, text_columns

    m = make_model(text_condition=True)
    g = torch.Generator().manual_seed(3)
    a = Example(Layout([Text([1, 2, 9]), Image(2, 4, 2, 2), Text([11, 12])]), torch.randn(8, C, generator=g))
    c = Example(Layout([Image(2, 2, 1, 1), Text([4])]), torch.randn(4, C, generator=g))
    d = Example(Layout([Text([5, 6]), Image(2, 2, 2, 2)]), torch.randn(4, C, generator=g))
    b = collate([[a, c, d]], C, seq_len=64)
    b.t = torch.randint(0, 1000, b.t.shape, generator=g)
    s_doc, s_unit = slot_doc_unit(b.unit, b.noisy, b.doc, b.block_slot, b.t.shape[1])
    got = pooled_text(m.tok_embeddings, text_columns(b), b.doc, b.unit, s_doc, s_unit)[0]
    E = m.tok_embeddings.weight
    want = [E[[1, 2, 9]].mean(0)] * 2 + [torch.zeros_like(E[0])] * 4 + [E[[5, 6]].mean(0)]
    assert got.shape[0] == len(want) == b.t.shape[1]
    torch.testing.assert_close(got, torch.stack(want))
    ref = m(b).pred
    after, prompt = b.text_ids.clone(), b.text_ids.clone()
    after[b.text_ids == 11] = 30  # text after a's image
    prompt[b.text_ids == 9] = 30  # a's prompt
    noisy_a = b.noisy[0] & (b.doc[0] == 0)
    torch.testing.assert_close(m(b.replace(text_ids=after)).pred, ref)
    assert not torch.allclose(m(b.replace(text_ids=prompt)).pred[0, noisy_a], ref[0, noisy_a])
    # the pooled term, not only attention, carries the prompt: with it removed the prediction differs
    plain = copy.deepcopy(m)
    plain.text_cond = None
    assert not torch.allclose(plain(b).pred[0, noisy_a], ref[0, noisy_a])


def test_zero_init_gives_zero_eps_and_plain_residuals():
    m = create_model("tiny", token_dim=C, vocab_size=64)
    b, _ = mixed_batch()
    n = m.cfg.n_layer
    out = m(b, hidden_layers=tuple(range(n + 1)))
    assert torch.count_nonzero(out.pred) == 0  # final linear is zero-initialised (adaLN-Zero)
    assert out.text_logits.shape == (2, 48, 64)
    noisy = b.noisy.bool()
    assert noisy.any() and (~noisy).any()
    for i in range(1, n + 1):  # the adaLN gates start at 0: each block passes its noisy tokens through unchanged
        assert torch.equal(out.hidden[i][noisy], out.hidden[0][noisy]), i
        assert not torch.equal(out.hidden[i][~noisy], out.hidden[i - 1][~noisy]), i  # clean tokens: gate 1


@torch.no_grad()
def test_gate_init_one_opens_the_noisy_residual_and_keeps_zero_output():
    """`gate_init: one`: at init a noisy token passes every block with gate 1, like a clean token (adaLN-Zero
    would pass it through unchanged), and the model output is still zero; a bad value is one ConfigError."""
    from unimodal.errors import ConfigError

    b, _ = mixed_batch()
    noisy = b.noisy.bool()
    zero = create_model("tiny", token_dim=C, vocab_size=64)
    torch.manual_seed(0)
    one = create_model("tiny", token_dim=C, vocab_size=64, gate_init="one")
    torch.manual_seed(0)
    ref = create_model("tiny", token_dim=C, vocab_size=64)
    ref.load_state_dict(one.state_dict())  # same weights, adaLN-Zero gates
    n = one.cfg.n_layer
    out, out_ref = one(b, hidden_layers=tuple(range(n + 1))), ref(b, hidden_layers=tuple(range(n + 1)))
    assert torch.count_nonzero(out.pred) == 0
    for i in range(1, n + 1):
        assert not torch.equal(out.hidden[i][noisy], out.hidden[i - 1][noisy]), i  # the residual is open
        assert torch.equal(out_ref.hidden[i][noisy], out_ref.hidden[0][noisy]), i  # adaLN-Zero: closed
    torch.testing.assert_close(out.text_logits, out_ref.text_logits)  # the clean stream does not see the gates
    assert zero.cfg.gate_init == "zero"
    with pytest.raises(ConfigError, match="gate_init='open'.*zero.*one"):
        create_model("tiny", token_dim=C, vocab_size=64, gate_init="open")


@torch.no_grad()
def test_flex_attention_matches_sdpa():
    pytest.importorskip("torch.nn.attention.flex_attention")
    m = make_model()
    b, _ = mixed_batch()
    ref = m(b, hidden_layers=(2,))
    flex = copy.deepcopy(m)
    flex.cfg.attn_backend = "flex"
    if shutil.which("cc") is None and shutil.which("gcc") is None:  # pragma: no cover - platform
        pytest.skip("FlexAttention on CPU is compiled by torch.compile, which needs a C compiler (cc/gcc) on PATH")
    out = flex(b, hidden_layers=(2,))  # a crash in the flex path is a failure, not a skip
    real = b.doc >= 0
    torch.testing.assert_close(out.hidden[2][real], ref.hidden[2][real], atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(out.pred, ref.pred, atol=2e-4, rtol=2e-4)


def test_tiny_model_overfits_one_mixed_batch():
    from unimodal.diffusion.loss import compute_loss
    from unimodal.diffusion.schedule import NoiseSchedule, ScheduleConfig

    torch.manual_seed(0)
    m = create_model("tiny", token_dim=C, vocab_size=64, num_classes=5)
    b, _ = mixed_batch()
    sched = NoiseSchedule(ScheduleConfig())
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, b.t.shape, generator=g)
    noise = torch.randn(b.visual.shape, generator=g)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(300):
        parts = compute_loss(m, b, sched, t=t, noise=noise)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append(parts["loss"].item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


@torch.no_grad()
def test_tied_embeddings_save_once_and_load_tied(tmp_path):
    from unimodal.checkpoint import load_checkpoint, read_weights, save_checkpoint

    m = make_model(tie_embeddings=True)
    assert m.lm_head.weight is m.tok_embeddings.weight
    b, _ = mixed_batch()
    ref = m(b)
    ck_dir = save_checkpoint(tmp_path / "tied", m)
    saved = read_weights(ck_dir / "model.safetensors")
    assert "tok_embeddings.weight" in saved and "lm_head.weight" not in saved  # one copy of the shared matrix
    back = load_checkpoint(ck_dir).model
    assert back.cfg.tie_embeddings and back.lm_head.weight is back.tok_embeddings.weight  # still one parameter
    assert torch.equal(back.tok_embeddings.weight, m.tok_embeddings.weight)
    out = back(b)
    torch.testing.assert_close(out.text_logits, ref.text_logits, rtol=0, atol=0)
    torch.testing.assert_close(out.pred, ref.pred, rtol=0, atol=0)


def test_hidden_layers_range_and_the_automatic_attention_backend():
    from unimodal.config import ConfigError

    m = make_model()
    b, _ = mixed_batch()
    n = m.cfg.n_layer
    for bad in (-1, n + 1):
        with pytest.raises(ConfigError, match=rf"hidden layer {bad} out of range: valid are 0..{n}"):
            m(b, hidden_layers=(bad,))
    assert m.cfg.attn_backend == "auto"
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # auto: flex only on CUDA without a KV cache; SDPA on CPU and for cached decoding
    assert [m.attention_backend(d, c) for d, c in ((cpu, False), (cpu, True), (cuda, False), (cuda, True))] == \
        ["sdpa", "sdpa", "flex", "sdpa"]
    m.cfg.attn_backend = "flex"
    assert (m.attention_backend(cpu, False), m.attention_backend(cuda, True)) == ("flex", "sdpa")
    m.cfg.attn_backend = "sdpa"
    assert m.attention_backend(cuda, False) == "sdpa"


def assert_same_loss_and_grads(eager, compiled, batch) -> None:  # noqa: ANN001
    """compute_loss and every parameter gradient of `compiled` equal those of `eager` on `batch` (same noise draws)."""
    from unimodal.diffusion import NoiseSchedule, compute_loss

    losses, grads = [], []
    for m in (eager, compiled):
        m.zero_grad()
        out = compute_loss(m, batch, NoiseSchedule(), generator=torch.Generator().manual_seed(2))
        out["loss"].backward()
        losses.append(out["loss"].detach())
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-4, rtol=1e-3, msg=n)


def test_compiled_forward_gives_the_eager_loss_and_gradients():
    """`compile_forward` (inductor) computes the same function: loss and every gradient as eager, on a
    class->image batch (the split path) and, second shape, a mixed text+image batch (the general path)."""
    torch.manual_seed(0)
    eager = randomize_(create_model("tiny", n_layer=2, token_dim=6, vocab_size=32, num_classes=3), std=0.05)
    compiled = copy.deepcopy(eager).compile_forward()
    assert compiled.compile_forward() is compiled  # idempotent: not wrapped twice
    x = torch.randn(3, 16, 6, generator=torch.Generator().manual_seed(1))
    c2i = collate([Example(Layout([Image(4, 4, 2, 2)]), x[i], i % 3) for i in range(3)], 6)
    mixed = collate([Example(Layout([Text([1, 7, 9]), Image(4, 4, 2, 2), Text([4, 2])]), x[i]) for i in range(3)], 6)
    for batch in (c2i, mixed):
        assert_same_loss_and_grads(eager, compiled, batch)


def test_compiled_packed_batches_share_one_block_graph_and_give_the_eager_gradients(monkeypatch):
    """Packed text+image batches (a new layout, row count, length and number of noisy block slots on
    every step) run each block through one dynamic-shape graph: after the first batches nothing
    compiles again, every layer shares it, and loss and gradients equal eager on each batch. On a CPU
    that graph attends through the additive-mask route (one `attention_bias` a forward), eager through SDPA."""
    import torch._dynamo

    from unimodal.model import acdit

    biases = []  # built once per compiled forward, outside the graph, and passed to every layer's block
    attention_bias = acdit.attention_bias
    monkeypatch.setattr(acdit, "attention_bias", lambda m: biases.append(m.shape) or attention_bias(m))

    torch.manual_seed(0)
    eager = randomize_(create_model("tiny", n_layer=3, token_dim=6, vocab_size=32), std=0.05)
    compiled = copy.deepcopy(eager).compile_forward()
    g = torch.Generator().manual_seed(1)

    def doc(n_text: int, blocks: int) -> Example:
        text = torch.randint(3, 32, (n_text,), generator=g).tolist()
        return Example(Layout([Text(text), Image(2, 2 * blocks, 2, 2), Text([4, 2])]), torch.randn(4 * blocks, 6, generator=g))

    batches = [  # rows x documents per row: rows, lengths and slots per row all change
        collate([[doc(3, 2), doc(2, 1)], [doc(5, 1)]], 6),
        collate([[doc(4, 1)], [doc(2, 2), doc(3, 2)], [doc(6, 1), doc(2, 1)]], 6),
        collate([[doc(7, 2)], [doc(3, 1), doc(2, 2)], [doc(2, 1)], [doc(4, 2), doc(5, 1)]], 6),
        collate([[doc(2, 1), doc(2, 1), doc(3, 1)], [doc(9, 2)]], 6),
    ]
    assert len({(tuple(b.unit.shape), b.t.shape[1]) for b in batches}) == 4
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    graphs = []
    for batch in batches:
        assert_same_loss_and_grads(eager, compiled, batch)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert graphs == [1] * len(batches), graphs  # one compile, shared by the layers and by every later batch
    # one (rows, 1, L, L) bias per compiled forward, L the batch's kept (pruned) columns
    assert [(s[0], s[1], s[2] == s[3] <= b.unit.shape[1]) for s, b in zip(biases, batches)] == [
        (b.unit.shape[0], 1, True) for b in batches]


def test_per_token_spreads_block_vectors_exactly_with_zeros_off_the_noisy_tokens():
    """per_token (a one-hot bmm) equals an index lookup, values and gradients, with -1 slots and clean tokens zero."""
    from unimodal.model.acdit import per_token

    g = torch.Generator().manual_seed(0)
    B, L, NB, K = 3, 11, 4, 6
    slot = torch.randint(-1, NB, (B, L), generator=g)
    noisy = (slot >= 0) & (torch.rand(B, L, generator=g) < 0.8)  # some slotted tokens are clean (their clean copy)
    pb = torch.randn(B, NB, K, generator=g, requires_grad=True)
    got = per_token(pb, slot, noisy)
    want = torch.stack([torch.stack([pb[b, slot[b, i]] if noisy[b, i] else pb.new_zeros(K) for i in range(L)])
                        for b in range(B)])
    assert torch.equal(got, want)
    w = torch.randn(B, L, K, generator=g)
    (ga,) = torch.autograd.grad((got * w).sum(), pb)
    (gb,) = torch.autograd.grad((want * w).sum(), pb)
    torch.testing.assert_close(ga, gb, rtol=0, atol=1e-6)


def test_gelu_tanh_compiled_form_equals_atens_tanh_gelu_with_gradients():
    """Under torch.compile `gelu_tanh` runs as x·sigmoid(2z): the same function as aten's tanh-GELU, values and
    gradients, from the saturated tails (where a wrong constant or sign shows at once) to the origin."""
    import torch.nn.functional as F

    from unimodal.model.acdit import gelu_tanh

    x = torch.cat([torch.linspace(-30, 30, 2001), torch.randn(4000)]).requires_grad_()
    want = F.gelu(x, approximate="tanh")
    (want_grad,) = torch.autograd.grad(want.pow(2).sum(), x)
    compiled = torch.compile(gelu_tanh, dynamic=False)
    got = compiled(x)
    (got_grad,) = torch.autograd.grad(got.pow(2).sum(), x)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(gelu_tanh(x), want)  # eager: aten's kernel itself


@pytest.mark.parametrize("rep", [1, 2, 3])
def test_shared_rows_matmul_equals_the_tiled_product(rep):
    """Branches stacked on the rows read one copy of b: the same as tiling b to every row, row for row."""
    from unimodal.model.acdit import shared_rows_matmul

    g = torch.Generator().manual_seed(rep)
    a, b = torch.randn(rep * 4, 3, 5, 7, generator=g), torch.randn(4, 3, 7, 6, generator=g)
    torch.testing.assert_close(shared_rows_matmul(a, b), a @ b.repeat(rep, 1, 1, 1))


@pytest.mark.parametrize("kv_heads,qk_norm,bf16", [(None, True, False), (None, True, True), (1, True, False),
                                                   (None, False, False), (1, False, True)])
def test_rotary_qkv_equals_project_then_rope(kv_heads, qk_norm, bf16):
    """The row-layout attention inputs (`Attention._rows_qkv`: norm and rotary in the projection's layout, q and k
    as one tensor; what a compiled fp32 graph runs) are `project` then `apply_rope`: q, k, v and the gradients of
    every input and weight, for multi-head and grouped-query attention, with and without QK-norm, in fp32 and
    under bf16 autocast."""
    from unimodal.model.rope import apply_rope

    torch.manual_seed(0)
    kw = {"n_kv_head": kv_heads} if kv_heads else {}
    m = randomize_(create_model("tiny", n_layer=1, token_dim=4, vocab_size=8, qk_norm=qk_norm, **kw), std=0.1)
    attn = m.blocks[0].attn
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, m.cfg.d_model, generator=g, requires_grad=True)
    cos, sin = (torch.randn(2, 5, m.cfg.head_dim, generator=g) for _ in range(2))
    ctx = torch.autocast("cpu", torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)

    def run(fast: bool):
        with ctx:
            if fast:
                out = attn._rows_qkv(attn.qkv(x), cos, sin)
            else:
                q, k, v = attn.project(x)
                out = apply_rope(q, cos, sin), apply_rope(k, cos, sin), v
        loss = sum((t.float() * torch.randn(t.shape, generator=torch.Generator().manual_seed(i))).sum()
                   for i, t in enumerate(out))
        params = [attn.qkv.weight, attn.qkv.bias] + ([attn.q_norm.weight, attn.k_norm.weight] if qk_norm else [])
        grads = torch.autograd.grad(loss, [x, *params])
        return [t.detach() for t in out], grads

    (out_a, grad_a), (out_b, grad_b) = run(True), run(False)
    tol = dict(atol=2e-2, rtol=2e-2) if bf16 else dict(atol=1e-5, rtol=1e-5)
    for a, b in zip(out_a + list(grad_a), out_b + list(grad_b)):
        assert a.shape == b.shape
        torch.testing.assert_close(a.float(), b.float(), **tol)
