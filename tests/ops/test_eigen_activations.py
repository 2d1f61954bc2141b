"""Elu, Selu, Celu and Softplus bit for bit against ONNX Runtime's Eigen expressions (packet exp
and log1p in the aligned body of each parallel block, libm in the head and tail), with 1 or 2
intra-op threads and across the special values."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from qsim.kernels import eigen_math as em
from qsim.ops import OPS

SELU = (1.67326319217681884765625, 1.05070102214813232421875)
CASES = {
    "Elu": ({"alpha": 0.7}, lambda x, t: em.elu(x, 0.7, t)),
    "Selu": ({}, lambda x, t: em.selu(x, *SELU, t)),
    "Celu": ({"alpha": 1.3}, lambda x, t: em.celu(x, 1.3, t)),
    "Softplus": ({}, lambda x, t: em.softplus(x, t)),
}
SPECIALS = np.array([np.nan, np.inf, -np.inf, 88.0, 88.8, 100.0, -87.0, -88.5, -95.0, -103.9,
                     -104.5, -200.0, 1e-30, -1e-30, 3e38, -3e38, 0.0, -0.0, 20.0, -20.0, 5e-8,
                     -5e-8, 15.9, -17.3], np.float32)


def ort_run(op, x, attrs, threads):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, list(x.shape))], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def same_bits(got, expected, what):
    assert got.dtype == expected.dtype and got.shape == expected.shape, what
    differ = ~((got == expected) | (np.isnan(got) & np.isnan(expected)))
    assert not differ.any(), f"{what}: {differ.sum()} elements differ, e.g. " \
        f"{got[differ][:3]} vs ORT {expected[differ][:3]}"


@pytest.mark.parametrize("op", sorted(CASES))
@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([0.5, 5.0, 60.0]))
def test_random_inputs(op, shape, seed, scale):
    attrs, _ = CASES[op]
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    same_bits(OPS[op](x, **attrs), ort_run(op, x, attrs, 1), op)


@pytest.mark.parametrize("op", sorted(CASES))
def test_special_values(op):
    attrs, fn = CASES[op]
    for x in (SPECIALS, SPECIALS[:-3], SPECIALS[3:]):   # specials in the packets and the tail
        same_bits(fn(x, 1), ort_run(op, x, attrs, 1), op)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op", sorted(CASES))
def test_parallel_blocks(op, threads):
    attrs, fn = CASES[op]
    x = np.random.default_rng(7).uniform(-12, 12, 200003).astype(np.float32)
    same_bits(fn(x, threads), ort_run(op, x, attrs, threads), f"{op} with {threads} threads")


# ------------------------------------------------------------------ packet pow (LRN)

#: float32 values m·2^e with |m| < 2^24, |e| <= 30: products and their error terms stay normal
#: (no overflow, no underflow), where the double-word algorithms are exact
finite32 = st.builds(lambda m, e: float(np.ldexp(np.float32(m), e)),
                     st.integers(-2**24 + 1, 2**24 - 1), st.integers(-30, 30))


@settings(max_examples=200, deadline=None)
@given(a=finite32, b=finite32)
def test_double_word_products_and_sums_are_exact(a, b):
    """Dekker's product over Veltkamp halves and the fast two-sum give hi + lo equal to the
    exact rational result (exact arithmetic, independent of Eigen)."""
    from fractions import Fraction
    a32, b32 = np.float32(a), np.float32(b)
    hi, lo = em._two_prod(np.array([a32]), np.array([b32]))
    assert Fraction(float(hi[0])) + Fraction(float(lo[0])) == Fraction(float(a32)) * Fraction(
        float(b32))
    big, small = (a32, b32) if abs(a32) >= abs(b32) else (b32, a32)
    s, e = em._fast_two_sum(np.array([big]), np.array([small]))
    assert Fraction(float(s[0])) + Fraction(float(e[0])) == Fraction(float(a32)) + Fraction(
        float(b32))
