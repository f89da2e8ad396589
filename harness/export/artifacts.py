"""Exported artefacts of one model, built on first use and cached on disk by content.

The cache key (:func:`export_key`) is a hash of everything an export depends on: the spec's name, task and input
space, the model's weights, the source files of its code, of its task's adapter and of this exporter, and the
versions of torch, onnx and onnxruntime. Each format's file is written under a temporary name and renamed into
place, then described by a small JSON record beside it (how it was made, or why it failed); both are made under
a per-format file lock (:func:`harness.cache.file_lock`), so pytest-xdist workers and later runs asking for the
same export build it once and the others wait and reuse it. A file without its record (a killed export) is
rebuilt.

ONNX export tries the ``torch.export``-based exporter (``dynamo=True``, dynamic batch and length)
first and falls back to the TorchScript-based exporter (opset 17, ``dynamic_axes``); the record
says which one produced the file. ``onnx.checker`` validates the result. An export that fails
raises :class:`ExportError` naming the unsupported operator and the opset where it can.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.adapters import adapter_for
from harness.cache import cache_dir, file_lock, record_use
from harness.export.int8_reference import QUANTIZE_DYNAMIC
from harness.export.wrapper import ExportWrapper, dynamic_axes, export_inputs
from harness.io import atomic_path, atomic_write_text
from harness.spec import ModelSpec
from harness.tolerances import require_float32

OPSET = 17  # the legacy exporter's opset; the dynamo exporter picks its own (recorded)
EXPORT_SHAPE = (2, 8)  # (batch, length) of the example inputs every export is traced with
ORT_LEVELS = ("disabled", "all")  # onnxruntime graph optimisation levels the checks run
_OPERATOR = re.compile(r"(aten|prim|onnx)(::|\.)[A-Za-z_][\w.]*")


class ExportError(RuntimeError):
    """An export failed; ``operator`` and ``opset`` say what was unsupported, where known."""

    def __init__(self, message: str, *, operator: str | None = None, opset: int | None = None) -> None:
        super().__init__(message)
        self.operator = operator
        self.opset = opset


@dataclass(frozen=True)
class ExportRecord:
    """One exported file and how it was made."""

    format: str  # "torchscript" (traced), "torchscript-script", "onnx", "onnx-int8"
    path: Path
    exporter: str  # "trace", "script", "dynamo", "torchscript-onnx", "quantize_dynamic"
    opset: int | None
    seconds: float  # time the export took
    notes: tuple[str, ...] = ()  # fallbacks taken, with the reason


def export_key(spec: ModelSpec, model: torch.nn.Module) -> str:
    """The 16-hex-digit content key of a model's exports (see the module docstring for what it covers)."""
    from harness.cache import code_digest, weights_digest
    from harness.versions import package_versions

    adapter = adapter_for(spec)
    payload = {
        "spec": [spec.name, spec.task, dataclasses.asdict(spec.inputs), spec.seed],
        "weights": weights_digest(model.state_dict()),
        "code": code_digest([spec.build, model, adapter, ExportWrapper, Exports]),
        "quantization": QUANTIZE_DYNAMIC,
        "export_shape": EXPORT_SHAPE,
        "versions": package_versions(("torch", "onnx", "onnxruntime", "onnxscript")),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def _unsupported(error: BaseException, opset: int | None) -> ExportError:
    text = f"{type(error).__name__}: {error}"
    match = _OPERATOR.search(text)
    operator = match.group(0) if match else None
    where = f"operator {operator}" if operator else "an operator or construct"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]  # messages may start with a newline
    first_line = f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]
    return ExportError(
        f"{where} could not be exported (opset {opset or 'auto'}): {first_line}", operator=operator, opset=opset
    )


@dataclass
class Exports:
    """The artefacts of one (spec, model): made lazily, each at most once."""

    spec: ModelSpec
    model: torch.nn.Module
    folder: Path
    key: str
    records: dict[str, ExportRecord] = field(default_factory=dict)
    failures: dict[str, ExportError] = field(default_factory=dict)
    _sessions: dict[tuple[str, str], Any] = field(default_factory=dict)

    def example(self) -> tuple[torch.Tensor, ...]:
        batch_size, length = EXPORT_SHAPE
        batch = adapter_for(self.spec).make_batch(
            self.spec, batch_size=batch_size, length=length, generator=torch.Generator().manual_seed(12345)
        )
        return tuple(export_inputs(self.spec, batch).values())

    def wrapper(self) -> ExportWrapper:
        return ExportWrapper(self.spec, self.model).eval()

    def _path(self, suffix: str) -> Path:
        return self.folder / f"{self.spec.name}-{self.key}{suffix}"

    def record(self, fmt: str) -> ExportRecord:
        """The export of one format: from this process's memory, else from the disk cache, else made now (under
        the format's lock); raises the cached ExportError on failure. Each call notes its cache use."""
        started = time.perf_counter()
        hit = fmt in self.records or fmt in self.failures
        if not hit:
            with file_lock(self._path(f".{fmt}.lock")):
                hit = self._load(fmt)
                if not hit:
                    self._make(fmt)
        record_use(f"export:{fmt}", self.key, hit=hit, seconds=time.perf_counter() - started)
        if fmt in self.failures:
            raise self.failures[fmt]
        return self.records[fmt]

    def _record_path(self, fmt: str) -> Path:
        return self._path(f".{fmt}.json")

    def _load(self, fmt: str) -> bool:
        """Take the format's stored record (or stored failure) from the disk cache; False when there is none."""
        try:
            stored = json.loads(self._record_path(fmt).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if "failure" in stored:
            self.failures[fmt] = ExportError(**stored["failure"])
            return True
        record = ExportRecord(**{**stored["record"], "path": Path(stored["record"]["path"]),
                                 "notes": tuple(stored["record"]["notes"])})  # fmt: skip
        if not record.path.is_file():
            return False
        self.records[fmt] = record
        return True

    def _make(self, fmt: str) -> None:
        """Export one format now and store its record (or its failure) beside the file."""
        make = {
            "torchscript": self._torchscript,
            "torchscript-script": self._torchscript_script,
            "onnx": self._onnx,
            "onnx-int8": self._onnx_int8,
        }[fmt]
        started = time.perf_counter()
        try:
            made = make()
        except ExportError as error:
            self.failures[fmt] = error
            stored = {"failure": {"message": str(error), "operator": error.operator, "opset": error.opset}}
        else:
            self.records[fmt] = ExportRecord(**{**made, "seconds": round(time.perf_counter() - started, 3)})
            stored = {"record": _stored_record(self.records[fmt])}
        self._write_record(fmt, stored)

    def _write_record(self, fmt: str, stored: dict[str, Any]) -> None:
        """Publish the format's JSON record (after its file: a file without a record is rebuilt)."""
        atomic_write_text(self._record_path(fmt), json.dumps(stored, indent=1))

    def edit(self, fmt: str, save: Callable[[Path], None], note: str) -> ExportRecord:
        """Replace the format's file by ``save(path)`` (a mutation test's planted defect), once: the record says
        ``note``, and a record that says it already is returned as it is (a later run reuses the edited file)."""
        record = self.record(fmt)
        if note in record.notes:
            return record
        with file_lock(self._path(f".{fmt}.lock")):
            _atomic_save(save, record.path)
            self.records[fmt] = dataclasses.replace(record, notes=(*record.notes, note))
            self._write_record(fmt, {"record": _stored_record(self.records[fmt])})
        return self.records[fmt]

    def _torchscript(self) -> dict[str, Any]:
        """``torch.jit.trace`` of the export wrapper at the export shape."""
        path = self._path(".traced.pt")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = torch.jit.trace(self.wrapper(), self.example(), check_trace=False)
            _atomic_save(lambda target: torch.jit.save(module, str(target)), path)
        except Exception as error:  # noqa: BLE001
            raise _unsupported(error, None) from error
        return {"format": "torchscript", "path": path, "exporter": "trace", "opset": None}

    def _torchscript_script(self) -> dict[str, Any]:
        """``torch.jit.script`` of the model itself (it keeps the model's own signature)."""
        path = self._path(".scripted.pt")
        try:
            module = torch.jit.script(self.model)
            _atomic_save(lambda target: torch.jit.save(module, str(target)), path)
        except Exception as error:  # noqa: BLE001 - most transformers models cannot be scripted
            first_line = (str(error).strip().splitlines() or [""])[0][:200]
            raise ExportError(f"not scriptable: {type(error).__name__}: {first_line}") from error
        return {"format": "torchscript-script", "path": path, "exporter": "script", "opset": None}

    def _onnx(self) -> dict[str, Any]:
        import onnx

        path, notes = self._path(".onnx"), []
        names = list(export_inputs(self.spec, dict(zip(self.wrapper().keys, self.example(), strict=True))))
        try:
            exporter, opset = "dynamo", self._onnx_dynamo(path, names)
        except Exception as error:  # noqa: BLE001 - the legacy exporter is the documented fallback
            notes.append(f"dynamo exporter failed ({_unsupported(error, None)}); used the TorchScript-based exporter")
            try:
                exporter, opset = "torchscript-onnx", self._onnx_legacy(path, names)
            except Exception as legacy_error:  # noqa: BLE001
                raise _unsupported(legacy_error, OPSET) from legacy_error
        try:
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as error:
            raise ExportError(f"onnx.checker rejected the export: {error}", opset=opset) from error
        return {"format": "onnx", "path": path, "exporter": exporter, "opset": opset, "notes": tuple(notes)}

    def _onnx_dynamo(self, path: Path, names: list[str]) -> int:
        from torch.export import Dim

        dynamic = tuple({axis: Dim.DYNAMIC for axis in dynamic_axes(self.spec, name)} for name in names)
        with warnings.catch_warnings(), _quiet_torch_logs():
            warnings.simplefilter("ignore")
            # Non-strict capture only: Python runs as written, so a size the model reads with int() is baked in
            # and then fails the dynamic-shape constraints (the TorchScript-based exporter is the fallback, and
            # parity shows the baked size); dynamo's strict tracing would quietly make such a size symbolic.
            exported = torch.export.export(
                self.wrapper(), self.example(), dynamic_shapes={"inputs": dynamic}, strict=False
            )
            program = torch.onnx.export(
                exported, dynamo=True, input_names=names, output_names=["output"], report=False, verbose=False
            )
        _atomic_save(lambda target: program.save(str(target)), path)
        return int(program.model.opset_imports.get("", 0))

    def _onnx_legacy(self, path: Path, names: list[str]) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _atomic_save(
                lambda target: torch.onnx.export(
                    self.wrapper(),
                    self.example(),
                    str(target),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=names,
                    output_names=["output"],
                    dynamic_axes={name: dynamic_axes(self.spec, name) for name in names},
                ),
                path,
            )
        return OPSET

    def _onnx_int8(self) -> dict[str, Any]:
        """Dynamic int8 quantization with :data:`QUANTIZE_DYNAMIC`, after onnxruntime's pre-processing.

        Pre-processing (shape inference and graph clean-up) is what lets the dynamo exporter's graphs
        quantize at all; per-channel weight scales kept all-MiniLM-L6-v2's embeddings at cosine 0.98
        to eager where per-tensor scales gave 0.83 (random tokens, length 256); ``reduce_range`` makes
        the file compute the same numbers on every x86 CPU (see :mod:`harness.export.int8_reference`).
        """
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        source = self.record("onnx")
        prepared, path = self._path(".prepared.onnx"), self._path(".int8.onnx")
        with _quiet_root_logger():
            try:  # shape inference can fail on graphs that quantize fine without it: then quantize the export itself
                with contextlib.chdir(prepared.parent):  # its shape inference leaves temporary files in the cwd
                    _atomic_save(lambda target: quant_pre_process(str(source.path), str(target)), prepared)
                step, quantized = "quant_pre_process", prepared
            except Exception as error:  # noqa: BLE001
                step, quantized = (
                    f"quant_pre_process failed ({_unsupported(error, source.opset)}): skipped",
                    source.path,
                )
            try:
                _atomic_save(
                    lambda target: quantize_dynamic(quantized, target, weight_type=QuantType.QInt8, **QUANTIZE_DYNAMIC),
                    path,
                )
            except Exception as error:  # noqa: BLE001
                raise _unsupported(error, source.opset) from error
            finally:
                prepared.unlink(missing_ok=True)
        return {"format": "onnx-int8", "path": path, "exporter": "quantize_dynamic", "opset": source.opset,
                "notes": (step, *sorted(QUANTIZE_DYNAMIC))}  # fmt: skip

    def session(self, fmt: str, optimization: str = "disabled") -> Any:
        """An onnxruntime session on the CPU for ``onnx`` or ``onnx-int8`` at an optimisation level."""
        import onnxruntime as ort

        if (fmt, optimization) not in self._sessions:
            levels = {
                "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            }
            options = ort.SessionOptions()
            options.graph_optimization_level = levels[optimization]
            options.intra_op_num_threads = 1
            options.log_severity_level = 3
            self._sessions[(fmt, optimization)] = ort.InferenceSession(
                str(self.record(fmt).path), options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[(fmt, optimization)]

    def torchscript_runner(self, fmt: str = "torchscript") -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        """Call a TorchScript file on named inputs: the traced wrapper positionally, a scripted model
        through the adapter (with the model's own keyword signature)."""
        record = self.record(fmt)
        module = torch.jit.load(str(record.path)).eval()
        if record.exporter == "script":
            adapter = adapter_for(self.spec)
            return lambda inputs: adapter.forward(self.spec, module, inputs)
        return lambda inputs: module(*inputs.values())


def _stored_record(record: ExportRecord) -> dict[str, Any]:
    return {**dataclasses.asdict(record), "path": str(record.path)}


def run_session(session: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run an onnxruntime session on named torch inputs (inputs the graph dropped are not fed)."""
    wanted = {node.name for node in session.get_inputs()}
    feed = {name: tensor.numpy() for name, tensor in inputs.items() if name in wanted}
    return torch.from_numpy(session.run(None, feed)[0])


def _atomic_save(save: Any, path: Path) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    with atomic_path(path, suffix=path.suffix) as temporary:  # the writer sees the format's file ending
        save(temporary)


class _quiet_root_logger:
    """Silence onnxruntime.quantization's advice, which it logs on the root logger."""

    def __enter__(self) -> None:
        import logging

        self._level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        import logging

        logging.getLogger().setLevel(self._level)


class _quiet_torch_logs:
    """Silence the exporter's logger (it warns about optional torchvision ops on every export)."""

    def __enter__(self) -> None:
        import logging

        self._logger = logging.getLogger("torch.onnx")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


_CACHE: dict[tuple[str, str], Exports] = {}


def exports_for(spec: ModelSpec, model: torch.nn.Module, folder: str | Path | None) -> Exports:
    """The artefacts of this model (same spec, weights and code) cached under ``folder`` (default: the shared
    ``harness.cache.cache_dir("exports")``), one :class:`Exports` per process and key.

    Exports are built from a float32 model: another dtype (``--harness-dtype``) makes every export check skip."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    require_float32(dtype, "exports are built from float32 graphs (ONNX Runtime's CPU kernels and int8 quantization)")
    key = export_key(spec, model)
    target = Path(folder) if folder else cache_dir("exports")
    target.mkdir(parents=True, exist_ok=True)
    cache_key = (key, str(target))
    if cache_key not in _CACHE:
        _CACHE[cache_key] = Exports(spec, model.eval(), target, key)
    return _CACHE[cache_key]
