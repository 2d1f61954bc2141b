"""Op tables of aimet-onnx 2.42's quantizer placement (placement.md §1-§4), as plain data.

Every set here is quoted from placement.md; nothing is computed.
"""
from __future__ import annotations

#: §1.2 — op type → {input index: parameter kind}. Nothing else is a parameter.
PARAM_SLOTS: dict[str, dict[int, str]] = {
    "Conv": {1: "weight", 2: "bias"},
    "ConvTranspose": {1: "weight", 2: "bias"},
    "Gemm": {1: "weight", 2: "bias"},
    "LayerNormalization": {1: "weight", 2: "bias"},
    "InstanceNormalization": {1: "weight", 2: "bias"},
    "GroupNormalization": {1: "weight", 2: "bias"},
    "BatchNormalization": {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"},
    "RMSNormalization": {1: "weight"},
    "MatMul": {1: "weight"},
    "RNN": {1: "weight", 2: "weight_r", 3: "bias"},
    "LSTM": {1: "weight", 2: "weight_r", 3: "bias"},
    "GRU": {1: "weight", 2: "weight_r", 3: "bias"},
}

#: §1.3 — producers whose outputs get no quantizer object at all.
NO_QUANTIZER_PRODUCERS = frozenset({
    "Flatten", "Gather", "Reshape", "Shape", "Unsqueeze", "Squeeze", "Split", "Compress",
    "Tile", "Transpose", "Identity"})

#: §1.3 — element types that get an activation quantizer (NumPy dtype names).
FLOAT_DTYPES = frozenset({"float32", "float16", "bfloat16"})

#: §3 — ops whose output lies on the grid of their input 0 (used by effective quantizers, ties
#: and stage D's implicit ``is_output_quantized: False``).
GRID_PRESERVING = frozenset({
    "Col2Im", "Compress", "DepthToSpace", "Dropout", "Expand", "Flatten", "Gather",
    "GatherElements", "GatherND", "Identity", "MaxPool", "MaxRoiPool", "NonZero", "Pad",
    "ReduceMax", "ReduceMin", "Reshape", "Slice", "SpaceToDepth", "Split", "SplitToSequence",
    "Squeeze", "Tile", "TopK", "Transpose", "Unsqueeze"})

#: §3 — ops whose inputs are tied backward to their output quantizer.
BACKWARD_TIE_OPS = frozenset({"Concat", "Scatter", "ScatterElements", "ScatterND"})

#: §3 — ops whose output is tied forward to the effective quantizer of input 0.
FORWARD_TIE_OPS = frozenset({"AveragePool", "Relu", "Resize", "Upsample"})

#: §2.J / §5.2 — ops whose input 1 is a weight (dynamic if it is not a parameter).
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

#: §2.K — normalisation ops and their exception rule family.
NORM_LN_BN = frozenset({"LayerNormalization", "BatchNormalization"})
NORM_FOLLOW_OUTPUT = frozenset({"GroupNormalization", "InstanceNormalization", "RMSNormalization"})

#: §2.K — hardware versions with 8-bit-only norm params and dynamic MatMul weights.
OLD_HTP = frozenset({"V66", "V68", "V69"})

#: §1.1 — the fused node's domain prefix (AIMET's name for it).
FUSED_DOMAIN = "aimet.supergroup"
