"""A new task is one adapter: register a toy multi-label task from here and Tiers 1, 2 and 4 run on it.

Nothing in ``harness/`` knows the task ``multi-label``: the adapter below says what its batches, outputs,
loss and export agreement are, :func:`harness.adapters.register_adapter` makes ``ModelSpec(task=...)``
accept it, and the checks ask the adapter.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import harness
from harness.adapters import ADAPTERS, adapter_for, register_adapter
from harness.adapters.base import Batch
from harness.adapters.sequence import SequenceAdapter
from harness.checks import CHECKS, CheckOptions, run_check
from harness.result import Status
from harness.spec import TASKS, Capabilities, InputSpace, ModelSpec, SpecError

TASK = "multi-label"
LABELS = 3  # independent yes/no labels per text


class MultiLabelAdapter(SequenceAdapter):
    """Texts in, one logit per label out (B, K); labels (B, K) in {0, 1}; the loss is the mean binary
    cross-entropy over labels that are not ``ignore_index``."""

    task = TASK
    required_inputs = ("vocab_size", "max_length", "num_classes")
    per_token_outputs = False  # pooled: one row of logits per text

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 2, (input_ids.shape[0], spec.inputs.num_classes), generator=generator).float()

    def label_padding(self, spec: ModelSpec) -> None:
        return None  # labels (B, K) have no length dimension

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        labels = batch["labels"].double()  # (B, K)
        keep = labels != spec.inputs.ignore_index
        x = logits.double()
        per_label = torch.clamp(x, min=0) - x * labels + torch.log1p(torch.exp(-x.abs()))  # stable BCE with logits
        return per_label[keep].sum() / keep.sum()

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        return (batch["input_ids"].shape[0], spec.inputs.num_classes)

    def agreement(self, reference: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
        """Each label's yes/no decision (logit > 0) is the same."""
        return ((reference > 0) == (got > 0)).double().flatten()


class ToyMultiLabel(nn.Module):
    """Embedding -> masked mean over tokens -> tanh layer -> one logit per label; ``batch_stats`` plants a
    defect (the pooled features are normalised over the batch, so one row changes the others)."""

    def __init__(self, vocab_size: int = 20, labels: int = LABELS, dim: int = 16, batch_stats: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.hidden = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, labels)
        self.batch_stats = batch_stats

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, input_ids, attention_mask=None, labels=None):
        embeds = self.embed(input_ids)  # (B, T, H)
        mask = torch.ones(embeds.shape[:2]) if attention_mask is None else attention_mask.to(embeds.dtype)  # (B, T)
        pooled = (embeds * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # (B, H)
        if self.batch_stats:
            pooled = pooled - pooled.mean(0, keepdim=True)
        logits = self.head(torch.tanh(self.hidden(pooled)))  # (B, K)
        output = {"logits": logits}
        if labels is not None:
            keep = labels != -100
            output["loss"] = F.binary_cross_entropy_with_logits(logits[keep], labels[keep].to(logits.dtype))
        return output


def _spec(name: str = "toy-multi-label", **model: bool) -> ModelSpec:
    return ModelSpec(
        name=name,
        task=TASK,
        build=lambda: ToyMultiLabel(**model),
        inputs=InputSpace(vocab_size=20, max_length=12, num_classes=LABELS, max_batch_size=4),
        capabilities=Capabilities(has_attention_mask=True),
        description="a toy multi-label text classifier, known to no module of the harness",
    )


@pytest.fixture(scope="module")
def registered():
    """The task registered for this module's tests, and removed again after them."""
    adapter = register_adapter(MultiLabelAdapter())
    yield adapter
    ADAPTERS.pop(TASK)
    TASKS.pop(TASK)


def test_an_unregistered_task_is_refused():
    if TASK in TASKS:
        pytest.skip("registered by a module fixture in this process")
    with pytest.raises(SpecError, match="'multi-label'"):
        _spec()


def test_registration_makes_the_task_a_spec_task(registered):
    spec = _spec()
    assert adapter_for(spec) is registered
    assert TASKS[TASK] == ("vocab_size", "max_length", "num_classes")
    with pytest.raises(SpecError, match="InputSpace.num_classes"):
        ModelSpec(name="no-classes", task=TASK, build=ToyMultiLabel, inputs=InputSpace(vocab_size=20, max_length=12))
    with pytest.raises(ValueError, match="already has an adapter"):
        register_adapter(MultiLabelAdapter())


@pytest.mark.parametrize("tier", [1, 2, 4])
def test_tiers_1_2_and_4_run_on_the_new_task(tier, registered, tmp_path):
    results = harness.check_model(_spec(), tiers=(tier,), options=CheckOptions(artifacts_dir=str(tmp_path)))
    ran = [result for result in results if result.status is not Status.SKIPPED]
    assert ran, [result.message for result in results]
    assert all(result.status in (Status.PASSED, Status.WARNED) for result in ran), [
        result.message for result in ran if result.status not in (Status.PASSED, Status.WARNED)
    ]


def test_a_planted_defect_in_the_new_task_is_flagged(registered):
    spec = _spec("toy-multi-label-batch-stats", batch_stats=True)
    result = run_check(CHECKS["batch_independence"], spec, spec.build_model(), CheckOptions())
    assert result.status is Status.FAILED, result.message


def test_builtin_tasks_in_the_spec_table_match_their_adapters():
    """harness.spec.TASKS copies the built-in adapters' required inputs (so it imports without torch)."""
    for task in [task for task in ADAPTERS if task != TASK]:
        assert adapter_for(SimpleNamespace(task=task)).required_inputs == TASKS[task], task
