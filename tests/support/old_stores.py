"""Stores as earlier versions of qa-daemon left them, for the upgrade tests: the schema built at one
migration revision, filled with rows the way the code of that revision wrote them.

    written = build(url, "0002")         # the schema at 0002 and its rows; table -> rows written
    Store.open(url)                      # the product upgrades it to head
    expected = after_upgrade(written, "0002")  # what a faithful upgrade keeps, later columns filled in

Each revision has a `Step` in `STEPS`: what the code of that revision wrote beyond the revision before
(new tables, columns, statuses), and what its migration gives rows written before it (the columns it
adds). Each step names the commit that added its revision: `git show COMMIT:daemon/store.py` shows how
that version wrote rows. A new revision needs a step: tests/test_upgrades.py fails until it has one.

Rows are inserted with SQLAlchemy Core into the tables as they stand at that revision (reflected), so
values are stored as the ORM of that time stored them (SQLite: datetimes as text with microseconds,
booleans as 0/1); ids are given explicitly, in the order the daemon would have got them.
"""

from __future__ import annotations

import json
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, insert, inspect, text
from sqlalchemy.engine import Connection, Engine

from daemon.store import engine as store_engine
from daemon.store.engine import make_engine

Rows = dict[str, list[dict[str, Any]]]  # table -> rows, each row every column of the table


def alembic_config(conn: Connection | None = None) -> AlembicConfig:
    """The Alembic config the product builds in `daemon.store.engine.migrate`."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(store_engine.MIGRATIONS))  # read at each call, as `migrate` does
    cfg.attributes["connection"] = conn
    return cfg


def revisions() -> list[str]:
    """Every revision in daemon/migrations/versions, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def run_alembic(engine: Engine, action: Callable[[AlembicConfig, str], None], revision: str) -> None:
    """`command.upgrade` or `command.downgrade` to `revision`, in one transaction as the product runs it."""
    with engine.begin() as conn:
        action(alembic_config(conn), revision)


def alembic_cli(url: str, action: Callable[[AlembicConfig, str], None], revision: str) -> None:
    """`action` as a developer runs it: `alembic -c daemon/migrations/alembic.ini -x url=URL downgrade REV`
    (env.py's own engine, without the daemon's SQLite settings; qa-daemon itself only upgrades)."""
    ini = store_engine.MIGRATIONS / "alembic.ini"
    action(AlembicConfig(str(ini), cmd_opts=Namespace(x=[f"url={url}"])), revision)


# --- what each version wrote ---------------------------------------------------------------------------

def at(day: int, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    """A November 2026 time; the daemon's own timestamps (utcnow) carry microseconds, cameras' do not."""
    return datetime(2026, 11, day, hour, minute, second, micro)


CARD = json.dumps({"backend": "compact", "encoder": "efficientnet_lite0", "input_size": 448,
                   "prompts": {"crack": "segment crack", "taping": "segment taping area"},
                   "thresholds": {"segment crack": 0.45, "segment taping area": 0.5}})
WATCH, ARCHIVE, OUT = "/srv/qa/watch", "/srv/qa/archive", "/srv/qa/outputs"
SITES = {"tower-a": 0.21, "O'Brien annex": None}  # site -> mm per pixel (the annex has no scale)


def _photo(pid: int, site: str, name: str, captured: datetime, first_seen: datetime) -> dict[str, Any]:
    """A photo as `add_photo` recorded it: identified, not yet processed."""
    return dict(id=pid, sha256=f"{pid:02d}" * 32, image_id=name.rsplit(".", 1)[0], name=name,
                path=f"{WATCH}/{site}/L3/{name}", site=site, location="L3", captured_at=captured,
                captured_from="exif", width=4000, height=3000, bytes=2_400_000 + pid, first_seen_at=first_seen,
                processed_at=None, processing_ms=None, model_version_id=None, output_dir=None, overlay_path=None)


def _job(pid: int, status: str, attempts: int, updated: datetime, worker: str | None = None,
         last_error: str | None = None) -> dict[str, Any]:
    return dict(id=pid, photo_id=pid, status=status, attempts=attempts, next_attempt_at=updated, worker=worker,
                claimed_at=updated if worker else None, last_error=last_error, updated_at=updated)


def _file(fid: int, photo: dict, path: str | None = None, duplicate: bool = False) -> dict[str, Any]:
    return dict(id=fid, path=path or photo["path"], size=photo["bytes"], mtime_ns=1_795_000_000_000_000_000 + fid,
                sha256=photo["sha256"], photo_id=photo["id"], duplicate=duplicate, seen_at=photo["first_seen_at"])


def _process(rows: Rows, photo: dict, version: int, processed: datetime, crack: dict | None,
             taping_pct: float, worker: str) -> None:
    """What `complete` wrote for a photo: its detections (crack, taping), the photo's results, its job done.
    `crack`: area_px, area_pct, components, mean_confidence, length_px, max_width_px (None: no crack)."""
    out = f"{OUT}/{photo['site']}/{photo['captured_at']:%Y-%m-%d}"
    photo.update(processed_at=processed, processing_ms=412.5 + photo["id"], model_version_id=version, output_dir=out,
                 overlay_path=f"{out}/{photo['image_id']}__overlay.jpg",
                 path=photo["path"].replace(WATCH, ARCHIVE))  # archived once done
    scale = SITES[photo["site"]]
    c = crack or dict(area_px=0, area_pct=0.0, components=0, mean_confidence=None, length_px=0.0, max_width_px=0.0)
    measured = dict(length_mm=None, max_width_mm=None, severity=None)
    if scale is not None:
        measured = dict(length_mm=c["length_px"] * scale, max_width_mm=c["max_width_px"] * scale,
                        severity=("hairline" if c["max_width_px"] * scale < 0.3 else "fine") if crack else None)
    detections = rows.setdefault("detections", [])
    base = dict(photo_id=photo["id"], model_version_id=version)
    detections.append({**base, "id": len(detections) + 1, "task": "crack", "prompt": "segment crack",
                       "mask_path": f"{out}/{photo['image_id']}__segment_crack.png", "threshold": 0.45,
                       **c, **measured, "coverage_pct": None})
    taped = int(taping_pct * 120_000)  # 4000 x 3000 pixels
    detections.append({**base, "id": len(detections) + 1, "task": "taping", "prompt": "segment taping area",
                       "mask_path": f"{out}/{photo['image_id']}__segment_taping_area.png", "threshold": 0.5,
                       "area_px": taped, "area_pct": taping_pct, "components": 2 if taped else 0,
                       "mean_confidence": 0.8125 if taped else None, "length_px": None, "max_width_px": None,
                       "length_mm": None, "max_width_mm": None, "severity": None, "coverage_pct": taping_pct})
    job = next(j for j in rows["jobs"] if j["photo_id"] == photo["id"])
    job.update(status="done", attempts=job["attempts"] + 1, worker=worker, claimed_at=processed, last_error=None,
               updated_at=processed)


def _written_at_0001(rows: Rows) -> None:
    """e0a53e5: every checkpoint the daemon started with was registered and made active; photos added,
    claimed, completed, retried, given up on (quarantined); intake failures with no photo."""
    worker = "qa-host:4242"
    rows["model_versions"] = [
        dict(id=v, name=f"compact-v{v}", path=f"/srv/qa/models/compact-v{v}", backend="compact",
             weights_sha256=f"{v}" * 64, card=CARD, registered_at=at(18 + v, 6, 0, 1, 250_000 + v), active=v == 2)
        for v in (1, 2)]
    names = [("tower-a", "IMG_0001.jpg", at(20, 9, 30)), ("tower-a", "IMG_0002.jpg", at(21, 10, 5, 12)),
             ("O'Brien annex", "Küche ünd 東.jpg", at(21, 16, 45)),  # no crack; a name outside ASCII
             ("tower-a", "IMG_0004.jpg", at(22, 8)),  # pending
             ("tower-a", "IMG_0005.jpg", at(22, 8, 1)),  # running
             ("O'Brien annex", "IMG_0001.jpg", at(22, 8, 2))]  # failed; a stem taken at another site is free
    rows["photos"] = [_photo(i, site, name, captured, at(22, 11, 0, i, 1000 * i))
                      for i, (site, name, captured) in enumerate(names, start=1)]
    rows["jobs"] = [_job(p["id"], "pending", 0, p["first_seen_at"]) for p in rows["photos"]]
    p1, p2, p3, _, p5, p6 = rows["photos"]
    rows["files"] = [_file(p["id"], p) for p in rows["photos"]]
    rows["files"].append(_file(7, p2, path=f"{WATCH}/tower-a/L3/copy of IMG_0002.jpg", duplicate=True))
    _process(rows, p1, 1, at(22, 11, 2, 0, 1), dict(area_px=5400, area_pct=0.045, components=3, mean_confidence=0.71,
                                                   length_px=1873.25, max_width_px=1.25), 11.5, worker)
    _process(rows, p2, 2, at(22, 11, 3, 0, 2), dict(area_px=81_000, area_pct=0.675, components=1,
                                                   mean_confidence=0.9375, length_px=6120.5, max_width_px=4.5),
             0.0, worker)
    _process(rows, p3, 2, at(22, 11, 4, 0, 3), None, 37.25, worker)
    rows["jobs"][4].update(status="running", attempts=2, worker=worker, claimed_at=at(22, 11, 5, 0, 4),
                           updated_at=at(22, 11, 5, 0, 4))
    error, watched = "cannot decode: truncated JPEG", p6["path"]
    quarantined = watched.replace(WATCH, "/srv/qa/quarantine")
    rows["jobs"][5].update(status="failed", attempts=3, last_error=error, updated_at=at(22, 11, 9, 0, 5))
    p6["path"] = quarantined
    rows["failures"] = [
        dict(id=1, at=at(22, 11, 0, 30, 10), path=f"{WATCH}/tower-a/L3/notes.jpg", photo_id=None, stage="intake",
             error="not an image: cannot identify image file", attempt=1, final=True,
             quarantined_to="/srv/qa/quarantine/tower-a/L3/notes.jpg"),
        dict(id=2, at=at(22, 11, 6, 0, 11), path=p5["path"], photo_id=5, stage="process", error="CUDA out of memory",
             attempt=1, final=False, quarantined_to=None),
        *(dict(id=2 + a, at=at(22, 11, 6 + a, 0, 11 + a), path=watched, photo_id=6, stage="process", error=error,
               attempt=a, final=a == 3, quarantined_to=quarantined if a == 3 else None)
          for a in (1, 2, 3))]


def _written_at_0002(rows: Rows) -> None:
    """1914a34: the registry (status, metrics, promoted_at; retrain candidates), schedule claims, the retrain
    inbox and its requests."""
    v1, v2 = rows["model_versions"]
    v1.update(status="retired", metrics="{}", promoted_at=at(19, 6, 0, 2, 1))
    v2.update(status="active", metrics="{}", promoted_at=at(20, 6, 0, 2, 2))
    rows["model_versions"].append(dict(
        id=3, name="retrain-20261122", path="/srv/qa/models/retrain-20261122", backend="compact",
        weights_sha256="3" * 64, card=CARD, registered_at=at(22, 3, 10, 0, 3), active=False, status="rejected",
        metrics=json.dumps({"crack": {"miou": 0.5012, "dice": 0.6633}, "taping": {"miou": 0.7401, "dice": 0.8464}}),
        promoted_at=None))
    rows["schedule_runs"] = [
        dict(id=1, job="daily_report", slot="2026-11-21", worker="qa-host:4242", started_at=at(22, 6, 0, 0, 7),
             finished_at=at(22, 6, 0, 3, 8), outcome="outputs/reports/daily-2026-11-21.html"),
        dict(id=2, job="retrain_check", slot="2026-11-22T03", worker="qa-host:4242", started_at=at(22, 3, 0, 0, 9),
             finished_at=None, outcome=None)]
    rows["labeled_images"] = [dict(id=i, sha256=f"a{i}" * 32, path=f"/srv/qa/inbox/wall-{i}.png",
                                   first_seen_at=at(21, 18, i, 0, i)) for i in (1, 2)]
    rows["retrain_requests"] = [
        dict(id=1, at=at(22, 3, 0, 1, 1), new_images=2, base_version_id=2, status="rejected",
             candidate_version_id=3, detail="crack mIoU 0.5012 < active 0.5415"),
        dict(id=2, at=at(22, 9, 0, 1, 2), new_images=5, base_version_id=2, status="requested",
             candidate_version_id=None, detail=None)]


def _written_at_0003(rows: Rows) -> None:
    """b47396b: daemons' heartbeats (several daemons on one PostgreSQL store)."""
    rows["daemons"] = [dict(worker="qa-host:4242", started_at=at(22, 5, 59, 0, 1), seen_at=at(22, 11, 9, 30, 2)),
                       dict(worker="qa-host-2:77", started_at=at(22, 6, 0, 0, 3), seen_at=at(22, 11, 9, 31, 4))]


def _written_at_0004(rows: Rows) -> None:
    """376b29e: a daemon paused by a full outputs disk (a heartbeat column and a failure of stage `outputs`);
    photos whose file vanished wait as `missing`."""
    for d in rows["daemons"]:
        d["paused"] = "outputs disk full: 12 MB free, 512 MB needed" if d["worker"] == "qa-host-2:77" else None
    photo = _photo(7, "tower-a", "IMG_0007.jpg", at(22, 8, 3), at(22, 11, 10, 0, 7))
    rows["photos"].append(photo)
    rows["jobs"].append(_job(7, "missing", 0, at(22, 11, 10, 5, 7), last_error="the file vanished before it was "
                                                                                "processed"))
    rows["files"].append(_file(8, photo))
    rows["failures"].append(dict(id=len(rows["failures"]) + 1, at=at(22, 11, 11, 0, 1), path=OUT, photo_id=None,
                                 stage="outputs", error="outputs disk full: 12 MB free, 512 MB needed", attempt=1,
                                 final=False, quarantined_to=None))


def _written_at_0005(rows: Rows) -> None:
    """212066e: the files a daemon lets settle (daemons.waiting, JSON), and taping measured like cracks
    (length, confidence), which 0005's views read."""
    for d in rows["daemons"]:
        d["waiting"] = json.dumps([{"path": f"{WATCH}/tower-a/L4/IMG_0100.jpg", "reason": "settling"}]) \
            if d["worker"] == "qa-host:4242" else None
    photo = _photo(8, "tower-a", "IMG_0008.jpg", at(23, 7, 45), at(23, 8, 0, 0, 8))
    rows["photos"].append(photo)
    rows["jobs"].append(_job(8, "pending", 0, photo["first_seen_at"]))
    rows["files"].append(_file(9, photo))
    _process(rows, photo, 2, at(23, 8, 0, 1, 8), dict(area_px=1200, area_pct=0.01, components=1,
                                                     mean_confidence=0.61, length_px=400.0, max_width_px=1.0),
             22.5, "qa-host:4242")
    taping = rows["detections"][-1]
    taping.update(length_px=3150.75, length_mm=3150.75 * SITES["tower-a"])


def _written_at_0006(rows: Rows) -> None:
    """The scrub (issue #17): retention marks the photos whose outputs it deleted; a photo with damaged results
    is queued again from its source (`remade`) or, its source gone, recorded `lost` (stage `results_lost`,
    longer than 0005's 10 characters)."""
    photos = {p["id"]: p for p in rows["photos"]}
    for p in rows["photos"]:
        p["outputs_removed_at"] = at(22, 3, 30, 0, 1) if p["id"] == 1 else None  # its capture day is the oldest
    for pid, name, status in ((9, "IMG_0009.jpg", "lost"), (10, "IMG_0010.jpg", "remade")):
        photo = photos[pid] = _photo(pid, "tower-a", name, at(23, 7, pid), at(23, 8, pid, 0, pid))
        photo["outputs_removed_at"] = None
        rows["photos"].append(photo)
        rows["jobs"].append(_job(pid, "pending", 0, photo["first_seen_at"]))
        rows["files"].append(_file(len(rows["files"]) + 1, photo))
        _process(rows, photo, 2, at(23, 8, pid, 1, pid), None, 5.0, "qa-host:4242")
        reason = f"crack mask missing: {rows['detections'][-2]['mask_path']}"
        job = rows["jobs"][-1]
        if status == "lost":
            job.update(status="lost", worker=None, updated_at=at(23, 9, 0, 0, pid), last_error=reason)
        else:
            job.update(status="pending", attempts=0, worker=None, next_attempt_at=at(23, 9, 0, 0, pid),
                       updated_at=at(23, 9, 0, 0, pid), last_error=reason)
        rows["failures"].append(dict(id=len(rows["failures"]) + 1, at=at(23, 9, 0, 0, pid), path=photo["path"],
                                     photo_id=pid, stage="results_lost" if status == "lost" else "remade",
                                     error=reason, attempt=0, final=status == "lost", quarantined_to=None))


@dataclass(frozen=True)
class Step:
    """One revision: what its code wrote, what its migration gives rows written before it (table ->
    the values of the columns it adds, from the row), and what its downgrade changes in rows whose values the
    older code does not know (table -> the new values, from the row; {} to leave the row as it is)."""

    written: Callable[[Rows], None]
    backfill: dict[str, Callable[[dict], dict]] = field(default_factory=dict)
    taken_back: dict[str, Callable[[dict], dict]] = field(default_factory=dict)


STEPS: dict[str, Step] = {
    "0001": Step(_written_at_0001),
    # every version was active once (0001 activated each one it registered); the migration marks the
    # inactive ones retired
    "0002": Step(_written_at_0002, {"model_versions": lambda r: dict(
        status="active" if r["active"] else "retired", metrics="{}", promoted_at=None)}),
    "0003": Step(_written_at_0003),
    "0004": Step(_written_at_0004, {"daemons": lambda r: dict(paused=None)}),
    "0005": Step(_written_at_0005, {"daemons": lambda r: dict(waiting=None)}),
    # before 0006 a photo whose results cannot be re-made is one whose file vanished, and a failure's stage
    # is one of three
    "0006": Step(_written_at_0006, {"photos": lambda r: dict(outputs_removed_at=None)}, {
        "jobs": lambda r: dict(status="missing") if r["status"] == "lost" else {},
        "failures": lambda r: dict(stage="process", error="results lost: " + r["error"])
        if r["stage"] == "results_lost" else {}}),
}


def step(revision: str) -> Step:
    """The step of `revision`; what to add when it has none."""
    if revision not in STEPS:
        raise LookupError(f"revision {revision} has no Step in tests/support/old_stores.py STEPS: add what its code "
                          "writes and what its migration gives earlier rows")
    return STEPS[revision]


def rows_at(revision: str) -> Rows:
    """The rows the code of `revision` leaves in a store (every step up to it)."""
    order = revisions()
    rows: Rows = {}
    for r in order[: order.index(revision) + 1]:
        step(r).written(rows)
    return rows


def taken_back(rows: Rows, revision: str) -> Rows:
    """`rows`, written at `revision`, as its downgrade leaves them (columns it drops are left to the caller)."""
    out = {table: [dict(r) for r in rs] for table, rs in rows.items()}
    for table, change in step(revision).taken_back.items():
        for r in out.get(table, []):
            r.update(change(r))
    return out


def after_upgrade(rows: Rows, revision: str) -> Rows:
    """`rows`, written at `revision`, as a faithful upgrade to head leaves them."""
    order = revisions()
    out = {table: [dict(r) for r in rs] for table, rs in rows.items()}
    for later in order[order.index(revision) + 1:]:
        for table, columns in step(later).backfill.items():
            for r in out.get(table, []):
                r.update(columns(r))
    return out


# --- building and reading stores -----------------------------------------------------------------------

def build(url: str, revision: str) -> Rows:
    """A new store at `url` with the schema of `revision` and the rows its code wrote; those rows."""
    rows = rows_at(revision)
    engine = make_engine(url)
    try:
        run_alembic(engine, command.upgrade, revision)
        tables = MetaData()
        tables.reflect(engine)
        columns = {t.name: {c.name for c in t.columns} for t in tables.sorted_tables if t.name != "alembic_version"}
        # every table and every column of this revision is written, so none escapes the upgrade check
        assert set(rows) == set(columns), f"{revision}: rows for {sorted(rows)}, tables {sorted(columns)}"
        for table, rs in rows.items():
            for r in rs:
                assert set(r) == columns[table], (f"{revision}: a {table} row lacks {sorted(columns[table] - set(r))}, "
                                                  f"has no column for {sorted(set(r) - columns[table])}")
        with engine.begin() as conn:
            for t in tables.sorted_tables:  # parents first, for the foreign keys
                if rows.get(t.name):
                    conn.execute(insert(t), rows[t.name])
                if engine.dialect.name == "postgresql" and "id" in t.columns:
                    # ids given here did not advance the sequence, as the daemon's own inserts did
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{t.name}', 'id'), "
                                      f"(SELECT max(id) FROM {t.name}))"))
    finally:
        engine.dispose()
    return rows


def read(engine: Engine, tables: list[str]) -> Rows:
    """Every row of `tables`, every column, typed by the product's schema (`daemon.store.schema`)."""
    from daemon.store.schema import Base

    out: Rows = {}
    with engine.connect() as conn:
        for name in tables:
            t = Base.metadata.tables[name]
            out[name] = [dict(r._mapping) for r in conn.execute(t.select().order_by(*t.primary_key.columns))]
    return out


def differences(expected: Rows, found: Rows) -> list[str]:
    """Each value that does not read back as written: 'table id column: written -> read'."""
    from daemon.store.schema import Base

    out = []
    for table, rows in expected.items():
        [key] = [c.name for c in Base.metadata.tables[table].primary_key]
        got = {r[key]: r for r in found.get(table, [])}
        for r in rows:
            g = got.pop(r[key], None)
            if g is None:
                out.append(f"{table} {r[key]}: lost")
                continue
            out += [f"{table} {r[key]} {c}: {v!r} -> {g.get(c, '(no column)')!r}"
                    for c, v in r.items() if c not in g or g[c] != v]
            out += [f"{table} {r[key]} {c}: (not written) -> {g[c]!r}" for c in g if c not in r]
        out += [f"{table} {k}: appeared" for k in got]
    return out


def view_columns(engine: Engine) -> dict[str, list[str]]:
    """The columns of each SQL view, in order (what analysts' queries name)."""
    with engine.connect() as conn:
        return {v: list(conn.execute(text(f"SELECT * FROM {v} WHERE 1 = 0")).keys())
                for v in sorted(inspect(conn).get_view_names())}
