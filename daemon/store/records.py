"""What crosses the store's boundary: records handed in by intake and the processor, and handed back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Identified:
    """A complete photo file and what intake learned of it, ready to be recorded."""

    path: Path
    sha256: str
    image_ids: tuple[str, ...]  # names for its mask files, in order of preference: the first free in its site
    size: int
    mtime_ns: int
    site: str
    location: str
    captured_at: datetime
    captured_from: str
    width: int
    height: int


@dataclass(frozen=True)
class Added:
    """What the store made of an identified file."""

    photo_id: int
    kind: str  # new; duplicate (these bytes arrived before under another name); known (this file, seen again)


@dataclass(frozen=True)
class Claimed:
    """A job the processor holds: its photo, as the store knows it."""

    job_id: int
    photo_id: int
    attempts: int  # including this one
    path: Path
    image_id: str
    site: str
    location: str
    captured_at: datetime
    width: int
    height: int


@dataclass
class DetectionResult:
    """One prompt's mask and measurements, to be recorded."""

    task: str
    prompt: str
    mask_path: Path
    threshold: float
    measures: dict[str, Any]  # column name -> value, from daemon.measure


@dataclass
class PhotoResult:
    """A processed photo's files and detections, to be recorded with its job marked done."""

    output_dir: Path
    overlay_path: Path | None
    processing_ms: float
    detections: list[DetectionResult]


@dataclass(frozen=True)
class ResultFiles:
    """A done photo and the files its results point at, for the scrub to check."""

    photo_id: int
    source: Path  # where its photo file is now
    source_bytes: int
    overlay: Path | None
    masks: tuple[Path, ...]
