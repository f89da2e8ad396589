"""Export to TorchScript and ONNX, onnxruntime sessions and int8 quantization, cached per process.

Every export goes through :class:`ExportWrapper`, which calls the task's adapter, so an exported
graph computes exactly what the eager checks compare (logits, pooled embeddings).
"""

from harness.export.artifacts import ExportError, ExportRecord, Exports, exports_for
from harness.export.wrapper import ExportWrapper, export_inputs

__all__ = ["ExportError", "ExportRecord", "ExportWrapper", "Exports", "export_inputs", "exports_for"]
