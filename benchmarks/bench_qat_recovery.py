"""How much of the accuracy that calibration alone loses does quantization-aware training win
back? The bundled digits CNN (BatchNorm folded, AIMET's default per-channel config).

For each setting it prints the accuracy of FP32, after calibration alone, after QAT without range
learning (``sim.freeze_ranges()``: weights and biases train, every encoding stays as calibrated —
aimet-torch's "QAT without range learning") and after QAT with range learning
(``sim.unfreeze_ranges()``: every quantizer's θmin/θmax trains too), and the fraction recovered
``(acc_qat - acc_calibrated) / (acc_fp32 - acc_calibrated)`` (goal ≥ 0.5).

Data: the bundle has labels only for its 597 held-out test images (its 256 calibration images
come without labels), so the first 298 train and the other 299 evaluate; the two halves are
disjoint and neither was seen when the FP32 model was trained. Calibration uses the 256
calibration images.

Settings:
* **W4A4** (the issue's setting). The FP32 model is 100 % right on the 299 evaluation images and
  calibration alone loses only 2 (min-max) or 4 (tf-enhanced) of them: the fraction recovered is
  a ratio of two very small counts and says little (one image is 0.33 %).
* **W3A4**: 3-bit weights, 4-bit activations, the same config. Calibration alone loses 20 (min-max)
  to 31 (tf-enhanced) of the 299 images, enough to measure recovery. It is a realistic setting:
  3-bit weights are what weight-only low-bit deployments use when 4 bit does not fit, and the
  digits task is so easy for this over-parameterised CNN that 4-bit weights barely hurt it; one
  bit less puts it where QAT is needed, the regime QAT exists for.

Training: Adam (lr 1e-3), batches of 32, ``--epochs`` passes in a seeded random order
(``--seeds`` repeats with other orders; the calibrated accuracy does not depend on the seed).

    python benchmarks/bench_qat_recovery.py [--epochs 8] [--seeds 1] [--quick]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import qsim
import qsim.train
from qsim.train import sim_api

DATA = Path(qsim.__file__).parent / "data"
#: (weight bits, activation bits, calibration scheme)
SETTINGS = [(4, 4, "training_range_learning_with_tf_init"),
            (4, 4, "training_range_learning_with_tf_enhanced_init"),
            (3, 4, "training_range_learning_with_tf_init"),
            (3, 4, "training_range_learning_with_tf_enhanced_init")]


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy, a fraction."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def recovered(fp32: float, calibrated: float, qat: float) -> float:
    """``(qat - calibrated) / (fp32 - calibrated)``; NaN when calibration lost nothing."""
    lost = fp32 - calibrated
    return (qat - calibrated) / lost if lost > 0 else float("nan")


def batches(x, y, epochs: int, seed: int, batch: int = 32):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        out += [({"input": x[order[i:i + batch]]}, y[order[i:i + batch]])
                for i in range(0, len(x), batch)]
    return out


def calibrated_sim(graph, calib, pw: int, aw: int, scheme: str):
    sim = qsim.QuantizationSimModel(graph, quant_scheme=scheme, param_type=f"int{pw}",
                                    activation_type=f"int{aw}", config_file="default")
    sim.compute_encodings([{"input": calib[i:i + 64]} for i in range(0, len(calib), 64)])
    return sim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 epochs, W3A4 min-max only")
    args = ap.parse_args()
    settings = SETTINGS[2:3] if args.quick else SETTINGS
    epochs = 2 if args.quick else args.epochs

    with np.load(DATA / "digits.npz") as d:
        calib, x, y = d["calib_x"], d["test_x"], d["test_y"]
    half = len(x) // 2
    xt, yt, xe, ye = x[:half], y[:half], x[half:], y[half:]
    graph, _ = qsim.fold_batch_norms(qsim.load_onnx(str(DATA / "digits_cnn.onnx")))
    fp32 = accuracy(qsim.run(graph, {"input": xe})["logits"], ye)
    print(f"digits CNN, BatchNorm folded, config 'default' (per-channel weights); train on "
          f"{half}, evaluate on {len(xe)} held-out images; Adam lr 1e-3, batch 32, "
          f"{epochs} epochs, {args.seeds} seed(s)")
    print(f"{'setting':<12}{'calibration':<13}{'FP32':>7}{'calib.':>8}{'QAT fixed':>11}"
          f"{'QAT learned':>13}{'recovered fixed/learned':>26}{'time':>8}")
    for pw, aw, scheme in settings:
        cal_name = "min-max" if scheme.endswith("tf_init") else "tf-enhanced"
        acc_cal = accuracy(calibrated_sim(graph, calib, pw, aw, scheme).run({"input": xe})["logits"], ye)
        res = {"fixed": [], "learned": []}
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            for mode in res:
                sim = calibrated_sim(graph, calib, pw, aw, scheme)
                sim.freeze_ranges() if mode == "fixed" else sim.unfreeze_ranges()
                sim_api.fit(sim, batches(xt, yt, epochs, seed), qsim.train.cross_entropy,
                            qsim.train.Adam(lr=1e-3), epochs=1, progress=False)
                res[mode].append(accuracy(sim.run({"input": xe})["logits"], ye))
        fixed, learned = np.mean(res["fixed"]), np.mean(res["learned"])
        rec = f"{recovered(fp32, acc_cal, fixed):.2f} / {recovered(fp32, acc_cal, learned):.2f}"
        print(f"W{pw}A{aw}{'':<8}{cal_name:<13}{fp32:7.2%}{acc_cal:8.2%}{fixed:11.2%}"
              f"{learned:13.2%}{rec:>26}{time.perf_counter() - t0:7.1f}s")
        lost = round((fp32 - acc_cal) * len(ye))
        print(f"{'':12}calibration loses {lost} of {len(ye)} images; QAT per seed: fixed "
              f"{[f'{a:.2%}' for a in res['fixed']]}, learned {[f'{a:.2%}' for a in res['learned']]}")


if __name__ == "__main__":
    main()
