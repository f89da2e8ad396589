"""cnn-digits: a small CNN for scikit-learn's 8x8 handwritten digits (``load_digits``).

Follows the Hugging Face image-classification convention: ``forward(pixel_values, labels=None)``
returns ``logits`` of shape (batch, 10) and, given labels, the mean cross-entropy ``loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.data import digit_examples
from harness.spec import InputSpace, ModelSpec

IMAGE_SIZE = (1, 8, 8)  # channels, height, width of load_digits images
NUM_CLASSES = 10


class DigitsCNN(nn.Module):
    """conv(1->16) -> BN -> ReLU -> conv(16->32) -> BN -> ReLU -> maxpool(2) -> linear(512->10)."""

    def __init__(self, channels: int = 16, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(2 * channels * 4 * 4, num_classes)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        hidden = self.features(pixel_values)  # (B, 2C, 4, 4)
        logits = self.classifier(hidden.flatten(1))  # (B, K)
        output = {"logits": logits}
        if labels is not None:
            output["loss"] = F.cross_entropy(logits, labels)
        return output


SPEC = ModelSpec(
    name="cnn-digits",
    task="image-classification",
    build=DigitsCNN,
    inputs=InputSpace(image_size=IMAGE_SIZE, num_classes=NUM_CLASSES),
    real_data=digit_examples,  # load_digits: the images this model is for
    description="two-layer CNN with batch norm for sklearn's 8x8 digits",
)
