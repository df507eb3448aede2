"""A real `qa-daemon run` child process, for the tests and the benchmarks (bench/daemon.py, bench/soak.py).

    with DaemonProcess(home, write_daemon_config(home, {...})) as d:
        d.start()                                   # or d.start(wait=True): until "qa-daemon started"
        d.wait_for("3 photos done", lambda: d.done() == 3)
        assert d.terminate() == 0                   # SIGTERM; d.kill() for SIGKILL

It runs `python -m daemon -c CONFIG run` in `home` with this checkout on PYTHONPATH, its output in a log
file in `home` ("daemon.log", appended to by every run; a name with "{run}" gives each run its own). The
store is read as an analyst would: plain sqlite3 on `home/qa.sqlite3`, or SQLAlchemy on `server_url`.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
STARTED = "qa-daemon started"
COMMIT_LINE = re.compile(r" INFO +(.+?)  site=")  # the per-photo line: "<name>  site=<site>/<location>  ..."


class DaemonError(AssertionError):
    """The daemon exited, or did not get where it was awaited in time (an AssertionError: a test failure)."""


def write_daemon_config(home: Path, settings: dict, name: str = "config.yaml") -> Path:
    """`settings` as home/`name`; the watch roots named in it are made (relative ones under `home`)."""
    for root in settings.get("watch", {}).get("roots", []):
        (home / root).mkdir(parents=True, exist_ok=True)
    path = home / name
    path.write_text(yaml.safe_dump(settings))
    return path


class PeakMemory(threading.Thread):
    """The peak resident memory of a process, sampled every 0.1 s until `stop` is set or it exits."""

    def __init__(self, pid: int):
        import psutil

        super().__init__(daemon=True)
        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.wait(0.1):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return


class DaemonProcess:
    """One daemon, started and stopped as often as a test or benchmark needs.

    `precompiled`: bytecode compiled once into home/pycache and reused, as `uv sync --compile-bytecode`
    installs it (a restart takes about 10 s rather than 28 s). `track_memory`: `peak_rss` over all runs.
    `closing`, once set, refuses new starts and ends a start being waited for. `args`: options of `run`
    (`--polling`, ...).
    """

    def __init__(self, home: Path, config: Path, log: str = "daemon.log", *, server_url: str | None = None,
                 precompiled: bool = False, track_memory: bool = False, args: tuple[str, ...] = ()):
        self.home, self.config, self.db, self.args = home, config, home / "qa.sqlite3", args
        self.log_name, self.server_url, self.track_memory = log, server_url, track_memory
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        if precompiled:
            self.env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
            self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []
        self.startups: list[float] = []  # seconds from each awaited start to its "qa-daemon started"
        self.closing = threading.Event()
        self._memory: PeakMemory | None = None
        self._peak = 0
        self._engine = None

    # ---- the process -------------------------------------------------------------------------------
    @property
    def log(self) -> Path:
        """The current (or next) run's log file."""
        return self.logs[-1] if self.logs else self.home / self.log_name.format(run=1)

    def start(self, wait: bool = False, timeout: float = 300) -> None:
        """Start the daemon; with `wait`, until its "qa-daemon started" line (DaemonError, and the process
        killed, when it exits first, `timeout` passes or `closing` is set)."""
        if self.closing.is_set():
            raise DaemonError("not started: closing")
        log = self.home / self.log_name.format(run=len(self.logs) + 1)
        if log not in self.logs:
            self.logs.append(log)
        runs_before = self.log_text().count(STARTED)
        begin = time.monotonic()
        with log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "-c", str(self.config), "run", *self.args],
                                         cwd=self.home, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        if self.track_memory:
            self._memory = PeakMemory(self.proc.pid)
            self._memory.start()
        if not wait:
            return
        while self.log_text().count(STARTED) <= runs_before:
            if self.proc.poll() is not None or time.monotonic() - begin > timeout or self.closing.is_set():
                self.kill()
                raise DaemonError(f"the daemon did not start ({log.name}): {' | '.join(self.tail(3))}")
            time.sleep(0.2)
        self.startups.append(time.monotonic() - begin)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int | None:
        """SIGKILL (when running) and its exit code."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
        return self._reap()

    def terminate(self, timeout: float = 60) -> int | None:
        """SIGTERM and its exit code; SIGKILL after `timeout` s (then -9)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self._reap()

    def _reap(self) -> int | None:
        code = self.proc.wait() if self.proc is not None else None
        if self._memory is not None:
            self._memory.stop.set()
            self._peak = max(self._peak, self._memory.peak)
        return code

    @property
    def peak_rss(self) -> int:
        """Bytes; over every run (with `track_memory`)."""
        return max(self._peak, self._memory.peak if self._memory is not None else 0)

    def close(self) -> None:
        """Kill a daemon left running (a test failed half-way) and let go of the store."""
        self.kill()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- its log -----------------------------------------------------------------------------------
    def log_text(self) -> str:
        """The current run's log ("" before the first start)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> list[str]:
        return self.log_text().strip().splitlines()[-lines:]

    def commits(self) -> Counter:
        """How many times each photo's results were committed, from the per-photo lines of all its logs."""
        return Counter(m.group(1) for log in self.logs if log.exists()
                       for m in COMMIT_LINE.finditer(log.read_text(errors="replace")))

    # ---- waiting -----------------------------------------------------------------------------------
    def wait_for(self, what: str, check, timeout: float = 240) -> None:
        """Poll `check()` until it is true; DaemonError when the daemon exits or `timeout` passes first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if check():
                return
            if not self.running():
                code = None if self.proc is None else self.proc.returncode
                raise DaemonError(f"daemon exited ({code}) while waiting for {what}:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        raise DaemonError(f"timed out waiting for {what}:\n{self.log_text()[-3000:]}")

    def wait_started(self, timeout: float = 240) -> None:
        """Until this run's log holds "qa-daemon started"."""
        self.wait_for("the daemon to start", lambda: STARTED in self.log_text(), timeout)

    # ---- its store ---------------------------------------------------------------------------------
    def query(self, sql: str) -> list[tuple]:
        """Rows of `sql` on the store; [] while its tables do not exist yet. Any other error is raised: a
        broken query must fail the test, not read as "no rows"."""
        if self.server_url is not None:
            return self._server_query(sql)
        if not self.db.exists():
            return []
        con = sqlite3.connect(self.db, timeout=30)
        try:
            return con.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return []
        finally:
            con.close()

    def _server_query(self, sql: str) -> list[tuple]:
        from psycopg.errors import UndefinedTable
        from sqlalchemy import text
        from sqlalchemy.exc import ProgrammingError

        try:
            with self.engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql))]
        except ProgrammingError as exc:
            if not isinstance(exc.orig, UndefinedTable):
                raise
            return []

    @property
    def engine(self):
        """The SQLAlchemy engine on `server_url`."""
        if self._engine is None:
            from sqlalchemy import create_engine

            self._engine = create_engine(self.server_url)
        return self._engine

    def count(self, sql: str) -> int:
        rows = self.query(sql)
        return rows[0][0] if rows else 0

    def done(self) -> int:
        return self.count("SELECT count(*) FROM jobs WHERE status = 'done'")
