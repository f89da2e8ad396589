"""The reference model zoo: one module per model family, each exposing ModelSpecs.

``ZOO`` maps a model name to ``"module:attribute"`` so that listing and validating names never
imports torch; :func:`load_zoo_spec` imports the one that is asked for (through the harness's
loader, so this package holds only model code and data: it passes the model-code safety scan).
"""

from __future__ import annotations

from harness.spec import ModelSpec

ZOO: dict[str, str] = {
    "gpt2-tiny": "models.gpt2_tiny:SPEC",
    "cnn-digits": "models.cnn_digits:SPEC",
    "t5-tiny": "models.t5_tiny:SPEC",
    "minilm": "models.minilm:SPEC",
    "multimode-gpt-lm": "models.multimode_gpt:LM_SPEC",
    "multimode-gpt-tagger": "models.multimode_gpt:TAGGER_SPEC",
    "multimode-gpt-scorer": "models.multimode_gpt:SCORER_SPEC",
    "associative-gpt": "models.associative_gpt:SPEC",
}


def load_zoo_spec(name: str) -> ModelSpec:
    """The ModelSpec registered under ``name``; KeyError names the available models."""
    if name not in ZOO:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(ZOO))}")
    from harness.loading import import_attribute

    return import_attribute(ZOO[name])
