"""TrainingRecipe: the user's own training pieces, which Tier 3 checks exercise instead of ours.

Bugs live in the user's optimizer factory, freeze/unfreeze, scheduler and loss, so a ``ModelSpec``
names them in ``spec.recipe``. :func:`resolve` fills every piece the user left out with the harness
default and records which was used (``sources``: piece -> ``"user"`` or ``"harness"``), which every
Tier 3 result row carries in its details. A model with named schedules of its own lists their contracts
in ``schedules``: what the scheduler check may assert of them (the harness knows no model's schedule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from harness.adapters import adapter_for, loss_of
from harness.adapters.base import Batch
from harness.spec import ModelSpec
from harness.training.schedulers import ScheduleClaim

if TYPE_CHECKING:  # pragma: no cover
    from harness.training.config import TrainingConfig
    from harness.training.schedulers import ScheduleContract

PIECES = ("configure_optimizers", "freeze", "unfreeze", "add_unfrozen", "scheduler", "loss")


@dataclass(frozen=True)
class FreezeClaim:
    """Which parameters the recipe's ``freeze`` must freeze and which it must leave trainable (fnmatch patterns over
    ``named_parameters(remove_duplicate=False)``, so a tied alias such as ``lm_head.weight`` is matched too).

    Checked both ways by ``freeze_unfreeze``: after freeze every parameter matching ``must_freeze`` is frozen and
    stays bitwise unchanged through an optimizer step, every one matching ``must_stay_trainable`` is trainable and
    moves; a pattern that matches no parameter is itself a failure (a claim about nothing)."""

    must_freeze: tuple[str, ...] = ()
    must_stay_trainable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Knob:
    """A setting of the user's that must change the loss (a loss-modifier weight, a flag), checked by ``knobs``.

    ``set(model, value)`` applies a setting to a model (its config, a module attribute, the loss piece's state
    reached through the model). Every value in ``values`` must change the loss from the baseline (every knob at
    ``off``); two knobs set together must differ from each one alone; setting a knob back to ``off`` must
    restore the baseline exactly (a disabled knob changes nothing)."""

    name: str  # shown in result rows
    set: Callable[[torch.nn.Module, Any], None]  # (model, value) -> None
    values: tuple[Any, ...]  # settings that must each change the loss
    off: Any  # the setting that disables the knob

    def __post_init__(self) -> None:
        if not self.name or not self.values or not callable(self.set):
            raise ValueError(f"Knob needs a name, a callable set and at least one value; got {self!r}")


@dataclass(frozen=True)
class TrainingRecipe:
    """The user's training pieces; each one left as None is replaced by the harness default (with one exception:
    ``add_unfrozen``, see :func:`resolve`). The claims below are checked by Tier 3, both ways."""

    configure_optimizers: Callable[..., Any] | None = None  # (model, config) -> optimizer or (optimizer, scheduler)
    freeze: Callable[[torch.nn.Module], None] | None = None  # model -> None: sets requires_grad False on the body
    unfreeze: Callable[[torch.nn.Module], None] | None = None  # model -> None: makes the body trainable again
    add_unfrozen: Callable[..., Any] | None = None  # (optimizer, model) -> None: puts unfrozen params in the optimizer
    scheduler: Callable[..., Any] | None = None  # (optimizer, config) -> LRScheduler or None
    loss: Callable[[Any, Batch], torch.Tensor] | None = None  # (model outputs, batch) -> scalar loss
    name: str = ""  # shown in result rows
    schedules: tuple[ScheduleContract, ...] = ()  # the model's own named schedules, which Tier 3 also checks
    freezes: FreezeClaim | None = None  # what freeze must freeze and leave trainable (freeze_unfreeze)
    lr_multipliers: tuple[tuple[str, float], ...] = ()  # (pattern, lr / config.learning_rate) per parameter
    knobs: tuple[Knob, ...] = ()  # settings that must change the loss (knobs)
    schedule_claims: tuple[
        ScheduleClaim, ...
    ] = ()  # generic properties of the recipe's scheduler (scheduler_properties)

    def fingerprint(self) -> dict[str, str | None]:
        """Qualified names of the pieces (part of the run cache key)."""

        def qualified(value: Any) -> str | None:
            if value is None:
                return None
            target = getattr(value, "func", value)
            return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}"

        return {piece: qualified(getattr(self, piece)) for piece in PIECES} | {"name": self.name}


# Harness defaults, used only where the recipe names nothing.


def default_configure_optimizers(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW over the parameters that require grad, at ``config.learning_rate``."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def default_freeze(model: torch.nn.Module) -> None:
    """Freeze every parameter but the last two in ``named_parameters`` order (for most models the head)."""
    parameters = list(model.parameters())
    for parameter in parameters[:-2]:
        parameter.requires_grad_(False)


def default_unfreeze(model: torch.nn.Module) -> None:
    """Make every parameter trainable."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)


def default_add_unfrozen(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """Add the trainable parameters no group holds as a new group at the first group's base rate."""
    present = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [p for p in model.parameters() if p.requires_grad and id(p) not in present]
    if missing:
        first = optimizer.param_groups[0]
        optimizer.add_param_group({"params": missing, "lr": first.get("initial_lr", first["lr"])})


def keep_optimizer(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """Nothing: the user's own optimizer is kept as the user built it (the harness never repairs it)."""


def default_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig) -> Any:
    """``SCHEDULERS[config.scheduler](optimizer, **config.scheduler_kwargs)``, or None without a scheduler."""
    from harness.training.schedulers import SCHEDULERS

    if config.scheduler is None:
        return None
    return SCHEDULERS[config.scheduler](optimizer, **config.scheduler_kwargs)


def default_loss(outputs: Any, batch: Batch) -> torch.Tensor:
    """The loss the model computes itself given labels (``.loss`` / ``["loss"]``)."""
    return loss_of(outputs)


DEFAULTS: dict[str, Callable[..., Any]] = {
    "configure_optimizers": default_configure_optimizers,
    "freeze": default_freeze,
    "unfreeze": default_unfreeze,
    "add_unfrozen": default_add_unfrozen,
    "scheduler": default_scheduler,
    "loss": default_loss,
}


@dataclass(frozen=True)
class ResolvedRecipe:
    """Every piece callable: the user's where given, the harness default elsewhere."""

    spec: ModelSpec
    pieces: dict[str, Callable[..., Any]]
    sources: dict[str, str]  # piece -> "user" or "harness"
    schedules: tuple[ScheduleContract, ...] = ()  # the recipe's own named schedules (none by default)

    def optimizers(self, model: torch.nn.Module, config: TrainingConfig) -> tuple[torch.optim.Optimizer, Any]:
        """(optimizer, scheduler or None): the factory's scheduler if it returned one, else the scheduler piece's."""
        made = self.pieces["configure_optimizers"](model, config)
        optimizer, scheduler = made if isinstance(made, tuple) else (made, None)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"configure_optimizers ({self.sources['configure_optimizers']}) returned "
                f"{type(optimizer).__name__}, not a torch.optim.Optimizer"
            )
        if scheduler is None:
            scheduler = self.pieces["scheduler"](optimizer, config)
        return optimizer, scheduler

    def forward(self, model: torch.nn.Module, batch: Batch) -> Any:
        """The model's raw outputs given the batch's inputs and labels (a plain module's: its logits, called
        positionally without labels)."""
        adapter = adapter_for(self.spec)
        if adapter.takes_plain_inputs(model):
            return adapter.raw_output(self.spec, model, batch)
        if hasattr(adapter, "model_inputs"):
            inputs = adapter.model_inputs(self.spec, model, batch)
        else:
            inputs = {key: value for key, value in batch.items() if key != "labels"}
        return model(**inputs, labels=batch["labels"])

    def loss_of(self, outputs: Any, batch: Batch) -> torch.Tensor:
        """The loss piece applied to raw outputs; where the harness's default stands in and the outputs are a
        plain module's logits (no loss of its own), the task's loss of those logits."""
        if self.sources["loss"] == "harness" and isinstance(outputs, torch.Tensor):
            return adapter_for(self.spec).reference_loss(self.spec, outputs, batch).mean()
        return self.pieces["loss"](outputs, batch)

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The training loss of a batch: the loss piece applied to the model's outputs."""
        return self.loss_of(self.forward(model, batch), batch)

    def freeze(self, model: torch.nn.Module) -> None:
        self.pieces["freeze"](model)

    def unfreeze(self, model: torch.nn.Module) -> None:
        self.pieces["unfreeze"](model)

    def add_unfrozen(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
        self.pieces["add_unfrozen"](optimizer, model)


def resolve(spec: ModelSpec) -> ResolvedRecipe:
    """The spec's recipe with the harness defaults filled in; a recipe of the wrong type is a TypeError."""
    recipe = spec.recipe
    if recipe is not None and not isinstance(recipe, TrainingRecipe):
        raise TypeError(f"ModelSpec {spec.name!r}: recipe must be a TrainingRecipe, got {type(recipe).__name__}")
    pieces, sources = {}, {}
    for piece in PIECES:
        user = getattr(recipe, piece) if recipe is not None else None
        pieces[piece] = user if user is not None else DEFAULTS[piece]
        sources[piece] = "user" if user is not None else "harness"
    if sources["add_unfrozen"] == "harness" and sources["configure_optimizers"] == "user":
        # never repair the user's optimizer: adding what their code forgot would hide exactly that bug
        pieces["add_unfrozen"], sources["add_unfrozen"] = keep_optimizer, "none (the user's optimizer as built)"
    return ResolvedRecipe(spec, pieces, sources, tuple(recipe.schedules) if recipe is not None else ())
