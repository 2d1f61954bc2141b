"""Write the ONNX backend node tests of the quantized ops as model.onnx + test_data_set_0/*.pb,
the layout of onnx/backend/test/data/node (the onnx wheel ships the generators, not the files).

Run from the repository root: ``.venv/bin/python tests/data/onnx_node_quantized/make_cases.py``.
Made with onnx 1.23.2; the expected outputs are ONNX's own reference values.
"""
from __future__ import annotations

import importlib
import pathlib
import shutil

import numpy as np
import onnx
import onnx.backend.test.case.node as node_cases
from onnx import numpy_helper

MODULES = ["quantizelinear", "dequantizelinear", "qlinearconv", "qlinearmatmul",
           "matmulinteger", "convinteger", "dynamicquantizelinear"]


def _tensor(value, name: str) -> onnx.TensorProto:
    if isinstance(value, onnx.TensorProto):
        t = onnx.TensorProto()
        t.CopyFrom(value)
        t.name = name
        return t
    return numpy_helper.from_array(np.asarray(value), name)


def main() -> None:
    here = pathlib.Path(__file__).parent
    for module in MODULES:
        importlib.import_module(f"onnx.backend.test.case.node.{module}")
    for case in node_cases._NodeTestCases:   # filled by the imports above
        out = here / case.name
        shutil.rmtree(out, ignore_errors=True)
        (out / "test_data_set_0").mkdir(parents=True)
        onnx.save(case.model, out / "model.onnx")
        inputs, outputs = case.data_sets[0]
        for i, (info, value) in enumerate(zip(case.model.graph.input, inputs)):
            (out / "test_data_set_0" / f"input_{i}.pb").write_bytes(
                _tensor(value, info.name).SerializeToString())
        for i, (info, value) in enumerate(zip(case.model.graph.output, outputs)):
            (out / "test_data_set_0" / f"output_{i}.pb").write_bytes(
                _tensor(value, info.name).SerializeToString())


if __name__ == "__main__":
    main()
