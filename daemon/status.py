"""`qa-daemon status`: whether a daemon runs on this store, its queue, its model, its recent failures.

Read from the store and the SQLite lock only, so it answers in a fraction of a second: this module
imports neither the model code nor the daemon's threads (a test checks that torch and OpenCV stay
unloaded).
"""

from __future__ import annotations

import time
from typing import Any

from daemon.config import Config
from daemon.days import today_start_utc
from daemon.store import Store, StoreLock, redact, sqlite_path


def stale_after(config: Config) -> float:
    """Seconds of silence after which a daemon sharing the store counts as dead."""
    return max(3 * config.watch.heartbeat_s, 30.0)


def status(config: Config) -> dict[str, Any]:
    """The daemon's state as `qa-daemon status --json` prints it."""
    store = Store.open_existing(config.store.url)
    try:
        counts = store.queue.counts(today_start_utc())
        failures = [{"at": f.at.isoformat(timespec="seconds"), "path": f.path, "stage": f.stage, "error": f.error,
                     "quarantined_to": f.quarantined_to} for f in store.queue.recent_failures(5)]
        active = store.models.active()
        seen = store.runs.daemons_seen(stale_after(config))
    finally:
        store.close()
    running = StoreLock(config.store.url).held_elsewhere() if sqlite_path(config.store.url) else bool(seen)
    paused = "; ".join(f"{worker}: {why}" if len(seen) > 1 else why for worker, why in seen if why) or None
    return {"running": running, "paused": paused if running else None, **counts,
            "model": active.name if active else config.model.checkpoint.name, "store": redact(config.store.url),
            "recent_failures": failures, "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
