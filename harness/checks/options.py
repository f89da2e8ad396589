"""The bounds and budgets of Tiers 2, 3 and 5, one frozen dataclass per tier.

They travel inside :class:`harness.checks.base.CheckOptions` (``options.behaviour``, ``options.training``,
``options.monitoring``, ``options.numerics``), so every check reads its thresholds from the options it is given: one mechanism
for every tier, nothing module-level to patch. Change one with ``dataclasses.replace``::

    CheckOptions(behaviour=BehaviourOptions(max_flip_rate=0.1))
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.training.config import TrainingConfig


@dataclass(frozen=True)
class BehaviourOptions:
    """Tier 2; the defaults suit tiny models on two CPU cores."""

    near_uniform_entropy: float = 0.9  # a head whose mean normalised row entropy is >= this is near-uniform
    near_one_hot_weight: float = 0.9  # a head whose mean largest row weight is >= this is near-one-hot
    padding_amount: int = 4  # right-padding tokens added for the attention-mask part of the attention check
    ig_steps: int = 64  # trapezoid steps of integrated gradients (error O(1/steps^2) for smooth models)
    ig_max_steps: int = 1024  # steps are doubled up to this while the error estimate exceeds a quarter of the bound
    ig_rows: int = 2  # examples attributed
    max_ig_relative_error: float = 0.05  # |sum(attributions) - (f(x) - f(baseline))| / |f(x) - f(baseline)|
    min_ig_delta: float = 1e-4  # |f(x) - f(baseline)| below this makes the relative error meaningless
    top_positions: int = 3  # most attributed positions (pixels) reported
    perturbation_samples: int = 200  # examples per perturbation kind (each gives one independent flip or not)
    max_flip_rate: float = 0.25  # allowed share of flipped predictions (a random-init CNN flips ~16% on shifts)
    noise_std: float = 0.05  # std of the Gaussian pixel noise (pixels are standardised)
    max_score_change: float = 0.1  # a scalar score "flips" when it moves by more than this
    dead_tolerance: float = 0.0  # a block whose ablation moves the float64 loss by at most this is dead: a dead
    #   block's removal changes nothing at all; untrained live ones move it little (ConvNeXt's 1e-6 layer scales:
    #   6e-11; BART's encoder layers: 1.4e-7, which float32 rounded to 0.0)
    max_ablation_effect: float = 1.0  # a relative change (|delta loss| / loss, or cosine distance) that is "everything"
    memory_examples: int = 20  # Hypothesis examples (operation sequences) of the memory state machine, at most
    memory_steps: int = 15  # operations per sequence, at most
    memory_atol: float = 1e-4  # distances and reconstructions are compared within this (float32 sums)

    def __post_init__(self) -> None:
        for name in ("ig_steps", "ig_rows", "perturbation_samples", "memory_examples", "memory_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"BehaviourOptions.{name} must be >= 1, got {name}={getattr(self, name)}")
        if self.ig_steps % 2:
            raise ValueError(
                f"BehaviourOptions.ig_steps must be even (halved for the error estimate), got {self.ig_steps}"
            )
        if not 0.0 <= self.max_flip_rate < 1.0:
            raise ValueError(f"BehaviourOptions.max_flip_rate must be in [0, 1), got {self.max_flip_rate}")


@dataclass(frozen=True)
class TrainingCheckOptions:
    """Tier 3: step budgets and tolerances of the training checks."""

    overfit_steps: int = 200  # step budget of the overfit check
    overfit_drop: float = 0.9  # loss and gradient norm must each fall by at least this fraction
    accumulation_steps: int = 2  # k: batch 2k in one step against k micro-batches of 2
    accumulation_rtol: float = 1e-4  # allowed ||g_big - g_accumulated|| / ||g_big||
    resume_steps: int = 3  # N: N steps, save, resume, N more against 2N straight
    resume_atol: float = 1e-6  # allowed max |difference| of any parameter after 2N steps
    config: TrainingConfig = field(  # what every training check starts from (task, steps, batch set per check)
        default_factory=lambda: TrainingConfig(max_steps=1, batch_size=4, learning_rate=3e-3, sequence_length=16)
    )

    def __post_init__(self) -> None:
        for name in ("overfit_steps", "accumulation_steps", "resume_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainingCheckOptions.{name} must be >= 1, got {name}={getattr(self, name)}")
        if not 0.0 < self.overfit_drop < 1.0:
            raise ValueError(f"TrainingCheckOptions.overfit_drop must be in (0, 1), got {self.overfit_drop}")


@dataclass(frozen=True)
class MonitoringCheckOptions:
    """Tier 5: sample sizes and tolerances of the evaluation and drift checks."""

    examples: int = 96  # real examples per check (two halves of 48 for the drift check)
    max_tokens: int = 32  # tokens kept per text example
    perplexity_rtol: float = 1e-5  # allowed relative gap between log perplexity and the model's own loss

    def __post_init__(self) -> None:
        if self.examples < 4 or self.max_tokens < 2:
            raise ValueError(
                f"MonitoringCheckOptions needs examples >= 4 and max_tokens >= 2, "
                f"got examples={self.examples}, max_tokens={self.max_tokens}"
            )


@dataclass(frozen=True)
class NumericsOptions:
    """Knobs of the numerics checks; the defaults suit CI on two CPU cores."""

    float16_on_cpu: bool = False  # also run half_precision_parity's float16 part on the CPU (normally CUDA only)
    compile_backend: str = "aot_eager"  # torch.compile backend (see check_compile_parity for why not inductor)
    compile_examples: int = 3  # fuzzed shapes after the two explicit ones that make the graph dynamic
    max_recompiles: int = 1  # fuzzed shapes that may compile again before compile_parity warns
    mixed_precision_steps: int = 4  # optimizer steps of each run of mixed_precision_training

    def __post_init__(self) -> None:
        for name in ("compile_examples", "mixed_precision_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"NumericsOptions.{name} must be >= 1, got {name}={getattr(self, name)}")
        if self.max_recompiles < 0:
            raise ValueError(f"NumericsOptions.max_recompiles must be >= 0, got {self.max_recompiles}")
        if not self.compile_backend:
            raise ValueError("NumericsOptions.compile_backend must name a torch.compile backend")
