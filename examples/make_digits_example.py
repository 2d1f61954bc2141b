"""Regenerate the bundled example: a small CNN trained on scikit-learn's 8×8 handwritten digits.

Writes, next to this file:
  digits_cnn.onnx  the trained FP32 model (opset 17; input "input" [batch, 1, 8, 8] float32,
                   output "logits" [batch, 10]); the BatchNormalization nodes are kept so the
                   quantization demo has something to fold
  digits.npz       calib_x (256 training images for calibration), test_x / test_y (the held-out
                   images and labels); images are float32 in [0, 1], labels int64

Development tool only: it needs torch and scikit-learn, which qsim itself never imports.
    .venv/bin/pip install torch scikit-learn
    .venv/bin/python examples/make_digits_example.py
The data (1,797 images) ships inside scikit-learn; nothing is downloaded. Training is seeded and
single-threaded, so reruns give the same model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
N_TEST = 597         # held out: never seen in training or calibration
N_CALIB = 256        # taken from the training images
EPOCHS = 40
BATCH = 64


def split_data(seed: int = SEED):
    """Shuffle the 1,797 digits once; the last N_TEST are the test set, the rest train."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]   # pixel values are 0..16
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = len(x) - N_TEST
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU ×2, MaxPool, Conv-ReLU, global average pool, linear classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(self.features(x))


def train(x_train, y_train) -> DigitsCNN:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


def accuracy(model: DigitsCNN, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(model: DigitsCNN, path: Path) -> None:
    """TorchScript exporter with TrainingMode.PRESERVE on an eval-mode model: BatchNormalization
    stays a node (in EVAL mode the exporter would fuse it into the conv)."""
    torch.onnx.export(
        model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)


def main() -> None:
    x_train, y_train, x_test, y_test = split_data()
    model = train(x_train, y_train)
    export(model, HERE / "digits_cnn.onnx")
    np.savez_compressed(HERE / "digits.npz", calib_x=x_train[:N_CALIB], test_x=x_test,
                        test_y=y_test)
    print(f"train accuracy {accuracy(model, x_train, y_train):.4f}, "
          f"test accuracy {accuracy(model, x_test, y_test):.4f} on {len(y_test)} held-out digits")


if __name__ == "__main__":
    main()
