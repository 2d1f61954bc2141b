"""qsim's float32 transcendental, softmax, pooling and reduction ops give ONNX Runtime's bits.

Every expected value comes from ONNX Runtime itself (CPU provider, graph optimizations disabled,
1 or 2 intra-op threads, as AIMET runs it); elements are compared bit for bit (NaN equals NaN).
The Numba kernels of :mod:`qsim.kernels.mlas_math` are also checked against their NumPy twins, and
the NumPy fused multiply-add against exact rational arithmetic.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from qsim.ops import OPS
from qsim.kernels import mlas_math as me

SETTINGS = settings(max_examples=25, deadline=None)

# The Numba-kernel-vs-NumPy-twin comparisons need compiled kernels (the fma intrinsic has no
# pure-Python form); under NUMBA_DISABLE_JIT=1 qsim runs the twins, which the ORT tests check.
needs_jit = pytest.mark.skipif(not me.USE_NUMBA, reason="compares compiled Numba kernels "
                               "with their NumPy twins; NUMBA_DISABLE_JIT=1 runs the twins only")
seeds = st.integers(0, 2**32 - 1)
threads = st.sampled_from([1, 2])
#: shapes with odd and non-multiple-of-8 lengths (the vector kernels' tails)
shapes = st.lists(st.integers(1, 11), min_size=1, max_size=4).map(tuple)

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 3.4e38, 1e-30, -1e-30,
                    1e-40, -1e-40, 1.0, -1.0, 0.5, 2.0, 0.921875, -0.921875, 3.925, 4.0, 5.0,
                    9.0, -9.0, 18.0, -18.5, 88.7, 88.8, 89.0, -88.4, -103.9, -104.0, -120.0],
                   dtype=np.float32)


def ort_run(op, inputs, attrs=None, *, opset=17, n_threads=1, initializers=()):
    """Run one node in ONNX Runtime as AIMET does (ORT_DISABLE_ALL, CPU provider)."""
    names, graph_inputs, inits, feeds = [], [], [], {}
    for i, a in enumerate(inputs):
        name = f"in{i}"
        names.append(name)
        if i in initializers:
            inits.append(onnx.numpy_helper.from_array(a, name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape))
            feeds[name] = a
    node = helper.make_node(op, names, ["out"], **(attrs or {}))
    graph = helper.make_graph([node], "g", graph_inputs,
                              [helper.make_value_info("out", onnx.TypeProto())], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = n_threads
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def assert_same_bits(got, expected, what=""):
    got = np.asarray(got)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != ORT {expected.shape}"
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} != ORT {expected.dtype}"
    same = (got.view(np.uint32) == expected.view(np.uint32)) | (np.isnan(got) & np.isnan(expected))
    bad = np.flatnonzero(~same)
    assert bad.size == 0, (f"{what}: {bad.size} of {got.size} elements differ, first at flat "
                           f"{bad[:5].tolist()}: qsim {got.ravel()[bad[:5]]} vs ORT "
                           f"{expected.ravel()[bad[:5]]}")


def data(seed, shape, scale=3.0, special=True):
    """Normal values times ``scale``, with some special values sprinkled in."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    if special and x.size:
        k = rng.integers(0, max(1, x.size // 4) + 1)
        x.ravel()[rng.integers(0, x.size, k)] = rng.choice(SPECIAL, k)
    return x


# ------------------------------------------------------------------------------ elementwise

UNARY = ["Sigmoid", "Tanh", "Erf", "Exp", "Log", "Softsign"]


@pytest.mark.parametrize("op", UNARY)
def test_unary_large_and_special_values_match_ort(op):
    x = np.concatenate([data(1, 40001, 6.0, special=False), SPECIAL, -SPECIAL,
                        np.linspace(-120, 120, 4003, dtype=np.float32)])
    if op == "Log":
        x = np.abs(x) * np.where(np.arange(x.size) % 7 == 0, -1, 1).astype(np.float32)
    # the session's thread count matters for Log only (its parallel blocks): use qsim's default
    assert_same_bits(OPS[op](x), ort_run(op, [x], n_threads=me.DEFAULT_THREADS), op)


@pytest.mark.parametrize("op", UNARY)
@SETTINGS
@given(shape=shapes, seed=seeds, n_threads=threads, scale=st.sampled_from([0.3, 3.0, 30.0]))
def test_unary_matches_ort(op, shape, seed, n_threads, scale):
    x = data(seed, shape, scale)
    if op == "Log":
        x = np.abs(x)
    got = me.log(x, threads=n_threads) if op == "Log" else OPS[op](x)
    assert_same_bits(got, ort_run(op, [x], n_threads=n_threads), op)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@SETTINGS
@given(shape=shapes, seed=seeds, n_threads=threads)
def test_gelu_matches_ort(approximate, shape, seed, n_threads):
    x = data(seed, shape, 4.0)
    expected = ort_run("Gelu", [x], {"approximate": approximate}, opset=20, n_threads=n_threads)
    assert_same_bits(OPS["Gelu"](x, approximate=approximate), expected, "Gelu")


def test_log_tail_uses_libm_logf():
    # Eigen's packets take the first n - n%4 elements, C logf the rest: a value where the two
    # differ must follow ORT in every position of arrays of length 4..12
    x = data(5, 20000, 10.0, special=False)
    x = np.abs(x) + np.float32(1e-3)
    packet = me._np_log(x[:19996])
    libm = me._logf_np(x[:19996])
    v = x[:19996][packet != libm][0]
    for n in range(4, 13):
        for k in range(n):
            z = np.ones(n, np.float32)
            z[k] = v
            assert_same_bits(OPS["Log"](z), ort_run("Log", [z]), f"Log n={n} k={k}")


@pytest.mark.parametrize("n", [12001, 14001, 16001, 16384, 20001, 30001])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_log_parallel_blocks_match_ort(n, n_threads):
    # values where Eigen's packet log and C logf differ reveal every element ORT computes with
    # logf: the unaligned head and the tail of each of its parallel blocks
    pool = np.abs(data(9, 40000, 3.0, special=False)) + np.float32(0.1)
    pool = pool[me._np_log(pool, np.zeros(pool.size, bool)) != me._logf_np(pool)]
    x = pool[np.random.default_rng(n).integers(0, pool.size, n)]
    assert_same_bits(me.log(x, threads=n_threads), ort_run("Log", [x], n_threads=n_threads),
                     f"Log n={n}")


# ------------------------------------------------------------------------------ softmax

@st.composite
def softmax_cases(draw):
    shape = draw(st.lists(st.integers(1, 40), min_size=1, max_size=3).map(tuple))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return shape, axis


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@SETTINGS
@given(case=softmax_cases(), seed=seeds, n_threads=threads, scale=st.sampled_from([1.0, 8.0]))
def test_softmax_matches_ort(op, case, seed, n_threads, scale):
    shape, axis = case
    x = data(seed, shape, scale, special=False)
    expected = ort_run(op, [x], {"axis": axis}, opset=13, n_threads=n_threads)
    assert_same_bits(OPS[op](x, axis=axis, fp32_kernels="auto"), expected, op)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("d", [1, 7, 8, 9, 23, 24, 25, 64, 1000])
def test_softmax_row_lengths_match_ort(op, d):
    x = data(d, (6, d), 5.0, special=False)
    assert_same_bits(OPS[op](x, axis=-1, fp32_kernels="auto"), ort_run(op, [x], {"axis": -1}, opset=13), op)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_of_masked_rows_matches_ort(op):
    # attention masks: -inf / -1e9 entries give exact zeros, an all -inf row gives NaN
    x = data(4, (7, 37), 3.0, special=False)
    x[0, 5:] = -np.inf
    x[1, :] = -np.inf
    x[2, 3] = np.inf
    x[3, ::2] = -1e9
    x[4, 7] = np.nan
    x[5, :] = -3.4e38
    x[6, 10:] = -100.0
    with np.errstate(all="ignore"):
        assert_same_bits(OPS[op](x, axis=-1, fp32_kernels="auto"), ort_run(op, [x], {"axis": -1}, opset=13), op)


# ------------------------------------------------------------------------------ pooling

@SETTINGS
@given(shape=st.lists(st.integers(1, 13), min_size=3, max_size=5).map(tuple), seed=seeds,
       n_threads=threads)
def test_global_average_pool_matches_ort(shape, seed, n_threads):
    x = data(seed, shape, 3.0, special=False)
    expected = ort_run("GlobalAveragePool", [x], n_threads=n_threads)
    assert_same_bits(OPS["GlobalAveragePool"](x), expected, "GlobalAveragePool")


# ------------------------------------------------------------------------------ reductions

@st.composite
def reduce_cases(draw):
    shape = draw(st.lists(st.integers(1, 12), min_size=1, max_size=4).map(tuple))
    axes = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape),
                         unique=True))
    return shape, sorted(axes)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
@SETTINGS
@given(case=reduce_cases(), seed=seeds, keepdims=st.sampled_from([0, 1]), n_threads=threads)
def test_reduce_matches_ort(op, case, seed, keepdims, n_threads):
    shape, axes = case
    x = data(seed, shape, 3.0, special=False)
    axes_input = np.array(axes, np.int64)
    expected = ort_run(op, [x, axes_input], {"keepdims": keepdims}, opset=18,
                       n_threads=n_threads, initializers=(1,))
    assert_same_bits(OPS[op](x, axes_input, keepdims=keepdims), expected, f"{op} {axes}")


@pytest.mark.parametrize("op", ["ReduceL1", "ReduceL2", "ReduceSumSquare"])
@SETTINGS
@given(case=reduce_cases(), seed=seeds, keepdims=st.sampled_from([0, 1]))
def test_reduce_l1_l2_and_sum_square_match_ort(op, case, seed, keepdims):
    shape, axes = case
    x = data(seed, shape, 3.0, special=False)
    axes_input = np.array(axes, np.int64)
    expected = ort_run(op, [x, axes_input], {"keepdims": keepdims}, opset=18, initializers=(1,))
    assert_same_bits(OPS[op](x, axes_input, keepdims=keepdims), expected, f"{op} {axes}")


@SETTINGS
@given(n=st.integers(1, 5), shape=st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple),
       seed=seeds)
def test_mean_of_inputs_matches_ort(n, shape, seed):
    inputs = [data(seed + i, shape, 3.0, special=False) for i in range(n)]
    assert_same_bits(OPS["Mean"](*inputs), ort_run("Mean", inputs), "Mean")


@pytest.mark.parametrize("shape, axes", [((2, 64, 8, 8), [1]), ((3, 300, 7), [1]),
                                         ((2, 6, 40, 40), [0, 2, 3]), ((2, 8, 7, 7), [2, 3]),
                                         ((3, 64, 1, 1), [1]), ((1, 8, 1, 8), [1, 3]),
                                         ((4, 9, 10, 9), [0, 2]), ((5, 130), [0]),
                                         # size-1 axes count in ORT's merged shape: KRKR is
                                         # its generic loop, RKR (1, 2, 4) its Eigen row sums
                                         ((1, 1, 2, 4), [1, 3]), ((1, 1, 2, 4), [0, 3]),
                                         ((1, 3, 4), [1])])
def test_reduce_mean_summation_patterns_match_ort(shape, axes):
    x = data(11, shape, 3.0, special=False)
    axes_input = np.array(axes, np.int64)
    expected = ort_run("ReduceMean", [x, axes_input], {"keepdims": 0}, opset=18,
                       initializers=(1,))
    assert_same_bits(OPS["ReduceMean"](x, axes_input, keepdims=0), expected, f"{shape} {axes}")


# ------------------------------------------------------------------------------ kernels vs twins

@needs_jit
@pytest.mark.parametrize("name", ["logistic", "tanh", "erf", "exp", "log"])
@SETTINGS
@given(n=st.integers(1, 300), seed=seeds, scale=st.sampled_from([0.5, 5.0, 50.0]))
def test_numba_kernel_equals_numpy_twin(name, n, seed, scale):
    x = data(seed, n, scale)
    if name == "log":
        x = np.abs(x)
    out = np.empty_like(x)
    if name == "log":
        scalar = np.random.default_rng(seed).random(n) < 0.3
        me._nb_log(x, scalar, out)
        assert_same_bits(out, me._np_log(x, scalar), name)
    else:
        getattr(me, f"_nb_{name}")(x, out)
        assert_same_bits(out, getattr(me, f"_np_{name}")(x), name)


@needs_jit
@SETTINGS
@given(rows=st.integers(1, 6), d=st.integers(1, 70), seed=seeds, log=st.booleans())
def test_numba_softmax_and_sums_equal_numpy_twins(rows, d, seed, log):
    x = data(seed, (rows, d), 4.0, special=False)
    out = np.empty_like(x)
    me._nb_softmax_rows(x, out, log)
    assert_same_bits(out, me._np_softmax_rows(x, log), "softmax rows")
    sums = np.empty(rows, np.float32)
    me._nb_global_average(x, sums)
    assert_same_bits(sums, me._np_global_average(x), "global average")
    offsets = np.arange(rows, dtype=np.int64) * (d + seed % 3)
    me._nb_eigen_row_sums(x, offsets, sums)
    assert_same_bits(sums, me._np_eigen_row_sums(x, offsets), "eigen row sums")


@SETTINGS
@given(seed=seeds)
def test_numpy_fma_rounds_once(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, 200)).astype(np.float32)
    c = (-(a.astype(np.float64) * b) * (1 + rng.standard_normal(200) * 1e-7)).astype(np.float32)
    got = me._fma_np(a, b, c)
    for ai, bi, ci, gi in zip(a, b, c, got):
        exact = Fraction(float(ai)) * Fraction(float(bi)) + Fraction(float(ci))
        lo = np.float32(float(exact))
        cands = [lo, np.nextafter(lo, np.float32(np.inf)), np.nextafter(lo, np.float32(-np.inf))]
        best = min(cands, key=lambda v: (abs(Fraction(float(v)) - exact),
                                         int(np.float32(v).view(np.uint32)) & 1))
        assert gi.view(np.uint32) == np.float32(best).view(np.uint32), (ai, bi, ci)


# ------------------------------------------------------------------------------ normalization

def ort_run_outputs(op, inputs, attrs, n_outputs, *, opset=17, n_threads=1):
    """Like :func:`ort_run` but returns ``n_outputs`` outputs."""
    names = [f"in{i}" for i in range(len(inputs))]
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                                  a.shape) for n, a in zip(names, inputs)]
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph([node], "g", graph_inputs,
                              [helper.make_value_info(o, onnx.TypeProto()) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = n_threads
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs)))


@st.composite
def layer_norm_cases(draw):
    shape = draw(st.lists(st.integers(1, 20), min_size=1, max_size=3).map(tuple))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return shape, axis, draw(st.booleans()), draw(st.sampled_from([1e-5, 1e-6, 1e-12]))


@SETTINGS
@given(case=layer_norm_cases(), seed=seeds, n_threads=threads)
def test_layer_norm_matches_ort(case, seed, n_threads):
    shape, axis, with_bias, eps = case
    x = data(seed, shape, 3.0, special=False) + np.float32(1.0)
    normalized = shape[axis % len(shape):]
    scale = data(seed + 1, normalized, 1.0, special=False)
    inputs = [x, scale] + ([data(seed + 2, normalized, 1.0, special=False)] if with_bias else [])
    attrs = {"axis": axis, "epsilon": eps}
    expected = ort_run_outputs("LayerNormalization", inputs, attrs, 3, n_threads=n_threads)
    got = OPS["LayerNormalization"](*inputs, **attrs, noutputs=3)
    for name, g, e in zip(("Y", "Mean", "InvStdDev"), got, expected):
        assert_same_bits(g, e, f"LayerNormalization {name}")


@pytest.mark.parametrize("d", [1, 2, 7, 8, 9, 12, 15, 16, 17, 64, 768])
def test_layer_norm_row_lengths_match_ort(d):
    # rows of 8 or more go through MLAS's AVX2 kernel, shorter rows through the Welford loop
    x = data(d, (10, d), 4.0, special=False)
    scale = data(d + 1, d, 1.0, special=False)
    bias = data(d + 2, d, 1.0, special=False)
    for inputs in ([x, scale, bias], [x, scale]):
        expected = ort_run_outputs("LayerNormalization", inputs, {"axis": -1}, 3)
        got = OPS["LayerNormalization"](*inputs, axis=-1, noutputs=3)
        for name, g, e in zip(("Y", "Mean", "InvStdDev"), got, expected):
            assert_same_bits(g, e, f"LayerNormalization d={d} {name}")


@needs_jit
@SETTINGS
@given(rows=st.integers(1, 5), d=st.integers(1, 40), seed=seeds, with_bias=st.booleans())
def test_numba_layer_norm_equals_numpy_twin(rows, d, seed, with_bias):
    x = data(seed, (rows, d), 3.0, special=False)
    scale = data(seed + 1, d, 1.0, special=False)
    bias = data(seed + 2, d, 1.0, special=False) if with_bias else None
    out, means, invs = np.empty_like(x), np.empty(rows, np.float32), np.empty(rows, np.float32)
    me._nb_layer_norm(x, scale, bias if with_bias else np.zeros_like(scale), with_bias,
                      np.float32(1e-5), out, means, invs)
    for g, t in zip((out, means, invs), me._np_layer_norm(x, scale, bias, 1e-5)):
        assert_same_bits(g, t, "layer norm twin")


@SETTINGS
@given(shape=st.lists(st.integers(1, 12), min_size=3, max_size=4).map(tuple), seed=seeds,
       n_threads=threads, eps=st.sampled_from([1e-5, 1e-3]))
def test_instance_norm_matches_ort(shape, seed, n_threads, eps):
    x = data(seed, shape, 3.0, special=False)
    c = shape[1]
    scale, bias = data(seed + 1, c, 1.0, special=False), data(seed + 2, c, 1.0, special=False)
    expected = ort_run("InstanceNormalization", [x, scale, bias], {"epsilon": eps},
                       n_threads=n_threads)
    assert_same_bits(OPS["InstanceNormalization"](x, scale, bias, epsilon=eps), expected,
                     "InstanceNormalization")


@SETTINGS
@given(shape=st.lists(st.integers(1, 12), min_size=2, max_size=4).map(tuple), seed=seeds,
       n_threads=threads)
def test_batch_norm_matches_ort(shape, seed, n_threads):
    x = data(seed, shape, 3.0, special=False)
    c = shape[1]
    rng = np.random.default_rng(seed)
    scale, bias, mean = (rng.standard_normal((3, c)) * 2).astype(np.float32)
    var = (rng.random(c) * 3 + 0.01).astype(np.float32)
    expected = ort_run("BatchNormalization", [x, scale, bias, mean, var], {"epsilon": 1e-5},
                       n_threads=n_threads)
    assert_same_bits(OPS["BatchNormalization"](x, scale, bias, mean, var, epsilon=1e-5),
                     expected, "BatchNormalization")


@st.composite
def average_pool_cases(draw):
    nsp = draw(st.integers(1, 3))
    spatial = [draw(st.integers(2, 12)) for _ in range(nsp)]
    kernel = [draw(st.integers(1, min(4, s))) for s in spatial]
    strides = [draw(st.integers(1, 4)) for _ in range(nsp)]
    pads = [draw(st.integers(0, k - 1)) for k in kernel] * 2
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads,
             "ceil_mode": draw(st.sampled_from([0, 1])),
             "count_include_pad": draw(st.sampled_from([0, 1]))}
    return [draw(st.integers(1, 2)), draw(st.integers(1, 3))] + spatial, attrs


@SETTINGS
@given(case=average_pool_cases(), seed=seeds, n_threads=threads)
def test_average_pool_matches_ort(case, seed, n_threads):
    # opset 17: MlasPool (vector kernel, generic kernel, global kernel) and, for ceil_mode with
    # count_include_pad, ONNX Runtime's own loop
    shape, attrs = case
    x = data(seed, shape, 3.0, special=False)
    expected = ort_run("AveragePool", [x], attrs, n_threads=n_threads)
    assert_same_bits(OPS["AveragePool"](x, **attrs), expected, f"AveragePool {attrs}")


@SETTINGS
@given(kernel=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       extra=st.tuples(st.integers(0, 9), st.integers(0, 9)), vector=st.booleans(), seed=seeds,
       pads=st.tuples(*[st.integers(0, 3)] * 4), rows_value=st.sampled_from([0.0, -0.0]))
def test_pool_window_sums_numba_equals_numpy_twin(kernel, strides, extra, vector, seed, pads,
                                                  rows_value):
    """The 2-D Numba window sums give the NumPy twin's bits in both MLAS orders (signed zeros
    included: the vector order's column sums start from the first row, the other from +0),
    on an input padded inside the kernel (rows with ``rows_value``, columns with +0) as on one
    padded beforehand."""
    shape = tuple(k + e for k, e in zip(kernel, extra))
    begins, ends = pads[:2], pads[2:]
    padded = tuple(s + b + e for s, b, e in zip(shape, begins, ends))
    out = tuple((s - k) // st_ + 1 for s, k, st_ in zip(padded, kernel, strides))
    x = data(seed, (2, 3) + shape, 3.0, special=False)
    x[..., ::3, ::2] = np.float32(-0.0)
    xp = np.zeros((2, 3) + padded, np.float32)
    xp[:, :, :begins[0]] = rows_value
    xp[:, :, begins[0] + shape[0]:] = rows_value
    xp[:, :, begins[0]:begins[0] + shape[0], begins[1]:begins[1] + shape[1]] = x
    twin = me.pool_window_sums(xp, kernel, strides, out, vector=vector, use_numba=False)
    for use_numba in (True, False):
        got = me.pool_window_sums(x, kernel, strides, out, vector=vector, begins=begins,
                                  ends=ends, rows_value=rows_value, use_numba=use_numba)
        assert_same_bits(got, twin, f"window sums {kernel} {strides} vector={vector} "
                                    f"pads={pads} numba={use_numba}")


@pytest.mark.parametrize("opset", [11, 17, 19])
@settings(max_examples=60, deadline=None)
@given(case=average_pool_cases(), seed=seeds, only_zeros=st.booleans())
def test_average_pool_signed_zeros_as_onnx_runtime(opset, case, seed, only_zeros):
    # the sign of a zero average: MLAS's generic kernels and ORT's own loops sum from +0, the
    # 2D vector kernel's column sums start at the first input row (padding rows do not count,
    # padding columns add +0), the 3D vector kernel's start at +0
    shape, attrs = case
    rng = np.random.default_rng(seed)
    values = [0.0, -0.0, -0.0] if only_zeros else [0.0, -0.0, -0.0, -1.5, 0.75, np.nan, -np.inf]
    x = rng.choice(np.array(values, np.float32), shape)
    expected = ort_run("AveragePool", [x], attrs, opset=opset)
    assert_same_bits(OPS["AveragePool"](x, **attrs, opset=opset), expected,
                     f"AveragePool-{opset} {attrs}")


def test_average_pool_with_kernel_of_the_input_size_is_global_pooling():
    x = data(3, (2, 3, 13, 11), 3.0, special=False)
    expected = ort_run("AveragePool", [x], {"kernel_shape": [13, 11]})
    assert_same_bits(OPS["AveragePool"](x, kernel_shape=[13, 11]), expected, "AveragePool")


# ------------------------------------------------------------------------------ resize

@pytest.mark.parametrize("mode", ["half_pixel", "align_corners", "asymmetric",
                                  "pytorch_half_pixel", "half_pixel_symmetric"])
@SETTINGS
@given(shape=st.sampled_from([(2, 3, 7, 9), (5, 6), (1, 2, 4, 5)]), seed=seeds,
       hs=st.sampled_from([0.6, 1.0, 1.7, 2.0, 2.5, 3.0]),
       ws=st.sampled_from([0.5, 1.0, 1.3, 2.0, 4.0]))
def test_resize_bilinear_matches_ort(mode, shape, seed, hs, ws):
    x = data(seed, shape, 3.0, special=False)
    scales = np.array([1.0] * (len(shape) - 2) + [hs, ws], np.float32)
    attrs = {"mode": "linear", "coordinate_transformation_mode": mode}
    expected = ort_run("Resize", [x, np.array([], np.float32), scales], attrs, opset=19,
                       initializers=(1, 2))
    assert_same_bits(OPS["Resize"](x, None, scales, **attrs), expected, f"Resize {scales}")


@pytest.mark.parametrize("exponent_shape", [(), (1,), (1, 1), (1, 1, 1)])
@SETTINGS
@given(shape=shapes, seed=seeds)
def test_pow_by_size1_exponent_two_and_three_matches_ort(exponent_shape, shape, seed):
    # ORT computes a size-1 exponent of 3 as x*x*x and of 2 as x*x, except where it walks X
    # one element at a time (then C pow)
    x = data(seed, shape + (1,) * max(0, len(exponent_shape) - len(shape)), 3.0)
    for value in (2.0, 3.0):
        y = np.full(exponent_shape, value, np.float32)
        assert_same_bits(OPS["Pow"](x, y), ort_run("Pow", [x, y]), f"Pow {value}")


@SETTINGS
@given(shape=shapes, seed=seeds, kind=st.sampled_from(["scalar", "size1", "full", "last"]),
       dtype=st.sampled_from([np.float32, np.float64, np.int64]),
       value=st.sampled_from([0.5, 1.5, -1.0, 2.0, 3.0, 5.0, None]))
def test_pow_is_the_c_library_pow(shape, seed, kind, dtype, value):
    # ORT calls std::pow per element: powf for a float exponent, pow of doubles for an int or
    # double one (NumPy's power differs on AVX-512 CPUs, where it dispatches to SVML)
    rng = np.random.default_rng(seed)
    x = (np.abs(rng.standard_normal(shape)) * 3 + 0.05).astype(np.float32)
    yshape = {"scalar": (), "size1": (1,), "full": shape, "last": shape[-1:]}[kind]
    y = rng.standard_normal(yshape) * 2 if value is None else np.full(yshape, value)
    y = np.asarray(np.round(y) if dtype == np.int64 else y).astype(dtype)
    assert_same_bits(OPS["Pow"](x, y), ort_run("Pow", [x, y], opset=15), f"Pow {y.dtype}{yshape}")
