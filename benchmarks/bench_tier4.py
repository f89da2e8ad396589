"""Export and parity time per model, and latency ratios of the exported backends to eager.

    python benchmarks/bench_tier4.py [--model NAME ...]

One process, every exportable zoo model (or the ones named): for each, the seconds each export took
(ONNX, TorchScript trace, int8), the seconds each Tier 4 check took, and the p50/p95 latency of
TorchScript and onnxruntime as ratios to eager, measured interleaved by ``check_latency_ratios``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

from harness.checks import CHECKS, CheckOptions, applicable_checks, run_check
from harness.export import exports_for
from harness.loading import resolve_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="zoo model (default: every exportable one)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        options = CheckOptions(artifacts_dir=folder)
        for spec in resolve_models(args.model):
            if not spec.capabilities.exportable:
                continue
            started = time.perf_counter()
            model = spec.build_model()
            results = {check.name: run_check(check, spec, model, options) for check, _ in applicable_checks(spec, (4,))}
            exports = exports_for(spec, model, folder)
            latency = results["latency_ratios"].details
            rows.append(
                {
                    "model": spec.name,
                    "onnx exporter": exports.records["onnx"].exporter if "onnx" in exports.records else "failed",
                    **{f"export {fmt} s": record.seconds for fmt, record in exports.records.items()},
                    **{f"{name} s": result.details.get("duration_s", 0.0) for name, result in results.items()},
                    "ts/eager p50": latency.get("p50_ratio", {}).get("torchscript"),
                    "ort/eager p50": latency.get("p50_ratio", {}).get("onnxruntime"),
                    "ort/eager p95": latency.get("p95_ratio", {}).get("onnxruntime"),
                    "failed": ",".join(n for n, r in results.items() if r.status.value == "failed") or "-",
                    "total s": time.perf_counter() - started,
                }
            )
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(_cell(row.get(column)) for column in columns))
    print(f"checks: {', '.join(name for name, check in CHECKS.items() if check.tier == 4)}")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


if __name__ == "__main__":
    main()
