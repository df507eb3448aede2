"""The daemon: its threads, its queue and its shutdown, in one place.

    App(config).run()    # until SIGINT or SIGTERM

Threads, each taking the config and the one stop event:

    watcher    OS events (or polling) and rescans   -> candidate files, settling  (daemon/watcher.py, settle.py)
    intake     settled files: checks, sha256         -> photos + pending jobs in the store  (daemon/intake.py)
    processor  its own recovery at start, then pending jobs: segment, measure
                                                     -> detections + done, one transaction  (daemon/process.py)
    heartbeat  marks this daemon alive; one status line every watch.heartbeat_s
    take-over  shared stores only: a silent (dead) daemon's photos back to the queue
    scheduler  APScheduler: reports, retrain check, clean-up (daemon/schedule.py)

The queue is the store's `jobs` table, so it survives any crash: at start, jobs left
running go back to pending, and the first rescan finds files that arrived (or were
not yet recorded) while the daemon was down. `start()` goes lock, store, intake, watcher,
heartbeat (and take-over), model, processor, scheduler; `stop()` undoes that in reverse, letting
the processor finish the batch in hand. Loading the model is the slow part of a start (importing
torch and the model code, reading the checkpoint, one warm-up pass), so photos are found and
recorded meanwhile and the processor starts with its queue filled. Signals only set a flag the
main thread polls.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from daemon.config import Config, ConfigError, WatchConfig
from daemon.days import today_start_utc
from daemon.intake import IntakeWorker
from daemon.paths import present
from daemon.settle import Settler
from daemon.space import Space
from daemon.status import stale_after
from daemon.store import FailureStage, ModelVersion, Store, StoreLock, redact, sqlite_path, worker_name
from daemon.watcher import Watcher
from model.checkpoint import Card, read_card, weights_sha256
from model.errors import QAError

if TYPE_CHECKING:  # torch, OpenCV and the model code: `start()` imports them once intake and the watcher run
    from daemon.schedule import Scheduler
    from model.segmenter import Predictor

log = logging.getLogger("qa-daemon")
PUBLISH_S = 1.0  # the files not taken yet show in `qa-daemon status` this soon after they change
# libraries whose INFO lines are set-up chatter ("Will assume non-transactional DDL", "Added job", inotify
# watches, model downloads, graph passes): a command's log shows them only from WARNING
CHATTY = ("alembic", "apscheduler", "watchdog", "PIL", "transformers", "huggingface_hub", "httpx", "urllib3",
          "filelock", "onnx_ir", "onnxscript")


CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]} | {10: "\\n", 13: "\\r", 9: "\\t"}


class OneLine(logging.Formatter):
    """One log line per record: a file name with a newline in it cannot forge a line of the log."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = record.message.translate(CONTROL)
        return super().formatMessage(record)


def log_to_stderr() -> None:
    """The daemon's logging (`qa-daemon run`, `retrain`): INFO and up on stderr, one line per record
    (`OneLine`); the chatter of the libraries in `CHATTY` only from WARNING."""
    handler = logging.StreamHandler()  # sys.stderr
    handler.setFormatter(OneLine("%(asctime)s %(levelname)-7s %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in CHATTY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def pause_recorder(store: Store, worker: str, folder: Path):
    """What the daemon does when the outputs disk pauses work, or resumes it (`Space.on_change`): a pause
    is recorded once as a failure of stage `outputs`, and either shows in `qa-daemon status` at once
    rather than at the next heartbeat."""

    def on_change(paused: str | None, message: str) -> None:
        try:
            if paused is not None:
                store.queue.record_failure(folder, FailureStage.outputs, message, attempt=1, final=False)
        finally:
            with contextlib.suppress(SQLAlchemyError):  # the heartbeat tries again
                store.runs.beat(worker, paused)

    return on_change


def make_default_root(config: Config, roots: list[Path]) -> None:
    """On a first run, make the default watch root (`incoming` beside the config file) when it is one of
    `roots`, so that `qa-daemon run` on a fresh clone just works. Any other missing root is only reported:
    it may be a share not mounted yet, and a folder made in its place would hide that."""
    default = (config.source.parent / WatchConfig().roots[0]).absolute()
    if default in roots and not os.path.lexists(default):
        default.mkdir(exist_ok=True)
        log.info("made the watch folder %s; photos go in %s", default, default / "<site>" / "<location>")


class Heartbeat(threading.Thread):
    """Marks this daemon alive in the store and logs the queue's state every `watch.heartbeat_s`, so a
    silent daemon is visibly alive; publishes the files not taken yet (`Settler.snapshot()`) for `status`
    within `PUBLISH_S` of a change, as a heartbeat (a minute by default) would be too late to explain
    a file just dropped."""

    def __init__(self, config: Config, stop_event: threading.Event, store: Store, settler: Settler,
                 watcher: Watcher, space: Space, worker: str):
        super().__init__(name="heartbeat", daemon=True)
        self.config, self.stop_event, self.store, self.settler = config, stop_event, store, settler
        self.watcher, self.space, self.worker = watcher, space, worker
        self.written: dict | None = None  # the snapshot last published

    def run(self) -> None:
        period = self.config.watch.heartbeat_s
        last, published, beat_at = None, -1, time.monotonic() + period
        while not self.stop_event.wait(min(PUBLISH_S, period)):
            if self.settler.version != published:  # a cheap check; a write only after a change
                published = self.publish(published)
            if time.monotonic() >= beat_at:
                beat_at = time.monotonic() + period
                last = self.beat(last)

    def publish(self, published: int) -> int:
        """Write the settler's snapshot when it differs from the last one written (a photo taken within a
        second changes nothing); the version written (`published` again when the store failed)."""
        version = self.settler.version  # read first: a change during the snapshot is published next time
        snapshot = self.settler.snapshot()
        if snapshot == self.written:
            return version
        try:
            self.store.runs.publish_waiting(self.worker, snapshot)
        except Exception as exc:  # noqa: BLE001 - the next round tries again; the heartbeat warns of the store
            log.debug("heartbeat: files waiting not published (%s)", exc)
            return published
        self.written = snapshot
        return version

    def beat(self, last: int | None) -> int | None:
        """Mark this daemon alive and log one status line; the processed count (`last` when the store failed)."""
        try:
            self.store.runs.beat(self.worker, self.space.paused)
            c = self.store.queue.counts(today_start_utc())
        except Exception as exc:  # noqa: BLE001 - a heartbeat reports trouble, it never dies of it
            log.warning("heartbeat: store not readable (%s)", exc)
            return last
        files = self.settler.snapshot(limit=0)
        since = f" (+{c['processed'] - last})" if last is not None else ""
        trouble = (f", roots missing: {len(self.watcher.missing)}" if self.watcher.missing else "") + (
            f", vanished files: {c['missing']}" if c["missing"] else "") + (
            f", PAUSED: {self.space.paused}" if self.space.paused else "")
        log.info("heartbeat: %d processed%s, %d pending, %d settling, %d waiting, %d failed, %d duplicates%s",
                 c["processed"], since, c["pending"], files["settling"], files["waiting"], c["failed"],
                 c["duplicates"], trouble)
        return c["processed"]


class TakeOver(threading.Thread):
    """On a shared store (PostgreSQL): every `watch.heartbeat_s`, the photos held by a daemon silent for
    `stale_s` (it died) go back to the queue for any daemon to take."""

    def __init__(self, config: Config, stop_event: threading.Event, store: Store, stale_s: float):
        super().__init__(name="take-over", daemon=True)
        self.config, self.stop_event, self.store, self.stale_s = config, stop_event, store, stale_s

    def run(self) -> None:
        while not self.stop_event.wait(self.config.watch.heartbeat_s):
            try:
                requeued, _ = self.store.queue.take_over(self.config.watch.max_attempts, self.stale_s)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("take-over: store not available (%s)", exc)
                continue
            if requeued:
                log.warning("%d photos in hand of a daemon silent for %.0f s are queued again", requeued, self.stale_s)


class App:
    """Starts the daemon's parts in order and stops them in reverse."""

    def __init__(self, config: Config):
        self.config = config
        self.stop_event = threading.Event()
        self.work_ready = threading.Event()
        self.lock = StoreLock(config.store.url)
        self.exclusive = sqlite_path(config.store.url) is not None
        self.stale_s = stale_after(config)
        self.worker = worker_name()
        self.store: Store | None = None
        self.threads: list[threading.Thread] = []
        self.watcher: Watcher | None = None
        self.scheduler: Scheduler | None = None

    def start(self) -> None:
        config = self.config
        roots = [r.absolute() for r in config.watch.roots]
        make_default_root(config, roots)
        if not any(present(r) for r in roots):
            raise ConfigError(f"{config.source}: watch.roots: none of {', '.join(map(str, roots))} exists; "
                              "create the folder, fix the path, or pass --watch DIR")
        card = read_card(config.model.checkpoint)  # a missing checkpoint stops the start before anything runs
        self.lock.acquire()
        self.store = Store.from_config(config.store)
        self.store.runs.beat(self.worker)
        if self.exclusive:
            self.store.runs.leave_others(self.worker)
        space = Space(config.outputs.dir, config.outputs.min_free_mb,
                      pause_recorder(self.store, self.worker, config.outputs.dir))
        settler = Settler(config.watch.settle_s, config.watch.retry_backoff_s, config.watch.max_attempts,
                          config.watch.incomplete_after_s)
        intake = IntakeWorker(config, self.stop_event, self.store, settler, self.work_ready, space)
        self.watcher = Watcher(config, self.stop_event, self.store, settler)
        heartbeat = Heartbeat(config, self.stop_event, self.store, settler, self.watcher, space, self.worker)
        self.threads = [intake, self.watcher, heartbeat]
        if not self.exclusive:
            self.threads.append(TakeOver(config, self.stop_event, self.store, self.stale_s))
        for t in self.threads:
            t.start()
        log.info("watching %s; loading the model", ", ".join(map(str, roots)))

        version, model = self.startup_model(card)  # seconds: the start-up rescan and intake run meanwhile
        from daemon.process import Processor
        from daemon.schedule import Scheduler

        # alone on a SQLite file every running job is ours to requeue; on a shared server, only a silent daemon's
        processor = Processor(config, self.stop_event, self.store, model, version.id, self.work_ready, roots, space,
                              recover_stale_s=None if self.exclusive else self.stale_s)
        self.threads.append(processor)
        processor.start()
        self.scheduler = Scheduler(config, self.store)
        self.scheduler.start()
        log.info("qa-daemon started: model %s (%s, input %d, %s, %s runtime), watching %s (%s), store %s, "
                 "outputs %s", version.name, version.backend, model.input_size, model.device, model.runtime,
                 ", ".join(map(str, roots)), "polling" if config.watch.polling else "events",
                 redact(config.store.url), config.outputs.dir)

    def startup_model(self, card: Card) -> tuple[ModelVersion, Predictor]:
        """The store's active model version, loaded and warmed up (`card`: the configured checkpoint's). A
        promoted version that cannot be loaded is marked rejected and the configured checkpoint runs instead; a
        configured checkpoint that cannot be loaded is the user's to fix (one clear error, exit 2)."""
        from daemon.process import load_warm  # the first import of torch and the model code

        config, store = self.config, self.store
        configured = config.model.checkpoint
        digest = weights_sha256(configured)
        version = store.models.startup(configured, card.backend, digest, asdict(card))
        if Path(version.path) != configured:
            log.info("model version %s was promoted since %s; running it (`qa-daemon model list`)",
                     version.name, configured)
            try:
                return version, load_warm(Path(version.path), config.model.device, config)
            except (QAError, OSError, RuntimeError) as exc:
                log.error("model version %s cannot be loaded (%s); it is marked rejected and %s runs instead; "
                          "fix it and `qa-daemon model promote` it again", version.name, exc, configured)
                store.models.reject(version.id, keep_id=None)
                version = store.models.startup(configured, card.backend, digest, asdict(card))
        return version, load_warm(configured, config.model.device, config)

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        self.stop_event.set()
        self.work_ready.set()
        if self.watcher is not None and self.watcher.is_alive():
            self.watcher.stop()
        for t in reversed(self.threads):
            if t.is_alive():
                t.join()
        if self.store is not None:
            with contextlib.suppress(Exception):  # the store may be what failed
                self.store.runs.leave(self.worker)
            self.store.close()
        self.lock.release()

    def run(self) -> int:
        """Run until SIGINT/SIGTERM (0) or until a thread dies of a bug (1: let a supervisor restart us)."""
        # the handler only sets a flag: Event.set() from a signal handler deadlocks when the signal lands
        # while this thread holds the event's lock inside Event.wait()
        signalled = []
        previous = {sig: signal.signal(sig, lambda *_: signalled.append(1))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            self.start()
            while not signalled:
                time.sleep(0.2)
                dead = [t.name for t in self.threads if not t.is_alive()]
                if dead:
                    log.error("thread %s stopped unexpectedly; shutting down (queued work resumes at restart)",
                              ", ".join(dead))
                    code = 1
                    break
            log.info("stopping: finishing the photos in hand")
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stopped")
        return code
