"""Prepared datasets: label exports in, `{0,255}` masks and a leakage-free `manifest.csv` out.

    prepare(sources, out=Path("data/prepared"), prompts={...}, policy=SplitPolicy())

Splits are decided per source photo (stem), never per file: Roboflow's augmented
copies `<stem>.rf.<hash>.jpg` of one photo always land in one split. Roboflow's
own `valid` is kept where it shares (almost) no stems with `train`; otherwise
the source's train+valid stems are re-split by a seeded hash of the stem, which
keeps the assignment stable when new photos arrive. Re-running is incremental:
an image whose files have not changed is not decoded again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from rich.progress import track

from model import coco, voc, yolo
from model.errors import DataError
from model.files import write_atomic
from model.labels import LabeledImage, Problem, rasterize, source_stem

READERS = {"voc": voc.read, "yolo": yolo.read, "coco": coco.read}
MANIFEST = "manifest.csv"
PROBLEMS = "problems.csv"
_CACHE = ".prep-cache.json"
_CACHE_VERSION = 1  # bump when mask rasterisation changes, so old masks are redrawn


@dataclass(frozen=True)
class Source:
    """One labeled export and the task its classes stand for."""

    name: str
    root: Path
    task: str  # "crack" or "taping"
    classes: tuple[str, ...]
    format: str = "auto"  # "voc", "yolo", "coco" or "auto"


@dataclass(frozen=True)
class SplitPolicy:
    """How stems are assigned to train / valid."""

    seed: int = 0
    valid_fraction: float = 0.2  # of stems, when a source is (re-)split
    max_shared_fraction: float = 0.1  # re-split when more of valid's stems than this are in train


@dataclass
class Row:
    """One line of `manifest.csv`: an image, its mask for one task, and where it belongs."""

    image: str  # absolute path of the source image
    mask: str  # absolute in memory; relative to the prepared folder in manifest.csv
    task: str
    prompt: str
    stem: str
    split: str
    objects: int
    mask_area: float  # fraction of the image's pixels inside the mask
    dataset: str
    source_split: str
    width: int
    height: int


@dataclass(frozen=True)
class Move:
    """Files whose split differs from the export's, and why."""

    dataset: str
    source_split: str
    split: str
    files: int
    stems: int
    reason: str


@dataclass
class PrepResult:
    rows: list[Row]
    problems: list[Problem]
    moves: list[Move]
    decoded: int  # images decoded this run (0 on an unchanged re-run)

    def summary(self) -> list[dict]:
        """Images, stems, objects and mean mask area per task and split."""
        groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
        for r in self.rows:
            groups[(r.task, r.split)].append(r)
        order = {"train": 0, "valid": 1, "test": 2}
        return [
            {
                "task": task, "split": split, "images": len(rs),
                "stems": len({(r.dataset, r.stem) for r in rs}),
                "objects": sum(r.objects for r in rs),
                "mean_mask_area": sum(r.mask_area for r in rs) / len(rs),
            }
            for (task, split), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9)))
        ]


def detect_format(root: Path) -> str:
    """The export format of `root`, from the files it holds."""
    if (root / "data.yaml").is_file() or any(root.glob("*/labels")):
        return "yolo"
    if any(root.glob("*/_annotations.coco.json")) or (root / "_annotations.coco.json").is_file():
        return "coco"
    if any(root.glob("*.xml")) or any(root.glob("*/*.xml")):
        return "voc"
    raise DataError(f"{root}: no VOC (.xml), YOLO (data.yaml, labels/) or COCO "
                    "(_annotations.coco.json) labels found; point it at an export's root folder")


def read_source(source: Source) -> tuple[list[LabeledImage], list[Problem]]:
    """The labeled images of one export, objects of unknown classes dropped (with a Problem)."""
    if not source.root.is_dir():
        raise DataError(f"{source.root}: dataset folder not found; check the path or --data")
    fmt = detect_format(source.root) if source.format == "auto" else source.format
    if fmt not in READERS:
        raise DataError(f"{source.root}: unknown format {fmt!r}; use one of {sorted(READERS)} or auto")
    images, problems = READERS[fmt](source.root)
    kept = []
    for item in images:
        unknown = sorted({o.name for o in item.objects if o.name not in source.classes})
        if unknown:
            problems.append(Problem(item.label_file, f"unknown class {', '.join(map(repr, unknown))} "
                                    f"for task {source.task} (known: {', '.join(source.classes)}); "
                                    "objects skipped, add the name to the dataset's classes to use them"))
            known = [o for o in item.objects if o.name in source.classes]
            if not known:
                continue  # a photo labeled only with classes we do not know is no negative example
            item.objects = known
        kept.append(item)
    return kept, problems


def assign_splits(source: Source, images: list[LabeledImage],
                  policy: SplitPolicy) -> tuple[dict[Path, str], list[Move]]:
    """The split of every image, keeping each stem in one split; and what moved from the export's."""
    by_stem: dict[str, set[str]] = defaultdict(set)
    for item in images:
        by_stem[source_stem(item.image)].add(item.source_split or "train")
    valid_stems = {s for s, splits in by_stem.items() if "valid" in splits}
    shared = {s for s, splits in by_stem.items() if len(splits) > 1}
    leak = len(shared & valid_stems) / len(valid_stems) if valid_stems else 1.0
    resplit = leak > policy.max_shared_fraction
    reason = (f"no valid split: {policy.valid_fraction:.0%} of stems held out by seed {policy.seed}"
              if not valid_stems else
              f"valid shares {len(shared & valid_stems)} of {len(valid_stems)} stems with train: "
              f"re-split by stem, seed {policy.seed}" if resplit else "stem also in another split")

    def split_of(stem: str) -> str:
        splits = by_stem[stem]
        if resplit and splits & {"train", "valid"}:
            return "valid" if _unit(policy.seed, stem) < policy.valid_fraction else "train"
        return next(s for s in ("train", "valid", "test") if s in splits)

    decided = {stem: split_of(stem) for stem in by_stem}
    out: dict[Path, str] = {}
    moved: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item in images:
        stem = source_stem(item.image)
        out[item.image] = decided[stem]
        if decided[stem] != (item.source_split or "train") or not item.source_split:
            moved[(item.source_split, decided[stem])].append(stem)
    moves = [Move(source.name, a or "(flat)", b, len(stems), len(set(stems)), reason)
             for (a, b), stems in sorted(moved.items())]
    return out, moves


def _unit(seed: int, stem: str) -> float:
    """A number in [0, 1) fixed by seed and stem: the same stem always lands in the same split."""
    digest = hashlib.sha256(f"{seed}:{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def prepare(sources: list[Source], out: Path, prompts: dict[str, str], policy: SplitPolicy,
            progress: bool = True) -> PrepResult:
    """Prepare every source into `out`: masks, `manifest.csv` and `problems.csv`."""
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / _CACHE
    cache = _load_cache(cache_path)
    new_cache: dict[str, dict] = {}
    rows: list[Row] = []
    problems: list[Problem] = []
    moves: list[Move] = []
    decoded = 0
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise DataError(f"dataset names must be unique, got {names}; rename one in the config")
    for source in sources:
        images, found = read_source(source)
        problems += found
        splits, moved = assign_splits(source, images, policy)
        moves += moved
        for item in track(images, description=f"prep {source.name}", disable=not progress):
            mask_rel = Path("masks") / source.name / (item.source_split or "flat") / f"{item.image.stem}.png"
            key = str(item.image.resolve())
            sig = [_CACHE_VERSION, _stat(item.image), _stat(item.label_file), source.task,
                   sorted(source.classes), item.source_split]
            hit = cache.get(key)
            if hit and hit["sig"] == sig and (out / mask_rel).is_file():
                meta = hit["meta"]
            else:
                meta = _make_mask(item, out / mask_rel, problems)
                decoded += 1
                if meta is None:
                    continue
            new_cache[key] = {"sig": sig, "meta": meta}
            rows.append(Row(key, str(out / mask_rel), source.task, prompts[source.task],
                            source_stem(item.image), splits[item.image], len(item.objects),
                            meta["mask_area"], source.name, item.source_split, meta["width"], meta["height"]))
    _remove_stale_masks(out, {Path(r.mask) for r in rows})
    records = [{**asdict(r), "mask": Path(r.mask).relative_to(out).as_posix()} for r in rows]
    _write_csv(out / MANIFEST, [f.name for f in fields(Row)], records)
    _write_csv(out / PROBLEMS, ["path", "reason"], [{"path": str(p.path), "reason": p.reason} for p in problems])
    write_atomic(cache_path, json.dumps(new_cache).encode())
    return PrepResult(rows, problems, moves, decoded)


def _make_mask(item: LabeledImage, path: Path, problems: list[Problem]) -> dict | None:
    try:
        with Image.open(item.image) as im:
            im.load()  # a full decode: a truncated file fails here, not in training
            width, height = im.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        problems.append(Problem(item.image, f"image cannot be read ({exc}); file skipped"))
        return None
    if (item.width, item.height) not in ((width, height), (None, None)) and None not in (item.width, item.height):
        problems.append(Problem(item.label_file, f"label says {item.width}x{item.height} but the image is "
                                                 f"{width}x{height}; used the image's size"))
    mask = rasterize(item.objects, width, height)
    ok, png = cv2.imencode(".png", mask)
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, png.tobytes())
    return {"width": width, "height": height, "mask_area": round(float(np.count_nonzero(mask)) / mask.size, 6)}


def read_manifest(prepared: Path) -> list[Row]:
    """The rows of a prepared folder's manifest, mask paths made absolute."""
    path = prepared / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: no manifest; run `qa-daemon prep --out {prepared}` first")
    types = {f.name: f.type for f in fields(Row)}
    rows = []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            vals = {k: (int(v) if types[k] == "int" else float(v) if types[k] == "float" else v)
                    for k, v in rec.items()}
            vals["mask"] = str(prepared / vals["mask"])
            rows.append(Row(**vals))
    return rows


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _load_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _remove_stale_masks(out: Path, keep: set[Path]) -> None:
    for png in (out / "masks").rglob("*.png"):
        if png not in keep:
            png.unlink()


def _write_csv(path: Path, columns: list[str], records: list[dict]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(records)
    write_atomic(path, text.getvalue())

