"""Finding photos: OS file events (or polling, for network shares), and full rescans.

Events are fast but can be missed (network and container mounts deliver none, and
nothing is delivered while the daemon is down), so the roots are also walked at
start and every `watch.rescan_interval_s`. A rescan skips files already taken
(same path, size and mtime) without reading them. Everything found goes to the
`Settler`, which decides when a file is complete; with OS events, a file its writer
closed or that was renamed into place is offered as complete, and taken without
waiting `watch.settle_s`.

A root that disappears (an unmounted share) is reported once and watched for; it
is never taken to mean that its photos were deleted. Photos whose files vanished before they were
processed are looked for at every check, and taken again when they are back.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from daemon.config import Config
from daemon.paths import hidden_dir, inside, is_photo, present
from daemon.settle import Settler
from daemon.store import Store

log = logging.getLogger("qa-daemon")


class _Events(FileSystemEventHandler):
    def __init__(self, watcher: Watcher, root: Path):
        self.watcher, self.root = watcher, root

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in ("created", "modified", "moved", "closed"):
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        if not path:  # moved out of the roots: full inotify events name no destination
            return
        # closed by its writer, or renamed into place (complete by construction): ready without settling, while
        # unchanged. Polling compares snapshots, so it never knows that a writer is done.
        complete = event.event_type in ("closed", "moved") and not self.watcher.config.watch.polling
        self.watcher.consider(Path(os.fsdecode(path)), self.root, complete)


def native_observer() -> BaseObserver:
    """The platform's event observer. On Linux with full move events: a file renamed in from outside the roots
    (an upload tool's temporary folder) is then reported as moved, complete, rather than as created."""
    if "generate_full_events" in inspect.signature(Observer).parameters:
        return Observer(generate_full_events=True)
    return Observer()


class Watcher(threading.Thread):
    """Watches `roots` (events or polling) and rescans them; hands candidate files to the settler."""

    def __init__(self, config: Config, stop_event: threading.Event, store: Store, settler: Settler):
        super().__init__(name="watcher", daemon=True)
        self.config, self.stop_event, self.store, self.settler = config, stop_event, store, settler
        self.roots = [r.absolute() for r in config.watch.roots]
        # the daemon's own folders may sit inside a root; what it writes there is never a new photo
        self.excluded = [p.absolute() for p in (config.outputs.dir, config.outputs.archive,
                                                config.outputs.quarantine, config.schedule.reports_dir) if p]
        self.observer: BaseObserver = (PollingObserver(timeout=config.watch.poll_interval_s)
                                       if config.watch.polling else native_observer())
        self.watches: dict[Path, ObservedWatch] = {}
        self.missing: set[Path] = set()
        self.identity: dict[Path, tuple[int, int]] = {}  # (device, inode) of each root when it was scheduled
        self.last_rescan = 0.0

    def run(self) -> None:
        self.observer.start()
        period = min(self.config.watch.poll_interval_s, self.config.watch.rescan_interval_s, 5.0)
        first = True
        while first or not self.stop_event.wait(period):
            try:
                if self.check_roots() or first or \
                        time.monotonic() - self.last_rescan >= self.config.watch.rescan_interval_s:
                    self.rescan()
                self.look_for_missing()
            except Exception:  # noqa: BLE001 - a failing share or store must not stop the watching
                log.exception("watching failed for now; trying again in %.0f s", period)
            first = False

    def stop(self) -> None:
        self.observer.stop()
        # a start that fails at once stops the watcher before its thread has started the observer: nothing to
        # join then, and an observer started after this stop ends at once
        if self.observer.ident is not None:
            self.observer.join(timeout=10)

    def consider(self, path: Path, root: Path, complete: bool = False) -> None:
        """Offer `path` to the settler if it is a photo name outside the daemon's own folders; `complete`: the OS
        reported its writer done."""
        if not is_photo(path) or any(hidden_dir(p) for p in path.relative_to(root).parts[:-1]):
            return
        if any(inside(path, folder) for folder in self.excluded if inside(folder, root)):
            return
        if not inside(path, root):  # the file, or a folder on its way, links outside the root
            log.debug("%s: reached through a link pointing outside %s; not followed", path, root)
            return
        self.settler.offer(path, root, complete)

    def check_roots(self) -> bool:
        """Start watching roots that are present, report those that vanished; True when one came back."""
        came_back = False
        for root in self.roots:
            here = present(root)
            if here and root in self.watches and self._identity(root) != self.identity.get(root):
                # removed and made again between two checks: the old event watch is dead
                self._unschedule(root)
                came_back = True
            if not here and root not in self.missing:
                self.missing.add(root)
                log.warning("watch root %s is missing (unmounted share?); photos already recorded are kept, "
                            "and it is watched for", root)
                self._unschedule(root)
            elif here and root in self.missing:
                self.missing.discard(root)
                log.info("watch root %s is back; rescanning it", root)
                came_back = True
            if here and root not in self.watches:
                try:
                    self.identity[root] = self._identity(root)
                    self.watches[root] = self.observer.schedule(_Events(self, root), str(root), recursive=True)
                except OSError as exc:  # e.g. the inotify watch limit; the periodic rescan still finds photos
                    log.warning("cannot watch %s for events (%s); relying on rescans every %.0f s", root, exc,
                                self.config.watch.rescan_interval_s)
        return came_back

    @staticmethod
    def _identity(root: Path) -> tuple[int, int]:
        try:
            st = root.stat()
        except OSError:
            return (-1, -1)
        return (st.st_dev, st.st_ino)

    def _unschedule(self, root: Path) -> None:
        watch = self.watches.pop(root, None)
        if watch is not None:
            with contextlib.suppress(KeyError, OSError):  # the emitter may have stopped with its folder
                self.observer.unschedule(watch)

    def look_for_missing(self) -> None:
        """Offer the files of photos that vanished before processing, once they are back (a share that was
        away for less than a check period looks the same before and after, so no rescan notices it)."""
        for path in self.store.queue.missing_files():
            root = next((r for r in self.roots if path.is_relative_to(r)), None)
            with contextlib.suppress(OSError):
                if root is not None and path.is_file():
                    self.consider(path, root)

    def rescan(self) -> int:
        """Walk every present root; offer each photo file not taken before. The number offered."""
        self.last_rescan = time.monotonic()
        known = self.store.queue.known_files()
        offered = 0
        for root in self.roots:
            if not present(root):
                continue
            for folder, dirs, files in os.walk(root, followlinks=False):
                here = Path(folder)
                dirs[:] = [d for d in dirs if not hidden_dir(d) and here / d not in self.excluded]
                for name in files:
                    path = here / name
                    if not is_photo(path):
                        continue
                    try:
                        st = path.stat()
                    except OSError:
                        continue
                    if (str(path), st.st_size, st.st_mtime_ns) not in known:
                        self.consider(path, root)
                        offered += 1
        if offered:
            log.info("rescan: %d new files to check", offered)
        return offered
