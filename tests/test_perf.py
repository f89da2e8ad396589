"""harness.perf measures every (mode, batch size), stops at the first out-of-memory, and gates only ratios."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from harness.cli import main
from harness.perf import PerfRow, compare_perf, load_perf, measure_perf, plot_perf, save_perf
from tests.export_defects import classifier_spec


def row(mode="inference", batch_size=4, samples_per_s=100.0, memory=10.0, out_of_memory=False) -> PerfRow:
    return PerfRow(
        mode, batch_size, 1, batch_size / samples_per_s, samples_per_s, samples_per_s, memory, "cpu", out_of_memory
    )


def test_identical_measurements_pass():
    baseline = [row(), row("train-step")]
    assert compare_perf(baseline, baseline) == []


def test_slowdown_beyond_the_limit_is_flagged_and_within_it_is_not():
    baseline = [row(samples_per_s=100.0)]
    assert compare_perf([row(samples_per_s=70.0)], baseline, max_slowdown=1.5) == []
    (violation,) = compare_perf([row(samples_per_s=50.0)], baseline, max_slowdown=1.5)
    assert violation.metric == "samples_per_s" and violation.ratio == pytest.approx(0.5)


def test_memory_growth_is_flagged_but_sub_megabyte_noise_is_not():
    (violation,) = compare_perf([row(memory=40.0)], [row(memory=10.0)], max_memory_growth=1.5)
    assert violation.metric == "peak_memory_mb" and violation.ratio == pytest.approx(4.0)
    assert compare_perf([row(memory=0.6)], [row(memory=0.1)]) == []


def test_out_of_memory_where_the_baseline_ran_is_a_regression():
    (violation,) = compare_perf([row(out_of_memory=True)], [row()])
    assert violation.ratio == 0.0


def test_limits_below_one_are_rejected():
    with pytest.raises(ValueError, match="max_slowdown=0.5"):
        compare_perf([row()], [row()], max_slowdown=0.5)


def test_perf_measures_inference_and_training_at_each_batch_size():
    spec = classifier_spec()
    rows = measure_perf(spec, spec.build_model(), batch_sizes=(1, 4), repeats=2)
    assert [(r.mode, r.batch_size) for r in rows] == [
        ("inference", 1),
        ("inference", 4),
        ("train-step", 1),
        ("train-step", 4),
    ]
    for measured in rows:
        assert measured.seconds > 0 and measured.samples_per_s == pytest.approx(measured.batch_size / measured.seconds)
        assert not measured.out_of_memory


class RunsOutOfMemoryAtEight(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = classifier_spec().build()

    def forward(self, pixel_values, labels=None):
        if pixel_values.shape[0] >= 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(pixel_values, labels)


def test_measuring_stops_at_the_first_out_of_memory_and_records_it():
    spec = classifier_spec().replace(build=RunsOutOfMemoryAtEight)
    rows = measure_perf(spec, spec.build_model(), batch_sizes=(2, 8, 16), repeats=1)
    inference = [r for r in rows if r.mode == "inference"]
    assert [(r.batch_size, r.out_of_memory) for r in inference] == [(2, False), (8, True)]


def test_other_errors_are_not_mistaken_for_out_of_memory():
    class Broken(torch.nn.Module):
        def forward(self, pixel_values, labels=None):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    spec = classifier_spec().replace(
        build=Broken, capabilities=dataclasses.replace(classifier_spec().capabilities, supports_training=False)
    )
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        measure_perf(spec, spec.build_model(), batch_sizes=(1,))


def test_saved_measurements_round_trip_and_a_corrupt_file_is_a_clear_error(tmp_path):
    rows = [row(), row("train-step", 8)]
    save_perf(rows, tmp_path / "p.json", model="m")
    assert load_perf(tmp_path / "p.json") == rows
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not a harness profile"):
        load_perf(tmp_path / "bad.json")


def test_plot_is_written(tmp_path):
    path = plot_perf([row(batch_size=1), row(batch_size=4), row("train-step", 1)], tmp_path / "perf.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_perf_gates_against_a_baseline(tmp_path, capsys):
    impossible = [row(batch_size=1, samples_per_s=1e12), row("train-step", 1, samples_per_s=1e12)]
    save_perf(impossible, tmp_path / "baseline.json", model="cnn-digits")
    status = main(
        [
            "perf",
            "--model",
            "cnn-digits",
            "--batch-sizes",
            "1",
            "--baseline",
            str(tmp_path / "baseline.json"),
            "--json",
        ]
    )
    assert status == 1
    report = json.loads(capsys.readouterr().out)
    assert {v["metric"] for v in report["violations"]} == {"samples_per_s"}
    assert main(["perf", "--model", "cnn-digits", "--batch-sizes", "1", "--save", str(tmp_path / "now.json")]) == 0
    assert load_perf(tmp_path / "now.json")


def test_cli_perf_rejects_bad_batch_sizes():
    assert main(["perf", "--model", "cnn-digits", "--batch-sizes", "1,zero"]) == 2
