"""ONNX Runtime's com.microsoft quantized ops (qsim/ops/contrib_quantized.py) against ONNX Runtime.

Hypothesis draws integer types, shapes (broadcasting ones for the binary ops), scales over many
octaves, zero points (often at the ends of their range) and integers (often at the ends too, so
outputs saturate); each example runs one com.microsoft node in an ONNX Runtime session and
compares qsim's output bit for bit. int8 weights of the integer products stay in [-64, 63]: ONNX
Runtime's uint8 × int8 kernels on AVX2 CPUs without VNNI saturate pairs of larger products (see
tests/ops/test_quantized_ops.py).

Kernel families: the golden files in tests/data/ort_contrib_quantized/ hold ONNX Runtime's outputs
for fixed cases of every op on an AVX-512 CPU and on an emulated AVX2 (Haswell) one; qsim, which
has no family switch for these ops, equals both (test_contrib_ops_are_family_independent).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qsim.errors import OpError
from qsim.jit import USE_NUMBA
from qsim.kernels.gemm import fma_np
from qsim.kernels.mlas_math import DEFAULT_THREADS
from qsim.ops import OPS
from tests.ort_util import ort_and_qsim, ort_run_op

MS = "com.microsoft"
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EIGHT = [np.uint8, np.int8]
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "ort_contrib_quantized"


def same_bits(expected: np.ndarray, got: np.ndarray, what: str) -> None:
    assert (got.dtype, got.shape) == (expected.dtype, expected.shape), what
    if expected.dtype.kind == "f":
        bad = expected.view(np.int32) != got.view(np.int32)
    else:
        bad = expected != got
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.size} differ; first at "
                           f"{np.argwhere(bad)[0].tolist()}: ORT {expected[bad][0]!r}, "
                           f"qsim {got[bad][0]!r}")


def check(op, inputs, attrs=None, *, initializers=()):
    expected, got = ort_and_qsim(op, inputs, attrs, opset=17, domain=MS,
                                 initializers=initializers)
    same_bits(expected[0], got[0], op)


# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------
def scales(lo=-7.0, hi=2.0):
    """float32 scales log-uniform over ``[e^lo, e^hi]``."""
    return st.floats(lo, hi).map(lambda e: np.float32(np.exp(e)))


@st.composite
def integers(draw, dtype, shape=None):
    """An array of ``dtype`` (or a scalar if ``shape`` is None); a third of the draws put many
    values at the ends of the range."""
    info = np.iinfo(dtype)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if shape is None:
        return dtype(draw(st.sampled_from([info.min, info.max, 0]) | st.integers(info.min,
                                                                                  info.max)))
    a = rng.integers(info.min, info.max + 1, shape)
    if draw(st.integers(0, 2)) == 0:
        ends = rng.random(shape) < 0.4
        a = np.where(ends, rng.choice([info.min, info.max], shape), a)
    return a.astype(dtype)


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast: equal, one a suffix of the other, size-1 axes on either side,
    or one operand a scalar."""
    rank = draw(st.integers(1, 4))
    full = [draw(st.integers(1, 6)) for _ in range(rank)]
    full[-1] = draw(st.integers(1, 40))
    a = list(full)
    b = [d if draw(st.booleans()) else 1 for d in full]
    b = b[draw(st.integers(0, rank - 1)):] if draw(st.booleans()) else b
    if draw(st.integers(0, 5)) == 0:
        b = [1]
    return (tuple(a), tuple(b)) if draw(st.booleans()) else (tuple(b), tuple(a))


# ---------------------------------------------------------------------------------------------
# QLinearAdd / QLinearMul
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.sampled_from(EIGHT), st.sampled_from(["QLinearAdd", "QLinearMul"]), st.data())
def test_qlinear_binary_ops_match_ort(dtype, op, data):
    shape_a, shape_b = data.draw(broadcast_pair())
    a = data.draw(integers(dtype, shape_a))
    b = data.draw(integers(dtype, shape_b))
    params = [data.draw(scales()), data.draw(integers(dtype)), data.draw(scales()),
              data.draw(integers(dtype)), data.draw(scales()), data.draw(integers(dtype))]
    check(op, [a, params[0], params[1], b, params[2], params[3], params[4], params[5]])


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(EIGHT), st.sampled_from([(1, 8, 1, 1), (80,), (2, 8, 80, 80), (1,)]),
       st.booleans(), st.data())
def test_qlinear_add_table_path_matches_ort(dtype, small, swap, data):
    """Outputs above 256 x 256 elements read qsim's table of every operand pair: still equal to
    ONNX Runtime, for both operand roles."""
    shapes = ((2, 8, 80, 80), small)
    shape_a, shape_b = shapes[::-1] if swap else shapes
    a = data.draw(integers(dtype, shape_a))
    b = data.draw(integers(dtype, shape_b))
    params = [data.draw(scales()), data.draw(integers(dtype)), data.draw(scales()),
              data.draw(integers(dtype)), data.draw(scales()), data.draw(integers(dtype))]
    check("QLinearAdd", [a, params[0], params[1], b, params[2], params[3], params[4], params[5]])


def _add_in_order(first, r_first, z_first, second, r_second, z_second, z_c):
    """``rne(fma(first, r_first, fma(second, r_second, z_c - fma(r_first, z_first,
    r_second ⊗ z_second))))`` saturated to uint8: QLinearAdd with ``second`` folded first."""
    f32 = np.float32
    fixed = f32(z_c) - fma_np(r_first, f32(z_first), f32(r_second * f32(z_second)))
    v = fma_np(first.astype(f32), r_first, fma_np(second.astype(f32), r_second, fixed))
    return np.clip(np.rint(v.astype(np.float64)), 0, 255).astype(np.uint8)


def test_qlinear_add_follows_ort_operand_roles():
    """ONNX Runtime's AVX2 QLinearAdd folds its scalar operand (or B) into the constant first, so
    a scalar A is folded first, not B. On inputs where the two orders round differently ONNX
    Runtime agrees with qsim, whose order follows the broadcast layout."""
    rng = np.random.default_rng(3)
    trials = 20000
    s = np.exp(rng.uniform(-5, 1, (trials, 3))).astype(np.float32)
    z = rng.integers(0, 256, (trials, 3))
    a = rng.integers(0, 256, (trials, 1))
    b = np.arange(256)[None, :]
    r_a, r_b = (s[:, :1] / s[:, 2:]).astype(np.float32), (s[:, 1:2] / s[:, 2:]).astype(np.float32)
    b_first = _add_in_order(a, r_a, z[:, :1], b, r_b, z[:, 1:2], z[:, 2:])  # A, B both spans
    a_first = _add_in_order(b, r_b, z[:, 1:2], a, r_a, z[:, :1], z[:, 2:])  # A a scalar
    differ = np.flatnonzero((a_first != b_first).any(axis=1))
    assert differ.size >= 3
    for t in differ[:4]:
        args = [np.array([a[t, 0]], np.uint8), s[t, 0], np.uint8(z[t, 0]),
                b[0].astype(np.uint8), s[t, 1], np.uint8(z[t, 1]), s[t, 2], np.uint8(z[t, 2])]
        check("QLinearAdd", args)
        assert (OPS["QLinearAdd"](*args) == a_first[t]).all()
        big = np.tile(args[3], (300, 1))                      # > 256 x 256: the table path
        big_args = args[:3] + [big] + args[4:]
        check("QLinearAdd", big_args)
        assert (OPS["QLinearAdd"](*big_args) == a_first[t]).all()


# ---------------------------------------------------------------------------------------------
# lookup-table ops
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.sampled_from(EIGHT), st.sampled_from(["QLinearSigmoid", "QLinearLeakyRelu"]),
       st.floats(-0.5, 1.5), st.data())
def test_qlinear_lookup_ops_match_ort(dtype, op, alpha, data):
    x = data.draw(integers(dtype, (2, 3, 17)))
    sx = data.draw(scales(-6, 0) if op == "QLinearSigmoid" else scales())
    sy = data.draw(scales(-9, -3) if op == "QLinearSigmoid" else scales())
    attrs = {"alpha": alpha} if op == "QLinearLeakyRelu" else {}
    check(op, [x, sx, data.draw(integers(dtype)), sy, data.draw(integers(dtype))], attrs)


@SETTINGS
@given(st.sampled_from(EIGHT), st.integers(1, 4), st.integers(0, 2), st.data())
def test_qlinear_concat_matches_ort(dtype, count, axis, data):
    s_y, z_y = data.draw(scales()), data.draw(integers(dtype))
    inputs = [s_y, z_y]
    for _ in range(count):
        shape = [2, 3, 4]
        shape[axis] = data.draw(st.integers(1, 4))
        copy = data.draw(st.integers(0, 3)) == 0      # same parameters as Y: a plain copy
        inputs += [data.draw(integers(dtype, tuple(shape))),
                   s_y if copy else data.draw(scales()), z_y if copy else
                   data.draw(integers(dtype))]
    check("QLinearConcat", inputs, {"axis": axis - 3 if data.draw(st.booleans()) else axis})


# ---------------------------------------------------------------------------------------------
# QLinearSoftmax
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.sampled_from(EIGHT), st.sampled_from([12, 13]), st.data())
def test_qlinear_softmax_matches_ort(dtype, opset, data):
    """Both opset semantics, every axis (and the default), uint8/int8, ORT's usual 1/256 output
    scale and others (also small ones, where ``t · ⌊1/s_y⌋`` exceeds the float32 range)."""
    rank = data.draw(st.integers(1, 4))
    shape = tuple(data.draw(st.integers(1, 6)) for _ in range(rank))
    x = data.draw(integers(dtype, shape))
    attrs = {"opset": opset}
    if data.draw(st.integers(0, 3)):
        attrs["axis"] = data.draw(st.integers(-rank, rank - 1))
    if data.draw(st.booleans()):
        s_y, z_y = np.float32(1 / 256), dtype(0 if dtype == np.uint8 else -128)
    else:
        s_y, z_y = data.draw(scales(-9, -1)), data.draw(integers(dtype))
    check("QLinearSoftmax", [x, data.draw(scales(-6, 1)), data.draw(integers(dtype)), s_y, z_y],
          attrs, initializers=(1,) if data.draw(st.booleans()) else ())


def _softmax_float_variant(x, s_x, s_y, z_y):
    """The same softmax with a double ``log`` for the shift and float32 product and quotient
    (what the C++ source reads like): an alternative that rounds some near-ties differently."""
    d = x.shape[1]
    shift = max(0.0, np.log(float(np.finfo(np.float32).max) / d) - 5.0) / float(s_x)
    table = np.array([np.exp((i - 255 + shift) * float(s_x)) for i in range(256)], np.float32)
    t = table[x.astype(np.int64) + 255 - x.max(axis=1, keepdims=True)]
    total = np.zeros(x.shape[0], np.float32)
    for j in range(d):
        total = (total + t[:, j]).astype(np.float32)
    y = np.float32(np.floor(np.float32(1) / s_y))
    with np.errstate(over="ignore", invalid="ignore"):
        v = ((t * y).astype(np.float32) / total[:, None]).astype(np.float32)
    return np.clip(np.rint(v.astype(np.float64)) + int(z_y), 0, 255)


def test_qlinear_softmax_rounds_like_ort_near_ties():
    """Rows where the float32 reading of ORT's source rounds differently from qsim (near .5
    quotients, overflowing products): ONNX Runtime agrees with qsim on each."""
    rng = np.random.default_rng(8)
    checked = 0
    for _ in range(20000):
        d = int(rng.integers(2, 200))
        x = rng.integers(0, 256, (8, d)).astype(np.uint8)
        s_x = np.float32(np.exp(rng.uniform(-6, 0)))
        s_y = np.float32(np.exp(rng.uniform(-8, -3)))
        z_y = np.uint8(rng.integers(0, 50))
        ours = OPS["QLinearSoftmax"](x, s_x, np.uint8(0), s_y, z_y, opset=13)
        if (ours == _softmax_float_variant(x, s_x, s_y, z_y)).all():
            continue
        check("QLinearSoftmax", [x, s_x, np.uint8(0), s_y, z_y], {"opset": 13})
        checked += 1
        if checked == 12:
            break
    assert checked == 12


# ---------------------------------------------------------------------------------------------
# pools
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.sampled_from(EIGHT), st.integers(3, 5), st.booleans(), st.data())
def test_qlinear_global_average_pool_matches_ort(dtype, rank, channels_last, data):
    shape = tuple(data.draw(st.integers(1, 7)) for _ in range(rank))
    x = data.draw(integers(dtype, shape))
    s_x = data.draw(scales(-4, 1))
    n = int(np.prod(shape[1:-1] if channels_last else shape[2:]))
    s_y = data.draw(scales(-4, 1).filter(
        lambda s: 2.0**-32 <= np.float32(s_x / np.float32(s * np.float32(n))) < 256))
    check("QLinearGlobalAveragePool", [x, s_x, data.draw(integers(dtype)), s_y,
                                       data.draw(integers(dtype))],
          {"channels_last": int(channels_last)})


@SETTINGS
@given(st.sampled_from(EIGHT), st.integers(1, 3), st.booleans(), st.data())
def test_qlinear_average_pool_matches_ort(dtype, nsp, channels_last, data):
    spatial = [data.draw(st.integers(2, 8)) for _ in range(nsp)]
    kernel = [data.draw(st.integers(1, s)) for s in spatial]
    strides = [data.draw(st.integers(1, 3)) for _ in range(nsp)]
    attrs = {"kernel_shape": kernel, "strides": strides,
             "count_include_pad": data.draw(st.integers(0, 1)),
             "ceil_mode": data.draw(st.integers(0, 1)), "channels_last": int(channels_last)}
    if data.draw(st.integers(0, 4)) == 0:
        attrs["auto_pad"] = data.draw(st.sampled_from(["SAME_UPPER", "SAME_LOWER", "VALID"]))
        attrs.pop("ceil_mode")
    else:
        attrs["pads"] = [data.draw(st.integers(0, k - 1)) for k in kernel * 2]
    shape = (2, 3, *spatial)
    x = data.draw(integers(dtype, shape))
    if channels_last:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    check("QLinearAveragePool", [x, data.draw(scales()), data.draw(integers(dtype)),
                                 data.draw(scales()), data.draw(integers(dtype))], attrs)


def test_qlinear_average_pool_whole_image_runs_global_pool():
    """A kernel covering the image without padding takes ONNX Runtime's integer global pool
    (rounding once), not the float loop: the two differ on these inputs and ORT agrees."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (2, 4, 5, 5)).astype(np.uint8)
    args = [x, np.float32(0.37), np.uint8(17), np.float32(0.11), np.uint8(9)]
    check("QLinearAveragePool", args, {"kernel_shape": [5, 5]})
    pooled = OPS["QLinearAveragePool"](*args, kernel_shape=[5, 5])
    assert (pooled == OPS["QLinearGlobalAveragePool"](*args)).all()


# ---------------------------------------------------------------------------------------------
# integer matrix products
# ---------------------------------------------------------------------------------------------
def weight_range(dtype):
    return (-64, 63) if dtype == np.int8 else (0, 255)


@st.composite
def weights(draw, dtype, shape):
    lo, hi = weight_range(dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.integers(lo, hi + 1, shape).astype(dtype)


@SETTINGS
@given(st.sampled_from([(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)]),
       st.data())
def test_qgemm_matches_ort(types, data):
    ta, tb = types
    m, k, n = (data.draw(st.integers(1, 24)) for _ in range(3))
    trans_a, trans_b = data.draw(st.integers(0, 1)), data.draw(st.integers(0, 1))
    a = data.draw(integers(ta, (k, m) if trans_a else (m, k)))
    b = data.draw(weights(tb, (n, k) if trans_b else (k, n)))
    lo, hi = weight_range(tb)
    if data.draw(st.booleans()):
        s_b = np.exp(np.random.default_rng(m * n).uniform(-6, 0, n)).astype(np.float32)
        z_b = data.draw(weights(tb, (n,)))
    else:
        s_b, z_b = data.draw(scales(-6, 0)), tb(data.draw(st.integers(lo, hi)))
    c = data.draw(st.sampled_from([None, (n,), (1, n), (m, n), (m, 1), ()]))
    if c is not None:
        c = np.random.default_rng(k).integers(-40000, 40000, c).astype(np.int32)
    inputs = [a, data.draw(scales(-6, 0)), data.draw(integers(ta)), b, s_b, z_b, c]
    if data.draw(st.booleans()):
        inputs += [data.draw(scales(-4, 2)), data.draw(integers(ta))]
    attrs = {"alpha": data.draw(st.sampled_from([1.0, 0.5, 1.75])), "transA": trans_a,
             "transB": trans_b}
    check("QGemm", inputs, attrs, initializers=(3, 4, 5) if data.draw(st.booleans()) else ())


@SETTINGS
@given(st.sampled_from([np.uint8, np.int8]), st.sampled_from(["MatMulIntegerToFloat",
                                                             "DynamicQuantizeMatMul"]),
       st.data())
def test_integer_to_float_matmuls_match_ort(tb, op, data):
    k, n = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 24))
    batch = tuple(data.draw(st.integers(1, 3)) for _ in range(data.draw(st.integers(0, 2))))
    shape_a = batch + (data.draw(st.integers(1, 9)), k)
    b = data.draw(weights(tb, (k, n)))
    rng = np.random.default_rng(k * n)
    if data.draw(st.booleans()):
        s_b = np.exp(rng.uniform(-6, 0, n)).astype(np.float32)
        z_b = data.draw(weights(tb, (n,)))
    else:
        s_b, z_b = data.draw(scales(-6, 0)), tb(data.draw(st.integers(*weight_range(tb))))
    bias = (rng.standard_normal(n) * 3).astype(np.float32) if data.draw(st.booleans()) else None
    if op == "MatMulIntegerToFloat":
        inputs = [data.draw(integers(np.uint8, shape_a)), b, data.draw(scales(-6, 0)), s_b,
                  data.draw(integers(np.uint8)), z_b, bias]
    else:
        inputs = [(rng.standard_normal(shape_a) * data.draw(st.floats(0.01, 50))).astype(
            np.float32), b, s_b, z_b, bias]
    check(op, inputs, initializers=(1,) if data.draw(st.booleans()) else ())


def pack_nbits(q: np.ndarray, bits: int, block: int) -> np.ndarray:
    """``[N, K]`` integers as MatMulNBits's B ``[N, ⌈K/block⌉, block·bits/8]`` (4-bit: low
    nibble first, the last block padded with zeros)."""
    n, k = q.shape
    blocks = -(-k // block)
    padded = np.zeros((n, blocks * block), np.uint8)
    padded[:, :k] = q
    padded = padded.reshape(n, blocks, block)
    return padded if bits == 8 else (padded[..., 0::2] | (padded[..., 1::2] << 4)).astype(np.uint8)


def pack_nbits_zero_points(z: np.ndarray, bits: int) -> np.ndarray:
    n, blocks = z.shape
    if bits == 8:
        return z.reshape(-1).astype(np.uint8)
    padded = np.zeros((n, -(-blocks // 2) * 2), np.uint8)
    padded[:, :blocks] = z
    return (padded[:, 0::2] | (padded[:, 1::2] << 4)).reshape(-1).astype(np.uint8)


@SETTINGS
@given(st.sampled_from([4, 8]), st.sampled_from([16, 32, 64, 128, 256]), st.data())
def test_matmul_nbits_float_compute_matches_ort(bits, block, data):
    """accuracy_level 0/1 (float compute), weights as initializers (as ORT's fusion makes them),
    ORT run with qsim's default thread count (the 8-bit SGEMM splits its work by threads)."""
    k, n = data.draw(st.integers(1, 300)), data.draw(st.integers(1, 140))
    rows = data.draw(st.integers(2 if bits == 4 else 1, 9))
    lead = (2,) if data.draw(st.booleans()) else ()
    blocks = -(-k // block)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    q = rng.integers(0, 1 << bits, (n, k)).astype(np.uint8)
    zp = (pack_nbits_zero_points(rng.integers(0, 1 << bits, (n, blocks)), bits)
          if data.draw(st.booleans()) else None)
    bias = rng.standard_normal(n).astype(np.float32) if data.draw(st.booleans()) else None
    inputs = [(rng.standard_normal(lead + (rows, k)) * 2).astype(np.float32),
              pack_nbits(q, bits, block),
              np.exp(rng.uniform(-6, -2, n * blocks)).astype(np.float32), zp, None, bias]
    attrs = {"K": k, "N": n, "bits": bits, "block_size": block,
             "accuracy_level": data.draw(st.sampled_from([0, 1]))}
    expected = ort_run_op("MatMulNBits", inputs, attrs, opset=17, domain=MS,
                          initializers=(1, 2, 3, 5), threads=DEFAULT_THREADS)[0]
    same_bits(expected, np.asarray(OPS["MatMulNBits"](*inputs, **attrs)), "MatMulNBits")


# ---------------------------------------------------------------------------------------------
# kernel families
# ---------------------------------------------------------------------------------------------
def _golden(family: str):
    meta = json.loads((GOLDEN / family / "cases.json").read_text())
    arrays = np.load(GOLDEN / family / "cases.npz")
    return meta, arrays


def test_contrib_ops_are_family_independent():
    """ONNX Runtime's outputs for the same fixed cases on AVX-512 and on AVX2 (Haswell under
    QEMU) are identical, and qsim (no family switch for these ops) equals both: MLAS runs the
    same QLinearAdd (AVX2) and logistic (FMA3) kernels on both families, and the rest is
    integer arithmetic or scalar C++."""
    avx2, avx2_arrays = _golden("avx2")
    avx512, avx512_arrays = _golden("avx512")
    assert avx2["family"] == "avx2" and avx512["family"] == "avx512"
    assert [c["op"] for c in avx2["cases"]] == [c["op"] for c in avx512["cases"]]
    ops = set()
    for case in avx512["cases"]:
        i = case["id"]
        inputs = [avx512_arrays[f"c{i}_in{j}"] if f"c{i}_in{j}" in avx512_arrays.files else None
                  for j in range(case["ninputs"])]
        got = OPS[case["op"]](*[x for x in inputs], **case["attrs"])
        for family, arrays in (("avx512", avx512_arrays), ("avx2", avx2_arrays)):
            same_bits(arrays[f"c{i}_out"], np.asarray(got), f"{case['op']} case {i} {family}")
        ops.add(case["op"])
    assert ops == {name for name in OPS if name in _CONTRIB_OPS}


_CONTRIB_OPS = {"QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat",
                "QLinearSoftmax", "QLinearGlobalAveragePool", "QLinearAveragePool", "QGemm",
                "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits"}


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
U8 = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
S, Z = np.float32(0.1), np.uint8(3)
NBITS = [np.ones((2, 16), np.float32), np.zeros((2, 1, 8), np.uint8), np.ones(2, np.float32)]
NBITS_ATTRS = {"K": 16, "N": 2, "bits": 4, "block_size": 16}

BAD = [
    ("QLinearAdd", [U8, S, Z, U8.astype(np.int8), S, np.int8(0), S, Z], {}, "expected uint8"),
    ("QLinearAdd", [U8.astype(np.uint16), S, np.uint16(0), U8.astype(np.uint16), S,
                    np.uint16(0), S, np.uint16(0)], {}, "uint16"),
    ("QLinearMul", [U8, S, Z, np.zeros((2, 5), np.uint8), S, Z, S, Z], {}, "broadcast"),
    ("QLinearMul", [U8, np.array([S, S]), Z, U8, S, Z, S, Z], {}, "A_scale"),
    ("QLinearSigmoid", [U8, S, np.int8(0), S, Z], {}, "X_zero_point"),
    ("QLinearConcat", [S, Z, U8, S], {"axis": 0}, "triples"),
    ("QLinearConcat", [S, Z, U8, S, Z], {}, "axis is required"),
    ("QLinearConcat", [S, Z, U8, S, Z], {"axis": 5}, "axis=5"),
    ("QLinearSoftmax", [U8, S, Z, S, Z], {}, "opset"),
    ("QLinearSoftmax", [U8, S, Z, S, Z], {"opset": 13, "axis": 3}, "axis=3"),
    ("QLinearGlobalAveragePool", [U8, S, Z, np.float32(1e-12), Z], {}, "range"),
    ("QLinearGlobalAveragePool", [U8, S, Z, S, Z], {"channels_last": 2}, "channels_last"),
    ("QLinearAveragePool", [U8, S, Z, S, Z], {}, "kernel_shape"),
    ("QLinearAveragePool", [U8[0], S, Z, S, Z], {"kernel_shape": [2]}, "rank"),
    ("QGemm", [U8[0], S, Z, U8[0], S, Z], {}, "inner dimensions"),
    ("QGemm", [U8[0].astype(np.int8), S, np.int8(0), U8[0].T, S, Z], {}, "int8 A"),
    ("QGemm", [U8[0], S, Z, U8[0].T, S, Z, np.zeros(3, np.float32)], {}, "int32"),
    ("QGemm", [U8[0], S, Z, U8[0].T, np.ones(5, np.float32), Z], {}, "b_scale"),
    ("QGemm", [U8[0], S, Z, U8[0].T, S, Z, None, S], {}, "y_zero_point"),
    ("QGemm", [U8[0][:, :0], S, Z, U8[0][:0], S, Z], {}, "K = 0"),
    ("MatMulIntegerToFloat", [U8[0], U8[0], S, S], {}, "inner"),
    ("MatMulIntegerToFloat", [U8[0], U8[0].T, S, S, None, None, np.ones(2, np.float32)], {},
     "bias"),
    ("DynamicQuantizeMatMul", [U8[0], U8[0].T, S], {}, "float32"),
    ("MatMulNBits", NBITS, dict(NBITS_ATTRS, accuracy_level=4), "accuracy_level=4"),
    ("MatMulNBits", NBITS, dict(NBITS_ATTRS, bits=2), "bits=2"),
    ("MatMulNBits", NBITS, dict(NBITS_ATTRS, block_size=24), "block_size=24"),
    ("MatMulNBits", NBITS, dict(NBITS_ATTRS, K=None), "K=None"),
    ("MatMulNBits", [NBITS[0][:1]] + NBITS[1:], NBITS_ATTRS, "single row"),
    ("MatMulNBits", [NBITS[0], NBITS[1][..., :4], NBITS[2]], NBITS_ATTRS, r"uint8\[2, 1, 8\]"),
    ("MatMulNBits", NBITS[:3] + [None, np.zeros(16, np.int32)], NBITS_ATTRS, "g_idx"),
]


@pytest.mark.parametrize("op, inputs, attrs, words", BAD,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_raises_op_error(op, inputs, attrs, words):
    with pytest.raises(OpError, match=words):
        OPS[op](*inputs, **attrs)


# ---------------------------------------------------------------------------------------------
# MatMulNBits with int8 compute (accuracy_level 4)
# ---------------------------------------------------------------------------------------------
NBITS_INT8 = Path(__file__).resolve().parents[1] / "data" / "ort_nbits_int8"


def _nbits_int8_inputs(data, k_max=300, n_max=140):
    """Random MatMulNBits inputs (8-bit, block 32) as ORT's DQ → MatMulNBits fusion makes them:
    uint8 B with zero points (or none: 128), one scale per column and block, optional bias.
    Activations at several magnitudes, with exact block maxima, zeros and ties now and then."""
    k, n = data.draw(st.integers(1, k_max)), data.draw(st.integers(1, n_max))
    lead = data.draw(st.sampled_from([(1,), (3,), (9,), (2, 5), (2, 1, 3)]))
    blocks = -(-k // 32)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = (rng.standard_normal(lead + (k,)) * np.exp(rng.uniform(-4, 4))).astype(np.float32)
    style = data.draw(st.sampled_from(["normal", "levels", "sparse"]))
    if style == "levels":        # few distinct values: exact maxima and halfway products
        a = (rng.integers(-4, 5, a.shape) * np.float32(0.75)).astype(np.float32)
    elif style == "sparse":
        a[rng.random(a.shape) < 0.7] = 0
    q = rng.integers(0, 256, (n, blocks, 32)).astype(np.uint8)
    if data.draw(st.booleans()):  # extreme weights (products near the int16 limit of pairs)
        q = np.where(rng.random(q.shape) < 0.5, 255, 0).astype(np.uint8)
    zp = rng.integers(0, 256, n * blocks).astype(np.uint8) if data.draw(st.booleans()) else None
    bias = rng.standard_normal(n).astype(np.float32) if data.draw(st.booleans()) else None
    s = np.exp(rng.uniform(-8, 0, n * blocks)).astype(np.float32)
    attrs = {"K": k, "N": n, "bits": 8, "block_size": 32, "accuracy_level": 4}
    return [a, q, s, zp, None, bias], attrs


@SETTINGS
@given(st.data())
def test_matmul_nbits_int8_compute_matches_ort(data):
    """accuracy_level 4 against this machine's ONNX Runtime, weights as initializers (prepacked,
    as in an exported model), ORT's default thread count. qsim computes this CPU's family; on a
    CPU whose CompInt8 kernels qsim does not reproduce it must refuse with a typed OpError."""
    from qsim.kernels.family import NBITS_INT8_FAMILIES, host_nbits_int8
    inputs, attrs = _nbits_int8_inputs(data)
    if host_nbits_int8() not in NBITS_INT8_FAMILIES:
        with pytest.raises(OpError, match="not reproduced"):
            OPS["MatMulNBits"](*inputs, **attrs)
        return
    expected = ort_run_op("MatMulNBits", inputs, attrs, opset=17, domain=MS,
                          initializers=[j for j in (1, 2, 3, 5) if inputs[j] is not None],
                          threads=DEFAULT_THREADS)[0]
    same_bits(expected, np.asarray(OPS["MatMulNBits"](*inputs, **attrs)), "MatMulNBits")


@pytest.mark.parametrize("family", ["avx2", "avx512"])
def test_matmul_nbits_int8_compute_equals_both_families(family):
    """Golden ONNX Runtime outputs of fixed cases (M = 1 and many rows, batch dims, K with a
    partial block and 1-8+ blocks, N above 128 and not a multiple of 4, bias, saturating
    operands) on an AVX-512 VNNI CPU and on AVX2 (Haswell under QEMU): qsim equals each with
    ``fp32_kernels`` naming that family, on any CPU. The two families differ from each other
    in most cases (different lane orders), so each comparison means something."""
    meta = json.loads((NBITS_INT8 / family / "cases.json").read_text())
    arrays = np.load(NBITS_INT8 / family / "cases.npz")
    other = np.load(NBITS_INT8 / ("avx512" if family == "avx2" else "avx2") / "cases.npz")
    differ = 0
    for i, case in enumerate(meta):
        inputs = [arrays[f"c{i}_in{j}"] if f"c{i}_in{j}" in arrays.files else None
                  for j in range(case["ninputs"])]
        got = OPS["MatMulNBits"](*inputs, **case["attrs"], fp32_kernels=family)
        same_bits(arrays[f"c{i}_out"], np.asarray(got), f"MatMulNBits case {i} {family}")
        differ += not np.array_equal(arrays[f"c{i}_out"], other[f"c{i}_out"])
    assert len(meta) == 14 and differ >= 12


@pytest.mark.skipif(not USE_NUMBA, reason="compares the Numba kernel with its NumPy twin; "
                    "NUMBA_DISABLE_JIT=1 runs the twin only (checked against ORT above)")
@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from([False, True]))
def test_matmul_nbits_int8_numba_equals_numpy_twin(data, avx2):
    """The Numba kernel and its NumPy twin give the same bits (both lane orders)."""
    from qsim.kernels import nbits_int8 as nb
    inputs, attrs = _nbits_int8_inputs(data, k_max=200, n_max=20)
    a, q, s, zp, _, bias = inputs
    n, blocks = attrs["N"], q.shape[1]
    q_a, s_a, sum_a = nb.quantize_a(a.reshape(-1, attrs["K"]))
    s_b = s.reshape(n, blocks)
    z_b = np.full((n, blocks), 128) if zp is None else zp.reshape(n, blocks)
    sum_b = (-(s_b * z_b.astype(np.float32))).astype(np.float32)
    single = np.arange(n) >= n - n % 4
    twin = nb._np_matmul(q_a, s_a, sum_a, q, s_b, sum_b, bias, single, avx2)
    jit = nb._nb_matmul(q_a, s_a, sum_a, q, s_b, sum_b,
                        np.zeros(n, np.float32) if bias is None else bias, bias is not None,
                        single, avx2)
    same_bits(twin, jit, "twin")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.just(0.0), st.floats(1.0000000031710769e-30, 1e6, width=32),
                          st.floats(-1e6, -1.0000000031710769e-30, width=32)), min_size=1, max_size=64))
def test_nbits_int8_quantize_a_properties(values):
    """A's block quantization: |q| ≤ 127, the block maximum maps to ±127, q within half a step
    (plus float rounding) of a / s, and zero blocks give scale 0 and q = 0 (exact arithmetic
    in float64 as the reference). Magnitudes from 1e-30 (blocks below 2^-121 overflow 127 ⊘
    amax in float32, module docstring)."""
    from qsim.kernels.nbits_int8 import quantize_a
    a = np.array([values], np.float32)
    q, s, sums = quantize_a(a)
    blocks = q.shape[1]
    padded = np.zeros(blocks * 32, np.float64)
    padded[:a.size] = a[0]
    for j in range(blocks):
        x = padded[32 * j:32 * j + 32]
        amax = np.abs(x).max()
        assert np.all(np.abs(q[0, j]) <= 127)
        if amax == 0:
            assert s[0, j] == 0 and not q[0, j].any() and sums[0, j] == 0
            continue
        assert np.abs(q[0, j][np.argmax(np.abs(x))]) == 127
        assert np.all(np.abs(q[0, j] - x * 127 / amax) <= 0.5 + 1e-4)
        assert s[0, j] == np.float32(np.float32(amax) / np.float32(127))
        assert sums[0, j] == np.float32(s[0, j] * np.float32(q[0, j].sum()))


def test_matmul_nbits_int8_refuses_unknown_families(monkeypatch):
    """On a CPU whose CompInt8 kernels qsim does not reproduce (AVX-512 without VNNI, AVX2 with
    AVX-VNNI), ``"auto"`` refuses with a typed error naming the family; a named family still
    gives that family's bits."""
    from qsim.kernels import family
    inputs = [np.ones((1, 32), np.float32), np.full((2, 1, 32), 7, np.uint8),
              np.ones(2, np.float32), None, None, None]
    attrs = {"K": 32, "N": 2, "bits": 8, "block_size": 32, "accuracy_level": 4}
    for host in ("avx512-novnni", "avx2-vnni"):
        monkeypatch.setattr(family, "host_nbits_int8", lambda host=host: host)
        with pytest.raises(OpError, match=f"accuracy_level=4: this CPU's MLAS CompInt8 kernels "
                                          f"\\('{host}'\\) are not reproduced"):
            OPS["MatMulNBits"](*inputs, **attrs)
        got = OPS["MatMulNBits"](*inputs, **attrs, fp32_kernels="avx2")
        assert got.tolist() == [[(7 - 128) * 32.0] * 2]
    with pytest.raises(OpError, match="accuracy_level=4.*bits=8 and block_size=32, not bits=8, "
                                      "block_size=64"):
        OPS["MatMulNBits"](np.ones((1, 64), np.float32), np.zeros((2, 1, 64), np.uint8),
                           np.ones(2, np.float32), K=64, N=2, bits=8, block_size=64,
                           accuracy_level=4)
