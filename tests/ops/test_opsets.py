"""Opset-dependent semantics against ONNX Runtime running the op at THAT opset.

Every case builds a one-node model stamped with the opset under test (``ort_run_op(...,
opset=N)``) and gives qsim the same opset through the registry's ``opset`` keyword; float32
results must be bit-identical unless a test says otherwise."""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, TensorProto

import qsim
from qsim.errors import OpError
from tests.ort_util import ort_and_qsim, ort_run_op, qsim_run_op

SETTINGS = settings(max_examples=20, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def rand(seed, shape, lo=-4.0, hi=4.0):
    return np.random.default_rng(seed).uniform(lo, hi, size=shape).astype(np.float32)


def assert_exact(op, inputs, attrs=None, *, opset, noutputs=1, initializers=()):
    """qsim == ORT at ``opset``: same count, dtype, shape and bits (NaN == NaN)."""
    expected, got = ort_and_qsim(op, inputs, attrs, opset=opset, noutputs=noutputs,
                                 initializers=initializers)
    for i, (e, g) in enumerate(zip(expected, got)):
        np.testing.assert_array_equal(g, e, err_msg=f"{op}-{opset} output {i}")


# ------------------------------------------------------------------ softmax family (<= 12)

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [11, 12, 13])
@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), data=st.data(), seed=seeds)
def test_softmax_family_every_opset(op, opset, shape, data, seed):
    rank = len(shape)
    axis = data.draw(st.none() | st.integers(-rank, rank - 1))
    if axis is None and opset <= 12 and rank < 2:
        axis = 0  # the default axis 1 needs rank >= 2
    x = rand(seed, shape)
    if op == "Hardmax":
        x = np.round(x)  # ties: the first maximum wins
    assert_exact(op, [x], {} if axis is None else {"axis": axis}, opset=opset)


def _softmax_model(opset: int):
    node = helper.make_node("Softmax", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [1, 1000, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def test_squeezenet_softmax_at_opset_9_flattens_from_axis_1():
    """The zoo squeezenet ends in Softmax over (1, 1000, 1, 1) at an old opset: every class gets
    ~0.001, not the 1.0 that opset 13's last-axis softmax gives."""
    import onnxruntime as ort
    model = _softmax_model(9)
    x = rand(3, (1, 1000, 1, 1), -0.01, 0.01)
    got = qsim.run(qsim.load_onnx(model), {"x": x})["y"]
    expected = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, expected)
    assert 0.0009 < got.min() and got.max() < 0.0011


# ------------------------------------------------------------------ old attribute forms

@pytest.mark.parametrize("opset", [6, 10])
@pytest.mark.parametrize("attrs", [{}, {"min": -0.5}, {"max": 1.5}, {"min": -1.0, "max": 2.0}])
def test_clip_attributes_before_opset_11(opset, attrs):
    x = np.array([-np.inf, -3.0, -0.75, 0.0, 1.0, 3.0, np.inf, np.nan], np.float32)
    assert_exact("Clip", [x], attrs, opset=opset)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@SETTINGS
@given(seed=seeds, pads=st.lists(st.integers(0, 2), min_size=6, max_size=6),
       value=st.floats(-3, 3, width=32))
def test_pad_attributes_before_opset_11(mode, seed, pads, value):
    x = rand(seed, (2, 3, 4))
    if mode == "reflect":  # at most size - 1 on each side (ORT refuses more)
        pads = [min(p, d - 1) for p, d in zip(pads, (2, 3, 4) * 2)]
    attrs = {"pads": pads, "mode": mode}
    if mode == "constant":
        attrs["value"] = value
    assert_exact("Pad", [x], attrs, opset=10)


@SETTINGS
@given(seed=seeds, data=st.data())
def test_slice_attributes_before_opset_10(seed, data):
    x = rand(seed, (4, 5, 6))
    axes = data.draw(st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True))
    starts = [data.draw(st.integers(-7, 7)) for _ in axes]
    ends = [data.draw(st.integers(-7, 7) | st.just(2**63 - 1)) for _ in axes]
    attrs = {"starts": starts, "ends": ends}
    if data.draw(st.booleans()):
        attrs["axes"] = axes
    else:
        attrs["starts"], attrs["ends"] = starts, ends
    assert_exact("Slice", [x], attrs, opset=9)


@pytest.mark.parametrize("opset", [7, 10, 12, 13])
def test_dropout_ratio_attribute_and_mask_by_opset(opset):
    x = rand(1, (2, 3))
    attrs = {"ratio": 0.3} if opset < 12 else {}
    assert_exact("Dropout", [x], attrs, opset=opset, noutputs=2)
    assert_exact("Dropout", [x], attrs, opset=opset)


@pytest.mark.parametrize("spatial", [0, 1])
@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=2, max_size=4))
def test_batch_norm_spatial_attribute_at_opset_7(spatial, seed, shape):
    x = rand(seed, shape)
    pshape = tuple(shape[1:]) if spatial == 0 else (shape[1],)
    scale, b, mean = (rand(seed + i, pshape) for i in (1, 2, 3))
    var = rand(seed + 4, pshape, 0.1, 2.0)
    assert_exact("BatchNormalization", [x, scale, b, mean, var], {"spatial": spatial,
                                                                  "epsilon": 1e-3}, opset=7)


def test_training_modes_are_refused_or_computed_as_ort():
    x = rand(0, (2, 3, 2))
    c = np.ones(3, np.float32)
    with pytest.raises(OpError, match="is_test=0"):
        qsim_run_op("BatchNormalization", [x, c, c, c, c], {"is_test": 0}, opset=6)
    with pytest.raises(OpError, match="is_test=0"):
        qsim_run_op("Dropout", [x], {"is_test": 0}, opset=6)
    with pytest.raises(OpError, match="training_mode is true"):
        qsim_run_op("Dropout", [x, None, np.array(True)], opset=13)
    # training_mode=1 without its 3 outputs: ORT refuses the node, and so does qsim
    with pytest.raises(Exception, match="should be 3 when Training_mode"):
        ort_run_op("BatchNormalization", [x, c, c, c, c], {"training_mode": 1}, opset=15)
    with pytest.raises(OpError, match="training_mode=1 with 1 output"):
        qsim_run_op("BatchNormalization", [x, c, c, c, c], {"training_mode": 1}, opset=15)


@pytest.mark.parametrize("op,opset,attrs,inputs", [
    ("Split", 11, {"split": [1, 3], "axis": 1}, []),
    ("Squeeze", 11, {"axes": [0]}, []),
    ("Unsqueeze", 11, {"axes": [0, 3]}, []),
    ("ReduceSum", 11, {"axes": [1], "keepdims": 0}, []),
    ("ReduceMean", 17, {"axes": [-1]}, []),
    ("ReduceMax", 18, {}, [np.array([1], np.int64)]),
    ("ReduceSum", 13, {}, [np.array([0, 2], np.int64)]),
])
def test_attribute_and_input_forms(op, opset, attrs, inputs):
    x = rand(7, (1, 4, 3))
    noutputs = 2 if op == "Split" else 1
    assert_exact(op, [x, *inputs], attrs, opset=opset, noutputs=noutputs,
                 initializers=tuple(range(1, 1 + len(inputs))))


# ------------------------------------------------------------------ Mod, reductions

@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=0, max_size=3))
def test_mod_fmod0_floats_at_opset_28(seed, shape):
    a = rand(seed, shape, -20, 20)
    b = rand(seed + 1, shape, 0.5, 4) * np.where(rand(seed + 2, shape) > 0, 1, -1).astype(np.float32)
    a.reshape(-1)[:1] = 0.0
    assert_exact("Mod", [a, b], {"fmod": 0}, opset=28)


def test_mod_fmod0_floats_refused_before_opset_28_as_ort_does():
    a = np.ones(3, np.float32)
    with pytest.raises(Exception, match="opset 28"):
        ort_run_op("Mod", [a, a], {"fmod": 0}, opset=21)
    with pytest.raises(OpError, match="opset >= 28"):
        qsim_run_op("Mod", [a, a], {"fmod": 0}, opset=21)


REDUCE_OPS = ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean", "ReduceL1",
              "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"]


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_over_an_empty_set(op, keepdims):
    x = np.zeros((2, 0, 3), np.float32)
    assert_exact(op, [x, np.array([1], np.int64)], {"keepdims": keepdims}, opset=18,
                 initializers=(1,))


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("noop", [0, 1])
def test_reduce_with_an_empty_axes_input(op, noop):
    x = rand(5, (2, 3))
    assert_exact(op, [x, np.array([], np.int64)], {"noop_with_empty_axes": noop}, opset=18,
                 initializers=(1,))


# ------------------------------------------------------------------ AveragePool >= 19

@pytest.mark.parametrize("opset", [11, 19, 22])
@settings(max_examples=40, deadline=None)
@given(seed=seeds, data=st.data())
def test_average_pool_every_opset_bit_exact(opset, seed, data):
    nsp = data.draw(st.integers(1, 3))
    spatial = [data.draw(st.integers(5, 8)) for _ in range(nsp)]  # >= the dilated kernel
    kernel = [data.draw(st.integers(1, 3)) for _ in range(nsp)]
    attrs = {"kernel_shape": kernel,
             "strides": [data.draw(st.integers(1, 2)) for _ in range(nsp)],
             "pads": [data.draw(st.integers(0, k - 1)) for k in kernel * 2],
             "count_include_pad": data.draw(st.integers(0, 1)),
             "ceil_mode": data.draw(st.integers(0, 1))}
    if opset >= 19:
        attrs["dilations"] = [data.draw(st.integers(1, 2)) for _ in range(nsp)]
    x = rand(seed, [2, 3] + spatial)
    assert_exact("AveragePool", [x], attrs, opset=opset)


# ------------------------------------------------------------------ Resize-10, Upsample

@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 1.5, 3], [1, 1, 0.5, 0.75],
                                    [1, 1, 2.5, 0.6]])
def test_resize_opset_10(mode, scales):
    x = rand(2, (1, 2, 4, 5))
    assert_exact("Resize", [x, np.array(scales, np.float32)], {"mode": mode}, opset=10,
                 initializers=(1,))


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("opset", [7, 8, 9])
@pytest.mark.parametrize("scales", [[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 1.5, 3.0], [1.0, 2.0, 3.0, 1.0]])
def test_upsample(mode, opset, scales):
    x = rand(4, (1, 2, 3, 4))
    if mode == "linear" and scales[1] != 1:
        # scales on axes 1-2 make ORT take its NHWC bilinear kernel, whose weights round
        # differently: equal to 1 ulp there (not claimed bit-exact)
        attrs = {"mode": mode, "scales": scales} if opset < 9 else {"mode": mode}
        inputs = [x] if opset < 9 else [x, np.array(scales, np.float32)]
        expected = ort_run_op("Upsample", inputs, attrs, opset=opset,
                              initializers=(1,) if opset >= 9 else ())[0]
        got = qsim_run_op("Upsample", inputs, attrs, opset=opset)[0]
        np.testing.assert_allclose(got, expected, rtol=2.4e-7, atol=1e-7)
        return
    if opset < 9:
        assert_exact("Upsample", [x], {"mode": mode, "scales": scales}, opset=opset)
    else:
        assert_exact("Upsample", [x, np.array(scales, np.float32)], {"mode": mode},
                     opset=opset, initializers=(1,))


# ------------------------------------------------------------------ opsets 1-6 broadcasting

@pytest.mark.parametrize("op,fn", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                                   ("Div", np.divide)])
def test_legacy_broadcast_with_axis(op, fn):
    """ONNX Runtime does not run opsets < 7; the spec's rule: B's axes match A's from ``axis``
    (the shipped pytorch-operator models check the trailing form against PyTorch's outputs)."""
    a, b = rand(1, (2, 3, 4)), rand(2, (3,), 0.5, 2)
    np.testing.assert_array_equal(qsim_run_op(op, [a, b], {"broadcast": 1, "axis": 1}, opset=6)[0],
                                  fn(a, b[:, None]))
    np.testing.assert_array_equal(qsim_run_op(op, [a, b[:1]], {"broadcast": 1}, opset=6)[0],
                                  fn(a, b[:1]))
    with pytest.raises(OpError, match="broadcast=0"):
        qsim_run_op(op, [a, b], {"broadcast": 0}, opset=6)


# ------------------------------------------------------------------ training BatchNormalization

@pytest.mark.parametrize("opset,noutputs", [(15, 3), (14, 3), (9, 5), (12, 5)])
@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 6), min_size=2, max_size=4),
       momentum=st.sampled_from([0.9, 0.1, 0.37]))
def test_batch_norm_training_outputs_as_ort(opset, noutputs, seed, shape, momentum):
    """ORT trains exactly when the node has more than one output: batch statistics, running
    mean/var (and at opsets < 14 the saved mean and inverse std), bit for bit."""
    x = rand(seed, shape, -3, 5)
    c = shape[1]
    scale, b, mean = (rand(seed + i, (c,)) for i in (1, 2, 3))
    var = rand(seed + 4, (c,), 0.1, 2.0)
    attrs = {"epsilon": 1e-3, "momentum": momentum}
    if opset >= 14:
        attrs["training_mode"] = 1
    assert_exact("BatchNormalization", [x, scale, b, mean, var], attrs, opset=opset,
                 noutputs=noutputs)


# ------------------------------------------------------------------ cubic Resize

@pytest.mark.parametrize("mode", ["half_pixel", "align_corners", "asymmetric",
                                  "pytorch_half_pixel"])
@SETTINGS
@given(seed=seeds, hw=st.tuples(st.integers(2, 6), st.integers(2, 6)),
       scales=st.tuples(st.sampled_from([0.5, 0.8, 1.5, 2.0, 3.0]),
                        st.sampled_from([0.6, 1.0, 1.7, 2.0])))
def test_cubic_resize_bit_exact(mode, seed, hw, scales):
    """ORT's bicubic interpolates along W first, then H: the same order gives its bits."""
    x = rand(seed, (1, 2) + hw)
    assert_exact("Resize", [x, np.zeros(0, np.float32), np.array((1, 1) + scales, np.float32)],
                 {"mode": "cubic", "coordinate_transformation_mode": mode}, opset=13,
                 initializers=(1, 2))


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@SETTINGS
@given(seed=seeds, hw=st.tuples(st.integers(2, 6), st.integers(2, 6)),
       out=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       roi=st.lists(st.floats(-0.25, 1.25, width=32), min_size=4, max_size=4))
def test_tf_crop_and_resize_bit_exact(mode, seed, hw, out, roi):
    x = rand(seed, (1, 2) + hw)
    roi_all = np.array([0, 0, roi[0], roi[1], 1, 1, roi[2], roi[3]], np.float32)
    sizes = np.array((1, 2) + out, np.int64)
    assert_exact("Resize", [x, roi_all, np.zeros(0, np.float32), sizes],
                 {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize",
                  "extrapolation_value": -7.5}, opset=13, initializers=(1, 2, 3))
