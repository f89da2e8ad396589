"""Headroom of the intervention (Tier 2) and metric oracle (Tier 5) checks: the clean examples over seeds 0-4,
worst measured value vs threshold, and the planted defects' values beside them.

    python benchmarks/bench_intervention_headroom.py

Clean: the zoo's gpt2-tiny-lora (PEFT LoRA, the harness's own metrics) and cnn-digits-film (FiLM hooks), and the
clean user metrics of tests/metric_defects.py on a tiny causal LM. For ``intervention_effect`` and
``intervention_gradient`` the measured value must stay above the threshold (the least target move, the least
gradient norm), for every other check below it.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEEDS = range(5)
ABOVE = ("intervention_effect", "intervention_gradient")  # checks whose measured value must exceed the threshold


def main() -> None:
    sys.path.insert(0, str(REPO))
    import torch

    from harness.checks import CHECKS, CheckOptions, run_check
    from harness_zoo import load_zoo_spec
    from tests.defect_models import causal_spec
    from tests.intervention_defects import DEFECTS as INTERVENTION_DEFECTS
    from tests.metric_defects import CLEAN
    from tests.metric_defects import DEFECTS as METRIC_DEFECTS

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    lm = causal_spec()
    interventions = [n for n in CHECKS if n.startswith("intervention_")]
    metrics = [n for n in CHECKS if n.startswith("metric_")]
    clean = [(load_zoo_spec("gpt2-tiny-lora"), interventions + metrics), (load_zoo_spec("cnn-digits-film"), interventions),
             (lm.replace(name="lm-clean-user-metrics", metrics=CLEAN), metrics)]  # fmt: skip
    print(f"{'model':<28} {'check':<26} {'worst of seeds 0-4':>20} {'threshold':>10} {'statuses'}")
    for spec, names in clean:
        model = spec.build_model()
        for name in names:
            results = [run_check(CHECKS[name], spec, model, CheckOptions(seed=seed)) for seed in SEEDS]
            values = [r.measured for r in results]
            worst = min(values) if name in ABOVE else max(values)
            statuses = sorted({r.status.value for r in results})
            print(f"{spec.name:<28} {name:<26} {worst:>20.4g} {results[0].threshold:>10g} {','.join(statuses)}")
    print(f"\n{'planted defect':<36} {'check':<26} {'measured':>12} {'threshold':>10} status")
    defects = [(name, spec, check) for name, (spec, check, _) in INTERVENTION_DEFECTS.items()]
    defects += [
        (name, lm.replace(name=f"lm-{name}", metrics=m), check) for name, (m, check, _) in METRIC_DEFECTS.items()
    ]
    for name, spec, check in defects:
        result = run_check(CHECKS[check], spec, spec.build_model(), CheckOptions())
        print(f"{name:<36} {check:<26} {result.measured:>12.4g} {result.threshold:>10g} {result.status.value}")


if __name__ == "__main__":
    main()
