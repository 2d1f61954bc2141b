"""Index-driven data movement (ONNX opsets 11-26): block rearrangements, TopK, Trilu, the
Gather/Scatter ND and element forms, OneHot, NonZero, CumProd, Einsum, Compress,
ReverseSequence, EyeLike, Unique and MaxUnpool.

Calling convention as in :mod:`qsim.ops.registry`. Everything here only moves or selects values
(exact in every dtype), except CumProd (products in order, as ONNX Runtime) and Einsum
(float sums whose order is NumPy's: equal to ONNX Runtime's only within rounding).
"""
from __future__ import annotations

import numpy as np

from ..errors import OpError
from .registry import register
from .tensor import _axis, _ints


def _block(op: str, x: np.ndarray, blocksize) -> int:
    if x.ndim != 4:
        raise OpError(f"{op}: input has shape {list(x.shape)}, expected rank 4 (N, C, H, W)")
    if blocksize is None or int(blocksize) < 1:
        raise OpError(f"{op}: attribute blocksize={blocksize!r}, expected an integer >= 1")
    return int(blocksize)


@register("DepthToSpace")
def depth_to_space(x, *, blocksize=None, mode="DCR"):
    """Y[n, c, h·b + i, w·b + j] = X[n, channel, h, w] with b = blocksize and channel
    ``(i·b + j)·C' + c`` (DCR) or ``c·b² + i·b + j`` (CRD), where ``C' = C / b²``."""
    b = _block("DepthToSpace", x, blocksize)
    n, c, h, w = x.shape
    if c % (b * b):
        raise OpError(f"DepthToSpace: {c} channels are not divisible by blocksize² = {b * b}")
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise OpError(f"DepthToSpace: attribute mode={mode!r}, expected 'DCR' or 'CRD'")
    return np.ascontiguousarray(y.reshape(n, c // (b * b), h * b, w * b))


@register("SpaceToDepth")
def space_to_depth(x, *, blocksize=None):
    """The inverse of DepthToSpace (DCR): Y[n, (i·b + j)·C + c, h, w] = X[n, c, h·b + i, w·b + j]."""
    b = _block("SpaceToDepth", x, blocksize)
    n, c, h, w = x.shape
    if h % b or w % b:
        raise OpError(f"SpaceToDepth: spatial shape {[h, w]} is not divisible by blocksize={b}")
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return np.ascontiguousarray(y.reshape(n, c * b * b, h // b, w // b))


@register("TopK")
def top_k(x, k, *, axis=-1, largest=1, sorted=1):  # noqa: A002 - ONNX attribute name
    """(Values, Indices) of the ``k`` largest (or smallest) elements along ``axis``, in order
    from the largest (smallest); equal values keep their index order (the lower index first),
    as ONNX Runtime orders them. ``sorted=0`` is answered in sorted order too (ONNX leaves the
    order open; ONNX Runtime sorts as well)."""
    x = np.asarray(x)
    axis = _axis("TopK", "axis", axis, x.ndim)
    kv = _ints("TopK", "K", k)
    if len(kv) != 1 or not 0 <= kv[0] <= x.shape[axis]:
        raise OpError(f"TopK: K={kv} must be one value in [0, {x.shape[axis]}] (the size of "
                      f"axis {axis})")
    key = -x if largest else x
    if x.dtype.kind == "u" and largest:
        key = np.iinfo(x.dtype).max - x
    order = np.argsort(key, axis=axis, kind="stable")
    index = np.take(order, np.arange(kv[0]), axis=axis).astype(np.int64)
    return np.take_along_axis(x, index, axis=axis), index


@register("Trilu")
def trilu(x, k=None, *, upper=1):
    """Y = the upper (j - i >= k) or lower (j - i <= k) triangle of each matrix in the last two
    axes of X, zeros elsewhere; ``k`` (an int64 scalar input) defaults to 0."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise OpError(f"Trilu: input has shape {list(x.shape)}, expected rank >= 2")
    offset = 0 if k is None else _ints("Trilu", "k", k)[0]
    return np.triu(x, offset) if upper else np.tril(x, offset)


def _reduce_into(op: str, reduction: str):
    """The ufunc that combines an update with the existing value (None: replace)."""
    table = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum,
             "min": np.minimum}
    if reduction not in table:
        raise OpError(f"{op}: attribute reduction={reduction!r}, expected one of {list(table)}")
    return table[reduction]


@register("ScatterND")
def scatter_nd(data, indices, updates, *, reduction="none"):
    """Y = a copy of data with ``Y[indices[j]] = updates[j]`` (or combined with add / mul / max /
    min) for every index tuple ``j`` of the last axis of ``indices``, in order."""
    data, indices, updates = np.asarray(data), np.asarray(indices), np.asarray(updates)
    q = indices.shape[-1] if indices.ndim else 0
    if indices.ndim < 1 or q > data.ndim:
        raise OpError(f"ScatterND: indices shape {list(indices.shape)} must end in a length <= "
                      f"{data.ndim} (the rank of data)")
    expected = indices.shape[:-1] + data.shape[q:]
    if updates.shape != expected:
        raise OpError(f"ScatterND: updates shape {list(updates.shape)}, expected "
                      f"{list(expected)}")
    fn = _reduce_into("ScatterND", reduction)
    y = data.copy()
    flat_idx = indices.reshape(-1, q)
    flat_upd = updates.reshape((-1,) + data.shape[q:])
    for where, value in zip(flat_idx, flat_upd):
        key = tuple(int(i) for i in where)
        for axis, (i, dim) in enumerate(zip(key, data.shape)):
            if not -dim <= i < dim:
                raise OpError(f"ScatterND: index {i} out of range for axis {axis} of size {dim}")
        y[key] = value if fn is None else fn(y[key], value)
    return y


@register("ScatterElements")
def scatter_elements(data, indices, updates, *, axis=0, reduction="none"):
    """Y = a copy of data with ``Y[..., indices[p], ...] = updates[p]`` (the index replacing
    position ``axis`` of ``p``), or combined with add / mul / max / min, element by element in
    row-major order of ``indices``; negative indices count from the end."""
    data, indices, updates = np.asarray(data), np.asarray(indices), np.asarray(updates)
    axis = _axis("ScatterElements", "axis", axis, data.ndim)
    if indices.shape != updates.shape or indices.ndim != data.ndim:
        raise OpError(f"ScatterElements: indices {list(indices.shape)} and updates "
                      f"{list(updates.shape)} must have one shape of rank {data.ndim}")
    dim = data.shape[axis]
    if indices.size and (indices.min() < -dim or indices.max() >= dim):
        raise OpError(f"ScatterElements: an index is out of range for axis {axis} of size {dim}")
    fn = _reduce_into("ScatterElements", reduction)
    y = data.copy()
    positions = np.indices(indices.shape).reshape(indices.ndim, -1)
    positions[axis] = np.where(indices < 0, indices + dim, indices).reshape(-1)
    keys = tuple(positions)
    if fn is None:
        y[keys] = updates.reshape(-1)   # later duplicates win, as in the sequential loop
    else:
        fn.at(y, keys, updates.reshape(-1))
    return y


@register("GatherND")
def gather_nd(data, indices, *, batch_dims=0):
    """Y[b, j] = data[b][indices[b, j]] with ``b`` over the first ``batch_dims`` axes and each
    index tuple the last axis of ``indices`` (length q); Y's shape is
    ``indices.shape[:-1] + data.shape[batch_dims + q:]``."""
    data, indices = np.asarray(data), np.asarray(indices)
    b = int(batch_dims)
    q = indices.shape[-1] if indices.ndim else 0
    if indices.ndim < 1 or b + q > data.ndim or data.shape[:b] != indices.shape[:b]:
        raise OpError(f"GatherND: indices {list(indices.shape)} with batch_dims={b} do not fit "
                      f"data {list(data.shape)}")
    lead = data.shape[:b]
    flat_data = data.reshape((-1,) + data.shape[b:])
    flat_idx = indices.reshape((flat_data.shape[0], -1, q))
    dims = np.array(data.shape[b:b + q])
    if flat_idx.size and (np.any(flat_idx < -dims) or np.any(flat_idx >= dims)):
        raise OpError(f"GatherND: an index is out of range for the axes {list(dims)}")
    flat_idx = np.where(flat_idx < 0, flat_idx + dims, flat_idx)
    out = np.stack([batch[tuple(idx.T)] for batch, idx in zip(flat_data, flat_idx)]) \
        if flat_data.shape[0] else np.zeros((0,) + flat_idx.shape[1:2] + data.shape[b + q:],
                                            data.dtype)
    return out.reshape(lead + indices.shape[b:-1] + data.shape[b + q:])


@register("OneHot")
def one_hot(indices, depth, values, *, axis=-1):
    """Y has a new axis of size ``depth`` at ``axis``: ``values[1]`` where the position equals the
    index (negative indices count from the end), ``values[0]`` elsewhere; indices outside
    [-depth, depth - 1] give a row of ``values[0]``."""
    indices = np.asarray(indices)
    depth_value = np.asarray(depth).reshape(-1)
    values = np.asarray(values).reshape(-1)
    if depth_value.size != 1 or values.size != 2:
        raise OpError(f"OneHot: depth {depth_value.tolist()} and values {values.tolist()} must be "
                      f"a scalar and a pair [off, on]")
    d = int(depth_value[0])
    axis = _axis("OneHot", "axis", axis, indices.ndim + 1)
    idx = indices.astype(np.int64)
    idx = np.where(idx < 0, idx + d, idx)
    hot = idx[..., None] == np.arange(d)
    y = np.where(hot, values[1], values[0]).astype(values.dtype)
    return np.moveaxis(y, -1, axis)


@register("NonZero")
def non_zero(x):
    """Y = int64 (rank, count) matrix of the indices of the non-zero elements, row-major order."""
    x = np.asarray(x)
    if x.ndim == 0:
        return np.zeros((1, int(x != 0)), dtype=np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@register("CumProd")
def cum_prod(x, axis, *, exclusive=0, reverse=0):
    """Y[i] = product of X[j] for j <= i along ``axis`` (a scalar input), multiplied in order;
    exclusive=1 leaves out X[i] (j < i, starting from 1), reverse=1 runs from the end."""
    x = np.asarray(x)
    axis_value = _ints("CumProd", "axis", axis)
    if len(axis_value) != 1:
        raise OpError(f"CumProd: input 'axis' has {len(axis_value)} values, expected a scalar")
    ax = _axis("CumProd", "axis", axis_value[0], x.ndim)
    y = np.flip(x, axis=ax) if reverse else x
    total = np.cumprod(y, axis=ax, dtype=x.dtype)
    if exclusive:
        ones = np.ones_like(np.take(total, [0], axis=ax))
        total = np.concatenate([ones, np.delete(total, -1, axis=ax)], axis=ax)
    return np.flip(total, axis=ax) if reverse else total


@register("Einsum")
def einsum(*inputs, equation=None):
    """Y = the Einstein summation ``equation`` over the inputs (NumPy's ``einsum`` grammar:
    ``ij,jk->ik``, ``...`` for broadcast axes). Float sums are NumPy's: equal to ONNX
    Runtime's within rounding, not bit for bit."""
    if not equation:
        raise OpError("Einsum: attribute equation is required")
    equation = equation.replace(" ", "")
    try:
        y = np.einsum(equation, *inputs)
    except ValueError as exc:
        raise OpError(f"Einsum: equation {equation!r} does not fit the inputs "
                      f"{[list(np.shape(a)) for a in inputs]}: {exc}") from None
    return np.asarray(y, dtype=np.result_type(*inputs))


@register("Compress")
def compress(x, condition, *, axis=None):
    """The slices of X (along ``axis``; of X flattened without it) whose ``condition`` is true;
    a condition shorter than the axis leaves the remaining slices out."""
    x, condition = np.asarray(x), np.asarray(condition)
    if condition.dtype != np.bool_ or condition.ndim != 1:
        raise OpError(f"Compress: condition has type {condition.dtype} and shape "
                      f"{list(condition.shape)}; expected a 1-D bool tensor")
    if axis is None:
        x, ax = x.reshape(-1), 0
    else:
        ax = _axis("Compress", "axis", axis, x.ndim)
    if condition.size > x.shape[ax]:
        raise OpError(f"Compress: condition has {condition.size} values, more than the "
                      f"{x.shape[ax]} slices of X along axis {ax}")
    return np.ascontiguousarray(np.compress(condition, x, axis=ax))


@register("ReverseSequence")
def reverse_sequence(x, sequence_lens, *, batch_axis=1, time_axis=0):
    """Y = X with, for every batch entry b, its first ``sequence_lens[b]`` steps along
    ``time_axis`` in reverse order (the rest copied)."""
    x, lens = np.asarray(x), np.asarray(sequence_lens)
    if x.ndim < 2:
        raise OpError(f"ReverseSequence: input has shape {list(x.shape)}, expected rank >= 2")
    if {int(batch_axis), int(time_axis)} != {0, 1}:
        raise OpError(f"ReverseSequence: batch_axis={batch_axis}, time_axis={time_axis}; ONNX "
                      f"allows only 0 and 1, one each")
    b_ax, t_ax = int(batch_axis), int(time_axis)
    steps = x.shape[t_ax]
    if lens.dtype != np.int64 or lens.shape != (x.shape[b_ax],):
        raise OpError(f"ReverseSequence: sequence_lens has {lens.dtype}{list(lens.shape)}, "
                      f"expected int64[{x.shape[b_ax]}] (the batch size)")
    if np.any((lens < 0) | (lens > steps)):
        raise OpError(f"ReverseSequence: sequence_lens {lens.tolist()} must lie in [0, {steps}] "
                      f"(the length of time axis {t_ax})")
    t = np.arange(steps)[None, :]
    source = np.where(t < lens[:, None], lens[:, None] - 1 - t, t)      # [batch, time]
    if b_ax == 1:
        source = source.T                                               # [time, batch]
    source = source.reshape(source.shape + (1,) * (x.ndim - 2))
    return np.take_along_axis(x, np.broadcast_to(source, x.shape), axis=t_ax)


@register("EyeLike")
def eye_like(x, *, dtype=None, k=0):
    """A 2-D tensor of X's shape with ones on the diagonal ``k`` (above the main one for
    ``k > 0``) and zeros elsewhere, of type ``dtype`` (an ONNX type code; default X's type)."""
    from .elementwise import ONNX_DTYPES
    x = np.asarray(x)
    if x.ndim != 2:
        raise OpError(f"EyeLike: input has shape {list(x.shape)}, expected rank 2")
    if dtype is None:
        out = x.dtype
    elif dtype in ONNX_DTYPES:
        out = ONNX_DTYPES[dtype]
    else:
        raise OpError(f"EyeLike: attribute dtype={dtype!r} is not a supported type code")
    return np.eye(x.shape[0], x.shape[1], int(k), dtype=out)


@register("Unique")
def unique(x, *, axis=None, sorted=1, noutputs=4):  # noqa: A002 - ONNX attribute name
    """(Y, indices, inverse_indices, counts): the distinct values of X flattened (or its distinct
    slices along ``axis``), in ascending order (``sorted=1``; slices compared element by element
    in memory order) or in order of first occurrence, with the index of each one's first
    occurrence, the index in Y of every element (slice) of X, and how often each occurs.

    As ONNX Runtime's ordered map: ``-0.0`` and ``0.0`` are one value, written as the sign that
    occurs first. NaN is refused (ONNX Runtime's result then depends on its tree's shape)."""
    x = np.asarray(x)
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise OpError("Unique: input holds NaN; ONNX Runtime's ordered map gives NaN no defined "
                      "place, so qsim does not guess one")
    if axis is None:
        items, keep_shape, ax = x.reshape(-1).tolist(), None, 0
    else:
        ax = _axis("Unique", "axis", axis, x.ndim)
        moved = np.moveaxis(x, ax, 0)
        items, keep_shape = [tuple(s.reshape(-1).tolist()) for s in moved], moved.shape[1:]
    first: dict = {}                                  # key (first spelling) -> unsorted index
    keys, indices, counts, inverse = [], [], [], []
    for i, key in enumerate(items):
        slot = first.get(key)
        if slot is None:
            slot = first[key] = len(keys)
            keys.append(key)
            indices.append(i)
            counts.append(0)
        counts[slot] += 1
        inverse.append(slot)
    order = sorted_order(keys) if sorted else list(range(len(keys)))
    rank = np.empty(len(keys), np.int64)
    rank[order] = np.arange(len(keys))
    if axis is None:
        y = np.array([keys[j] for j in order], dtype=x.dtype)
    else:
        y = np.array([keys[j] for j in order], dtype=x.dtype).reshape((len(keys),) + keep_shape)
        y = np.ascontiguousarray(np.moveaxis(y, 0, ax))
    outs = (y, np.array([indices[j] for j in order], np.int64), rank[np.array(inverse, np.int64)],
            np.array([counts[j] for j in order], np.int64))
    return outs if noutputs > 1 else outs[0]


def sorted_order(keys: list) -> list:
    """Indices of ``keys`` in ascending order (values, or tuples compared lexicographically)."""
    return [i for _, i in sorted((k, i) for i, k in enumerate(keys))]


@register("MaxUnpool")
def max_unpool(x, indices, output_shape=None, *, kernel_shape=None, pads=None, strides=None):
    """Y = zeros with ``Y.flat[indices[i]] = X.flat[i]`` for every element in order (a repeated
    index keeps the last one), Y's spatial size ``(in - 1)·stride - pad_begin - pad_end + kernel``
    per axis, or ``output_shape`` when given (at least as many elements)."""
    x, indices = np.asarray(x), np.asarray(indices)
    if x.dtype != np.float32 or x.ndim < 3:
        raise OpError(f"MaxUnpool: X has {x.dtype}{list(x.shape)}, expected float32 of rank >= 3")
    if indices.dtype != np.int64 or indices.shape != x.shape:
        raise OpError(f"MaxUnpool: indices have {indices.dtype}{list(indices.shape)}, expected "
                      f"int64 of X's shape {list(x.shape)}")
    n = x.ndim - 2
    kernel = _ints("MaxUnpool", "kernel_shape", kernel_shape) if kernel_shape is not None else []
    if len(kernel) != n:
        raise OpError(f"MaxUnpool: attribute kernel_shape={kernel_shape} must give {n} sizes")
    step = _ints("MaxUnpool", "strides", strides) if strides is not None else [1] * n
    pad = _ints("MaxUnpool", "pads", pads) if pads is not None else [0] * (2 * n)
    if len(step) != n or len(pad) != 2 * n:
        raise OpError(f"MaxUnpool: strides={step} / pads={pad} must give {n} / {2 * n} values")
    shape = list(x.shape[:2]) + [(x.shape[2 + i] - 1) * step[i] - (pad[i] + pad[n + i])
                                 + kernel[i] for i in range(n)]
    if min(shape[2:]) < 1:
        raise OpError(f"MaxUnpool: output spatial shape {shape[2:]} is not positive; check "
                      f"kernel_shape, strides and pads")
    if output_shape is not None:
        given = _ints("MaxUnpool", "output_shape", output_shape)
        if len(given) != x.ndim or int(np.prod(given)) < int(np.prod(shape)):
            raise OpError(f"MaxUnpool: output_shape {given} must have rank {x.ndim} and at least "
                          f"the {int(np.prod(shape))} elements of the inferred shape {shape}")
        shape = given
    flat = indices.reshape(-1)
    size = int(np.prod(shape))
    if flat.size and (flat.min() < 0 or flat.max() >= size):
        raise OpError(f"MaxUnpool: an index lies outside [0, {size}) (the output's "
                      f"{size} elements)")
    y = np.zeros(size, np.float32)
    where, last_in_reverse = np.unique(flat[::-1], return_index=True)
    y[where] = x.reshape(-1)[flat.size - 1 - last_in_reverse]
    return y.reshape(shape)
