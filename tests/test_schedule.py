"""Scheduled jobs, trend history and the SQL views analysts query."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from daemon.config import Config, ScheduleConfig
from daemon.schedule import Scheduler, clean_outputs
from daemon.store import Store
from tests.support.store import fill


@pytest.fixture
def store(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    yield s
    s.close()


def test_history_reads_the_same_from_a_postgresql_server(pg_database, tmp_path):
    from daemon.summary import history, period_summary

    server = Store.open(pg_database)
    fill(server, tmp_path, PHOTOS)
    weekly = history(server, "tower-a", None, None, "week")
    assert [(r["period"], r["photos"], r["wide"]) for r in weekly] == [("2026-11-02", 3, 1), ("2026-11-09", 1, 0)]
    summary = period_summary(server, date(2026, 11, 2), date(2026, 11, 3))
    assert summary["totals"]["photos"] == 4 and [s["site"] for s in summary["sites"]] == ["tower-a", "tower-b"]
    json.dumps(summary)  # plain data all the way down, as the reports need
    server.close()


PHOTOS = [("tower-a", "2026-11-02", 2.0, "fine"), ("tower-a", "2026-11-02", 0.0, None),
          ("tower-a", "2026-11-03", 4.0, "wide"), ("tower-b", "2026-11-03", 1.0, "fine"),
          ("tower-a", "2026-11-10", 0.0, None)]


def test_history_groups_trend_rows_by_day_week_and_month(store, tmp_path, cli):
    fill(store, tmp_path, PHOTOS)
    url = str(store.engine.url)
    by_day = json.loads(cli("history", "--store", url, "--format", "json").stdout)
    assert [(r["period"], r["site"], r["photos"]) for r in by_day] == [
        ("2026-11-02", "tower-a", 2), ("2026-11-03", "tower-a", 1), ("2026-11-03", "tower-b", 1),
        ("2026-11-10", "tower-a", 1)]
    assert by_day[0]["crack_share_pct"] == 50.0 and by_day[0]["fine"] == 1
    weekly = json.loads(cli("history", "--store", url, "--site", "tower-a", "--group-by", "week",
                            "--format", "json").stdout)
    assert [(r["period"], r["photos"], r["wide"]) for r in weekly] == [("2026-11-02", 3, 1), ("2026-11-09", 1, 0)]
    monthly = cli("history", "--store", url, "--group-by", "month", "--prompt", "segment drywall seam",
                  "--format", "csv").stdout.splitlines()
    assert monthly[0] == ("period,site,photos,photos_with_taping,taping_share_pct,mean_taping_coverage_pct,"
                          "taping_segments,taping_length_px,taping_length_mm")
    assert monthly[1:] == ["2026-11,tower-a,4,4,100.0,5.0,4,,", "2026-11,tower-b,1,1,100.0,5.0,1,,"]
    since = json.loads(cli("history", "--store", url, "--since", "2026-11-03", "--until", "2026-11-05",
                           "--format", "json").stdout)
    assert {r["period"] for r in since} == {"2026-11-03"}


def test_history_refuses_an_unknown_prompt_and_a_bad_day(store, cli):
    url = str(store.engine.url)
    assert "not a configured prompt" in cli("history", "--store", url, "--prompt", "segment sky").stderr
    bad = cli("history", "--store", url, "--since", "yesterday")
    assert bad.code == 2 and "YYYY-MM-DD" in bad.stderr


def test_analysts_can_query_the_daily_site_summary_view_with_plain_sql(store, tmp_path):
    fill(store, tmp_path, PHOTOS)
    con = sqlite3.connect(store.engine.url.database)
    rows = con.execute("SELECT day, site, photos, photos_with_cracks, fine, wide FROM daily_site_summary "
                       "WHERE site = 'tower-a' ORDER BY day").fetchall()
    assert rows == [("2026-11-02", "tower-a", 2, 1, 1, 0), ("2026-11-03", "tower-a", 1, 1, 0, 1),
                    ("2026-11-10", "tower-a", 1, 0, 0, 0)]
    con.close()


# the scheduler's clock, injected: Wednesday 2026-11-25, 09:00 in Berlin
ZONE = "Europe/Berlin"
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=ZoneInfo(ZONE))


class FrozenDatetime(datetime):
    """`datetime` whose now() is NOW (in the zone asked for; naive: Berlin's wall time)."""

    @classmethod
    def now(cls, tz=None):
        return NOW.astimezone(tz) if tz is not None else NOW.replace(tzinfo=None)


class Clock:
    """The scheduler's `time` module: time() is set by the test, monotonic() is the real one."""

    def __init__(self, now: datetime):
        self.now = now.timestamp()

    def time(self) -> float:
        return self.now

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()


def schedule_config(tmp_path, **jobs) -> Config:
    """Only the jobs named in `jobs`; reports into tmp_path/reports."""
    off = {"daily_report": None, "weekly_summary": None, "retrain_check_hours": None, "retention_days": None,
           "scrub": None, "scrub_startup_days": 0}
    return Config(schedule=ScheduleConfig(timezone=ZONE, reports_dir=tmp_path / "reports", **{**off, **jobs}),
                  retrain={"inbox": tmp_path / "inbox"})


def runs(store) -> list[tuple[str, str, str | None]]:
    con = sqlite3.connect(store.engine.url.database)
    rows = con.execute("SELECT job, slot, outcome FROM schedule_runs ORDER BY job, slot").fetchall()
    con.close()
    return rows


def test_each_job_runs_once_per_slot_across_two_daemons_sharing_a_store(store, tmp_path, monkeypatch):
    import daemon.schedule

    clock = Clock(NOW)
    monkeypatch.setattr(daemon.schedule, "time", clock)
    made, checks = [], []  # the work each job does, each time it is done
    write_report, check = daemon.schedule.write_report, daemon.schedule.retrain.check
    monkeypatch.setattr(daemon.schedule, "write_report", lambda *a, **k: made.append(a[1:3]) or write_report(*a, **k))
    monkeypatch.setattr(daemon.schedule.retrain, "check", lambda *a, **k: checks.append(1) or check(*a, **k))
    config = schedule_config(tmp_path, daily_report="18:00", weekly_summary="mon 08:00", retrain_check_hours=24)
    first, second = Scheduler(config, store), Scheduler(config, store)  # two processes sharing one store
    for scheduler in (first, second, first):  # what their triggers call, each process in turn
        scheduler.daily_report(date(2026, 11, 24))
        scheduler.weekly_summary(date(2026, 11, 23))
        scheduler.retrain_check()
    clock.now += 3600  # an hour later: the same day's retrain slot, already run
    second.retrain_check()
    day_slot = datetime.fromtimestamp(datetime(2026, 11, 25, tzinfo=UTC).timestamp()).isoformat()
    reports = tmp_path / "reports"
    assert runs(store) == [("daily_report", "2026-11-24", str(reports / "daily-2026-11-24.html")),
                           ("retrain_check", day_slot, "0 new labeled images"),
                           ("weekly_summary", "2026-11-16", str(reports / "weekly-2026-11-16.html"))]
    assert (reports / "daily-2026-11-24.html").is_file() and (reports / "weekly-2026-11-16.html").is_file()
    assert made == [("daily", date(2026, 11, 24)), ("weekly", date(2026, 11, 16))] and len(checks) == 1
    clock.now += 24 * 3600  # the next day's slot
    second.retrain_check()
    assert [slot for job, slot, _ in runs(store) if job == "retrain_check"] == [
        day_slot, datetime.fromtimestamp(datetime(2026, 11, 26, tzinfo=UTC).timestamp()).isoformat()]


def test_reports_missed_while_no_daemon_ran_are_rendered_at_start_and_owed_once(store, tmp_path, monkeypatch):
    import daemon.schedule

    monkeypatch.setattr(daemon.schedule, "datetime", FrozenDatetime)
    config = schedule_config(tmp_path, daily_report="18:00", weekly_summary="mon 08:00")
    # at 09:00 on Wednesday: the last daily report was due yesterday at 18:00, the last weekly summary on
    # Monday 08:00 (for the week before it)
    scheduler = Scheduler(config, store)
    assert [(job.__name__, day) for job, day in scheduler.missed()] == [
        ("daily_report", date(2026, 11, 24)), ("weekly_summary", date(2026, 11, 23))]
    scheduler.start()
    try:
        deadline = time.monotonic() + 30
        while sum(outcome is not None for _, _, outcome in runs(store)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()
    assert [(job, slot) for job, slot, _ in runs(store)] == [("daily_report", "2026-11-24"),
                                                             ("weekly_summary", "2026-11-16")]
    assert (tmp_path / "reports" / "daily-2026-11-24.html").is_file()
    assert (tmp_path / "reports" / "weekly-2026-11-16.html").is_file()
    assert Scheduler(config, store).missed() == [], "a report made once is not owed again"


def test_two_reports_rendered_at_the_same_moment_are_both_in_the_index(store, tmp_path, monkeypatch):
    import threading

    import reports.render

    scheduler = Scheduler(schedule_config(tmp_path), store)
    listed, go = threading.Event(), threading.Event()
    write = reports.render.write_atomic

    def write_atomic(path, data):  # the daily report's index waits, its folder listed, until told to go on
        if threading.current_thread().name == "daily" and path.name == "index.html":
            listed.set()
            go.wait(30)
        return write(path, data)

    monkeypatch.setattr(reports.render, "write_atomic", write_atomic)
    daily = threading.Thread(target=scheduler.daily_report, args=[date(2026, 11, 24)], name="daily")
    weekly = threading.Thread(target=scheduler.weekly_summary, args=[date(2026, 11, 23)], name="weekly")
    daily.start()
    assert listed.wait(30)
    weekly.start()  # the weekly summary's page is written while the daily one still updates the index
    end = time.monotonic() + 30
    while not (tmp_path / "reports" / "weekly-2026-11-16.html").exists() and time.monotonic() < end:
        time.sleep(0.01)
    go.set()
    daily.join(30)
    weekly.join(30)
    index = (tmp_path / "reports" / "index.html").read_text()
    assert 'href="daily-2026-11-24.html"' in index
    assert 'href="weekly-2026-11-16.html"' in index, "the weekly summary is missing from the index"


def test_schedule_times_are_checked_when_the_config_is_loaded():
    with pytest.raises(ValueError, match="HH:MM"):
        ScheduleConfig(daily_report="6pm")
    with pytest.raises(ValueError, match="dow"):
        ScheduleConfig(weekly_summary="someday 08:00")
    with pytest.raises(ValueError, match="time zone"):
        ScheduleConfig(timezone="Mars/Olympus")


def test_retention_deletes_old_output_days_but_keeps_recent_ones(tmp_path):
    out = tmp_path / "outputs"
    for day in ("2026-01-01", "2026-11-20", "2026-11-24"):
        (out / "tower-a" / day).mkdir(parents=True)
        (out / "tower-a" / day / "x__segment_crack.png").write_bytes(b"0" * 1000)
    config = Config(outputs={"dir": out}, schedule=ScheduleConfig(retention_days=30))
    assert clean_outputs(config, date(2026, 11, 25)) == 1
    assert sorted(p.name for p in (out / "tower-a").iterdir()) == ["2026-11-20", "2026-11-24"]
    budget = Config(outputs={"dir": out}, schedule=ScheduleConfig(retention_days=None, retention_max_gb=1500 / 2**30))
    assert clean_outputs(budget, date(2026, 11, 25)) == 1  # over budget: the oldest day goes first
    assert [p.name for p in (out / "tower-a").iterdir()] == ["2026-11-24"]
