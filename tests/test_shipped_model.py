"""The shipped default model: present, small, offline, and it segments real photos from any phrasing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from daemon.config import load_config
from model.data import read_rgb
from model.labels import rasterize
from model.segmenter import load_checkpoint
from model.voc import read_file
from tests.conftest import CRACKS, DRYWALL, REPO, need_shared

CONFIG = load_config(REPO / "config.yaml")
SHIPPED = CONFIG.model.checkpoint


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(SHIPPED)


def test_the_default_config_names_a_shipped_fp16_checkpoint_under_20_mb():
    card = json.loads((SHIPPED / "card.json").read_text())
    assert card["dtype"] == "float16" and card["backend"] == "compact"
    assert (SHIPPED / "model.safetensors").stat().st_size < 20e6
    assert set(card["thresholds"]) == {"crack", "taping"} and card["metrics"]


def _valid_photos(root, n):
    from model.labels import source_stem

    train = {source_stem(p) for p in (root / "train").glob("*.jpg")}
    xmls = [x for x in sorted((root / "valid").glob("*.xml")) if source_stem(x.with_suffix(".jpg")) not in train]
    return [read_file(x, "valid", []) for x in xmls[:n]]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.parametrize(("task", "root"), [("crack", CRACKS), ("taping", DRYWALL)])
def test_shipped_model_finds_the_labeled_defect_on_unseen_photos(shipped, task, root):
    need_shared()
    model, _ = shipped
    prompt = CONFIG.prompts.for_task(task).canonical
    ious = []
    for item in _valid_photos(root, 6):
        rgb = read_rgb(item.image)
        gt = rasterize(item.objects, rgb.shape[1], rgb.shape[0]) > 0
        ious.append(_iou(model.predict([rgb], [prompt])[0][0] > model.threshold(prompt), gt))
    assert np.mean(ious) > 0.25, ious


@pytest.mark.parametrize("task", ["crack", "taping"])
def test_synonyms_give_masks_close_to_the_canonical_prompt(shipped, task):
    need_shared()
    model, _ = shipped
    prompts = CONFIG.prompts.for_task(task).all
    for item in _valid_photos(CRACKS if task == "crack" else DRYWALL, 3):
        probs = model.predict([read_rgb(item.image)], prompts)[0]
        masks = [p > model.threshold(prompts[0]) for p in probs]
        for synonym, mask in zip(prompts[1:], masks[1:], strict=True):
            assert _iou(masks[0], mask) > 0.6, (synonym, item.image.name)


def test_the_prompt_decides_what_is_segmented(shipped):
    """On a drywall photo, asking for cracks finds much less than asking for taping."""
    need_shared()
    model, _ = shipped
    areas = []
    for item in _valid_photos(DRYWALL, 4):
        probs = model.predict([read_rgb(item.image)], ["segment taping area", "segment crack"])[0]
        areas.append([(probs[0] > model.threshold("segment taping area")).mean(),
                      (probs[1] > model.threshold("segment crack")).mean()])
    taping, crack = np.mean(areas, axis=0)
    assert crack < 0.5 * taping


def test_the_shipped_card_holds_metrics_measured_at_the_settings_it_ships_with():
    card = json.loads((SHIPPED / "card.json").read_text())
    for task in ("crack", "taping"):
        settings, m = card["inference"][task], card["metrics"][task]
        assert m["threshold"] == card["thresholds"][task]  # scored at the threshold it ships with
        assert m["images"] > m["held_out"]["images"] > 0  # the whole split, and the half that chose nothing
        assert str(settings["input_size"]) in m["chosen_on_calibration"]["calibration_miou_by_size"]
