"""Reproducible installs: CI, the workflows and the README install from the committed constraints file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / ".ci" / "ci-constraints.txt"
CONSTRAINED = "-c .ci/ci-constraints.txt"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{LOCK.name}: {line!r} is not an exact pin"
            pins[_name(name)] = version
    return pins


def test_the_lock_pins_every_dependency_exactly_with_its_regeneration_command_on_top():
    header = LOCK.read_text().splitlines()[0]
    assert "bash .ci/lock" in header
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    wanted |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    locked = _locked()
    assert wanted <= set(locked), f"not locked: {sorted(wanted - set(locked))}"
    assert "ml-harness" not in locked  # the project itself is never pinned
    assert not any(version.endswith("+cpu") for version in locked.values())  # ==X admits CPU and CUDA builds


def test_every_install_in_ci_the_workflows_and_the_readme_uses_the_lock():
    readme_commands = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("pip install")]
    assert len(readme_commands) == 2, "the README's set-up stays two commands"
    ci_run = (ROOT / ".ci" / "run").read_text()
    for command in readme_commands:
        assert CONSTRAINED in command
        assert command in ci_run.splitlines(), f".ci/run must call the README command verbatim: {command}"
    for workflow in (ROOT / ".github" / "workflows").glob("*.yml"):
        for line in workflow.read_text().splitlines():
            if re.search(r"\bpip install\b", line) and workflow.name != "latest.yml":
                assert CONSTRAINED in line, f"{workflow.name}: unconstrained install: {line.strip()}"


def test_the_latest_releases_job_installs_without_the_lock_and_reports_instead_of_failing():
    latest = (ROOT / ".ci" / "latest").read_text()
    unconstrained = [line for line in latest.splitlines() if "pip install" in line and CONSTRAINED not in line]
    assert any("--upgrade-strategy eager" in line for line in unconstrained)
    assert "harness diff" in latest and "|| true" in latest  # verdict changes are reported, never fatal
    workflow = (ROOT / ".github" / "workflows" / "latest.yml").read_text()
    assert "schedule:" in workflow and "bash .ci/latest" in workflow
