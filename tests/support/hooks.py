"""Hooks into a real daemon process, so that a test can hold it at a chosen moment or inject a fault, rather
than race it: a `sitecustomize` module on the daemon's path, imported by its interpreter at start, that wraps
product code. Files in the daemon's home (its working directory) switch each hook on and off.

    install(d, HOLD_CLAIMS, HOLD_BATCH)   # before d.start()
    (d.home / "hold").touch()             # the processor now waits with its batch claimed (jobs `running`)

- HOLD_CLAIMS: while `hold-claims` exists, the processor waits before claiming; `claims-held.<pid>` exists while
  it waits, so photos queue up pending and a test knows the processor is ready to take them;
- HOLD_BATCH: while `hold` exists, the processor waits before processing the batch it claimed;
- CRASH_HEARTBEAT: once `crash-heartbeat` exists, the heartbeat thread dies of an exception (a bug);
- SHORT_BUSY_TIMEOUT: the store's SQLite busy timeout is 0.5 s instead of 30 s, so a lock held for a few seconds
  outlasts it.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.daemon import DaemonProcess

HOLD_CLAIMS = """
import os, time
from pathlib import Path
import daemon.store.queue

_claim = daemon.store.queue.Queue.claim


def _held_claim(self, *args, **kwargs):  # only the processor claims
    marker = Path(f"claims-held.{os.getpid()}")
    while Path("hold-claims").exists():
        marker.touch()
        time.sleep(0.05)
    marker.unlink(missing_ok=True)
    return _claim(self, *args, **kwargs)


daemon.store.queue.Queue.claim = _held_claim
"""

HOLD_BATCH = """
import time
from pathlib import Path
import daemon.process

_process = daemon.process.Processor.process


def _held_batch(self, jobs):
    while Path("hold").exists():
        time.sleep(0.05)
    return _process(self, jobs)


daemon.process.Processor.process = _held_batch
"""

CRASH_HEARTBEAT = """
import time
from pathlib import Path
import daemon.app

_run = daemon.app.Heartbeat.run


class _CrashingStop:  # the heartbeat's stop event, raising at its next wait once the file exists
    def __init__(self, event):
        self.event = event

    def wait(self, timeout):
        end = time.monotonic() + timeout
        while not Path("crash-heartbeat").exists():
            left = end - time.monotonic()
            if left <= 0 or self.event.wait(min(left, 0.05)):
                return self.event.is_set()
        raise RuntimeError("injected: a bug in the heartbeat")

    def is_set(self):
        return self.event.is_set()


def _crashing_run(self):
    self.stop_event = _CrashingStop(self.stop_event)
    return _run(self)


daemon.app.Heartbeat.run = _crashing_run
"""

SHORT_BUSY_TIMEOUT = """
import daemon.store
from sqlalchemy import event

_make_engine = daemon.store.make_engine


def _short_busy_timeout(*args, **kwargs):
    engine = _make_engine(*args, **kwargs)
    if engine.dialect.name == "sqlite":  # after the store's own set-up of each connection
        event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=500"))
    return engine


daemon.store.make_engine = _short_busy_timeout
"""


def install(d: DaemonProcess, *hooks: str) -> Path:
    """Put `hooks` on the path of `d`'s interpreter (from its next start); the sitecustomize file written."""
    folder = d.home / "hooks"
    folder.mkdir(exist_ok=True)
    path = folder / "sitecustomize.py"
    path.write_text("\n".join(hooks))
    if str(folder) not in d.env["PYTHONPATH"].split(":"):
        d.env["PYTHONPATH"] = f"{folder}:{d.env['PYTHONPATH']}"
    return path
