"""Run a single ONNX op in ONNX Runtime and in qsim's op library, for parity tests."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from qsim.ops import OPS


class CalibrationBatches:
    """An ONNX Runtime quantizer ``CalibrationDataReader`` over ``x`` in batches of ``batch``
    (feeds ``{"input": ...}``, the digits CNN's input)."""

    def __init__(self, x: np.ndarray, batch: int = 16):
        self._it = iter([{"input": x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self._it, None)


def converted_model(source, path, opset: int):
    """``source`` (an .onnx path) converted to ``opset`` by onnx's version converter, saved at
    ``path`` (16- and 4-bit QuantizeLinear need opset 21); returns ``path``."""
    onnx.save(onnx.version_converter.convert_version(onnx.load(source), opset), path)
    return path

def session_options(threads: int = 1) -> ort.SessionOptions:
    """AIMET's simulation session: graph optimizations off, ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    return options


def ort_run_op(op_type: str, inputs: list, attrs: dict | None = None, *, noutputs: int = 1,
               opset: int = 17, initializers: "tuple[int, ...] | list[int]" = (),
               threads: int = 1, domain: str = "") -> list[np.ndarray]:
    """Run ``op_type`` on ``inputs`` (arrays, or None for an absent optional input) in ORT.

    ``domain`` (e.g. ``"com.microsoft"``) is the node's op domain; the model then imports it at
    version 1 besides the default domain at ``opset``.

    Inputs whose index is in ``initializers`` are stored as initializers (some ops require
    constant shape/axes inputs to be initializers to type-check; ORT pre-packs a MatMul/Gemm B
    stored so)."""
    attrs = dict(attrs or {})
    names, graph_inputs, inits, feeds = [], [], [], {}
    for i, a in enumerate(inputs):
        if a is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        a = np.asarray(a)
        if i in initializers:
            inits.append(numpy_helper.from_array(a, name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape))
            feeds[name] = a
    while names and names[-1] == "":
        names.pop()
    outs = [f"out{i}" for i in range(noutputs)]
    node = helper.make_node(op_type, names, outs, domain=domain or None, **attrs)
    graph = helper.make_graph([node], "single_op", graph_inputs,
                              [helper.make_value_info(o, onnx.TypeProto()) for o in outs],
                              initializer=inits)
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = min(model.ir_version, 9)
    sess = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def qsim_run_op(op_type: str, inputs: list, attrs: dict | None = None, *,
                noutputs: int = 1, opset: int = 17) -> list[np.ndarray]:
    """Call qsim's implementation directly, with the registry's calling convention (``opset``
    goes to ops that take the internal ``opset`` keyword)."""
    from qsim.ops.registry import internal_keywords
    args = list(inputs)
    while args and args[-1] is None:
        args.pop()
    kwargs = dict(attrs or {})
    if "noutputs" in internal_keywords(OPS[op_type]):
        kwargs["noutputs"] = noutputs
    if "opset" in internal_keywords(OPS[op_type]):
        kwargs["opset"] = opset
    result = OPS[op_type](*args, **kwargs)
    return list(result) if isinstance(result, tuple) else [result]


def assert_op_matches_ort(op_type: str, inputs: list, attrs: dict | None = None, *,
                          noutputs: int = 1, opset: int = 17, rtol: float = 1e-5,
                          atol: float = 1e-6, initializers: tuple[int, ...] = ()) -> None:
    """qsim's op equals ORT's on the same inputs: same dtype, shape, values to rtol/atol."""
    expected = ort_run_op(op_type, inputs, attrs, noutputs=noutputs, opset=opset,
                          initializers=initializers)
    got = qsim_run_op(op_type, inputs, attrs, noutputs=noutputs, opset=opset)
    assert len(got) >= len(expected)
    for i, (e, g) in enumerate(zip(expected, got)):
        g = np.asarray(g)
        assert g.shape == e.shape, f"{op_type} output {i}: shape {g.shape} != ORT {e.shape}"
        assert g.dtype == e.dtype, f"{op_type} output {i}: dtype {g.dtype} != ORT {e.dtype}"
        if e.dtype.kind in "fc":
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{op_type} output {i}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"{op_type} output {i}")


def ort_and_qsim(op_type: str, inputs: list, attrs: dict | None = None, *, opset: int,
                 noutputs: int = 1, initializers: tuple[int, ...] = (), domain: str = ""
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(ORT's outputs, qsim's outputs)`` of one op at ``opset``, after checking qsim gives at
    least ORT's outputs, each with ORT's dtype and shape (ORT's warnings silenced)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ort_run_op(op_type, inputs, attrs, noutputs=noutputs, opset=opset,
                              initializers=initializers, domain=domain)
    got = [np.asarray(g) for g in
           qsim_run_op(op_type, inputs, attrs, noutputs=noutputs, opset=opset)]
    assert len(got) >= len(expected), f"{op_type}-{opset}: {len(got)} outputs, ORT {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        assert (g.dtype, g.shape) == (e.dtype, e.shape), f"{op_type}-{opset} output {i}"
    return expected, got


def assert_ort_bits(op_type: str, inputs: list, attrs: dict | None = None, *, opset: int,
                    noutputs: int = 1) -> None:
    """qsim's op gives ORT's outputs exactly: the same bits for floats (signed zeros and NaN
    payloads included), the same values otherwise (:func:`ort_and_qsim` checks dtypes and
    shapes)."""
    expected, got = ort_and_qsim(op_type, inputs, attrs, opset=opset, noutputs=noutputs)
    for e, g in zip(expected, got):
        if e.dtype.kind == "f":
            e, g = e.view(np.uint8), g.view(np.uint8)
        np.testing.assert_array_equal(g, e, err_msg=op_type)
