"""qsim.kernels.gemm against ONNX Runtime, bit for bit.

Reference: ONNX Runtime's CPU EP with graph optimizations disabled (how AIMET evaluates its
simulated model), with 1 and 2 intra-op threads. Every comparison is ``np.array_equal`` on the
float32 results: no tolerance. NumPy's BLAS ``matmul`` differs from ONNX Runtime in the last bits
on most of these shapes, so the tests fail if the summation order is not MLAS's.
Also: the Numba kernels equal their NumPy twins, and both fused multiply-adds round once (checked
against exact rational arithmetic).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from qsim.kernels import gemm as gx
from qsim.kernels.family import host_family
from qsim.ops import nn

SETTINGS = settings(max_examples=30, deadline=None)


def _ort(node, feeds, *, constants=None, threads=0):
    """Run one ONNX node in ONNX Runtime (CPU, ORT_DISABLE_ALL); ``constants`` become
    initializers (ONNX Runtime pre-packs a constant B of MatMul / Gemm)."""
    constants = constants or {}
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(v.shape))
              for name, v in feeds.items()]
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(v, k)
                                           for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _assert_bitwise(got, expected):
    assert got.shape == expected.shape and got.dtype == expected.dtype == np.float32
    differ = got.view(np.int32) != expected.view(np.int32)
    assert not differ.any(), (f"{int(differ.sum())} of {differ.size} elements differ, first at "
                              f"{np.argwhere(differ)[0].tolist()}: {got[differ][0]!r} vs "
                              f"{expected[differ][0]!r}")


def _normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------------
@st.composite
def conv_cases(draw):
    nsp = draw(st.sampled_from([2, 2, 2, 1, 3]))
    group = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and nsp == 2
    cg = 1 if depthwise else draw(st.sampled_from([1, 3, 8, 20, 40]))
    group = draw(st.sampled_from([4, 7])) if depthwise else group
    mg = draw(st.sampled_from([1, 2, 5, 16]))
    size = 5 if nsp == 3 else 12
    spatial = [draw(st.integers(1, size)) for _ in range(nsp)]
    kernel = [draw(st.integers(1, 3 if nsp == 3 else 5)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 3)) for _ in range(nsp)]
    dilations = [draw(st.integers(1, 2)) for _ in range(nsp)]
    pads = [draw(st.integers(0, 2)) for _ in range(2 * nsp)]
    out = [(i + pads[d] + pads[d + nsp] - dl * (k - 1) - 1) // s + 1
           for d, (i, k, s, dl) in enumerate(zip(spatial, kernel, strides, dilations))]
    assume(min(out) >= 1)
    return dict(n=draw(st.integers(1, 3)), group=group, cg=cg, mg=mg, spatial=spatial,
                kernel=kernel, strides=strides, dilations=dilations, pads=pads,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def _conv_check(case, threads):
    rng = np.random.default_rng(case["seed"])
    group, nsp = case["group"], len(case["spatial"])
    x = _normal(rng, case["n"], case["cg"] * group, *case["spatial"])
    w = _normal(rng, case["mg"] * group, case["cg"], *case["kernel"])
    feeds = {"x": x, "w": w}
    if case["bias"]:
        feeds["b"] = _normal(rng, case["mg"] * group)
    node = helper.make_node("Conv", list(feeds), ["y"], group=group, kernel_shape=case["kernel"],
                            strides=case["strides"], dilations=case["dilations"],
                            pads=case["pads"])
    expected = _ort(node, feeds, threads=threads)
    got = gx.conv(x, w, feeds.get("b"), group=group, strides=case["strides"],
                  dilations=case["dilations"], begins=case["pads"][:nsp],
                  ends=case["pads"][nsp:], threads=threads, family=host_family())
    _assert_bitwise(got, expected)


@SETTINGS
@given(conv_cases(), st.sampled_from([1, 2]))
def test_conv_is_bitwise_ort(case, threads):
    _conv_check(case, threads)


# shapes that pick each MLAS convolution algorithm, K blocking and kernel
SPECIAL_CONVS = {
    "large-K, few columns, one image (threaded segments)":
        dict(n=1, group=1, cg=64, mg=40, spatial=[9, 9], kernel=[3, 3]),
    "K=4608 > N (K stride 1024)": dict(n=2, group=1, cg=512, mg=32, spatial=[4, 4], kernel=[3, 3]),
    "K=4608, one image": dict(n=1, group=1, cg=512, mg=32, spatial=[4, 4], kernel=[3, 3]),
    "filters > outputs (expand then threaded GEMM)":
        dict(n=1, group=1, cg=128, mg=256, spatial=[7, 7], kernel=[3, 3]),
    "pointwise, one image (direct GEMM, threaded)":
        dict(n=1, group=1, cg=300, mg=16, spatial=[10, 10], kernel=[1, 1]),
    "pointwise, batch": dict(n=3, group=1, cg=300, mg=5, spatial=[2, 2], kernel=[1, 1]),
    "pointwise on 1x1 input (N = 1 kernel)":
        dict(n=1, group=1, cg=300, mg=7, spatial=[1, 1], kernel=[1, 1]),
    "one output channel (M = 1 kernel)": dict(n=1, group=1, cg=64, mg=1, spatial=[20, 20],
                                               kernel=[3, 3], pads=[1, 1, 1, 1]),
    "one output pixel, K=1800": dict(n=1, group=1, cg=200, mg=4, spatial=[3, 3], kernel=[3, 3]),
    "depthwise 3x3": dict(n=2, group=16, cg=1, mg=1, spatial=[12, 12], kernel=[3, 3],
                          pads=[1, 1, 1, 1]),
    "depthwise 3x3 stride 2, one image": dict(n=1, group=16, cg=1, mg=1, spatial=[12, 12],
                                              kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "depthwise multiplier 2, 7x7 / 2": dict(n=2, group=8, cg=1, mg=2, spatial=[20, 20],
                                            kernel=[7, 7], strides=[2, 2], pads=[3, 3, 3, 3]),
    "kernel spans the input width": dict(n=1, group=1, cg=1, mg=6, spatial=[9, 5], kernel=[3, 5]),
    "kernel spans the input height, width 1":
        dict(n=1, group=1, cg=1, mg=6, spatial=[4, 9], kernel=[4, 1]),
    "ResNet stem 7x7/2": dict(n=1, group=1, cg=3, mg=16, spatial=[30, 30], kernel=[7, 7],
                              strides=[2, 2], pads=[3, 3, 3, 3]),
    "batch, 7x7 output (Cᵀ computed, image by image)":
        dict(n=2, group=1, cg=32, mg=32, spatial=[7, 7], kernel=[3, 3], pads=[1, 1, 1, 1]),
    "batch, 23 filters (last register block: 5 of 6 rows)":
        dict(n=3, group=1, cg=8, mg=23, spatial=[12, 12], kernel=[3, 3], strides=[2, 2],
             pads=[1, 1, 1, 1]),
    "batch, 21 filters (last register block: 3 of 6 rows)":
        dict(n=2, group=1, cg=8, mg=21, spatial=[8, 8], kernel=[3, 3], pads=[1, 1, 1, 1]),
    "1-D": dict(n=2, group=1, cg=40, mg=16, spatial=[30], kernel=[5], strides=[2], pads=[2, 2]),
    "3-D": dict(n=1, group=1, cg=8, mg=12, spatial=[6, 7, 5], kernel=[3, 3, 3],
                pads=[1, 1, 1, 1, 1, 1]),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(SPECIAL_CONVS))
def test_conv_algorithms_are_bitwise_ort(name, threads):
    spec = dict(SPECIAL_CONVS[name])
    nsp = len(spec["spatial"])
    spec.setdefault("strides", [1] * nsp)
    spec.setdefault("dilations", [1] * nsp)
    spec.setdefault("pads", [0] * (2 * nsp))
    _conv_check(dict(spec, bias=True, seed=len(name)), threads)


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 5), h=st.integers(2, 30), w=st.integers(2, 30),
       pads=st.sampled_from([[3, 3, 3, 3], [3, 3, 2, 2]]), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**16))
def test_depthwise_multiplier2_7x7_stride2_is_bitwise_ort(n, c, h, w, pads, threads, seed):
    """The depthwise shape MLAS gives its own AVX512F kernel (and its near misses), through the
    registered op with this CPU's family against this CPU's ONNX Runtime."""
    rng = np.random.default_rng(seed)
    x, wt, b = _normal(rng, n, c, h, w), _normal(rng, 2 * c, 1, 7, 7), _normal(rng, 2 * c)
    attrs = dict(group=c, kernel_shape=[7, 7], strides=[2, 2], pads=pads)
    expected = _ort(helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs), {"x": x},
                    constants={"w": wt, "b": b}, threads=threads)
    got = gx.conv(x, wt, b, group=c, strides=[2, 2], dilations=[1, 1], begins=pads[:2],
                  ends=pads[2:], threads=threads, family=host_family())
    _assert_bitwise(got, expected)
    _assert_bitwise(nn.conv(x, wt, b, fp32_kernels="auto", **attrs), expected)


def test_nn_conv_is_bitwise_ort_with_default_threads():
    """The registered op (default thread count) on a weight ONNX Runtime sees as a constant."""
    rng = np.random.default_rng(7)
    x, w, b = _normal(rng, 1, 64, 9, 9), _normal(rng, 40, 64, 3, 3), _normal(rng, 40)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1])
    expected = _ort(node, {"x": x}, constants={"w": w, "b": b})
    _assert_bitwise(nn.conv(x, w, b, kernel_shape=[3, 3], pads=[1, 1, 1, 1]), expected)
    assert not np.array_equal(expected, _blas_conv(x, w, b))   # the test can tell orders apart


def _blas_conv(x, w, b):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))   # n c h w kh kw
    return np.einsum("nchwij,mcij->nmhw", cols, w, optimize=True) + b[:, None, None]


# ---------------------------------------------------------------------------------------------
# ConvTranspose
# ---------------------------------------------------------------------------------------------
@st.composite
def conv_transpose_cases(draw):
    group = draw(st.sampled_from([1, 1, 2, 4]))
    strides = [draw(st.integers(1, 3)) for _ in range(2)]
    dilations = [draw(st.integers(1, 2)) for _ in range(2)]
    return dict(n=draw(st.integers(1, 2)), group=group,
                cg=draw(st.sampled_from([1, 4, 16, 150])), mg=draw(st.sampled_from([1, 3, 8])),
                spatial=[draw(st.integers(1, 7)) for _ in range(2)],
                kernel=[draw(st.integers(1, 4)) for _ in range(2)], strides=strides,
                dilations=dilations, pads=[draw(st.integers(0, 1)) for _ in range(4)],
                output_padding=[draw(st.integers(0, s - 1)) for s in strides],  # ORT: < stride
                seed=draw(st.integers(0, 2**16)))


@SETTINGS
@given(conv_transpose_cases(), st.sampled_from([1, 2]))
def test_conv_transpose_is_bitwise_ort(case, threads):
    """Through the registered op (default threads), against 1 and 2 ORT threads: ORT's
    transposed-A product and col2im do not depend on the thread count."""
    rng = np.random.default_rng(case["seed"])
    group = case["group"]
    x = _normal(rng, case["n"], case["cg"] * group, *case["spatial"])
    w = _normal(rng, case["cg"] * group, case["mg"], *case["kernel"])
    b = _normal(rng, case["mg"] * group)
    attrs = dict(group=group, kernel_shape=case["kernel"], strides=case["strides"],
                 dilations=case["dilations"], pads=case["pads"],
                 output_padding=case["output_padding"])
    full = [s * (i - 1) + op + d * (k - 1) + 1 - pb - pe for i, k, s, d, op, pb, pe in
            zip(case["spatial"], case["kernel"], case["strides"], case["dilations"],
                case["output_padding"], case["pads"][:2], case["pads"][2:])]
    assume(min(full) >= 1)
    expected = _ort(helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs),
                    {"x": x, "w": w, "b": b}, threads=threads)
    _assert_bitwise(nn.conv_transpose(x, w, b, **attrs), expected)


# ---------------------------------------------------------------------------------------------
# Gemm and MatMul
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(m=st.sampled_from([1, 2, 3, 8, 33]), k=st.sampled_from([1, 7, 64, 300, 1000]),
       n=st.sampled_from([1, 5, 40, 130]), trans_a=st.integers(0, 1), trans_b=st.integers(0, 1),
       alpha=st.sampled_from([1.0, 0.5, -1.25]), beta=st.sampled_from([1.0, 0.0, 0.3]),
       c_kind=st.sampled_from(["none", "full", "row", "column", "scalar"]),
       constant_b=st.booleans(), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_gemm_is_bitwise_ort(m, k, n, trans_a, trans_b, alpha, beta, c_kind, constant_b,
                             threads, seed):
    rng = np.random.default_rng(seed)
    a = _normal(rng, *((k, m) if trans_a else (m, k)))
    b = _normal(rng, *((n, k) if trans_b else (k, n)))
    c = {"none": None, "full": _normal(rng, m, n), "row": _normal(rng, n),
         "column": _normal(rng, m, 1), "scalar": _normal(rng, 1)}[c_kind]
    feeds, constants = {"a": a}, {}
    (constants if constant_b else feeds)["b"] = b
    if c is not None:
        feeds["c"] = c
    names = ["a", "b"] + (["c"] if c is not None else [])
    node = helper.make_node("Gemm", names, ["y"], alpha=alpha, beta=beta, transA=trans_a,
                            transB=trans_b)
    expected = _ort(node, feeds, constants=constants, threads=threads)
    got = gx.gemm(a.T if trans_a else a, b.T if trans_b else b, c, alpha=alpha, beta=beta,
                  trans_a=trans_a, trans_b=trans_b, packed_b=constant_b, threads=threads)
    _assert_bitwise(got, expected)
    if not constant_b and threads == gx.DEFAULT_THREADS:
        _assert_bitwise(nn.gemm(a, b, c, alpha=alpha, beta=beta, transA=trans_a,
                                transB=trans_b), expected)


MATMUL_SHAPES = [
    ((33, 300), (300, 40)), ((5, 1000), (1000, 20)), ((1, 300), (300, 50)), ((300,), (300, 50)),
    ((6, 300), (300,)), ((3, 5, 300), (300,)), ((3, 1, 300), (300, 9)), ((5, 200), (200, 1)),
    ((2, 3, 40, 300), (3, 300, 70)), ((70, 600), (600, 70)), ((10, 2000), (2000, 8)),
    ((128, 64), (64, 300)), ((3, 1, 200), (3, 200, 30)), ((7,), (7,)), ((1, 200), (4, 200, 60)),
    ((3, 2, 1, 100), (2, 100, 5)), ((2, 1, 16, 64), (1, 4, 64, 16)), ((3, 1, 9), (1, 9, 1)),
    ((4, 1, 200), (1, 200, 1)), ((2, 3, 5, 40), (1, 1, 40, 7)),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_shapes_are_bitwise_ort(shapes, threads):
    rng = np.random.default_rng(sum(map(sum, shapes)))
    a, b = _normal(rng, *shapes[0]), _normal(rng, *shapes[1])
    expected = _ort(helper.make_node("MatMul", ["a", "b"], ["y"]), {"a": a, "b": b},
                    threads=threads)
    _assert_bitwise(gx.matmul(a, b, threads=threads), expected)


@SETTINGS
@given(batch_a=st.sampled_from([(), (1,), (3,), (2, 1), (2, 3)]),
       batch_b=st.sampled_from([(), (1,), (3,), (1, 3)]), m=st.sampled_from([1, 4, 17]),
       k=st.sampled_from([1, 9, 130, 520]), n=st.sampled_from([1, 6, 64, 200]),
       vector_a=st.booleans(), vector_b=st.booleans(), constant_b=st.booleans(),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_matmul_is_bitwise_ort(batch_a, batch_b, m, k, n, vector_a, vector_b, constant_b,
                               threads, seed):
    shape_a = (k,) if vector_a else batch_a + (m, k)
    shape_b = (k,) if vector_b else batch_b + (k, n)
    rng = np.random.default_rng(seed)
    a, b = _normal(rng, *shape_a), _normal(rng, *shape_b)
    constant_b = constant_b and len(shape_b) == 2      # ONNX Runtime packs a constant matrix B
    feeds, constants = {"a": a}, {}
    (constants if constant_b else feeds)["b"] = b
    expected = _ort(helper.make_node("MatMul", ["a", "b"], ["y"]), feeds, constants=constants,
                    threads=threads)
    _assert_bitwise(gx.matmul(a, b, packed_b=constant_b, threads=threads), expected)
    if not constant_b and threads == gx.DEFAULT_THREADS:
        _assert_bitwise(nn.matmul(a, b), expected)


# ---------------------------------------------------------------------------------------------
# kernels: Numba == NumPy twin; fma rounds once
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(m=st.integers(1, 20), n=st.integers(1, 90), k=st.integers(1, 300),
       kind=st.sampled_from([gx.FMA, gx.GROUP4, gx.LANE8_N, gx.LANE8_M]),
       kb=st.sampled_from([1, 3, 8, 128, 256]), alpha=st.sampled_from([1.0, 0.75]),
       zero_first=st.booleans(), seed=st.integers(0, 2**16))
def test_numba_kernels_equal_numpy_twins(m, n, k, kind, kb, alpha, zero_first, seed):
    rng = np.random.default_rng(seed)
    a, b = _normal(rng, 2, m, k), _normal(rng, 1, k, n)
    c0 = _normal(rng, 3, m, n)
    split = n // 2
    tiles = [(0, m, 0, split, kind, kb), (0, m, split, n, kind, kb)] if split else \
        [(0, m, 0, n, kind, kb)]
    if kind != gx.FMA:
        alpha = 1.0
    results = []
    for use_numba in (gx.USE_NUMBA, False):     # (twin vs twin under NUMBA_DISABLE_JIT=1)
        c = c0.copy()
        gx.run_batch(a, b, c, [0, 1, 1], [0, 0, 0], tiles, alpha, zero_first,
                     use_numba=use_numba)
        results.append(c)
    _assert_bitwise(*results)


@pytest.mark.parametrize("m", range(1, 14))
def test_general_kernel_every_row_remainder_equals_numpy_twin(m):
    """Every count of rows in the last 6-row register block (it repeats its last row in the
    missing ones); columns: three 16-column strips and a padded edge (53 columns); m > 6 reads
    B through the packed strips of _region_fma."""
    rng = np.random.default_rng(m)
    a, b = _normal(rng, 1, m, 300), _normal(rng, 1, 300, 53)
    tiles = [(0, m, 0, 53, gx.FMA, 128)]
    results = []
    for use_numba in (gx.USE_NUMBA, False):
        c = _normal(rng, 1, m, 53)
        gx.run_batch(a, b, c, [0], [0], tiles, 1.0, True, use_numba=use_numba)
        results.append(c)
    _assert_bitwise(*results)


def _round_f32(q: Fraction) -> np.float32:
    """The float32 nearest to the rational ``q`` (ties to even), by exact comparison."""
    r = np.float32(float(q))
    candidates = [np.nextafter(r, np.float32(-np.inf)), r, np.nextafter(r, np.float32(np.inf))]
    return min(candidates, key=lambda v: (abs(Fraction(float(v)) - q),
                                          int(np.array(v).view(np.int32)) & 1))


def _fma_cases():
    one_ulp = np.float32(1 + 2.0 ** -23)
    # a·b + c lands, in float64, exactly halfway between two float32 values (double rounding)
    tie = (one_ulp, np.float32(2.0 ** -24 * (1 - 2.0 ** -23)), one_ulp)
    rng = np.random.default_rng(3)
    rand = [tuple(np.float32(v) for v in rng.standard_normal(3) * 10.0 ** rng.integers(-3, 4, 3))
            for _ in range(300)]
    return [tie] + rand


def test_fma_rounds_once():
    cases = _fma_cases()
    a, b, c = (np.array(v, dtype=np.float32) for v in zip(*cases))
    twin = gx.fma_np(a, b, c)
    jit = np.array([gx._fma_scalar(x, y, z) for x, y, z in cases], dtype=np.float32) \
        if gx.USE_NUMBA else twin
    exact = np.array([_round_f32(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))
                      for x, y, z in cases], dtype=np.float32)
    _assert_bitwise(twin, exact)
    _assert_bitwise(jit, exact)
    naive = (a.astype(np.float64) * b + c).astype(np.float32)
    assert naive[0] != exact[0]          # the tie case really needs the correction


@pytest.mark.parametrize("group, cg, mg, spatial, kernel, strides, dilations, pads", [
    (6, 1, 1, (13, 11), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),      # depthwise
    (5, 1, 1, (17, 16), (3, 3), (2, 2), (1, 1), (1, 0, 1, 1)),      # strided, uneven pads
    (4, 3, 1, (12, 12), (5, 5), (1, 2), (2, 1), (2, 2, 0, 1)),      # Cg > 1, dilated
    (1, 7, 5, (15, 14), (3, 2), (2, 1), (1, 2), (1, 1, 1, 0)),      # one image: Numba im2col
])
def test_direct_conv_kernels_equal_numpy_twins(group, cg, mg, spatial, kernel, strides,
                                               dilations, pads):
    """The Convs qsim computes without NumPy's im2col (one filter per group straight from the
    image, :func:`gx._nb_group4_conv`; one image through the Numba im2col) give the bits of
    the NumPy route (strided-view im2col, then the twin kernels)."""
    rng = np.random.default_rng(len(spatial) + group)
    x = _normal(rng, 1, group * cg, *spatial)
    w = _normal(rng, group * mg, cg, *kernel)
    args = dict(group=group, strides=strides, dilations=dilations, begins=pads[:2],
                ends=pads[2:])
    _assert_bitwise(gx.conv(x, w, **args), gx.conv(x, w, use_numba=False, **args))


@settings(max_examples=80, deadline=None)
@given(c=st.integers(1, 4), h=st.integers(1, 19), w=st.integers(1, 23),
       kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 3)] * 4), seed=st.integers(0, 2**16))
def test_numba_im2col_equals_strided_view(c, h, w, kernel, strides, dilations, pads, seed):
    """The compiled im2col (the stride-2 route through even/odd halves of each padded row
    included) gives the columns of NumPy's strided view of the zero-padded image, -0.0 and
    NaN kept."""
    begins, ends = pads[:2], pads[2:]
    out = tuple((s + b + e - d * (k - 1) - 1) // st_ + 1 for s, b, e, d, k, st_ in
                zip((h, w), begins, ends, dilations, kernel, strides))
    assume(min(out) >= 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    x.reshape(-1)[rng.integers(0, x.size, 3)] = [-0.0, np.nan, np.inf]
    want = gx._columns(x, 1, kernel, out, strides, dilations, begins, ends)[1]
    got = np.full((c * kernel[0] * kernel[1], out[0] * out[1]), 7.0, np.float32)
    gx._im2col_2d(x, 1, got, *kernel, *strides, *dilations, *begins, *out)
    _assert_bitwise(got, want)
