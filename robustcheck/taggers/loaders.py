"""The built-in tagger loaders, by file suffix (declared without importing torch)."""

from __future__ import annotations

from robustcheck.declaration import Declaration

LOADERS: dict[str, Declaration] = {
    ".onnx": Declaration(".onnx", "robustcheck.taggers.onnx:load_onnx", doc="ONNX (onnxruntime)"),
    ".pt": Declaration(
        ".pt", "robustcheck.taggers.torchscript:load_torchscript", doc="TorchScript"
    ),
    ".ts": Declaration(
        ".ts", "robustcheck.taggers.torchscript:load_torchscript", doc="TorchScript"
    ),
    ".pt2": Declaration(
        ".pt2", "robustcheck.taggers.exported:load_exported", doc="torch.export program"
    ),
}
