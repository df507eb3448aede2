"""The real datasets beside the repo (../shared/datasets): where they are, a skip where they are not,
real photos from them, and a small copy of both exports as a fixture."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets"
CRACKS = SHARED / "cracks.v1i.voc"
DRYWALL = SHARED / "Drywall-Join-Detect.v1i.voc"
CRACK_CLASS = "NewCracks - v2 2024-05-18 10-54pm"


def need_shared() -> None:
    """Skip the test where the real datasets are absent (they sit beside the repo in CI only)."""
    if not CRACKS.is_dir() or not DRYWALL.is_dir():
        pytest.skip(f"real datasets not found at {SHARED} (they sit beside the repo in CI only)")


def real_photos(split: Path, n: int, skip: int = 0) -> list[Path]:
    """The first `n` photos of a dataset split (after `skip`), in name order."""
    return sorted(split.glob("*.jpg"))[skip: skip + n]


def stems_of(split: Path) -> list[str]:
    """The source photos of a split: Roboflow names each augmented copy `<stem>.rf.<hash>.jpg`."""
    return sorted({p.name.split(".rf.")[0] for p in split.glob("*.jpg")})


def copy_pairs(src_split: Path, dst_split: Path, stems: list[str], per_stem: int = 2) -> list[Path]:
    """Copy up to `per_stem` jpg+xml pairs of each stem; returns the copied images."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for jpg in sorted(src_split.glob("*.jpg")):
        by_stem[jpg.name.split(".rf.")[0]].append(jpg)
    dst_split.mkdir(parents=True, exist_ok=True)
    copied = []
    for stem in stems:
        for jpg in by_stem[stem][:per_stem]:
            shutil.copy(jpg, dst_split / jpg.name)
            shutil.copy(jpg.with_suffix(".xml"), dst_split / jpg.with_suffix(".xml").name)
            copied.append(dst_split / jpg.name)
    return copied


@pytest.fixture
def small_exports(tmp_path: Path) -> dict[str, Path]:
    """Two tiny exports in Roboflow's VOC layout, made of real files.

    Cracks: 3 train stems (2 copies each), 2 valid stems. Drywall: 3 stems whose
    copies sit in both train and valid (the real dataset's leak) plus one train-only stem.
    """
    need_shared()
    cracks, drywall = tmp_path / "cracks.v1i.voc", tmp_path / "Drywall-Join-Detect.v1i.voc"
    copy_pairs(CRACKS / "train", cracks / "train", stems_of(CRACKS / "train")[:3])
    valid_only = [s for s in stems_of(CRACKS / "valid") if s not in set(stems_of(CRACKS / "train"))]
    copy_pairs(CRACKS / "valid", cracks / "valid", valid_only[:2], per_stem=1)
    shared = sorted(set(stems_of(DRYWALL / "train")) & set(stems_of(DRYWALL / "valid")))
    train_only = sorted(set(stems_of(DRYWALL / "train")) - set(stems_of(DRYWALL / "valid")))
    copy_pairs(DRYWALL / "train", drywall / "train", shared[:3] + train_only[:1])
    copy_pairs(DRYWALL / "valid", drywall / "valid", shared[:3], per_stem=1)
    return {"cracks": cracks, "drywall": drywall}


def write_manifest(folder: Path, rows: list) -> None:
    """`rows` (model.prep.Row, masks relative to `folder`) as the prepared folder's manifest.csv."""
    import csv
    from dataclasses import asdict, fields

    from model.prep import MANIFEST, Row

    with (folder / MANIFEST).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, [f.name for f in fields(Row)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
