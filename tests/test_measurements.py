"""Measurements: figures of the shipped model on real photos (how much of the labeled defect it finds, how
close its masks are across phrasings of a prompt), each held to a floor. They run the shipped model on
../shared/datasets (skipped where absent) and say how good it is, not what the code does; they are apart so
that a change of model, rather than of code, is what makes them move.

Then what the daemon measures of a taping mask (taped segments and their length), on drawn masks and on
the labeled joints of real photos.

Speed figures are not tests: `uv run python -m bench` measures them (bench/README.md).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from daemon.config import SeverityConfig, load_config
from daemon.measure import crack_lines, measure, taping_length
from model.checkpoint import load_checkpoint
from model.data import read_rgb
from model.labels import rasterize, source_stem
from model.postprocess import components
from model.voc import read_file
from tests.support.datasets import CRACKS, DRYWALL, REPO, need_shared

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


@pytest.mark.realdata
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


@pytest.mark.realdata
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


@pytest.mark.realdata
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


# ---- taping: taped segments and their length ------------------------------------------------------

def full_size_length(mask: np.ndarray) -> float:
    """The plain way: every component thinned at the mask's own size, as cracks are."""
    _, labels, stats, _ = components(mask.astype(np.uint8))
    return crack_lines(labels, stats)[0]


def test_taping_is_measured_as_taped_segments_and_their_length_in_px_and_mm():
    mask = np.zeros((672, 896), bool)
    mask[100:140, 50:850] = True  # a horizontal joint 800 px long, 40 px wide
    mask[200:650, 400:436] = True  # a vertical one 450 px long, 36 px wide
    mask[5, 5] = True  # a speck: not a segment
    prob = np.full(mask.shape, 0.7, np.float32)
    full = int(mask.sum()) * 4
    m = measure(mask, prob, 2.0, "taping", 0.5, SeverityConfig(), 16, full)
    assert m["components"] == 2
    # a band's centre line runs between the centres of its two ends: length minus width
    assert m["length_px"] == pytest.approx(2.0 * ((800 - 40) + (450 - 36)), rel=0.02)
    assert m["length_mm"] == pytest.approx(0.5 * m["length_px"])
    assert m["coverage_pct"] == pytest.approx(m["area_pct"]) and m["mean_confidence"] == pytest.approx(0.7)
    assert (m["max_width_px"], m["max_width_mm"], m["severity"]) == (None, None, None)  # tape is as wide as its roll

    unscaled = measure(mask, prob, 2.0, "taping", None, SeverityConfig(), 16, full)
    assert unscaled["length_px"] == m["length_px"] and unscaled["length_mm"] is None
    empty = measure(np.zeros_like(mask), prob, 2.0, "taping", 0.5, SeverityConfig(), 16, 0)
    assert (empty["length_px"], empty["length_mm"], empty["components"]) == (0.0, 0.0, 0)


def test_taping_length_thinned_small_is_the_length_thinned_at_full_size():
    """Thinning the mask reduced to 256 px gives the full-size figure: joints of every slant and width, a
    strip thinner than the reduction, a taped panel, a photo all tape."""
    shapes = []
    for angle_end, width in (((850, 80), 30), ((850, 300), 8), ((300, 660), 50), ((880, 660), 3)):
        shapes.append(cv2.line(np.zeros((672, 896), np.uint8), (40, 300), angle_end, 1, width) > 0)
    grid = np.zeros((672, 896), bool)
    grid[:, 100:140] = grid[300:340, :] = grid[:, 600:635] = True
    panel = np.zeros((672, 896), bool)
    panel[100:600, 100:500] = True
    shapes += [grid, panel, np.ones((672, 896), bool), np.ones((200, 150), bool)]
    for mask in shapes:
        assert taping_length(mask) == pytest.approx(full_size_length(mask), rel=0.05)


@pytest.mark.realdata
def test_taping_length_of_labeled_joints_is_the_full_size_figure():
    need_shared()
    for item in valid_photos(DRYWALL, 6):
        rgb = read_rgb(item.image)
        side = 896 / max(rgb.shape[:2])  # the daemon's working resolution
        size = (round(rgb.shape[1] * side), round(rgb.shape[0] * side))
        gt = cv2.resize(rasterize(item.objects, rgb.shape[1], rgb.shape[0]), size, interpolation=cv2.INTER_NEAREST) > 0
        assert taping_length(gt) == pytest.approx(full_size_length(gt), rel=0.05), item.image.name
