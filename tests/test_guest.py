"""The installed harness is a guest in other projects' pytest runs, and owns the names it installs.

Each test builds a small project of someone else's in ``tmp_path`` and runs pytest on it in a fresh process,
with ml-harness installed as the README installs it (the plugin loads through its ``pytest11`` entry point):

- a project with its own ``--model`` option and Hypothesis tests runs exactly as it would without the harness:
  Hypothesis's defaults (100 examples), none of the harness's environment variables, no harness imports;
- a project with its own ``models`` package selects ``models.mine:build`` beside a zoo model in one run of the
  harness's suites (the zoo folder ``models/`` installs as ``harness_zoo``);
- the wheel installs the zoo as ``harness_zoo`` and no top-level ``models``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HARNESS_ENV = ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
               "TORCHINDUCTOR_CACHE_DIR", "HYPOTHESIS_PROFILE", "CI")  # fmt: skip

FOREIGN_CONFTEST = """
import pytest


def pytest_addoption(parser):
    parser.addoption("--model", default="none", help="this project's own --model")


@pytest.fixture
def model(request):
    return request.config.getoption("--model")
"""

FOREIGN_TESTS = """
import os
import sys

from hypothesis import given, settings, strategies as st


def test_own_model_option(model, request):
    assert model == "resnet"
    assert request.config.pluginmanager.has_plugin("harness")  # installed, loaded, and out of the way


def test_hypothesis_keeps_its_defaults():
    seen = []

    @given(st.integers())
    def examples(number):
        seen.append(number)

    examples()
    assert settings.get_current_profile_name() == "default"
    assert settings.default.max_examples == 100
    assert len(seen) == 100


def test_no_harness_environment():
    for name in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                 "TORCHINDUCTOR_CACHE_DIR"):  # fmt: skip
        assert name not in os.environ, name


def test_no_harness_imports():
    loaded = sorted(name for name in sys.modules if name.startswith(("harness_zoo", "harness.checks", "harness.loading")))
    assert loaded == []
"""

USER_MODEL = '''
"""A user's own model, in the user's own top-level package named models."""

import torch.nn.functional as F
from torch import nn

from harness.spec import InputSpace, ModelSpec


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(12, 3)

    def forward(self, pixel_values, labels=None):
        logits = self.linear(pixel_values.flatten(1))  # (B, 3)
        output = {"logits": logits}
        if labels is not None:
            output["loss"] = F.cross_entropy(logits, labels)
        return output


def build():
    return ModelSpec(
        name="mine",
        task="image-classification",
        build=Tiny,
        inputs=InputSpace(image_size=(1, 3, 4), num_classes=3),
    )
'''


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what the harness (or this test session) sets, nor PYTHONPATH."""
    drop = (*HARNESS_ENV, "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("PYTEST_", "HYPOTHESIS_"))}
    return {**env, **extra}


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_plugin_is_installed_as_an_entry_point():
    assert [entry.value for entry in entry_points(group="pytest11") if entry.name == "harness"] == ["harness.plugin"]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_foreign_project_runs_as_if_the_harness_were_not_installed(tmp_path, workers):
    project = _write(
        tmp_path / "project",
        {"pytest.ini": "[pytest]\n", "conftest.py": FOREIGN_CONFTEST, "test_foreign.py": FOREIGN_TESTS},
    )
    completed = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--model", "resnet", *workers],
        cwd=project,
        env=_clean_env(),
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    assert "4 passed" in completed.stdout
    assert "harness:" not in completed.stdout  # no summary line, no report written
    assert not (project / "reports").exists()


def test_harness_options_are_prefixed_outside_the_suites(tmp_path):
    """``--model`` belongs to the harness only inside its suites: elsewhere it is not an option of ours."""
    project = _write(tmp_path / "project", {"pytest.ini": "[pytest]\n", "test_x.py": "def test_x():\n    pass\n"})
    completed = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--help"], project, _clean_env())
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "--harness-model=NAME|module:attr" in completed.stdout
    assert not re.search(r"^  --model\b", completed.stdout, re.MULTILINE)  # pytest indents each option by two


@pytest.mark.parametrize("runner", ["pytest", "harness-run"])
def test_a_user_models_package_runs_beside_a_zoo_model(tmp_path, runner):
    project = _write(tmp_path / "project", {"models/__init__.py": "", "models/mine.py": USER_MODEL})
    reports = tmp_path / "reports"
    if runner == "pytest":  # --model is the suites' spelling of --harness-model: both fill one list
        command = [sys.executable, "-m", "pytest", str(REPO / "suites" / "tier1"), "-q", "-p", "no:cacheprovider"]
        command += ["--hypothesis-profile", "ci", "--junitxml", str(reports / "R" / "junit.xml")]
        command += ["--harness-model", "models.mine:build", "--model", "gpt2-tiny", "-k", "batch_independence"]
    else:
        command = [sys.executable, "-m", "harness.cli", "run", "--tier", "1", "--report-dir", str(reports)]
        command += ["--run-id", "R", "--model", "models.mine:build", "--model", "gpt2-tiny", "--"]
        command += ["-k", "batch_independence"]
    completed = _run(command, cwd=project, env=_clean_env(OMP_NUM_THREADS="1"))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    rows = json.loads((reports / "R" / "report.json").read_text())["rows"]
    assert sorted((row["model"], row["check"], row["status"]) for row in rows) == [
        ("gpt2-tiny", "batch_independence", "passed"),
        ("mine", "batch_independence", "passed"),
    ]


def test_pyproject_installs_every_harness_package_and_the_zoo_as_harness_zoo():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = sorted(".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "harness").rglob("__init__.py"))
    assert sorted(setuptools["packages"]) == [*folders, "harness_zoo"]
    assert setuptools["package-dir"] == {"harness_zoo": "models"}
    probe = "import importlib.util as u, harness_zoo; print(u.find_spec('models'), harness_zoo.__name__)"
    completed = _run([sys.executable, "-c", probe], cwd=Path(os.sep), env=_clean_env())
    assert completed.stdout.split() == ["None", "harness_zoo"], completed.stderr[-2000:]


def test_the_wheel_holds_harness_zoo_and_no_top_level_models(tmp_path):
    """A regular (non-editable) wheel, built from a copy of the sources: the zoo is ``harness_zoo/``."""
    pytest.importorskip("setuptools", minversion="68", reason="building the wheel without isolation needs setuptools")
    source = tmp_path / "checkout"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("harness", "models"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(dist),
        str(source),
    ]
    completed = _run(command, cwd=tmp_path, env=_clean_env())
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    (wheel,) = dist.glob("ml_harness-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"harness", "harness_zoo"}
    assert {f"harness_zoo/{p.name}" for p in (REPO / "models").glob("*.py")} <= set(names)
    assert "harness/report/report.schema.json" in names
    # installed from the wheel (not the checkout), the zoo imports, lists and builds under its own name
    site = tmp_path / "site"
    completed = _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "-t", str(site), str(wheel)], tmp_path, _clean_env()
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    probe = (
        "import harness, harness_zoo, importlib.util as u;"
        "from harness.loading import resolve_models;"
        "(spec,) = resolve_models(['cnn-digits']); spec.build_model();"
        "print(harness.__file__, harness_zoo.__file__, u.find_spec('models'))"
    )
    completed = _run([sys.executable, "-c", probe], cwd=tmp_path, env=_clean_env(PYTHONPATH=str(site)))
    harness_file, zoo_file, models = completed.stdout.split()
    assert Path(harness_file).is_relative_to(site) and Path(zoo_file).is_relative_to(site), completed.stdout
    assert models == "None"
