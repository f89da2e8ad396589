"""Schedulers: the documented formulas' boundary values as Hypothesis properties, oracles from
``transformers`` and ``torch``, argument errors naming the parameter, and a real optimizer driven.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from harness.training.schedulers import (
    SCHEDULERS,
    CosineWithWarmup,
    PlateauAdaptive,
    WarmupOnly,
    cosine_with_warmup,
    plateau_adaptive,
    warmup_only,
)
from harness_zoo.multimode_gpt_schedule import TransferLearningSchedule, transfer_learning  # registers it

EXACT = 1e-12


@st.composite
def cosine_arguments(draw: st.DrawFn) -> tuple[int, int, float]:
    total = draw(st.integers(1, 300))
    warmup = draw(st.one_of(st.just(0), st.just(total - 1), st.integers(0, total - 1)))
    ratio = draw(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)))
    return total, warmup, ratio


@st.composite
def transfer_arguments(draw: st.DrawFn) -> dict[str, object]:
    total, warmup, ratio = draw(cosine_arguments())
    return {
        "total_steps": total,
        "warmup_steps": warmup,
        "min_lr_ratio": ratio,
        "unfreeze_step": draw(st.one_of(st.just(0), st.just(total), st.integers(0, total))),
        "unfreeze_ramp_steps": draw(st.one_of(st.just(0), st.integers(0, 2 * total))),
        "head_drop_factor": draw(st.one_of(st.just(1.0), st.just(0.0), st.floats(0.0, 1.0))),
    }


def non_decreasing(values: list[float]) -> bool:
    return all(b >= a - EXACT for a, b in zip(values, values[1:], strict=False))


def non_increasing(values: list[float]) -> bool:
    return all(b <= a + EXACT for a, b in zip(values, values[1:], strict=False))


# Cosine with warmup.


@given(cosine_arguments())
@example((1, 0, 0.0))
@example((10, 9, 0.5))
def test_cosine_with_warmup_boundaries_and_shape(arguments: tuple[int, int, float]) -> None:
    total, warmup, ratio = arguments
    schedule = CosineWithWarmup(total, warmup, ratio)
    values = [schedule(step) for step in range(total + 4)]
    assert all(0.0 <= value <= 1.0 for value in values)
    assert values[0] == (0.0 if warmup else 1.0)  # lr at step 0
    assert values[warmup] == 1.0  # end of warmup: the peak
    assert values[total] == ratio  # the last step: exactly the floor
    assert values[total:] == [ratio] * 4  # held after total_steps
    assert non_decreasing(values[: warmup + 1])
    assert non_increasing(values[warmup:])
    # continuity: no step moves the multiplier by more than the steeper of the two phases' slopes
    bound = max(1 / warmup if warmup else 0.0, (1 - ratio) * math.pi / (2 * (total - warmup)))
    assert all(abs(b - a) <= bound + 1e-9 for a, b in zip(values, values[1:], strict=False))


@given(cosine_arguments())
def test_cosine_with_warmup_equals_transformers_up_to_total_steps(arguments: tuple[int, int, float]) -> None:
    from transformers import get_cosine_schedule_with_warmup

    total, warmup, _ = arguments
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_cosine_schedule_with_warmup(optimizer, warmup, total).lr_lambdas[0]
    ours = CosineWithWarmup(total, warmup, 0.0)
    for step in range(total + 1):
        assert abs(ours(step) - reference(step)) <= EXACT


# Warmup only.


@given(st.integers(0, 300), st.one_of(st.just(0.0), st.floats(0.0, 1.0)))
@example(0, 0.0)
def test_warmup_only_boundaries_and_shape(warmup: int, start: float) -> None:
    schedule = WarmupOnly(warmup, start)
    values = [schedule(step) for step in range(warmup + 5)]
    assert values[0] == (start if warmup else 1.0)
    assert values[warmup:] == [1.0] * 5
    assert all(0.0 <= value <= 1.0 for value in values)
    assert non_decreasing(values)
    if warmup:
        assert abs(values[warmup - 1] - (1 - (1 - start) / warmup)) <= EXACT  # one slope below the plateau
        assert all(abs(b - a) <= (1 - start) / warmup + EXACT for a, b in zip(values, values[1:], strict=False))


# Transfer learning.


@given(transfer_arguments())
@example(
    {
        "total_steps": 10,
        "warmup_steps": 0,
        "min_lr_ratio": 0.0,
        "unfreeze_step": 0,
        "unfreeze_ramp_steps": 0,
        "head_drop_factor": 1.0,
    }
)
@example(
    {
        "total_steps": 10,
        "warmup_steps": 2,
        "min_lr_ratio": 0.1,
        "unfreeze_step": 10,
        "unfreeze_ramp_steps": 3,
        "head_drop_factor": 0.5,
    }
)
def test_transfer_learning_phases(arguments: dict[str, object]) -> None:
    schedule = TransferLearningSchedule(**arguments)
    total, unfreeze, ramp = arguments["total_steps"], arguments["unfreeze_step"], arguments["unfreeze_ramp_steps"]
    drop = arguments["head_drop_factor"]
    curve = CosineWithWarmup(total, arguments["warmup_steps"], arguments["min_lr_ratio"])
    steps = range(total + 3)
    head, body = [schedule.head(s) for s in steps], [schedule.body(s) for s in steps]
    assert all(0.0 <= value <= 1.0 for value in head + body)
    assert body[:unfreeze] == [0.0] * unfreeze  # feature extraction: the body rate is 0
    assert head[:unfreeze] == [curve(s) for s in range(unfreeze)]
    assert head[unfreeze:] == [drop * curve(s) for s in steps[unfreeze:]]  # the documented drop on unfreeze
    if ramp == 0:
        assert body[unfreeze] == curve(unfreeze)  # the documented jump
    else:
        assert body[unfreeze] == 0.0  # continuous: the ramp starts from 0
        for s in range(unfreeze, min(unfreeze + ramp, total + 3)):
            assert abs(body[s] - curve(s) * (s - unfreeze) / ramp) <= EXACT
    assert all(body[s] == curve(s) for s in steps if s >= unfreeze + ramp)
    assert abs(head[total] - drop * arguments["min_lr_ratio"]) <= EXACT  # the last step
    assert schedule.unfreezes_at(unfreeze) == (unfreeze > 0)


def test_transfer_learning_drives_each_named_group() -> None:
    head, body = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW(
        [{"name": "body", "params": [body], "lr": 0.01}, {"name": "head", "params": [head]}], lr=0.1
    )
    scheduler = transfer_learning(
        optimizer, total_steps=8, warmup_steps=2, unfreeze_step=3, unfreeze_ramp_steps=2, head_drop_factor=0.5
    )
    schedule = TransferLearningSchedule(8, 2, 3, 2, 0.5)
    for step in range(10):
        lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
        assert lrs == pytest.approx({"head": 0.1 * schedule.head(step), "body": 0.01 * schedule.body(step)}, abs=1e-15)
        optimizer.step()
        scheduler.step()
    with pytest.raises(ValueError, match="param groups named head and body"):
        transfer_learning(torch.optim.SGD([head], lr=0.1), total_steps=4)


# Plateau-adaptive.


@given(
    st.lists(st.integers(0, 4).map(float), min_size=1, max_size=40),
    st.sampled_from(["min", "max"]),
    st.floats(0.05, 0.95),
    st.integers(0, 4),
    st.integers(0, 3),
    st.sampled_from([0.0, 0.5, 1.5]),
    st.sampled_from([0.0, 0.1, 0.5]),
)
def test_plateau_adaptive_equals_torch_reduce_lr_on_plateau(metrics, mode, factor, patience, cooldown, delta, floor):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode=mode,
        factor=factor,
        patience=patience,
        threshold=delta,
        threshold_mode="abs",
        cooldown=cooldown,
        min_lr=floor,
        eps=0.0,
    )
    plateau = PlateauAdaptive(
        mode=mode, factor=factor, patience=patience, min_delta=delta, cooldown=cooldown, min_multiplier=floor
    )
    history = [plateau(0)]
    for metric in metrics:
        reference.step(metric)
        history.append(plateau.record(metric))
        assert history[-1] == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9)
    assert history[0] == 1.0
    assert non_increasing(history)
    assert all(value >= floor for value in history)
    assert history[-1] == pytest.approx(max(floor, factor**plateau.reductions), rel=1e-12)


@given(st.integers(0, 5), st.integers(0, 3), st.floats(0.1, 0.9))
def test_plateau_reduces_on_the_documented_record(patience: int, cooldown: int, factor: float) -> None:
    """A metric that never improves: first reduction on record patience + 2, then every patience + 1 + cooldown."""
    plateau = PlateauAdaptive(factor=factor, patience=patience, cooldown=cooldown)
    records = 4 * (patience + cooldown + 2)
    reductions_at = []
    for record in range(1, records + 1):
        before = plateau.multiplier
        plateau.record(1.0)
        if plateau.multiplier < before:
            reductions_at.append(record)
    assert reductions_at == list(range(patience + 2, records + 1, patience + 1 + cooldown))
    assert plateau.multiplier == pytest.approx(factor ** len(reductions_at), rel=1e-12)


def test_plateau_scheduler_drives_the_optimizer_and_resumes() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.2)
    scheduler = plateau_adaptive(optimizer, patience=0, factor=0.5)
    for metric in [3.0, 2.0, 2.0, 2.0]:
        optimizer.step()
        scheduler.step(metric)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * 0.25)
    state = scheduler.state_dict()
    fresh_optimizer = torch.optim.SGD([parameter], lr=0.2)
    resumed = plateau_adaptive(fresh_optimizer, patience=0, factor=0.5)
    resumed.load_state_dict(state)
    assert resumed.plateau.multiplier == 0.25 and resumed.plateau.best == 2.0
    fresh_optimizer.step()
    resumed.step(2.0)
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * 0.125)
    with pytest.raises(ValueError, match="metric must be finite, got metric=nan"):
        scheduler.step(float("nan"))


# Every factory drives a real optimizer.


@pytest.mark.parametrize(
    "name, arguments, multiplier",
    [
        ("cosine-warmup", {"total_steps": 6, "warmup_steps": 2, "min_lr_ratio": 0.1}, CosineWithWarmup(6, 2, 0.1)),
        ("warmup-only", {"warmup_steps": 3, "start_factor": 0.25}, WarmupOnly(3, 0.25)),
    ],
)
def test_factories_set_every_group_lr(name, arguments, multiplier) -> None:
    parameters = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))]
    optimizer = torch.optim.AdamW([{"params": [parameters[0]], "lr": 0.1}, {"params": [parameters[1]], "lr": 0.01}])
    scheduler = SCHEDULERS[name](optimizer, **arguments)
    for step in range(9):
        assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(
            [0.1 * multiplier(step), 0.01 * multiplier(step)], abs=1e-15
        )
        optimizer.step()
        scheduler.step()
    # the generic three and the zoo's own; a test module may register a user's schedule of its own beside them
    assert set(SCHEDULERS) >= {"cosine-warmup", "transfer-learning", "warmup-only", "plateau-adaptive"}
    assert SCHEDULERS["cosine-warmup"] is cosine_with_warmup and SCHEDULERS["warmup-only"] is warmup_only


# Invalid arguments are rejected with the parameter and its value.


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: CosineWithWarmup(0), r"total_steps must be >= 1, got total_steps=0"),
        (lambda: CosineWithWarmup(10, -1), r"warmup_steps must be >= 0, got warmup_steps=-1"),
        (lambda: CosineWithWarmup(10, 10), r"warmup_steps must be < total_steps, got warmup_steps=10, total_steps=10"),
        (lambda: CosineWithWarmup(10, 2, 1.5), r"min_lr_ratio must be in \[0, 1\], got min_lr_ratio=1.5"),
        (lambda: CosineWithWarmup(10.0), r"total_steps must be an integer, got total_steps=10.0"),
        (lambda: CosineWithWarmup(10, True), r"warmup_steps must be an integer, got warmup_steps=True"),
        (lambda: WarmupOnly(-3), r"warmup_steps must be >= 0, got warmup_steps=-3"),
        (lambda: WarmupOnly(3, -0.5), r"start_factor must be in \[0, 1\], got start_factor=-0.5"),
        (lambda: WarmupOnly(3, float("nan")), r"start_factor=nan"),
        (
            lambda: TransferLearningSchedule(10, unfreeze_step=11),
            r"unfreeze_step must be <= total_steps, got unfreeze_step=11",
        ),
        (lambda: TransferLearningSchedule(10, unfreeze_step=-1), r"unfreeze_step must be >= 0, got unfreeze_step=-1"),
        (lambda: TransferLearningSchedule(10, unfreeze_ramp_steps=-2), r"unfreeze_ramp_steps=-2"),
        (
            lambda: TransferLearningSchedule(10, head_drop_factor=2.0),
            r"head_drop_factor must be in \[0, 1\], got head_drop_factor=2.0",
        ),
        (lambda: TransferLearningSchedule(0), r"total_steps=0"),
        (lambda: PlateauAdaptive(mode="lowest"), r"mode must be 'min' or 'max', got mode='lowest'"),
        (lambda: PlateauAdaptive(factor=1.0), r"factor must be in \(0, 1\), got factor=1.0"),
        (lambda: PlateauAdaptive(factor=0.0), r"factor=0.0"),
        (lambda: PlateauAdaptive(patience=-1), r"patience must be >= 0, got patience=-1"),
        (lambda: PlateauAdaptive(min_delta=-0.1), r"min_delta must be in \[0, inf\), got min_delta=-0.1"),
        (lambda: PlateauAdaptive(cooldown=1.5), r"cooldown must be an integer, got cooldown=1.5"),
        (lambda: PlateauAdaptive(min_multiplier=1.1), r"min_multiplier=1.1"),
        (lambda: PlateauAdaptive().record("low"), r"metric must be a real number, got metric='low'"),
        (lambda: CosineWithWarmup(10)(-1), r"step must be >= 0, got step=-1"),
        (lambda: WarmupOnly(3)(1.5), r"step must be an integer, got step=1.5"),
        (
            lambda: TransferLearningSchedule(10).multiplier("neck", 0),
            r"group must be one of head, body; got group='neck'",
        ),
    ],
)
def test_invalid_arguments_name_the_parameter_and_value(build, message) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        build()


@given(st.integers(-1000, -1), st.integers(1, 100))
def test_negative_or_too_long_warmups_are_rejected(negative: int, total: int) -> None:
    with pytest.raises(ValueError, match=rf"warmup_steps={negative}\b"):
        CosineWithWarmup(total, negative)
    with pytest.raises(ValueError, match=rf"warmup_steps={negative}\b"):
        WarmupOnly(negative)
    with pytest.raises(ValueError, match=rf"warmup_steps={total}, total_steps={total}"):
        CosineWithWarmup(total, total)


@given(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1 + 1e-9)).filter(math.isfinite))
def test_ratios_outside_the_unit_interval_are_rejected(ratio: float) -> None:
    with pytest.raises(ValueError, match="min_lr_ratio"):
        CosineWithWarmup(10, 0, ratio)
    with pytest.raises(ValueError, match="head_drop_factor"):
        TransferLearningSchedule(10, head_drop_factor=ratio)
