"""The ONNX backend node tests of the quantized ops, run through qsim.load_onnx + qsim.run.

The cases (model.onnx + test_data_set_0/*.pb, the layout of onnx/backend/test/data/node) were
written by tests/data/onnx_node_quantized/make_cases.py from onnx 1.23.2's generators. Each
integer case must equal ONNX's expected outputs bit for bit and ONNX Runtime's outputs on the
same model. The float8 / float4 / 2-bit cases are types qsim does not implement: they must fail
with a one-line qsim error instead.
"""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import qsim
from qsim.errors import QsimError

DATA = pathlib.Path(__file__).parent.parent / "data" / "onnx_node_quantized"
CASES = sorted(p.name for p in DATA.iterdir() if (p / "model.onnx").exists())
UNSUPPORTED = ("e4m3fn", "e5m2", "float4e2m1", "int2", "uint2")
INTEGER_CASES = [c for c in CASES if not any(u in c for u in UNSUPPORTED)]
OTHER_CASES = [c for c in CASES if c not in INTEGER_CASES]
#: cases ONNX Runtime 1.32 refuses to run ("Non per-tensor quantization is not supported now":
#: a per-channel w_zero_point in ConvInteger); qsim follows ONNX's expected outputs there
ORT_REJECTS = {"test_convinteger_with_padding"}
_OPTIONS = ort.SessionOptions()
_OPTIONS.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def _load(case: str):
    model = onnx.load(DATA / case / "model.onnx")
    data = DATA / case / "test_data_set_0"
    inputs = [numpy_helper.to_array(onnx.load_tensor(data / f"input_{i}.pb"))
              for i in range(len(model.graph.input))]
    outputs = [numpy_helper.to_array(onnx.load_tensor(data / f"output_{i}.pb"))
               for i in range(len(model.graph.output))]
    return model, inputs, outputs


def _as_comparable(a: np.ndarray) -> np.ndarray:
    """Raw bits of floats; int4/uint4 (ml_dtypes) as int8."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return a.view(f"u{a.itemsize}")
    if a.dtype.name in ("int4", "uint4"):
        return a.astype(np.int8)
    return a


def _ort_outputs(model, inputs):
    """ONNX Runtime on the same model: int4 inputs become initializers (its Python API cannot
    feed them), an int4 output is fetched through Cast(to=int8); opset capped at 21 when the
    model's opset is newer than ONNX Runtime knows (the ops' semantics are unchanged)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    feeds = {}
    for info, value in zip(list(model.graph.input), inputs):
        if value.dtype.name in ("int4", "uint4"):
            model.graph.initializer.append(numpy_helper.from_array(value, info.name))
            model.graph.input.remove(info)
        else:
            feeds[info.name] = value
    for i, out in enumerate(model.graph.output):
        if out.type.tensor_type.elem_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            raw = f"{out.name}_int4"
            for node in model.graph.node:
                node.output[:] = [raw if o == out.name else o for o in node.output]
            model.graph.node.append(onnx.helper.make_node("Cast", [raw], [out.name],
                                                          to=onnx.TensorProto.INT8))
            out.type.tensor_type.elem_type = onnx.TensorProto.INT8
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = min(imp.version, 21)
    model.ir_version = min(model.ir_version, 10)
    sess = ort.InferenceSession(model.SerializeToString(), _OPTIONS,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("case", INTEGER_CASES)
def test_backend_node_case(case):
    model, inputs, expected = _load(case)
    graph = qsim.load_onnx(model)
    got = qsim.run(graph, {i.name: v for i, v in zip(model.graph.input, inputs)})
    names = [o.name for o in model.graph.output]
    if case in ORT_REJECTS:
        with pytest.raises(Exception, match="not supported"):
            _ort_outputs(model, inputs)
        ort_out = expected
    else:
        ort_out = _ort_outputs(model, inputs)
    for name, e, o in zip(names, expected, ort_out):
        g = np.asarray(got[name])
        assert g.dtype == e.dtype and g.shape == e.shape, f"{case} {name}: {g.dtype}{g.shape}"
        np.testing.assert_array_equal(_as_comparable(g), _as_comparable(e),
                                      err_msg=f"{case} {name} vs ONNX's expected output")
        np.testing.assert_array_equal(_as_comparable(g), _as_comparable(o),
                                      err_msg=f"{case} {name} vs ONNX Runtime")


@pytest.mark.parametrize("case", OTHER_CASES)
def test_backend_node_case_of_unsupported_type_fails_cleanly(case):
    model, inputs, _ = _load(case)
    with pytest.raises(QsimError) as info:
        graph = qsim.load_onnx(model)
        qsim.run(graph, {i.name: v for i, v in zip(model.graph.input, inputs)})
    assert "\n" not in str(info.value)
