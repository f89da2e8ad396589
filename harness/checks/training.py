"""Tier 3: does it train? Training runs as a fixture; these checks validate the runs.

Every check exercises the spec's own training pieces (``spec.recipe``: optimizer factory, freeze,
unfreeze, scheduler, loss) and falls back to the harness defaults only for pieces the spec leaves out;
``details["recipe"]`` says which was used, piece by piece. Training goes through Lightning
(:class:`harness.training.module.HarnessModule`); comparisons between two runs use deterministic
steps (eval mode: no dropout, running norm statistics), so a difference is the code's, not the RNG's.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st

from harness.adapters import adapter_for
from harness.adapters.base import Batch
from harness.checks.base import CheckOptions, needs_training, register, verdict
from harness.checks.fuzz import Violation, fuzz
from harness.checks.inputs import fixed_batch
from harness.result import CheckResult
from harness.spec import ModelSpec
from harness.training.config import TrainingConfig
from harness.training.data import RowsDataset, has_real_data, loader, training_data
from harness.training.presets import preset
from harness.training.recipe import resolve
from harness.training.schedulers import cosine_arguments

SCHEDULER_HORIZON = 60  # longest schedule the scheduler check drives, in steps


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
    return loss_ratio, grad_ratio, max(loss_ratio, grad_ratio) <= 1 - drop


@register(3, needs_training)
def check_overfit_one_batch(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Training on one batch drives its loss and its gradient norm each down by at least 90% within the step budget."""
    steps, drop = options.training.overfit_steps, options.training.overfit_drop
    batch = fixed_batch(spec, options)
    config = _config(spec, options, max_steps=steps, batch_size=options.batch_size, seed=options.seed)
    rows = {key: value.repeat(steps, *([1] * (value.dim() - 1))) for key, value in batch.items()}
    module = _fit(spec, model, config, rows, callbacks=[_stop_when_overfit(drop)])
    loss_ratio, grad_ratio, passed = _overfit_ratios(module.history, drop)
    worst = max(loss_ratio, grad_ratio)
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

    config = preset("fast-dev")[0].replace(task=spec.task, seed=options.seed)
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
    """k accumulated micro-batches of 2 rows, holding different numbers of real tokens, have the gradient of one step on all 2k rows.

    One step on the 2k rows is the gradient of the full batch's token-weighted loss; the accumulated run goes through
    the same path (the spec's recipe loss when it names one, the harness's Lightning module otherwise). Where the
    model takes padded token sequences, the rows carry fuzzed numbers of real tokens (right padding), the first
    layout as uneven as the length allows: micro-batches that score different numbers of tokens, so a loss averaged
    per micro-batch (each micro-batch weighted 1/k instead of by its tokens, transformers PR #34191) shows.
    """
    k, rtol = options.training.accumulation_steps, options.training.accumulation_rtol
    adapter = adapter_for(spec)
    config = _config(spec, options, max_steps=1, seed=options.seed)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    length = options.length_for(spec)
    shortest = max(spec.inputs.min_length, 1 + adapter.label_shift)  # every row scores a label
    padded = adapter.sequence and spec.capabilities.has_attention_mask and length > shortest
    layouts: list[dict[str, Any]] = []

    def gap(lengths: list[int] | None, seed: int) -> float:
        batch = _padded_rows(spec, lengths, length, seed) if lengths else fixed_batch(spec, options, batch_size=2 * k)
        model.load_state_dict(state)
        big = _fit(spec, model, config.replace(batch_size=2 * k), batch, capture_gradients=True)
        model.load_state_dict(state)
        accumulated = _fit(
            spec, model, config.replace(batch_size=2, gradient_accumulation=k), batch, capture_gradients=True
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
            adapter.scored_labels(spec, {key: value[2 * i : 2 * i + 2] for key, value in batch.items()})
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
        uneven = [shortest if i < 2 else length if i >= 2 * (k - 1) else (shortest + length) // 2 for i in range(2 * k)]
        rows = st.lists(st.integers(shortest, length), min_size=2 * k, max_size=2 * k)
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
        expected=f"||g(batch {2 * k}) - g({k} x batch 2, accumulated)|| / ||g(batch {2 * k})|| <= {rtol:g} on "
        f"{layout_text}",
        got=failure
        or f"relative difference at most {relative:.3g} over {len(layouts)} layout(s) (micro-batches scoring "
        f"{worst['scored_per_micro_batch']} labels; accumulated/big gradient norm ratio {worst['norm_ratio']:.3g})",
        hint="Accumulated micro-batches must add up to the full batch's token-weighted loss: a loss averaged per "
        "micro-batch weighs a micro-batch of few real tokens as much as a full one (Lightning divides each by k); "
        "normalise by the scored tokens of the whole accumulation window (transformers' num_items_in_batch, PR "
        "#34191). A summed loss, or one normalised by something other than the batch, makes accumulated steps k "
        "times too large.",
        sample_size=examples * 2 * k,
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
    batch_size = options.batch_size
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
    worst_name = max(differences, key=differences.get)
    worst = differences[worst_name]
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


@register(3, needs_training)
def check_freeze_unfreeze(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Frozen parameters stay bitwise unchanged by a step while trainable ones move; after unfreezing every
    parameter is in the optimizer at its stated learning rate and moves."""
    recipe = resolve(spec)
    config = _config(spec, options, seed=options.seed)
    batch = fixed_batch(spec, options)
    model.eval()  # deterministic: no dropout
    recipe.freeze(model)
    named = dict(model.named_parameters())
    frozen = [name for name, p in named.items() if not p.requires_grad]
    problems: list[str] = []
    if not frozen:
        problems.append("freeze left every parameter trainable")
    optimizer, _ = recipe.optimizers(model, config)

    def step() -> dict[str, torch.Tensor]:
        before = _parameters(model)
        optimizer.zero_grad()
        recipe.loss(model, batch).backward()
        optimizer.step()
        return before

    before = step()
    moved_frozen = [n for n in frozen if not torch.equal(before[n], named[n].detach())]
    stuck = [n for n in named if n not in frozen and torch.equal(before[n], named[n].detach())]
    problems += [f"frozen {n} changed" for n in moved_frozen] + [f"trainable {n} did not move" for n in stuck]
    recipe.unfreeze(model)
    recipe.add_unfrozen(optimizer, model)
    still_frozen = [n for n in frozen if not named[n].requires_grad]
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    missing = [n for n, p in named.items() if p.requires_grad and id(p) not in group_of]
    wrong_lr = [
        f"{n} at lr {group_of[id(p)]['lr']:g}, stated {_stated_lr(group_of[id(p)], config):g}"
        for n, p in named.items()
        if id(p) in group_of and not math.isclose(group_of[id(p)]["lr"], _stated_lr(group_of[id(p)], config))
    ]
    before = step()
    unmoved = [n for n in frozen if n not in still_frozen and torch.equal(before[n], named[n].detach())]
    problems += [f"{n} still frozen after unfreeze" for n in still_frozen]
    problems += [f"unfrozen {n} is in no optimizer param group" for n in missing]
    problems += [f"{n}" for n in wrong_lr] + [f"unfrozen {n} did not move" for n in unmoved]
    return verdict(
        spec,
        "freeze_unfreeze",
        passed=not problems,
        measured=float(len(problems)),
        threshold=0.0,
        expected="frozen parameters unchanged, trainable ones moved; after unfreezing, all in the optimizer at "
        "their stated rates and moving",
        got=f"{len(problems)} violation(s): {'; '.join(problems[:4])}"
        if problems
        else f"{len(frozen)} frozen parameters held, then all moved after unfreezing",
        hint="After unfreezing, the new trainable parameters must be added to the optimizer (or it rebuilt); an "
        "optimizer built while they were frozen never updates them.",
        sample_size=len(named),
        seed=options.seed,
        details={"recipe": recipe.sources, "frozen": len(frozen), "missing_from_optimizer": missing[:20]},
    )


# Schedulers.


@st.composite
def _warmup_arguments(draw: st.DrawFn) -> dict[str, Any]:
    warmup = draw(st.one_of(st.just(0), st.integers(0, SCHEDULER_HORIZON - 5)))
    return {"warmup_steps": warmup, "start_factor": draw(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)))}


def _expectations(name: str, arguments: dict[str, Any]) -> tuple[dict[int, float], list[tuple]]:
    """Documented boundary values {step: multiplier} and monotone stretches (start, end, +1 up / -1 down)."""
    if name == "warmup-only":
        w, f = arguments["warmup_steps"], arguments["start_factor"]
        return {0: f if w else 1.0, w: 1.0, w + 3: 1.0}, [(0, w + 3, 1)]
    total, warmup, ratio = arguments["total_steps"], arguments["warmup_steps"], arguments["min_lr_ratio"]
    return {0: 0.0 if warmup else 1.0, warmup: 1.0, total: ratio, total + 3: ratio}, [
        (0, warmup, 1),
        (warmup, total + 3, -1),
    ]


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


@register(3, needs_training)
def check_scheduler_properties(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """The learning-rate schedule is never negative, warms up monotonically and hits its documented boundary values
    (zero-valued arguments honoured) at fuzzed arguments."""
    recipe = resolve(spec)
    strategies = {"cosine-warmup": cosine_arguments(SCHEDULER_HORIZON), "warmup-only": _warmup_arguments()}
    own = {contract.name: contract for contract in recipe.schedules}  # the model's own schedules, from its recipe
    strategies |= {name: contract.arguments(SCHEDULER_HORIZON) for name, contract in own.items()}
    cases = st.one_of(*(st.tuples(st.just(name), strategy) for name, strategy in strategies.items()))

    def body(case: tuple[str, dict[str, Any]]) -> float:
        name, arguments = case
        config = _config(spec, options, scheduler=name, scheduler_kwargs=arguments)
        curves = _drive(recipe, model, config, SCHEDULER_HORIZON)
        for group, values in curves.items():
            lowest = min(values)
            if not all(math.isfinite(v) for v in values) or lowest < 0:
                raise Violation(-lowest if lowest < 0 else math.inf, f"{name}{arguments} group {group}: multiplier "
                                f"{lowest:.3g} (negative or non-finite) at step {values.index(lowest)}")  # fmt: skip
            contract = own.get(name)
            expected, stretches = (
                contract.expectations(arguments, group) if contract else _expectations(name, arguments)
            )
            for s, value in expected.items():
                if s < len(values) and abs(values[s] - value) > 1e-9:
                    raise Violation(abs(values[s] - value), f"{name}{arguments} group {group}: multiplier "
                                    f"{values[s]:.6g} at step {s}, documented {value:.6g}")  # fmt: skip
            for start, end, direction in stretches:
                stretch = values[start : end + 1]
                for a, b in zip(stretch, stretch[1:], strict=False):
                    if direction * (b - a) < -1e-12:
                        raise Violation(abs(b - a), f"{name}{arguments} group {group}: not "
                                        f"{'non-decreasing' if direction > 0 else 'non-increasing'} on steps "
                                        f"{start}..{end}")  # fmt: skip
        return 0.0

    outcome = fuzz(cases, body)
    return verdict(
        spec,
        "scheduler_properties",
        passed=outcome.passed,
        measured=outcome.worst,
        threshold=0.0,
        expected="multipliers >= 0, monotone warmup and decay, the documented values at the boundaries",
        got=outcome.failure or f"{outcome.examples} fuzzed schedules ({', '.join(strategies)}) as documented",
        hint="See harness/training/schedulers.py for the documented formulas; a linear or cosine decay that is "
        "not clamped after total_steps goes negative or rises again.",
        sample_size=outcome.examples,
        seed=options.seed,
        details={
            "recipe": recipe.sources,
            "schedulers": list(strategies),
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
    base = base.replace(task=spec.task, seed=options.seed, sequence_length=16)
    with tempfile.TemporaryDirectory() as folder, ExperimentDB(Path(folder) / "sweep.db") as db:
        summary = run_grid_sweep(spec, base, evaluation.grid, db=db, metric=evaluation.metric)
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
