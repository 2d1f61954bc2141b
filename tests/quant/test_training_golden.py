"""The quantizer in training against aimet-torch 2.42's 300 golden cases (qat.md §2–§4).

Expected agreement (golden README): x̂, dx, scale, offset and both kernels bit for bit;
dθmin, dθmax within 1e-6·mag (the order of the per-channel sums is free).
"""
import json
from pathlib import Path

import numpy as np
import pytest

from qsim.quant import training as tr

DATA = Path(__file__).resolve().parents[1] / "data" / "qat"
CASES = json.loads((DATA / "cases.json").read_text())["cases"]
ARRAYS = np.load(DATA / "data.npz")


def _load(case):
    return {k: ARRAYS[f"{case['id']}_{k}"] for k in (
        "x", "g", "min", "max", "x_hat", "dx", "dmin", "dmax", "scale", "offset",
        "dmin_mag", "dmax_mag", "x_hat_frozen", "dx_frozen")}


def _bits_equal(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    # offsets may be -0.0 in the golden (qat.md §10): compare by value there
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_cases_cover_the_kinds():
    assert len(CASES) == 300
    assert {c["range_kind"] for c in CASES} >= {"calibrated", "learned", "tiny", "inverted",
                                               "equal", "pow2_ties", "eps_exact"}
    assert {c["granularity"] for c in CASES} == {"per_tensor", "per_channel"}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_golden_case(case):
    d = _load(case)
    grid = tr.Grid(case["qmin"], case["qmax"], case["symmetric"])
    enc = tr.training_encoding(d["min"], d["max"], grid)
    assert _bits_equal(enc.scale, d["scale"])
    assert np.array_equal(enc.offset, d["offset"])          # by value: golden has -0.0 sometimes
    assert _bits_equal(tr.quantize_train(d["x"], enc, grid), d["x_hat"])
    dx, dmin, dmax = tr.quantize_train_backward(d["x"], d["g"], d["min"], enc, grid)
    assert _bits_equal(dx, d["dx"])
    assert dmin.shape == d["dmin"].shape and dmax.shape == d["dmax"].shape
    assert np.all(np.abs(dmin.astype(np.float64) - d["dmin"]) <= 1e-6 * d["dmin_mag"])
    assert np.all(np.abs(dmax.astype(np.float64) - d["dmax"]) <= 1e-6 * d["dmax_mag"])
    xf, dxf = tr.quantize_frozen(d["x"], enc, grid, g=d["g"])
    assert _bits_equal(xf, d["x_hat_frozen"])
    assert _bits_equal(dxf, d["dx_frozen"])
    assert _bits_equal(tr.quantize_frozen(d["x"], enc, grid), d["x_hat_frozen"])
    assert _bits_equal(tr.quantize_frozen_backward(d["x"], d["g"], enc, grid), d["dx_frozen"])


def test_numpy_twins_give_the_same_bits():
    """The Numba kernels and their NumPy twins agree on every golden case (run both directly)."""
    for case in CASES:
        d = _load(case)
        grid = tr.Grid(case["qmin"], case["qmax"], case["symmetric"])
        enc = tr.training_encoding(d["min"], d["max"], grid)
        axis = tr.channel_axis_of(enc.scale.shape, d["x"].shape)
        x3, g3 = tr._view3(d["x"], axis), tr._view3(d["g"], axis)
        s, o = tr._flat(enc.scale), tr._flat(enc.offset)
        out = np.empty_like(x3)
        tr._nb_train_forward(x3, s, o, grid.qmin, grid.qmax, out)
        assert _bits_equal(out, tr._np_train_forward(x3, s, o, grid.qmin, grid.qmax))
        bufs = [np.empty_like(x3) for _ in range(3)]
        tr._nb_train_backward(x3, g3, s, o, grid.qmin, grid.qmax, *bufs)
        for a, b in zip(bufs, tr._np_train_backward(x3, g3, s, o, grid.qmin, grid.qmax)):
            assert _bits_equal(a, b)
        dx, gs64, go64 = np.empty_like(x3), np.zeros(s.shape), np.zeros(s.shape)
        tr._nb_train_backward_sums(x3, g3, s, o, grid.qmin, grid.qmax, dx, gs64, go64)
        ndx, ngs, ngo = tr._np_train_backward_sums(x3, g3, s, o, grid.qmin, grid.qmax)
        assert _bits_equal(dx, bufs[0]) and _bits_equal(ndx, bufs[0])
        assert np.array_equal(gs64.view(np.uint64), ngs.view(np.uint64))
        assert np.array_equal(go64.view(np.uint64), ngo.view(np.uint64))
        fo, fd = np.empty_like(x3), np.empty_like(x3)
        tr._nb_frozen(x3, g3, s, o, grid.qmin, grid.qmax, fo, fd)
        nfo, nfd = tr._np_frozen(x3, g3, s, o, grid.qmin, grid.qmax)
        assert _bits_equal(fo, nfo) and _bits_equal(fd, nfd)
        fo1, fd1 = np.empty_like(x3), np.empty_like(x3)
        tr._nb_frozen_forward(x3, s, o, grid.qmin, grid.qmax, fo1)
        tr._nb_frozen_backward(x3, g3, s, o, grid.qmin, grid.qmax, fd1)
        assert _bits_equal(fo1, nfo) and _bits_equal(fd1, nfd)


def test_bad_parameter_shape_is_a_clear_error():
    from qsim.errors import EncodingError
    with pytest.raises(EncodingError, match="per channel"):
        tr.channel_axis_of((3, 4), (3, 4))


def test_channel_split_changes_no_bit():
    """The forward and backward cut into channel ranges (run in reverse order, as threads might)
    give the unsplit results bit for bit on every per-channel golden case."""
    for case in CASES:
        if case["granularity"] != "per_channel":
            continue
        d = _load(case)
        grid = tr.Grid(case["qmin"], case["qmax"], case["symmetric"])
        enc = tr.training_encoding(d["min"], d["max"], grid)
        whole = tr.quantize_train_backward(d["x"], d["g"], d["min"], enc, grid)
        split = tr.quantize_train_backward(d["x"], d["g"], d["min"], enc, grid, parts=3,
                                           run=lambda jobs: [j() for j in reversed(jobs)])
        for a, b in zip(whole, split):
            assert _bits_equal(a, b), case["id"]
        split_fwd = tr.quantize_train(d["x"], enc, grid, parts=3,
                                      run=lambda jobs: [j() for j in reversed(jobs)])
        assert _bits_equal(split_fwd, d["x_hat"]), case["id"]
