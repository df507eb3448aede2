"""Several daemons on one PostgreSQL server and one watch folder: every photo is processed exactly once."""

from __future__ import annotations

import contextlib
import signal

import pytest

from tests.support.daemon import DaemonProcess, write_daemon_config
from tests.support.datasets import CRACKS, DRYWALL, need_shared, real_photos
from tests.support.photos import drop

pytestmark = pytest.mark.realdata


def test_two_daemons_sharing_a_server_and_a_folder_process_every_photo_once(tmp_path, pg_database,
                                                                             tiny_checkpoint):
    need_shared()
    config = write_daemon_config(tmp_path, {
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 2},
        "watch": {"roots": ["in"], "settle_s": 1.0, "heartbeat_s": 2},
        "store": {"url": pg_database},
    })
    with contextlib.ExitStack() as stack:  # no daemon left behind when the test fails half-way
        daemons = [stack.enter_context(DaemonProcess(tmp_path, config, f"daemon-{i}.log", server_url=pg_database))
                   for i in range(2)]
        for d in daemons:
            d.start()  # at the same moment: one creates the schema, the other waits for it
        run_both(daemons, tmp_path)


def run_both(daemons: list[DaemonProcess], tmp_path) -> None:
    first = daemons[0]

    def both_up() -> bool:
        for d in daemons:
            assert d.running(), f"{d.log.name} exited:\n{d.log_text()[-3000:]}"
        return all("qa-daemon started" in d.log_text() for d in daemons)

    first.wait_for("both daemons up", both_up)
    drop(real_photos(CRACKS / "train", 12), tmp_path / "in" / "tower-a" / "L1")
    drop(real_photos(DRYWALL / "train", 12), tmp_path / "in" / "tower-b" / "L1")
    first.wait_for("24 photos done", lambda: first.done() == 24)
    for d in daemons:  # both still running: nothing more may happen
        assert d.running()
    assert first.count("SELECT count(*) FROM photos") == 24
    assert first.count("SELECT count(*) FROM detections") == 48
    assert first.count("SELECT count(*) FROM files WHERE duplicate") == 0  # the same file seen twice is not a copy
    assert first.count("SELECT count(*) FROM failures") == 0
    for d in daemons:
        d.proc.send_signal(signal.SIGTERM)
    for d in daemons:
        assert d.proc.wait(timeout=60) == 0
        assert "Traceback" not in d.log_text()
    assert "password" not in (tmp_path / "daemon-0.log").read_text()
