"""Fingerprints of model files: an ONNX model's external data (torch's default exporter writes
the weights into ``model.onnx.data``) is part of the model's digest and of the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from robustcheck.digest import external_data_files, file_digest, model_file_digest


def save_linear(path: Path, weight: np.ndarray, external: bool) -> None:
    """y = x @ W with W an initializer, stored inside the file or in ``path.name + '.data'``."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        location=f"{path.name}.data",
        size_threshold=0,
    )


def test_external_weights_change_the_model_digest(tmp_path: Path) -> None:
    path = tmp_path / "tagger.onnx"
    save_linear(path, np.ones((4, 2)), external=True)
    data = tmp_path / "tagger.onnx.data"
    assert external_data_files(path) == [data]
    graph_bytes, before = path.read_bytes(), model_file_digest(path)
    data.unlink()  # onnx appends to an existing data file; an exporter writes a new one
    save_linear(path, np.full((4, 2), 2.0), external=True)  # retrained: new weights only
    assert path.read_bytes() == graph_bytes  # the .onnx file itself did not change
    assert model_file_digest(path) != before


def test_a_self_contained_model_keeps_its_file_digest(tmp_path: Path) -> None:
    path = tmp_path / "tagger.onnx"
    save_linear(path, np.ones((4, 2)), external=False)
    assert external_data_files(path) == []
    assert model_file_digest(path) == file_digest(path)
    other = tmp_path / "tagger.pt"
    other.write_bytes(b"not onnx")
    assert external_data_files(other) == [] and model_file_digest(other) == file_digest(other)
