"""The shipped default model: present, small, offline, and its card says how it was measured.

How well it segments real photos is measured in tests/test_measurements.py.
"""

from __future__ import annotations

import json

from daemon.config import load_config
from tests.support.datasets import REPO

SHIPPED = load_config(REPO / "config.yaml").model.checkpoint


def test_the_default_config_names_a_shipped_fp16_checkpoint_under_20_mb():
    card = json.loads((SHIPPED / "card.json").read_text())
    assert card["dtype"] == "float16" and card["backend"] == "compact"
    assert (SHIPPED / "model.safetensors").stat().st_size < 20e6
    assert set(card["thresholds"]) == {"crack", "taping"} and card["metrics"]


def test_the_shipped_card_holds_metrics_measured_at_the_settings_it_ships_with():
    card = json.loads((SHIPPED / "card.json").read_text())
    for task in ("crack", "taping"):
        settings, m = card["inference"][task], card["metrics"][task]
        assert m["threshold"] == card["thresholds"][task]  # scored at the threshold it ships with
        assert m["images"] > m["held_out"]["images"] > 0  # the whole split, and the half that chose nothing
        assert str(settings["input_size"]) in m["chosen_on_calibration"]["calibration_miou_by_size"]
