"""Tiny models with planted export defects, for proving that every Tier 4 check can fail.

- :class:`TinyCausalLM`: a bag-of-context causal LM (embedding + running mean + linear head) that
  exports cleanly; with ``defect="baked_length"`` it divides by ``int(T)``, a Python number that a
  trace or an export freezes at the traced length, so outputs drift at every other length.
- :class:`TinyClassifier`: an MLP over 1x8x8 images; with ``defect="int8_outliers"`` it is trained
  on the digits (about 0.97 accuracy), then every output row of the last layer gets one huge weight
  on an input that is always zero, so eager is unchanged but per-channel int8 scales round every
  other weight to zero and the int8 file's accuracy collapses to chance; with
  ``defect="unsupported_op"`` it calls ``torch.histc``, which neither ONNX exporter supports; with
  ``defect="slow_when_exported"`` it does 200 extra matrix products whenever it is traced or
  exported (a zero-weighted branch), so exported backends run far slower than eager.
- :class:`ScriptDivergentCNN`: the zoo's digits CNN, scriptable, whose scripted form takes a branch
  eager never takes (``torch.jit.is_scripting()``): only the script-parity check can see it.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from harness.data import digit_examples, digits
from harness.spec import Capabilities, InputSpace, ModelSpec
from harness_zoo.cnn_digits import SPEC as CNN_SPEC
from harness_zoo.cnn_digits import DigitsCNN

VOCAB_SIZE = 32
CONTEXT = 16
IMAGE_SIZE = (1, 8, 8)
NUM_CLASSES = 10


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


class TinyCausalLM(nn.Module):
    """logits[t] = head(embedding[t] + mean of embeddings[<= t])."""

    def __init__(self, defect: str | None = None, dim: int = 16) -> None:
        super().__init__()
        self.defect = defect
        self.embed = nn.Embedding(VOCAB_SIZE, dim)
        self.head = nn.Linear(dim, VOCAB_SIZE)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels=None):
        hidden = self.embed(input_ids)  # (B, T, D)
        if attention_mask is not None:
            hidden = hidden * attention_mask.unsqueeze(-1)
        counts = torch.arange(1, input_ids.shape[1] + 1, dtype=hidden.dtype).view(1, -1, 1)  # (1, T, 1)
        if self.defect == "baked_length":
            counts = counts * 0 + int(input_ids.shape[1])  # a Python int: frozen at the traced length
        context = hidden.cumsum(1) / counts  # (B, T, D)
        return {"logits": self.head(hidden + context)}  # (B, T, V)


class TinyClassifier(nn.Module):
    """flatten -> linear(64 -> 32) -> ReLU -> (mask) -> linear(32 -> 10)."""

    def __init__(self, defect: str | None = None) -> None:
        super().__init__()
        self.defect = defect
        self.hidden = nn.Linear(64, 32)
        self.out = nn.Linear(32, NUM_CLASSES)
        self.register_buffer("keep", torch.ones(32))
        self.slow = nn.Linear(256, 256)
        if defect == "int8_outliers":
            self.keep[0] = 0.0  # feature 0 is always zero ...
            _train_on_digits(self)
            with torch.no_grad():
                self.out.weight[:, 0] = 1000.0  # ... and carries each row's int8 scale

    def forward(self, pixel_values: torch.Tensor, labels=None):
        features = torch.relu(self.hidden(pixel_values.flatten(1))) * self.keep  # (B, 32)
        if self.defect == "unsupported_op":
            features = features + torch.histc(features, bins=4).sum() * 0
        if self.defect == "slow_when_exported" and _exporting():
            busy = torch.ones(pixel_values.shape[0], 256)
            for _ in range(200):
                busy = self.slow(busy)
            features = features + 0 * busy[:, :32]
        logits = self.out(features)  # (B, 10)
        if labels is None:
            return {"logits": logits}
        return {"logits": logits, "loss": torch.nn.functional.cross_entropy(logits, labels)}


def _train_on_digits(model: nn.Module, steps: int = 200) -> None:
    """Full-batch Adam on all 1797 digits (seeded by the spec's build): about 0.97 training accuracy."""
    images, labels = digits()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        model(images, labels)["loss"].backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)


def causal_lm_spec(defect: str | None = None) -> ModelSpec:
    return ModelSpec(
        name=f"tiny-causal-lm-{defect or 'clean'}",
        task="causal-lm",
        build=functools.partial(TinyCausalLM, defect),
        inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, max_batch_size=4),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True),
    )


def classifier_spec(defect: str | None = None) -> ModelSpec:
    return ModelSpec(
        name=f"tiny-classifier-{defect or 'clean'}",
        task="image-classification",
        build=functools.partial(TinyClassifier, defect),
        inputs=InputSpace(image_size=IMAGE_SIZE, num_classes=NUM_CLASSES, max_batch_size=16),
        real_data=digit_examples,
    )


class ScriptDivergentCNN(DigitsCNN):
    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.features(pixel_values).flatten(1))  # (B, K)
        if torch.jit.is_scripting():
            logits = logits * 1.01
        return {"logits": logits}


def script_divergent_spec() -> ModelSpec:
    return CNN_SPEC.replace(name="cnn-script-divergent", build=ScriptDivergentCNN)
