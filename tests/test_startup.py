"""Start-up: the daemon finds and records photos while its model loads, and processes them once it is ready.

A real `qa-daemon run` with the tiny model; its model loading is held at a gate that the test opens (a
`sitecustomize` on the daemon's path wraps `App.startup_model`), so what happens "while the model loads"
does not depend on how long loading takes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.support.daemon import STARTED, DaemonProcess, write_daemon_config
from tests.support.photos import photo_bytes, put, write_photo

# imported by the daemon's interpreter at start: model loading waits for the file named by QA_TEST_MODEL_GATE
GATE = """
import os, time
from pathlib import Path
import daemon.app

gate = Path(os.environ["QA_TEST_MODEL_GATE"])
load = daemon.app.App.startup_model


def held(self, *args, **kwargs):
    gate.with_name("model-waiting").touch()
    while not gate.exists():
        time.sleep(0.05)
    return load(self, *args, **kwargs)


daemon.app.App.startup_model = held
"""


def config(home: Path, checkpoint: Path) -> Path:
    return write_daemon_config(home, {
        "model": {"checkpoint": str(checkpoint), "device": "cpu", "batch_size": 4},
        "watch": {"roots": ["in"], "settle_s": 0.5, "heartbeat_s": 1},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "schedule": {"daily_report": None, "weekly_summary": None, "retrain_check_hours": None},
    })


def test_photos_waiting_at_start_or_dropped_while_the_model_loads_are_recorded_at_once_and_processed_when_it_is_ready(
        tmp_path, tiny_checkpoint, cli):
    waiting = write_photo(tmp_path / "in" / "tower-a" / "L1" / "waiting.jpg", (160, 120))
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "sitecustomize.py").write_text(GATE)
    gate = tmp_path / "model-gate"
    with DaemonProcess(tmp_path, config(tmp_path, tiny_checkpoint)) as d:
        d.env["PYTHONPATH"] = f"{tmp_path / 'hooks'}:{d.env['PYTHONPATH']}"
        d.env["QA_TEST_MODEL_GATE"] = str(gate)
        d.start()
        d.wait_for("the model loading to begin", lambda: gate.with_name("model-waiting").exists())
        dropped = put(photo_bytes((160, 120), seed=1), tmp_path / "in" / "tower-b" / "L2" / "dropped.jpg")
        d.wait_for("both photos recorded", lambda: d.count("SELECT count(*) FROM jobs") == 2, timeout=120)

        status = cli("-c", d.config, "status", "--json")
        assert status.code == 0, status.stderr
        state = json.loads(status.stdout)
        assert (state["running"], state["pending"], state["processed"]) == (True, 2, 0)
        assert STARTED not in d.log_text() and not gate.exists(), "recorded while the model was still loading"

        gate.touch()
        d.wait_for("both photos processed", lambda: d.done() == 2)
        assert d.count("SELECT count(*) FROM detections") == 4
        assert sorted(d.commits()) == ["dropped.jpg", "waiting.jpg"] and set(d.commits().values()) == {1}
        assert waiting.exists() and dropped.exists()  # no archive configured: the photos stay where they were
        assert d.terminate() == 0
    assert STARTED in d.log_text() and "Traceback" not in d.log_text()


def test_a_damaged_model_with_photos_waiting_stops_the_start_with_one_message_and_leaves_them_for_the_next(
        tmp_path, tiny_checkpoint, cli):
    waiting = write_photo(tmp_path / "in" / "tower-a" / "L1" / "waiting.jpg", (160, 120))
    bad = tmp_path / "damaged"
    shutil.copytree(tiny_checkpoint, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    result = cli("-c", config(tmp_path, bad), "run")
    assert result.code == 2
    assert "damaged" in result.stderr and str(bad) in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr
    assert waiting.exists(), "the photo waits where it was, for the next start"
    assert not (tmp_path / "quarantine").exists()
