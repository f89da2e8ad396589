"""Headroom of the int8 checks: every zoo model and the clean Tier 4 test models, measured value vs threshold.

    python benchmarks/bench_int8_headroom.py
    PYTHONPATH=/path/to/onnxruntime-1.31.1 python benchmarks/bench_int8_headroom.py   # another onnxruntime

Prints one row per (model, check): the status, the measured value, the threshold and their ratio (for
``onnx_int8_parity`` the excess over what int8 explains, for ``onnx_int8_accuracy`` the lower bound of the
accuracy drop, or the lowest cosine for embeddings), under the ``ci`` Hypothesis profile.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    sys.path.insert(0, str(REPO))
    import onnxruntime
    import torch
    from hypothesis import settings

    import harness.strategies  # noqa: F401  (registers the Hypothesis profiles)
    from harness.checks import CHECKS, CheckOptions, run_check
    from harness.loading import zoo_names, zoo_spec
    from tests.export_defects import causal_lm_spec, classifier_spec

    settings.load_profile("ci")
    torch.set_num_threads(1)
    specs = [causal_lm_spec(), classifier_spec(), classifier_spec("int8_outliers")]
    specs += [zoo_spec(name) for name in zoo_names()]
    options = CheckOptions(artifacts_dir=tempfile.mkdtemp(prefix="int8-headroom-"))
    print(f"onnxruntime {onnxruntime.__version__}")
    print(f"{'model':<30} {'check':<20} {'status':<9} {'measured':>10} {'threshold':>10}")
    for spec in specs:
        for name in ("onnx_int8_parity", "onnx_int8_accuracy"):
            result = run_check(CHECKS[name], spec, spec.build_model(), options)
            measured = "-" if result.measured is None else f"{result.measured:.4g}"
            threshold = "-" if result.threshold is None else f"{result.threshold:g}"
            print(f"{spec.name:<30} {name:<20} {result.status.value:<9} {measured:>10} {threshold:>10}")


if __name__ == "__main__":
    main()
