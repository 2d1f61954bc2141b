"""Bad attributes and inputs of the neural-network ops raise OpError naming the attribute or
input, its value and what is expected (never a bare NumPy error)."""
from __future__ import annotations

import numpy as np
import pytest

from qsim.errors import OpError
from qsim.interpreter import run
from qsim.ir import Graph, Node, ValueInfo
from qsim.ops import OPS

X = np.zeros((1, 4, 6, 6), np.float32)
W = np.zeros((8, 4, 3, 3), np.float32)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
@pytest.mark.parametrize("attrs,match", [
    (dict(strides=[-1, 1]), r"strides=\[-1, 1\] must be >= 1"),
    (dict(strides=[0, 1]), r"strides=\[0, 1\] must be >= 1"),
    (dict(strides=[1, 1, 1]), r"strides=\[1, 1, 1\] has 3 value\(s\), expected 2"),
    (dict(dilations=[0, 1]), r"dilations=\[0, 1\] must be >= 1"),
    (dict(kernel_shape=[5, 5]), r"kernel_shape=\[5, 5\] does not match .* \[3, 3\]"),
    (dict(group=3), r"group=3 does not divide the 4 input channels"),
    (dict(group=0), r"group=0 must be >= 1"),
    (dict(pads=[1, 1]), r"pads=\[1, 1\] has 2 value\(s\), expected 4"),
    (dict(pads=[1, -1, 1, 1]), r"pads=\[1, -1, 1, 1\] must be >= 0"),
    (dict(auto_pad="SAME"), r"auto_pad='SAME' is not one of"),
])
def test_conv_bad_attributes(op, attrs, match):
    w = W if op == "Conv" else np.zeros((4, 2, 3, 3), np.float32)
    with pytest.raises(OpError, match=match):
        OPS[op](X, w, **attrs)


def test_conv_channel_mismatch_names_both_shapes():
    with pytest.raises(OpError, match=r"W \[8, 3, 3, 3\] has 3 channels per group, so with "
                                      r"group=1 X needs 3 channels, but X \[1, 4, 6, 6\] has 4"):
        OPS["Conv"](X, np.zeros((8, 3, 3, 3), np.float32))
    with pytest.raises(OpError, match=r"W \[5, 2, 3, 3\] has 5 input channels on axis 0, "
                                      r"expected 4"):
        OPS["ConvTranspose"](X, np.zeros((5, 2, 3, 3), np.float32))


def test_conv_group_must_divide_output_channels():
    with pytest.raises(OpError, match=r"group=2 does not divide the 5 output channels"):
        OPS["Conv"](X, np.zeros((5, 2, 3, 3), np.float32), group=2)


def test_conv_rank_bias_and_empty_output():
    with pytest.raises(OpError, match=r"W has shape \[8, 4, 3\] \(rank 3\); expected rank 4"):
        OPS["Conv"](X, np.zeros((8, 4, 3), np.float32))
    with pytest.raises(OpError, match=r"X has shape \[6, 6\]; expected rank >= 3"):
        OPS["Conv"](X[0, 0], W)
    with pytest.raises(OpError, match=r"bias B has shape \[7\]; expected \[8\]"):
        OPS["Conv"](X, W, np.zeros(7, np.float32))
    with pytest.raises(OpError, match=r"output spatial shape \[0, 0\] is empty"):
        OPS["Conv"](X, np.zeros((8, 4, 7, 7), np.float32))


def test_conv_transpose_output_padding_must_be_small():
    with pytest.raises(OpError, match=r"output_padding=\[2, 0\] must be smaller than the stride "
                                      r"or the dilation"):
        OPS["ConvTranspose"](X, np.zeros((4, 2, 3, 3), np.float32), strides=[2, 2],
                             output_padding=[2, 0])


def test_matmul_and_gemm_shape_errors():
    a, b = np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32)
    with pytest.raises(OpError, match=r"A \[2, 3\] has 3 columns, B \[4, 5\] has 4 rows"):
        OPS["MatMul"](a, b)
    with pytest.raises(OpError, match=r"batch dimensions \[2\] .* and \[3\] .* do not broadcast"):
        OPS["MatMul"](np.zeros((2, 2, 3)), np.zeros((3, 3, 4)))
    with pytest.raises(OpError, match=r"inner dimensions differ: A' \[2, 3\] .* B' \[4, 5\]"):
        OPS["Gemm"](a, b)
    with pytest.raises(OpError, match=r"C has shape \[3\], which does not broadcast to the "
                                      r"output shape \[2, 5\]"):
        OPS["Gemm"](a, np.zeros((3, 5), np.float32), np.zeros(3, np.float32))
    with pytest.raises(OpError, match=r"Gemm needs 2-D A and B"):
        OPS["Gemm"](np.zeros((1, 2, 3)), b, transA=1)
    with pytest.raises(OpError, match=r"inner dimensions differ: A \[1, 2, 3\] and B' \[4, 5\]"):
        OPS["Gemm"](np.zeros((1, 2, 3)), b)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs,match", [
    (dict(), r"kernel_shape is required"),
    (dict(kernel_shape=[3]), r"kernel_shape=\[3\] has 1 value\(s\), expected 2"),
    (dict(kernel_shape=[0, 3]), r"kernel_shape=\[0, 3\] must be >= 1"),
    (dict(kernel_shape=[3, 3], strides=[-2, 2]), r"strides=\[-2, 2\] must be >= 1"),
    (dict(kernel_shape=[3, 3], pads=[1, 1, 1]), r"pads=\[1, 1, 1\] has 3 value\(s\), expected 4"),
    (dict(kernel_shape=[9, 9]), r"output spatial shape \[0, 0\] is empty"),
    (dict(kernel_shape=[3, 3], auto_pad="same"), r"auto_pad='same' is not one of"),
])
def test_pool_bad_attributes(op, attrs, match):
    with pytest.raises(OpError, match=match):
        OPS[op](X, **attrs)


def test_max_pool_storage_order():
    with pytest.raises(OpError, match=r"storage_order=2 must be 0 .* or 1"):
        OPS["MaxPool"](X, kernel_shape=[2, 2], storage_order=2, noutputs=2)


def test_normalization_errors():
    c = np.ones(4, np.float32)
    with pytest.raises(OpError, match=r"training_mode=1 with 1 output\(s\)"):
        OPS["BatchNormalization"](X, c, c, c, c, training_mode=1)
    with pytest.raises(OpError, match=r"input input_var has shape \[3\]; expected \[4\]"):
        OPS["BatchNormalization"](X, c, c, c, np.ones(3, np.float32))
    with pytest.raises(OpError, match=r"input scale has shape \[5\]; expected \[4\]"):
        OPS["InstanceNormalization"](X, np.ones(5, np.float32), c)
    with pytest.raises(OpError, match=r"axis=4 is out of range for X of rank 4"):
        OPS["LayerNormalization"](X, c, axis=4)
    with pytest.raises(OpError, match=r"Scale has shape \[4\], which does not broadcast to the "
                                      r"normalized shape \[6\]"):
        OPS["LayerNormalization"](X, c)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_axis_out_of_range(op):
    with pytest.raises(OpError, match=r"axis=-5 is out of range for input of rank 4"):
        OPS[op](X, axis=-5)


EMPTY = np.zeros(0, np.float32)


@pytest.mark.parametrize("attrs,inputs,match", [
    (dict(mode="area"), [EMPTY, np.ones(4, np.float32)], r"mode='area' is not supported"),
    (dict(exclude_outside=1), [EMPTY, np.ones(4, np.float32)],
     r"exclude_outside=1 only applies to mode 'cubic'"),
    (dict(coordinate_transformation_mode="tf_crop_and_resize"), [EMPTY, np.ones(4, np.float32)],
     r"tf_crop_and_resize needs input roi with 8 values"),
    (dict(nearest_mode="round"), [EMPTY, np.ones(4, np.float32)], r"nearest_mode='round'"),
    (dict(antialias=1, mode="linear"), [EMPTY, np.array([1, 0.5, 1, 1], np.float32)],
     r"antialias=1 is supported for float32 2-D or NCHW inputs resized on the last two axes"),
    (dict(), [EMPTY, EMPTY], r"exactly one of the inputs 'scales' and 'sizes'"),
    (dict(), [EMPTY, np.ones(4, np.float32), np.ones(4, np.int64)], r"exactly one of"),
    (dict(), [EMPTY, np.ones(3, np.float32)], r"scales has 3 values, expected 4"),
    (dict(), [EMPTY, np.array([1, 1, -2, 2], np.float32)], r"scales=\[1.0, 1.0, -2.0, 2.0\] "
                                                           r"must be > 0"),
    (dict(axes=[2, 2]), [EMPTY, np.ones(2, np.float32)], r"axes=\[2, 2\] must be distinct"),
])
def test_resize_errors(attrs, inputs, match):
    with pytest.raises(OpError, match=match):
        OPS["Resize"](X, *inputs, **attrs)


def test_executor_adds_the_node_name():
    graph = Graph(nodes=(Node(name="stem_conv", op_type="Conv", inputs=("x", "w"),
                              outputs=("y",), attrs={"strides": (0, 1)}),),
                  inputs=(ValueInfo("x", np.dtype(np.float32), (1, 4, 6, 6)),),
                  outputs=(ValueInfo("y"),), params={"w": W})
    with pytest.raises(OpError, match=r"node 'stem_conv' \(Conv\): attribute strides=\[0, 1\] "
                                      r"must be >= 1"):
        run(graph, {"x": X})
