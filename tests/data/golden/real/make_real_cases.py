"""Make the real-architecture AIMET 2.42 golden cases in this folder (not run by the tests).

Run with the AIMET oracle's interpreter (shared tools: aimet-oracle/install.sh), from the
repository root::

    ~/.cache/aimet-oracle/venv/bin/python tests/data/golden/real/make_real_cases.py [CASE ...]

Each torchvision architecture gets random weights (seeded; batch-norm statistics and affine
parameters are randomised too, so that the folding the exporter does is not an identity), is
exported to ONNX (opset 17, TorchScript exporter, eval mode: batch norms folded into the
convolutions, batch dimension dynamic, 32x32 inputs, 10 classes), and AIMET's ONNX front end is
driven exactly as for the published golden cases (shared golden/aimet-onnx-2.42/README.md):

* ``QuantizationSimModel(model, quant_scheme=..., param_type=..., activation_type=...,
  config_file=<explicit path>)`` with the configuration files qsim ships in ``qsim/configs/``
  (``per_tensor.json`` = AIMET's default_config.json, named ``default`` in case names as in the
  published corpus; ``default.json`` = AIMET's per-channel config, named ``per_channel``;
  ``htp_v75.json``);
* percentile cases call ``setPercentileValue(99.9)`` on every quantizer, weights included;
* ``sim.compute_encodings(list of calibration batch dicts, in order)``;
* ``sim.session.run(None, eval dict)`` in one call for the simulated outputs;
* ``sim.export(dir, prefix, export_model=False, encoding_version=v)`` for 1.0.0, 0.6.1, 2.0.0;
* then every quantizer AIMET created is dumped (after the 2.0.0 export, which turns the int32
  biases' quantizers to 32 bits) to ``aimet_quantizers.json``.

The FP32 outputs are ONNX Runtime's, with graph optimizations off. Every ``model.onnx`` of one
architecture is the same file: it is stored once, in ``_models/``, and the case folders link to
it (a relative symlink), which keeps the corpus small.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
CONFIGS = ROOT / "qsim" / "configs"
#: case-name config -> (qsim's built-in file, where AIMET 2.42 ships the same file)
CONFIG_FILES = {
    "default": ("per_tensor.json", "aimet_onnx/common/quantsim_config/default_config.json"),
    "per_channel": ("default.json",
                    "aimet_onnx/common/quantsim_config/default_config_per_channel.json"),
    "htp_v75": ("htp_v75.json", "aimet_onnx/common/quantsim_config/htp_quantsim_config_v75.json"),
}
#: configs qsim does not ship: aimet-onnx 2.42's own files, copied from its install
AIMET_ONLY_CONFIGS = {
    "htp_v66": "aimet_onnx/common/quantsim_config/htp_quantsim_config_v66.json",
    "htp_v69": "aimet_onnx/common/quantsim_config/htp_quantsim_config_v69.json",
    "htp_v73_pcl": "aimet_onnx/common/quantsim_config/htp_quantsim_config_v73_per_channel_linear.json",
    "htp_v81": "aimet_onnx/common/quantsim_config/htp_quantsim_config_v81.json",
    "enpu_v7": "aimet_onnx/common/quantsim_config/enpu_quantsim_config_v7.json",
    "dsp": "aimet_onnx/common/quantsim_config/dsp_quantsim_config.json",
}
#: configs made from a shipped one: name -> (base config name, passes appended to its
#: supergroup_pass_list)
DERIVED_CONFIGS = {"htp_v75_msm": ("htp_v75", ["MaskedSoftmax"])}
SCHEMES = {"tf": ("tf", None), "tfe": ("tf_enhanced", None), "pct": ("percentile", 99.9)}
#: the float32 kernel family ONNX Runtime's MLAS picks on the machine that made the cases
FP32_KERNELS = "avx512"
IMAGE = 32
BATCH = 4
N_CALIB_BATCHES = 3


def _vit(num_classes: int) -> torch.nn.Module:
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                                num_heads=2, hidden_dim=64, mlp_dim=128,
                                                num_classes=num_classes)


def _efficientnet_tiny(num_classes: int) -> torch.nn.Module:
    """EfficientNet-B0's block structure (MBConv, SiLU, squeeze-excitation) at a quarter width and
    depth, to keep the weights small."""
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return EfficientNet(setting, dropout=0.2, num_classes=num_classes, last_channel=last)


def _regnet_tiny(num_classes: int) -> torch.nn.Module:
    """RegNetY's design space (grouped 3x3 convs of group width 8, squeeze-excitation 0.25) at
    four blocks and small widths."""
    from torchvision.models.regnet import BlockParams, RegNet
    params = BlockParams.from_init_params(depth=4, w_0=16, w_a=8.0, w_m=2.0, group_width=8,
                                          se_ratio=0.25)
    return RegNet(params, num_classes=num_classes)


class _UNetTiny(torch.nn.Module):
    """A two-level U-Net: conv-BN-ReLU pairs, MaxPool down, ConvTranspose and nearest Upsample
    (Resize) up, skip Concats, a 1x1 head with two classes per pixel."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn

        def pair(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1),
                                 nn.BatchNorm2d(cout), nn.ReLU())
        self.enc1, self.enc2, self.mid = pair(3, 8), pair(8, 16), pair(16, 32)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = pair(32, 16)
        self.up1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec1 = pair(16 + 8, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


class _BertEncoderTiny(torch.nn.Module):
    """transformers' BertModel (2 layers, hidden 64, 2 heads, intermediate 128, GELU) fed with
    embeddings (float input (b, 16, 64)): LayerNorm, attention with Softmax rows of 16, Erf GELU,
    the pooler's Tanh; outputs the last hidden state and the pooled vector."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel
        cfg = BertConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=128, max_position_embeddings=32,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                         attn_implementation="eager")
        self.bert = BertModel(cfg)

    def forward(self, x):
        out = self.bert(inputs_embeds=x, return_dict=True)
        return out.last_hidden_state, out.pooler_output


class _MaskedAttentionTiny(torch.nn.Module):
    """Causal self-attention as HTP-targeting code writes it, the masked positions set to the
    row minimum minus 1e4: ``softmax(where(mask, s, min(s) - 1e4))`` (aimet's MaskedSoftmax
    pattern); input (b, 16, 32), 2 heads."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.qkv, self.out = nn.Linear(32, 96), nn.Linear(32, 32)
        self.register_buffer("mask", torch.tril(torch.ones(16, 16, dtype=torch.bool)))

    def forward(self, x):
        b = x.shape[0]
        q, k, v = self.qkv(x).reshape(b, 16, 3, 2, 16).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) * 0.25
        s = torch.where(self.mask, s, s.amin(-1, keepdim=True) + (-1e4))
        y = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(b, 16, 32)
        return self.out(y)


class _NormsTiny(torch.nn.Module):
    """Hand-written (decomposed) normalizations as transformer code writes them, between Linear
    layers: a LayerNorm ``(x - mean) / sqrt(var + eps) * w + b``, a Llama RMSNorm
    ``x * rsqrt(mean(x^2) + eps) * w``, a T5 RMSNorm ``x / sqrt(mean(x*x) + eps) * w`` and one
    without weight. Input (b, 16, 32). What aimet-onnx's LayerNormalization/RMSNormalization
    fusions and graph passes (supergroup_pass_list) do with them depends on the opset."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.fc1, self.fc2, self.fc3, self.fc4 = (nn.Linear(32, 32) for _ in range(4))
        self.ln_w, self.ln_b = nn.Parameter(torch.ones(32)), nn.Parameter(torch.zeros(32))
        self.rms1_w, self.rms2_w = nn.Parameter(torch.ones(32)), nn.Parameter(torch.ones(32))

    def forward(self, x):
        h = self.fc1(x)
        mean = h.mean(-1, keepdim=True)
        c = h - mean
        h = c / torch.sqrt(c.pow(2).mean(-1, keepdim=True) + 1e-5) * self.ln_w + self.ln_b
        h = torch.relu(self.fc2(h))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.rms1_w
        h = self.fc3(h)
        h = h / torch.sqrt((h * h).mean(-1, keepdim=True) + 1e-6) * self.rms2_w
        h = torch.tanh(self.fc4(h))
        return h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)


#: model name -> (constructor, description)
ARCHS = {
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(weights=None,
                                                                         num_classes=10),
                           "torchvision shufflenet_v2_x0_5"),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(weights=None,
                                                                         num_classes=10),
                           "torchvision mobilenet_v3_small"),
    "squeezenet1_1": (lambda: torchvision.models.squeezenet1_1(weights=None, num_classes=10),
                      "torchvision squeezenet1_1"),
    "mnasnet0_5": (lambda: torchvision.models.mnasnet0_5(weights=None, num_classes=10),
                   "torchvision mnasnet0_5"),
    "vit_tiny": (lambda: _vit(10),
                 "torchvision VisionTransformer(image_size=32, patch_size=8, num_layers=2, "
                 "num_heads=2, hidden_dim=64, mlp_dim=128): 16 patches + class token = "
                 "Softmax rows of 17"),
    "efficientnet_tiny": (lambda: _efficientnet_tiny(10),
                          "torchvision EfficientNet-B0 configuration at width_mult=0.25, "
                          "depth_mult=0.25 (MBConv, SiLU as Sigmoid*Mul, squeeze-excitation)"),
    "regnet_tiny": (lambda: _regnet_tiny(10),
                    "torchvision RegNet, BlockParams(depth=4, w_0=16, w_a=8, w_m=2, "
                    "group_width=8, se_ratio=0.25): RegNetY blocks (grouped convs, SE)"),
    "unet_tiny": (_UNetTiny, "two-level U-Net (MaxPool, ConvTranspose, nearest Upsample, skip "
                             "Concats), 2 classes per pixel"),
    "norms_tiny": (_NormsTiny, "Linear layers with hand-written LayerNorm and RMSNorm variants "
                               "(decomposed; input (b, 16, 32))"),
    "attn_masked_tiny": (_MaskedAttentionTiny, "causal 2-head self-attention with the "
                         "where(mask, s, min(s) - 1e4) masking (input (b, 16, 32))"),
    "bert_tiny": (_BertEncoderTiny, "transformers BertModel(hidden 64, 2 layers, 2 heads, "
                                    "intermediate 128, eager attention) on input embeddings "
                                    "(b, 16, 64)"),
}
SEEDS = {"shufflenet_v2_x0_5": 40, "mobilenet_v3_small": 41, "squeezenet1_1": 42,
         "mnasnet0_5": 43, "vit_tiny": 44, "efficientnet_tiny": 45, "regnet_tiny": 46,
         "unet_tiny": 47, "bert_tiny": 48, "norms_tiny": 54,
         "attn_masked_tiny": 56}
#: variants exported at another opset than 17: name -> (architecture, opset). At opset < 17 the
#: exporter decomposes LayerNorm, at 11 Resize takes roi and scales inputs, at < 13 Softmax
#: has the flattening semantics, at 20 Gelu... each variant has its own seed (other weights).
OPSET_VARIANTS = {"bert_tiny_op14": ("bert_tiny", 14), "vit_tiny_op14": ("vit_tiny", 14),
                  "efficientnet_tiny_op11": ("efficientnet_tiny", 11),
                  "regnet_tiny_op20": ("regnet_tiny", 20), "norms_tiny_op18": ("norms_tiny", 18),
                  "unet_tiny_op11": ("unet_tiny", 11)}
for _variant, (_arch, _opset) in OPSET_VARIANTS.items():
    ARCHS[_variant] = (ARCHS[_arch][0], f"{ARCHS[_arch][1]}; exported at opset {_opset}")
SEEDS.update({"bert_tiny_op14": 49, "vit_tiny_op14": 50, "efficientnet_tiny_op11": 51,
              "regnet_tiny_op20": 52, "unet_tiny_op11": 53, "norms_tiny_op18": 55})

#: models saved with ONNX shape inference's value_info (what aimet's MaskedSoftmax fusion needs:
#: it reads only the shapes a file states)
SHAPES_STORED = {"attn_masked_tiny_si"}
ARCHS["attn_masked_tiny_si"] = (ARCHS["attn_masked_tiny"][0],
                                ARCHS["attn_masked_tiny"][1] + "; saved with inferred value_info")
SEEDS["attn_masked_tiny_si"] = 57

#: per-sample input shape (default: an image (3, IMAGE, IMAGE)) and output names
INPUT_SHAPES = {"bert_tiny": (16, 64), "bert_tiny_op14": (16, 64), "norms_tiny": (16, 32),
                "norms_tiny_op18": (16, 32), "attn_masked_tiny": (16, 32),
                "attn_masked_tiny_si": (16, 32)}
OUTPUT_NAMES = {"bert_tiny": ["last_hidden_state", "pooled"],
                "bert_tiny_op14": ["last_hidden_state", "pooled"]}

#: (model, config, scheme, param bits, activation bits): every config, scheme and width is on
#: several models, every model has a per-tensor and a per-channel (per_channel or htp_v75) case,
#: and ShuffleNetV2 has htp_v75 (the Concat tie rule of placement.md §3). Per-channel cases of
#: the two largest models are few: their encodings files are what makes the corpus big.
CASES = [
    ("shufflenet_v2_x0_5", "default", "tf", 8, 8),
    ("shufflenet_v2_x0_5", "per_channel", "tfe", 8, 8),
    ("shufflenet_v2_x0_5", "htp_v75", "tf", 8, 16),
    ("mobilenet_v3_small", "default", "tfe", 8, 8),
    ("mobilenet_v3_small", "default", "tf", 8, 16),
    ("mobilenet_v3_small", "htp_v75", "pct", 8, 8),
    ("squeezenet1_1", "default", "pct", 8, 8),
    ("squeezenet1_1", "per_channel", "tf", 8, 16),
    ("squeezenet1_1", "htp_v75", "tfe", 8, 8),
    ("mnasnet0_5", "default", "tf", 8, 16),
    ("mnasnet0_5", "per_channel", "pct", 8, 8),
    ("vit_tiny", "default", "tf", 8, 8),
    ("vit_tiny", "per_channel", "tfe", 8, 16),
    ("vit_tiny", "htp_v75", "pct", 8, 8),
    ("efficientnet_tiny", "default", "tf", 8, 8),
    ("efficientnet_tiny", "per_channel", "tfe", 8, 16),
    ("efficientnet_tiny", "htp_v75", "pct", 8, 8),
    ("regnet_tiny", "default", "tfe", 8, 8),
    ("regnet_tiny", "per_channel", "tf", 8, 8),
    ("regnet_tiny", "htp_v75", "tf", 8, 16),
    ("unet_tiny", "default", "pct", 8, 8),
    ("unet_tiny", "per_channel", "tf", 8, 16),
    ("unet_tiny", "htp_v75", "tfe", 8, 8),
    ("bert_tiny", "default", "tf", 8, 8),
    ("bert_tiny", "per_channel", "pct", 8, 16),
    ("bert_tiny", "htp_v75", "tfe", 8, 16),
    ("bert_tiny_op14", "default", "tf", 8, 8),
    ("bert_tiny_op14", "htp_v75", "tf", 8, 16),
    ("vit_tiny_op14", "default", "tfe", 8, 8),
    ("vit_tiny_op14", "per_channel", "tf", 8, 16),
    ("efficientnet_tiny_op11", "per_channel", "tf", 8, 8),
    ("efficientnet_tiny_op11", "htp_v75", "tfe", 8, 16),
    ("regnet_tiny_op20", "default", "pct", 8, 8),
    ("regnet_tiny_op20", "per_channel", "tfe", 8, 16),
    ("unet_tiny_op11", "default", "tf", 8, 8),
    ("unet_tiny_op11", "htp_v75", "pct", 8, 16),
    ("norms_tiny", "default", "tf", 8, 8),
    ("norms_tiny", "htp_v75", "tf", 8, 8),
    ("norms_tiny", "htp_v75", "tfe", 8, 16),
    ("norms_tiny_op18", "htp_v75", "tf", 8, 8),
    ("norms_tiny_op18", "htp_v75", "pct", 8, 16),
    ("attn_masked_tiny", "htp_v75_msm", "tf", 8, 8),
    ("attn_masked_tiny", "htp_v75_msm", "tfe", 8, 16),
    ("attn_masked_tiny", "htp_v75", "tf", 8, 8),
    ("attn_masked_tiny_si", "htp_v75_msm", "tf", 8, 8),
    ("attn_masked_tiny_si", "htp_v75_msm", "tfe", 8, 16),
    ("bert_tiny_op14", "htp_v66", "tf", 8, 8),
    ("bert_tiny_op14", "htp_v69", "tfe", 8, 16),
    ("bert_tiny_op14", "htp_v73_pcl", "tf", 8, 16),
    ("bert_tiny_op14", "enpu_v7", "tf", 8, 8),
    ("norms_tiny", "htp_v69", "tf", 8, 16),
    ("norms_tiny", "htp_v81", "tfe", 8, 8),
    ("norms_tiny_op18", "enpu_v7", "tf", 8, 16),
    ("efficientnet_tiny", "htp_v66", "tf", 8, 8),
    ("efficientnet_tiny", "htp_v73_pcl", "tfe", 8, 8),
    ("efficientnet_tiny", "dsp", "tf", 8, 8),
    ("regnet_tiny", "htp_v69", "tf", 8, 8),
    ("regnet_tiny", "enpu_v7", "pct", 8, 8),
    ("unet_tiny", "htp_v81", "tf", 8, 16),
    ("unet_tiny", "dsp", "tfe", 8, 8),
    ("vit_tiny", "htp_v69", "tf", 8, 8),
    ("vit_tiny", "htp_v81", "tf", 8, 16),
    ("vit_tiny", "enpu_v7", "tfe", 8, 8),
    ("vit_tiny", "dsp", "tf", 8, 8),
    ("bert_tiny", "htp_v73_pcl", "tf", 4, 8),
    ("regnet_tiny", "htp_v81", "tf", 4, 16),
]


def input_shape(model: str) -> tuple[int, ...]:
    """Per-sample input shape of ``model``."""
    return INPUT_SHAPES.get(model, (3, IMAGE, IMAGE))


def case_id(model: str, config: str, scheme: str, pbw: int, abw: int) -> str:
    return f"{model}_s{SEEDS[model]}_{config}_{scheme}_w{pbw}a{abw}"


def _randomise_constants(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Batch-norm statistics and affine parameters away from (0, 1, 1, 0), and every other
    parameter that initialises to one repeated value (zero biases, LayerNorm's ones) perturbed,
    seeded: the exporter would otherwise merge equal initialisers into one tensor read by several
    ops (AIMET refuses to export a bias shared that way)."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
    with torch.no_grad():
        for p in net.parameters():
            if p.numel() > 1 and bool(torch.all(p == p.flatten()[0])):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def opset_of(model: str) -> int:
    """The opset ``model`` is exported at (17 unless it is an opset variant; 18 for the masked
    attention, whose ReduceMin must take its axes as an input)."""
    return OPSET_VARIANTS.get(model, (model, 18 if model.startswith("attn_masked_tiny") else 17))[1]


def export_model(model: str, path: Path) -> None:
    """Random weights (seed ``SEEDS[model]``) -> ONNX at ``opset_of(model)`` with a dynamic batch
    axis."""
    torch.manual_seed(SEEDS[model])
    net = ARCHS[model][0]()
    _randomise_constants(net, torch.Generator().manual_seed(SEEDS[model] + 1000))
    net.eval()
    x = torch.randn(1, *input_shape(model))
    outputs = OUTPUT_NAMES.get(model, ["output"])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        torch.onnx.export(net, (x,), str(out), opset_version=opset_of(model), input_names=["input"],
                          output_names=outputs, do_constant_folding=True, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}})
        proto = onnx.load(str(out))
    proto.producer_name = "qsim-real-corpus"
    if model in SHAPES_STORED:
        proto = onnx.shape_inference.infer_shapes(proto)
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))


def _data(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Calibration then eval inputs, standard normal, from one generator."""
    rng = np.random.default_rng(seed)
    calib = rng.standard_normal((N_CALIB_BATCHES * BATCH, *shape)).astype(np.float32)
    evals = rng.standard_normal((BATCH, *shape)).astype(np.float32)
    return calib, evals


def _fp32_outputs(model_path: Path, feeds: dict) -> dict:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def _dump_quantizers(sim) -> dict:
    """Every quantizer AIMET created: flags and per-channel encodings (published layout)."""
    out = {}
    for name, q in sim.qc_quantize_op_dict.items():
        encs = q.get_encodings()
        out[name] = {
            "enabled": bool(q.enabled), "is_param": name in sim.param_names,
            "bitwidth": int(q.bitwidth), "data_type": str(q.data_type),
            "quant_scheme": str(q.quant_scheme),
            "use_symmetric_encodings": bool(q.use_symmetric_encodings),
            "use_strict_symmetric": bool(q.use_strict_symmetric),
            "use_unsigned_symmetric": bool(q.use_unsigned_symmetric),
            "per_channel": bool(q.quant_info.usePerChannelMode),
            "channel_axis": int(q.quant_info.channelAxis),
            "encodings": None if not encs else [
                {"min": float(e.min), "max": float(e.max), "delta": float(e.delta),
                 "offset": float(e.offset), "bw": int(e.bw)} for e in encs]}
    return out


def _compact(doc) -> str:
    """JSON without indentation: the same keys in the same order and the same numbers as the
    file AIMET wrote (Python's float repr round-trips), at about half the size."""
    return json.dumps(doc, separators=(",", ":")) + "\n"


def _without_param_encodings(quantizers: dict, legacy: dict) -> dict:
    """The dump with each parameter quantizer's encodings replaced by a pointer to
    ``aimet_v0.6.1.encodings``, after checking that file holds the same numbers per channel:
    min, delta (the file's scale), offset and bitwidth exactly, max to float32 (the dump reads
    libpymo's float32 max, the file a float64 one). Activation encodings are kept."""
    out = {}
    for name, q in quantizers.items():
        if q["is_param"] and q["encodings"] is not None:
            if not q["enabled"]:
                raise RuntimeError(f"disabled parameter quantizer {name} has encodings")
            written = legacy["param_encodings"][name]
            same = [(e["min"], np.float32(e["max"]), e["delta"], e["offset"], e["bw"])
                    for e in q["encodings"]] == [
                        (w["min"], np.float32(w["max"]), w["scale"], w["offset"], w["bitwidth"])
                        for w in written]
            if same:   # else (asymmetric weights: the file's min is rounded otherwise) kept
                q = dict(q, encodings="aimet_v0.6.1.encodings")
        out[name] = q
    return out


def _versions() -> dict:
    import aimet_onnx  # noqa: F401
    from importlib.metadata import version
    return {"python": platform.python_version(), "platform": platform.machine(),
            "aimet-onnx": version("aimet-onnx"), "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "numpy": np.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "transformers": _transformers_version()}


def _transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


def make_case(model: str, config: str, scheme: str, pbw: int, abw: int) -> Path:
    from aimet_onnx.quantsim import QuantizationSimModel

    cid = case_id(model, config, scheme, pbw, abw)
    shared_model = HERE / "_models" / f"{model}_s{SEEDS[model]}.onnx"
    if not shared_model.exists():
        export_model(model, shared_model)
    final = HERE / cid
    folder = HERE / f".{cid}.partial"          # a sibling, so that the relative link resolves
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    try:
        (folder / "model.onnx").symlink_to(Path("..") / "_models" / shared_model.name)
        base, extra = DERIVED_CONFIGS.get(config, (config, []))
        if base in AIMET_ONLY_CONFIGS:
            import aimet_onnx
            cfg_source = AIMET_ONLY_CONFIGS[base]
            cfg_path = Path(aimet_onnx.__file__).parent.parent / cfg_source
            cfg_file = None
        else:
            cfg_file, cfg_source = CONFIG_FILES[base]
            cfg_path = CONFIGS / cfg_file
        cfg_doc = json.loads(cfg_path.read_text())
        if extra:
            cfg_doc["supergroup_pass_list"] = cfg_doc["supergroup_pass_list"] + extra
            cfg_source = f"{cfg_source} with {extra} appended to supergroup_pass_list"
            (folder / "config.json").write_text(json.dumps(cfg_doc, indent=2) + "\n")
        else:
            shutil.copyfile(cfg_path, folder / "config.json")
        data_seed = SEEDS[model] * 100 + len(cid) + sum(map(ord, cid)) % 97
        calib, evals = _data(data_seed, input_shape(model))
        np.savez_compressed(folder / "calib.npz", input=calib)
        np.savez_compressed(folder / "eval.npz", input=evals)
        fp32 = _fp32_outputs(folder / "model.onnx", {"input": evals})
        np.savez_compressed(folder / "fp32_outputs.npz", **fp32)

        quant_scheme, percentile = SCHEMES[scheme]
        param_type, activation_type = f"int{pbw}", f"int{abw}"
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sim = QuantizationSimModel(onnx.load(str(folder / "model.onnx")),
                                       quant_scheme=quant_scheme, param_type=param_type,
                                       activation_type=activation_type,
                                       config_file=str(folder / "config.json"))
            if percentile is not None:
                for q in sim.qc_quantize_op_dict.values():
                    q._tensor_quantizer.setPercentileValue(percentile)
            batches = [{"input": calib[i:i + BATCH]} for i in range(0, len(calib), BATCH)]
            sim.compute_encodings(batches)
            elapsed = time.perf_counter() - t0
            session_names = [o.name for o in sim.session.get_outputs()]
            sim_out = sim.session.run(None, {"input": evals})
            graph_outputs = list(fp32)
            np.savez_compressed(folder / "aimet_sim_outputs.npz",
                                **dict(zip(graph_outputs, sim_out)))
            for version, name in (("1.0.0", "aimet.encodings"),
                                  ("0.6.1", "aimet_v0.6.1.encodings"),
                                  ("2.0.0", "aimet_v2.0.0.encodings")):
                with tempfile.TemporaryDirectory() as exp:
                    sim.export(exp, "model", export_model=False, encoding_version=version)
                    doc = json.loads((Path(exp) / "model.encodings").read_text())
                (folder / name).write_text(_compact(doc))
        quantizers = _dump_quantizers(sim)
        legacy = json.loads((folder / "aimet_v0.6.1.encodings").read_text())
        (folder / "aimet_quantizers.json").write_text(
            _compact(_without_param_encodings(quantizers, legacy)))
        enc = json.loads((folder / "aimet.encodings").read_text())
        case = {
            "case_id": cid,
            "description": f"{ARCHS[model][1]}, random weights (torch seed {SEEDS[model]}), "
                           f"batch norms folded by the exporter; input (b,"
                           f"{','.join(map(str, input_shape(model)))}); "
                           f"config {config}; scheme {quant_scheme}"
                           + (f" ({percentile})" if percentile is not None else "")
                           + f"; w{pbw}a{abw}; inputs standard normal N(0,1); calib "
                           f"{len(calib)} samples in batches of {BATCH}; eval {len(evals)} samples",
            "model": model, "scheme": quant_scheme, "percentile": percentile,
            "param_bitwidth": pbw, "activation_bitwidth": abw,
            "param_type": param_type, "activation_type": activation_type,
            "batch_size": BATCH, "num_calib_samples": len(calib),
            "num_calib_batches": len(batches), "calib_batch_sizes": [BATCH] * len(batches),
            "num_eval_samples": len(evals), "eval_batches": 1,
            "input_distribution": "normal", "input_distribution_desc": "standard normal N(0,1)",
            "seeds": {"model_weights": SEEDS[model], "batch_norm_stats": SEEDS[model] + 1000,
                      "data": data_seed},
            "data_generation": "numpy default_rng(data) -> calib array then eval array",
            "onnx_export": f"torch.onnx.export(eval mode, opset_version={opset_of(model)}, dynamo=False, "
                           "do_constant_folding=True, dynamic_axes batch)",
            "config_name": config, "config_source": cfg_source,
            "qsim_config_file": f"qsim/configs/{cfg_file}" if cfg_file else None,
            "fp32_kernels": FP32_KERNELS,
            "fp32_kernels_desc": "ONNX Runtime's MLAS ran its AVX-512F kernels on the machine "
                                 "that made this case",
            "sim_session_output_names": session_names,
            "export_2.0.0": "ok",
            "files": "AIMET's encodings files re-serialised without indentation (same keys, "
                     "order and numbers); in aimet_quantizers.json a parameter quantizer's "
                     "encodings are the string 'aimet_v0.6.1.encodings': that file has the same "
                     "per-channel min, scale (=delta), offset and bitwidth, and max to float32 "
                     "(checked when made)",
            "graph_inputs": {"input": {"shape_per_sample": list(input_shape(model)),
                                       "dtype": "float32"}},
            "graph_outputs": graph_outputs,
            "aimet_api": {
                "QuantizationSimModel": {"quant_scheme": quant_scheme, "param_type": param_type,
                                         "activation_type": activation_type,
                                         "config_file": "config.json"},
                "percentile": None if percentile is None else
                "q._tensor_quantizer.setPercentileValue(p) on every quantizer before "
                "compute_encodings",
                "compute_encodings": "sim.compute_encodings(list of calib batch dicts, in order)",
                "outputs": "sim.session.run(None, eval dict) in one call",
                "export": "sim.export(dir, prefix, export_model=False, encoding_version=...)"},
            "stats": {
                "n_quantizers": len(quantizers),
                "n_enabled_quantizers": sum(q["enabled"] for q in quantizers.values()),
                "n_param_encodings": len(enc["param_encodings"]),
                "n_activation_encodings": len(enc["activation_encodings"]),
                "max_abs_sim_minus_fp32": {k: float(np.max(np.abs(v - fp32[k])))
                                           for k, v in zip(graph_outputs, sim_out)},
                "t_sim_and_calibration_s": round(elapsed, 3)},
            "aimet_warnings": sorted({str(w.message)[:300] for w in caught}),
            "versions": _versions(), "aimet_version": _versions()["aimet-onnx"],
        }
        (folder / "case.json").write_text(json.dumps(case, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        folder.rename(final)
    finally:
        if folder.exists():
            shutil.rmtree(folder)
    return final


def write_index() -> None:
    cases = []
    for m, c, s, p, a in CASES:
        cid = case_id(m, c, s, p, a)
        if (HERE / cid / "case.json").exists():
            info = json.loads((HERE / cid / "case.json").read_text())
            cases.append({k: info[k] for k in (
                "case_id", "model", "config_name", "scheme", "percentile", "param_bitwidth",
                "activation_bitwidth", "batch_size", "input_distribution", "fp32_kernels")})
    (HERE / "INDEX.json").write_text(json.dumps({"aimet_version": "2.42.0",
                                                 "versions": _versions(), "cases": cases},
                                                indent=2) + "\n")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help="case ids (default: all)")
    args = parser.parse_args(argv)
    wanted = set(args.cases)
    for spec in CASES:
        cid = case_id(*spec)
        if wanted and cid not in wanted:
            continue
        t0 = time.perf_counter()
        make_case(*spec)
        print(f"{cid}: {time.perf_counter() - t0:.1f} s", flush=True)
    write_index()


if __name__ == "__main__":
    main(sys.argv[1:])
