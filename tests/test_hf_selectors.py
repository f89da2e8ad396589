"""``--model hf:PATH`` and ``hf-config:PATH``: Hugging Face checkpoints the test saves itself become specs with no
user code, and every Tier 1 row of a causal LM, a seq2seq model and a vision model passes or skips with a reason.

The folders are written with ``save_pretrained`` from tiny configs with random weights, the causal LM and the
seq2seq model with gpt2-tiny's tokenizer beside them, the way a user saves a fine-tuned checkpoint; nothing is
downloaded (``local_files_only``, and the hub is offline in every harness session).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.checks import applicable_checks, run_check
from harness.checks.base import CheckOptions
from harness.hf import MAX_CONTEXT, CheckpointError, checkpoint_spec
from harness.loading import PROVENANCE, ModelSelectionError, resolve_models
from harness.result import Status


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=512, n_positions=128, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0, pad_token_id=1)  # fmt: skip
    return GPT2LMHeadModel(config)


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=512, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, pad_token_id=1,
                      eos_token_id=0, decoder_start_token_id=1, relative_attention_num_buckets=8)  # fmt: skip
    return T5ForConditionalGeneration(config)


def _vit():
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=5)  # fmt: skip
    return ViTForImageClassification(config)


SAVED_SEED = 123  # not a spec's build seed (0), so loaded weights cannot be confused with freshly drawn ones
BUILDERS = {"my-gpt2": (_gpt2, True), "my-t5": (_t5, True), "my-vit": (_vit, False)}  # name: (build, tokenizer)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``save_pretrained`` folder per model, the text models' with a tokenizer."""
    from models.gpt2_tiny import build_tokenizer

    root = tmp_path_factory.mktemp("checkpoints")
    for name, (build, has_tokenizer) in BUILDERS.items():
        torch.manual_seed(SAVED_SEED)
        build().save_pretrained(root / name)
        if has_tokenizer:
            build_tokenizer().save_pretrained(root / name)
    return root


def test_the_spec_comes_from_the_config_and_tokenizer(checkpoints: Path) -> None:
    gpt2, t5, vit = resolve_models([f"hf:{checkpoints / name}" for name in BUILDERS])
    assert (gpt2.name, gpt2.task, t5.task, vit.task) == ("my-gpt2", "causal-lm", "seq2seq-lm", "image-classification")
    assert gpt2.inputs.vocab_size == 512 and gpt2.inputs.pad_id == 1  # the tokenizer's pad token
    assert gpt2.inputs.max_length == MAX_CONTEXT  # n_positions 128, capped at the budget
    assert gpt2.capabilities.is_causal and t5.capabilities.is_causal and not vit.capabilities.is_causal
    assert gpt2.capabilities.pretrained and gpt2.tokenizer is not None and vit.tokenizer is None
    assert not gpt2.capabilities.returns_attentions  # the library's default kernel returns no weights
    assert vit.inputs.image_size == (3, 16, 16) and vit.inputs.num_classes == 5
    assert "tied embeddings: True" in gpt2.description and "encoder-decoder" in t5.description
    assert set(PROVENANCE["my-gpt2"]["files"]) == {
        str(checkpoints / "my-gpt2" / f) for f in ("config.json", "model.safetensors")
    }


def test_hf_loads_the_saved_weights_and_hf_config_draws_new_ones(checkpoints: Path) -> None:
    folder = checkpoints / "my-gpt2"
    torch.manual_seed(SAVED_SEED)
    saved = _gpt2().state_dict()
    pretrained = checkpoint_spec(folder, pretrained=True).build_model().state_dict()
    fresh = checkpoint_spec(folder / "config.json", pretrained=False)
    assert all(torch.equal(pretrained[key], value) for key, value in saved.items())
    assert not fresh.capabilities.pretrained
    assert not torch.equal(fresh.build_model().state_dict()["transformer.wte.weight"], saved["transformer.wte.weight"])


CORE_CHECKS = {"output_shapes", "batch_independence", "gradient_flow", "eval_determinism", "save_load_roundtrip",
               "loss_oracle"}  # fmt: skip


@pytest.mark.parametrize("selector", ["hf", "hf-config"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_tier1_rows_pass(checkpoints: Path, selector: str, name: str) -> None:
    (spec,) = resolve_models([f"{selector}:{checkpoints / name}"])
    model, options = spec.build_model(), CheckOptions()
    rows = [run_check(check, spec, model, options) for check, _ in applicable_checks(spec, (1,))]
    failed = [row.message for row in rows if row.status is Status.FAILED]
    assert not failed, "\n".join(failed)
    assert all(row.got for row in rows if row.status is Status.SKIPPED)  # every skip says why
    passed = {row.check for row in rows if row.status is Status.PASSED}
    assert CORE_CHECKS <= passed, f"did not run: {sorted(CORE_CHECKS - passed)}"


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (None, "no config.json there"),
        ("{not json", "not a readable JSON config"),
        (json.dumps({"model_type": "gpt2"}), "names no architecture"),
        (json.dumps({"model_type": "gpt2", "architectures": ["GPT2DoubleHeadsModel"]}), "is not one of the harness"),
        (json.dumps({"model_type": "gpt2", "architectures": ["X"], "auto_map": {}}), "checkpoint's own code"),
    ],
)
def test_a_bad_checkpoint_is_one_clear_line(tmp_path: Path, contents: str | None, message: str) -> None:
    if contents is not None:
        (tmp_path / "config.json").write_text(contents)
    with pytest.raises(ModelSelectionError, match=message):
        resolve_models([f"hf-config:{tmp_path}"])


def test_hf_needs_weights(checkpoints: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((checkpoints / "my-vit" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no weights .* use hf-config:"):
        checkpoint_spec(tmp_path, pretrained=True)
