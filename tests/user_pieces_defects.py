"""Small models and user pieces with one planted defect each, for issue 17's rules: no silent passes (NaN),
crashes reported with what was established, no repairs of the user's code, stated claims (freeze, initial
statistics, ties, learning-rate multipliers, knobs, schedules) checked both ways, the full memory contract,
padding sensitivity without a mask claim, and the input space as a hard limit.

Every builder returns a :class:`~harness.spec.ModelSpec`; ``None`` (or no flaw) builds the clean variant, which
passes the check the defect is planted for.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from harness.spec import Capabilities, InitExpectation, InitSpec, InputSpace, ModelSpec
from harness.training.recipe import FreezeClaim, Knob, TrainingRecipe
from harness.training.schedulers import ArgumentRange, Phase, ScheduleClaim, register_scheduler
from harness_zoo.multimode_gpt import add_unfrozen_parameters, configure_optimizers, training_recipe
from tests.behaviour_defects import BruteForceMemory
from tests.defect_models import CONTEXT, PAD_ID, VOCAB_SIZE, TinyCausalLM, causal_spec
from tests.training_defects import tagger_spec

# Tier 1: models finite on random inputs and NaN on a check's own inputs; crashes; bounds ----------------------


class FlawedLM(TinyCausalLM):
    """A clean :class:`TinyCausalLM` (or its bidirectional variant) with one ``flaw``:

    - ``"nan_on_pairs"``: NaN logits for a batch of exactly 2 rows (the causality and padding corner batches;
      the fixed 4-row batches and single rows stay finite);
    - ``"nan_when_alone"``: NaN logits for a batch of 1 row (batch_size_invariance's one-at-a-time baseline);
    - ``"second_train_forward_raises"``: block 0's MLP is detached (dead parameters) and the second forward in
      train mode raises;
    - ``"bounded"``: raises on any batch above ``max_batch`` rows or ``max_tokens`` tokens (the stated maximum).
    """

    FLAWS = ("nan_on_pairs", "nan_when_alone", "second_train_forward_raises", "bounded")

    def __init__(self, flaw: str, *, bidirectional: bool = False, max_batch: int = 3, max_tokens: int = 8) -> None:
        if flaw not in self.FLAWS:
            raise ValueError(f"unknown flaw {flaw!r}; known: {', '.join(self.FLAWS)}")
        defect = "no_causal_mask" if bidirectional else None
        defect = "detached_submodule" if flaw == "second_train_forward_raises" else defect
        super().__init__(defect=defect, context=max_tokens if flaw == "bounded" else CONTEXT)
        self.flaw, self.max_batch, self.train_forwards = flaw, max_batch, 0

    def forward(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        rows, length = input_ids.shape
        if self.flaw == "bounded" and (rows > self.max_batch or length > self.context):
            raise ValueError(f"a batch of {rows}x{length} is above its stated maximum {self.max_batch}x{self.context}")
        if self.flaw == "second_train_forward_raises" and self.training:
            self.train_forwards += 1
            if self.train_forwards == 2:
                raise RuntimeError("the second training forward raised")
        output = super().forward(input_ids, *args, **kwargs)
        if (self.flaw == "nan_on_pairs" and rows == 2) or (self.flaw == "nan_when_alone" and rows == 1):
            output["logits"] = output["logits"] * math.nan
        return output


def flawed_spec(flaw: str, *, bidirectional: bool = False) -> ModelSpec:
    """A spec for :class:`FlawedLM`; ``"bounded"`` states max_batch_size 3 and max_length 8."""
    bounded = flaw == "bounded"
    return ModelSpec(
        name=f"flawed-lm+{flaw}" + ("+bidirectional" if bidirectional else ""),
        task="causal-lm",
        build=functools.partial(FlawedLM, flaw, bidirectional=bidirectional),
        inputs=InputSpace(
            vocab_size=VOCAB_SIZE,
            max_length=8 if bounded else CONTEXT,
            pad_id=PAD_ID,
            max_batch_size=3 if bounded else 4,
        ),  # fmt: skip
        capabilities=Capabilities(is_causal=not bidirectional, has_attention_mask=True),
    )


def _refuse_above(rows: int):
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        first = next(v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))
        if first.shape[0] > rows:
            raise ValueError(f"a batch of {first.shape[0]} rows is above its stated maximum {rows}")

    return hook


def bounded_digits() -> nn.Module:
    """The zoo's digits CNN, refusing any batch above 3 rows (a forward pre-hook)."""
    from harness_zoo import load_zoo_spec

    model = load_zoo_spec("cnn-digits").build()
    model.register_forward_pre_hook(_refuse_above(3), with_kwargs=True)
    return model


def bounded_digits_spec() -> ModelSpec:
    """The digits CNN (real data: every real-input path) stating max_batch_size 3."""
    from harness_zoo import load_zoo_spec

    spec = load_zoo_spec("cnn-digits")
    return spec.replace(name="digits+bounded", build=bounded_digits,
                        inputs=dataclasses.replace(spec.inputs, max_batch_size=3))  # fmt: skip


def unmasked_bidirectional_spec(*, padded_batches: bool | None = None) -> ModelSpec:
    """A bidirectional model that takes no attention mask (so padding reaches its real tokens' outputs)."""
    spec = causal_spec("no_causal_mask", is_causal=False, has_attention_mask=False)
    claims = dataclasses.replace(spec.capabilities, padded_batches=padded_batches)
    return spec.replace(name=f"{spec.name}+unmasked+padded={padded_batches}", capabilities=claims)


class SmallInitLM(TinyCausalLM):
    """lm_head initialised N(0, ``head_std``); ``tied`` ties lm_head to the token embedding."""

    def __init__(self, head_std: float = 0.02, tied: bool = False) -> None:
        super().__init__()
        nn.init.normal_(self.lm_head.weight, 0.0, head_std)
        if tied:
            self.lm_head.weight = self.tok_emb.weight


def init_claim_spec(*, head_std: float = 0.02, tied: bool = False, claims: InitSpec) -> ModelSpec:
    return ModelSpec(
        name=f"init-lm+std={head_std}+tied={tied}",
        task="causal-lm",
        build=functools.partial(SmallInitLM, head_std, tied),
        inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID, max_batch_size=4),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True),
        init=claims,
    )


HEAD_STD = InitSpec(expectations=(InitExpectation("lm_head.weight", mean=0.0, std=0.02, atol=0.005),))
TIED = InitSpec(tied=(("lm_head.weight", "tok_emb.weight"),))
NO_SUCH = InitSpec(expectations=(InitExpectation("decoder.*", std=0.02),))


# Tier 3: the user's training pieces ---------------------------------------------------------------------------


def frozen_only_optimizer(model: nn.Module, config: Any) -> torch.optim.Optimizer:
    """Defect: built while the body is frozen, over the trainable parameters only, and never extended."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)


def all_parameters_optimizer(model: nn.Module, config: Any) -> torch.optim.Optimizer:
    """Clean: holds every parameter from the start (a frozen one has no gradient, so AdamW skips it)."""
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate)


def freeze_all_but_wpe(model: nn.Module) -> None:
    """Defect: freezes the body but forgets the position embedding."""
    for name, parameter in model.named_parameters():
        if name.startswith("transformer.") and name != "transformer.wpe.weight":
            parameter.requires_grad_(False)


def body_optimizer(multiplier: float):
    def build(model: nn.Module, config: Any) -> torch.optim.Optimizer:
        return configure_optimizers(model, lr=config.learning_rate, body_lr_multiplier=multiplier)

    return build


BODY_FROZEN = FreezeClaim(must_freeze=("transformer.*",), must_stay_trainable=("head.*",))
BODY_SLOWER = (("transformer.*", 0.1), ("*", 1.0))


def recipe_spec(name: str, **recipe: Any) -> ModelSpec:
    """The tiny tagger with its own recipe, some pieces or claims replaced."""
    spec = tagger_spec()
    return spec.replace(name=f"{spec.name}+{name}", recipe=dataclasses.replace(training_recipe("token-classifier"),
                                                                               **recipe))  # fmt: skip


def no_repair_spec(*, clean: bool) -> ModelSpec:
    """The user's optimizer with no add_unfrozen piece: the harness must not add what the user's code forgot."""
    optimizer = all_parameters_optimizer if clean else frozen_only_optimizer
    return recipe_spec("all-params" if clean else "frozen-only-optimizer", configure_optimizers=optimizer,
                       add_unfrozen=None)  # fmt: skip


def freeze_claim_spec(*, clean: bool) -> ModelSpec:
    freeze = training_recipe("token-classifier").freeze if clean else freeze_all_but_wpe
    return recipe_spec("freeze-claim" + ("" if clean else "+misses-wpe"), freeze=freeze, freezes=BODY_FROZEN)


def lr_claim_spec(*, clean: bool) -> ModelSpec:
    """The recipe states the body trains at 0.1x; the defect's optimizer forgets the multiplier."""
    return recipe_spec("body-x0.1" + ("" if clean else "+forgotten"), lr_multipliers=BODY_SLOWER,
                       configure_optimizers=body_optimizer(0.1 if clean else 1.0),
                       add_unfrozen=add_unfrozen_parameters)  # fmt: skip


class TiedLM(TinyCausalLM):
    """lm_head tied to the token embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.lm_head.weight = self.tok_emb.weight


def freeze_embedding(model: nn.Module) -> None:
    model.tok_emb.weight.requires_grad_(False)


def unfreeze_everything(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(True)


def tied_freeze_spec(*, clean: bool) -> ModelSpec:
    """Freezing the embedding freezes the tied head too; the defect's claim says the head stays trainable."""
    claim = FreezeClaim(must_freeze=("tok_emb.weight", "lm_head.weight")) if clean else FreezeClaim(
        must_freeze=("tok_emb.weight",), must_stay_trainable=("lm_head.weight",))  # fmt: skip
    return ModelSpec(
        name="tied-lm" + ("" if clean else "+head-claimed-trainable"),
        task="causal-lm",
        build=TiedLM,
        inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID, max_batch_size=4),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True),
        recipe=TrainingRecipe(freeze=freeze_embedding, unfreeze=unfreeze_everything, freezes=claim),
    )


class KnobbedLM(TinyCausalLM):
    """Loss = cross-entropy with label smoothing ``smoothing`` + ``z_weight`` * mean(logsumexp(logits)^2).

    Flaws: ``"z_never_read"`` (the z-loss is never added), ``"smoothing_overrides"`` (with smoothing on, the
    z-loss is dropped), ``"off_is_default"`` (smoothing 0 is read as the default 0.1)."""

    def __init__(self, flaw: str | None = None) -> None:
        super().__init__()
        self.flaw, self.smoothing, self.z_weight = flaw, 0.0, 0.0

    def forward(self, input_ids: torch.Tensor, attention_mask=None, labels=None, position_ids=None):
        output = super().forward(input_ids, attention_mask=attention_mask, position_ids=position_ids)
        if labels is None:
            return output
        logits, targets = output["logits"][:, :-1], labels[:, 1:]
        smoothing = 0.1 if self.flaw == "off_is_default" and self.smoothing == 0 else self.smoothing
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                               label_smoothing=smoothing)  # fmt: skip
        z_applies = self.flaw != "z_never_read" and not (self.flaw == "smoothing_overrides" and smoothing > 0)
        if z_applies:
            loss = loss + self.z_weight * torch.logsumexp(logits, -1).pow(2).mean()
        return {**output, "loss": loss}


KNOBS = (
    Knob("label_smoothing", lambda model, value: setattr(model, "smoothing", value), values=(0.1, 0.3), off=0.0),
    Knob("z_loss_weight", lambda model, value: setattr(model, "z_weight", value), values=(1e-2,), off=0.0),
)


def knobbed_loss(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The user's loss piece: the model's modified loss."""
    return outputs["loss"]


def knob_spec(flaw: str | None = None) -> ModelSpec:
    return ModelSpec(
        name="knobbed-lm" + (f"+{flaw}" if flaw else ""),
        task="causal-lm",
        build=functools.partial(KnobbedLM, flaw),
        inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID, max_batch_size=4),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True),
        recipe=TrainingRecipe(loss=knobbed_loss, knobs=KNOBS),
    )


def warmup_decay_multiplier(step: int, *, warmup: int, decay: int, floor: float, flaw: str | None) -> float:
    """Linear warm-up 0 -> 1 over ``warmup`` steps, linear decay 1 -> ``floor`` over ``decay`` steps, then ``floor``.

    Flaws: ``"zero_warmup_default"`` (0 read as 10), ``"jump_after_warmup"`` (the warm-up only reaches 0.5),
    ``"misses_end"`` (holds one step above the floor), ``"nan_for_zero_decay"`` (0/0 after warm-up),
    ``"warmup_dips"`` (the warm-up falls back at its middle)."""
    if flaw == "zero_warmup_default" and warmup == 0:
        warmup = 10
    if step < warmup:
        ramp = step / warmup
        if flaw == "warmup_dips" and warmup >= 4 and step == warmup // 2:
            ramp = 0.0
        return ramp / 2 if flaw == "jump_after_warmup" else ramp
    if flaw == "nan_for_zero_decay" and decay == 0:
        return math.nan
    done = min(step - warmup, decay - 1 if flaw == "misses_end" and decay > 1 else decay)
    return 1.0 - (1.0 - floor) * (done / decay if decay else 1.0)


def warmup_decay(optimizer: torch.optim.Optimizer, *, warmup: int, decay: int, floor: float,
                 flaw: str | None = None) -> LambdaLR:  # fmt: skip
    """The user's schedule factory (registered as ``user-warmup-decay``, so a TrainingConfig may name it)."""
    return LambdaLR(optimizer, functools.partial(warmup_decay_multiplier, warmup=warmup, decay=decay, floor=floor,
                                                 flaw=flaw))  # fmt: skip


register_scheduler("user-warmup-decay", warmup_decay)


def users_scheduler(optimizer: torch.optim.Optimizer, config: Any) -> LambdaLR:
    """The user's scheduler piece: their factory with the config's arguments."""
    return warmup_decay(optimizer, **config.scheduler_kwargs)


def warmup_decay_claim(flaw: str | None) -> ScheduleClaim:
    return ScheduleClaim(
        "user-warmup-decay",
        arguments=(
            ("warmup", ArgumentRange(0, 20)),
            ("decay", ArgumentRange(0, 30)),
            ("floor", ArgumentRange(0.0, 1.0, integer=False)),
        ),  # fmt: skip
        phases=(Phase("warmup", "warmup", +1), Phase("decay", "decay", -1)),
        end_value="floor",
        constants=(("flaw", flaw),),
    )


SCHEDULE_FLAWS = ("zero_warmup_default", "jump_after_warmup", "misses_end", "nan_for_zero_decay", "warmup_dips")


def schedule_spec(flaw: str | None = None) -> ModelSpec:
    return recipe_spec("warmup-decay" + (f"+{flaw}" if flaw else ""), scheduler=users_scheduler,
                       schedule_claims=(warmup_decay_claim(flaw),), schedules=())  # fmt: skip


# Tier 2: a user's memory with capacity, ageing and forgetting --------------------------------------------------

MEMORY_FLAWS = {
    "crashes_when_full": "an add past capacity raises IndexError instead of evicting",
    "evicts_newest": "past capacity the most recently used items are evicted",
    "sentinel_valid": "a search for more neighbours than stored marks the -1 padding valid",
    "forget_floors": "forget removes floor(rate * len) items instead of ceil",
    "touch_ignored": "touch does not count as use, so ageing does not change the eviction order",
    "reuses_ids": "automatic ids are len(memory), so an id is reused after a removal",
    "reject_truncates": "under eviction 'reject' an add past capacity silently keeps the first vectors",
}


class CapacityMemory(BruteForceMemory):
    """The brute-force dict memory with ``capacity``, ``eviction``, ``touch`` and ``forget(rate)``."""

    assigns_ids = True
    accepts_ids = True

    def __init__(self, dim: int = 4, capacity: int = 6, eviction: str = "lru", flaws: tuple[str, ...] = ()) -> None:
        super().__init__(dim)
        self.capacity, self.eviction, self.flaws = capacity, eviction, flaws
        self.added: dict[int, int] = {}
        self.used: dict[int, int] = {}
        self.tick = 0

    def _order(self) -> list[int]:
        stamp = self.added if self.eviction == "fifo" else self.used
        order = sorted(self.vectors, key=lambda i: (stamp[i], i))
        return order[::-1] if "evicts_newest" in self.flaws else order

    def _drop(self, ids: list[int]) -> None:
        for i in ids:
            del self.vectors[i], self.added[i], self.used[i]

    def add(self, vectors: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if ids is None:
            start = len(self.vectors) if "reuses_ids" in self.flaws else self.next_id
            ids = torch.arange(start, start + len(vectors))
        overflow = len(self.vectors) + len(vectors) - self.capacity
        if overflow > 0:
            if self.eviction == "reject":
                if "reject_truncates" not in self.flaws:
                    raise MemoryError(f"adding {len(vectors)} to {len(self.vectors)} exceeds capacity {self.capacity}")
                vectors, ids = vectors[: len(vectors) - overflow], ids[: len(vectors) - overflow]
            elif "crashes_when_full" in self.flaws:
                raise IndexError("memory full")
            else:
                self._drop(self._order()[:overflow])
        self.tick += 1
        for i, vector in zip(ids.tolist(), vectors, strict=True):
            self.vectors[i], self.added[i], self.used[i] = vector.clone(), self.tick, self.tick
        self.next_id = max([self.next_id, *(i + 1 for i in ids.tolist())])
        return ids

    def remove(self, ids: torch.Tensor) -> None:
        self.tick += 1
        self._drop(ids.tolist())

    def update(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        self.tick += 1
        for i, vector in zip(ids.tolist(), vectors, strict=True):
            self.vectors[i], self.used[i] = vector.clone(), self.tick

    def touch(self, ids: torch.Tensor) -> None:
        self.tick += 1
        if "touch_ignored" not in self.flaws:
            for i in ids.tolist():
                self.used[i] = self.tick

    def forget(self, rate: float) -> torch.Tensor:
        rounding = math.floor if "forget_floors" in self.flaws else math.ceil
        count = min(len(self.vectors), rounding(round(rate * len(self.vectors), 9)))
        removed = self._order()[:count]
        self.tick += 1
        self._drop(removed)
        return torch.tensor(removed, dtype=torch.long)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, distances, valid = super().search(queries, k)
        return ids, distances, torch.ones_like(valid) if "sentinel_valid" in self.flaws else valid


class MemoryLM(TinyCausalLM):
    """A TinyCausalLM carrying a :class:`CapacityMemory` (the model's forward does not use it)."""

    def __init__(self, eviction: str = "lru", flaws: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.memory = CapacityMemory(eviction=eviction, flaws=flaws)


def memory_spec(*flaws: str, eviction: str = "lru") -> ModelSpec:
    unknown = set(flaws) - set(MEMORY_FLAWS)
    if unknown:
        raise ValueError(f"unknown memory flaws {sorted(unknown)}; known: {', '.join(MEMORY_FLAWS)}")
    return ModelSpec(
        name="memory-lm+" + (eviction + "".join(f"+{flaw}" for flaw in flaws)),
        task="causal-lm",
        build=functools.partial(MemoryLM, eviction, flaws),
        inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID, max_batch_size=4),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True, has_memory=True),
        memory=lambda model: model.memory,
    )
