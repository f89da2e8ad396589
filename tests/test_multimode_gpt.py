"""multimode-gpt: each mode's loss against an independent computation, Tier 1 on two sizes per mode,
freeze/unfreeze with a real optimizer, transfer from checkpoints, loss modifiers wired per mode.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from harness.result import Status
from harness.runner import check_model
from harness_zoo.multimode_gpt import (
    LM_SPEC,
    MODES,
    MODIFIER_FIELDS,
    MODIFIERS_BY_MODE,
    SCORER_SPEC,
    TAGGER_SPEC,
    MultiModeGPT,
    MultiModeGPTConfig,
    add_unfrozen_parameters,
    build_spec,
    configure_optimizers,
)
from harness_zoo.multimode_gpt_losses import APPLICABILITY, ModifierNotApplicable
from harness_zoo.multimode_gpt_schedule import TransferLearningSchedule, transfer_learning

IGNORE = -100
SECOND_SIZES = {
    "language-model": {
        "n_layer": 3,
        "n_head": 4,
        "n_embd": 32,
        "block_size": 24,
        "vocab_size": 97,
        "pad_id": 1,
        "bias": False,
    },
    "token-classifier": {"n_layer": 1, "n_head": 3, "n_embd": 48, "block_size": 20, "vocab_size": 50, "num_classes": 3},
    "sequence-scorer": {"n_layer": 4, "n_head": 2, "n_embd": 48, "block_size": 16, "vocab_size": 300},
}
SPECS = [LM_SPEC, TAGGER_SPEC, SCORER_SPEC] + [build_spec(mode, **sizes) for mode, sizes in SECOND_SIZES.items()]


def model_of(mode: str, **changes) -> MultiModeGPT:
    torch.manual_seed(0)
    return MultiModeGPT(MultiModeGPTConfig(mode=mode, **changes))


def padded_batch(config: MultiModeGPTConfig, *, batch_size: int = 3, length: int = 10, seed: int = 0) -> dict:
    """Right-padded rows (row i has i pad tokens) with labels for the config's mode."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, config.vocab_size, (batch_size, length), generator=generator)
    attention_mask = torch.ones(batch_size, length, dtype=torch.long)
    for row in range(1, batch_size):
        attention_mask[row, -row:] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, config.pad_id)
    if config.mode == "language-model":
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE)
    elif config.mode == "token-classifier":
        labels = torch.randint(0, config.num_classes, (batch_size, length), generator=generator)
        labels = labels.masked_fill(attention_mask == 0, IGNORE)
        labels[0, 1] = IGNORE
    else:
        labels = torch.rand(batch_size, generator=generator)
        labels[-1] = IGNORE
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# Each mode's loss against an independent computation.


def test_language_model_is_gpt2_logits_and_loss() -> None:
    """Our language-model mode with its weights loaded into transformers' GPT-2 gives the same logits and loss."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = model_of("language-model").eval()
    config = model.config
    reference = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=config.vocab_size,
            n_positions=config.block_size,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            activation_function="gelu",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
            use_cache=False,
        )
    ).eval()
    conv1d = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # transformers stores these transposed
    state = {key: value.t() if key.endswith(conv1d) else value for key, value in model.state_dict().items()}
    reference.load_state_dict(state)
    input_ids = torch.randint(0, config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(1))
    labels = input_ids.clone()
    labels[0, 5] = labels[2, 11] = IGNORE
    with torch.no_grad():
        ours, theirs = model(input_ids, labels=labels), reference(input_ids, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=0, atol=1e-6)


def test_language_model_loss_is_the_shifted_token_mean_with_padding() -> None:
    model = model_of("language-model").eval()
    batch = padded_batch(model.config)
    with torch.no_grad():
        output = model(**batch)
    logits, labels = output.logits.double(), batch["labels"]
    terms = [
        torch.logsumexp(logits[b, t], -1) - logits[b, t, labels[b, t + 1]]
        for b in range(labels.shape[0])
        for t in range(labels.shape[1] - 1)
        if labels[b, t + 1] != IGNORE
    ]
    assert float(output.loss) == pytest.approx(float(sum(terms) / len(terms)), abs=1e-6)


def test_token_classifier_loss_is_the_mean_over_scored_tokens() -> None:
    model = model_of("token-classifier").eval()
    batch = padded_batch(model.config)
    with torch.no_grad():
        output = model(**batch)
    assert output.logits.shape == (3, 10, 5)
    logits, labels = output.logits.double(), batch["labels"]
    terms = [
        torch.logsumexp(logits[b, t], -1) - logits[b, t, labels[b, t]]
        for b in range(labels.shape[0])
        for t in range(labels.shape[1])
        if labels[b, t] != IGNORE
    ]
    assert float(output.loss) == pytest.approx(float(sum(terms) / len(terms)), abs=1e-6)


def test_sequence_scorer_logits_are_sigmoid_scores_and_loss_is_mse() -> None:
    model = model_of("sequence-scorer").eval()
    batch = padded_batch(model.config, batch_size=4)
    with torch.no_grad():
        output = model(**batch)
    assert output.logits.shape == (4,) and output.score_logits.shape == (4,)
    assert ((output.logits > 0) & (output.logits < 1)).all()
    expected_scores = 1 / (1 + torch.exp(-output.score_logits.double()))
    torch.testing.assert_close(output.logits.double(), expected_scores, rtol=0, atol=1e-7)
    # the score is head(final hidden state of the CLS token), the CLS being cls_embedding in front of the input
    scores, labels = output.logits.double().tolist(), batch["labels"].tolist()
    errors = [(s - y) ** 2 for s, y in zip(scores, labels, strict=True) if y != IGNORE]
    assert float(output.loss) == pytest.approx(sum(errors) / len(errors), abs=1e-7)


def test_scorer_labels_are_validated() -> None:
    model = model_of("sequence-scorer")
    input_ids = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        model(input_ids, labels=torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"labels must be \(batch,\)"):
        model(input_ids, labels=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="integer class ids"):
        model_of("token-classifier")(input_ids, labels=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="exceeds block_size=64"):
        model(torch.zeros(1, 65, dtype=torch.long))


# Masks: padding never reaches real tokens; causal vs bidirectional.


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", MODES)
def test_pad_tokens_do_not_leak_into_real_positions(mode: str, side: str) -> None:
    model = model_of(mode).eval()
    batch = padded_batch(model.config, batch_size=3, length=12)
    mask = batch["attention_mask"] if side == "right" else batch["attention_mask"].flip(-1)  # row i: i pad tokens
    input_ids = batch["input_ids"].masked_fill(mask == 0, model.config.pad_id)
    other_pads = input_ids.masked_fill(mask == 0, 7)  # different ids at the padded positions
    with torch.no_grad():
        a = model(input_ids, attention_mask=mask).logits
        b = model(other_pads, attention_mask=mask).logits
        real_ids = input_ids[2, :10] if side == "right" else input_ids[2, 2:]
        alone = model(real_ids[None]).logits  # row 2 has 2 pad tokens: its 10 real ones, unpadded
    real = mask.bool()
    if mode == "sequence-scorer":
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        torch.testing.assert_close(a[2:], alone, rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(a[real], b[real], rtol=0, atol=1e-6)
        torch.testing.assert_close(a[2][real[2]][None], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_the_last_token_reaches_the_first_output_only_when_bidirectional(mode: str) -> None:
    model = model_of(mode).eval()
    input_ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    edited = input_ids.clone()
    edited[:, -1] = (edited[:, -1] + 1) % 256
    with torch.no_grad():
        first, changed = model(input_ids).logits, model(edited).logits
    if mode == "sequence-scorer":
        moved = (first - changed).abs().max()  # the CLS at position 0 sees the last token
    else:
        moved = (first[:, 0] - changed[:, 0]).abs().max()
    assert (moved == 0) if mode == "language-model" else (moved > 1e-6)


# Tier 1 on the three specs and a second, differently sized config of each.


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_tier1_passes(spec) -> None:
    results = check_model(spec)
    failed = {r.check: r.got for r in results if r.status == Status.FAILED}
    known_harness_bug = (
        spec.task == "sequence-scoring"
        and set(failed) == {"causality"}
        and "IndexError: too many indices" in failed["causality"]
    )
    if known_harness_bug:  # check_causality indexes [:, first] on (B,) outputs; see the report
        pytest.xfail(f"harness bug in check_causality for (B,) outputs: {failed['causality']}")
    assert not failed, failed
    ran = {r.check for r in results if r.status == Status.PASSED}
    assert {"padding_invariance", "causality", "loss_oracle", "gradient_flow", "initialization"} <= ran


@pytest.mark.parametrize(
    "mode, changes",
    [
        ("token-classifier", {"label_smoothing": 0.1}),
        ("token-classifier", {"mask_ratio_power": 1.0}),
        ("language-model", {"label_smoothing": 0.1}),
        ("sequence-scorer", {"entropy_weighting": 3.0}),
    ],
)
def test_the_adapters_reference_loss_catches_a_loss_that_is_not_plain(mode: str, changes: dict) -> None:
    """A modified loss is not the task's plain loss: the adapter's reference loss tells them apart."""
    from harness.checks import CHECKS, CheckOptions, run_check

    spec = build_spec(mode, **changes)
    model = spec.build_model()
    if mode == "sequence-scorer":
        with torch.no_grad():
            model.head.weight.mul_(10)  # spread the scores so their entropies differ
    result = run_check(CHECKS["loss_oracle"], spec, model, CheckOptions())
    assert result.status == Status.FAILED, result.got
    plain = build_spec(mode)
    assert run_check(CHECKS["loss_oracle"], plain, plain.build_model(), CheckOptions()).status == Status.PASSED


def test_build_spec_from_plain_config() -> None:
    spec = build_spec("token-classifier", n_embd=32, num_classes=7)
    assert spec.name == "multimode-gpt-tagger-2x2x32" and spec.task == "token-classification"
    assert spec.inputs.num_classes == 7 and not spec.capabilities.is_causal
    model = spec.build_model()
    assert model.config.n_embd == 32 and model.head.out_features == 7
    assert build_spec(model.config, n_layer=3).build_model().config.n_layer == 3
    assert [s.name for s in (LM_SPEC, TAGGER_SPEC, SCORER_SPEC)] == [
        "multimode-gpt-lm",
        "multimode-gpt-tagger",
        "multimode-gpt-scorer",
    ]
    assert LM_SPEC.capabilities.is_causal and LM_SPEC.task == "causal-lm" and SCORER_SPEC.task == "sequence-scoring"


def test_initialization_is_gpt2_style() -> None:
    model = model_of("token-classifier", n_layer=8, n_embd=128, n_head=4)
    for name, parameter in model.named_parameters():
        parameter = parameter.detach()
        if name.endswith("c_proj.weight"):
            assert float(parameter.std()) == pytest.approx(0.02 / math.sqrt(16), rel=0.05), name
        elif "ln_" in name and name.endswith("weight"):
            assert torch.equal(parameter, torch.ones_like(parameter)), name
        elif name.endswith("bias"):
            assert not parameter.any(), name
        else:
            assert float(parameter.std()) == pytest.approx(0.02, rel=0.1), name
    lm = model_of("language-model")
    assert lm.lm_head.weight is lm.transformer.wte.weight


# Freezing, unfreezing and the optimizer.


def train_step(model: MultiModeGPT, optimizer: torch.optim.Optimizer, *, seed: int = 0) -> None:
    optimizer.zero_grad(set_to_none=True)
    model(**padded_batch(model.config, seed=seed)).loss.backward()
    optimizer.step()


def snapshot(model: MultiModeGPT) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("mode", ["token-classifier", "sequence-scorer"])
def test_frozen_transformer_is_bitwise_unchanged_and_head_moves(mode: str) -> None:
    model = model_of(mode).train()
    model.freeze_transformer()
    optimizer = configure_optimizers(model, lr=1e-2, body_lr_multiplier=0.1, weight_decay=0.1)
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert list(groups) == ["head", "body"] and groups["body"]["params"] == []
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for _, p in model.head_parameters()}
    before = snapshot(model)
    train_step(model, optimizer)
    for name, parameter in model.named_parameters():
        if name.startswith("transformer."):
            assert parameter.grad is None and torch.equal(parameter, before[name]), name
        else:
            assert not torch.equal(parameter, before[name]), name


@pytest.mark.parametrize("mode", ["token-classifier", "sequence-scorer"])
def test_unfrozen_parameters_join_the_body_group_and_move(mode: str) -> None:
    model = model_of(mode).train()
    model.freeze_transformer()
    optimizer = configure_optimizers(model, lr=1e-2, body_lr_multiplier=0.1, weight_decay=0.1)
    train_step(model, optimizer)
    model.unfreeze_transformer()
    added = add_unfrozen_parameters(optimizer, model)
    assert set(added) == {name for name, _ in model.body_parameters()}
    assert add_unfrozen_parameters(optimizer, model) == ()  # idempotent
    in_group = {group["name"]: {id(p) for p in group["params"]} for group in optimizer.param_groups}
    body = optimizer.param_groups[1]
    assert body["name"] == "body" and body["lr"] == pytest.approx(1e-2 * 0.1)
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad
        assert id(parameter) in in_group["body" if name.startswith("transformer.") else "head"], name
    before = snapshot(model)
    train_step(model, optimizer, seed=1)
    moved = [name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])]
    assert set(moved) == set(before)


def test_configure_optimizers_covers_every_trainable_parameter() -> None:
    model = model_of("sequence-scorer")
    optimizer = configure_optimizers(model, lr=3e-3, body_lr_multiplier=0.5, weight_decay=0.01)
    head, body = optimizer.param_groups
    assert (head["name"], head["lr"], body["name"], body["lr"]) == ("head", 3e-3, "body", 1.5e-3)
    assert head["weight_decay"] == body["weight_decay"] == 0.01
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    lm = model_of("language-model")
    lm.freeze_transformer()  # the tied head freezes with the body: nothing is left to train
    with pytest.raises(ValueError, match="no parameter of the model requires grad"):
        configure_optimizers(lm, lr=1e-3)
    for arguments, message in [
        ({"lr": 0.0}, "lr must be > 0, got lr=0.0"),
        ({"lr": 1e-3, "body_lr_multiplier": -1}, "body_lr_multiplier must be >= 0, got body_lr_multiplier=-1"),
        ({"lr": 1e-3, "weight_decay": float("nan")}, "weight_decay must be a finite number, got weight_decay=nan"),
    ]:
        with pytest.raises(ValueError, match=message):
            configure_optimizers(model, **arguments)
    with pytest.raises(ValueError, match="param groups named 'head' and 'body'"):
        add_unfrozen_parameters(torch.optim.SGD(model.parameters(), lr=0.1), model)


def test_transfer_learning_schedule_drives_feature_extraction_then_unfreezing() -> None:
    model = model_of("token-classifier").train()
    model.freeze_transformer()
    optimizer = configure_optimizers(model, lr=1e-2, body_lr_multiplier=0.1)
    schedule = TransferLearningSchedule(total_steps=6, unfreeze_step=2, unfreeze_ramp_steps=2, head_drop_factor=0.5)
    scheduler = transfer_learning(
        optimizer, total_steps=6, unfreeze_step=2, unfreeze_ramp_steps=2, head_drop_factor=0.5
    )
    body_names = {name for name, _ in model.body_parameters()}
    for step in range(6):
        if schedule.unfreezes_at(step):
            model.unfreeze_transformer()
            add_unfrozen_parameters(optimizer, model)
        head, body = optimizer.param_groups
        assert head["lr"] == pytest.approx(1e-2 * schedule.head(step), abs=1e-15)
        assert body["lr"] == pytest.approx(1e-3 * schedule.body(step), abs=1e-15)
        before = snapshot(model)
        train_step(model, optimizer, seed=step)
        body_moved = any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in body_names)
        assert body_moved == (schedule.body(step) > 0), step  # body rate 0 (frozen or ramp start): bitwise still
        scheduler.step()


# Transfer from checkpoints.


def test_lm_checkpoint_into_tagger_reports_heads_and_copies_the_body() -> None:
    lm = model_of("language-model")
    torch.manual_seed(1)
    tagger = MultiModeGPT(MultiModeGPTConfig(mode="token-classifier"))
    head_before = {k: v.clone() for k, v in tagger.state_dict().items() if not k.startswith("transformer.")}
    report = tagger.init_from_checkpoint(lm.state_dict())
    assert report.missing_keys == ("head.bias", "head.weight")
    assert report.unexpected_keys == ("lm_head.weight",)
    assert report.skipped_keys == ()
    body_keys = [k for k in tagger.state_dict() if k.startswith("transformer.")]
    assert report.loaded_keys == tuple(sorted(body_keys))
    lm_state, tagger_state = lm.state_dict(), tagger.state_dict()
    assert all(torch.equal(tagger_state[key], lm_state[key]) for key in body_keys)
    assert all(torch.equal(tagger_state[key], value) for key, value in head_before.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.missing_keys = ()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_files_of_a_tied_lm_load_into_a_scorer(tmp_path, suffix: str) -> None:
    from safetensors.torch import save_model

    lm = model_of("language-model")
    path = tmp_path / f"lm{suffix}"
    if suffix == ".safetensors":
        save_model(lm, str(path))  # keeps lm_head.weight of the tied pair, drops transformer.wte.weight
    else:
        torch.save(lm.state_dict(), path)
    scorer = model_of("sequence-scorer")
    report = scorer.init_from_checkpoint(path)
    assert report.missing_keys == ("cls_embedding", "head.bias", "head.weight")
    assert report.unexpected_keys == ("lm_head.weight",)
    assert torch.equal(scorer.transformer.wte.weight, lm.transformer.wte.weight)
    assert all(torch.equal(p, dict(lm.named_parameters())[n]) for n, p in scorer.body_parameters())


def test_tagger_checkpoint_into_lm_and_into_tagger() -> None:
    tagger = model_of("token-classifier")
    torch.manual_seed(3)
    lm = MultiModeGPT(MultiModeGPTConfig(mode="language-model"))
    report = lm.init_from_checkpoint(tagger.state_dict())
    assert report.missing_keys == ()  # lm_head.weight is tied to the loaded transformer.wte.weight
    assert report.unexpected_keys == ("head.bias", "head.weight")
    assert torch.equal(lm.lm_head.weight, tagger.transformer.wte.weight)
    torch.manual_seed(4)
    other = MultiModeGPT(MultiModeGPTConfig(mode="token-classifier"))
    report = other.init_from_checkpoint(tagger.state_dict())
    assert report.skipped_keys == ("head.bias", "head.weight") and report.unexpected_keys == ()
    assert not torch.equal(other.head.weight, tagger.head.weight)  # heads are never transferred


def test_bad_checkpoints_give_clear_errors(tmp_path) -> None:
    tagger = model_of("token-classifier")
    wider = model_of("language-model", n_embd=32)
    with pytest.raises(
        ValueError, match=r"shape mismatches\): transformer\.wte\.weight: checkpoint \(256, 32\), model \(256, 64\)"
    ):
        tagger.init_from_checkpoint(wider.state_dict())
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read checkpoint .*corrupt.safetensors"):
        tagger.init_from_checkpoint(corrupt)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        tagger.init_from_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        tagger.init_from_checkpoint({"transformer.wte.weight": [1, 2]})


# Config validation and loss modifiers per mode.


def test_modifier_table_agrees_with_the_generic_applicability() -> None:
    kind = {"language-model": "classes", "token-classifier": "classes", "sequence-scorer": "scores"}
    for mode in MODES:
        assert set(MODIFIERS_BY_MODE[mode]) == {name for name, kinds in APPLICABILITY.items() if kind[mode] in kinds}
    assert set(MODIFIER_FIELDS) == set(APPLICABILITY)


@pytest.mark.parametrize("field", ["label_smoothing", "mask_ratio_power"])
def test_modifiers_that_do_not_apply_to_the_scorer_are_refused(field: str) -> None:
    with pytest.raises(ModifierNotApplicable, match=rf"{field}=0.2 does not apply in mode 'sequence-scorer'"):
        MultiModeGPTConfig(mode="sequence-scorer", **{field: 0.2})
    MultiModeGPTConfig(mode="sequence-scorer", **{field: 0.0})  # absent: fine
    MultiModeGPTConfig(mode="token-classifier", **{field: 0.2})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mode": "classifier"}, "mode must be one of language-model, token-classifier, sequence-scorer"),
        ({"n_embd": 30, "n_head": 4}, "n_embd must be divisible by n_head, got n_embd=30, n_head=4"),
        ({"n_layer": 0}, "n_layer must be a positive integer, got n_layer=0"),
        ({"pad_id": 256}, r"pad_id must be in \[0, 256\), got pad_id=256"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got label_smoothing=1.0"),
        ({"entropy_weighting": float("inf")}, "entropy_weighting must be a finite number"),
        ({"mode": "token-classifier", "num_classes": 1}, "num_classes must be >= 2"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_invalid_configs_name_the_field(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        MultiModeGPTConfig(**changes)


def test_modifiers_change_each_mode_loss_as_the_pipeline_says() -> None:
    for mode, field, value in [
        ("language-model", "label_smoothing", 0.2),
        ("language-model", "mask_ratio_power", 1.0),
        ("token-classifier", "entropy_weighting", 2.0),
        ("token-classifier", "mask_ratio_power", -1.0),
        ("sequence-scorer", "entropy_weighting", -2.0),
    ]:
        plain, modified = model_of(mode).eval(), model_of(mode, **{field: value}).eval()
        if mode == "sequence-scorer":  # spread the scores away from 0.5, so their entropies differ
            with torch.no_grad():
                plain.head.weight.mul_(10)
                modified.head.weight.mul_(10)
        batch = padded_batch(plain.config, batch_size=4)
        batch["labels"] = batch["labels"].clone()
        if mode != "sequence-scorer":
            batch["labels"][1, :3] = IGNORE  # uneven label ratios, so the mask-ratio weight has something to weigh
        with torch.no_grad():
            out = modified(**batch)
            base = plain(**batch).loss
        pipeline = modified.config.loss_pipeline()
        real = batch["attention_mask"]
        if mode == "language-model":
            expected = pipeline.class_loss(out.logits[:, :-1], batch["labels"][:, 1:], real=real[:, 1:])
        elif mode == "token-classifier":
            expected = pipeline.class_loss(out.logits, batch["labels"], real=real)
        else:
            expected = pipeline.score_loss(out.logits, batch["labels"])
        assert torch.equal(out.loss, expected), (mode, field)
        assert abs(float(out.loss) - float(base)) > 1e-6, (mode, field)
