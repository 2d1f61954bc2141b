"""ONNX Runtime's AVX-512F kernels, reproduced by ``fp32_kernels="avx512"`` on any CPU.

* ``test_avx512_golden``: every case of ``tests/data/ort_fp32/avx512/cases.json`` (the Softmax,
  LogSoftmax, Pow and depthwise/7x7 Conv cases of the AVX-512 golden set made with ONNX Runtime
  1.32 on an AMD EPYC), bit for bit, through the registered op and, for Conv, through the kernel
  with 1 and 2 ONNX Runtime threads.
* ``test_avx512_kernels_match_onnxruntime``: Hypothesis cases of the same ops. On an AVX-512 CPU
  the expected bits come from the live ONNX Runtime; elsewhere (where ONNX Runtime runs its AVX2
  kernels) from ``extra.json``/``extra.npz``, made by ``tests/data/ort_fp32/make_cases.py`` on an
  AVX-512 CPU. On an AVX-512 CPU the committed files are also checked against the live ONNX
  Runtime, so they are what the pinned version computes.
* the Numba kernels equal their NumPy twins.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.jit import USE_NUMBA
from qsim.kernels import avx512, libm
from qsim.kernels import gemm as gx
from qsim.kernels.family import host_family
from qsim.kernels.gemm import DEFAULT_THREADS
from qsim.ops import OPS
from qsim.ops.registry import internal_keywords
from tests.ops.test_exact_math import ort_run

DATA = Path(__file__).parent / "data" / "ort_fp32" / "avx512"
#: the ONNX Runtime thread count whose outputs qsim's executor follows
THREADS = min(DEFAULT_THREADS, 2)
ON_AVX512 = host_family() == "avx512"
needs_jit = pytest.mark.skipif(not USE_NUMBA, reason="compares compiled Numba kernels with their "
                               "NumPy twins; NUMBA_DISABLE_JIT=1 runs the twins only")


#: name -> (cases, arrays) files
FILES = {"cases": ("cases.json", "data.npz"), "extra": ("extra.json", "extra.npz")}


def _load(name: str) -> tuple[list[dict], dict]:
    meta = json.loads((DATA / FILES[name][0]).read_text())
    arrays = np.load(DATA / FILES[name][1])
    return meta["cases"], {k: arrays[k] for k in arrays.files}


def _inputs(arrays: dict, case: dict) -> list[np.ndarray]:
    inputs, j = [], 0
    while f"c{case['id']}_in{j}" in arrays:
        inputs.append(arrays[f"c{case['id']}_in{j}"])
        j += 1
    return inputs


def _qsim(case: dict, inputs: list[np.ndarray]) -> np.ndarray:
    """The registered op as the executor calls it, with the AVX-512 family."""
    fn = OPS[case["op"]]
    kwargs = dict(case["attrs"])
    if "fp32_kernels" in internal_keywords(fn):
        kwargs["fp32_kernels"] = "avx512"
    with np.errstate(all="ignore"):
        return np.asarray(fn(*inputs, **kwargs))


def _differ(got: np.ndarray, expected: np.ndarray) -> str:
    """'' if ``got`` has ``expected``'s dtype, shape and bits (NaN = NaN), else what differs."""
    if got.dtype != expected.dtype or got.shape != expected.shape:
        return f"{got.dtype}{got.shape} vs ORT {expected.dtype}{expected.shape}"
    g, e = got.ravel(), expected.ravel()
    unsigned = np.dtype(f"u{g.dtype.itemsize}")
    bad = np.flatnonzero(~((g.view(unsigned) == e.view(unsigned)) | (np.isnan(g) & np.isnan(e))))
    if not bad.size:
        return ""
    return (f"{bad.size} of {g.size} elements differ, first at {bad[0]}: qsim {g[bad[0]]!r} "
            f"vs ORT {e[bad[0]]!r}")


def _conv_kernel(x, w, b, attrs, threads):
    pads = attrs["pads"]
    return gx.conv(x, w, b, group=attrs["group"], strides=attrs["strides"],
                   dilations=attrs.get("dilations", [1, 1]), begins=pads[:2], ends=pads[2:],
                   threads=threads, family="avx512")


def test_avx512_golden():
    cases, arrays = _load("cases")
    wrong = []
    for case in cases:
        inputs = _inputs(arrays, case)
        what = _differ(_qsim(case, inputs), arrays[f"c{case['id']}_out_t{THREADS}"])
        if what:
            wrong.append(f"{case['op']} {case['tag']} (op, t{THREADS}): {what}")
        if case["op"] == "Conv":
            for t in (1, 2):
                got = _conv_kernel(*inputs, case["attrs"], t)
                what = _differ(got, arrays[f"c{case['id']}_out_t{t}"])
                if what:
                    wrong.append(f"Conv {case['tag']} (kernel, t{t}): {what}")
    assert len(cases) == 162
    assert not wrong, f"{len(wrong)} of {len(cases)} cases differ:\n" + "\n".join(wrong)


def test_committed_avx512_files_are_what_onnxruntime_computes_here():
    """On an AVX-512 CPU: the committed outputs equal the live ONNX Runtime's (1 and 2
    threads). Elsewhere the live ONNX Runtime runs the AVX2 kernels, so this checks instead that
    the files are self-consistent: (Log)Softmax, Pow and the depthwise Conv kernels do not
    depend on the thread count."""
    wrong = []
    for name in ("cases", "extra"):
        cases, arrays = _load(name)
        for case in cases:
            inputs = _inputs(arrays, case)
            for t in (1, 2):
                expected = arrays[f"c{case['id']}_out_t{t}"]
                if ON_AVX512:
                    live = ort_run(case["op"], [a for a in inputs], case["attrs"],
                                   opset=case["opset"], n_threads=t,
                                   initializers=tuple(case["initializers"]))
                elif case["op"] != "Conv" or case["tag"].startswith("dw"):
                    live = arrays[f"c{case['id']}_out_t{3 - t}"]    # no thread dependence
                else:
                    continue
                if _differ(live, expected):
                    wrong.append(f"{name} {case['op']} {case['tag']} t{t}")
    assert not wrong, wrong


# ------------------------------------------------------------------------------ Hypothesis

_EXTRA = _load("extra")
MASKS = np.array([-np.inf, -1e9, np.finfo(np.float32).min, np.nan, np.inf], np.float32)


@st.composite
def live_cases(draw) -> tuple[dict, list[np.ndarray], np.ndarray]:
    """A random Softmax / LogSoftmax / depthwise-multiplier-2 Conv / Pow case and the live ONNX
    Runtime's output (AVX-512 CPU only)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    op = draw(st.sampled_from(["Softmax", "LogSoftmax", "Conv", "Pow"]))
    if op in ("Softmax", "LogSoftmax"):
        rows, d = draw(st.integers(1, 4)), draw(st.integers(1, 300))
        x = (rng.standard_normal((rows, d)) * draw(st.sampled_from([0.5, 3.0, 40.0]))).astype(np.float32)
        if draw(st.booleans()):
            x[rng.random((rows, d)) < draw(st.sampled_from([0.1, 0.6, 1.0]))] = draw(st.sampled_from(list(MASKS)))
        case = dict(op=op, attrs={"axis": -1}, opset=13, initializers=[])
        inputs = [x]
    elif op == "Conv":
        c, h, w = draw(st.integers(2, 5)), draw(st.integers(1, 33)), draw(st.integers(1, 33))
        x = rng.standard_normal((draw(st.integers(1, 2)), c, h, w)).astype(np.float32)
        wt = (rng.standard_normal((2 * c, 1, 7, 7)) * 0.3).astype(np.float32)
        b = (rng.standard_normal(2 * c) * 0.1).astype(np.float32)
        case = dict(op=op, opset=17, initializers=[1, 2],
                    attrs={"group": c, "kernel_shape": [7, 7], "strides": [2, 2], "pads": [3] * 4})
        inputs = [x, wt, b]
    else:
        shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
        x = (np.abs(rng.standard_normal(shape)) * 3 + 0.05).astype(np.float32)
        yshape = draw(st.sampled_from([(), (1,), shape, shape[-1:]]))
        y = (rng.standard_normal(yshape) * 2).astype(draw(st.sampled_from([np.float32, np.float64])))
        if yshape in ((), (1,)):
            y = np.full(yshape, draw(st.sampled_from([2.0, 3.0, 0.5, 1.5, -1.0, float(y.ravel()[0])])), y.dtype)
        case = dict(op=op, attrs={}, opset=15, initializers=[])
        inputs = [x, y]
    with np.errstate(all="ignore"):
        expected = ort_run(case["op"], inputs, case["attrs"], opset=case["opset"],
                           n_threads=THREADS, initializers=tuple(case["initializers"]))
    return case, inputs, expected


@st.composite
def committed_cases(draw) -> tuple[dict, list[np.ndarray], np.ndarray]:
    """A case of extra.json with the output ONNX Runtime computed on an AVX-512 CPU."""
    cases, arrays = _EXTRA
    case = draw(st.sampled_from(cases))
    return case, _inputs(arrays, case), arrays[f"c{case['id']}_out_t{THREADS}"]


@settings(max_examples=150, deadline=None)
@given(example=live_cases() if ON_AVX512 else committed_cases())
def test_avx512_kernels_match_onnxruntime(example):
    case, inputs, expected = example
    what = _differ(_qsim(case, inputs), expected)
    assert not what, f"{case['op']} {[a.shape for a in inputs]} {case['attrs']}: {what}"


def test_every_committed_extra_case():
    """All of extra.json (the Hypothesis test above samples it on CPUs without AVX-512)."""
    cases, arrays = _EXTRA
    wrong = [f"{c['op']} {c['tag']}: {w}" for c in cases
             if (w := _differ(_qsim(c, _inputs(arrays, c)), arrays[f"c{c['id']}_out_t{THREADS}"]))]
    assert not wrong, f"{len(wrong)} of {len(cases)} differ:\n" + "\n".join(wrong)


def test_depthwise_dispatch_is_mlas():
    """The near misses of MLAS's test (group 1, pads 3,3,2,2, multiplier 3) take the sgemm path,
    so avx512 equals avx2 there, and the exact case does not (the file shows ORT differs)."""
    cases, arrays = _EXTRA
    near = [c for c in cases if c["op"] == "Conv" and not c["tag"].startswith("dw")]
    assert near
    for case in near:
        inputs = _inputs(arrays, case)
        kwargs = dict(case["attrs"])
        assert _differ(OPS["Conv"](*inputs, **kwargs, fp32_kernels="avx512"),
                       OPS["Conv"](*inputs, **kwargs, fp32_kernels="avx2")) == ""


# ------------------------------------------------------------------------------ twins

special = st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, -1e9, -3.4e38, 3.4e38, 1e-40])


@needs_jit
@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 4), d=st.integers(1, 200), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([0.5, 3.0, 60.0]), fill=special, rate=st.sampled_from([0.0, 0.2, 1.0]))
def test_avx512_softmax_numba_equals_numpy_twin(rows, d, seed, scale, fill, rate):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, d)) * scale).astype(np.float32)
    x[rng.random((rows, d)) < rate] = fill
    scratch = np.empty(32, np.float32)
    maxima = np.array([avx512._max_avx512(row, scratch) for row in x], np.float32)
    assert _differ(maxima, avx512._np_max_avx512(x)) == ""
    for log in (False, True):
        out = np.empty_like(x)
        with np.errstate(all="ignore"):
            avx512._nb_softmax_rows(x, out, log)
            assert _differ(out, avx512._np_softmax_rows(x, log)) == ""


@needs_jit
@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), c=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_avx512_depthwise_numba_equals_numpy_twin(h, w, c, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((2 * c, 1, 7, 7)).astype(np.float32)
    got = avx512.depthwise_m2_7x7s2(x, wt, use_numba=True)
    assert _differ(got, avx512.depthwise_m2_7x7s2(x, wt, use_numba=False)) == ""


@needs_jit
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_c_pow_numba_equals_ctypes_twin(seed, dtype):
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.abs(rng.standard_normal(200)) * 4, rng.standard_normal(20),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0]]).astype(dtype)
    y = np.concatenate([rng.standard_normal(220) * 3, [2.0, 0.5, -1.0, np.nan, 0.0, np.inf, 3.0]]
                       ).astype(dtype)[:x.size]
    out = np.empty_like(x)
    with np.errstate(all="ignore"):
        libm._nb_pow(x, y, out)
        assert _differ(out, libm._np_pow(x, y)) == ""
