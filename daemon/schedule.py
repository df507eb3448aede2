"""Scheduled work inside the daemon (APScheduler 3): reports, the retrain check, clean-up of old outputs, the scrub.

    scheduler = Scheduler(config, store)
    scheduler.start()   # also renders a daily or weekly report missed while the daemon was down
    scheduler.stop()

Jobs come from `config.yaml`'s `schedule:` section: the daily report (cron, local time),
the weekly summary, the retrain check (interval), the daily retention clean-up and the weekly
scrub (daemon/scrub.py), plus a quick scrub of the last `scrub_startup_days` at start. Every
run is claimed first as a (job, slot) row in the store, so a slot runs once even when two
processes share a store, and a report missed while the daemon was down is still owed.
`coalesce` folds a backlog of missed runs into one; `misfire_grace_time` lets a run that
is late (a busy machine, a suspended laptop) still happen.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon import retrain
from daemon.config import WEEKDAYS, Config, clock
from daemon.days import week_start
from daemon.scrub import logged, scrub
from daemon.store import Store, worker_name
from daemon.store.schema import utcnow
from daemon.summary import write_report

log = logging.getLogger("qa-daemon")


def clean_outputs(config: Config, today: date, store: Store | None = None) -> int:
    """Delete output day folders older than `retention_days`, then the oldest ones beyond
    `retention_max_gb`; database rows stay, marked in `store` so the scrub knows the files went on
    purpose. The number of day folders deleted."""
    s = config.schedule

    def remove(folder: Path) -> None:
        if store is not None:  # marked first: a crash in between must not make the scrub report them lost
            store.queue.outputs_removed(folder)
        shutil.rmtree(folder, ignore_errors=True)

    days = sorted((p for p in config.outputs.dir.glob("*/*") if p.is_dir() and _is_day(p.name)),
                  key=lambda p: p.name)
    deleted = 0
    if s.retention_days is not None:
        cutoff = (today - timedelta(days=s.retention_days)).isoformat()
        for folder in [d for d in days if d.name < cutoff]:
            remove(folder)
            days.remove(folder)
            deleted += 1
    if s.retention_max_gb is not None:
        sizes = {d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in days}
        budget, total = s.retention_max_gb * 2**30, sum(sizes.values())
        for folder in days:  # oldest first
            if total <= budget:
                break
            remove(folder)
            total -= sizes[folder]
            deleted += 1
    return deleted


def _is_day(name: str) -> bool:
    try:
        date.fromisoformat(name)
        return True
    except ValueError:
        return False


class Scheduler:
    """The daemon's APScheduler, with every run claimed once per slot in the store."""

    def __init__(self, config: Config, store: Store):
        self.config, self.store, self.worker = config, store, worker_name()
        self.zone = config.schedule.zone()
        self.aps = BackgroundScheduler(timezone=self.zone, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 6 * 3600})

    def start(self) -> None:
        s = self.config.schedule
        if s.daily_report:
            h, m, sec = clock(s.daily_report)
            self.aps.add_job(self.daily_report, CronTrigger(hour=h, minute=m, second=sec, timezone=self.zone),
                             id="daily_report")
        if s.weekly_summary:
            day, _, at = s.weekly_summary.partition(" ")
            h, m, sec = clock(at)
            self.aps.add_job(self.weekly_summary, CronTrigger(day_of_week=day.lower(), hour=h, minute=m, second=sec,
                                                              timezone=self.zone), id="weekly_summary")
        if s.retrain_check_hours:
            self.aps.add_job(self.retrain_check, IntervalTrigger(seconds=s.retrain_check_hours * 3600),
                             id="retrain_check", next_run_time=datetime.now(self.zone))
        if s.retention_days or s.retention_max_gb:
            h, m, sec = clock(s.retention_at)
            self.aps.add_job(self.retention, CronTrigger(hour=h, minute=m, second=sec, timezone=self.zone),
                             id="retention")
        if s.scrub:
            day, _, at = s.scrub.partition(" ")
            h, m, sec = clock(at)
            self.aps.add_job(self.weekly_scrub, CronTrigger(day_of_week=day.lower(), hour=h, minute=m, second=sec,
                                                            timezone=self.zone), id="scrub")
        if s.scrub_startup_days:  # results a power cut or a sync tool damaged while the daemon was down
            self.aps.add_job(self.startup_scrub, id="startup-scrub")
        for job, when in self.missed():
            self.aps.add_job(job, args=[when], id=f"catch-up-{job.__name__}")
        self.aps.start()

    def stop(self) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=True)

    def missed(self) -> list[tuple[Callable, date]]:
        """Reports whose last due time passed while no process ran them."""
        now, s, out = datetime.now(self.zone), self.config.schedule, []
        if s.daily_report:
            h, m, sec = clock(s.daily_report)
            due = now.replace(hour=h, minute=m, second=sec, microsecond=0)
            day = (due if due <= now else due - timedelta(days=1)).date()
            if not self.store.runs.has_run("daily_report", day.isoformat()):
                out.append((self.daily_report, day))
        if s.weekly_summary:
            dow, _, at = s.weekly_summary.partition(" ")
            h, m, sec = clock(at)
            due = now.replace(hour=h, minute=m, second=sec, microsecond=0)
            due -= timedelta(days=(now.weekday() - WEEKDAYS.index(dow.lower())) % 7)
            if due > now:
                due -= timedelta(days=7)
            if not self.store.runs.has_run("weekly_summary", self._week_of(due.date()).isoformat()):
                out.append((self.weekly_summary, due.date()))
        return out

    def once(self, job: str, slot: str, work: Callable[[], str]) -> bool:
        """Run `work` if this process claims (job, slot); the store records the outcome."""
        if not self.store.runs.claim(job, slot, self.worker):
            return False
        start = time.monotonic()
        try:
            outcome = work()
        except Exception as exc:  # noqa: BLE001 - a failed job is logged and recorded; the daemon goes on
            log.exception("%s for %s failed", job, slot)
            outcome = f"failed: {exc!r}"
        self.store.runs.finish(job, slot, outcome)
        log.info("%s for %s: %s (%.1f s)", job, slot, outcome, time.monotonic() - start)
        return True

    def daily_report(self, day: date | None = None) -> None:
        day = day or datetime.now(self.zone).date()
        self.once("daily_report", day.isoformat(),
                  lambda: str(write_report(self.store, "daily", day, day, self.config.schedule.reports_dir)))

    @staticmethod
    def _week_of(day: date) -> date:
        """The Monday of the week before the one `day` is in: the week a summary made on `day` covers."""
        return week_start(day) - timedelta(days=7)

    def weekly_summary(self, day: date | None = None) -> None:
        start = self._week_of(day or datetime.now(self.zone).date())
        self.once("weekly_summary", start.isoformat(),
                  lambda: str(write_report(self.store, "weekly", start, start + timedelta(days=6),
                                           self.config.schedule.reports_dir)))

    def retrain_check(self) -> None:
        period = self.config.schedule.retrain_check_hours * 3600
        slot = datetime.fromtimestamp(int(time.time() // period * period)).isoformat(timespec="seconds")

        def work() -> str:
            request = retrain.check(self.config, self.store)
            return f"retrain request {request}" if request else f"{self.store.runs.new_labeled()} new labeled images"

        self.once("retrain_check", slot, work)

    def retention(self) -> None:
        today = datetime.now(self.zone).date()
        self.once("retention", today.isoformat(),
                  lambda: f"{clean_outputs(self.config, today, self.store)} day folders of outputs deleted")

    def weekly_scrub(self) -> None:
        week = week_start(datetime.now(self.zone).date())
        self.once("scrub", week.isoformat(), lambda: logged(scrub(self.store, fix=True)))

    def startup_scrub(self) -> None:
        now = utcnow()  # naive UTC, as the store keeps processed_at
        since = now - timedelta(days=self.config.schedule.scrub_startup_days)
        self.once("scrub", f"start {now.isoformat(timespec='seconds')}",
                  lambda: logged(scrub(self.store, fix=True, since=since)))
