"""Bit operations, Compress, ReverseSequence, EyeLike, Unique, MaxUnpool and NonMaxSuppression against ONNX
Runtime on Hypothesis-drawn inputs: all bit-identical (integer results, selections, and
NonMaxSuppression's float32 IoU and heap order, ties in score included); NonMaxSuppression's
Numba kernel and NumPy twin are also compared directly."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.errors import OpError
from qsim.ops import OPS
from qsim.ops import detection
from tests.ort_util import assert_ort_bits as exact

SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**32 - 1)
INTEGERS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


def ints(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def broadcast_pair(data):
    shape = data.draw(st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple))
    other = tuple(1 if data.draw(st.booleans()) else d for d in shape)
    return (shape, other) if data.draw(st.booleans()) else (other, shape)


# ---- bit operations -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", INTEGERS)
@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
@SETTINGS
@given(seed=seeds, data=st.data())
def test_bitwise_binary(op, dtype, seed, data):
    rng = np.random.default_rng(seed)
    sa, sb = broadcast_pair(data)
    exact(op, [ints(rng, dtype, sa), ints(rng, dtype, sb)], opset=18)


@pytest.mark.parametrize("dtype", INTEGERS)
@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 4), max_size=3).map(tuple))
def test_bitwise_not(dtype, seed, shape):
    exact("BitwiseNot", [ints(np.random.default_rng(seed), dtype, shape)], opset=18)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@SETTINGS
@given(seed=seeds, data=st.data())
def test_bit_shift_unsigned(direction, dtype, seed, data):
    """Opset 11's unsigned shifts below the type's width."""
    rng = np.random.default_rng(seed)
    sa, sb = broadcast_pair(data)
    width = 8 * np.dtype(dtype).itemsize
    amount = rng.integers(0, width, size=sb).astype(dtype)
    exact("BitShift", [ints(rng, dtype, sa), amount], {"direction": direction}, opset=11)


@pytest.mark.parametrize("dtype", INTEGERS)
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@SETTINGS
@given(seed=seeds, data=st.data())
def test_bit_shift_opset28(direction, dtype, seed, data):
    """Opset 28: signed types, and shifts that are negative or reach the width."""
    rng = np.random.default_rng(seed)
    sa, sb = broadcast_pair(data)
    width = 8 * np.dtype(dtype).itemsize
    low = -width - 3 if np.dtype(dtype).kind == "i" else 0
    amount = rng.integers(low, 2 * width + 3, size=sb).astype(dtype)
    exact("BitShift", [ints(rng, dtype, sa), amount], {"direction": direction}, opset=28)


def test_bit_shift_types_are_checked():
    x = np.array([1, 255], np.uint8)
    with pytest.raises(OpError, match="BitShift: input 0 has type float32"):
        OPS["BitShift"](x.astype(np.float32), x.astype(np.float32), direction="LEFT")
    with pytest.raises(OpError, match="BitwiseAnd: inputs have types"):
        OPS["BitwiseAnd"](x, x.astype(np.uint16))
    with pytest.raises(OpError, match="direction='UP'"):
        OPS["BitShift"](x, x, direction="UP")


# ---- selections ---------------------------------------------------------------------------

@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       data=st.data())
def test_compress(seed, shape, data):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    axis = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    full = x.size if axis is None else shape[axis]
    cond = rng.random(data.draw(st.integers(0, full))) < 0.5
    exact("Compress", [x, cond], {} if axis is None else {"axis": axis}, opset=11)


@SETTINGS
@given(seed=seeds, batch=st.integers(1, 4), steps=st.integers(1, 5), rest=st.integers(1, 3),
       batch_axis=st.integers(0, 1))
def test_reverse_sequence(seed, batch, steps, rest, batch_axis):
    rng = np.random.default_rng(seed)
    shape = (batch, steps, rest) if batch_axis == 0 else (steps, batch, rest)
    lens = rng.integers(0, steps, size=batch, endpoint=True).astype(np.int64)
    exact("ReverseSequence", [rng.standard_normal(shape).astype(np.float32), lens],
          {"batch_axis": batch_axis, "time_axis": 1 - batch_axis}, opset=10)


@pytest.mark.parametrize("dtype", [None, 1, 7, 6, 11])
@SETTINGS
@given(rows=st.integers(1, 5), cols=st.integers(1, 5), k=st.integers(-6, 6))
def test_eye_like(dtype, rows, cols, k):
    attrs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    exact("EyeLike", [np.zeros((rows, cols), np.float32)], attrs, opset=9)


@pytest.mark.parametrize("kind", ["float32", "int64", "int8"])
@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
       data=st.data())
def test_unique(kind, seed, shape, data):
    """Few distinct values (many repeats), ±0.0 both present for floats."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(kind)
    if kind == "float32":
        x = np.where(rng.random(shape) < 0.3, np.float32(-0.0), x).astype(np.float32)
    attrs = {"sorted": data.draw(st.integers(0, 1))}
    axis = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    if axis is not None:
        attrs["axis"] = axis
    exact("Unique", [x], attrs, opset=11, noutputs=4)


def test_unique_refuses_nan():
    with pytest.raises(OpError, match="Unique: input holds NaN"):
        OPS["Unique"](np.array([1.0, np.nan], np.float32))


# ---- NonMaxSuppression -----------------------------------------------------------------------

def _nms_inputs(rng, batches, classes, n, center, tie_scores):
    if center:
        boxes = np.concatenate([rng.uniform(0, 10, (batches, n, 2)),
                                rng.uniform(-1, 6, (batches, n, 2))], axis=2)
    else:
        boxes = rng.uniform(0, 10, (batches, n, 4))
    boxes = np.round(boxes * 2) / 2                       # equal edges and zero-area boxes too
    scores = rng.random((batches, classes, n))
    if tie_scores:
        scores = np.round(scores * 3) / 3                 # many equal scores: the heap decides
    return boxes.astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize("center", [0, 1])
@SETTINGS
@given(seed=seeds, batches=st.integers(1, 2), classes=st.integers(1, 3), n=st.integers(0, 40),
       ties=st.booleans(), data=st.data())
def test_non_max_suppression(center, seed, batches, classes, n, ties, data):
    rng = np.random.default_rng(seed)
    boxes, scores = _nms_inputs(rng, batches, classes, n, center, ties)
    if data.draw(st.booleans()):
        scores[rng.random(scores.shape) < 0.15] = np.nan   # NaN: the heap's own order
    if data.draw(st.booleans()):                            # NaN / inf / -0 edges
        odd = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, -0.0]))
        boxes[rng.random(boxes.shape) < 0.1] = odd
    limit = np.array([data.draw(st.integers(0, 50))], np.int64)
    iou = np.array([data.draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1 / 3, 0.9, 1.0]))],
                   np.float32)
    inputs = [boxes, scores, limit, iou]
    if data.draw(st.booleans()):
        inputs.append(np.array([data.draw(st.sampled_from([0.0, 1 / 3, 0.5]))], np.float32))
    exact("NonMaxSuppression", inputs, {"center_point_box": center}, opset=11)


@SETTINGS
@given(seed=seeds, n=st.integers(0, 60), center=st.booleans(), limit=st.integers(1, 70),
       nan=st.booleans())
def test_nms_kernel_equals_numpy_twin(seed, n, center, limit, nan):
    rng = np.random.default_rng(seed)
    boxes, scores = _nms_inputs(rng, 1, 1, n, center, True)
    if nan:
        scores[0, 0, rng.random(n) < 0.2] = np.nan
    order = detection.heap_pop_order(scores[0, 0], np.ones(n, np.bool_))
    assert sorted(order.tolist()) == list(range(n))
    if not nan:    # a total order: higher score first, then lower index
        assert order.tolist() == sorted(range(n), key=lambda i: (-scores[0, 0, i], i))
    args = (*detection.edges(boxes[0], center), order, np.float32(0.3), limit)
    np.testing.assert_array_equal(detection._select_kernel(*args), detection._select_numpy(*args))


def test_nms_center_boxes_area_from_their_edges():
    """Pairs of center-format boxes whose IoU rounds differently with ``area = w·h`` and with
    ``area = (x_max - x_min)·(y_max - y_min)``, the threshold set between the two: ONNX Runtime
    decides as the edges say, and so must qsim."""
    f32 = np.float32
    rng = np.random.default_rng(7)
    checked = 0
    while checked < 12:
        kept = rng.uniform(0.1, 3, 4).astype(f32)
        other = (kept + rng.uniform(-0.3, 0.3, 4)).astype(f32)
        boxes = np.stack([kept, other])[None]
        x0, x1, y0, y1, area = detection.edges(boxes[0], True)
        inter = (min(x1) - max(x0)) * (min(y1) - max(y0))
        by_edges = inter / (area[0] + area[1] - inter)
        wh = boxes[0, :, 2] * boxes[0, :, 3]
        by_wh = inter / (wh[0] + wh[1] - inter)
        if by_edges == by_wh or not 0 < min(by_edges, by_wh) < 1 or inter <= 0:
            continue
        threshold = np.array([min(by_edges, by_wh)], f32)
        exact("NonMaxSuppression", [boxes, np.array([[[0.9, 0.8]]], f32), np.array([5]),
                                    threshold], {"center_point_box": 1}, opset=11)
        checked += 1


def test_nms_bad_inputs_are_named():
    boxes, scores = np.zeros((1, 3, 4), np.float32), np.zeros((1, 2, 3), np.float32)
    with pytest.raises(OpError, match=r"scores has float32\[1, 2, 4\], expected float32\[1, "
                                      r"classes, 3\]"):
        OPS["NonMaxSuppression"](boxes, np.zeros((1, 2, 4), np.float32))
    with pytest.raises(OpError, match=r"iou_threshold=1.5 must be in \[0, 1\]"):
        OPS["NonMaxSuppression"](boxes, scores, np.array([3]), np.array([1.5], np.float32))
    assert OPS["NonMaxSuppression"](boxes, scores).shape == (0, 3)   # no limit: nothing kept


# ---- MaxUnpool ---------------------------------------------------------------------------------

@SETTINGS
@given(seed=seeds, spatial=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data())
def test_max_unpool(seed, spatial, data):
    """Random indices into the output, repeats included (the last write wins)."""
    rng = np.random.default_rng(seed)
    kernel = [data.draw(st.integers(1, 3)) for _ in spatial]
    strides = [data.draw(st.integers(1, 3)) for _ in spatial]
    out = [(s - 1) * t + k for s, t, k in zip(spatial, strides, kernel)]
    x = rng.standard_normal([2, 2] + spatial).astype(np.float32)
    inputs = [x, None]
    total = 4 * int(np.prod(out))
    if data.draw(st.booleans()):
        bigger = [2, 2] + [o + data.draw(st.integers(0, 2)) for o in out]
        inputs.append(np.array(bigger, np.int64))
        total = int(np.prod(bigger))
    inputs[1] = rng.integers(0, total, size=x.shape).astype(np.int64)
    exact("MaxUnpool", inputs, {"kernel_shape": kernel, "strides": strides}, opset=11)


def test_max_unpool_refuses_out_of_range_indices():
    x = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(OpError, match=r"an index lies outside \[0, 9\)"):
        OPS["MaxUnpool"](x, np.full(x.shape, 9, np.int64), kernel_shape=[2, 2])
