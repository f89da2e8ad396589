"""A correctness corpus: real third-party architectures, each described by a ``ModelSpec`` as a user writes one.

Every model is built from a tiny config with random weights and no download. The specs are what the README's
"Bring your own model" section tells a user to write: the task, the input space, the claims, and nothing about
the harness's internals (no attention kernel chosen for the harness, no constant or frozen patterns beyond what
the architecture documents). A check that fails one of these correct models has a wrong rule, unless the
failure is shown to be a real defect of the architecture (then it is a declared expected failure with the
evidence). :data:`CORPUS` lists them all; :mod:`tests.test_corpus` runs every check on them.
"""

from __future__ import annotations

from harness.spec import ModelSpec
from tests.corpus.plain import PLAIN_SPECS
from tests.corpus.text import TEXT_SPECS
from tests.corpus.vision import VISION_SPECS

CORPUS: tuple[ModelSpec, ...] = (*TEXT_SPECS, *VISION_SPECS, *PLAIN_SPECS)
"""Every corpus architecture, text first."""

__all__ = ["CORPUS"]
