"""Tier 3: does it train? Training runs as a fixture; these checks validate the runs.

Every check exercises the spec's own training pieces (``spec.recipe``: optimizer factory, freeze,
unfreeze, scheduler, loss) and falls back to the harness defaults only for pieces the spec leaves out;
``details["recipe"]`` says which was used, piece by piece. Training goes through Lightning
(:class:`harness.training.module.HarnessModule`); comparisons between two runs use deterministic
steps (eval mode: no dropout, running norm statistics), so a difference is the code's, not the RNG's.
"""

from __future__ import annotations

import fnmatch
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st

from harness.adapters import adapter_for
from harness.adapters.base import Batch
from harness.checks.base import CheckOptions, first_non_finite, needs_training, register, step, verdict, worst_item
from harness.checks.fuzz import Violation, fuzz
from harness.checks.inputs import fixed_batch
from harness.result import CheckResult
from harness.spec import ModelSpec
from harness.tolerances import require_float32, tolerance_for
from harness.training.config import TrainingConfig
from harness.training.data import RowsDataset, has_real_data, loader, training_data
from harness.training.presets import preset, within_input_space
from harness.training.recipe import resolve

SCHEDULER_HORIZON = 60  # longest schedule the scheduler check drives, in steps
UNCLAIMED = "the user's scheduler at the config's settings: no ScheduleClaim, so only sign and finiteness checked"


def needs_real_data(spec: ModelSpec) -> str | None:
    if has_real_data(spec):
        return None
    return f"the harness has no real data for {spec.task} models (a causal LM needs a tokenizer)"


def _config(spec: ModelSpec, options: CheckOptions, **changes: Any) -> TrainingConfig:
    return options.training.config.replace(task=spec.task, **changes)


def _fit(spec: ModelSpec, model: torch.nn.Module, config: TrainingConfig, rows: Batch, **kwargs: Any) -> Any:
    """Fit a HarnessModule on ``rows`` in order (no shuffling), deterministic steps; returns the module."""
    import lightning

    from harness.training.module import HarnessModule
    from harness.training.trainer import make_trainer

    lightning.seed_everything(config.seed, verbose=False)
    ckpt_path = kwargs.pop("ckpt_path", None)
    callbacks = kwargs.pop("callbacks", ())
    module = HarnessModule(spec, config, model=model, deterministic=True, **kwargs)
    trainer = make_trainer(config, callbacks=callbacks)
    data = loader(RowsDataset(rows), batch_size=config.batch_size, shuffle=False, seed=config.seed)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# Overfit one batch.


def _stop_when_overfit(drop: float) -> Any:
    """A Lightning callback that stops once loss and gradient norm both fell by ``drop``."""
    import lightning

    class StopWhenOverfit(lightning.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            if len(module.history) > 1 and _overfit_ratios(module.history, drop)[2]:
                trainer.should_stop = True

    return StopWhenOverfit()


def _overfit_ratios(history: list[dict[str, float]], drop: float) -> tuple[float, float, bool]:
    first, last = history[0], history[-1]
    loss_ratio = last["train_loss"] / first["train_loss"] if first["train_loss"] > 0 else math.inf
    grad_ratio = last["grad_norm"] / first["grad_norm"] if first["grad_norm"] > 0 else math.inf
    return loss_ratio, grad_ratio, loss_ratio <= 1 - drop and grad_ratio <= 1 - drop  # NaN never passes


@register(3, needs_training)
def check_overfit_one_batch(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Training on one batch drives its loss and its gradient norm each down by at least 90% within the step budget."""
    steps, drop = options.training.overfit_steps, options.training.overfit_drop
    batch = fixed_batch(spec, options)
    config = _config(spec, options, max_steps=steps, batch_size=options.batch_size_for(spec), seed=options.seed)
    rows = {key: value.repeat(steps, *([1] * (value.dim() - 1))) for key, value in batch.items()}
    module = _fit(spec, model, config, rows, callbacks=[_stop_when_overfit(drop)])
    loss_ratio, grad_ratio, passed = _overfit_ratios(module.history, drop)
    worst = worst_item({"loss": loss_ratio, "gradient norm": grad_ratio})[1]
    return verdict(
        spec,
        "overfit_one_batch",
        passed=passed,
        measured=worst,
        threshold=1 - drop,
        expected=f"final/initial loss and gradient norm each <= {1 - drop:.2f} within {steps} steps",
        got=f"loss ratio {loss_ratio:.3g}, gradient-norm ratio {grad_ratio:.3g} after {len(module.history)} steps",
        hint="A model that cannot memorise one batch has a broken loss, optimizer, or gradients that do not "
        "reach the parameters (detached outputs, frozen layers, a learning rate of zero).",
        sample_size=len(module.history),
        seed=options.seed,
        details={
            "recipe": module.recipe.sources,
            "initial": module.history[0],
            "final": module.history[-1],
            "learning_rate": config.learning_rate,
            "history": {  # the HTML report draws these as training curves
                key: [row[key] for row in module.history] for key in ("step", "train_loss", "grad_norm")
            },
        },
    )


# Learning on real text.


def unigram_cross_entropy(spec: ModelSpec, train: Batch, validation: Batch) -> float:
    """Cross-entropy (nats) on the held-out targets of a unigram model fit on the training targets
    (add-one smoothing); with a label shift (a causal LM) the targets are the tokens after the first of each row."""
    adapter = adapter_for(spec)
    shift = adapter.label_shift
    train_targets = (train["labels"][:, shift:] if shift else train["labels"]).reshape(-1)
    held_out = (validation["labels"][:, shift:] if shift else validation["labels"]).reshape(-1)
    classes = adapter.output_shape(spec, train)[-1]  # the vocabulary or the classes
    counts = torch.bincount(train_targets, minlength=classes).double() + 1.0  # (V,)
    log_probs = (counts / counts.sum()).log()  # (V,)
    return float(-log_probs[held_out].mean())


@register(3, needs_training, needs_real_data)
def check_learning_on_real_text(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """After a short run on real data the held-out loss is below the untrained loss and below a unigram baseline's."""
    from harness.training.runs import train

    config = within_input_space(preset("fast-dev")[0].replace(task=spec.task, seed=options.seed), spec)
    run = train(spec, config)
    data = training_data(spec, config)
    held_out = data.validation.rows
    validation_rows = min(len(data.validation), config.batch_size * config.validation_batches)
    baseline = unigram_cross_entropy(
        spec, data.train.rows, {key: value[:validation_rows] for key, value in held_out.items()}
    )
    untrained, trained = run.metrics["initial_val_loss"], run.metrics["val_loss"]
    threshold = min(untrained, baseline)
    return verdict(
        spec,
        "learning_on_real_text",
        passed=trained < threshold,
        measured=trained,
        threshold=threshold,
        expected=f"held-out loss < min(untrained {untrained:.4f}, unigram baseline {baseline:.4f})",
        got=f"held-out loss {trained:.4f} after {int(run.metrics['steps'])} steps",
        hint="The run learned less than token frequencies: check the learning rate, the loss and the labels "
        "(shifted twice? ignored?), and that the optimizer holds the parameters.",
        sample_size=validation_rows,
        seed=options.seed,
        details={
            "run_id": run.run_id,
            "data": run.data_source,
            "untrained_loss": untrained,
            "unigram_cross_entropy": baseline,
            "recipe": resolve(spec).sources,
            "cached": run.cached,
        },
    )


# Gradient accumulation.


def _padded_rows(spec: ModelSpec, lengths: list[int], length: int, seed: int) -> Batch:
    """One row per entry of ``lengths``, that many real tokens right-padded to ``length`` by the adapter; per-token
    labels the adapter does not pad (a seq2seq decoder stream) are filled with the ignore index."""
    adapter = adapter_for(spec)
    rows = []
    for index, real in enumerate(lengths):
        row = adapter.make_batch(spec, batch_size=1, length=real, generator=torch.Generator().manual_seed(seed + index))
        if real < length:
            row = adapter.pad(spec, row, amount=length - real, side="right")
        labels = row["labels"]
        if labels.dim() > 1 and labels.shape[1] < length:
            filler = torch.full((1, length - labels.shape[1]), spec.inputs.ignore_index, dtype=labels.dtype)
            row["labels"] = torch.cat([labels, filler], dim=1)
        rows.append(row)
    return {key: torch.cat([row[key] for row in rows]) for key in rows[0]}


@register(3, needs_training)
def check_gradient_accumulation(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """k accumulated micro-batches of 2 rows (1 row where the input space holds fewer than 4), holding different numbers of real tokens, have the gradient of one step on all their rows.

    One step on the 2k rows is the gradient of the full batch's token-weighted loss; the accumulated run goes through
    the same path (the spec's recipe loss when it names one, the harness's Lightning module otherwise). Where the
    model takes padded token sequences, the rows carry fuzzed numbers of real tokens (right padding), the first
    layout as uneven as the length allows: micro-batches that score different numbers of tokens, so a loss averaged
    per micro-batch (each micro-batch weighted 1/k instead of by its tokens, transformers PR #34191) shows.
    """
    k = options.training.accumulation_steps
    rtol = max(options.training.accumulation_rtol, tolerance_for(options.dtype, "reference").rtol)  # half precision
    most = spec.inputs.max_batch_size  # the big batch of micro * k rows stays within the input space
    micro = 2 if 2 * 2 <= most else 1
    k = max(2, min(k, most // micro))
    adapter = adapter_for(spec)
    config = _config(spec, options, max_steps=1, seed=options.seed)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    length = options.length_for(spec)
    shortest = max(spec.inputs.min_length, 1 + adapter.label_shift)  # every row scores a label
    padded = adapter.sequence and spec.capabilities.has_attention_mask and length > shortest
    layouts: list[dict[str, Any]] = []

    def gap(lengths: list[int] | None, seed: int) -> float:
        batch = (
            _padded_rows(spec, lengths, length, seed) if lengths else fixed_batch(spec, options, batch_size=micro * k)
        )
        model.load_state_dict(state)
        big = _fit(spec, model, config.replace(batch_size=micro * k), batch, capture_gradients=True)
        model.load_state_dict(state)
        accumulated = _fit(
            spec, model, config.replace(batch_size=micro, gradient_accumulation=k), batch, capture_gradients=True
        )
        reference, got = big.gradients[0], accumulated.gradients[0]
        names = sorted(set(reference) | set(got))
        difference = torch.stack(
            [(reference.get(n, torch.zeros(())) - got.get(n, torch.zeros(()))).double().norm() for n in names]
        ).norm()
        scale = torch.stack([reference[n].double().norm() for n in reference]).norm()
        relative = float(difference / scale) if scale > 0 else math.inf
        relative = relative if not math.isnan(relative) else math.inf  # a NaN gradient is infinitely far
        ratio = float(torch.stack([got[n].double().norm() for n in got]).norm() / scale) if scale > 0 else math.nan
        scored = [
            adapter.scored_labels(spec, {key: value[micro * i : micro * (i + 1)] for key, value in batch.items()})
            for i in range(k)
        ]
        layouts.append({"real_tokens": lengths, "scored_per_micro_batch": scored, "relative": relative,
                        "norm_ratio": ratio, "recipe": big.recipe.sources})  # fmt: skip
        if not relative <= rtol:
            where = f"real tokens per row {lengths}, " if lengths else ""
            raise Violation(relative, f"relative difference {relative:.3g} ({where}micro-batches scoring {scored} "
                            f"labels; accumulated/big gradient norm ratio {ratio:.3g})")  # fmt: skip
        return relative

    if padded:  # the first micro-batch all shortest rows, the last all full rows: the most uneven layout
        uneven = [
            shortest if i < micro else length if i >= micro * (k - 1) else (shortest + length) // 2
            for i in range(micro * k)
        ]
        rows = st.lists(st.integers(shortest, length), min_size=micro * k, max_size=micro * k)
        try:
            gap(uneven, options.seed)
        except Violation as violation:
            failure, examples = str(violation), 1
        else:
            outcome = fuzz(st.tuples(rows, st.integers(0, 2**31 - 1)), lambda case: gap(*case), max_examples=2)
            failure, examples = outcome.failure, 1 + outcome.examples
    else:
        try:
            gap(None, options.seed)
            failure = None
        except Violation as violation:
            failure = str(violation)
        examples = 1
    worst = max(layouts, key=lambda row: row["relative"])
    relative = worst["relative"]
    layout_text = "micro-batches of fuzzed real-token counts (right padding)" if padded else "equal rows"
    return verdict(
        spec,
        "gradient_accumulation",
        passed=failure is None,
        measured=relative,
        threshold=rtol,
        tolerance={"rtol": rtol, "atol": 0.0},
        expected=f"||g(batch {micro * k}) - g({k} x batch {micro}, accumulated)|| / ||g(batch {micro * k})|| <= {rtol:g} on "
        f"{layout_text}",
        got=failure
        or f"relative difference at most {relative:.3g} over {len(layouts)} layout(s) (micro-batches scoring "
        f"{worst['scored_per_micro_batch']} labels; accumulated/big gradient norm ratio {worst['norm_ratio']:.3g})",
        hint="Accumulated micro-batches must add up to the full batch's token-weighted loss: a loss averaged per "
        "micro-batch weighs a micro-batch of few real tokens as much as a full one (Lightning divides each by k); "
        "normalise by the scored tokens of the whole accumulation window (transformers' num_items_in_batch, PR "
        "#34191). A summed loss, or one normalised by something other than the batch, makes accumulated steps k "
        "times too large.",
        sample_size=examples * micro * k,
        seed=options.seed,
        details={
            "recipe": worst["recipe"],
            "accumulation_steps": k,
            "norm_ratio": worst["norm_ratio"],
            "layouts": layouts,
        },
    )


# Resume equivalence.


@register(3, needs_training)
def check_resume_equivalence(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Training N steps, saving, resuming and training N more ends with the weights of 2N uninterrupted steps."""
    n, atol = options.training.resume_steps, options.training.resume_atol
    batch_size = options.batch_size_for(spec)
    # one batch per epoch: Lightning restarts an interrupted epoch's (non-stateful) loader from its first
    # batch, so with several batches the resumed run would see another data order than the straight one
    rows = fixed_batch(spec, options, batch_size=batch_size)
    schedule = {"total_steps": 2 * n, "warmup_steps": 1, "min_lr_ratio": 0.1}
    config = _config(
        spec, options, batch_size=batch_size, seed=options.seed, scheduler="cosine-warmup", scheduler_kwargs=schedule
    )
    state = {key: value.clone() for key, value in model.state_dict().items()}
    straight = _fit(spec, model, config.replace(max_steps=2 * n), rows)
    expected = _parameters(straight.model)
    with tempfile.TemporaryDirectory() as folder:
        model.load_state_dict(state)
        first = _fit(spec, model, config.replace(max_steps=n), rows)
        checkpoint = str(Path(folder) / "half.ckpt")
        first.trainer.save_checkpoint(checkpoint)
        resumed_model = spec.build_model(seed=options.seed + 1)  # other weights: the checkpoint must restore them
        resumed = _fit(spec, resumed_model, config.replace(max_steps=2 * n), rows, ckpt_path=checkpoint)
    got = _parameters(resumed.model)
    differences = {name: float((got[name] - expected[name]).abs().max()) for name in expected}
    worst_name, worst = worst_item(differences)
    return verdict(
        spec,
        "resume_equivalence",
        passed=worst <= atol,
        measured=worst,
        threshold=atol,
        tolerance={"rtol": 0.0, "atol": atol},
        expected=f"weights after {n} + {n} resumed steps within {atol:g} of {2 * n} straight steps",
        got=f"max |difference| {worst:.3g} (at {worst_name})",
        hint="Something is not saved or not restored by the checkpoint: the optimizer's state (Adam moments), "
        "the scheduler's step, or a buffer outside the state dict.",
        sample_size=2 * n,
        seed=options.seed,
        details={"recipe": straight.recipe.sources, "steps": n, "scheduler": schedule},
    )


# Freeze / unfreeze.


def _stated_lr(group: dict[str, Any], config: TrainingConfig) -> float:
    """The rate a param group states: ``base_lr * lr_multiplier`` where the group records them, else the config's."""
    return group.get("base_lr", config.learning_rate) * group.get("lr_multiplier", 1.0)


def _matching(model: torch.nn.Module, pattern: str) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters whose name matches ``pattern``, tied aliases included (``remove_duplicate=False``)."""
    return [(n, p) for n, p in model.named_parameters(remove_duplicate=False) if fnmatch.fnmatch(n, pattern)]


def _claim_problems(model: torch.nn.Module, patterns: tuple[str, ...], *, frozen: bool) -> list[str]:
    """Where the parameters matching ``patterns`` are not frozen (``frozen``) or not trainable as stated."""
    problems = []
    for pattern in patterns:
        matches = _matching(model, pattern)
        if not matches:
            problems.append(f"the stated pattern {pattern!r} matches no parameter")
        problems += [
            f"{n} is {'trainable' if frozen else 'frozen'} after freeze, stated {'frozen' if frozen else 'trainable'}"
            for n, p in matches
            if p.requires_grad == frozen
        ]
    return problems


@register(3, needs_training)
def check_freeze_unfreeze(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Freeze freezes exactly what the recipe states and frozen parameters stay bitwise unchanged by a step while trainable ones move; after unfreezing, the user's optimizer holds every trainable parameter and each one moves."""
    require_float32(options.dtype, "in half precision a step smaller than half a weight's ulp leaves it bitwise "
                    "unchanged, so a trainable parameter that does not move proves nothing")  # fmt: skip
    recipe = resolve(spec)
    claim = getattr(spec.recipe, "freezes", None)
    config = _config(spec, options, seed=options.seed)
    batch = fixed_batch(spec, options)
    model.eval()  # deterministic: no dropout
    with step("the recipe's freeze"):
        recipe.freeze(model)
    named = dict(model.named_parameters(remove_duplicate=False))  # tied aliases under each of their names
    frozen = [name for name, p in named.items() if not p.requires_grad]
    problems: list[str] = []
    if not frozen:
        problems.append("freeze left every parameter trainable")
    if claim is not None:
        problems += _claim_problems(model, claim.must_freeze, frozen=True)
        problems += _claim_problems(model, claim.must_stay_trainable, frozen=False)
    with step("the recipe's configure_optimizers"):
        optimizer, _ = recipe.optimizers(model, config)

    def take_step(label: str) -> dict[str, torch.Tensor]:
        before = {name: p.detach().clone() for name, p in named.items()}
        with step(f"optimizer step {label}"):
            optimizer.zero_grad()
            loss = recipe.loss(model, batch)
            if not torch.isfinite(loss):
                problems.append(f"the loss of step {label} is {float(loss)}")
            loss.backward()
            optimizer.step()
        return before

    before = take_step("after freeze")
    moved_frozen = [n for n in frozen if not torch.equal(before[n], named[n].detach())]
    stuck = [n for n in named if n not in frozen and torch.equal(before[n], named[n].detach())]
    problems += [f"frozen {n} changed" for n in moved_frozen] + [f"trainable {n} did not move" for n in stuck]
    with step("the recipe's unfreeze and add_unfrozen"):
        recipe.unfreeze(model)
        recipe.add_unfrozen(optimizer, model)
    still_frozen = [n for n in frozen if not named[n].requires_grad]
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    missing = [n for n, p in named.items() if p.requires_grad and id(p) not in group_of]
    wrong_lr = [
        f"{n} at lr {group_of[id(p)]['lr']:g}, its group states {_stated_lr(group_of[id(p)], config):g}"
        for n, p in named.items()
        if id(p) in group_of and not math.isclose(group_of[id(p)]["lr"], _stated_lr(group_of[id(p)], config))
    ]
    before = take_step("after unfreeze")
    unmoved = [n for n in frozen if n not in still_frozen and id(named[n]) in group_of
               and torch.equal(before[n], named[n].detach())]  # fmt: skip
    problems += [f"{n} still frozen after unfreeze" for n in still_frozen]
    problems += [f"unfrozen {n} is in no optimizer param group" for n in missing]
    problems += wrong_lr + [f"unfrozen {n} did not move" for n in unmoved]
    return verdict(
        spec,
        "freeze_unfreeze",
        passed=not problems,
        measured=float(len(problems)),
        threshold=0.0,
        expected="the stated parameters frozen (tied aliases included) and unchanged by a step, trainable ones "
        "moved; after unfreezing, every trainable parameter in the optimizer and moving",
        got=f"{len(problems)} violation(s): {'; '.join(problems[:4])}"
        if problems
        else f"{len(frozen)} frozen parameters held, then all moved after unfreezing",
        hint="After unfreezing, the new trainable parameters must be added to the optimizer (or it rebuilt); an "
        "optimizer built while they were frozen never updates them. A tied weight is frozen under every name.",
        sample_size=len(named),
        seed=options.seed,
        details={
            "recipe": recipe.sources,
            "frozen": len(frozen),
            "missing_from_optimizer": missing[:20],
            "problems": problems[:50],
        },
    )


def needs_lr_claims(spec: ModelSpec) -> str | None:
    return None if getattr(spec.recipe, "lr_multipliers", ()) else "the recipe states no learning-rate multipliers"


def _rate_problems(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainingConfig,
                   claims: tuple[tuple[str, float], ...], when: str) -> tuple[list[str], int]:  # fmt: skip
    """Parameters (first matching pattern wins) whose group's initial rate is not ``config.learning_rate * m``."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    problems, checked, claimed = [], 0, set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        pattern, multiplier = next(((pat, m) for pat, m in claims if fnmatch.fnmatch(name, pat)), (None, None))
        if pattern is None or not parameter.requires_grad:
            continue
        claimed.add(pattern)
        group = group_of.get(id(parameter))
        if group is None:
            problems.append(f"{when}: {name} (stated x{multiplier:g}) is in no param group")
            continue
        checked += 1
        rate, stated = group.get("initial_lr", group["lr"]), config.learning_rate * multiplier
        if not math.isclose(rate, stated, rel_tol=1e-9, abs_tol=1e-15):
            problems.append(f"{when}: {name} at lr {rate:g}, stated {stated:g} (x{multiplier:g})")
    return problems, checked


@register(3, needs_training, needs_lr_claims)
def check_learning_rate_groups(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Every parameter sits in an optimizer group whose learning rate is the stated multiple of the configured rate, as built and after freeze and unfreeze."""
    recipe = resolve(spec)
    claims = spec.recipe.lr_multipliers
    config = _config(spec, options, seed=options.seed)
    unmatched = [pattern for pattern, _ in claims if not _matching(model, pattern)]
    problems = [f"the stated pattern {pattern!r} matches no parameter" for pattern in unmatched]
    with step("the recipe's configure_optimizers on the model as built"):
        optimizer, _ = recipe.optimizers(model, config)
    found, checked = _rate_problems(model, optimizer, config, claims, "as built")
    problems += found
    with step("freeze, configure_optimizers, unfreeze and add_unfrozen"):
        recipe.freeze(model)
        optimizer, _ = recipe.optimizers(model, config)
        recipe.unfreeze(model)
        recipe.add_unfrozen(optimizer, model)
    found, after = _rate_problems(model, optimizer, config, claims, "after unfreeze")
    problems += found
    return verdict(
        spec,
        "learning_rate_groups",
        passed=not problems,
        measured=float(len(problems)),
        threshold=0.0,
        expected=f"every parameter at its stated multiple of lr {config.learning_rate:g} "
        f"({', '.join(f'{p} x{m:g}' for p, m in claims)})",
        got=f"{len(problems)} violation(s): {'; '.join(problems[:4])}"
        if problems
        else f"{checked} parameters as built and {after} after unfreezing at their stated rates",
        hint="A param group built with the base rate instead of its multiplier, a parameter put in the wrong group, "
        "or unfrozen parameters added at another group's rate.",
        sample_size=checked + after,
        seed=options.seed,
        details={"recipe": recipe.sources, "problems": problems[:50]},
    )


# Knobs.


def needs_knobs(spec: ModelSpec) -> str | None:
    return None if getattr(spec.recipe, "knobs", ()) else "the recipe states no knobs"


@register(3, needs_training, needs_knobs)
def check_knobs(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Every stated knob changes the loss when set, two knobs set together differ from either alone, and with every knob off (or set back off) the loss is the plain loss of the model's outputs."""
    import copy

    recipe, adapter = resolve(spec), adapter_for(spec)
    knobs = spec.recipe.knobs
    tolerance = tolerance_for(options.dtype, "reference")
    batch = fixed_batch(spec, options)
    pristine = copy.deepcopy(model).eval()
    losses: dict[str, float] = {}

    def loss_with(label: str, settings: dict[str, Any], *, restore: Any = None) -> float:
        candidate = copy.deepcopy(pristine)
        with step(f"the loss with {label}"):
            for knob in knobs:
                knob.set(candidate, settings.get(knob.name, knob.off))
            if restore is not None:  # the knob set back off after being on
                restore.set(candidate, restore.off)
            with torch.no_grad():
                value = float(recipe.loss(candidate, batch))
        losses[label] = value
        return value

    def same(a: float, b: float) -> bool:
        return abs(a - b) <= tolerance.atol + tolerance.rtol * abs(b)

    problems: list[str] = []
    baseline = loss_with("every knob off", {})
    if adapter.has_loss:
        plain = copy.deepcopy(pristine)
        for knob in knobs:
            knob.set(plain, knob.off)
        with torch.no_grad(), step("the plain loss of the outputs with every knob off"):
            reference = float(adapter.reference_loss(spec, adapter.forward(spec, plain, batch), batch))
        losses["reference loss, every knob off"] = reference
        if not same(baseline, reference):
            problems.append(f"with every knob off the loss is {baseline:.6g}, the plain loss of the outputs "
                            f"{reference:.6g} (an off knob still acts)")  # fmt: skip
    for knob in knobs:
        for value in knob.values:
            got = loss_with(f"{knob.name}={value!r}", {knob.name: value})
            if same(got, baseline):
                problems.append(f"{knob.name}={value!r} left the loss at {got:.6g}, as with every knob off")
        restored = loss_with(f"{knob.name}={knob.values[0]!r} then off", {knob.name: knob.values[0]}, restore=knob)
        if not same(restored, baseline):
            problems.append(
                f"{knob.name} set to {knob.values[0]!r} and back off gave {restored:.6g}, not {baseline:.6g}"
            )
    for first, second in zip(knobs, knobs[1:], strict=False):
        a, b = first.values[0], second.values[0]
        together = loss_with(f"{first.name}={a!r} and {second.name}={b!r}", {first.name: a, second.name: b})
        alone = {first.name: losses[f"{first.name}={a!r}"], second.name: losses[f"{second.name}={b!r}"]}
        problems += [f"{first.name}={a!r} with {second.name}={b!r} gave {together:.6g}, the loss of {name} alone"
                     for name, value in alone.items() if same(together, value)]  # fmt: skip
    where = first_non_finite(**{label.replace(" ", "_"): value for label, value in losses.items()})
    if where:
        problems.insert(0, where)
    return verdict(
        spec,
        "knobs",
        passed=not problems,
        measured=float(len(problems)),
        threshold=0.0,
        expected=f"each of {', '.join(k.name for k in knobs)} to change the loss by more than atol={tolerance.atol:g}, "
        "pairs to differ from either alone, and off to mean the plain loss",
        got=f"{len(problems)} violation(s): {'; '.join(problems[:4])}"
        if problems
        else f"{len(losses)} losses as stated",
        hint="A knob that is read nowhere (a config field the loss never uses), a modifier that overrides another "
        "instead of adding to it, or an off value that still applies a default.",
        sample_size=len(losses),
        seed=options.seed,
        details={"recipe": recipe.sources, "losses": losses},
    )


# Schedulers.


def _drive(recipe: Any, model: torch.nn.Module, config: TrainingConfig, steps: int) -> dict[str, list[float]]:
    """Multipliers lr / initial lr per param group (by name, or index) over ``steps`` scheduler steps."""
    optimizer, scheduler = recipe.optimizers(model, config)
    if scheduler is None:
        raise Violation(math.inf, f"the scheduler factory returned None for scheduler={config.scheduler!r}")
    names = [str(g.get("name", index)) for index, g in enumerate(optimizer.param_groups)]
    bases = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    values: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(steps):
        for name, base, group in zip(names, bases, optimizer.param_groups, strict=True):
            values[name].append(group["lr"] / base if base else 0.0)
        optimizer.step()
        scheduler.step()
    return values


def _sign_problem(label: str, values: list[float]) -> str | None:
    """Where a multiplier curve is negative or non-finite, or None."""
    for s, value in enumerate(values):
        if not math.isfinite(value) or value < 0:
            return f"{label}: multiplier {value:.6g} (negative or non-finite) at step {s}"
    return None


def _claim_problem(claim: Any, arguments: dict[str, Any], label: str, values: list[float]) -> str | None:
    """The first generic property of ``claim`` the curve breaks (see ScheduleClaim), or None."""
    bounds, start = [], 0
    for phase in claim.phases:
        length = arguments[phase.duration] if isinstance(phase.duration, str) else int(phase.duration(arguments))
        bounds.append((phase, start, start + length))
        start += length
    jumps = dict(claim.jumps)
    for index, (phase, low, high) in enumerate(bounds):
        if phase.direction is not None:
            for s in range(low, min(high, len(values)) - 1):
                delta = values[s + 1] - values[s]
                if (phase.direction == 0 and abs(delta) > 1e-12) or phase.direction * delta < -1e-12:
                    shape = {1: "non-decreasing", -1: "non-increasing", 0: "constant"}[phase.direction]
                    return f"{label}: phase {phase.name} (steps {low}..{high - 1}) not {shape}: {values[s]:.6g} at " \
                           f"step {s}, {values[s + 1]:.6g} at step {s + 1}"  # fmt: skip
        previous = [b for b in bounds[:index] if b[2] > b[1]]
        # a boundary is judged where a phase of at least one step follows one of at least two (a one-step ramp
        # cannot be told from a jump); a phase of length zero is no phase, so it has no boundary of its own
        if previous and high > low and low < len(values) - 1 and previous[-1][2] - previous[-1][1] >= 2:
            _, p_low, p_high = previous[-1]
            inside = max(abs(values[s + 1] - values[s]) for s in range(p_low, p_high - 1))
            after = abs(values[low + 1] - values[low]) if high > low + 1 else 0.0
            allowed = 2 * max(inside, after) + (jumps[phase.name](arguments) if phase.name in jumps else 0.0) + 1e-9
            if abs(values[low] - values[low - 1]) > allowed:
                return f"{label}: a jump of {abs(values[low] - values[low - 1]):.6g} entering phase {phase.name} at " \
                       f"step {low} (steps inside the phases move by at most {max(inside, after):.6g}; no jump declared)"  # fmt: skip
    if claim.end_value is not None:
        end = arguments[claim.end_value] if isinstance(claim.end_value, str) else float(claim.end_value)
        for s in range(start, len(values)):
            if abs(values[s] - end) > 1e-9:
                return f"{label}: multiplier {values[s]:.6g} at step {s}, after the last phase (ends at step {start}); " \
                       f"declared end value {end:.6g}"  # fmt: skip
    return None


def _claim_arguments(claim: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Fuzzed arguments within the claim's ranges, their bounds (zero durations included) drawn often."""
    fields = {}
    for name, bounds in claim.arguments:
        if bounds.integer:
            inner = st.integers(int(bounds.low), int(bounds.high))
        else:
            inner = st.floats(bounds.low, bounds.high, allow_nan=False)
        fields[name] = st.one_of(st.sampled_from(sorted({bounds.low, bounds.high})).map(
            int if bounds.integer else float), inner)  # fmt: skip
    return st.fixed_dictionaries(fields).map(lambda drawn: dict(claim.constants) | drawn)


def _claims_for(recipe: Any, spec: ModelSpec) -> tuple[Any, ...]:
    """The recipe's ScheduleClaims; the harness's own schedules' claims where the harness scheduler is used."""
    from harness.training.schedulers import BUILTIN_CLAIMS

    own = tuple(getattr(spec.recipe, "schedule_claims", ()))
    return own if recipe.sources["scheduler"] == "user" else own + BUILTIN_CLAIMS


@register(3, needs_training)
def check_scheduler_properties(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """The learning-rate multiplier is never negative or NaN, moves as each stated phase says, takes no step in a phase of length zero, is continuous at phase boundaries unless a jump is declared, and holds its declared end value, over fuzzed arguments."""
    recipe = resolve(spec)
    claims = {claim.name: claim for claim in _claims_for(recipe, spec)}
    own = {contract.name: contract for contract in recipe.schedules}  # the model's own schedules, from its recipe
    refused: list[str] = []
    cases = [st.tuples(st.just(name), _claim_arguments(claim)) for name, claim in claims.items()]
    cases += [st.tuples(st.just(name), contract.arguments(SCHEDULER_HORIZON)) for name, contract in own.items()]
    unclaimed = recipe.sources["scheduler"] == "user" and not claims

    def body(case: tuple[str, dict[str, Any]]) -> float:
        name, arguments = case
        config = _config(spec, options, scheduler=name, scheduler_kwargs=arguments)
        claim = claims.get(name)
        horizon = SCHEDULER_HORIZON
        if claim is not None:
            horizon = min(4 * SCHEDULER_HORIZON, 5 + sum(
                arguments[p.duration] if isinstance(p.duration, str) else int(p.duration(arguments)) for p in claim.phases
            ))  # fmt: skip
        try:
            curves = _drive(recipe, model, config, horizon)
        except (ValueError, TypeError) as error:
            if claim is None:
                raise
            refused.append(f"{name}{arguments}: {error}")
            return 0.0
        for group, values in curves.items():
            label = f"{name}{arguments} group {group}"
            problem = _sign_problem(label, values)
            if claim is not None and problem is None and (not claim.groups or group in claim.groups):
                problem = _claim_problem(claim, arguments, label, values)
            contract = own.get(name)
            if contract is not None and problem is None:
                expected, _ = contract.expectations(arguments, group)
                problem = next((f"{label}: multiplier {values[s]:.6g} at step {s}, documented {value:.6g}"
                                for s, value in expected.items() if s < len(values) and abs(values[s] - value) > 1e-9),
                               None)  # fmt: skip
            if problem:
                raise Violation(math.inf, problem)
        return 0.0

    if unclaimed:  # the user's scheduler without a claim: only what every schedule must do, at the config's settings

        def unclaimed_body(_: Any) -> float:
            curves = _drive(recipe, model, _config(spec, options), SCHEDULER_HORIZON)
            problem = next((p for g, v in curves.items() if (p := _sign_problem(f"group {g}", v))), None)
            if problem:
                raise Violation(math.inf, problem)
            return 0.0

        outcome = fuzz(st.just(None), unclaimed_body, max_examples=1)
    else:
        outcome = fuzz(st.one_of(*cases), body)
    checked = outcome.examples - len(refused)
    if outcome.passed and checked < 1:
        failure = f"the scheduler refused every fuzzed argument set ({refused[0]})"
    else:
        failure = outcome.failure
    return verdict(
        spec,
        "scheduler_properties",
        passed=failure is None,
        measured=float(failure is not None),
        threshold=0.0,
        expected="multipliers finite and >= 0; each stated phase monotone as stated, absent at length zero, "
        "continuous at its boundaries unless a jump is declared; the declared end value held",
        got=failure or f"{checked} fuzzed schedules ({', '.join([*claims, *own]) or UNCLAIMED}) as stated",
        hint="A decay not clamped after its end goes negative or rises again; a duration of zero read as 'use the "
        "default'; a phase that starts from the wrong value jumps. State the schedule with a ScheduleClaim.",
        sample_size=outcome.examples,
        seed=options.seed,
        details={
            "recipe": recipe.sources,
            "schedulers": [*claims, *own],
            "refused_arguments": refused[:10],
            "failing_example": repr(outcome.failing_example),
        },
    )


# Sweep smoke.


@register(3, needs_training)
def check_sweep_smoke(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """A 2x2 grid sweep finishes, records every run in the ExperimentDB with its parameters, and reports the best run."""
    from harness.store import ExperimentDB
    from harness.training.runs import run_grid_sweep

    base, _, evaluation = preset("ablation-sweep")
    most = spec.inputs.max_batch_size  # the grid's batch sizes stay within the input space
    base = base.replace(task=spec.task, seed=options.seed, sequence_length=16, batch_size=min(base.batch_size, most))
    grid = {key: sorted({min(v, most) for v in values}) if key == "batch_size" else values
            for key, values in evaluation.grid.items()}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, ExperimentDB(Path(folder) / "sweep.db") as db:
        summary = run_grid_sweep(spec, base, grid, db=db, metric=evaluation.metric)
        recorded = {run.run_id: run for run in db.runs(sweep_id=summary.sweep_id)}
    values = {run.run_id: run.metrics[summary.metric] for run in summary.runs}
    problems = [f"run {run.params} is not in the ExperimentDB" for run in summary.runs if run.run_id not in recorded]
    problems += [f"run {r.params} ended with {summary.metric}={values[r.run_id]}" for r in summary.runs
                 if not math.isfinite(values[r.run_id])]  # fmt: skip
    problems += [
        f"run {r.params} recorded with params {recorded[r.run_id].params}"
        for r in summary.runs
        if r.run_id in recorded and recorded[r.run_id].params != r.params
    ]
    best = summary.best
    if not problems and values[best.run_id] != min(values.values()):
        problems.append(f"best run {best.run_id} is not the lowest {summary.metric}")
    return verdict(
        spec,
        "sweep_smoke",
        passed=not problems,
        measured=float(len(problems)),
        threshold=0.0,
        expected=f"{len(summary.runs)} finished runs in the ExperimentDB with finite {summary.metric} and the best named",
        got="; ".join(problems[:3])
        if problems
        else f"best {best.params} with {summary.metric}={values[best.run_id]:.4f}",
        hint="A run that diverges (NaN loss) or is not recorded cannot be ranked.",
        sample_size=len(summary.runs),
        seed=options.seed,
        details={"recipe": resolve(spec).sources, "table": summary.table(), "best": best.params},
    )
