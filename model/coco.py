"""Reader for Roboflow's COCO export: `<root>/<split>/_annotations.coco.json` beside its images.

Annotations carry `bbox` as `[x, y, w, h]` and `segmentation` as a list of flat
polygons `[x1, y1, x2, y2, ...]` in pixels; each polygon becomes one object.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from model.labels import LabeledImage, LabeledObject, Problem, check_point, image_split_dirs

ANNOTATIONS = "_annotations.coco.json"


def read(root: Path) -> tuple[list[LabeledImage], list[Problem]]:
    """Every labeled image under `root`, and the files that could not be (fully) used."""
    images: list[LabeledImage] = []
    problems: list[Problem] = []
    for split, folder in image_split_dirs(root):
        path = folder / ANNOTATIONS
        if path.exists():
            images += _read_json(path, split, problems)
    return images, problems


def _read_json(path: Path, split: str, problems: list[Problem]) -> list[LabeledImage]:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("the top level is not an object")
        categories = {c["id"]: c["name"] for c in data.get("categories") or []}
        records = {im["id"]: im for im in data["images"] if isinstance(im, dict)}
        annotations = data.get("annotations") or []
        if not isinstance(annotations, list):
            raise ValueError("annotations is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.append(Problem(path, f"not a readable COCO file ({exc}); file skipped"))
        return []
    objects: dict[object, list[LabeledObject]] = {k: [] for k in records}
    for i, ann in enumerate(annotations):
        where = f"annotation {ann.get('id', i)}" if isinstance(ann, dict) else f"annotation {i}"
        image_id = _key(ann.get("image_id")) if isinstance(ann, dict) else None
        if image_id is None or image_id not in records:
            problems.append(Problem(path, f"{where} names no known image; skipped"))
            continue
        objects[image_id] += _objects(ann, categories, where, path, problems)
    out = []
    for key, rec in records.items():
        image = path.parent / str(rec.get("file_name", ""))
        if not image.is_file() or "/" in str(rec.get("file_name", "")):
            problems.append(Problem(image, "image listed in the COCO file is missing; skipped"))
            continue
        out.append(LabeledImage(image, path, split, _size(rec.get("width")), _size(rec.get("height")),
                                objects[key]))
    return out


def _key(value: object) -> object:
    """`value` when it can be a dict key; None otherwise (a list or object where an id should be)."""
    try:
        hash(value)
    except TypeError:
        return None
    return value


def _size(value: object) -> int | None:
    """A positive pixel count, else None (the image file's own size is used)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return int(value) if ok else None


def _objects(ann: dict, categories: dict, where: str, path: Path,
             problems: list[Problem]) -> list[LabeledObject]:
    name = str(categories.get(_key(ann.get("category_id")), ann.get("category_id")))
    box = None
    try:
        x, y, w, h = (float(v) for v in ann.get("bbox") or ())
        box = (x, y, x + w, y + h)
    except (TypeError, ValueError):
        pass
    polygons = []
    seg = ann.get("segmentation")
    for flat in seg if isinstance(seg, list) else []:
        try:
            pts = tuple((float(flat[j]), float(flat[j + 1])) for j in range(0, len(flat) - 1, 2))
        except (TypeError, ValueError, KeyError):
            problems.append(Problem(path, f"{where} has an unreadable polygon; polygon ignored"))
            continue
        bad = next((r for p in pts if (r := check_point(*p, where))), None)
        if bad or len(pts) < 3:
            problems.append(Problem(path, bad.replace("object skipped", "polygon ignored") if bad
                                    else f"{where} has a polygon with {len(pts)} point(s), "
                                         "fewer than 3; polygon ignored"))
            continue
        polygons.append(LabeledObject(name, polygon=pts))
    if polygons:
        return polygons
    if box is None or check_point(box[0], box[1], where) or check_point(box[2], box[3], where):
        problems.append(Problem(path, f"{where} has neither a usable polygon nor box; skipped"))
        return []
    return [LabeledObject(name, box=box)]
