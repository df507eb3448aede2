"""The compiled inference runtime (model/runtime.py): the same masks as eager PyTorch, compiled once per
checkpoint, never stale, and a clear fallback when compiling is not possible."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.errors import CheckpointError
from model.images import decode
from tests.support.datasets import CRACKS, DRYWALL, REPO, need_shared, real_photos

PROMPTS = ["segment crack", "segment taping area"]


@pytest.fixture(scope="session")
def compiled_cache(tiny_checkpoint, tmp_path_factory) -> Path:
    """A compiled-graph cache holding the tiny checkpoint's graph: exporting costs seconds, so once a session."""
    cache = tmp_path_factory.mktemp("compiled")
    load_checkpoint(tiny_checkpoint, "cpu", "onnx", cache)
    return cache


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a > 0, b > 0).sum()
    return 1.0 if union == 0 else float(np.logical_and(a > 0, b > 0).sum() / union)


def test_compiled_shipped_model_gives_the_eager_masks_on_real_photos(tmp_path):
    need_shared()
    folder = REPO / "model" / "weights" / "compact-v2"
    eager, _ = load_checkpoint(folder, "cpu")
    compiled, _ = load_checkpoint(folder, "cpu", "onnx", tmp_path / "cache")
    assert (eager.runtime, compiled.runtime) == ("eager", "onnx")
    photos = real_photos(CRACKS / "valid", 3) + real_photos(DRYWALL / "valid", 3)
    for photo in photos:
        rgb = decode(photo, 2 * compiled.largest_input_size).rgb
        for i, prompt in enumerate(PROMPTS):
            a = eager.mask(eager.predict([rgb], PROMPTS)[0][i], prompt)
            b = compiled.mask(compiled.predict([rgb], PROMPTS)[0][i], prompt)
            assert iou(a, b) >= 0.995, (photo.name, prompt)


def test_the_compiled_graph_has_batch_norm_folded_and_static_padding(compiled_cache):
    [graph] = list(compiled_cache.glob("*.onnx"))
    ops = {node.op_type for node in onnx.load(graph).graph.node}
    assert "Conv" in ops and not ops & {"BatchNormalization", "Pad"}


def test_the_compiled_graph_takes_any_batch_and_any_number_of_prompts(tiny_checkpoint, compiled_cache):
    eager, _ = load_checkpoint(tiny_checkpoint, "cpu")
    compiled, _ = load_checkpoint(tiny_checkpoint, "cpu", "onnx", compiled_cache)
    torch.manual_seed(0)
    for batch, prompts in ((1, PROMPTS[:1]), (3, [*PROMPTS, "segment wall crack"])):
        pixels = torch.rand(batch, 3, 128, 128) * 255
        want = eager.predict_logits(pixels, prompts)
        got = compiled.predict_logits(pixels, prompts)
        assert got.shape == want.shape == (batch, len(prompts), *want.shape[-2:])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_restart_loads_the_cached_graph_without_compiling_again(tiny_checkpoint, compiled_cache, monkeypatch):
    first, _ = load_checkpoint(tiny_checkpoint, "cpu", "onnx", compiled_cache)
    cached = sorted(compiled_cache.glob("*.onnx"))

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again, _ = load_checkpoint(tiny_checkpoint, "cpu", "onnx", compiled_cache)
    assert again.runtime == "onnx" and sorted(compiled_cache.glob("*.onnx")) == cached
    pixels = torch.rand(1, 3, 128, 128) * 255
    torch.testing.assert_close(again.predict_logits(pixels, PROMPTS), first.predict_logits(pixels, PROMPTS))


def test_other_weights_are_compiled_afresh_not_served_from_the_cache(tiny_checkpoint, compiled_cache, tmp_path):
    import shutil

    from model.checkpoint import read_card, save_checkpoint

    shutil.copytree(compiled_cache, tmp_path / "cache")  # a cache of its own: the assertion counts its files

    model, _ = load_checkpoint(tiny_checkpoint, "cpu")
    with torch.no_grad():
        model.head.bias += 1.0
    other = save_checkpoint(model, tmp_path / "other", read_card(tiny_checkpoint))
    a, _ = load_checkpoint(tiny_checkpoint, "cpu", "onnx", tmp_path / "cache")
    b, _ = load_checkpoint(other, "cpu", "onnx", tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 2
    pixels = torch.rand(1, 3, 128, 128) * 255
    difference = b.predict_logits(pixels, PROMPTS) - a.predict_logits(pixels, PROMPTS)
    torch.testing.assert_close(difference, torch.ones_like(difference), atol=1e-4, rtol=0)


def test_training_drops_the_compiled_graph_so_it_never_serves_old_weights(tiny_checkpoint, compiled_cache):
    model, _ = load_checkpoint(tiny_checkpoint, "cpu", "auto", compiled_cache)
    assert model.runtime == "onnx"
    model.train()
    assert model.runtime == "eager"
    model.eval()
    assert model.runtime == "eager"


def test_auto_runs_eager_and_says_why_when_compiling_fails(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    import model.runtime

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(model.runtime, "export_graph", broken)
    with caplog.at_level(logging.WARNING):
        auto, _ = load_checkpoint(tiny_checkpoint, "cpu", "auto", tmp_path)
    assert auto.runtime == "eager" and "exporter exploded" in caplog.text
    with pytest.raises(CheckpointError, match="model.runtime onnx: .*exporter exploded.*set model.runtime"):
        load_checkpoint(tiny_checkpoint, "cpu", "onnx", tmp_path)


def test_eager_runtime_never_compiles(tiny_checkpoint, tmp_path):
    model, _ = load_checkpoint(tiny_checkpoint, "cpu", "eager", tmp_path)
    assert model.runtime == "eager" and not list(Path(tmp_path).glob("*.onnx"))


def test_a_restart_runs_the_cached_graph_without_building_the_pytorch_model(tiny_checkpoint, compiled_cache):
    import json
    import subprocess
    import sys

    probe = ("import json, sys; from pathlib import Path; from model.runtime import load_compiled; "
             f"m = load_compiled(Path({str(tiny_checkpoint)!r}), Path({str(compiled_cache)!r}), {PROMPTS!r}, 2); "
             "print(json.dumps([type(m).__name__, [k for k in ('timm', 'transformers', 'torchvision') "
             "if k in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(out.stdout.splitlines()[-1]) == ["CompiledModel", []]


def test_the_cached_graph_alone_gives_the_masks_of_the_checkpoint(tiny_checkpoint, compiled_cache):
    from model.runtime import load_compiled

    eager, _ = load_checkpoint(tiny_checkpoint, "cpu")
    cached = load_compiled(tiny_checkpoint, compiled_cache, PROMPTS, 2)
    assert cached is not None and cached.runtime == "onnx" and cached.thresholds == eager.thresholds
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (90, 120, 3), np.uint8), rng.integers(0, 255, (200, 150, 3), np.uint8)]
    for a, b in zip(eager.predict(images, PROMPTS), cached.predict(images, PROMPTS), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_without_its_graph_or_prompts_in_the_cache_a_checkpoint_is_loaded_in_full(tiny_checkpoint, compiled_cache,
                                                                                    tmp_path):
    from model.runtime import load_compiled

    assert load_compiled(tiny_checkpoint, tmp_path, PROMPTS, 2) is None
    assert load_compiled(tiny_checkpoint, compiled_cache, ["segment window"], 2) is None


@pytest.fixture
def prepared_both(tmp_path) -> Path:
    """A prepared folder of tiny synthetic photos: 4 train and 4 valid per task, with masks."""
    import cv2

    from model.prep import Row
    from tests.support.datasets import write_manifest

    folder = tmp_path / "prepared"
    (folder / "masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for task, prompt in zip(("crack", "taping"), PROMPTS, strict=True):
        for i in range(8):
            rgb = rng.integers(0, 255, (64, 64, 3), np.uint8)
            mask = np.zeros((64, 64), np.uint8)
            mask[10:20 + i, 5:60] = 255
            name = f"{task}{i}"
            cv2.imwrite(str(folder / f"{name}.png"), rgb)
            cv2.imwrite(str(folder / "masks" / f"{name}.png"), mask)
            rows.append(Row(image=str(folder / f"{name}.png"), mask=f"masks/{name}.png", task=task, prompt=prompt,
                            stem=name, split="train" if i < 4 else "valid", objects=1, mask_area=0.1,
                            dataset=task, source_split="train", width=64, height=64))
    write_manifest(folder, rows)
    return folder


def test_int8_graphs_that_keep_validation_miou_ship_with_the_checkpoint_and_auto_runs_them(
        tiny_checkpoint, prepared_both, tmp_path):
    import shutil

    from model.checkpoint import read_card
    from model.quantize import quantize
    from model.runtime import load_compiled

    folder = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    q = quantize(folder, prepared_both, calibration=4, max_drop=1.0)  # any drop under a full point is fine here
    assert q.kept and [p.name for p in q.paths] == ["int8-128.onnx"] and set(q.drops) == {"crack", "taping"}
    assert read_card(folder).int8["int8"] == q.int8
    auto, _ = load_checkpoint(folder, "cpu", "auto", tmp_path / "cache")
    fp32, _ = load_checkpoint(folder, "cpu", "onnx", tmp_path / "cache")
    assert (auto.runtime, fp32.runtime) == ("onnx-int8", "onnx")
    assert load_compiled(folder, tmp_path / "cache", PROMPTS, 2).runtime == "onnx-int8"
    pixels = torch.rand(1, 3, 128, 128) * 255
    assert auto.predict_logits(pixels, PROMPTS).shape == fp32.predict_logits(pixels, PROMPTS).shape


def test_int8_graphs_that_cost_validation_miou_are_not_kept(tiny_checkpoint, prepared_both, tmp_path):
    import shutil

    from model.checkpoint import read_card
    from model.quantize import quantize

    folder = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    assert quantize(folder, prepared_both, calibration=4, max_drop=1.0).kept
    refused = quantize(folder, prepared_both, calibration=4, max_drop=-1.0)  # no drop is below -1: refused
    assert not refused.kept and not list(folder.glob("int8-*.onnx")) and read_card(folder).int8 == {}
    assert load_checkpoint(folder, "cpu", "auto", tmp_path / "cache")[0].runtime == "onnx"
    with pytest.raises(CheckpointError, match="model.runtime int8: .* has no INT8 graphs.*model quantize"):
        load_checkpoint(folder, "cpu", "int8", tmp_path / "cache")
