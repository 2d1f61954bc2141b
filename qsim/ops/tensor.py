"""Shape and data-movement ONNX ops (opsets 13-21), constants, reductions and Range.

Calling convention as in :mod:`qsim.ops.registry`. Where ONNX moved an attribute to an input
(``axes`` of Squeeze/Unsqueeze/Reduce*, ``split`` of Split), both forms are accepted: the input
is the positional parameter, the attribute the keyword of the same ONNX name; giving both is an
error. Axis attributes and inputs may be negative (counted from the end).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import OpError
from ..kernels import libm
from ..kernels import mlas_math as math_exact
from .registry import register

# --------------------------------------------------------------------------------------------
# helpers


def _axis(op: str, name: str, axis, rank: int, *, extra: int = 0) -> int:
    """Normalise one axis in [-rank, rank + extra) to [0, rank + extra) (negatives add rank);
    ``extra=1`` for Flatten, whose axis may equal the rank."""
    if axis is None:
        raise OpError(f"{op}: attribute '{name}' is required")
    axis = int(axis)
    if not -rank <= axis < rank + extra:
        raise OpError(f"{op}: {name}={axis} out of range for a rank-{rank} input, "
                      f"expected {-rank} <= {name} <= {rank + extra - 1}")
    return axis + rank if axis < 0 else axis


def _axes(op: str, name: str, axes, rank: int) -> list[int]:
    """Normalise a list of distinct axes to [0, rank)."""
    result = [_axis(op, name, a, rank) for a in axes]
    if len(set(result)) != len(result):
        raise OpError(f"{op}: {name}={list(axes)} repeats an axis, expected distinct axes")
    return result


def _ints(op: str, name: str, value) -> list[int]:
    """A 1-D integer input (or attribute tuple) as a list of Python ints."""
    a = np.asarray(value)
    if a.dtype.kind not in "iu":
        raise OpError(f"{op}: input '{name}' has dtype {a.dtype}, expected int64 (or int32)")
    if a.ndim > 1:
        raise OpError(f"{op}: input '{name}' has shape {a.shape}, expected a 1-D tensor")
    return [int(v) for v in a.reshape(-1)]


def _input_or_attribute(op: str, name: str, from_input, from_attribute):
    """``name`` given as an input (new opsets) or as an attribute (old opsets), not both."""
    if from_input is not None and from_attribute is not None:
        raise OpError(f"{op}: '{name}' given both as an input and as an attribute, expected one")
    if from_input is not None:
        return _ints(op, name, from_input)
    if from_attribute is not None:
        return [int(v) for v in from_attribute]
    return None


# --------------------------------------------------------------------------------------------
# shape ops


@register("Flatten")
def flatten(x, *, axis=1):
    """Y = X reshaped to (prod(shape[:axis]), prod(shape[axis:])), 0 <= axis <= rank."""
    x = np.asarray(x)
    axis = _axis("Flatten", "axis", axis, x.ndim, extra=1)
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("Reshape")
def reshape(data, shape, *, allowzero=0):
    """Y = data with the target ``shape``: a 0 copies the input dimension at that index
    (unless allowzero=1, when 0 is a real zero), one -1 is inferred from the element count.

    >>> reshape(np.zeros((2, 3, 4)), np.array([0, -1])).shape
    (2, 12)
    """
    data = np.asarray(data)
    target = _ints("Reshape", "shape", shape)
    if target.count(-1) > 1:
        raise OpError(f"Reshape: input 'shape'={target} has more than one -1, expected at most one")
    if allowzero and 0 in target and -1 in target:
        raise OpError(f"Reshape: input 'shape'={target} has both 0 and -1 with allowzero=1")
    if any(d < -1 for d in target):
        raise OpError(f"Reshape: input 'shape'={target} has a dimension < -1")
    dims = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= data.ndim:
                raise OpError(f"Reshape: input 'shape'={target} copies dimension {i} (0) but the "
                              f"input {data.shape} has rank {data.ndim}")
            d = data.shape[i]
        dims.append(d)
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or data.size % known:
            raise OpError(f"Reshape: cannot reshape input {data.shape} ({data.size} elements) to "
                          f"'shape'={target}: the -1 dimension cannot be inferred")
        dims[dims.index(-1)] = data.size // known
    if math.prod(dims) != data.size:
        raise OpError(f"Reshape: cannot reshape input {data.shape} ({data.size} elements) to "
                      f"'shape'={target} ({math.prod(dims)} elements)")
    return data.reshape(dims)


@register("Transpose")
def transpose(data, *, perm=None):
    """Y = data with axes permuted: Y.shape[i] = data.shape[perm[i]] (default: reversed)."""
    data = np.asarray(data)
    if perm is None:
        perm = tuple(reversed(range(data.ndim)))
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(data.ndim)):
        raise OpError(f"Transpose: attribute perm={perm} is not a permutation of "
                      f"{list(range(data.ndim))} (the axes of the rank-{data.ndim} input)")
    return np.transpose(data, perm)


@register("Squeeze")
def squeeze(data, axes_input=None, *, axes=None):
    """Y = data without the listed size-1 axes (all size-1 axes when ``axes`` is absent or
    empty, as in ONNX Runtime). ``axes`` is an input from opset 13, an attribute before."""
    data = np.asarray(data)
    axes = _input_or_attribute("Squeeze", "axes", axes_input, axes)
    if not axes:
        return data.reshape([d for d in data.shape if d != 1])
    axes = _axes("Squeeze", "axes", axes, data.ndim)
    for a in axes:
        if data.shape[a] != 1:
            raise OpError(f"Squeeze: axes={axes} includes axis {a} of size {data.shape[a]} "
                          f"(input shape {data.shape}), expected only size-1 axes")
    return data.reshape([d for i, d in enumerate(data.shape) if i not in axes])


@register("Unsqueeze")
def unsqueeze(data, axes_input=None, *, axes=None):
    """Y = data with size-1 axes inserted at ``axes`` (indices in the output, rank r + len(axes)).
    ``axes`` is an input from opset 13, an attribute before."""
    data = np.asarray(data)
    axes = _input_or_attribute("Unsqueeze", "axes", axes_input, axes)
    if axes is None:
        raise OpError("Unsqueeze: 'axes' is required (input from opset 13, attribute before)")
    out_rank = data.ndim + len(axes)
    axes = _axes("Unsqueeze", "axes", axes, out_rank)
    dims = iter(data.shape)
    return data.reshape([1 if i in axes else next(dims) for i in range(out_rank)])


@register("Concat")
def concat(*inputs, axis=None):
    """Y = the inputs joined along ``axis``; all other dimensions must agree."""
    if not inputs:
        raise OpError("Concat: no inputs, expected at least one")
    arrays = [np.asarray(a) for a in inputs]
    rank = arrays[0].ndim
    axis = _axis("Concat", "axis", axis, rank)
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) > 1:
        raise OpError(f"Concat: inputs have dtypes {sorted(d.name for d in dtypes)}, "
                      f"expected one dtype")
    others = [a.shape[:axis] + a.shape[axis + 1:] if a.ndim == rank else None for a in arrays]
    if any(o != others[0] for o in others):
        raise OpError(f"Concat: input shapes {[a.shape for a in arrays]} differ outside "
                      f"axis={axis}, expected equal ranks and equal dimensions except on the axis")
    return np.concatenate(arrays, axis=axis)


@register("Split")
def split(data, split_input=None, *, axis=0, split=None, num_outputs=None, noutputs=1):
    """Outputs = data cut along ``axis`` into pieces of the ``split`` sizes (input from opset 13,
    attribute before). Without ``split``: ``num_outputs`` (opset 18) pieces of ceil(dim / n),
    the last one smaller; without either, ``noutputs`` equal pieces (dim must divide evenly).

    >>> [p.tolist() for p in split(np.arange(5), num_outputs=3, noutputs=3)]
    [[0, 1], [2, 3], [4]]
    """
    data = np.asarray(data)
    axis = _axis("Split", "axis", axis, data.ndim)
    dim = data.shape[axis]
    sizes = _input_or_attribute("Split", "split", split_input, split)
    if sizes is not None:
        if len(sizes) != noutputs or sum(sizes) != dim or min(sizes, default=0) < 0:
            raise OpError(f"Split: split={sizes} does not cut dimension {dim} (axis {axis}) into "
                          f"{noutputs} outputs, expected {noutputs} sizes >= 0 summing to {dim}")
    elif num_outputs is not None:
        if num_outputs != noutputs:
            raise OpError(f"Split: attribute num_outputs={num_outputs} but the node has "
                          f"{noutputs} outputs")
        size = -(-dim // num_outputs)
        last = dim - size * (num_outputs - 1)
        if last < 0:
            raise OpError(f"Split: num_outputs={num_outputs} pieces of {size} do not fit "
                          f"dimension {dim} (axis {axis})")
        sizes = [size] * (num_outputs - 1) + [last]
    else:
        if dim % noutputs:
            raise OpError(f"Split: dimension {dim} (axis {axis}) does not split evenly into "
                          f"{noutputs} outputs; give 'split' or 'num_outputs'")
        sizes = [dim // noutputs] * noutputs
    cuts = np.cumsum(sizes)[:-1]
    return tuple(np.split(data, cuts, axis=axis))


#: ends meaning "to the end of the axis" in ONNX Runtime, also for a negative step (then the
#: slice runs down to index 0 included)
_SLICE_TO_END = (2**31 - 1, 2**63 - 1)


def _slice_bounds(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice clamping: negatives count from the end, then for step > 0 start and end are
    clamped to [0, dim]; for step < 0 start to [0, dim-1] and end to [-1, dim-1] (-1 = before 0).
    As in ONNX Runtime, an end of INT32_MAX or INT64_MAX means "through the last element in the
    step's direction" (dim for step > 0, -1 for step < 0)."""
    if end in _SLICE_TO_END:
        end = dim if step > 0 else -1
    elif end < 0:
        end += dim
    if start < 0:
        start += dim
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    if dim == 0:
        return slice(0, 0, step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, None if end == -1 else end, step)


@register("Slice")
def slice_(data, starts_input=None, ends_input=None, axes_input=None, steps=None, *,
           starts=None, ends=None, axes=None):
    """Y = data[starts[i]:ends[i]:steps[i] on axes[i]] with ONNX clamping (see _slice_bounds);
    axes default to 0..len(starts)-1 and steps to 1. Ends such as INT64_MAX mean "to the end".
    ``starts``, ``ends``, ``axes`` are inputs from opset 10, attributes before (without steps).

    >>> slice_(np.arange(6), np.array([-1]), np.array([2**63 - 1]), None, np.array([-2])).tolist()
    [5, 3, 1]
    """
    data = np.asarray(data)
    starts = _input_or_attribute("Slice", "starts", starts_input, starts)
    ends = _input_or_attribute("Slice", "ends", ends_input, ends)
    if starts is None or ends is None:
        raise OpError("Slice: 'starts' and 'ends' are required (inputs from opset 10, "
                      "attributes before)")
    axes = _input_or_attribute("Slice", "axes", axes_input, axes)
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else _ints("Slice", "steps", steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise OpError(f"Slice: starts={starts}, ends={ends}, axes={axes}, steps={steps} have "
                      f"different lengths, expected equal lengths")
    axes = _axes("Slice", "axes", axes, data.ndim)
    if 0 in steps:
        raise OpError(f"Slice: steps={steps} contains 0, expected non-zero steps")
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis] = _slice_bounds(start, end, step, data.shape[axis])
    return data[tuple(index)]


def _check_indices(op: str, indices: np.ndarray, dim: int, axis: int) -> None:
    """Every index must lie in [-dim, dim - 1]."""
    if indices.size and (indices.min() < -dim or indices.max() >= dim):
        bad = indices[(indices < -dim) | (indices >= dim)].reshape(-1)[0]
        raise OpError(f"{op}: index {int(bad)} out of range for axis {axis} of size {dim}, "
                      f"expected {-dim} <= index <= {dim - 1}")


@register("Gather")
def gather(data, indices, *, axis=0):
    """Y = take(data, indices, axis): Y.shape = data.shape[:axis] + indices.shape +
    data.shape[axis+1:]; negative indices count from the end."""
    data = np.asarray(data)
    axis = _axis("Gather", "axis", axis, data.ndim)
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise OpError(f"Gather: input 'indices' has dtype {indices.dtype}, expected int32/int64")
    _check_indices("Gather", indices, data.shape[axis], axis)
    return np.take(data, indices.astype(np.int64), axis=axis)


@register("Shape")
def shape(data, *, start=0, end=None):
    """Y = int64 shape of data, sliced [start:end] (negatives from the end, clamped to [0, r])."""
    dims = np.shape(data)
    rank = len(dims)
    lo = start + rank if start < 0 else start
    hi = rank if end is None else (end + rank if end < 0 else end)
    lo, hi = min(max(lo, 0), rank), min(max(hi, 0), rank)
    return np.array(dims[lo:hi], dtype=np.int64)


@register("Size")
def size(data):
    """Y = the number of elements of data, an int64 scalar."""
    return np.array(np.size(data), dtype=np.int64)


@register("Expand")
def expand(data, shape):
    """Y = data broadcast with ``shape`` (two-way: the output shape is broadcast(data.shape,
    shape), so a 1 in ``shape`` keeps the input dimension)."""
    data = np.asarray(data)
    target = _ints("Expand", "shape", shape)
    try:
        out_shape = np.broadcast_shapes(data.shape, tuple(target))
    except ValueError:
        raise OpError(f"Expand: input shape {data.shape} does not broadcast with 'shape'="
                      f"{target} (each dimension must be equal or 1)") from None
    return np.array(np.broadcast_to(data, out_shape))


@register("Tile")
def tile(data, repeats):
    """Y = data repeated repeats[i] times along axis i (len(repeats) = rank, repeats >= 0)."""
    data = np.asarray(data)
    reps = _ints("Tile", "repeats", repeats)
    if len(reps) != data.ndim or min(reps, default=0) < 0:
        raise OpError(f"Tile: input 'repeats'={reps}, expected {data.ndim} values >= 0 "
                      f"(one per axis of the input {data.shape})")
    return np.tile(data, reps)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@register("Pad")
def pad(data, pads_input=None, constant_value=None, axes=None, *, mode="constant", pads=None,
        value=None):
    """Y = data padded by pads = [begin_0, ..., begin_k, end_0, ..., end_k] on ``axes``
    (default: all). Negative pads crop first; the remaining positive pads then fill with
    ``constant_value`` (default 0), the mirror image without the border (reflect: at most n - 1
    of the cropped size n, as in ONNX Runtime), the border value (edge) or the other side,
    repeated as needed (wrap).

    ``pads`` is an input from opset 11 and an attribute before, with the fill as the float
    attribute ``value`` (default 0).

    >>> pad(np.array([1, 2, 3]), np.array([1, -1]), mode="reflect").tolist()
    [2, 1, 2]
    """
    data = np.asarray(data)
    if mode not in _PAD_MODES:
        raise OpError(f"Pad: attribute mode={mode!r}, expected one of {sorted(_PAD_MODES)}")
    if value is not None:
        if constant_value is not None:
            raise OpError("Pad: the fill given both as input constant_value and as attribute "
                          "value, expected one")
        constant_value = np.asarray(value, dtype=data.dtype)
    pads = _input_or_attribute("Pad", "pads", pads_input, pads)
    if pads is None:
        raise OpError("Pad: 'pads' is required (an input from opset 11, an attribute before)")
    axes = list(range(data.ndim)) if axes is None else _axes("Pad", "axes",
                                                             _ints("Pad", "axes", axes), data.ndim)
    if len(pads) != 2 * len(axes):
        raise OpError(f"Pad: input 'pads' has {len(pads)} values, expected {2 * len(axes)} "
                      f"(begin and end for each of the axes {axes})")
    begin, end = [0] * data.ndim, [0] * data.ndim
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[i + len(axes)]
    crop = []
    for axis, dim in enumerate(data.shape):
        lo, hi = max(-begin[axis], 0), dim - max(-end[axis], 0)
        if lo > hi:
            raise OpError(f"Pad: negative pads {begin[axis]}, {end[axis]} remove more than the "
                          f"{dim} elements of axis {axis}")
        crop.append(slice(lo, hi))
    cropped = data[tuple(crop)]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode != "constant":
        for axis, (b, e) in enumerate(widths):
            n = cropped.shape[axis]
            if mode == "reflect" and (b or e) and max(b, e) > n - 1:
                raise OpError(f"Pad: mode='reflect' pads {b}, {e} on axis {axis} of size {n} "
                              f"(after cropping), expected pads <= {n - 1}")
            if (b or e) and n == 0:
                raise OpError(f"Pad: mode={mode!r} cannot pad the empty axis {axis}")
        return np.pad(cropped, widths, mode=_PAD_MODES[mode])
    value = 0 if constant_value is None else np.asarray(constant_value).reshape(-1)[0]
    return np.pad(cropped, widths, mode="constant", constant_values=value).astype(data.dtype)


# --------------------------------------------------------------------------------------------
# constants


@register("ConstantOfShape")
def constant_of_shape(shape, *, value=None):
    """Y = a tensor of the given ``shape`` filled with the one-element tensor ``value``
    (default: float32 0); Y has the dtype of ``value``."""
    dims = _ints("ConstantOfShape", "input", shape)
    if any(d < 0 for d in dims):
        raise OpError(f"ConstantOfShape: input shape {dims} has a negative dimension")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if fill.size != 1:
        raise OpError(f"ConstantOfShape: attribute value has {fill.size} elements, expected 1")
    return np.full(dims, fill.reshape(-1)[0], dtype=fill.dtype)


@register("Constant")
def constant(*, value=None, value_float=None, value_floats=None, value_int=None,
             value_ints=None):
    """Y = the one given attribute: a tensor ``value``, a float32 scalar ``value_float``, a
    float32 vector ``value_floats``, an int64 scalar ``value_int`` or an int64 vector
    ``value_ints``."""
    given = {name: v for name, v in (("value", value), ("value_float", value_float),
                                     ("value_floats", value_floats), ("value_int", value_int),
                                     ("value_ints", value_ints)) if v is not None}
    if len(given) != 1:
        raise OpError(f"Constant: attributes {sorted(given) or 'none'} given, expected exactly one "
                      f"of value, value_float, value_floats, value_int, value_ints")
    (name, v), = given.items()
    if name == "value":
        return np.array(v, copy=True)
    dtype = np.float32 if name.startswith("value_float") else np.int64
    return np.array(v, dtype=dtype)


# --------------------------------------------------------------------------------------------
# reductions


def _reduce(op: str, fn, data, axes_input, axes, keepdims, noop_with_empty_axes):
    """Apply ``fn(data, axis=..., keepdims=...)`` with ONNX's axes rules: ``axes`` as input
    (ReduceSum from opset 13, all from opset 18) or attribute (before); empty or absent axes
    reduce every axis unless noop_with_empty_axes=1, which reduces none (the elementwise part
    still applies: ReduceL1 gives |X|, ReduceSumSquare X^2, as in ONNX Runtime)."""
    data = np.asarray(data)
    axes = _input_or_attribute(op, "axes", axes_input, axes)
    if not axes:
        axes = [] if noop_with_empty_axes else list(range(data.ndim))
    axes = tuple(_axes(op, "axes", axes, data.ndim))
    if any(data.shape[a] == 0 for a in axes):  # an empty set: the reduction's identity
        shape = tuple(1 if i in axes else d for i, d in enumerate(data.shape))
        fill = _EMPTY_REDUCTION.get(op, 0)
        if data.dtype.kind in "iu" and np.isinf(fill):  # the integer type's lowest/highest
            fill = np.iinfo(data.dtype).min if fill < 0 else np.iinfo(data.dtype).max
        y = np.full(shape, fill, dtype=data.dtype)
        return y if keepdims else y.reshape([d for i, d in enumerate(shape) if i not in axes])
    return np.asarray(fn(data, axis=axes, keepdims=bool(keepdims)), dtype=data.dtype)


#: the value of a reduction over an empty set, as ONNX Runtime gives it (ReduceMean: 0, not NaN)
_EMPTY_REDUCTION = {"ReduceMax": -np.inf, "ReduceMin": np.inf, "ReduceProd": 1,
                    "ReduceLogSumExp": -np.inf, "ReduceLogSum": -np.inf}


def _keep(y: np.ndarray, ndim: int, axes, keepdims: bool) -> np.ndarray:
    """``y`` (the reduced axes dropped) with size-1 axes put back when ``keepdims``."""
    if not keepdims:
        return y
    kept = iter(y.shape)
    return y.reshape([1 if i in axes else next(kept) for i in range(ndim)])


@register("ReduceMean")
def reduce_mean(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Y = mean of data over ``axes`` (sum / count, accumulated in the input dtype)."""
    def mean(x, axis, keepdims):
        if x.dtype == np.float32:  # ONNX Runtime's summation order, bit for bit
            return _keep(math_exact.reduce_sum(x, axis, mean=True), x.ndim, axis, keepdims)
        dtype = x.dtype if x.dtype.kind == "f" else np.float64
        return np.mean(x, axis=axis, keepdims=keepdims, dtype=dtype)
    return _reduce("ReduceMean", mean, data, axes_input, axes, keepdims, noop_with_empty_axes)


@register("ReduceSum")
def reduce_sum(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Y = sum of data over ``axes`` (in the input dtype)."""
    def total(x, axis, keepdims):
        if x.dtype == np.float32:  # ONNX Runtime's summation order, bit for bit
            return _keep(math_exact.reduce_sum(x, axis), x.ndim, axis, keepdims)
        return np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype)
    return _reduce("ReduceSum", total, data, axes_input, axes, keepdims, noop_with_empty_axes)


def _order_matters(rows: np.ndarray, y: np.ndarray) -> bool:
    """Whether the order of the reduction can change the max/min ``y`` of some row: the rows
    hold a NaN, or a zero extreme with both +0 and -0 among the row's elements."""
    if np.isnan(rows).any():
        return True
    zero = y == 0
    if not zero.any():
        return False
    z = rows[zero]
    neg = np.signbit(z) & (z == 0)
    pos = ~np.signbit(z) & (z == 0)
    return bool((neg.any(axis=1) & pos.any(axis=1)).any())


def _first_extreme(x, axis, keepdims, *, largest: bool):
    """Max (or min) over ``axis`` as ONNX Runtime takes it, over the reduced elements in
    row-major order with ``m = x0; m = v if m < v`` (``v < m`` for the min): a NaN held stays,
    a NaN arriving is passed over, of equal values (±0) the one held stays. Reductions over
    contiguous elements (ORT's fast "R" and "KR" shapes) go through Eigen's vectorised
    maxCoeff, whose packets change which NaN/zero is held
    (:func:`qsim.kernels.mlas_math.eigen_row_extremes`); without NaN or a zero extreme, every
    order gives the same value. Other dtypes: NumPy's max/min."""
    keep = [i for i in range(x.ndim) if i not in axis]
    out_shape = [x.shape[i] for i in keep]
    rows = np.transpose(x, keep + sorted(axis)).reshape(math.prod(out_shape), -1)
    y = rows.max(axis=1) if largest else rows.min(axis=1)
    if x.dtype in (np.float32, np.float64) and (np.isnan(y).any() or not y.all()) and \
            _order_matters(rows, y):
        kind, sizes = math_exact.fast_reduce_shape(x.shape, axis)
        if kind in ("R", "KR"):
            y = math_exact.eigen_row_extremes(rows, largest)
        elif kind == "KRK" and sizes[0] > 1:   # (one leading index: the generic loop)
            y = math_exact.eigen_partial_extremes(x.reshape(sizes), largest).reshape(-1)
        elif kind == "RKR" and sizes[1] > 1:   # (one kept index: the generic loop)
            d0, d1, d2 = sizes
            blocks = math_exact.eigen_row_extremes(
                x.reshape(d0 * d1, d2), largest).reshape(d0, d1)
            y = x.reshape(sizes)[0, :, 0]
            with np.errstate(invalid="ignore"):
                for r in range(d0):
                    y = np.where(y < blocks[r], blocks[r], y) if largest else \
                        np.where(blocks[r] < y, blocks[r], y)
        else:
            y = rows[:, 0]
            with np.errstate(invalid="ignore"):
                for j in range(1, rows.shape[1]):
                    v = rows[:, j]
                    y = np.where(y < v, v, y) if largest else np.where(v < y, v, y)
    return _keep(y.reshape(out_shape), x.ndim, axis, keepdims)


@register("ReduceMax")
def reduce_max(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Y = max of data over ``axes`` (NaN only when the first reduced element is NaN, as ONNX
    Runtime; see :func:`_first_extreme`)."""
    def largest(x, axis, keepdims):
        return _first_extreme(x, axis, keepdims, largest=True)
    return _reduce("ReduceMax", largest, data, axes_input, axes, keepdims, noop_with_empty_axes)


@register("ReduceMin")
def reduce_min(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Y = min of data over ``axes`` (NaN only when the first reduced element is NaN, as ONNX
    Runtime; see :func:`_first_extreme`)."""
    def smallest(x, axis, keepdims):
        return _first_extreme(x, axis, keepdims, largest=False)
    return _reduce("ReduceMin", smallest, data, axes_input, axes, keepdims, noop_with_empty_axes)


@register("ReduceProd")
def reduce_prod(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Y = product of data over ``axes``: float32 as ONNX Runtime multiplies, Eigen's packets
    of 4 when every axis is reduced (:func:`qsim.kernels.mlas_math.eigen_row_products`), else
    left to right over the reduced elements in row-major order."""
    def product(x, axis, keepdims):
        if x.dtype != np.float32:
            return np.prod(x, axis=axis, keepdims=keepdims, dtype=x.dtype)
        keep = [i for i in range(x.ndim) if i not in axis]
        out_shape = [x.shape[i] for i in keep]
        rows = np.transpose(x, keep + sorted(axis)).reshape(math.prod(out_shape), -1)
        kind, _ = math_exact.fast_reduce_shape(x.shape, axis)
        if kind == "R":
            y = math_exact.eigen_row_products(rows)
        else:
            y = rows[:, 0]
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                for j in range(1, rows.shape[1]):
                    y = (y * rows[:, j]).astype(x.dtype)
        return _keep(y.reshape(out_shape), x.ndim, axis, keepdims)
    return _reduce("ReduceProd", product, data, axes_input, axes, keepdims, noop_with_empty_axes)


@register("ReduceL1")
def reduce_l1(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Y = sum of |data| over ``axes``."""
    def l1(x, axis, keepdims):
        if x.dtype == np.float32:  # ONNX Runtime's order (left to right), bit for bit
            return _keep(math_exact.sequential_reduce_sum(np.abs(x), axis), x.ndim, axis, keepdims)
        return np.sum(np.abs(x), axis=axis, keepdims=keepdims, dtype=x.dtype)
    return _reduce("ReduceL1", l1, data, axes_input, axes, keepdims, noop_with_empty_axes)


@register("ReduceL2")
def reduce_l2(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Y = sqrt(sum of data^2 over ``axes``)."""
    def l2(x, axis, keepdims):
        if x.dtype == np.float32:  # ONNX Runtime's order, bit for bit
            total = math_exact.sequential_reduce_sum(x * x, axis)
            return _keep(np.sqrt(total), x.ndim, axis, keepdims)
        return np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims, dtype=x.dtype))
    return _reduce("ReduceL2", l2, data, axes_input, axes, keepdims, noop_with_empty_axes)


@register("ReduceSumSquare")
def reduce_sum_square(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Y = sum of data^2 over ``axes``."""
    def sum_square(x, axis, keepdims):
        if x.dtype == np.float32:  # ONNX Runtime's order (left to right), bit for bit
            return _keep(math_exact.sequential_reduce_sum(x * x, axis), x.ndim, axis, keepdims)
        return np.sum(x * x, axis=axis, keepdims=keepdims, dtype=x.dtype)
    return _reduce("ReduceSumSquare", sum_square, data, axes_input, axes, keepdims,
                   noop_with_empty_axes)


@register("ReduceLogSumExp")
def reduce_log_sum_exp(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    """Y = log(Σ exp(X - m)) + m over ``axes``, as ONNX Runtime computes it (float32/float64):
    the reduced elements taken in row-major order; ``m`` their max when every axis is reduced,
    else ORT's running max that skips ±Inf and NaN (starting from the first element, 0 if it is
    infinite); the sum and ``+ m`` rounded to the input precision at each step, exp and log
    from the C library (:func:`qsim.kernels.libm.log_sum_exp_rows`)."""
    def log_sum_exp(x, axis, keepdims):
        keep = [i for i in range(x.ndim) if i not in axis]
        out_shape = [x.shape[i] for i in keep]
        rows = np.transpose(x, keep + sorted(axis)).reshape(math.prod(out_shape), -1)
        if x.dtype in (np.float32, np.float64):
            kind, _ = math_exact.fast_reduce_shape(x.shape, axis)
            y = libm.log_sum_exp_rows(rows, whole=kind == "R")
        else:  # integers: each exp(v - m) truncated to the type, as ORT's int32 kernel
            m = np.max(rows, axis=1, keepdims=True) if rows.shape[1] else np.zeros_like(rows[:, :1])
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                terms = np.exp((rows - m).astype(np.float64)).astype(x.dtype)
                y = (np.log(terms.sum(axis=1).astype(np.float64)).astype(x.dtype)
                     + m[:, 0]).astype(x.dtype)
        return _keep(y.reshape(out_shape), x.ndim, axis, keepdims)
    return _reduce("ReduceLogSumExp", log_sum_exp, data, axes_input, axes, keepdims,
                   noop_with_empty_axes)


def _arg_reduce(op: str, fn, data, axis, keepdims, select_last_index) -> np.ndarray:
    data = np.asarray(data)
    axis = _axis(op, "axis", axis, data.ndim)
    if data.shape[axis] == 0:
        raise OpError(f"{op}: axis {axis} of the input {data.shape} is empty")
    if select_last_index:
        index = data.shape[axis] - 1 - fn(np.flip(data, axis=axis), axis=axis)
    else:
        index = fn(data, axis=axis)
    if keepdims:
        index = np.expand_dims(index, axis)
    return np.asarray(index, dtype=np.int64)


@register("ArgMax")
def arg_max(data, *, axis=0, keepdims=1, select_last_index=0):
    """Y = int64 index of the largest element along ``axis`` (the first one, or the last with
    select_last_index=1)."""
    return _arg_reduce("ArgMax", np.argmax, data, axis, keepdims, select_last_index)


@register("ArgMin")
def arg_min(data, *, axis=0, keepdims=1, select_last_index=0):
    """Y = int64 index of the smallest element along ``axis`` (the first one, or the last with
    select_last_index=1)."""
    return _arg_reduce("ArgMin", np.argmin, data, axis, keepdims, select_last_index)


@register("CumSum")
def cum_sum(x, axis, *, exclusive=0, reverse=0):
    """Y[i] = sum of X[j] for j <= i along ``axis`` (a scalar input), added in order; exclusive=1
    leaves out X[i] itself (j < i), reverse=1 sums from the end (j >= i)."""
    x = np.asarray(x)
    axis_value = _ints("CumSum", "axis", axis)
    if len(axis_value) != 1:
        raise OpError(f"CumSum: input 'axis' has {len(axis_value)} values, expected a scalar")
    ax = _axis("CumSum", "axis", axis_value[0], x.ndim)
    y = np.flip(x, axis=ax) if reverse else x
    total = np.cumsum(y, axis=ax, dtype=x.dtype)
    if exclusive:
        zeros = np.zeros_like(np.take(total, [0], axis=ax))
        total = np.concatenate([zeros, np.delete(total, -1, axis=ax)], axis=ax)
    return np.flip(total, axis=ax) if reverse else total


@register("GatherElements")
def gather_elements(data, indices, *, axis=0):
    """Y[i_0, ..., i_k] = data[i_0, ..., indices[i_0, ..., i_k], ..., i_k] (the index replaces
    position ``axis``); Y has the shape of indices, which has data's rank; negative indices
    count from the end."""
    data = np.asarray(data)
    indices = np.asarray(indices)
    axis = _axis("GatherElements", "axis", axis, data.ndim)
    if indices.dtype.kind not in "iu" or indices.ndim != data.ndim:
        raise OpError(f"GatherElements: input 'indices' has dtype {indices.dtype} and shape "
                      f"{indices.shape}, expected int32/int64 of rank {data.ndim}")
    if any(i > d for k, (i, d) in enumerate(zip(indices.shape, data.shape)) if k != axis):
        raise OpError(f"GatherElements: indices shape {indices.shape} exceeds data shape "
                      f"{data.shape} outside axis {axis}")
    dim = data.shape[axis]
    _check_indices("GatherElements", indices, dim, axis)
    window = tuple(slice(None) if k == axis else slice(0, n) for k, n in enumerate(indices.shape))
    return np.take_along_axis(data[window], np.where(indices < 0, indices + dim, indices)
                              .astype(np.int64), axis=axis)


@register("Range")
def range_(start, limit, delta):
    """Y = [start, start + delta, ...] up to ``limit`` (excluded; downward for delta < 0), with
    n = max(ceil((limit - start) / delta), 0) elements, the quotient taken in float64, and
    Y[0] = start, Y[i] = Y[i-1] + delta accumulated in the input dtype (as ONNX Runtime does).

    >>> range_(np.array(10), np.array(1), np.array(-4)).tolist()
    [10, 6, 2]
    """
    values = [np.asarray(v) for v in (start, limit, delta)]
    for name, v in zip(("start", "limit", "delta"), values):
        if v.size != 1:
            raise OpError(f"Range: input '{name}' has shape {v.shape}, expected a scalar")
    dtypes = {v.dtype for v in values}
    if len(dtypes) != 1:
        raise OpError(f"Range: inputs have dtypes {sorted(d.name for d in dtypes)}, "
                      f"expected one dtype")
    dtype = values[0].dtype
    s, l, d = (v.reshape(()) for v in values)
    if d == 0:
        raise OpError("Range: input 'delta' is 0, expected a non-zero step")
    if dtype.kind in "iu":
        n = max(-((int(s) - int(l)) // int(d)), 0)
        return np.arange(n, dtype=dtype) * d + s
    # the count as ONNX Runtime computes it: in float64
    n = max(math.ceil((float(l) - float(s)) / float(d)), 0)
    steps = np.full(n, d, dtype=dtype)
    if n:
        steps[0] = s
    return np.cumsum(steps, dtype=dtype)
