"""`qa-daemon status`: whether a daemon runs on this store, its queue, the files it has seen but not
taken yet (settling, or waiting: found incomplete and retried), its model, its recent failures.

Read from the store and the SQLite lock only, so it answers in a fraction of a second: this module
imports neither the model code nor the daemon's threads (a test checks that torch and OpenCV stay
unloaded).
"""

from __future__ import annotations

import time
from typing import Any

from daemon.config import Config
from daemon.days import today_start_utc
from daemon.settle import SNAPSHOT_FILES
from daemon.store import Store, StoreLock, redact, sqlite_path


def stale_after(config: Config) -> float:
    """Seconds of silence after which a daemon sharing the store counts as dead."""
    return max(3 * config.watch.heartbeat_s, 30.0)


def status(config: Config) -> dict[str, Any]:
    """The daemon's state as `qa-daemon status --json` prints it."""
    store = Store.from_config(config.store, create=False)
    try:
        counts = store.queue.counts(today_start_utc())
        failures = [{"at": f.at.isoformat(timespec="seconds"), "path": f.path, "stage": f.stage, "error": f.error,
                     "quarantined_to": f.quarantined_to} for f in store.queue.recent_failures(5)]
        active = store.models.active()
        seen = store.runs.daemons_seen(stale_after(config))
        snapshots = store.runs.waiting_seen(stale_after(config))
        scrubbed = store.runs.last_finished("scrub")
    finally:
        store.close()
    running = StoreLock(config.store.url).held_elsewhere() if sqlite_path(config.store.url) else bool(seen)
    paused = "; ".join(f"{worker}: {why}" if len(seen) > 1 else why for worker, why in seen if why) or None
    return {"running": running, "paused": paused if running else None, **counts,
            **not_taken(snapshots if running else []),
            "model": active.name if active else config.model.checkpoint.name, "store": redact(config.store.url),
            "last_scrub": {"at": scrubbed.finished_at.isoformat(timespec="seconds") + "Z", "outcome": scrubbed.outcome}
            if scrubbed else None,
            "recent_failures": failures, "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def not_taken(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The files the running daemons have seen but not taken yet (their `Settler.snapshot()`s, summed):
    `settling` and `waiting` counts and `waiting_files`, waiting ones first (each daemon lists at most
    SNAPSHOT_FILES, so the counts may be more than the files listed)."""
    files = [f for snap in snapshots for f in snap["files"]]
    files.sort(key=lambda f: (f["state"] != "waiting", f["since"]))
    return {"settling": sum(s["settling"] for s in snapshots), "waiting": sum(s["waiting"] for s in snapshots),
            "waiting_files": [{**f, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(f["since"]))}
                              for f in files[:SNAPSHOT_FILES]]}
