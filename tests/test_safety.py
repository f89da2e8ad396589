"""The static scan refuses every dangerous pattern (obfuscated forms included), accepts the zoo's code,
and guards --model path selectors; a trusted path skips it; provenance is recorded."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.loading import PROVENANCE, ModelSelectionError, resolve_models
from harness.safety import UnsafeModelCode, check_paths, scan_paths, scan_source

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
def test_each_dangerous_pattern_is_refused_with_its_line(source):
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


def test_the_error_lists_every_finding_and_the_override(tmp_path):
    file = tmp_path / "unsafe.py"
    file.write_text("import os\neval('1')\nos.system('x')\n")
    with pytest.raises(UnsafeModelCode) as raised:
        check_paths([file])
    message = str(raised.value)
    assert ":2: eval()" in message and ":3: os.system" in message
    assert "--trust-model-code" in message
    assert len(raised.value.findings) == 2


def test_a_syntax_error_is_a_finding_not_a_crash():
    (finding,) = scan_source("def broken(:\n", "user.py")
    assert finding.what == "syntax error" and finding.line == 1


def test_path_selector_loads_a_clean_model_file_and_records_its_sha256(tmp_path):
    file = tmp_path / "my_model.py"
    shutil.copy(USER_MODEL, file)
    specs = resolve_models([f"{file}:SPECS"])
    assert [spec.name for spec in specs] == ["custom-lm-small", "custom-lm-wide"]
    record = PROVENANCE["custom-lm-small"]
    assert record["files"][str(file)] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert record["trusted_without_scan"] is False


def test_a_git_folder_selector_records_the_commit(tmp_path):
    shutil.copy(USER_MODEL, tmp_path / "model.py")
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "model"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (spec,) = resolve_models([f"{tmp_path}:SPEC"])
    assert PROVENANCE[spec.name]["git_commit"] == commit


def test_an_unsafe_model_file_is_refused_before_import_unless_trusted(tmp_path):
    marker = tmp_path / "imported.txt"
    file = tmp_path / "evil.py"
    file.write_text(
        f"import os\nopen({str(marker)!r}, 'w').write('ran')\nos.system('true')\n"
        "from tests.user_models.custom_lm import SPEC\n"
    )
    with pytest.raises(ModelSelectionError) as raised:
        resolve_models([f"{file}:SPEC"])
    assert "os.system" in str(raised.value) and ":3:" in str(raised.value)
    assert not marker.exists()  # nothing of the file ran
    (spec,) = resolve_models([f"{file}:SPEC"], trust_code=True)
    assert marker.exists() and PROVENANCE[spec.name]["trusted_without_scan"] is True


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
        resolve_models([selector.format(tmp=tmp_path)])


def test_pytest_refuses_an_unsafe_model_file_with_exit_code_4(tmp_path):
    file = tmp_path / "evil.py"
    file.write_text("import subprocess\nSPEC = None\n")
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "suites" / "tier1"), "--model", f"{file}:SPEC", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 4, completed.stdout + completed.stderr
    assert "import subprocess (process spawning)" in completed.stderr
