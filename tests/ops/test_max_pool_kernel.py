"""The Numba MaxPool kernel against its NumPy twin (the separable ``np.maximum`` passes), bit
for bit, including signed zeros, infinities and NaN, over kernel/stride/dilation/pad/ceil
geometries. (MaxPool against ONNX Runtime: tests/ops/test_nn_ops.py.)"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from qsim.ops import nn

GEOMETRIES = [g for g in itertools.product([1, 2, 3], [2, 3], [1, 2], [1, 3], [1, 2], [1, 2],
                                           [0, 1], [0, 1])
              if not g[6] or 2 * g[6] < min(g[0], g[1])]


@pytest.mark.parametrize("kh,kw,s1,s2,d1,d2,pad,ceil", GEOMETRIES)
def test_max_pool_kernel_equals_numpy_twin(kh, kw, s1, s2, d1, d2, pad, ceil):
    rng = np.random.default_rng(kh * 1000 + kw * 100 + s1 * 10 + s2)
    x = rng.standard_normal((2, 3, 8, 9)).astype(np.float32)
    x[0, 0, 0, :3] = [-0.0, 0.0, -0.0]
    x[0, 1, 2, 2] = np.inf
    x[1, 1, 1, 1] = np.nan
    x[1, 2, 3, 4] = -np.nan
    geometry = nn._pool_geometry(x, [kh, kw], [s1, s2], [d1, d2], "NOTSET", [pad] * 4, ceil)
    kernel, strides, dilations, begins, ends, extra, out = geometry
    xp = nn._pad(x, begins, [e + m for e, m in zip(ends, extra)], -np.inf)
    twin = nn._separable_pool(xp, kernel, strides, dilations, out, np.maximum)
    got = np.empty(x.shape[:2] + out, dtype=np.float32)
    nn._nb_max_pool_2d(np.ascontiguousarray(xp), *kernel, *strides, *dilations, got)
    assert np.array_equal(got.view(np.uint32), twin.view(np.uint32))
