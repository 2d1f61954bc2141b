"""The NaN that ONNX Runtime returns, bit for bit, where its kernel decides it without a choice
between two NaN operands: Eigen's packet log ORs in an all-ones invalid mask (Log, and Softplus
through log1p), C's logf keeps x's NaN or returns the default one, Softsign's NaN is the
reciprocal's (|x|). Expected values come from ONNX Runtime; compared as raw bits."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.kernels import mlas_math as me
from tests.ops.test_max_min_exact import _assert_same_bits
from tests.ort_util import ort_run_op, qsim_run_op

SPECIAL = np.array([np.nan, -np.nan, -1.0, -np.inf, np.inf, 0.0, -0.0, 2.5, -1e-40, 7.0],
                   np.float32)


@pytest.mark.parametrize("op", ["Log", "Softplus", "Softsign"])
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 70))
def test_nan_bits_as_onnx_runtime(op, seed, n):
    x = np.random.default_rng(seed).choice(SPECIAL, n).astype(np.float32)
    expected = ort_run_op(op, [x], opset=13, threads=me.DEFAULT_THREADS)[0]
    _assert_same_bits(qsim_run_op(op, [x], opset=13)[0], expected, f"{op} {x.tolist()}")
