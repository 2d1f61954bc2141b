"""Shared helpers for the config tests: where the copied golden configs live."""
from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "configs"
REPO = Path(__file__).resolve().parents[2]

# Copies of the configuration files AIMET 2.42 was run with (golden cnn-seed0/configs and every
# golden models/<case>/config.json).
GOLDEN_FILES = sorted(DATA.glob("golden_*.json"))
GOLDEN_PER_CHANNEL = DATA / "golden_cnn_default_config_per_channel.json"
GOLDEN_PER_TENSOR = DATA / "golden_cnn_default_config.json"
GOLDEN_HTP_V75 = DATA / "golden_misc_s32_htp_v75_tf_w8a16.json"


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
