"""The processor in-process, on a temporary folder with the tiny model: no daemon, no watcher, no threads
of its own but its pool. `setup` gives (watch root, store, processor); `queue` records photos as intake does."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest


@pytest.fixture
def setup(tmp_path, tiny_checkpoint):
    from daemon.app import pause_recorder
    from daemon.config import Config, OutputsConfig, WatchConfig
    from daemon.process import Processor
    from daemon.space import Space
    from daemon.store import Store
    from model.checkpoint import load_checkpoint

    root = tmp_path / "in"
    root.mkdir()
    config = Config(watch=WatchConfig(roots=[root], retry_backoff_s=0, max_attempts=2),
                    outputs=OutputsConfig(dir=tmp_path / "out", quarantine=tmp_path / "quarantine"))
    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    model, _ = load_checkpoint(tiny_checkpoint)
    version = store.models.register("tiny", tiny_checkpoint, "compact", "0" * 64, {})
    space = Space(config.outputs.dir, 0, pause_recorder(store, "t", config.outputs.dir), check_s=0)
    processor = Processor(config, threading.Event(), store, model, version, threading.Event(), [root], space)
    yield root, store, processor
    processor.pool.shutdown()
    store.close()


def queue(store, root: Path, *files: Path) -> None:
    """Record `files` (under `root`, laid out site/location) in the queue, as intake does."""
    from daemon.intake import identify, record

    for f in files:
        record(store, identify(f, root, ["site", "location"]))
