"""Make the golden outputs of whole integer-target models with int8-compute MatMulNBits, per
kernel family (run from a qsim checkout):

    .venv/bin/python tests/data/ort_nbits_int8/make_model_cases.py export /tmp/nbits_models
    .venv/bin/python tests/data/ort_nbits_int8/make_model_cases.py run /tmp/nbits_models
    qemu-x86_64 -cpu Haswell .venv/bin/python tests/data/ort_nbits_int8/make_model_cases.py \\
        run /tmp/nbits_models

``export`` writes the QDQ export of each case in :data:`CASES` (golden models at 16-bit
activations, built as tests/integer/cases.py builds them) and its feeds; ``run`` runs ONNX
Runtime's default CPU session (all optimizations, 2 intra-op threads; these models give the same
bits with 1 to 8 threads) on them and writes ``<family>/models.npz`` (``{case}/{output}``) here.
Under QEMU's Haswell only ONNX Runtime runs (AVX2 kernels), on the models exported natively.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

#: golden cases whose integer model holds MatMulNBits with int8 compute (and nothing that
#: differs from ONNX Runtime for another reason)
CASES = ("models/transformer_s31_default_tf_w8a8_a16",
         "models/transformer_gelu_s31_per_channel_tfe_w8a8_a16",
         "models/mlp_s33_default_pct_w8a8_a16",
         "real/vit_tiny_s44_htp_v81_tf_w8a16_a16",
         "real/norms_tiny_s54_htp_v69_tf_w8a16_a16",
         "real/attn_masked_tiny_s56_htp_v75_msm_tfe_w8a16_a16")


def _file(case_id: str) -> str:
    return case_id.replace("/", "__")


def export(folder: Path) -> None:
    from tests.integer.cases import case
    folder.mkdir(parents=True, exist_ok=True)
    for case_id in CASES:
        sim, feeds = case(case_id)
        sim.export_qdq(folder / f"{_file(case_id)}.onnx")
        np.savez(folder / f"{_file(case_id)}_feeds.npz", **feeds)


def run(folder: Path) -> None:
    import onnxruntime as ort
    from qsim.kernels.family import host_family
    out = {}
    for case_id in CASES:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        so.log_severity_level = 3
        session = ort.InferenceSession(str(folder / f"{_file(case_id)}.onnx"), so,
                                       providers=["CPUExecutionProvider"])
        feeds = dict(np.load(folder / f"{_file(case_id)}_feeds.npz"))
        for o, y in zip(session.get_outputs(), session.run(None, feeds)):
            out[f"{case_id}/{o.name}"] = y
    target = Path(__file__).parent / host_family()
    target.mkdir(exist_ok=True)
    np.savez_compressed(target / "models.npz", **out)
    print(f"{len(out)} outputs -> {target / 'models.npz'}")


if __name__ == "__main__":
    {"export": export, "run": run}[sys.argv[1]](Path(sys.argv[2]))
