"""Content fingerprints of files and settings (sha256), for reports and baselines."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CACHE: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (a folder: of its files in order), cached by size and mtime."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        digest = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            with file.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        _CACHE[key] = digest.hexdigest()
    return _CACHE[key]


def json_digest(value: Any) -> str:
    """sha256 of a value's canonical JSON (sorted keys)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def external_data_files(path: str | Path) -> list[Path]:
    """The external data files an ONNX model refers to (where torch's default exporter writes
    the weights: ``model.onnx.data`` beside ``model.onnx``), each once, in the order of use.

    Files that do not exist are left out (loading the model names them); any other file
    than ``.onnx`` has none.
    """
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return []
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locations: dict[str, None] = {}

    def visit(graph: onnx.GraphProto) -> None:
        tensors = list(graph.initializer)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    tensors.append(attribute.t)
                tensors.extend(attribute.tensors)
                if attribute.HasField("g"):
                    visit(attribute.g)
                for subgraph in attribute.graphs:
                    visit(subgraph)
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                for entry in tensor.external_data:
                    if entry.key == "location":
                        locations[entry.value] = None

    visit(model.graph)
    files = [path.parent / location for location in locations]
    return [file for file in files if file.is_file()]


def model_file_digest(path: str | Path) -> str:
    """sha256 of a model file, together with the external data files it refers to (an ONNX
    model whose weights live in ``model.onnx.data`` changes when only that file changes)."""
    extra = external_data_files(path)
    if not extra:
        return file_digest(path)
    return json_digest([file_digest(path), *[(file.name, file_digest(file)) for file in extra]])
