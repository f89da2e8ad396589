"""The ``harness`` console script (harness/cli.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.cli import CliError, build_parser, main, pytest_arguments
from harness.config import ConfigError, parse_tiers
from harness.loading import zoo_names

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "tiers"),
    [
        (None, (1, 2, 3, 4, 5)),
        ("1", (1,)),
        ("5", (5,)),
        ("1-3", (1, 2, 3)),
        ("1,4", (1, 4)),
        ("4,1", (1, 4)),
        ("3,1-2", (1, 2, 3)),
        ("1-2,2-3", (1, 2, 3)),
        (" 2 , 4 ", (2, 4)),
        ("1-5", (1, 2, 3, 4, 5)),
        ("2-2", (2,)),
    ],
)
def test_parse_tiers(text, tiers):
    assert parse_tiers(text) == tiers


@pytest.mark.parametrize("text", ["9", "0", "6", "3-1", "0-2", "1-6", "a", "1-x", "", "1,,2", "1.5", "-1"])
def test_parse_tiers_names_the_bad_value(text):
    with pytest.raises(ConfigError) as error:
        parse_tiers(text)
    assert str(error.value) == f"--tier must be tier numbers 1-5 like 1, 1-3 or 1,4; got {text!r}"


def test_the_hypothesis_profiles_offered_are_the_ones_registered():
    from harness.config import HYPOTHESIS_PROFILES
    from harness.strategies import HYPOTHESIS_PROFILES as REGISTERED

    assert set(HYPOTHESIS_PROFILES) == set(REGISTERED)


def test_a_bad_tier_exits_with_status_2_and_says_why(capsys):
    assert main(["run", "--tier", "9"]) == 2
    err = capsys.readouterr().err
    assert "harness run: error: --tier must be tier numbers 1-5" in err
    assert "got '9'" in err


@pytest.mark.parametrize(
    "argv",
    [[], ["fly"], ["run", "--hypothesis-profile", "fast"], ["run", "--seed", "x"]],
    ids=["no-command", "unknown-command", "unknown-profile", "non-integer-seed"],
)
def test_argparse_errors_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(r"^harness( run)?: error: ", capsys.readouterr().err, re.MULTILINE)


def _arguments(*argv: str) -> list[str]:
    return pytest_arguments(build_parser().parse_args(["run", *argv]))


def _option(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, item in enumerate(command) if item == flag]


def test_pytest_arguments_hold_junit_under_report_dir_run_id_and_the_models(tmp_path):
    command = _arguments(
        "--tier",
        "1",
        "--model",
        "cnn-digits",
        "--model",
        "pkg.mod:SPEC",
        "--report-dir",
        str(tmp_path),
        "--run-id",
        "R1",
        "--seed",
        "5",
    )
    assert command[0] == str(cli.suites_dir() / "tier1")
    assert Path(command[0]).is_dir()
    assert _option(command, "--junitxml") == [str(tmp_path / "R1" / "junit.xml")]
    assert _option(command, "--harness-run-id") == ["R1"]
    assert _option(command, "--harness-report-dir") == [str(tmp_path)]
    assert _option(command, "--harness-seed") == ["5"]
    assert _option(command, "--hypothesis-profile") == ["ci"]
    assert _option(command, "--harness-model") == ["cnn-digits", "pkg.mod:SPEC"]  # prefixed: see test_guest
    assert _option(command, "-p") == ["no:cacheprovider"]
    assert "-n" not in command  # serial unless --workers is given


def test_pytest_arguments_workers_and_extra_pytest_arguments(tmp_path):
    command = _arguments(
        "--tier", "1", "--workers", "2", "--report-dir", str(tmp_path), "--run-id", "R2", "--", "-k", "causality", "-x"
    )
    assert _option(command, "-n") == ["2"]
    assert command[-3:] == ["-k", "causality", "-x"]
    assert _option(command, "--harness-model") == []  # no --model: the plugin's default, the whole zoo


def test_pytest_arguments_default_run_id_is_fresh_and_names_the_folder(tmp_path):
    first = _arguments("--tier", "1", "--report-dir", str(tmp_path))
    second = _arguments("--tier", "1", "--report-dir", str(tmp_path))
    (run_id,) = _option(first, "--harness-run-id")
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", run_id)
    assert _option(first, "--junitxml") == [str(tmp_path / run_id / "junit.xml")]
    assert _option(second, "--harness-run-id") != [run_id]


def test_pytest_arguments_keep_only_the_tiers_present(tmp_path, monkeypatch):
    suites = tmp_path / "suites"
    for name in ("tier1", "tier3"):
        (suites / name).mkdir(parents=True)
    monkeypatch.setattr(cli, "suites_dir", lambda: suites)
    command = _arguments("--tier", "1-4", "--report-dir", str(tmp_path), "--run-id", "R")
    assert command[:2] == [str(suites / "tier1"), str(suites / "tier3")]
    assert str(suites / "tier2") not in command
    everything = _arguments("--report-dir", str(tmp_path), "--run-id", "R")
    assert everything[:2] == [str(suites / "tier1"), str(suites / "tier3")]
    with pytest.raises(CliError, match="no suite for tier 2; present: tier1, tier3"):
        _arguments("--tier", "2", "--report-dir", str(tmp_path), "--run-id", "R")


def test_a_missing_tier_suite_is_a_cli_error_with_status_2(tmp_path, monkeypatch, capsys):
    suites = tmp_path / "suites"
    (suites / "tier1").mkdir(parents=True)
    monkeypatch.setattr(cli, "suites_dir", lambda: suites)
    assert main(["run", "--tier", "4", "--report-dir", str(tmp_path)]) == 2
    assert "no suite for tier 4; present: tier1" in capsys.readouterr().err
    assert not any(tmp_path.glob("*/junit.xml"))


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = {line.split()[0]: line for line in lines if line and not line[0].isspace()}
    assert sorted(names) == zoo_names()
    assert {"cnn-digits", "gpt2-tiny"} <= set(names)
    assert names["gpt2-tiny"].split()[1] == "causal-lm"
    assert "is_causal" in names["gpt2-tiny"] and "has_attention_mask" in names["gpt2-tiny"]
    assert names["cnn-digits"].split()[1] == "image-classification"
    assert "is_causal" not in names["cnn-digits"]


def _subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"  # tiny models on a shared 2-core runner: threads only add contention
    return env


def _harness(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *argv],
        cwd=cwd,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_harness_run_writes_report_and_junit_under_report_dir_run_id(tmp_path):
    reports = tmp_path / "out"
    done = _harness(
        "run", "--tier", "1", "--model", "cnn-digits", "--report-dir", str(reports), "--run-id", "X", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("harness: pytest ")
    assert sorted(p.name for p in (reports / "X").iterdir()) == ["junit.xml", "report.html", "report.json"]
    report = json.loads((reports / "X" / "report.json").read_text())
    assert report["run_id"] == "X"
    assert report["environment"]["hypothesis_profile"] == "ci"
    assert {row["model"] for row in report["rows"]} == {"cnn-digits"}
    assert report["summary"]["failed"] == report["summary"]["error"] == 0
    assert report["summary"]["passed"] > 0
    assert not (tmp_path / "reports").exists() and not (tmp_path / ".pytest_cache").exists()


def test_harness_run_passes_pytest_usage_errors_through(tmp_path):
    done = _harness("run", "--tier", "1", "--model", "nope", "--report-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 4
    assert "unknown model 'nope'" in done.stderr
    assert not (tmp_path / "out").exists()


# Run configs (harness run --config FILE): our shape, the notebook-style shape, and clear errors.


def _config(tmp_path, data, suffix=".json"):
    path = tmp_path / f"run{suffix}"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_a_json_config_becomes_the_pytest_command(tmp_path):
    config = {"tiers": "1,4", "models": ["cnn-digits"], "workers": 2, "seed": 7, "report_dir": str(tmp_path),
              "run_id": "cfg", "export": {"formats": ["onnx"], "quantization": "none"}}  # fmt: skip
    command = _arguments("--config", _config(tmp_path, config))
    assert command[command.index("--harness-model") + 1] == "cnn-digits"
    assert command[command.index("--harness-seed") + 1] == "7"
    assert command[command.index("-n") + 1] == "2"
    assert command[command.index("--junitxml") + 1] == str(tmp_path / "cfg" / "junit.xml")
    deselect = command[command.index("-k") + 1]
    assert "torchscript_parity" in deselect and "onnx_int8_parity" in deselect and "onnx_parity " not in deselect


def test_command_line_flags_override_the_config(tmp_path):
    command = _arguments(
        "--config", _config(tmp_path, {"seed": 7, "models": ["gpt2-tiny"]}), "--seed", "3", "--model", "cnn-digits"
    )
    assert command[command.index("--harness-seed") + 1] == "3"
    assert command.count("--harness-model") == 1 and "cnn-digits" in command


def test_a_toml_config_is_read(tmp_path):
    command = _arguments("--config", _config(tmp_path, 'tiers = "1"\nmodels = ["cnn-digits"]\n', ".toml"))
    assert any(part.endswith("tier1") for part in command) and "cnn-digits" in command


RUN_SETTINGS = {"tiers": "1", "models": ["cnn-digits"], "workers": 2, "seed": 7, "report_dir": "elsewhere",
                "run_id": "other", "hypothesis_profile": "nightly", "trust_model_code": True,
                "export": {"formats": ["onnx"]}, "db_path": "x.db", "pytest_args": ["-x"]}  # fmt: skip


def test_every_run_config_field_changes_the_pytest_command(tmp_path):
    """Nothing advertised that does nothing: a RunConfig field that no run reads fails here."""
    import dataclasses

    from harness.config import RunConfig

    assert set(RUN_SETTINGS) == {field.name for field in dataclasses.fields(RunConfig)}
    plain = _arguments("--config", _config(tmp_path, {"run_id": "fixed"}))
    for key, value in RUN_SETTINGS.items():
        changed = _arguments("--config", _config(tmp_path, {"run_id": "fixed", key: value}))
        assert changed != plain, f"{key}={value!r} left the pytest command as it was"


@pytest.mark.parametrize("tier", [4, "4"])
def test_the_notebook_shape_maps_onto_ours_with_int_or_string_tier(tmp_path, tier):
    legacy = {"task_name": "gpt2-tiny", "tier": tier, "export": {"formats": ["onnx", "torchscript"], "quantization": "int8",
              "export_dir": str(tmp_path / "exp")}, "db_path": "x.db"}  # fmt: skip
    from harness.config import load_run_config

    config = load_run_config(_config(tmp_path, legacy))
    assert config.tiers == "4" and config.models == ("gpt2-tiny",) and config.db_path == "x.db"
    command = _arguments("--config", _config(tmp_path, legacy))
    assert command[command.index("--harness-artifacts-dir") + 1] == str(tmp_path / "exp")
    assert any(part.endswith("tier4") for part in command) and "-k" not in command


@pytest.mark.parametrize(
    "data, named",
    [
        ({"tierz": 1}, "unknown key 'tierz'; allowed keys: tiers"),
        ({"tiers": "0-9"}, "'tiers' must name tiers 1-5"),
        ({"tier": 1, "tiers": 1}, "either 'tier' or 'tiers'"),
        ({"workers": -1}, "'workers' must be an integer >= 0 or 'auto'"),
        ({"export": {"formats": ["pdf"]}}, "'export.formats' must be a non-empty subset of torchscript, onnx"),
        ({"export": {"quantisation": "int8"}}, "unknown key 'export.quantisation'; allowed: formats, quantization"),
        ({"eval": {"dataset": "v.txt"}}, "'eval' is not a setting of a run of the tiers: the eval set of the regr"),
        ({"baseline_run_id": "r1"}, "'baseline_run_id' is not a setting of a run of the tiers: the regression gate"),
        ({"reference_profile_id": "p1"}, "'reference_profile_id' is not a setting of a run of the tiers: the drift"),
        ({"hypothesis_profile": "fast"}, "'hypothesis_profile' must be one of dev, ci, nightly"),
        ([1, 2], "must be an object/table"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_configs_are_one_clear_line_and_exit_2(tmp_path, capsys, data, named):
    assert main(["run", "--config", _config(tmp_path, data)]) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert named in error and "Traceback" not in error


def test_a_missing_config_file_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "nope.json")]) == 2
    assert f"config file {tmp_path / 'nope.json'} does not exist" in capsys.readouterr().err


def test_harness_bundle_writes_a_verified_zip_and_never_overwrites(tmp_path, capsys):
    from harness.store import ExperimentDB, read_bundle

    with ExperimentDB(tmp_path / "runs.db") as db:
        run_id = db.start_run(name="r", config={"lr": 0.1}, model="cnn-digits")
        db.log_metrics(run_id, 0, {"loss": 2.0})
        db.finish_run(run_id, summary={"loss": 2.0})
    out = tmp_path / "bundle.zip"
    assert main(["bundle", run_id, "--db", str(tmp_path / "runs.db"), "--out", str(out)]) == 0
    assert read_bundle(out).config == {"lr": 0.1}
    before = out.read_bytes()
    for argv, named in (
        (["bundle", run_id, "--db", str(tmp_path / "runs.db"), "--out", str(out)], "already exists"),
        (["bundle", "nope", "--db", str(tmp_path / "runs.db"), "--out", str(tmp_path / "x.zip")], "unknown run 'nope'"),
        (["bundle", run_id, "--db", str(tmp_path / "missing.db")], "no ExperimentDB at"),
    ):
        assert main(argv) == 2
        assert named in capsys.readouterr().err
    assert out.read_bytes() == before
