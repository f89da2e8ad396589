"""Loss modifiers against float64 oracles written from their documented formulas.

Every modifier's hyperparameter must change the loss, its zero setting must give the plain loss bitwise,
the composition must follow the documented order (target stage, product of weights, one normalisation),
and a modifier that does not apply to a target kind must be refused.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness_zoo.multimode_gpt_losses import (
    APPLICABILITY,
    EntropyWeighting,
    LabelSmoothing,
    LossPipeline,
    MaskRatioWeighting,
    ModifierNotApplicable,
    pipeline_of,
)

IGNORE = -100
PLAIN = LossPipeline()


def class_batch(seed: int, n: int = 4, t: int = 6, k: int = 5) -> dict[str, torch.Tensor]:
    """Logits with a different temperature per sample (so entropies differ), labels with ignored and padded targets."""
    generator = torch.Generator().manual_seed(seed)
    temperature = torch.linspace(0.3, 3.0, n)[:, None, None]  # (N, 1, 1)
    logits = torch.randn(n, t, k, generator=generator) * temperature  # (N, T, K)
    labels = torch.randint(0, k, (n, t), generator=generator)  # (N, T)
    labels[torch.rand(n, t, generator=generator) < 0.3] = IGNORE
    labels[:, 0] = torch.randint(0, k, (n,), generator=generator)  # every sample scores at least one target
    real = torch.ones(n, t)
    for row in range(n):  # sample i has i padded positions at the end (labels there ignored)
        if row:
            real[row, -row:] = 0
            labels[row, -row:] = IGNORE
    return {"logits": logits, "labels": labels, "real": real}


def score_batch(seed: int, n: int = 6) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.sigmoid(torch.randn(n, generator=generator) * 3)  # (N,)
    labels = torch.rand(n, generator=generator)  # (N,)
    labels[1] = IGNORE
    return {"scores": scores, "labels": labels}


# Float64 oracles, written from the module docstring's formulas.


def oracle_class_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    real: torch.Tensor,
    *,
    epsilon: float = 0.0,
    beta: float = 0.0,
    gamma: float = 0.0,
) -> torch.Tensor:
    logits = logits.detach().double()
    n, t, k = logits.shape
    log_p = logits - logits.logsumexp(-1, keepdim=True)  # (N, T, K)
    keep = (labels != IGNORE).double()  # (N, T)
    nll = -log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, T)
    per_target = (1 - epsilon) * nll + epsilon * (-log_p.mean(-1))  # (N, T)
    entropy = -(log_p.exp() * log_p).sum(-1)  # (N, T)
    normalized = (entropy * keep).sum(-1) / keep.sum(-1).clamp(min=1) / math.log(k)  # (N,)
    ratio = (keep * real.double()).sum(-1) / real.double().sum(-1).clamp(min=1)  # (N,)
    ratio_weight = torch.where(ratio > 0, ratio**gamma, torch.zeros_like(ratio))
    weights = torch.exp(beta * normalized) * ratio_weight  # (N,)
    return (weights[:, None] * keep * per_target).sum() / (weights[:, None] * keep).sum()


def oracle_score_loss(scores: torch.Tensor, labels: torch.Tensor, *, beta: float = 0.0) -> torch.Tensor:
    s, y = scores.detach().double(), labels.double()
    keep = (y != IGNORE).double()
    entropy = -(s * s.log() + (1 - s) * (1 - s).log()) / math.log(2)  # binary entropy / log 2
    weights = torch.exp(beta * entropy)
    return (weights * keep * (s - y).pow(2)).sum() / (weights * keep).sum()


def assert_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    got, expected = float(got.detach()), float(expected)
    assert abs(got - expected) <= 1e-5 * max(1.0, abs(expected)), (got, expected)


SEEDS = st.integers(0, 2**31 - 1)


@given(SEEDS, st.integers(1, 5), st.integers(1, 7), st.integers(2, 9))
def test_plain_class_loss_is_the_token_weighted_mean_cross_entropy(seed: int, n: int, t: int, k: int) -> None:
    batch = class_batch(seed, n, t, k)
    loss = PLAIN.class_loss(batch["logits"], batch["labels"], ignore_index=IGNORE, real=batch["real"])
    assert_close(loss, oracle_class_loss(batch["logits"], batch["labels"], batch["real"]))
    reference = torch.nn.functional.cross_entropy(
        batch["logits"].reshape(-1, k), batch["labels"].reshape(-1), ignore_index=IGNORE
    )
    assert_close(loss, reference)


@given(SEEDS)
def test_plain_score_loss_is_the_mean_squared_error_over_scored_labels(seed: int) -> None:
    batch = score_batch(seed)
    loss = PLAIN.score_loss(batch["scores"], batch["labels"], ignore_index=IGNORE)
    assert_close(loss, oracle_score_loss(batch["scores"], batch["labels"]))


@given(SEEDS, st.floats(0.01, 0.99))
def test_label_smoothing_matches_its_formula_and_changes_the_loss(seed: int, epsilon: float) -> None:
    batch = class_batch(seed)
    args = (batch["logits"], batch["labels"])
    smoothed = LossPipeline((LabelSmoothing(epsilon),)).class_loss(*args, real=batch["real"])
    plain = PLAIN.class_loss(*args, real=batch["real"])
    assert_close(smoothed, oracle_class_loss(*args, batch["real"], epsilon=epsilon))
    assert abs(float(smoothed) - float(plain)) > 1e-6


@given(SEEDS, st.floats(-3, 3).filter(lambda beta: abs(beta) > 0.05))
def test_entropy_weighting_matches_its_formula_and_changes_the_loss(seed: int, beta: float) -> None:
    batch = class_batch(seed)
    args = (batch["logits"], batch["labels"])
    weighted = LossPipeline((EntropyWeighting(beta),)).class_loss(*args, real=batch["real"])
    assert_close(weighted, oracle_class_loss(*args, batch["real"], beta=beta))
    assert abs(float(weighted) - float(PLAIN.class_loss(*args, real=batch["real"]))) > 1e-7


@given(SEEDS, st.floats(-2, 3).filter(lambda gamma: abs(gamma) > 0.05))
def test_mask_ratio_weight_matches_its_formula_and_changes_the_loss(seed: int, gamma: float) -> None:
    batch = class_batch(seed)
    args = (batch["logits"], batch["labels"])
    weighted = LossPipeline((MaskRatioWeighting(gamma),)).class_loss(*args, real=batch["real"])
    assert_close(weighted, oracle_class_loss(*args, batch["real"], gamma=gamma))
    ratios = ((batch["labels"] != IGNORE).float() * batch["real"]).sum(-1) / batch["real"].sum(-1)
    if ratios.unique().numel() > 1:  # equal ratios cancel in the normalisation
        assert abs(float(weighted) - float(PLAIN.class_loss(*args, real=batch["real"]))) > 1e-7


@given(SEEDS, st.floats(-3, 3).filter(lambda beta: abs(beta) > 0.05))
def test_entropy_weighting_of_scores_uses_the_binary_entropy(seed: int, beta: float) -> None:
    batch = score_batch(seed)
    weighted = LossPipeline((EntropyWeighting(beta),)).score_loss(batch["scores"], batch["labels"])
    assert_close(weighted, oracle_score_loss(batch["scores"], batch["labels"], beta=beta))
    assert abs(float(weighted) - float(PLAIN.score_loss(batch["scores"], batch["labels"]))) > 1e-8


@pytest.mark.parametrize(
    "identity", [LabelSmoothing(0.0), EntropyWeighting(0.0), MaskRatioWeighting(0.0)], ids=lambda m: m.name
)
def test_zero_setting_gives_the_plain_loss_exactly(identity) -> None:
    batch = class_batch(3)
    args = (batch["logits"], batch["labels"])
    got = LossPipeline((identity,)).class_loss(*args, real=batch["real"])
    assert torch.equal(got, PLAIN.class_loss(*args, real=batch["real"]))
    all_three = LossPipeline((LabelSmoothing(0.0), EntropyWeighting(0.0), MaskRatioWeighting(0.0)))
    assert torch.equal(all_three.class_loss(*args, real=batch["real"]), PLAIN.class_loss(*args, real=batch["real"]))
    if "scores" in identity.targets:
        scores = score_batch(3)
        assert torch.equal(
            LossPipeline((identity,)).score_loss(scores["scores"], scores["labels"]),
            PLAIN.score_loss(scores["scores"], scores["labels"]),
        )


@given(SEEDS, st.floats(0.01, 0.5), st.floats(-2, 2), st.floats(-1, 2))
def test_composition_is_smoothing_then_product_of_weights_then_one_normalisation(
    seed: int, epsilon: float, beta: float, gamma: float
) -> None:
    batch = class_batch(seed)
    args = (batch["logits"], batch["labels"])
    expected = oracle_class_loss(*args, batch["real"], epsilon=epsilon, beta=beta, gamma=gamma)
    smoothing, entropy, ratio = LabelSmoothing(epsilon), EntropyWeighting(beta), MaskRatioWeighting(gamma)
    for order in [(smoothing, entropy, ratio), (ratio, entropy, smoothing), (entropy, smoothing, ratio)]:
        assert_close(LossPipeline(order).class_loss(*args, real=batch["real"]), expected)


def test_entropy_weights_come_from_the_logits_not_the_smoothed_targets() -> None:
    """Smoothing acts at the target stage only: the entropy weights are those of the unsmoothed predictions."""
    batch = class_batch(11)
    args = (batch["logits"], batch["labels"])
    both = LossPipeline((LabelSmoothing(0.3), EntropyWeighting(1.5))).class_loss(*args, real=batch["real"])
    assert_close(both, oracle_class_loss(*args, batch["real"], epsilon=0.3, beta=1.5))


def test_equal_weights_cancel_in_the_normalisation() -> None:
    """Samples with the same predictions get the same entropy weight, which the normalisation removes."""
    generator = torch.Generator().manual_seed(5)
    logits = (torch.randn(1, 6, 4, generator=generator) * 2).expand(3, 6, 4).contiguous()  # (3, 6, 4)
    labels = torch.randint(0, 4, (3, 6), generator=generator)
    plain = PLAIN.class_loss(logits, labels)
    weighted = LossPipeline((EntropyWeighting(2.0),)).class_loss(logits, labels)
    assert_close(weighted, plain)


def test_weights_carry_no_gradient() -> None:
    batch = class_batch(7)
    batch["logits"].requires_grad_()
    pipeline = LossPipeline((EntropyWeighting(2.0), MaskRatioWeighting(1.0)))
    pipeline.class_loss(batch["logits"], batch["labels"], real=batch["real"]).backward()
    got = batch["logits"].grad.clone()
    # the same loss with the weights computed beforehand and held constant
    logits = batch["logits"].detach().clone().requires_grad_()
    log_p = logits.log_softmax(-1)
    keep = (batch["labels"] != IGNORE).float()
    nll = -log_p.gather(-1, batch["labels"].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(log_p.exp() * log_p).sum(-1)
        normalized = (entropy * keep).sum(-1) / keep.sum(-1).clamp(min=1) / math.log(5)
        ratio = (keep * batch["real"]).sum(-1) / batch["real"].sum(-1)
        weights = torch.exp(2.0 * normalized) * ratio
    ((weights[:, None] * keep * nll).sum() / (weights[:, None] * keep).sum()).backward()
    torch.testing.assert_close(got, logits.grad, rtol=1e-5, atol=1e-7)


def test_no_scored_target_gives_nan_like_cross_entropy() -> None:
    logits = torch.randn(2, 3, 4)
    labels = torch.full((2, 3), IGNORE)
    assert torch.isnan(PLAIN.class_loss(logits, labels))
    assert torch.isnan(torch.nn.functional.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1)))


def test_applicability_table() -> None:
    assert APPLICABILITY == {
        "label_smoothing": frozenset({"classes"}),
        "entropy_weighting": frozenset({"classes", "scores"}),
        "mask_ratio": frozenset({"classes"}),
    }


@pytest.mark.parametrize("modifier", [LabelSmoothing(0.1), MaskRatioWeighting(1.0), LabelSmoothing(0.0)])
def test_modifiers_for_classes_only_are_refused_on_scores(modifier) -> None:
    batch = score_batch(1)
    pipeline = LossPipeline((EntropyWeighting(1.0), modifier))
    with pytest.raises(ModifierNotApplicable, match=rf"{modifier.name} do not apply to scores targets"):
        pipeline.score_loss(batch["scores"], batch["labels"])
    with pytest.raises(ModifierNotApplicable, match="entropy_weighting"):  # the message lists what does apply
        pipeline.check_applicable("scores")
    pipeline.check_applicable("classes")  # no error
    with pytest.raises(ValueError, match="kind='tokens'"):
        pipeline.check_applicable("tokens")


def test_a_modifier_may_appear_once() -> None:
    with pytest.raises(ValueError, match="repeated: entropy_weighting"):
        LossPipeline((EntropyWeighting(1.0), EntropyWeighting(2.0)))
    with pytest.raises(TypeError, match="LossModifier"):
        LossPipeline(("label_smoothing",))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: LabelSmoothing(1.0), r"epsilon must be in \[0, 1\), got epsilon=1.0"),
        (lambda: LabelSmoothing(-0.1), r"epsilon=-0.1"),
        (lambda: LabelSmoothing("0.1"), r"epsilon must be a real number, got epsilon='0.1'"),
        (lambda: EntropyWeighting(math.inf), r"strength must be finite, got strength=inf"),
        (lambda: EntropyWeighting(math.nan), r"strength=nan"),
        (lambda: MaskRatioWeighting(True), r"power must be a real number, got power=True"),
    ],
)
def test_invalid_hyperparameters_are_named(build, message) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        build()


def test_pipeline_of_drops_identity_settings() -> None:
    pipeline = pipeline_of([LabelSmoothing(0.0), EntropyWeighting(1.0), MaskRatioWeighting(0.0)])
    assert pipeline.names == ("entropy_weighting",)


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"logits \(N, T, K\) and labels \(N, T\)"):
        PLAIN.class_loss(torch.randn(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"scores \(N,\) and labels \(N,\)"):
        PLAIN.score_loss(torch.rand(2, 1), torch.rand(2))
