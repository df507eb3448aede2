"""Upgrades keep the results: a store written by any earlier version, opened by this one, still holds every
photo, detection, model version and failure, reading back as written (issue #17, item 4).

For each revision in daemon/migrations/versions a store is built at that revision and filled the way the
code of that version filled it (tests/support/old_stores.py), then opened with `Store.open`, which
upgrades it to head. On SQLite and on the throw-away PostgreSQL server of tests/support/postgres.py.
A new revision fails here until old_stores.py says what its version writes.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import MetaData, inspect, text

from daemon.store import DetectionResult, Identified, PhotoResult, Store
from daemon.store.engine import make_engine
from daemon.summary import history
from tests.support import old_stores
from tests.support.old_stores import Rows
from tests.support.postgres import create_database

REVISIONS = old_stores.revisions()
LONG_AGO = datetime(2000, 1, 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def new_url(request, tmp_path):
    """Makes new, empty store URLs: SQLite files, or databases on the test PostgreSQL server."""
    made = []

    def make() -> str:
        made.append(f"sqlite:///{tmp_path / f'qa-{len(made)}.sqlite3'}" if request.param == "sqlite"
                    else create_database(request.getfixturevalue("postgres_url")))
        return made[-1]

    return make


@pytest.fixture
def url(new_url):
    """A new, empty store URL."""
    return new_url()


@pytest.fixture
def opened():
    """Stores opened by a test, closed after it."""
    stores: list[Store] = []

    def open_(url: str) -> Store:
        stores.append(Store.open(url))
        return stores[-1]

    yield open_
    for s in stores:
        s.close()


def test_every_migration_revision_has_a_store_written_as_its_version_wrote_it():
    for revision in REVISIONS:
        old_stores.step(revision)  # says what to add when there is none
    assert list(old_stores.STEPS) == REVISIONS  # in order, and none left for a revision that is gone


@pytest.mark.parametrize("revision", REVISIONS)
def test_a_store_from_an_earlier_version_keeps_every_result_when_this_version_opens_it(revision, url, opened,
                                                                                      tmp_path):
    written = old_stores.build(url, revision)
    store = opened(url)  # upgrades to head, as the daemon and every command do
    rows = old_stores.after_upgrade(written, revision)
    rows_read_back_as_written(store, rows)
    status_history_and_registry_show_them(store, rows)
    new_photos_are_taken_next_to_them(store, rows, tmp_path)


def rows_read_back_as_written(store: Store, rows: Rows) -> None:
    """Every value of every row, column by column; the tables of later revisions are there, empty."""
    assert old_stores.differences(rows, old_stores.read(store.engine, list(rows))) == []
    later = set(inspect(store.engine).get_table_names()) - set(rows) - {"alembic_version"}
    assert {t: rs for t, rs in old_stores.read(store.engine, sorted(later)).items() if rs} == {}


def status_history_and_registry_show_them(store: Store, rows: Rows) -> None:
    """What users see through the public APIs and the views: status counts and failures, the model registry,
    `photo_results`, `qa-daemon history`, schedule claims, retrain requests and daemons."""
    counts = store.queue.counts(LONG_AGO)
    assert {k: counts[k] for k in expected_counts(rows)} == expected_counts(rows)
    assert [(f.id, f.path, f.stage, f.error, f.quarantined_to) for f in store.queue.recent_failures(100)] == [
        (f["id"], f["path"], f["stage"], f["error"], f["quarantined_to"])
        for f in sorted(rows["failures"], key=lambda f: -f["id"]) if f["final"]]

    assert [(v.id, v.name, v.status, v.active, v.promoted_at, v.metrics) for v in store.models.versions()] == [
        (v["id"], v["name"], v["status"], v["active"], v["promoted_at"], v["metrics"]) for v in rows["model_versions"]]
    assert store.models.active().name == next(v["name"] for v in rows["model_versions"] if v["active"])

    assert photo_results(store) == expected_photo_results(rows)
    assert [{k: r[k] for k in HISTORY} for r in history(store, None, None, None)] == expected_history(rows)

    for run in rows.get("schedule_runs", []):
        assert store.runs.has_run(run["job"], run["slot"])
    assert [(r.id, r.status, r.base_version_id, r.candidate_version_id, r.detail)
            for r in store.runs.retrain_requests()] == [
        (r["id"], r["status"], r["base_version_id"], r["candidate_version_id"], r["detail"])
        for r in rows.get("retrain_requests", [])]
    assert sorted(store.runs.daemons_seen(within_s=10**9)) == sorted(
        (d["worker"], d["paused"]) for d in rows.get("daemons", []))


def new_photos_are_taken_next_to_them(store: Store, rows: Rows, folder: Path) -> None:
    """The upgraded store goes on working: a new photo gets the next id (on PostgreSQL, the sequences went
    on from the old rows) and its results show beside the old ones."""
    added = store.queue.add_photo(Identified(
        path=folder / "IMG_0100.jpg", sha256="e" * 64, image_ids=("IMG_0100",), size=1, mtime_ns=1, site="tower-a",
        location="L3", captured_at=datetime(2026, 11, 24, 9), captured_from="exif", width=4000, height=3000))
    assert added.kind == "new" and added.photo_id == max(p["id"] for p in rows["photos"]) + 1
    [job] = [j for j in store.queue.claim(100, "after-upgrade") if j.photo_id == added.photo_id]
    measures = {"area_px": 10, "area_pct": 0.5, "components": 1, "mean_confidence": 0.9}
    store.queue.complete([(job, PhotoResult(folder, None, 10.0, [
        DetectionResult("crack", "segment crack", folder / "c.png", 0.45, measures)]))], store.models.active().id)
    assert [r["photo_id"] for r in photo_results(store)] == [r["photo_id"] for r in expected_photo_results(rows)] + [
        added.photo_id]


# every revision that can be taken back on SQLite; on PostgreSQL the newest (the one a rollback of qa-daemon
# takes back), each server database costing about a second
ROUND_TRIPS = [("sqlite", r) for r in REVISIONS[1:]] + [("postgresql", REVISIONS[-1])]


@pytest.mark.parametrize(("new_url", "revision"), ROUND_TRIPS, indirect=["new_url"])
def test_taking_a_revision_back_and_upgrading_again_keeps_what_the_older_schema_holds(revision, url, new_url,
                                                                                      opened):
    """A store at `revision`, downgraded to the revision before (qa-daemon rolled back) and upgraded again:
    every value the older schema has a column for survives both ways, and the older schema is exactly the
    one that revision builds (0005's downgrade puts 0002's views back)."""
    parent = REVISIONS[REVISIONS.index(revision) - 1]
    written = old_stores.build(url, revision)
    old_stores.alembic_cli(url, command.downgrade, parent)

    built_at_parent = new_url()
    old_stores.build(built_at_parent, parent)
    downgraded, reference = make_engine(url), make_engine(built_at_parent)
    assert schema(downgraded) == schema(reference)
    assert old_stores.view_columns(downgraded) == old_stores.view_columns(reference)
    kept, columns = reflected_rows(downgraded)
    downgraded.dispose()
    reference.dispose()
    held = {t: [{c: r[c] for c in columns[t]} for r in rows] if t in columns else []
            for t, rows in old_stores.taken_back(written, revision).items()}
    assert old_stores.differences({t: rows for t, rows in held.items() if t in columns}, kept) == []

    old_stores.alembic_cli(url, command.upgrade, revision)
    again = opened(url)  # on to head
    expected = old_stores.after_upgrade(held, parent)  # what the downgrade dropped comes back as a new column
    assert old_stores.differences(expected, old_stores.read(again.engine, list(expected))) == []
    assert photo_results(again) == expected_photo_results(expected)


# --- what the views and the status should show, worked out from the rows -------------------------------

HISTORY = ("period", "site", "photos", "photos_with_cracks", "hairline", "fine", "medium", "wide",
           "crack_length_px", "mean_taping_coverage_pct")  # the columns `qa-daemon history` has always shown


def expected_counts(rows: Rows) -> dict[str, int]:
    status = [j["status"] for j in rows["jobs"]]
    return {"processed": status.count("done"), "pending": status.count("pending") + status.count("running"),
            "failed": status.count("failed") + sum(1 for f in rows["failures"] if f["final"] and f["photo_id"] is None),
            "missing": status.count("missing"), "lost": status.count("lost"),
            "duplicates": len({f["path"] for f in rows["files"] if f["duplicate"]}),
            "processed_today": sum(1 for p in rows["photos"] if p["processed_at"] is not None)}


def as_sql_text(value):
    """Dates and times as SQLite's views give them (text), so both databases' rows compare alike."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else \
        str(value) if isinstance(value, date) else value


def photo_results(store: Store) -> list[dict]:
    """The `photo_results` rows, keyed as analysts' queries name them."""
    with store.reader() as s:
        rows = s.execute(text("SELECT * FROM photo_results ORDER BY photo_id"))
        return [{k: as_sql_text(v) for k, v in r._mapping.items()} for r in rows]


def expected_photo_results(rows: Rows) -> list[dict]:
    done = {j["photo_id"] for j in rows["jobs"] if j["status"] == "done"}
    names = {v["id"]: v["name"] for v in rows["model_versions"]}
    out = []
    for p in sorted((p for p in rows["photos"] if p["id"] in done), key=lambda p: p["id"]):
        c = next((d for d in rows["detections"] if d["photo_id"] == p["id"] and d["task"] == "crack"), {})
        t = next((d for d in rows["detections"] if d["photo_id"] == p["id"] and d["task"] == "taping"), {})
        out.append({
            "photo_id": p["id"], "site": p["site"], "location": p["location"], "name": p["name"],
            "sha256": p["sha256"], "captured_at": as_sql_text(p["captured_at"]),
            "day": p["captured_at"].date().isoformat(), "processed_at": as_sql_text(p["processed_at"]),
            "processing_ms": p["processing_ms"],
            "model_version": names.get(p["model_version_id"]),
            "crack_pct": c.get("area_pct"), "crack_area_px": c.get("area_px"), "crack_components": c.get("components"),
            "crack_length_px": c.get("length_px"), "crack_length_mm": c.get("length_mm"),
            "crack_max_width_px": c.get("max_width_px"), "crack_max_width_mm": c.get("max_width_mm"),
            "crack_severity": c.get("severity"), "crack_confidence": c.get("mean_confidence"),
            "taping_coverage_pct": t.get("coverage_pct"), "taping_components": t.get("components"),
            "overlay_path": p["overlay_path"], "crack_mask": c.get("mask_path"), "taping_mask": t.get("mask_path"),
            "taping_area_px": t.get("area_px"), "taping_length_px": t.get("length_px"),
            "taping_length_mm": t.get("length_mm"), "taping_confidence": t.get("mean_confidence")})
    return out


def expected_history(rows: Rows) -> list[dict]:
    by_day: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in expected_photo_results(rows):
        by_day[(r["day"], r["site"])].append(r)
    return [{"period": day, "site": site, "photos": len(rs),
             "photos_with_cracks": sum(1 for r in rs if r["crack_pct"] > 0),
             **{k: sum(1 for r in rs if r["crack_severity"] == k) for k in ("hairline", "fine", "medium", "wide")},
             "crack_length_px": round(sum(r["crack_length_px"] for r in rs), 1),
             "mean_taping_coverage_pct": round(sum(r["taping_coverage_pct"] for r in rs) / len(rs), 3)}
            for (day, site), rs in sorted(by_day.items())]


def schema(engine) -> dict[str, set[tuple[str, str]]]:
    """Each table's (column, type): what a downgrade must leave as the older revision built it."""
    inspector = inspect(engine)
    return {t: {(c["name"], str(c["type"])) for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


def reflected_rows(engine) -> tuple[Rows, dict[str, list[str]]]:
    """Every row of every table and each table's columns, read through the tables as they stand now (not
    as the product's schema has them)."""
    tables = MetaData()
    tables.reflect(engine)
    tables.remove(tables.tables["alembic_version"])
    with engine.connect() as conn:
        rows = {t.name: [dict(r._mapping) for r in conn.execute(t.select())] for t in tables.sorted_tables}
    return rows, {t.name: [c.name for c in t.columns] for t in tables.sorted_tables}
