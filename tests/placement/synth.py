"""Tiny ONNX graphs built with onnx.helper, and configs derived from the golden ones."""
from __future__ import annotations

import copy
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qsim.onnx_io import load_onnx
from tests.placement.golden_util import GOLDEN

DEFAULT = json.loads((GOLDEN / "cnn-seed0" / "configs" / "default_config.json").read_text())
PER_CHANNEL = json.loads((GOLDEN / "cnn-seed0" / "configs" / "default_config_per_channel.json").read_text())
HTP_V75 = json.loads((GOLDEN / "models" / "misc_s32_htp_v75_tf_w8a16" / "config.json").read_text())


def config(base: dict, **changes) -> dict:
    """A deep copy of ``base`` with ``changes`` set in its ``defaults`` section,
    e.g. ``config(HTP_V75, hw_version="V68")``."""
    out = copy.deepcopy(base)
    out["defaults"].update(changes)
    return out


def graph(nodes, inputs, outputs, inits=None, *, opset=17):
    """Load a graph from ``nodes`` (helper.make_node), ``inputs``/``outputs`` as
    {name: shape} (float32) and ``inits`` {name: ndarray}."""
    g = helper.make_graph(
        nodes, "synthetic",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        initializer=[numpy_helper.from_array(np.asarray(v), n) for n, v in (inits or {}).items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return load_onnx(model, check=False)


def node(op, inputs, outputs, name=None, **attrs):
    return helper.make_node(op, inputs, outputs, name=name or outputs[0].replace("_out", ""), **attrs)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
