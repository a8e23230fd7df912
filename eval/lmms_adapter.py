"""An lmms-eval model for unimodal checkpoints: ``lmms-eval --model unimodal --model_args pretrained=CKPT``.

lmms-eval (https://github.com/EvolvingLMMs-Lab/lmms-eval) finds this class through its
own plugin mechanism, the ``lmms_eval.models`` entry-point group, which the project's
``pyproject.toml`` declares; installing unimodal is enough. Any lmms-eval task then runs
on a unimodal checkpoint:

* ``generate_until``: the request's images and its context string go in as the VQA head
  lays them out (``<bos> <boi> [image] <eoi> context``, docs/architecture.md "Sequence
  layout"), and text is decoded greedily (or with the request's ``temperature``) until
  ``<eos>``, ``max_new_tokens`` or the first ``until`` string.
* ``loglikelihood``: the log-probability of the continuation's tokens after that same
  context, read from the language-model head in one forward pass, and whether greedy
  decoding would have produced them.

A request holds at most one image (ACDiT reads one image per question); one without an
image is pure text. The ``<image>`` placeholder some tasks put into the context is
removed, since the image has its own place in the layout.

``--model_args``: ``pretrained`` (the checkpoint directory, required), ``max_new_tokens``
(default 16) and ``use_ema`` (default true); lmms-eval's own ``--batch_size`` (default 1)
and ``--device`` reach the model too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .errors import EvalError

try:  # lmms-eval is optional: the adapter class exists only where it is installed
    from lmms_eval.api.instance import GenerationResult as _Result
    from lmms_eval.api.model import lmms as _LMMBase
except ImportError:  # pragma: no cover - exercised where lmms-eval is absent
    _LMMBase = object
    from dataclasses import dataclass as _dataclass

    @_dataclass
    class _Result:  # type: ignore[no-redef]
        text: Any
        token_counts: Any = None


class Scored(_Result):
    """A loglikelihood answer, ``(logprob, is_greedy)``: unpacks and indexes as that pair.

    It is an lmms-eval ``GenerationResult`` whose ``text`` is the pair, because
    lmms-eval 0.7's evaluator passes every model output through
    ``unwrap_generation_output``, which turns a plain tuple into its string.
    """

    def __init__(self, logprob: float, is_greedy: bool) -> None:
        super().__init__(text=(float(logprob), bool(is_greedy)))

    def __iter__(self):
        return iter(self.text)

    def __getitem__(self, i: int) -> Any:
        return self.text[i]

    def __len__(self) -> int:
        return 2

MODEL_ID = "unimodal"
PLACEHOLDERS = ("<image>", "<image_1>")


def manifest() -> Any:
    """The lmms-eval entry point (group ``lmms_eval.models``): registers ``--model unimodal``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.UnimodalLMM")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise EvalError(f"--model_args: {value!r} is not a boolean; use true or false")


def _int(name: str, value: Any) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        out = 0
    if out < 1:
        raise EvalError(f"--model_args {name}={value!r} is invalid: must be an integer >= 1")
    return out


def _clean(context: str) -> str:
    for p in PLACEHOLDERS:
        context = context.replace(p, " ")
    return " ".join(context.split())


class UnimodalLMM(_LMMBase):  # type: ignore[misc, valid-type]
    """A unimodal checkpoint as an lmms-eval simple model (see the module docstring)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str = "cpu",
        batch_size: int | str = 8,
        max_new_tokens: int | str = 16,
        use_ema: bool | str = True,
        **unused: Any,
    ) -> None:
        if _LMMBase is object:
            raise EvalError("lmms-eval is not installed: pip install lmms-eval")
        super().__init__()
        from unimodal.checkpoint import load_checkpoint
        from unimodal.cli_args import device as parse_device
        from unimodal.tasks import VQA
        from unimodal.tokenizers import TextTokenizer

        if unused:
            raise EvalError(f"--model_args: unknown argument(s) {sorted(unused)}; valid: pretrained, device, batch_size, max_new_tokens, use_ema")
        try:
            self._device = torch.device(parse_device(str(device)))
        except Exception as e:  # argparse.ArgumentTypeError: one line naming the device
            raise EvalError(f"--model_args device: {e}") from None
        self.ckpt = load_checkpoint(pretrained, use_ema=_flag(use_ema), device=str(self._device))
        if self.ckpt.tokenizer_dir is None or self.ckpt.model.cfg.vocab_size == 0:
            raise EvalError(f"checkpoint {pretrained!r} has no text tokenizer: lmms-eval tasks need a model that writes text")
        if self.ckpt.visual is None:
            raise EvalError(f"checkpoint {pretrained!r} has no visual config: lmms-eval tasks need a model that reads images")
        self.model = self.ckpt.model.eval()
        self.tok = TextTokenizer.load(self.ckpt.tokenizer_dir)
        self.head = VQA(self.ckpt.visual, self.tok)
        self.batch_size = _int("batch_size", batch_size)
        self.max_new_tokens = _int("max_new_tokens", max_new_tokens)

    # -- inputs -----------------------------------------------------------------------------

    def _visual(self, request: Any) -> Any:
        """The request's one PIL image, or None."""
        doc_to_visual, doc_id, task, split = request.args[2:6]
        if doc_to_visual is None:
            return None
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        visuals = [v for v in (visuals if isinstance(visuals, (list, tuple)) else [visuals]) if v is not None]
        if len(visuals) > 1:
            raise EvalError(f"task {task!r} doc {doc_id}: {len(visuals)} images in one request; the unimodal adapter reads one image per request")
        if visuals and not hasattr(visuals[0], "convert"):
            raise EvalError(f"task {task!r} doc {doc_id}: the visual is a {type(visuals[0]).__name__}, not an image; only images are supported")
        return visuals[0] if visuals else None

    def _tokens(self, images: list[Any]) -> torch.Tensor:
        """(N, T, C) visual tokens of PIL images, converted exactly as training data is."""
        import datasets

        from unimodal.tasks import build_image_bank

        ds = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
        return build_image_bank(ds, self.ckpt.visual, name="lmms-eval").tokens

    def _example(self, image_tokens: torch.Tensor | None, context: str, continuation: list[int] | None = None) -> Any:
        from unimodal.batch import Example
        from unimodal.layout import Layout, Text

        ctx = self.head.encode(_clean(context)) if _clean(context) else []
        if image_tokens is not None:
            segs = self.head.context(_clean(context) or None)
        else:
            segs = [Text([self.tok.bos_id, *ctx], loss=False)]
        if continuation:
            segs.append(Text(continuation))
        return Example(Layout(segs), image_tokens)

    def _batches(self, requests: list[Any]) -> list[tuple[list[int], list[Any]]]:
        """Requests grouped (in order) into batches that all have an image or all have none."""
        images = [self._visual(r) for r in requests]
        out: list[tuple[list[int], list[Any]]] = []
        for i, img in enumerate(images):
            if out and len(out[-1][0]) < self.batch_size and (out[-1][1][0] is None) == (img is None):
                out[-1][0].append(i)
                out[-1][1].append(img)
            else:
                out.append(([i], [img]))
        return out

    # -- lmms-eval API ----------------------------------------------------------------------

    @torch.no_grad()
    def generate_until(self, requests: list[Any]) -> list[str]:
        from unimodal.batch import Example
        from unimodal.generate import Generator, TextSampling, decode_text_events

        answers: list[str] = [""] * len(requests)
        for idx, images in self._batches(requests):
            tokens = self._tokens(images) if images[0] is not None else None
            kwargs = [dict(requests[i].args[1] or {}) for i in idx]
            max_new = max(_int("max_new_tokens", k.get("max_new_tokens", self.max_new_tokens)) for k in kwargs)
            first = kwargs[0]  # lmms-eval sends one generation setting per task
            sample = _flag(first["do_sample"]) if "do_sample" in first else float(first.get("temperature") or 0.0) > 0
            temperature = float(first.get("temperature") or 1.0) if sample else 0.0
            examples: list[Example] = [self._example(None if tokens is None else tokens[j], requests[i].args[0]) for j, i in enumerate(idx)]
            g = Generator(self.model, len(examples))
            g.prefill(examples)
            stop = TextSampling(max_new_tokens=max_new, temperature=temperature, stop_tokens=(self.tok.eos_id,))
            ids = decode_text_events(list(g.stream_text(stop)), len(examples))
            for i, row, k in zip(idx, ids, kwargs):
                text = self.tok.decode([t for t in row if t != self.tok.eos_id])
                until = k.get("until") or []
                for s in [until] if isinstance(until, str) else until:
                    if s and s in text:
                        text = text[: text.index(s)]
                answers[i] = text.strip()
        return answers

    @torch.no_grad()
    def loglikelihood(self, requests: list[Any]) -> list[Scored]:
        from unimodal.batch import collate
        from unimodal.layout import IGNORE

        out: list[Scored] = [Scored(0.0, False)] * len(requests)
        for idx, images in self._batches(requests):
            tokens = self._tokens(images) if images[0] is not None else None
            conts, examples = [], []
            for j, i in enumerate(idx):
                context, target, _, doc_id, task, split = requests[i].args
                text = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
                cont = self.head.encode(str(text).strip())
                if not cont:
                    raise EvalError(f"task {task!r} doc {doc_id}: the continuation {text!r} encodes to no tokens")
                conts.append(cont)
                examples.append(self._example(None if tokens is None else tokens[j], context, cont))
            batch = collate(examples, self.model.cfg.token_dim).to(self._device)
            logits = self.model(batch).text_logits.float()
            logp = F.log_softmax(logits, dim=-1)
            for row, (i, cont) in enumerate(zip(idx, conts)):
                sel = batch.text_target[row] != IGNORE
                target = batch.text_target[row][sel]
                if target.tolist() != cont:  # the layout must score exactly the continuation's tokens
                    raise EvalError(f"internal: scored {target.tolist()} instead of the continuation {cont}")
                lp = logp[row][sel].gather(-1, target[:, None]).squeeze(-1)
                greedy = bool((logits[row][sel].argmax(-1) == target).all())
                out[i] = Scored(float(lp.sum()), greedy)
        return out

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        return self.generate_until(requests)

