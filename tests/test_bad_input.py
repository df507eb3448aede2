"""Hostile and broken input: odd image files go through the real intake and processor; label files and
configs of any content give a clear error or a result, never a crash."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from daemon.config import ConfigError, load_config
from daemon.intake import Incomplete, NotAPhoto, identify
from model import coco, voc, yolo
from tests.support.photos import photo_bytes
from tests.support.processor import queue

GOOD = {  # name -> (mode, size, format): photos users do send, that must be processed
    "cmyk.jpg": ("CMYK", (64, 48), "JPEG"),
    "grey 16-bit.png": ("I;16", (64, 48), "PNG"),
    "rgb 16-bit.png": ("RGB;16", (64, 48), "PNG"),
    "palette.png": ("P", (64, 48), "PNG"),
    "transparent.png": ("RGBA", (64, 48), "PNG"),
    "grey.jpg": ("L", (64, 48), "JPEG"),
    "one pixel.jpg": ("RGB", (1, 1), "JPEG"),
    "panorama.jpg": ("RGB", (30000, 200), "JPEG"),
    "really a png.jpg": ("RGB", (64, 48), "PNG"),
    "ünïcødé 写真.jpg": ("RGB", (64, 48), "JPEG"),
    "new\nline.jpg": ("RGB", (64, 48), "JPEG"),
    "<b onmouseover=alert(1)>html<b>.jpg": ("RGB", (64, 48), "JPEG"),
}


def write(path: Path, mode: str, size: tuple[int, int], fmt: str, orientation: int | None = None) -> Path:
    rng = np.random.default_rng(len(path.name))
    if mode == "RGB;16":  # 16 bits a channel: Pillow cannot write it, OpenCV can
        cv2.imwrite(str(path), rng.integers(0, 65535, (size[1], size[0], 3), dtype=np.uint16))
        return path
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (size[1], size[0]), dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).convert(mode)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    im.save(path, fmt, **({"exif": exif.tobytes()} if orientation else {}))
    return path


def test_unusual_but_valid_photos_are_processed_at_their_displayed_size(setup):
    root, store, processor = setup
    files = [write(root / name, *spec) for name, spec in GOOD.items()]
    files += [write(root / f"exif-{o}.jpg", "RGB", (60, 40), "JPEG", orientation=o) for o in range(1, 9)]
    queue(store, root, *files)
    while jobs := store.queue.claim(8, "t"):
        processor.process(jobs)
    counts = store.queue.counts(datetime(2000, 1, 1))
    assert (counts["processed"], counts["failed"]) == (len(files), 0)
    out = next(processor.config.outputs.dir.glob("*/*"))
    for f in files:
        with Image.open(f) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):
                w, h = h, w
        image_id = f.stem.replace("\n", "_")
        mask = cv2.imread(str(out / f"{image_id}__segment_crack.png"), cv2.IMREAD_UNCHANGED)
        assert mask is not None, f.name
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}, f.name


def test_sixteen_bit_photos_are_scaled_to_eight_bits_not_clipped(tmp_path):
    from model.images import decode

    grey = np.full((48, 64), 32768, np.uint16)  # mid grey
    Image.fromarray(grey).save(tmp_path / "mid.png")
    assert decode(tmp_path / "mid.png", 128).rgb.mean() == pytest.approx(127.5, abs=1)
    rgb = np.empty((48, 64, 3), np.uint16)
    rgb[...] = (1000, 32768, 65535)  # BGR, as OpenCV writes it: red full, green half, blue nearly none
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb)
    assert cv2.imread(str(tmp_path / "rgb16.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert decode(tmp_path / "rgb16.png", 128).rgb.reshape(-1, 3).mean(axis=0) == pytest.approx((255, 128, 4), abs=1)


@pytest.mark.parametrize(("name", "make", "error"), [
    ("truncated.png", lambda p: p.write_bytes(photo_bytes((300, 200), colour=(1, 2, 3), fmt="PNG")[:-30]),
     Incomplete),
    ("garbage after header.jpg", lambda p: p.write_bytes(photo_bytes((200, 150))[:200] + bytes(range(256)) * 20),
     Incomplete),
    ("bomb.png", lambda p: Image.new("1", (20000, 20000)).save(p), NotAPhoto),
    ("html.jpg", lambda p: p.write_text("<html><script>alert(1)</script></html>"), NotAPhoto),
])
def test_broken_and_dangerous_files_are_refused_with_a_reason(tmp_path, name, make, error):
    path = tmp_path / name
    make(path)
    with pytest.raises(error) as exc:
        identify(path, tmp_path, [])
    assert str(exc.value)


# ---- property-based: label readers and the config loader ---------------------------------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(str), st.integers().map(str),
                   st.sampled_from(["", "-1", "1e309", "nan", " 3 ", "0x10"]))
# derandomized: CI sees the same examples every run; raise max_examples locally to search wider
PROPS = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def voc_xml(draw) -> str:
    objects = "".join(
        f"<object><name>{draw(st.sampled_from(['crack', 'x', '', '&amp;']))}</name>"
        f"<bndbox><xmin>{draw(NUMBER)}</xmin><ymin>{draw(NUMBER)}</ymin><xmax>{draw(NUMBER)}</xmax>"
        f"<ymax>{draw(NUMBER)}</ymax></bndbox>"
        + (f"<polygon><x1>{draw(NUMBER)}</x1><y1>{draw(NUMBER)}</y1></polygon>" if draw(st.booleans()) else "")
        + "</object>" for _ in range(draw(st.integers(0, 3))))
    size = f"<size><width>{draw(NUMBER)}</width><height>{draw(NUMBER)}</height></size>"
    return f"<annotation><filename>a.jpg</filename>{size}{objects}</annotation>"


@st.composite
def voc_files(draw) -> str:
    return draw(st.one_of(st.builds(lambda d: d, TEXT), st.just("<annotation>"), st.composite(voc_xml)()))


def export(root: Path) -> Path:
    (root / "train").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30)).save(root / "train" / "a.jpg")
    return root


@PROPS
@given(xml=voc_files())
def test_any_voc_file_gives_objects_or_a_problem_never_a_crash(tmp_path, xml):
    root = export(tmp_path / "voc")
    (root / "train" / "a.xml").write_text(xml)
    images, problems = voc.read(root)
    assert len(images) + len(problems) >= 1
    for image in images:
        for obj in image.objects:
            assert all(np.isfinite(v) for v in (obj.box or ()))


@PROPS
@given(lines=st.lists(st.one_of(TEXT, st.lists(NUMBER, max_size=9).map(" ".join)), max_size=5),
       names=st.one_of(TEXT, st.just("names: [crack]"), st.just("names: {0: crack}")))
@example(lines=["0 nan 0.5 0.2 0.2", "0 0.1 0.1 inf 0.5 0.3 0.9", "0 0.5 0.5 0.2 0.2", "0 0.1"],
         names="names: [crack]")  # non-finite points, a good box, too few values
def test_any_yolo_labels_give_objects_or_a_problem_never_a_crash(tmp_path, lines, names):
    root = tmp_path / "yolo"
    (root / "train" / "images").mkdir(parents=True, exist_ok=True)
    (root / "train" / "labels").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30)).save(root / "train" / "images" / "a.jpg")
    (root / "train" / "labels" / "a.txt").write_text("\n".join(lines))
    (root / "data.yaml").write_text(names)
    images, problems = yolo.read(root)
    [image] = images  # the photo is read whatever its label file says
    label = root / "train" / "labels" / "a.txt"
    lines = [line for line in label.read_text().splitlines() if line.strip()]
    # each line gives one object, or one problem naming the label file: none is dropped silently
    assert len(image.objects) + sum(p.path == label for p in problems) == len(lines)
    assert_finite(image.objects)


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=12), kids,
                                                                                      max_size=4)), max_leaves=30)


@PROPS
@given(doc=st.one_of(JSON, st.fixed_dictionaries({
    "images": st.lists(st.fixed_dictionaries({"id": JSON, "file_name": st.sampled_from(["a.jpg", "", 3]),
                                              "width": JSON, "height": JSON}), max_size=2),
    "annotations": st.lists(st.fixed_dictionaries({"image_id": JSON, "category_id": JSON, "bbox": JSON,
                                                   "segmentation": JSON}), max_size=3),
    "categories": st.lists(st.fixed_dictionaries({"id": JSON, "name": JSON}), max_size=2)})))
def test_any_coco_json_gives_objects_or_a_problem_never_a_crash(tmp_path, doc):
    root = export(tmp_path / "coco")
    annotations = root / "train" / "_annotations.coco.json"
    annotations.write_text(json.dumps(doc))
    images, problems = coco.read(root)
    if not isinstance(doc, dict) or "images" not in doc:  # not a COCO file: said so, nothing read
        assert images == [] and [p.path for p in problems] == [annotations]
    for image in images:  # only the photo that exists, beside its annotations
        assert image.image == root / "train" / "a.jpg"
        assert_finite(image.objects)


def assert_finite(objects) -> None:
    for obj in objects:
        points = [v for point in obj.polygon or () for v in point] + list(obj.box or ())
        assert points and all(np.isfinite(v) for v in points), obj


@PROPS
@given(text=st.one_of(TEXT, st.dictionaries(st.sampled_from(
    ["model", "watch", "store", "prompts", "sites", "measure", "schedule", "datasets", "nonsense"]),
    JSON, max_size=4).map(json.dumps)))
def test_any_config_file_loads_or_gives_one_clear_error(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message.strip()
