"""Where aimet-onnx 2.42 puts quantizers and how the configuration sets them (placement.md).

Public API (stable; the QuantizationSimModel builds on it)::

    from qsim.placement import place_quantizers
    p = place_quantizers(graph, config, param_bitwidth=8, activation_bitwidth=8)
    p.graph                    # the graph after MatmulAdd and norm fusion (what rules see)
    p.executed_graph           # the graph that runs: MatmulAdd fused, norms as in the model
    p.quantizers               # tuple of QuantizerSpec, p.quantizers[qid]
    p.quantizer_of[tensor]     # qid of the quantizer on a tensor (tie members share a qid)
    p.spec(tensor)             # QuantizerSpec on a tensor, or None
    p.effective_quantizer(t)   # qid deciding t's grid (own if enabled, else up through
                               # grid-preserving producers / float Cast via input 0), or None
    p.update_order()           # activation tensors with a quantizer, ORT's per-batch order
    print(p.explain())         # one line per quantizer with the rules that decided it

``place_quantizers`` is a pure function: it reads the graph and the configuration and returns
new frozen values. Config errors that depend on the model (placement.md §7) raise
:class:`qsim.errors.ConfigError`.

Decomposed LayerNormalization / RMSNormalization (``supergroup_pass_list``): fused for placement
as aimet does (norm_fusion.py), and the graph passes on what fusion left (norm_passes.py).
"""
from .passes import place_quantizers
from .result import Placement, QuantizerSpec

__all__ = ["place_quantizers", "Placement", "QuantizerSpec"]
