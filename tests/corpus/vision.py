"""Vision architectures of ``transformers``, from tiny configs: vision transformers and convnets.

Each takes 3 x 32 x 32 images (``pixel_values``) and has 10 classes; sizes are tiny so the corpus runs on two cores.
"""

from __future__ import annotations

from typing import Any

from harness.spec import Capabilities, InputSpace, ModelSpec
from tests.corpus.text import _build

IMAGE = (3, 32, 32)  # (channels, height, width) of every vision model's input
CLASSES = 10
PATCHES = {"image_size": 32, "patch_size": 8, "num_channels": 3, "num_labels": CLASSES}  # vision transformers
TRANSFORMER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
STAGES = {"num_channels": 3, "num_labels": CLASSES, "hidden_sizes": [8, 16], "depths": [1, 1]}  # convnets


def _vision(name: str, model: str, config: str, *, attentions: bool, **settings: Any) -> ModelSpec:
    return ModelSpec(
        name=f"corpus-{name}",
        task="image-classification",
        build=_build(model, config, **settings),
        inputs=InputSpace(image_size=IMAGE, num_classes=CLASSES, max_batch_size=4),
        capabilities=Capabilities(returns_attentions=attentions),
        description=f"transformers {name} from a tiny config (random init)",
    )


VISION_SPECS: tuple[ModelSpec, ...] = (
    _vision("vit", "ViTForImageClassification", "ViTConfig", attentions=True, **PATCHES, **TRANSFORMER),
    _vision("deit", "DeiTForImageClassification", "DeiTConfig", attentions=True, **PATCHES, **TRANSFORMER),
    _vision(
        "swin",
        "SwinForImageClassification",
        "SwinConfig",
        attentions=True,
        image_size=32,
        patch_size=4,
        num_channels=3,
        num_labels=CLASSES,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 4],
        window_size=4,
    ),  # fmt: skip
    _vision(
        "convnext",
        "ConvNextForImageClassification",
        "ConvNextConfig",
        attentions=False,
        **STAGES,
        num_stages=2,
        patch_size=4,
    ),  # fmt: skip
    _vision(
        "resnet",
        "ResNetForImageClassification",
        "ResNetConfig",
        attentions=False,
        **STAGES,
        embedding_size=8,
        layer_type="basic",
    ),  # fmt: skip
)
