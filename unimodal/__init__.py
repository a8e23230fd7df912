"""unimodal: unified multimodal understanding and generation on one ACDiT backbone.

Core pieces: `config` (typed configs and presets), `layout` (segments → per-token
arrays), `masks` (the one SCAM rule), `model` (the backbone), `diffusion`
(schedule, loss, samplers). Task heads live in `unimodal.tasks`, the evaluation
harness in `unimodal.eval`.
"""

__version__ = "0.1.0"
