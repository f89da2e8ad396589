"""The reference model zoo: one module per model family, each exposing ModelSpecs and holding its own pieces.

``ZOO`` maps a model name to ``"module:attribute"`` so that listing and validating names never
imports torch. The zoo registers itself with the harness (the harness never imports it): pyproject.toml
names ``ZOO`` in the entry-point group ``harness.zoo``, which :mod:`harness.registry` reads. A model's own
training pieces live beside it (``multimode_gpt_losses``: its loss modifiers; ``multimode_gpt_schedule``: its
head/body transfer-learning schedule). :func:`load_zoo_spec` imports the spec that is asked for (through the
harness's loader, so this package holds only model code and data: it passes the model-code safety scan).
"""

from __future__ import annotations

from harness.spec import ModelSpec

ZOO: dict[str, str] = {
    "gpt2-tiny": "harness_zoo.gpt2_tiny:SPEC",
    "cnn-digits": "harness_zoo.cnn_digits:SPEC",
    "t5-tiny": "harness_zoo.t5_tiny:SPEC",
    "minilm": "harness_zoo.minilm:SPEC",
    "multimode-gpt-lm": "harness_zoo.multimode_gpt:LM_SPEC",
    "multimode-gpt-tagger": "harness_zoo.multimode_gpt:TAGGER_SPEC",
    "multimode-gpt-scorer": "harness_zoo.multimode_gpt:SCORER_SPEC",
    "associative-gpt": "harness_zoo.associative_gpt:SPEC",
    "gpt2-tiny-lora": "harness_zoo.gpt2_lora:SPEC",
    "cnn-digits-film": "harness_zoo.hook_modulator:SPEC",
}


def load_zoo_spec(name: str) -> ModelSpec:
    """The ModelSpec registered under ``name``; KeyError names the available models."""
    if name not in ZOO:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(ZOO))}")
    from harness.loading import import_attribute

    return import_attribute(ZOO[name])
