"""The int8 file computes the same numbers on an x86 CPU without VNNI as on this one.

onnxruntime's u8s8 integer kernels on AVX2 (no VNNI) add pairs of uint8 x int8 products in int16,
which saturates for full-range int8 weights; ``reduce_range`` (weights in [-64, 64]) keeps every pair
inside int16. The test runs the same int8 files natively and on an emulated Haswell CPU
(``qemu-x86_64 -cpu Haswell-noTSX``, Debian's qemu-user, which ``.ci/run`` installs): the harness's
recipe must agree to float rounding, and full-range weights must not (the test can fail).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from harness.adapters import adapter_for
from harness.export import export_inputs, exports_for
from tests.export_defects import causal_lm_spec, classifier_spec

QEMU = shutil.which("qemu-x86_64")
pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64" or QEMU is None, reason="needs x86_64 and qemu-user (apt install qemu-user)"
)

RUN_SESSIONS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import onnxruntime as ort

    data = dict(np.load(sys.argv[1]))
    outputs = {}
    for path in [key for key in data if key.startswith("file:")]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path[5:], options, providers=["CPUExecutionProvider"])
        wanted = {node.name for node in session.get_inputs()}
        feed = {key[6:]: value for key, value in data.items() if key.startswith("input:") and key[6:] in wanted}
        outputs[path] = session.run(None, feed)[0]
    np.savez(sys.argv[2], **outputs)
    """
)


def _outputs(tmp_path, files, inputs, *, emulate: str | None) -> dict[str, np.ndarray]:
    arrays = {"file:" + str(path): np.zeros(0) for path in files}
    arrays.update({"input:" + name: tensor.numpy() for name, tensor in inputs.items()})
    source, target, script = tmp_path / "in.npz", tmp_path / f"out-{emulate}.npz", tmp_path / "run.py"
    np.savez(source, **arrays)
    script.write_text(RUN_SESSIONS)
    command = [sys.executable, str(script), str(source), str(target)]
    if emulate:
        command = [QEMU, "-cpu", emulate, *command]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return dict(np.load(target))


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(flag in cpuinfo.read() for flag in (" avx512_vnni", " avx_vnni"))
    except OSError:
        return False


def _native_and_haswell(make_spec, tmp_path, *, full_range: bool) -> tuple[np.ndarray, np.ndarray]:
    """One int8 file (the harness's recipe, or full-range weights) run natively and on an emulated Haswell."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    spec = make_spec()
    exports = exports_for(spec, spec.build_model(), tmp_path)
    path = exports.record("onnx-int8").path
    if full_range:
        path = tmp_path / "full-range.int8.onnx"
        quantize_dynamic(exports.record("onnx").path, path, weight_type=QuantType.QInt8, per_channel=True)
    adapter = adapter_for(spec)
    length = 16 if adapter.sequence else 1
    batch = adapter.make_batch(spec, batch_size=4, length=length, generator=torch.Generator().manual_seed(0))
    inputs = export_inputs(spec, batch)
    key = "file:" + str(path)
    native = _outputs(tmp_path, [path], inputs, emulate=None)[key]
    return native, _outputs(tmp_path, [path], inputs, emulate="Haswell-noTSX")[key]


def _relative(native: np.ndarray, emulated: np.ndarray) -> float:
    return float(np.abs(native - emulated).max() / np.abs(native).max())


@pytest.mark.parametrize("make_spec", [causal_lm_spec, classifier_spec], ids=["causal-lm", "classifier"])
def test_the_harness_int8_file_computes_the_same_numbers_without_vnni(make_spec, tmp_path):
    native, haswell = _native_and_haswell(make_spec, tmp_path, full_range=False)
    assert _relative(native, haswell) < 1e-5


@pytest.mark.skipif(not _has_vnni(), reason="the saturation shows only against a CPU with VNNI")
@pytest.mark.parametrize("make_spec", [causal_lm_spec, classifier_spec], ids=["causal-lm", "classifier"])
def test_full_range_int8_weights_saturate_without_vnni(make_spec, tmp_path):
    native, haswell = _native_and_haswell(make_spec, tmp_path, full_range=True)
    assert _relative(native, haswell) > 0.05  # what reduce_range prevents: u8s8 pairs overflow int16
