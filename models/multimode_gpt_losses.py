"""multimode-gpt's loss modifiers: label smoothing, entropy-based per-sample weighting and a mask-ratio weight.

They are multimode-gpt's own pieces, so they live beside it in the zoo (the harness core knows no model's loss).
They see logits (or scores), labels and masks, never a model, so another zoo model can reuse them; a model
module decides which ones apply to which of its modes (see ``multimode_gpt.py``, ``MODIFIERS_BY_MODE``).

Two kinds of targets (``TARGET_KINDS``):

- ``"classes"``: class logits ``(N, T, K)`` and integer labels ``(N, T)``, ``ignore_index`` excluded
  (a causal LM after its shift, a token classifier; sequence classification is ``T = 1``).
- ``"scores"``: one score in [0, 1] per sample ``(N,)`` and float labels ``(N,)``, ``ignore_index``
  excluded (a sequence scorer with an MSE loss).

Composition (:class:`LossPipeline`), always in this order, whatever order the modifiers are listed in:

1. **Target stage**: per-target losses ``l[i, t]`` and the scored mask ``m[i, t]`` (1 where the label
   is not ``ignore_index``). Classes: cross-entropy with label smoothing ``eps`` (torch's definition,
   ``l = (1 - eps) * -log p[y] + eps * mean_k(-log p[k])``; ``eps = 0`` without :class:`LabelSmoothing`).
   Scores: ``l[i] = (s[i] - y[i])**2``.
2. **Weight stage**: one weight per sample, the product of the weighting modifiers' weights,
   ``w[i] = prod_k w_k[i]``, multiplied in the order listed (a product, so the order changes nothing
   beyond float rounding). Weights are computed from detached tensors: no gradient flows through them.
   Without weighting modifiers every ``w[i]`` is 1.
3. **Normalisation**: ``L = sum_i w[i] * sum_t m[i, t] * l[i, t] / sum_i w[i] * sum_t m[i, t]``, a
   weighted mean over scored targets. A common scale of the weights cancels, so the loss stays on the
   plain loss's scale; with every ``w[i] = 1`` it is exactly (bitwise) the plain loss, the token-weighted
   mean over scored targets. Weights that are equal for every sample also leave the loss unchanged.
   No scored target at all gives ``0 / 0 = nan``, like ``torch.nn.functional.cross_entropy``.

Which modifier applies to which target kind (``APPLICABILITY``); a pipeline holding a modifier that does
not apply raises :class:`ModifierNotApplicable` when it is asked for a loss of that kind (zero-valued
settings included: a configured modifier that cannot act is a configuration error, not a no-op):

============================  =========  ======  =====================================================
modifier                      classes    scores  why not
============================  =========  ======  =====================================================
``label_smoothing`` (eps)     yes        no      a score has no class distribution to smooth
``entropy_weighting`` (beta)  yes        yes     (scores: the binary entropy of the score)
``mask_ratio`` (gamma)        yes        no      one target per sample: the ratio is always 1
============================  =========  ======  =====================================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

TARGET_KINDS: tuple[str, ...] = ("classes", "scores")


class ModifierNotApplicable(ValueError):
    """A loss modifier was asked to act on a kind of target it does not apply to."""


def _check_float(name: str, value: float, *, low: float, high: float, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {name}={value!r}")
    value = float(value)
    inside = low <= value < high if high_open else low <= value <= high
    if not inside:
        bound = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {bound}, got {name}={value!r}")
    return value


def _finite_float(name: str, value: float) -> float:
    value = _check_float(name, value, low=-math.inf, high=math.inf)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {name}={value!r}")
    return value


@dataclass(frozen=True)
class LossContext:
    """What the weight stage sees of a batch; every tensor is detached."""

    kind: str  # "classes" or "scores"
    predictions: torch.Tensor  # classes: logits (N, T, K); scores: scores in [0, 1] (N,)
    mask: torch.Tensor  # (N, T) or (N,), float: 1 where the label is scored
    real: torch.Tensor  # like mask: 1 where the target position is a real (not padded) one


class LossModifier:
    """Base of the modifiers; subclasses are frozen dataclasses holding their hyperparameters."""

    name: ClassVar[str] = ""
    stage: ClassVar[str] = ""  # "target" (changes per-target losses) or "weight" (per-sample weights)
    targets: ClassVar[frozenset[str]] = frozenset()  # the target kinds it applies to

    def weights(self, context: LossContext) -> torch.Tensor:  # pragma: no cover - weight stage only
        raise NotImplementedError


@dataclass(frozen=True)
class LabelSmoothing(LossModifier):
    """Cross-entropy against ``(1 - epsilon) * onehot(y) + epsilon / K`` (torch's ``label_smoothing``)."""

    epsilon: float  # in [0, 1): 0 is the plain cross-entropy

    name: ClassVar[str] = "label_smoothing"
    stage: ClassVar[str] = "target"
    targets: ClassVar[frozenset[str]] = frozenset({"classes"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _check_float("epsilon", self.epsilon, low=0.0, high=1.0, high_open=True))


@dataclass(frozen=True)
class EntropyWeighting(LossModifier):
    """``w[i] = exp(strength * H[i])``, ``H[i]`` the sample's mean prediction entropy over scored targets
    divided by its maximum (``log K``; ``log 2`` for scores), so ``H[i]`` is in [0, 1].

    ``strength > 0`` gives uncertain (high-entropy) samples more weight, ``< 0`` confident ones; 0 is the
    identity. A sample with no scored target has ``H = 0``.
    """

    strength: float  # beta, any finite real

    name: ClassVar[str] = "entropy_weighting"
    stage: ClassVar[str] = "weight"
    targets: ClassVar[frozenset[str]] = frozenset({"classes", "scores"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "strength", _finite_float("strength", self.strength))

    def weights(self, context: LossContext) -> torch.Tensor:
        return torch.exp(self.strength * normalized_entropy(context))  # (N,)


@dataclass(frozen=True)
class MaskRatioWeighting(LossModifier):
    """``w[i] = r[i] ** power`` with ``r[i]`` = scored targets / real target positions of sample i.

    ``power > 0`` favours fully labelled samples, ``power < 0`` up-weights sparsely labelled ones (the
    ``1 / r`` weighting of masked-token objectives is ``power = -1``); 0 is the identity. For ``r = 0``
    (no scored target among the real positions) ``0 ** power`` is taken as 0, and as 1 for ``power = 0``.
    """

    power: float  # gamma, any finite real

    name: ClassVar[str] = "mask_ratio"
    stage: ClassVar[str] = "weight"
    targets: ClassVar[frozenset[str]] = frozenset({"classes"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "power", _finite_float("power", self.power))

    def weights(self, context: LossContext) -> torch.Tensor:
        ratio = mask_ratio(context.mask, context.real)  # (N,)
        at_zero = torch.full_like(ratio, 1.0 if self.power == 0 else 0.0)  # 0 ** 0 = 1 keeps the identity exact
        return torch.where(ratio > 0, ratio.pow(self.power), at_zero)  # (N,)


MODIFIERS: tuple[type[LossModifier], ...] = (LabelSmoothing, EntropyWeighting, MaskRatioWeighting)
APPLICABILITY: dict[str, frozenset[str]] = {modifier.name: modifier.targets for modifier in MODIFIERS}
"""Modifier name -> the target kinds it applies to (the table in the module docstring)."""


# Building blocks: pure functions, reusable without a pipeline.


def class_token_losses(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target cross-entropy ``(N, T)`` (0 where ignored) and the scored mask ``(N, T)`` in logits' dtype."""
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"class targets need logits (N, T, K) and labels (N, T); got logits {tuple(logits.shape)}, "
            f"labels {tuple(labels.shape)}"
        )
    n, t, k = logits.shape
    losses = F.cross_entropy(
        logits.reshape(n * t, k),
        labels.reshape(n * t),
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=label_smoothing,
    ).view(n, t)  # (N, T)
    mask = (labels != ignore_index).to(logits.dtype)  # (N, T)
    return losses, mask


def score_losses(
    scores: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample squared error ``(N,)`` (0 where ignored) and the scored mask ``(N,)`` in scores' dtype."""
    if scores.dim() != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"score targets need scores (N,) and labels (N,); got scores {tuple(scores.shape)}, "
            f"labels {tuple(labels.shape)}"
        )
    scored = labels != ignore_index  # (N,)
    targets = torch.where(scored, labels.to(scores.dtype), scores)  # ignored: the target is the score itself
    return (scores - targets).pow(2), scored.to(scores.dtype)  # (N,), (N,)


def normalized_entropy(context: LossContext) -> torch.Tensor:
    """Each sample's mean prediction entropy over scored targets, divided by its maximum: (N,) in [0, 1]."""
    if context.kind == "scores":
        scores = context.predictions  # (N,)
        return (torch.special.entr(scores) + torch.special.entr(1 - scores)) / math.log(2)  # (N,)
    num_classes = context.predictions.shape[-1]
    if num_classes < 2:
        raise ValueError(f"entropy weighting needs at least 2 classes, got num_classes={num_classes}")
    entropy = torch.special.entr(context.predictions.softmax(-1)).sum(-1)  # (N, T)
    per_sample = (entropy * context.mask).sum(-1) / context.mask.sum(-1).clamp(min=1)  # (N,)
    return per_sample / math.log(num_classes)


def mask_ratio(mask: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Scored targets over real target positions per sample: (N,) in [0, 1] (0 for a sample with none)."""
    return (mask * real).sum(-1) / real.sum(-1).clamp(min=1)


def weighted_mean(losses: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i w[i] sum_t m[i,t] l[i,t] / sum_i w[i] sum_t m[i,t]`` for losses (N, ...) and weights (N,)."""
    w = weights.view(weights.shape[0], *([1] * (losses.dim() - 1)))  # (N, 1, ...)
    return (losses * mask * w).sum() / (mask * w).sum()


@dataclass(frozen=True)
class LossPipeline:
    """An ordered set of loss modifiers, each kind at most once; empty is the plain loss."""

    modifiers: tuple[LossModifier, ...] = ()

    def __post_init__(self) -> None:
        modifiers = tuple(self.modifiers)
        for modifier in modifiers:
            if not isinstance(modifier, LossModifier):
                raise TypeError(f"modifiers must be LossModifier instances, got {type(modifier).__name__}")
        names = [modifier.name for modifier in modifiers]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"each modifier may appear once in a pipeline; repeated: {', '.join(repeated)}")
        object.__setattr__(self, "modifiers", modifiers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(modifier.name for modifier in self.modifiers)

    def check_applicable(self, kind: str) -> None:
        """Raise :class:`ModifierNotApplicable` naming every modifier that does not apply to ``kind``."""
        if kind not in TARGET_KINDS:
            raise ValueError(f"kind must be one of {', '.join(TARGET_KINDS)}; got kind={kind!r}")
        refused = [modifier.name for modifier in self.modifiers if kind not in modifier.targets]
        if refused:
            allowed = [name for name, kinds in APPLICABILITY.items() if kind in kinds]
            raise ModifierNotApplicable(
                f"loss modifier(s) {', '.join(refused)} do not apply to {kind} targets; "
                f"modifiers for {kind}: {', '.join(allowed)}"
            )

    def _smoothing(self) -> float:
        return next((m.epsilon for m in self.modifiers if isinstance(m, LabelSmoothing)), 0.0)

    def sample_weights(self, context: LossContext) -> torch.Tensor:
        """The product of the weighting modifiers' weights, in listed order: (N,); ones without any."""
        self.check_applicable(context.kind)
        weights = torch.ones(context.mask.shape[0], dtype=context.mask.dtype, device=context.mask.device)
        for modifier in self.modifiers:
            if modifier.stage == "weight":
                weights = weights * modifier.weights(context)
        return weights

    def class_loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        *,
        ignore_index: int = -100,
        real: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of class logits (N, T, K) against labels (N, T); ``real`` (N, T) marks unpadded targets."""
        self.check_applicable("classes")
        losses, mask = class_token_losses(
            logits, labels, ignore_index=ignore_index, label_smoothing=self._smoothing()
        )  # (N, T), (N, T)
        real = torch.ones_like(mask) if real is None else real.to(mask.dtype)  # (N, T)
        context = LossContext("classes", logits.detach(), mask, real)
        return weighted_mean(losses, mask, self.sample_weights(context))

    def score_loss(self, scores: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100) -> torch.Tensor:
        """The loss of scores (N,) in [0, 1] against float labels (N,)."""
        self.check_applicable("scores")
        losses, mask = score_losses(scores, labels, ignore_index=ignore_index)  # (N,), (N,)
        context = LossContext("scores", scores.detach(), mask, torch.ones_like(mask))
        return weighted_mean(losses, mask, self.sample_weights(context))


def pipeline_of(modifiers: Iterable[LossModifier]) -> LossPipeline:
    """A pipeline of the given modifiers, identity settings (0) dropped."""
    settings = {LabelSmoothing: "epsilon", EntropyWeighting: "strength", MaskRatioWeighting: "power"}
    return LossPipeline(tuple(m for m in modifiers if getattr(m, settings.get(type(m), ""), 1.0) != 0.0))


__all__ = [
    "APPLICABILITY",
    "MODIFIERS",
    "TARGET_KINDS",
    "EntropyWeighting",
    "LabelSmoothing",
    "LossContext",
    "LossModifier",
    "LossPipeline",
    "MaskRatioWeighting",
    "ModifierNotApplicable",
    "class_token_losses",
    "mask_ratio",
    "normalized_entropy",
    "pipeline_of",
    "score_losses",
    "weighted_mean",
]
