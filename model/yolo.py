"""Reader for Roboflow's YOLO export: `<root>/data.yaml` and `<root>/<split>/{images,labels}/`.

A label line is `class cx cy w h` (a box) or `class x1 y1 x2 y2 ...` (a polygon),
all normalised to [0, 1]; `data.yaml`'s `names` gives the class names.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image

from model.images import PHOTO_SUFFIXES
from model.labels import SPLITS, LabeledImage, LabeledObject, Problem, check_point


def read(root: Path) -> tuple[list[LabeledImage], list[Problem]]:
    """Every labeled image under `root`, and the files that could not be (fully) used."""
    problems: list[Problem] = []
    names = _class_names(root / "data.yaml", problems)
    splits = [(s, root / s) for s in SPLITS if (root / s / "labels").is_dir()] or [("", root)]
    images: list[LabeledImage] = []
    for split, folder in splits:
        for image in sorted(p for p in (folder / "images").glob("*") if p.suffix.lower() in PHOTO_SUFFIXES):
            label = folder / "labels" / f"{image.stem}.txt"
            item = _read_one(image, label, split, names, problems)
            if item is not None:
                images.append(item)
    return images, problems


def _class_names(data_yaml: Path, problems: list[Problem]) -> dict[int, str]:
    try:
        names = (yaml.safe_load(data_yaml.read_text()) or {}).get("names", [])
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        problems.append(Problem(data_yaml, f"cannot read class names ({exc}); classes named by number"))
        return {}
    return dict(names) if isinstance(names, dict) else dict(enumerate(names))


def _read_one(image: Path, label: Path, split: str, names: dict[int, str],
              problems: list[Problem]) -> LabeledImage | None:
    try:
        with Image.open(image) as im:
            width, height = im.size
    except OSError as exc:
        problems.append(Problem(image, f"image cannot be read ({exc}); file skipped"))
        return None
    try:
        lines = label.read_text().splitlines() if label.exists() else []  # no file: no objects
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(label, f"label file cannot be read ({exc}); file skipped"))
        return None
    objects = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            obj = _parse_line(line, width, height, f"line {n}", label, names, problems)
            if obj is not None:
                objects.append(obj)
    return LabeledImage(image, label, split, width, height, objects)


def _parse_line(line: str, width: int, height: int, where: str, label: Path,
                names: dict[int, str], problems: list[Problem]) -> LabeledObject | None:
    try:
        cls, *vals = line.split()
        values = [float(v) for v in vals]
        name = names.get(int(cls), cls)
    except ValueError:
        problems.append(Problem(label, f"{where} is not numbers; object skipped"))
        return None
    pairs = [(values[i] * width, values[i + 1] * height) for i in range(0, len(values) - 1, 2)]
    for x, y in pairs:
        bad = check_point(x, y, where)
        if bad:
            problems.append(Problem(label, bad))
            return None
    if len(values) == 4:
        cx, cy, w, h = pairs[0][0], pairs[0][1], values[2] * width, values[3] * height
        return LabeledObject(name, box=(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    if len(values) % 2 or len(pairs) < 3:
        problems.append(Problem(label, f"{where} has {len(values)} values: neither a box (4) "
                                       "nor a polygon of 3+ points; object skipped"))
        return None
    return LabeledObject(name, polygon=tuple(pairs))
