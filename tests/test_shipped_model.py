"""The shipped default model: present, small, offline, and its card says how it was measured.

How well it segments real photos is measured in tests/test_measurements.py.
"""

from __future__ import annotations

import json

import pytest

from daemon.config import TASKS, load_config
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


def test_the_shipped_cards_metrics_are_measured_at_the_input_size_it_runs_at():
    """Three records in the card must agree on the side: the one `model export` chose (the best mean calibration
    mIoU over the tasks), the whole split's mIoU (the image-weighted mean of the calibration half at that side and
    the held-out half), and the fp32 scores `model quantize` measured through the graph of that side."""
    card = json.loads((SHIPPED / "card.json").read_text())
    side = card["settings"]["input_size"]
    assert {card["inference"][t]["input_size"] or side for t in TASKS} == {side}, "one side for every task"
    by_side = {int(s): [card["metrics"][t]["chosen_on_calibration"]["calibration_miou_by_size"][s] for t in TASKS]
               for s in card["metrics"]["crack"]["chosen_on_calibration"]["calibration_miou_by_size"]}
    assert max(by_side, key=lambda s: sum(by_side[s])) == side, "the side chosen on the calibration half"
    for task in TASKS:
        m = card["metrics"][task]
        cal, held = m["chosen_on_calibration"], m["held_out"]
        assert cal["calibration_images"] + held["images"] == m["images"]
        halves = (cal["calibration_images"] * by_side[side][TASKS.index(task)] + held["images"] * held["miou"])
        assert m["miou"] == pytest.approx(halves / m["images"], abs=0.002), f"{task}: measured at another side"
    if "int8" in card:  # quantized at the side it runs at, and its fp32 reference is the card's figure
        assert sorted(p.name for p in SHIPPED.glob("int8-*.onnx")) == [f"int8-{side}.onnx"]
        assert card["int8"]["fp32"] == {t: pytest.approx(card["metrics"][t]["miou"], abs=1e-4) for t in TASKS}


def test_the_readme_states_the_shipped_models_input_size_and_figures():
    card = json.loads((SHIPPED / "card.json").read_text())
    readme = (REPO / "README.md").read_text()
    assert f"`{SHIPPED.name}`" in readme and f"{card['settings']['input_size']} px input" in readme
    crack, taping = card["metrics"]["crack"], card["metrics"]["taping"]
    figures = " ".join(readme.split())  # the paragraph's line breaks as spaces
    assert (f"crack mIoU {crack['miou']:.3f} / Dice {crack['dice']:.3f}, "
            f"taping mIoU {taping['miou']:.3f} / Dice {taping['dice']:.3f}") in figures
