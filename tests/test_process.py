"""Processing queued photos in-process with a tiny model: masks, measures, and failures that stay contained."""

from __future__ import annotations

import threading
import time
import zlib
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from daemon.config import Config, OutputsConfig, WatchConfig
from daemon.intake import identify
from daemon.process import Processor, decode
from daemon.store import Store
from model.segmenter import load_checkpoint


def photo(path: Path, size=(64, 48), orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    rng = np.random.default_rng(zlib.crc32(path.name.encode()) + size[0])
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).save(path, exif=exif.tobytes())
    return path


@pytest.fixture
def setup(tmp_path, tiny_checkpoint):
    root = tmp_path / "in"
    root.mkdir()
    config = Config(watch=WatchConfig(roots=[root], retry_backoff_s=0, max_attempts=2),
                    outputs=OutputsConfig(dir=tmp_path / "out", quarantine=tmp_path / "quarantine"))
    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    model, _ = load_checkpoint(tiny_checkpoint)
    version = store.register_model("tiny", tiny_checkpoint, "compact", "0" * 64, {})
    processor = Processor(config, threading.Event(), store, model, version, threading.Event(), [root])
    yield root, store, processor
    processor.pool.shutdown()
    store.close()


def queue(store: Store, root: Path, *files: Path) -> None:
    for f in files:
        store.add_photo(identify(f, root, ["site", "location"]))


def test_masks_have_the_displayed_size_of_the_source_and_values_0_255(setup):
    root, store, processor = setup
    queue(store, root, photo(root / "tower-a" / "L1" / "rotated.jpg", (64, 48), orientation=6))
    processor.process(store.claim(8, "t"))
    out = processor.config.outputs.dir / "tower-a" / datetime.now().strftime("%Y-%m-%d")
    for name in ("rotated__segment_crack.png", "rotated__segment_taping_area.png"):
        mask = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (64, 48) and set(np.unique(mask)) <= {0, 255}
    assert store.counts(datetime(2000, 1, 1))["processed"] == 1


def test_large_jpegs_are_decoded_small_without_losing_the_source_size(tmp_path):
    big = photo(tmp_path / "big.jpg", (4000, 3000))
    d = decode(big, 896)
    assert d.size == (4000, 3000) and max(d.rgb.shape[:2]) == 896 and d.rgb.shape[2] == 3


def test_a_photo_the_model_fails_on_fails_alone_and_the_rest_of_its_batch_is_done(setup, monkeypatch):
    root, store, processor = setup
    good = [photo(root / f"ok{i}.jpg") for i in range(3)]
    poison = photo(root / "poison.jpg", (90, 30))
    queue(store, root, *good, poison)
    real = processor.model.predict

    def predict(images, prompts):
        if any(im.shape[:2] == (30, 90) for im in images):
            raise RuntimeError("kernel failure")
        return real(images, prompts)

    monkeypatch.setattr(processor.model, "predict", predict)
    processor.process(store.claim(8, "t"))
    counts = store.counts(datetime(2000, 1, 1))
    assert (counts["processed"], counts["pending"]) == (3, 1)
    processor.process(store.claim(8, "t"))  # the second and last attempt: quarantined
    assert store.counts(datetime(2000, 1, 1))["failed"] == 1
    assert (processor.config.outputs.quarantine / "poison.jpg").is_file()


def test_photos_whose_share_is_unmounted_wait_without_using_up_their_attempts(setup, tmp_path):
    root, store, processor = setup
    queue(store, root, photo(root / "a.jpg"))
    root.rename(tmp_path / "unmounted")
    for _ in range(3):
        processor.process(store.claim(8, "t"))
    counts = store.counts(datetime(2000, 1, 1))
    assert (counts["pending"], counts["failed"]) == (1, 0)
    (tmp_path / "unmounted").rename(root)
    time.sleep(1.1)  # the retry is due a second later
    processor.process(store.claim(8, "t"))
    assert store.counts(datetime(2000, 1, 1))["processed"] == 1
