"""Measurements: figures of the shipped model on real photos (how much of the labeled defect it finds, how
close its masks are across phrasings of a prompt), each held to a floor. They run the shipped model on
../shared/datasets (skipped where absent) and say how good it is, not what the code does; they are apart so
that a change of model, rather than of code, is what makes them move.

Speed figures are not tests: `uv run python -m bench` measures them (bench/README.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from daemon.config import load_config
from model.checkpoint import load_checkpoint
from model.data import read_rgb
from model.labels import rasterize, source_stem
from model.voc import read_file
from tests.support.datasets import CRACKS, DRYWALL, REPO, need_shared

pytestmark = pytest.mark.realdata
CONFIG = load_config(REPO / "config.yaml")


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(CONFIG.model.checkpoint)


def valid_photos(root, n):
    """The first `n` labeled validation photos of a dataset whose source photo is not in its train split."""
    train = {source_stem(p) for p in (root / "train").glob("*.jpg")}
    xmls = [x for x in sorted((root / "valid").glob("*.xml")) if source_stem(x.with_suffix(".jpg")) not in train]
    return [read_file(x, "valid", []) for x in xmls[:n]]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.parametrize(("task", "root"), [("crack", CRACKS), ("taping", DRYWALL)])
def test_shipped_model_finds_the_labeled_defect_on_unseen_photos(shipped, task, root):
    need_shared()
    model, _ = shipped
    prompt = CONFIG.prompts.for_task(task).canonical
    ious = []
    for item in valid_photos(root, 6):
        rgb = read_rgb(item.image)
        gt = rasterize(item.objects, rgb.shape[1], rgb.shape[0]) > 0
        ious.append(iou(model.predict([rgb], [prompt])[0][0] > model.threshold(prompt), gt))
    assert np.mean(ious) > 0.25, ious


@pytest.mark.parametrize("task", ["crack", "taping"])
def test_synonyms_give_masks_close_to_the_canonical_prompt(shipped, task):
    need_shared()
    model, _ = shipped
    prompts = CONFIG.prompts.for_task(task).all
    for item in valid_photos(CRACKS if task == "crack" else DRYWALL, 3):
        probs = model.predict([read_rgb(item.image)], prompts)[0]
        masks = [p > model.threshold(prompts[0]) for p in probs]
        for synonym, mask in zip(prompts[1:], masks[1:], strict=True):
            assert iou(masks[0], mask) > 0.6, (synonym, item.image.name)


def test_the_prompt_decides_what_is_segmented(shipped):
    """On a drywall photo, asking for cracks finds much less than asking for taping."""
    need_shared()
    model, _ = shipped
    areas = []
    for item in valid_photos(DRYWALL, 4):
        probs = model.predict([read_rgb(item.image)], ["segment taping area", "segment crack"])[0]
        areas.append([(probs[0] > model.threshold("segment taping area")).mean(),
                      (probs[1] > model.threshold("segment crack")).mean()])
    taping, crack = np.mean(areas, axis=0)
    assert crack < 0.5 * taping
