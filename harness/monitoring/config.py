"""Thresholds of the drift comparison and the regression gate, with their documented defaults."""

from __future__ import annotations

from dataclasses import dataclass

from harness.stats.multiple import CORRECTIONS


@dataclass(frozen=True)
class MonitorConfig:
    """Every threshold Tier 5 acts on. A drift feature fails only when its corrected p-value is below
    ``alpha_fail`` *and* its effect size reaches the effect the user says matters; it is
    ``inconclusive`` when not significant and the sample's minimum detectable effect exceeds that effect.

    The defaults let profiles of 500 examples (the nightly's) reach every verdict: at 500 vs 500 the minimum
    detectable effects are below the effects that matter (KS 0.271 SD < 0.3, Hotelling's T^2 on 8 axes 0.289
    < 0.3, MMD about 0.027 < 0.05 on MiniLM embeddings), and a quarter of the examples from another domain
    fails (``benchmarks/bench_drift.py``). Smaller profiles are ``inconclusive`` and say the size they need.
    """

    alpha_fail: float = 0.01  # corrected p-value at or below which a large-enough drift fails
    alpha_warn: float = 0.05  # corrected p-value at or below which any drift warns
    correction: str = "bh"  # multiple-testing correction across features: "bh" (FDR) or "holm" (FWER)
    power: float = 0.8  # power at which the minimum detectable effect (MDE) is computed
    min_shift_sd: float = 0.3  # continuous features: the shift (W1 / pooled SD) that matters
    min_cohens_w: float = 0.1  # categorical features: the Cohen's w that matters
    min_mahalanobis: float = 0.3  # embeddings: the mean shift (Mahalanobis distance) that matters
    min_mmd: float = 0.05  # embeddings: the unbiased MMD (RBF, median bandwidth) that matters
    max_categories: int = 50  # categorical features keep the reference's most frequent categories + "other"
    max_embedding_dims: int = 8  # embeddings are projected on this many pooled principal axes for Hotelling
    max_embeddings: int = 1000  # embeddings kept in a profile (a seeded sample)
    permutations: int = 200  # first permutations of the MMD and chi-square tests (more when p could matter)
    min_examples: int = 10  # gate: below this many examples the t bound is not trusted -> inconclusive
    loss_margin: float = 0.05  # gate: allowed degradation of the per-example mean loss (nats per token)
    confidence: float = 0.95  # gate: one-sided confidence of the bound on the degradation
    seed: int = 0  # seed of permutations and embedding sampling

    def __post_init__(self) -> None:
        for name in ("alpha_fail", "alpha_warn", "power", "confidence"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"MonitorConfig.{name} must be in (0, 1), got {name}={value}")
        if self.alpha_fail > self.alpha_warn:
            raise ValueError(
                f"MonitorConfig needs alpha_fail <= alpha_warn, got alpha_fail={self.alpha_fail}, alpha_warn={self.alpha_warn}"
            )
        if self.correction not in CORRECTIONS:
            raise ValueError(
                f"MonitorConfig.correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}"
            )
        for name in ("min_shift_sd", "min_cohens_w", "min_mahalanobis", "min_mmd", "loss_margin"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MonitorConfig.{name} must be > 0, got {name}={getattr(self, name)}")
        for name in (
            "min_examples",
            "max_categories",
            "max_embedding_dims",
            "max_embeddings",
            "permutations",
        ):
            if getattr(self, name) < 2:
                raise ValueError(f"MonitorConfig.{name} must be >= 2, got {name}={getattr(self, name)}")
