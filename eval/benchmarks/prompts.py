"""Pinned, versioned prompt templates of the benchmark loaders.

A template is named ``<name>@<version>``; its text never changes once shipped. A new
wording is a new version (and the eval tasks that use it bump their own ``version``),
so a result file's ``settings.options.prompt`` says exactly what the model was asked.
The loader puts the filled template in the ``question`` column and the benchmark's
own text in ``raw_question``.
"""

from __future__ import annotations

from ..errors import EvalError

PROMPTS: dict[str, str] = {
    # the question exactly as the benchmark gives it
    "plain@1": "{question}",
    # the short-answer instruction LLaVA-style evaluations append for VQAv2, GQA, POPE and TextVQA
    "short_answer@1": "{question}\nAnswer the question using a single word or phrase.",
}


def render_prompt(template: str, question: str) -> str:
    """The question as ``template`` asks it; an unknown template name lists the shipped ones."""
    if template not in PROMPTS:
        from unimodal.errors import unknown

        raise unknown("prompt template", template, PROMPTS, cls=EvalError)
    return PROMPTS[template].format(question=question)
