"""Several daemons on one PostgreSQL server and one watch folder: every photo is processed exactly once."""

from __future__ import annotations

import signal

import pytest
import yaml
from sqlalchemy import create_engine, text

from tests.conftest import CRACKS, DRYWALL, need_shared
from tests.test_daemon import Daemon, drop, photos

pytestmark = pytest.mark.realdata


class ServerDaemon(Daemon):
    """A daemon whose store is a database server, read with SQLAlchemy as an analyst would."""

    def __init__(self, home, config, url: str, log_name: str):
        super().__init__(home, config)
        self.engine = create_engine(url)
        self.log = home / log_name

    def query(self, sql: str) -> list[tuple]:
        try:
            with self.engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql))]
        except Exception:  # noqa: BLE001 - tables not created yet
            return []


def test_two_daemons_sharing_a_server_and_a_folder_process_every_photo_once(tmp_path, pg_database,
                                                                             tiny_checkpoint):
    need_shared()
    (tmp_path / "in").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "batch_size": 2},
        "watch": {"roots": ["in"], "settle_s": 1.0, "heartbeat_s": 2},
        "store": {"url": pg_database},
    }))
    daemons = [ServerDaemon(tmp_path, config, pg_database, f"daemon-{i}.log") for i in range(2)]
    try:
        for d in daemons:
            d.start()  # at the same moment: one creates the schema, the other waits for it
        run_both(daemons, tmp_path)
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.proc.kill()
            d.engine.dispose()


def run_both(daemons: list[ServerDaemon], tmp_path) -> None:
    first = daemons[0]

    def both_up() -> bool:
        for d in daemons:
            assert d.proc.poll() is None, f"{d.log.name} exited:\n{d.log.read_text()[-3000:]}"
        return all(d.log.exists() and "qa-daemon started" in d.log.read_text() for d in daemons)

    first.wait_for("both daemons up", both_up)
    drop(photos(CRACKS / "train", 12), tmp_path / "in" / "tower-a" / "L1")
    drop(photos(DRYWALL / "train", 12), tmp_path / "in" / "tower-b" / "L1")
    first.wait_for("24 photos done", lambda: first.done() == 24)
    for d in daemons:  # both still running: nothing more may happen
        assert d.proc.poll() is None
    assert first.count("SELECT count(*) FROM photos") == 24
    assert first.count("SELECT count(*) FROM detections") == 48
    assert first.count("SELECT count(*) FROM files WHERE duplicate") == 0  # the same file seen twice is not a copy
    assert first.count("SELECT count(*) FROM failures") == 0
    for d in daemons:
        d.proc.send_signal(signal.SIGTERM)
    for d in daemons:
        assert d.proc.wait(timeout=60) == 0
        assert "Traceback" not in d.log.read_text()
    assert "password" not in (tmp_path / "daemon-0.log").read_text()
