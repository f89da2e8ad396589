"""HarnessModule: a LightningModule around any ModelSpec, its adapter and its training recipe.

The loss, optimizer and scheduler are the recipe's (the user's where the spec names them, see
:mod:`harness.training.recipe`). Every optimizer step appends a row to ``history``: step, train loss,
global gradient norm (before clipping) and the first param group's learning rate.
"""

from __future__ import annotations

from typing import Any

import lightning
import torch

from harness.adapters import adapter_for
from harness.adapters.base import Batch, batch_size_of
from harness.spec import ModelSpec
from harness.training.config import TrainingConfig
from harness.training.recipe import resolve
from harness.training.schedulers import PlateauAdaptiveLR


def gradient_norm(model: torch.nn.Module) -> float:
    """The global L2 norm of every parameter's gradient (parameters without one count as zero)."""
    norms = [p.grad.detach().double().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


class HarnessModule(lightning.LightningModule):
    """Trains ``spec``'s model with its recipe; ``deterministic`` runs training steps in eval mode."""

    def __init__(
        self,
        spec: ModelSpec,
        config: TrainingConfig,
        *,
        model: torch.nn.Module | None = None,
        deterministic: bool = False,
        capture_gradients: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.config = config
        self.model = (model if model is not None else spec.build_model(seed=config.seed)).train()
        self.recipe = resolve(spec)
        self.deterministic = deterministic  # no dropout and running norm statistics: runs comparable bitwise
        self.capture_gradients = capture_gradients  # keep each optimizer step's gradients in `gradients`
        self.gradients: list[dict[str, torch.Tensor]] = []
        self.history: list[dict[str, float]] = []
        self._step_losses: list[float] = []
        self._window_scored = 0  # labels scored by the micro-batches of the current accumulation window

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        self.model.train(not self.deterministic)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.recipe.loss(self.model, batch)
        self._step_losses.append(float(loss.detach()))
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=batch_size_of(batch))
        if not self._token_weighted:
            return loss
        scored = adapter_for(self.spec).scored_labels(self.spec, batch)
        self._window_scored += scored
        return loss * scored  # summed over the window, then divided by the window's labels before the step

    @property
    def _token_weighted(self) -> bool:
        """Accumulated micro-batches of the harness's own loss are weighted by their scored labels.

        The model's loss is a mean over one micro-batch; Lightning divides each by k, which weighs a micro-batch
        of 2 labels like one of 200 (transformers PR #34191). The user's own loss piece is never rescaled: the
        gradient_accumulation check holds it to the same rule instead.
        """
        return self.config.gradient_accumulation > 1 and self.recipe.sources["loss"] == "harness"

    def validation_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.recipe.loss(self.model, batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=batch_size_of(batch), sync_dist=True)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # called once per optimizer step, after the last accumulated backward and before clipping
        if self._token_weighted:  # gradients hold sum(n_i * grad L_i) / k: make it sum(n_i * grad L_i) / sum(n_i)
            scale = self.trainer.accumulate_grad_batches / max(self._window_scored, 1)
            for parameter in self.model.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_(scale)
            self._window_scored = 0
        if self.capture_gradients:
            self.gradients.append(
                {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}
            )
        losses, self._step_losses = self._step_losses, []
        self.history.append(
            {
                "step": self.global_step + 1,
                "train_loss": sum(losses) / max(len(losses), 1),
                "grad_norm": gradient_norm(self.model),
                "lr": float(optimizer.param_groups[0]["lr"]),
            }
        )

    def configure_optimizers(self) -> Any:
        optimizer, scheduler = self.recipe.optimizers(self.model, self.config)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if isinstance(scheduler, PlateauAdaptiveLR) and self.history:
            scheduler.step(self.history[-1]["train_loss"])  # the plateau schedule records the training loss
        else:
            scheduler.step()
