"""Scheduled jobs, trend history and the SQL views analysts query."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import date, datetime, timedelta

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
    assert monthly[0] == "period,site,photos,mean_taping_coverage_pct"
    assert monthly[1:] == ["2026-11,tower-a,4,5.0", "2026-11,tower-b,1,5.0"]
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


def test_jobs_fire_once_each_across_two_daemons_and_a_missed_report_is_rendered_at_start(store, tmp_path):
    soon = datetime.now() + timedelta(seconds=3)
    config = Config(schedule=ScheduleConfig(
        daily_report=soon.strftime("%H:%M:%S"), weekly_summary=None, retrain_check_hours=1.0,
        retention_days=None, reports_dir=tmp_path / "reports"), retrain={"inbox": tmp_path / "inbox"})
    first, second = Scheduler(config, store), Scheduler(config, store)  # two processes sharing one store
    if soon.date() != date.today():
        pytest.skip("too close to midnight for a same-day cron test")
    first.start()
    second.start()
    time.sleep(5)
    first.stop()
    second.stop()
    con = sqlite3.connect(store.engine.url.database)
    runs = con.execute("SELECT job, slot, outcome FROM schedule_runs ORDER BY job, slot").fetchall()
    con.close()
    yesterday, today = (date.today() - timedelta(days=1)).isoformat(), date.today().isoformat()
    assert [(job, slot) for job, slot, _ in runs] == [
        ("daily_report", yesterday), ("daily_report", today), ("retrain_check", runs[2][1])]
    assert (tmp_path / "reports" / f"daily-{yesterday}.html").is_file()  # missed while down: made at start
    assert (tmp_path / "reports" / f"daily-{today}.html").is_file()  # the cron run
    assert (tmp_path / "reports" / "index.html").is_file()
    assert runs[2][2] == "0 new labeled images"


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
