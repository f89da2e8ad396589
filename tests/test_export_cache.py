"""The on-disk export cache: keyed by content, built once across processes, a killed export rebuilt."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.cache import take_uses
from harness.export import ExportError, exports_for
from harness.export.artifacts import _CACHE, export_key
from tests.export_defects import causal_lm_spec

ASK = """
import json, sys, time
from harness.cache import take_uses
from harness.export import exports_for
from tests.export_defects import causal_lm_spec

spec = causal_lm_spec()
exports = exports_for(spec, spec.build_model(), sys.argv[1])
while time.time() < float(sys.argv[2]):  # both processes ask at the same moment
    time.sleep(0.01)
record = exports.record("onnx")
print(json.dumps({"path": str(record.path), "uses": [use.__dict__ for use in take_uses()]}))
"""


@pytest.fixture(autouse=True)
def fresh_process_cache():
    """Each test starts as a new process would: nothing in memory, only what is on disk."""
    _CACHE.clear()
    take_uses()
    yield
    _CACHE.clear()


def forget_memory() -> None:
    _CACHE.clear()


def test_two_processes_asking_at_once_build_the_export_once(tmp_path):
    start = str(time.time() + 8)  # both interpreters are up by then
    root = Path(__file__).resolve().parent.parent
    processes = [
        subprocess.Popen([sys.executable, "-c", ASK, str(tmp_path), start], cwd=root, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [json.loads(process.communicate(timeout=300)[0].splitlines()[-1]) for process in processes]
    assert all(process.returncode == 0 for process in processes)
    hits = sorted(outcome["uses"][0]["hit"] for outcome in outcomes)
    assert hits == [False, True], outcomes  # one built it, the other waited and reused it
    assert outcomes[0]["path"] == outcomes[1]["path"]
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_a_later_process_reuses_the_stored_export_and_notes_the_hit(tmp_path):
    spec = causal_lm_spec()
    first = exports_for(spec, spec.build_model(), tmp_path).record("onnx")
    assert [use.hit for use in take_uses()] == [False]
    forget_memory()
    again = exports_for(spec, spec.build_model(), tmp_path).record("onnx")
    uses = take_uses()
    assert [(use.kind, use.hit) for use in uses] == [("export:onnx", True)]
    assert again == first  # the same file, made the same way, in the same seconds


def test_the_key_changes_with_the_weights_the_input_space_and_the_name():
    spec = causal_lm_spec()
    model = spec.build_model()
    key = export_key(spec, model)
    assert export_key(spec, spec.build_model()) == key  # same seed, same weights, same key
    changed = spec.build_model()
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    others = {
        export_key(spec, changed),
        export_key(spec.replace(name="renamed"), model),
        export_key(spec.replace(inputs=dataclasses.replace(spec.inputs, max_length=7)), model),
    }
    assert key not in others and len(others) == 3


def test_an_export_file_without_its_record_is_rebuilt(tmp_path):
    """What a killed export leaves (the file renamed into place, the record not yet written) is not trusted."""
    spec = causal_lm_spec()
    exports = exports_for(spec, spec.build_model(), tmp_path)
    record = exports.record("onnx")
    exports._record_path("onnx").unlink()
    forget_memory()
    take_uses()
    assert exports_for(spec, spec.build_model(), tmp_path).record("onnx").path == record.path
    assert [use.hit for use in take_uses()] == [False]
    assert exports._record_path("onnx").is_file()


def test_a_record_whose_file_is_gone_is_rebuilt(tmp_path):
    spec = causal_lm_spec()
    record = exports_for(spec, spec.build_model(), tmp_path).record("torchscript")
    record.path.unlink()
    forget_memory()
    take_uses()
    assert exports_for(spec, spec.build_model(), tmp_path).record("torchscript").path.is_file()
    assert [use.hit for use in take_uses()] == [False]


class Unscriptable(torch.nn.Module):
    """A causal LM whose forward takes ``**kwargs``: ``torch.jit.script`` refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = causal_lm_spec().build_model()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return self.inner(input_ids, attention_mask, **kwargs)


def test_a_failed_export_is_stored_and_raised_again_without_exporting(tmp_path, monkeypatch):
    spec = causal_lm_spec().replace(name="unscriptable", build=Unscriptable)
    with pytest.raises(ExportError) as first:
        exports_for(spec, spec.build_model(), tmp_path).record("torchscript-script")
    forget_memory()
    take_uses()
    monkeypatch.setattr(torch.jit, "script", lambda *_: pytest.fail("the stored failure was exported again"))
    with pytest.raises(ExportError) as again:
        exports_for(spec, spec.build_model(), tmp_path).record("torchscript-script")
    assert str(again.value) == str(first.value)
    assert [use.hit for use in take_uses()] == [True]


def test_an_edit_is_made_once_and_a_later_run_reuses_the_edited_file(tmp_path):
    spec = causal_lm_spec().replace(name="edited")
    exports = exports_for(spec, spec.build_model(), tmp_path)
    original = exports.record("onnx").path.read_bytes()
    edits = []

    def edit(target: Path) -> None:
        edits.append(target)
        target.write_bytes(original + b"\0")

    exports.edit("onnx", edit, "planted: one byte more")
    forget_memory()
    again = exports_for(spec, spec.build_model(), tmp_path)
    assert "planted: one byte more" in again.edit("onnx", edit, "planted: one byte more").notes
    assert len(edits) == 1
    assert again.record("onnx").path.read_bytes() == original + b"\0"
