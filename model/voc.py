"""Reader for Roboflow's Pascal VOC export: `<root>/{train,valid,test}/` with `x.jpg` beside `x.xml`.

Objects carry a `<bndbox>` in pixels and, in segmentation exports, a `<polygon>`
whose children are `<x1>,<y1>,<x2>,<y2>,...` in float pixels. A flat folder of
`.jpg` + `.xml` pairs (no split folders) reads as one split named "".
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from model.images import PHOTO_SUFFIXES
from model.labels import (
    LabeledImage,
    LabeledObject,
    Problem,
    check_point,
    image_split_dirs,
)

_COORD = re.compile(r"([xy])(\d+)$")


def read(root: Path) -> tuple[list[LabeledImage], list[Problem]]:
    """Every labeled image under `root`, and the files that could not be (fully) used."""
    images: list[LabeledImage] = []
    problems: list[Problem] = []
    for split, folder in image_split_dirs(root):
        for xml in sorted(folder.glob("*.xml")):
            item = read_file(xml, split, problems)
            if item is not None:
                images.append(item)
    return images, problems


def read_file(xml: Path, split: str, problems: list[Problem]) -> LabeledImage | None:
    """One VOC annotation; None (with a Problem) when it is unusable as a whole."""
    try:
        tree = ET.parse(xml)
    except (ET.ParseError, OSError) as exc:
        problems.append(Problem(xml, f"XML does not parse ({exc}); file skipped"))
        return None
    ann = tree.getroot()
    image = _find_image(xml, ann.findtext("filename"))
    if image is None:
        problems.append(Problem(xml, "no image beside it (.jpg/.jpeg/.png); file skipped"))
        return None
    width, height = _int(ann.findtext("size/width")), _int(ann.findtext("size/height"))
    objects = []
    for i, obj in enumerate(ann.iter("object")):
        parsed = _object(obj, f"object {i}", xml, problems)
        if parsed is not None:
            objects.append(parsed)
    return LabeledImage(image, xml, split, width, height, objects)


def _find_image(xml: Path, filename: str | None) -> Path | None:
    candidates = [xml.parent / filename] if filename and "/" not in filename else []
    candidates += [xml.with_suffix(s) for s in PHOTO_SUFFIXES + tuple(s.upper() for s in PHOTO_SUFFIXES)]
    return next((c for c in candidates if c.is_file()), None)


def _object(obj: ET.Element, where: str, xml: Path, problems: list[Problem]) -> LabeledObject | None:
    name = (obj.findtext("name") or "").strip()
    box = _box(obj.find("bndbox"))
    if box is None and obj.find("bndbox") is not None:
        problems.append(Problem(xml, f"{where} has an unreadable <bndbox>; box ignored"))
    if box is not None:
        bad = check_point(box[0], box[1], where) or check_point(box[2], box[3], where)
        if bad:
            problems.append(Problem(xml, bad))
            return None
    polygon = None
    poly_el = obj.find("polygon")
    if poly_el is not None:
        polygon, reason = _polygon(poly_el, where)
        if reason:
            problems.append(Problem(xml, reason))
            if polygon is None and box is None:
                return None
    if polygon is None and box is None:
        problems.append(Problem(xml, f"{where} has neither a polygon nor a box; object skipped"))
        return None
    coords = [c for p in (polygon or ()) for c in p] + list(box or ())
    if any(c < 0 for c in coords):
        problems.append(Problem(xml, f"{where} has negative coordinates; clipped to the image"))
    return LabeledObject(name, polygon, box)


def _polygon(el: ET.Element, where: str) -> tuple[tuple[tuple[float, float], ...] | None, str]:
    xs: dict[int, float] = {}
    ys: dict[int, float] = {}
    for child in el:
        m = _COORD.match(child.tag)
        value = _float(child.text)
        if m is None or value is None:
            return None, f"{where} has an unreadable polygon element <{child.tag}>; polygon ignored"
        (xs if m.group(1) == "x" else ys)[int(m.group(2))] = value
    if set(xs) != set(ys):
        return None, f"{where} has a polygon with unpaired x/y elements; polygon ignored"
    points = tuple((xs[i], ys[i]) for i in sorted(xs))
    for x, y in points:
        bad = check_point(x, y, where)
        if bad:
            return None, bad.replace("object skipped", "polygon ignored")
    if len(points) < 3:
        return None, f"{where} has a polygon with {len(points)} point(s), fewer than 3; polygon ignored"
    return points, ""


def _box(el: ET.Element | None) -> tuple[float, float, float, float] | None:
    if el is None:
        return None
    vals = [_float(el.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
    if any(v is None for v in vals):
        return None
    return tuple(vals)  # type: ignore[return-value]


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    """A positive whole number, else None (also for NaN and infinity, which `int()` refuses)."""
    v = _float(text)
    return int(v) if v is not None and math.isfinite(v) and v > 0 else None
