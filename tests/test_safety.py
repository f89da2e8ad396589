"""The static scan (advice, not a boundary) points at every dangerous pattern it knows and accepts the zoo's code;
a path selector is imported into the process only when trusted (else it runs in the sandbox: test_sandbox.py);
provenance is recorded."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.loading import PROVENANCE, ModelSelectionError, needs_sandbox, resolve_models
from harness.safety import scan_advice, scan_paths, scan_source

REPO = Path(__file__).resolve().parents[1]
USER_MODEL = REPO / "tests" / "user_models" / "custom_lm.py"

DANGEROUS = {
    "os.system": "import os\nos.system('rm -rf ~')",
    "from os import system": "from os import system\nsystem('ls')",
    "aliased os": "import os as o\no.popen('ls')",
    "os.exec*": "import os\nos.execv('/bin/sh', ['sh'])",
    "subprocess": "import subprocess\nsubprocess.run(['ls'])",
    "eval": "eval('1 + 1')",
    "exec": "exec('x = 1')",
    "compile": "code = compile('x=1', 'f', 'exec')",
    "__import__ trick": "__import__('o' + 's').system('ls')",
    "importlib": "import importlib\nimportlib.import_module('os')",
    "getattr computed": "import os\ngetattr(os, 'sys' + 'tem')('ls')",
    "getattr literal": "import os\ngetattr(os, 'system')('ls')",
    "getattr builtins": "getattr(__builtins__, 'ev' + 'al')('1')",
    "raw socket": "import socket\nsocket.socket()",
    "ctypes": "import ctypes\nctypes.CDLL('libc.so.6')",
    "write absolute": "open('/etc/passwd', 'w').write('x')",
    "write parent": "open('../../outside.txt', 'a')",
    "write computed path": "name = input()\nopen(name, 'w')",
    "pathlib write": "from pathlib import Path\nPath('/tmp/x').write_text('x')",
    "globals": "globals()['__builtins__']",
}


@pytest.mark.parametrize("source", DANGEROUS.values(), ids=DANGEROUS.keys())
def test_each_dangerous_pattern_is_found_with_its_line(source):
    findings = scan_source(source, "user.py")
    assert findings, f"not flagged: {source!r}"
    lines = {finding.line for finding in findings}
    assert lines <= set(range(1, source.count("\n") + 2))
    assert all(finding.why for finding in findings)


SAFE = {
    "read a file": "data = open('data.txt').read()",
    "write inside the folder": "open('out/metrics.txt', 'w')",
    "f-string path in the folder": "step = 3\nopen(f'checkpoints/{step}.pt', 'wb')",
    "torch model": "import torch\nfrom torch import nn\nmodel = nn.Linear(2, 2)\ngetattr(model, 'weight')",
    "os.path": "import os\nos.path.join('a', 'b')",
}


@pytest.mark.parametrize("source", SAFE.values(), ids=SAFE.keys())
def test_ordinary_model_code_is_accepted(source):
    assert scan_source(source, "user.py") == []


def test_the_reference_models_and_the_test_models_pass_the_scan():
    assert scan_paths([REPO / "models", REPO / "tests" / "user_models"]) == []


def test_the_advice_lists_every_finding_of_the_path_selectors_only(tmp_path):
    file = tmp_path / "unsafe.py"
    file.write_text("import os\neval('1')\nos.system('x')\n")
    advice = scan_advice([f"{file}:SPEC", "gpt2-tiny", "tests.user_models.custom_lm:SPEC", f"{tmp_path}:SPEC"])
    assert [line.split(": ", 1)[0] for line in advice] == [f"{file}:2", f"{file}:3"] * 2  # the file, then its folder
    assert "eval()" in advice[0] and "os.system" in advice[1]


def test_a_folder_under_a_hidden_or_venv_parent_is_scanned(tmp_path):
    for parent in (".cache", "venv"):
        folder = tmp_path / parent / "checkout"
        folder.mkdir(parents=True)
        (folder / "model.py").write_text("import os\nos.system('x')\n")
        (folder / ".git").mkdir()
        (folder / ".git" / "hook.py").write_text("import os\nos.system('x')\n")  # hidden inside: still skipped
        assert [finding.line for finding in scan_paths([folder])] == [2], parent


def test_a_syntax_error_is_a_finding_not_a_crash():
    (finding,) = scan_source("def broken(:\n", "user.py")
    assert finding.what == "syntax error" and finding.line == 1


def test_an_expression_too_long_for_the_parser_is_a_finding_not_a_crash():
    (finding,) = scan_source("x = " + "+".join(["1"] * 200_000), "long.py")
    assert finding.what == "code nested too deeply to scan"


def test_path_selector_loads_a_clean_model_file_and_records_its_sha256(tmp_path):
    file = tmp_path / "my_model.py"
    shutil.copy(USER_MODEL, file)
    specs = resolve_models([f"{file}:SPECS"], trust_code=True)
    assert [spec.name for spec in specs] == ["custom-lm-small", "custom-lm-wide"]
    record = PROVENANCE["custom-lm-small"]
    assert record["files"][str(file)] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert record["trusted_without_scan"] is True


def test_a_git_folder_selector_records_the_commit(tmp_path):
    shutil.copy(USER_MODEL, tmp_path / "model.py")
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "model"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (spec,) = resolve_models([f"{tmp_path}:SPEC"], trust_code=True)
    assert PROVENANCE[spec.name]["git_commit"] == commit


def test_an_untrusted_path_is_never_imported_into_this_process_even_when_the_scan_passes_it(tmp_path):
    marker = tmp_path / "imported.txt"
    file = tmp_path / "quiet.py"
    file.write_text(
        f"runner = open\nrunner({str(marker)!r}, 'w').write('ran')\nfrom tests.user_models.custom_lm import SPEC\n"
    )
    assert scan_paths([file]) == []  # the scan sees nothing: an alias hides the write
    with pytest.raises(ModelSelectionError, match="only with --trust-model-code.*bubblewrap sandbox"):
        resolve_models([f"{file}:SPEC"])
    assert not marker.exists()  # nothing of the file ran
    (spec,) = resolve_models([f"{file}:SPEC"], trust_code=True)
    assert marker.exists() and PROVENANCE[spec.name]["trusted_without_scan"] is True


def test_only_path_selectors_need_the_sandbox():
    assert needs_sandbox("models/mine.py:build") and needs_sandbox("./checkout:SPEC")
    assert not needs_sandbox("gpt2-tiny") and not needs_sandbox("tests.user_models.custom_lm:SPEC")


@pytest.mark.parametrize(
    "selector, message",
    [
        ("{tmp}/missing.py:SPEC", "does not exist"),
        ("{tmp}:SPEC", "has no model.py"),
        ("{tmp}/empty.py:SPEC", "has no attribute 'SPEC'"),
    ],
)
def test_bad_path_selectors_are_clear_errors(tmp_path, selector, message):
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ModelSelectionError, match=message):
        resolve_models([selector.format(tmp=tmp_path)], trust_code=True)
