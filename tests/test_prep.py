"""`qa-daemon prep`: masks that follow the labels, leakage-free splits, bad files reported and skipped."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from model import voc
from model.labels import LabeledObject, rasterize
from model.prep import Source, SplitPolicy, prepare, read_manifest
from tests.support.datasets import CRACK_CLASS, need_shared

PROMPTS = {"crack": "segment crack", "taping": "segment taping area"}


def sources(exports: dict[str, Path], fmt: str = "auto") -> list[Source]:
    return [Source("cracks", exports["cracks"], "crack", (CRACK_CLASS,), fmt),
            Source("drywall", exports["drywall"], "taping", ("drywall-join",), fmt)]


def manifest(path: Path) -> list[dict]:
    with (path / "manifest.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_prep_cli_writes_binary_masks_of_image_size_and_a_manifest(cli, write_config, small_exports, tmp_path):
    config = write_config()
    out = tmp_path / "prep"
    result = cli("--config", config, "prep", "-q", "--data", small_exports["cracks"],
                 "--data", small_exports["drywall"], "--out", out)
    assert result.code == 0, result.stderr
    rows = manifest(out)
    assert {r["task"] for r in rows} == {"crack", "taping"}
    assert set(rows[0]) >= {"image", "mask", "task", "prompt", "stem", "split", "objects", "mask_area"}
    for r in rows:
        assert not Path(r["mask"]).is_absolute()
        mask = np.asarray(Image.open(out / r["mask"]))
        assert mask.ndim == 2 and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert Image.open(r["image"]).size == (mask.shape[1], mask.shape[0])
        assert r["prompt"] == PROMPTS[r["task"]]
        assert float(r["mask_area"]) == pytest.approx((mask > 0).mean(), abs=1e-5)
    assert "Prepared" in result.stdout and "crack" in result.stdout


def test_crack_masks_follow_polygons_not_boxes(small_exports, tmp_path):
    result = prepare(sources(small_exports), tmp_path / "p", PROMPTS, SplitPolicy(), progress=False)
    checked = 0
    for row in result.rows:
        if row.task != "crack":
            continue
        item = voc.read_file(Path(row.image).with_suffix(".xml"), "", [])
        boxes = [LabeledObject(o.name, box=o.box) for o in item.objects]
        box_area = (rasterize(boxes, row.width, row.height) > 0).mean()
        assert row.mask_area < 0.8 * box_area
        checked += 1
    assert checked >= 6


def test_no_stem_lands_in_two_splits_and_leaky_valid_is_resplit(small_exports, tmp_path):
    result = prepare(sources(small_exports), tmp_path / "p", PROMPTS, SplitPolicy(valid_fraction=0.4),
                     progress=False)
    splits = defaultdict(set)
    for r in result.rows:
        splits[(r.dataset, r.stem)].add(r.split)
    assert all(len(s) == 1 for s in splits.values())
    # cracks' valid shares nothing with train: kept as Roboflow made it
    assert {r.split for r in result.rows if r.dataset == "cracks" and r.source_split == "valid"} == {"valid"}
    moved = [m for m in result.moves if m.dataset == "drywall"]
    assert moved and all("re-split by stem" in m.reason for m in moved)


def test_resplit_is_deterministic_for_a_seed(small_exports, tmp_path):
    a = prepare(sources(small_exports), tmp_path / "a", PROMPTS, SplitPolicy(seed=3), progress=False)
    b = prepare(sources(small_exports), tmp_path / "b", PROMPTS, SplitPolicy(seed=3), progress=False)
    assert [(r.stem, r.split) for r in a.rows] == [(r.stem, r.split) for r in b.rows]


def test_rerun_is_incremental_and_idempotent(small_exports, tmp_path):
    out = tmp_path / "p"
    first = prepare(sources(small_exports), out, PROMPTS, SplitPolicy(), progress=False)
    before = (out / "manifest.csv").read_bytes()
    again = prepare(sources(small_exports), out, PROMPTS, SplitPolicy(), progress=False)
    assert first.decoded == len(first.rows) and again.decoded == 0
    assert (out / "manifest.csv").read_bytes() == before
    # a label that changes is redone, and a removed image's mask goes away
    xml = next(small_exports["cracks"].glob("train/*.xml"))
    xml.write_text(xml.read_text().replace("<polygon>", "<ignored>").replace("</polygon>", "</ignored>"))
    gone = next(small_exports["drywall"].glob("train/*.jpg"))
    gone.unlink(), gone.with_suffix(".xml").unlink()
    third = prepare(sources(small_exports), out, PROMPTS, SplitPolicy(), progress=False)
    assert third.decoded == 1
    assert not list(out.rglob(f"{gone.stem}.png"))
    assert read_manifest(out)[0].mask.startswith(str(out))


# --- bad input --------------------------------------------------------------------------------

def _voc_xml(filename: str, objects: str, size=(64, 48)) -> str:
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{objects}</annotation>")


def _obj(name="crack", box=(2, 2, 20, 20), poly=None) -> str:
    b = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))
    p = ""
    if poly is not None:
        pts = "".join(f"<x{i}>{x}</x{i}><y{i}>{y}</y{i}>" for i, (x, y) in enumerate(poly, 1))
        p = f"<polygon>{pts}</polygon>"
    return f"<object><name>{name}</name><bndbox>{b}</bndbox>{p}</object>"


@pytest.fixture
def bad_export(tmp_path) -> Path:
    """A VOC export with one good image and one of each kind of bad file."""
    root = tmp_path / "bad.v1i.voc"
    train = root / "train"
    train.mkdir(parents=True)

    def image(name: str, size=(64, 48)):
        Image.new("RGB", size, (120, 120, 120)).save(train / name)

    cases = {
        "good": _obj(poly=[(2, 2), (30, 3), (20, 40)]),
        "twopoint": _obj(poly=[(2, 2), (30, 3)]),
        "nan": _obj(box=("nan", 2, 10, 10)),
        "negative": _obj(box=(-5, -3, 10, 64)),
        "unknown": _obj(name="graffiti"),
        "mixed": _obj() + _obj(name="graffiti"),
    }
    for stem, objs in cases.items():
        image(f"{stem}.jpg")
        (train / f"{stem}.xml").write_text(_voc_xml(f"{stem}.jpg", objs))
    (train / "broken.xml").write_text("<annotation><filename>broken.jpg</filename")
    image("broken.jpg")
    (train / "orphan.xml").write_text(_voc_xml("orphan.jpg", _obj()))
    image("truncated.jpg")
    data = (train / "truncated.jpg").read_bytes()
    (train / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (train / "truncated.xml").write_text(_voc_xml("truncated.jpg", _obj()))
    return root


def test_bad_files_are_reported_by_name_and_the_rest_is_prepared(cli, write_config, bad_export, tmp_path):
    config = write_config({"datasets": [{"name": "bad", "root": str(bad_export), "task": "crack",
                                         "classes": ["crack"]}]})
    out = tmp_path / "p"
    result = cli("--config", config, "prep", "-q", "--out", out)
    assert result.code == 0, result.stderr
    err = result.stderr
    assert "broken.xml: XML does not parse" in err
    assert "orphan.xml: no image beside it" in err
    assert "twopoint.xml: object 0 has a polygon with 2 point(s), fewer than 3" in err
    assert "nan.xml: object 0 has a non-finite coordinate" in err
    assert "negative.xml: object 0 has negative coordinates; clipped" in err
    assert "unknown.xml: unknown class 'graffiti'" in err
    assert "truncated.jpg: image cannot be read" in err
    prepared = {Path(r["image"]).stem: r for r in manifest(out)}
    # kept: the good one, the two-point one (its box), the negative one (clipped), the mixed one
    assert set(prepared) == {"good", "twopoint", "negative", "mixed", "nan"}
    assert prepared["nan"]["objects"] == "0"
    neg = np.asarray(Image.open(out / prepared["negative"]["mask"]))
    assert neg[0, 0] == 255 and neg.shape == (48, 64)
    assert prepared["mixed"]["objects"] == "1"
    problems = list(csv.DictReader((out / "problems.csv").open()))
    assert len(problems) >= 7


def test_box_reaching_one_pixel_past_the_edge_is_clipped():
    mask = rasterize([LabeledObject("x", box=(600, 0, 641, 640))], 640, 640)
    assert mask.shape == (640, 640) and mask[:, 600:].all() and not mask[:, :600].any()


# --- other export formats ---------------------------------------------------------------------

def _to_yolo(voc_root: Path, dest: Path, names: list[str]) -> None:
    """Convert a VOC export into Roboflow's YOLO layout (polygons when present, else boxes)."""
    (dest).mkdir(parents=True)
    (dest / "data.yaml").write_text(yaml.safe_dump({"names": names, "nc": len(names)}))
    for split_dir in voc_root.iterdir():
        images, labels = dest / split_dir.name / "images", dest / split_dir.name / "labels"
        images.mkdir(parents=True), labels.mkdir(parents=True)
        for xml in split_dir.glob("*.xml"):
            item = voc.read_file(xml, split_dir.name, [])
            shutil.copy(item.image, images / item.image.name)
            lines = []
            for o in item.objects:
                c = names.index(o.name)
                if o.polygon:
                    lines.append(f"{c} " + " ".join(f"{x / item.width} {y / item.height}" for x, y in o.polygon))
                else:
                    x0, y0, x1, y1 = o.box
                    lines.append(f"{c} {(x0 + x1) / 2 / item.width} {(y0 + y1) / 2 / item.height} "
                                 f"{(x1 - x0) / item.width} {(y1 - y0) / item.height}")
            (labels / f"{item.image.stem}.txt").write_text("\n".join(lines))


def _to_coco(voc_root: Path, dest: Path, names: list[str]) -> None:
    """Convert a VOC export into Roboflow's COCO layout."""
    for split_dir in voc_root.iterdir():
        out = dest / split_dir.name
        out.mkdir(parents=True)
        data = {"categories": [{"id": i, "name": n} for i, n in enumerate(names)], "images": [], "annotations": []}
        for i, xml in enumerate(sorted(split_dir.glob("*.xml"))):
            item = voc.read_file(xml, split_dir.name, [])
            shutil.copy(item.image, out / item.image.name)
            data["images"].append({"id": i, "file_name": item.image.name, "width": item.width, "height": item.height})
            for o in item.objects:
                x0, y0, x1, y1 = o.box
                seg = [[c for p in o.polygon for c in p]] if o.polygon else []
                data["annotations"].append({"id": len(data["annotations"]), "image_id": i,
                                            "category_id": names.index(o.name),
                                            "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": seg})
        (out / "_annotations.coco.json").write_text(json.dumps(data))


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_yolo_and_coco_exports_give_the_same_masks_as_voc(small_exports, tmp_path, fmt):
    need_shared()
    convert = {"yolo": _to_yolo, "coco": _to_coco}[fmt]
    converted = {}
    for name, cls in (("cracks", CRACK_CLASS), ("drywall", "drywall-join")):
        converted[name] = tmp_path / f"{name}-{fmt}"
        convert(small_exports[name], converted[name], [cls])
    ref = prepare(sources(small_exports), tmp_path / "voc", PROMPTS, SplitPolicy(), progress=False)
    got = prepare(sources(converted), tmp_path / fmt, PROMPTS, SplitPolicy(), progress=False)
    assert not got.problems
    by_name = {Path(r.image).name: r for r in got.rows}
    assert set(by_name) == {Path(r.image).name for r in ref.rows}
    for r in ref.rows:
        g = by_name[Path(r.image).name]
        assert g.split == r.split
        a, b = np.asarray(Image.open(r.mask)) > 0, np.asarray(Image.open(g.mask)) > 0
        iou = (a & b).sum() / max(1, (a | b).sum())
        assert iou > 0.97, (r.image, iou)  # YOLO's normalised coordinates round a little


def tiny_voc(root: Path, cls: str, n: int = 3) -> Path:
    """A VOC export of `n` small photos in train/, each with one box of class `cls`."""
    (root / "train").mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (64, 48), (40 * i, 90, 90)).save(root / "train" / f"p{i}.jpg")
        (root / "train" / f"p{i}.xml").write_text(
            f"<annotation><filename>p{i}.jpg</filename><size><width>64</width><height>48</height></size>"
            f"<object><name>{cls}</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>{30 + i}</xmax><ymax>20</ymax>"
            "</bndbox></object></annotation>")
    return root


def test_prep_data_name_dir_gives_each_named_dataset_its_folder_whatever_the_order(cli, write_config, tmp_path):
    taping, cracks = tiny_voc(tmp_path / "export-1", "drywall-join"), tiny_voc(tmp_path / "export-2", "crack")
    config, out = write_config(), tmp_path / "prep"
    # neither folder is named like a configured root, and they come in the other order than the config's
    result = cli("--config", config, "prep", "-q", "--data", f"drywall={taping}", "--data", f"cracks={cracks}",
                 "--out", out)
    assert result.code == 0, result.stderr
    rows = manifest(out)
    assert {r["task"] for r in rows} == {"crack", "taping"}
    for r in rows:
        assert Path(r["image"]).parent.parent == (cracks if r["task"] == "crack" else taping), r
    unknown = cli("--config", config, "prep", "-q", "--data", f"walls={cracks}", "--out", out)
    assert unknown.code == 2 and "cannot tell which dataset" in unknown.stderr and "NAME=DIR" in unknown.stderr
