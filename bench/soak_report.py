"""The soak's checks and report (bench/soak.py): every figure from the store, the daemon's logs and the
mask files, and the table that shows them."""

from __future__ import annotations

import random
import re
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.support.daemon import DaemonProcess
from tests.support.photos import bad_mask


@dataclass
class Dropped:
    name: str
    path: str  # where the daemon sees it
    sha256: str
    width: int
    height: int
    at: datetime  # naive UTC, like the store's timestamps
    method: str  # rename or direct


# --- the checks -----------------------------------------------------------------------------------

def general(error: str) -> str:
    """A failure's message without its paths and numbers, to count failures by cause."""
    error = re.sub(r"'[^']*'|/\S+", "<path>", error)
    return re.sub(r"\d+(\.\d+)?", "N", error)[:110]


def check(db: Path, dropped: list[Dropped], daemon: DaemonProcess, mask_sample: int, seed: int) -> dict:
    """Every figure of the final report, from the store, the daemon's logs and the mask files."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        photos = {r[0]: r[1:] for r in con.execute(
            "SELECT p.sha256, p.id, j.status, j.attempts, j.last_error, p.processed_at, "
            "(SELECT COUNT(*) FROM detections d WHERE d.photo_id = p.id) "
            "FROM photos p JOIN jobs j ON j.photo_id = p.id")}
        masks = con.execute("SELECT p.sha256, d.mask_path FROM detections d JOIN photos p ON p.id = d.photo_id"
                            ).fetchall()
        duplicate_files = con.execute("SELECT path, photo_id FROM files WHERE duplicate").fetchall()
        final = con.execute("SELECT path, stage, error, quarantined_to FROM failures WHERE final").fetchall()
        retried = Counter(f"{stage}: {general(error)}" for stage, error in
                          con.execute("SELECT stage, error FROM failures WHERE NOT final"))
        not_done = dict(con.execute("SELECT status, COUNT(*) FROM jobs WHERE status != 'done' GROUP BY status"))
    finally:
        con.close()
    ours = {d.sha256: d for d in dropped}
    missing_row = (None, None, 0, None, None, 0)  # id, status, attempts, last error, processed at, detections
    row = {d.sha256: photos.get(d.sha256, missing_row) for d in dropped}
    done = [d for d in dropped if row[d.sha256][1] == "done"]
    lost = [d for d in dropped if row[d.sha256][1] != "done"]
    wrong_detections = [(d.name, row[d.sha256][5]) for d in dropped if d.sha256 in photos and row[d.sha256][5] != 2]

    lines = daemon.commits()
    twice = {d.name: lines[d.name] for d in dropped if lines[d.name] > 1}
    unlogged = sum(1 for d in done if lines[d.name] == 0)  # killed between its commit and its log line

    ours_masks = [(p, ours[s]) for s, p in masks if s in ours]
    if mask_sample and mask_sample < len(ours_masks):
        ours_masks = random.Random(seed).sample(ours_masks, mask_sample)
    bad = [(p, why) for p, d in ours_masks if (why := bad_mask(p, d.width, d.height))]

    commits = [datetime.fromisoformat(row[d.sha256][4]) for d in done]
    first_drop = min((d.at for d in dropped), default=None)
    wall = (max(commits) - first_drop).total_seconds() if commits and first_drop else 0.0
    return {
        "dropped": len(dropped),
        "recorded": sum(1 for d in dropped if d.sha256 in photos),
        "done": len(done),
        "lost": len(lost),
        "lost_photos": [{**asdict(d), "at": d.at.isoformat(), "status": row[d.sha256][1],
                         "attempts": row[d.sha256][2], "last_error": row[d.sha256][3]} for d in lost[:20]],
        "false_duplicates": len(duplicate_files),
        "false_duplicate_files": [p for p, _ in duplicate_files[:20]],
        "committed_twice": len(twice),
        "committed_twice_names": dict(list(twice.items())[:20]),
        "done_without_log_line": unlogged,
        "wrong_detections": len(wrong_detections),
        "wrong_detection_photos": wrong_detections[:20],
        "final_failures": len(final),
        "final_failure_rows": [list(r) for r in final[:20]],
        "jobs_not_done": not_done,
        "retried_failures": dict(retried.most_common()),
        "masks_checked": len(ours_masks),
        "bad_masks": len(bad),
        "bad_mask_examples": bad[:20],
        "wall_s": round(wall, 1),
        "photos_per_s": round(len(done) / wall, 3) if wall else 0.0,
    }


def show(r: dict) -> None:
    console = Console()

    def verdict(good: bool) -> str:
        return "[green]ok[/green]" if good else "[bold red]FAIL[/bold red]"

    t = Table(title=f"soak: {r['photos']} photos at {r['rate']}/s, seed {r['seed']} ({r['hardware']})")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("")
    skipped = r["skipped"]
    rows = [
        ("photos dropped", r["dropped"], ""),
        ("recorded (sha256 in photos)", r["recorded"], verdict(r["recorded"] == r["dropped"])),
        ("done", r["done"], verdict(r["done"] == r["dropped"])),
        ("lost (dropped - done)", r["lost"], verdict(r["lost"] == 0)),
        ("duplicates", r["duplicates"], verdict(r["duplicates"] == 0)),
        ("  files.duplicate", r["false_duplicates"], ""),
        ("  committed twice (log lines)", r["committed_twice"], ""),
        ("detections != 2", r["wrong_detections"], verdict(r["wrong_detections"] == 0)),
        ("final failures (quarantined)", r["final_failures"], verdict(r["final_failures"] == 0)),
        ("jobs not done", ", ".join(f"{k} {v}" for k, v in r["jobs_not_done"].items()) or "0",
         verdict(not r["jobs_not_done"])),
        ("bad masks / checked", f"{r['bad_masks']} / {r['masks_checked']}", verdict(r["bad_masks"] == 0)),
        ("exit code after SIGTERM", f"{r['sigterm_exit_code']} mid-run, {r['final_exit_code']} at the end",
         verdict(r["final_exit_code"] == 0 and r["sigterm_exit_code"] in (0, None))),
        ("done, no log line (killed)", r["done_without_log_line"], ""),
        ("throughput", f"{r['photos_per_s']} photos/s", ""),
        ("wall, first drop to last commit", f"{r['wall_s']} s", ""),
        ("downtime (stops and restarts)", f"{r['downtime_s']} s, {r['daemon_runs']} daemon runs", ""),
        ("start-ups", ", ".join(f"{s}" for s in r["startup_s"]) + " s", ""),
        *[(f"fault: {kind}", skipped.get(kind, n), "") for kind, n in r["faults"].items()],
        ("outputs", f"{r['outputs_files']} files, {r['outputs_mb']} MB" + (
            f"; {r['outputs_kb_per_photo']} KB/photo on the tmpfs" if r["outputs_kb_per_photo"] else ""), ""),
        ("daemon peak RSS", f"{r['peak_rss_mb']} MB", ""),
    ]
    for name, value, v in rows:
        t.add_row(name, str(value), v)
    console.print(t)
    if r["retried_failures"]:
        console.print("retried (non-final) failures by cause:")
        for cause, n in r["retried_failures"].items():
            console.print(f"  {n:6d}  {cause}", markup=False, highlight=False)
    for key in ("lost_photos", "false_duplicate_files", "committed_twice_names", "wrong_detection_photos",
                "final_failure_rows", "bad_mask_examples"):
        if r[key]:
            console.print(f"[bold]{key.replace('_', ' ')}[/bold] (first {len(r[key])}):")
            for item in r[key]:
                console.print(f"  {item}", markup=False, highlight=False)
    console.print("[bold green]PASS[/bold green]" if r["ok"] else "[bold red]FAIL[/bold red]")


