"""Draw docs/integer_gap.png: the digits CNN's float simulation vs ONNX Runtime's integer kernels.

The bundled digits CNN (BatchNorm folded), W8A8 with the built-in ``default`` config, calibrated
on its 256 calibration images with tf-enhanced, compared on its 597 held-out images through
``qsim.analyze(..., target="onnxruntime")``. Needs matplotlib (``qsim-ref[analyze]``)::

    python docs/make_integer_gap_plot.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import qsim
from qsim.analyze import analyze, plot_gap
from qsim.cli import BUNDLED_DATA, BUNDLED_MODEL
from qsim.transforms import fold_batch_norms

HERE = Path(__file__).resolve().parent


def main() -> None:
    with np.load(BUNDLED_DATA) as d:
        calib, test_x, test_y = d["calib_x"], d["test_x"], d["test_y"]
    graph, _ = fold_batch_norms(qsim.load_onnx(BUNDLED_MODEL))
    sim = qsim.QuantizationSimModel(graph, quant_scheme="tf_enhanced", config_file="default")
    sim.compute_encodings([{"input": calib[i:i + 16]} for i in range(0, len(calib), 16)])
    result = analyze(sim, {"input": calib}, eval_data={"input": test_x}, labels=test_y,
                     model_name="digits_cnn.onnx", target="onnxruntime")
    path = plot_gap(result, HERE / "integer_gap.png")
    print(result.gap.table())
    print(f"accuracy: sim {result.quantized:.2f} %, onnxruntime {result.target_metric:.2f} %; "
          f"wrote {path}")


if __name__ == "__main__":
    main()
