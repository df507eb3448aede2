"""Finishing a photo after the model: its masks at the source's size as PNG files, the overlay, the measures.

The cheaper ways these are made (issue #15) must give what the plain ways gave: the plain ways are written
out here as the reference, and compared pixel for pixel on synthetic masks and, where ../shared/datasets
is present, on the shipped model's masks of real photos.
"""

from __future__ import annotations

import io
import zlib
from datetime import datetime

import cv2
import numpy as np
import pytest
from PIL import Image

from daemon.config import SeverityConfig
from daemon.measure import crack_lines, measure
from model.errors import DataError
from model.masks import COLOURS, at_size, mask_name, overlay, write_masks, write_overlay, write_png
from model.postprocess import binary_mask, clean
from tests.support.datasets import CRACKS, DRYWALL, need_shared
from tests.support.photos import write_photo
from tests.support.processor import queue

# (working size, source size) as (width, height): the daemon decodes to 896 px on the longest side
GEOMETRIES = [((896, 672), (4000, 3000)), ((672, 896), (3024, 4032)), ((896, 672), (4032, 3024)),
              ((896, 504), (4000, 2250)), ((896, 597), (4000, 2667)), ((640, 480), (641, 481))]


def full_size_resize(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The plain way: the whole mask resized to full size, then thresholded with numpy."""
    return binary_mask(cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR), 127)


def float_overlay(rgb: np.ndarray, masks: list[np.ndarray], alpha: float = 0.45) -> np.ndarray:
    """The plain way: the whole photo blended in float32."""
    out = rgb.astype(np.float32)
    for mask, colour in zip(masks, COLOURS, strict=False):
        on = mask > 0
        out[on] = (1 - alpha) * out[on] + alpha * np.array(colour, np.float32)
    out = out.astype(np.uint8)
    thickness = max(1, round(max(rgb.shape[:2]) / 500))
    for mask, colour in zip(masks, COLOURS, strict=False):
        contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, thickness)
    return out


def whole_mask_clean(mask: np.ndarray, min_area: float = 0.0, fill_boxes: bool = False) -> np.ndarray:
    """The plain way: components labelled over the whole mask."""
    if not min_area and not fill_boxes:
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    keep = stats[1:, cv2.CC_STAT_AREA] >= min_area * mask.size
    if not fill_boxes:
        return np.where(np.concatenate([[False], keep])[labels], np.uint8(255), np.uint8(0))
    out = np.zeros_like(mask)
    for (x, y, w, h, _), k in zip(stats[1:], keep, strict=True):
        if k:
            out[y: y + h, x: x + w] = 255
    return out


def synthetic_masks(size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """{0, 255} masks of `size` (width, height): empty, thin cracks, blobs touching the border, boxes,
    one pixel, and noise (every pixel's rounding is exercised)."""
    rng = np.random.default_rng(seed)
    w, h = size
    empty = np.zeros((h, w), np.uint8)
    cracks = empty.copy()
    for _ in range(4):
        cv2.line(cracks, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                 (int(rng.integers(0, w)), int(rng.integers(0, h))), 255, int(rng.integers(1, 4)))
    blobs = empty.copy()
    cv2.ellipse(blobs, (0, h // 2), (w // 5, h // 7), 20, 0, 360, 255, -1)
    cv2.ellipse(blobs, (w - 1, h - 1), (w // 9, h // 4), 0, 0, 360, 255, -1)
    cv2.circle(blobs, (w // 2, h // 3), 3, 255, -1)
    boxes = empty.copy()
    boxes[h // 4: h // 2, w // 3: w // 3 + 40] = 255
    boxes[h - 30:, :25] = 255
    dot = empty.copy()
    dot[h // 2, w // 2] = 255
    noise = np.where(rng.random((h, w)) < 0.5, np.uint8(255), np.uint8(0))
    return [empty, cracks, blobs, boxes, dot, noise]


@pytest.mark.parametrize(("work", "source"), GEOMETRIES)
def test_masks_scaled_to_the_source_are_the_pixels_a_full_size_resize_gives(work, source):
    for mask in synthetic_masks(work):
        scaled = at_size(mask, source)
        assert scaled.shape == source[::-1] and scaled.dtype == np.uint8
        assert np.array_equal(scaled, full_size_resize(mask, source))


def test_a_mask_already_at_the_source_size_is_written_as_it_is():
    mask = synthetic_masks((64, 48))[1]
    assert at_size(mask, (64, 48)) is mask


def test_mask_pngs_decode_to_the_written_pixels_single_channel_0_255(tmp_path):
    masks = [at_size(m, (4000, 3000)) for m in synthetic_masks((896, 672))[:3]]
    paths = write_masks(tmp_path, "IMG_0001", ["segment crack", "segment taping area", "segment x"], masks)
    for path, mask in zip(paths, masks, strict=True):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (4000, 3000)
        read = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert read.dtype == np.uint8 and read.ndim == 2 and np.array_equal(read, mask)
        # the same pixels as the PNG options used before (level 1, libpng's filters)
        ok, before = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        assert ok and np.array_equal(cv2.imdecode(before, cv2.IMREAD_UNCHANGED), read)


def test_a_12_megapixel_photo_gets_single_channel_0_255_masks_at_its_size_as_the_full_size_resize_gave(
        setup, monkeypatch):
    root, store, processor = setup
    queue(store, root, write_photo(root / "tower-a" / "L1" / "big.jpg", (4000, 3000)))
    real, made = processor.model.mask, {}

    def mask(prob, prompt):  # a crack drawn in, nothing for taping: the scaled path and the empty one
        m = real(prob, prompt)
        m = cv2.line(m.copy(), (10, 20), (800, 600), 255, 3) if prompt == processor.prompts["crack"] else \
            np.zeros_like(m)
        made[prompt] = m
        return m

    monkeypatch.setattr(processor.model, "mask", mask)
    processor.process(store.queue.claim(8, "t"))
    out = processor.config.outputs.dir / "tower-a" / datetime.now().strftime("%Y-%m-%d")
    assert store.queue.counts(datetime(2000, 1, 1))["processed"] == 1
    for prompt in processor.prompts.values():
        path = out / mask_name("big", prompt)
        with Image.open(path) as im:
            assert im.mode == "L" and im.size == (4000, 3000)
        written = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(written)) <= {0, 255}
        assert np.array_equal(written, full_size_resize(made[prompt], (4000, 3000)))


def overlapping_masks(h: int = 240, w: int = 320) -> list[np.ndarray]:
    crack, taping = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    cv2.line(crack, (10, 10), (300, 200), 255, 4)
    taping[100:220, 150:300] = 255  # the crack crosses the taping
    return [crack, taping]


def test_the_overlay_is_the_float_blend_of_before_pixel_for_pixel():
    rgb = np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8)
    crack, taping = overlapping_masks()
    low = np.zeros_like(crack)
    low[180:230, 20:30] = 255  # a narrow box low in the photo: its height and top, not its width, bound it
    for masks in ([crack, taping], [crack, np.zeros_like(taping)], [np.zeros_like(crack)] * 2, [taping],
                  [low], [np.zeros_like(crack), low], [low, taping],
                  [crack, taping, crack[::-1].copy(), taping[:, ::-1].copy(), crack]):  # more masks than colours
        assert np.array_equal(overlay(rgb, masks), float_overlay(rgb, masks))
    assert np.array_equal(overlay(rgb, [crack > 0, taping > 0]), float_overlay(rgb, [crack, taping]))
    # a larger photo draws thicker outlines (750 px: 2 px, about one per 500), and a mask of several parts
    # outlines each
    big = cv2.resize(rgb, (750, 560), interpolation=cv2.INTER_NEAREST)
    parts = np.zeros((560, 750), np.uint8)
    parts[50:200, 50:300] = parts[300:500, 400:700] = 255
    assert np.array_equal(overlay(big, [parts]), float_overlay(big, [parts]))


def test_the_overlay_shows_cracks_red_and_taping_blue(tmp_path):
    rgb = np.full((240, 320, 3), 128, np.uint8)
    crack, taping = overlapping_masks()
    drawn = overlay(rgb, [crack, taping])
    for colour in COLOURS[:2]:  # the outlines, in each mask's colour
        assert (drawn == colour).all(axis=2).any()
    path = write_overlay(tmp_path / "o.jpg", rgb, [crack, taping])
    jpeg = np.asarray(Image.open(path).convert("RGB")).astype(int)
    inside = cv2.erode(crack, np.ones((3, 3), np.uint8)) > 0
    crack_only = inside & (taping == 0)
    taping_only = cv2.erode(taping, np.ones((9, 9), np.uint8)) > 0
    taping_only &= cv2.dilate(crack, np.ones((9, 9), np.uint8)) == 0
    r, b = jpeg[..., 0], jpeg[..., 2]
    assert r[crack_only].mean() > b[crack_only].mean() + 40  # tinted red
    assert b[taping_only].mean() > r[taping_only].mean() + 40  # tinted blue
    assert abs(jpeg[0:5, -5:].mean() - 128) < 3  # untouched elsewhere


def png_row_filters(data: bytes) -> set[int]:
    """The filter type of every row of an 8-bit single-channel PNG (0: none)."""
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        n, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if kind == b"IHDR":
            width, height = (int.from_bytes(data[pos + k:pos + k + 4], "big") for k in (8, 12))
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(idat)
    return {raw[row * (width + 1)] for row in range(height)}


def test_mask_files_are_unfiltered_run_length_pngs_smaller_than_libpngs_defaults(tmp_path):
    # what makes masks cheap to write and small to keep (bench/finishing.py): no row filters, zlib's RLE
    mask = synthetic_masks((896, 672))[1]
    [path] = write_masks(tmp_path, "IMG_0001", ["segment crack"], [mask])
    data = path.read_bytes()
    assert png_row_filters(data) == {0}
    ok, default = cv2.imencode(".png", mask)
    assert ok and len(data) < len(default.tobytes()) * 0.75


def test_a_prompt_without_its_mask_is_an_error_not_a_missing_file(tmp_path):
    mask = synthetic_masks((64, 48))[1]
    with pytest.raises(ValueError):
        write_masks(tmp_path, "IMG_0001", ["segment crack", "segment taping area"], [mask])


def test_pictures_other_than_masks_are_written_as_given_colour_and_16_bit_blank_ones_included(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    for name, image in (("rgb.png", rgb), ("black.png", np.zeros_like(rgb)),
                        ("deep.png", np.zeros((48, 64), np.uint16)), ("blank.png", np.zeros((48, 64), np.uint8))):
        write_png(tmp_path / name, image)
        read = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)
        assert read.dtype == image.dtype and np.array_equal(read, image), name


def test_an_image_that_cannot_be_encoded_is_one_error_naming_its_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "imencode", lambda *args, **kwargs: (False, None))
    mask = synthetic_masks((64, 48))[1]
    with pytest.raises(DataError, match="IMG_0001__segment_crack.png: PNG encoding failed"):
        write_masks(tmp_path, "IMG_0001", ["segment crack"], [mask])
    with pytest.raises(OSError, match="o.jpg: JPEG encoding failed"):
        write_overlay(tmp_path / "o.jpg", np.zeros((48, 64, 3), np.uint8), [mask])
    assert not list(tmp_path.iterdir())


def test_an_overlay_within_max_side_draws_masks_given_at_the_photos_full_size(tmp_path, monkeypatch):
    import model.masks
    rgb = np.full((200, 300, 3), 128, np.uint8)
    crack = np.zeros((200, 300), np.uint8)
    crack[51:151, 31:131] = 255  # odd edges: halving them by interpolation would leave grey rows
    drawn, real = [], model.masks.overlay
    monkeypatch.setattr(model.masks, "overlay", lambda rgb, masks: drawn.append(masks) or real(rgb, masks))
    path = write_overlay(tmp_path / "o.jpg", rgb, [crack, np.zeros_like(crack)], max_side=150)
    [masks] = drawn
    assert all(m.shape == (100, 150) and set(np.unique(m)) <= {0, 255} for m in masks)
    jpeg = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert jpeg.shape == (100, 150, 3)
    inside, outside = jpeg[30:70, 20:60], jpeg[85:, 80:]
    assert inside[..., 0].mean() > inside[..., 2].mean() + 40  # tinted red where the crack is
    assert abs(outside.mean() - 128) < 3


def test_overlays_are_jpegs_at_quality_85(tmp_path):
    # overlays are for looking at (the masks are the record): quality 85 keeps them a fraction of 95's size
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    path = write_overlay(tmp_path / "o.jpg", rgb, [synthetic_masks((64, 48))[1]])
    ok, reference = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 85])
    with Image.open(path) as written, Image.open(io.BytesIO(reference.tobytes())) as at_85:
        assert written.quantization == at_85.quantization


def test_clean_up_labels_only_the_masks_box_and_keeps_the_same_components():
    for mask in synthetic_masks((300, 200), seed=1):
        for min_area, fill_boxes in ((0.0, True), (0.0005, False), (0.0005, True), (0.0, False)):
            assert np.array_equal(clean(mask, min_area, fill_boxes), whole_mask_clean(mask, min_area, fill_boxes))


def test_measures_label_only_the_masks_box_and_give_the_figures_of_the_whole_mask():
    for mask in synthetic_masks((300, 200), seed=2)[:5]:
        on = mask > 0
        prob = np.where(on, 0.9, 0.1).astype(np.float32)
        got = measure(on, prob, 4.0, "crack", 0.2, SeverityConfig(), 16, int(on.sum()) * 16)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(on.astype(np.uint8), connectivity=8)
        length, width = crack_lines(labels, stats)
        assert got["components"] == int(np.count_nonzero(stats[1:, cv2.CC_STAT_AREA] * 16 >= 16))
        assert got["length_px"] == pytest.approx(length * 4.0, rel=1e-12)
        assert got["max_width_px"] == pytest.approx((max(1.0, width) if n > 1 else 0.0) * 4.0, rel=1e-12)


@pytest.mark.realdata
def test_the_shipped_models_masks_of_real_photos_finish_as_the_plain_ways_gave():
    need_shared()
    from model import SHIPPED_CHECKPOINT
    from model.checkpoint import load_checkpoint
    from model.images import decode

    model, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    prompts = ["segment crack", "segment taping area"]
    photos = sorted((CRACKS / "valid").glob("*.jpg"))[:3] + sorted((DRYWALL / "valid").glob("*.jpg"))[:3]
    seen = 0
    for path in photos:
        d = decode(path, 2 * model.largest_input_size)
        big = cv2.resize(d.rgb, (896, 672), interpolation=cv2.INTER_AREA)  # a 4:3 photo's working size
        probs = model.predict([big], prompts)[0]
        masks = [model.mask(p, prompt) for p, prompt in zip(probs, prompts, strict=True)]
        seen += sum(bool(m.any()) for m in masks)
        for m in masks:
            assert np.array_equal(at_size(m, (4000, 3000)), full_size_resize(m, (4000, 3000)))
        assert np.array_equal(overlay(big, masks), float_overlay(big, masks))
        taping = binary_mask(probs[1], model.threshold(prompts[1]))
        assert np.array_equal(clean(taping, 0.0, True), whole_mask_clean(taping, 0.0, True))
    assert seen >= 3  # real masks, not only empty ones
