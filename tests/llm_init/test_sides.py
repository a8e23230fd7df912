"""`side_of` splits the backbone exactly: the visual side is what a text-only document does not depend on."""

import torch
from model_helpers import randomize_

from unimodal.batch import Example, collate
from unimodal.layout import Layout, Text
from unimodal.llm_init.finetune import side_of
from unimodal.model import create_model

C = 12


@torch.no_grad()
def test_a_parameter_is_visual_side_exactly_when_the_text_logits_ignore_it():
    """Every parameter of a model with every condition term (class and pooled text): perturbing it changes
    a text-only document's logits iff `side_of` calls it text (the visual side is what an LLM start lacks).
    A visual-side part labelled text (or the reverse) would make `freeze: [visual]` / LoRA on one side touch
    the other."""
    torch.manual_seed(0)
    m = randomize_(create_model("tiny", token_dim=C, vocab_size=64, num_classes=5, text_condition=True)).eval()
    g = torch.Generator().manual_seed(0)
    b = collate([Example(Layout([Text([1, 5, 6, 7, 8, 2])]))], C)
    ref = m(b).text_logits
    sides = {}
    for name, p in m.named_parameters():
        keep = p.detach().clone()
        p.add_(torch.randn(p.shape, generator=g) * 0.5)
        sides[name] = "visual" if torch.allclose(m(b).text_logits, ref) else "text"
        p.copy_(keep)
    assert any(s == "visual" for s in sides.values()) and any(s == "text" for s in sides.values())
    assert {n: side_of(n) for n in sides} == sides
