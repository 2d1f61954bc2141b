"""Shared fixtures of the quantization tests.

Tests marked ``slow`` run the pure-Python kernels for too long when ``NUMBA_DISABLE_JIT=1``;
only then are they skipped (the NumPy twins, used in that mode, are still fully tested).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "tensors"
JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if not JIT_DISABLED:
        return
    skip = pytest.mark.skip(reason="slow with NUMBA_DISABLE_JIT=1 (pure-Python kernels)")
    for item in items:
        if "slow" in item.keywords and Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(skip)


def load_cases() -> list[dict]:
    """The AIMET golden tensor cases (aimet-onnx 2.42), see tests/data/tensors."""
    return json.loads((DATA / "cases.json").read_text())


@pytest.fixture(scope="session")
def tensor_data():
    with np.load(DATA / "data.npz") as npz:
        return {k: npz[k] for k in npz.files}
