"""Plain PyTorch classifiers from ``timm`` and ``torchvision``: ``forward(x)`` returns the logits tensor.

Each spec says only the task and the input space (the README's three lines). Where the library cannot be imported
(it is an optional extra; PyPI's torchvision must match the installed torch's build), the spec's build raises
:class:`harness.spec.MissingExtraError` and its checks skip, naming the extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from harness.spec import InputSpace, MissingExtraError, ModelSpec

IMAGE = (3, 32, 32)
CLASSES = 10


def library(name: str) -> Any:
    """``import name``, or MissingExtraError saying why it cannot be used (any import failure counts)."""
    try:
        return importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - a torchvision built for another torch raises RuntimeError
        raise MissingExtraError(
            f"{name} cannot be imported ({type(error).__name__}: {str(error)[:120]}); install the 'corpus' extra "
            f"with a {name} build that matches the installed torch"
        ) from None


def _torchvision_resnet18() -> Any:
    return library("torchvision").models.resnet18(num_classes=CLASSES)


def _timm(name: str, **settings: Any) -> Callable[[], Any]:
    def build() -> Any:
        return library("timm").create_model(name, pretrained=False, num_classes=CLASSES, **settings)

    return build


def _plain(name: str, build: Callable[[], Any]) -> ModelSpec:
    return ModelSpec(f"corpus-{name}", "image-classification", build,
                     InputSpace(image_size=IMAGE, num_classes=CLASSES, max_batch_size=4))  # fmt: skip


PLAIN_SPECS: tuple[ModelSpec, ...] = (
    _plain("torchvision-resnet18", _torchvision_resnet18),
    _plain("timm-resnet10t", _timm("resnet10t")),
    _plain("timm-vit-tiny", _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)),
)
