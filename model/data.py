"""Training and validation samples from a prepared manifest: image, mask, prompt.

Each training sample is one image of one task, cropped at the scale its objects
have at inference (a per-task range of output/source pixel ratios), flipped and
turned by multiples of 90 degrees, colour-jittered, and paired with a prompt
drawn from that task's phrasings. Crack crops are centred on a crack pixel with
probability `centre_prob`, since cracks cover a few percent of a photo and a
uniform crop mostly shows bare wall. With probability `negative_prob` a sample
is paired with the other task's prompt and an empty mask instead, so the model
must read the prompt rather than segment whatever the photo shows most.

Images and masks are decoded once into an on-disk cache (`ImageCache`), keyed by
the manifest's content, so a two-hour run does not decode every JPEG hundreds of
times; augmentation runs in OpenCV and numpy on the small crop.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.progress import track
from torch.utils.data import Dataset, WeightedRandomSampler

from model.errors import DataError
from model.prep import MANIFEST, Row


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3)."""
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise DataError(f"{path}: image cannot be read; run `qa-daemon prep` again")
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def read_mask(path: str | Path) -> np.ndarray:
    """A {0,255} mask file as a bool (H, W) array."""
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise DataError(f"{path}: mask cannot be read; run `qa-daemon prep` again")
    return m > 127


class ImageCache:
    """Every row's decoded image (uint8 RGB) and mask (uint8 {0,1}) in two flat files, memory-mapped.

    Lives in `<prepared>/cache/<manifest digest>/`; a changed manifest (new photos,
    a new split) gets a new folder and the old ones are removed.
    """

    def __init__(self, prepared: Path, rows: list[Row], progress: bool = False):
        manifest = (prepared / MANIFEST).read_bytes()
        keys = "\n".join(f"{r.image}|{r.mask}" for r in rows).encode()
        digest = hashlib.sha256(manifest + b"\0" + keys).hexdigest()[:16]
        root = prepared / "cache"
        self.folder = root / digest
        index_path = self.folder / "index.json"
        if not index_path.is_file():
            self._build(rows, root, progress)
        index = json.loads(index_path.read_text())
        self.entries = {(e["image"], e["mask"]): e for e in index["entries"]}
        self.pixels = np.memmap(self.folder / "pixels.bin", np.uint8, mode="r")
        self.masks = np.memmap(self.folder / "masks.bin", np.uint8, mode="r")

    def _build(self, rows: list[Row], root: Path, progress: bool) -> None:
        """Write the cache in a private folder and rename it into place: a reader never sees half of one,
        and two builders (a retrain beside a long run) do not trip over each other."""
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
        try:
            entries, pix_off, mask_off = [], 0, 0
            with open(tmp / "pixels.bin", "wb") as pf, open(tmp / "masks.bin", "wb") as mf:
                for r in track(rows, "caching decoded images", disable=not progress):
                    rgb, mask = read_rgb(r.image), read_mask(r.mask)
                    if mask.shape != rgb.shape[:2]:
                        raise DataError(f"{r.mask}: mask {mask.shape} and image {rgb.shape[:2]} differ; "
                                        "run `qa-daemon prep` again")
                    pf.write(np.ascontiguousarray(rgb).tobytes())
                    mf.write(mask.astype(np.uint8).tobytes())
                    h, w = mask.shape
                    entries.append({"image": r.image, "mask": r.mask, "h": h, "w": w, "pixels": pix_off,
                                    "mask_at": mask_off})
                    pix_off, mask_off = pix_off + h * w * 3, mask_off + h * w
            (tmp / "index.json").write_text(json.dumps({"entries": entries}))
            try:
                tmp.rename(self.folder)
            except OSError:  # another process finished the same cache first
                if not (self.folder / "index.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in root.iterdir():  # caches of earlier manifests (a build in progress starts with a dot)
            if old != self.folder and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)

    def get(self, row: Row) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 (H, W, 3), mask uint8 {0,1} (H, W)), read-only views."""
        e = self.entries[(row.image, row.mask)]
        h, w = e["h"], e["w"]
        rgb = self.pixels[e["pixels"]: e["pixels"] + h * w * 3].reshape(h, w, 3)
        return rgb, self.masks[e["mask_at"]: e["mask_at"] + h * w].reshape(h, w)


@dataclass
class Augment:
    """How training crops are drawn and altered; every piece can be switched off."""

    crop_size: int = 320
    # output pixels per source pixel, per task: the scale objects have at inference
    # (a 640 px photo run at input 448 is 0.7); drawn log-uniformly in the range
    scale: dict[str, tuple[float, float]] = field(default_factory=lambda: {"crack": (0.55, 1.0),
                                                                          "taping": (0.45, 0.8)})
    centre_prob: dict[str, float] = field(default_factory=lambda: {"crack": 0.6})  # crop centred on an object pixel
    aspect: tuple[float, float] = (0.8, 1.25)
    flips: bool = True
    jitter: float = 0.3  # brightness, contrast and saturation, each by up to this share
    # appearance changes aimed at missed cracks, each with its probability (0 disables)
    grey: float = 0.0
    invert: float = 0.0
    blur: float = 0.0
    jpeg: float = 0.0
    strong_contrast: float = 0.0


class SegmentationSet(Dataset):
    """(image uint8 (3, S, S), mask float (1, S, S), prompt, task) per manifest row.

    For validation (`train=False`) the whole image is resized to S x S.
    """

    def __init__(self, rows: list[Row], prompts: dict[str, list[str]], augment: Augment, train: bool,
                 negative_prob: float = 0.0, cache: ImageCache | None = None):
        self.rows, self.prompts, self.aug, self.train = rows, prompts, augment, train
        self.negative_prob, self.cache = negative_prob, cache

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, row: Row) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is not None:
            return self.cache.get(row)
        return read_rgb(row.image), read_mask(row.mask).astype(np.uint8)

    def __getitem__(self, i: int):
        row = self.rows[i]
        rgb, mask = self.load(row)
        if self.train:
            rgb, mask = self.crop(rgb, mask, row.task)
            rgb, mask = self.geometry(rgb, mask)
            rgb = self.appearance(rgb)
        else:
            s = self.aug.crop_size
            rgb = cv2.resize(rgb, (s, s), interpolation=cv2.INTER_AREA)
            mask = (cv2.resize(mask * 255, (s, s), interpolation=cv2.INTER_AREA) >= 128).astype(np.uint8)
        task, prompt = row.task, self.prompts[row.task][0]
        if self.train:
            others = [t for t in self.prompts if t != row.task]
            if others and random.random() < self.negative_prob:
                task = random.choice(others)
                mask = np.zeros_like(mask)
            prompt = random.choice(self.prompts[task])
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        target = torch.from_numpy(np.ascontiguousarray(mask)).unsqueeze(0).float()
        return image, target, prompt, task

    def crop(self, rgb: np.ndarray, mask: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
        """A crop_size square at the task's inference scale, centred on an object pixel when drawn so."""
        a, s = self.aug, self.aug.crop_size
        lo, hi = a.scale.get(task, (0.5, 1.0))
        ratio = math.exp(random.uniform(math.log(lo), math.log(hi)))
        aspect = math.exp(random.uniform(math.log(a.aspect[0]), math.log(a.aspect[1])))
        h, w = mask.shape
        ch = min(h, max(8, round(s / ratio * math.sqrt(aspect))))
        cw = min(w, max(8, round(s / ratio / math.sqrt(aspect))))
        if random.random() < a.centre_prob.get(task, 0.0) and mask.any():
            step = 4 if mask[::4, ::4].any() else 1  # every 4th pixel is plenty, unless the object is thinner
            ys, xs = np.nonzero(mask[::step, ::step])
            k = random.randrange(len(ys))
            cy = ys[k] * step + random.uniform(-ch / 4, ch / 4)
            cx = xs[k] * step + random.uniform(-cw / 4, cw / 4)
            y0 = int(np.clip(round(cy - ch / 2), 0, h - ch))
            x0 = int(np.clip(round(cx - cw / 2), 0, w - cw))
        else:
            y0, x0 = random.randint(0, h - ch), random.randint(0, w - cw)
        region, m = rgb[y0: y0 + ch, x0: x0 + cw], mask[y0: y0 + ch, x0: x0 + cw]
        shrink = ch > s or cw > s
        region = cv2.resize(region, (s, s), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        m = cv2.resize(m * 255, (s, s), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR) >= 128
        return region, m.astype(np.uint8)

    def geometry(self, rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.aug.flips:
            return rgb, mask
        if random.random() < 0.5:
            rgb, mask = rgb[:, ::-1], mask[:, ::-1]
        if random.random() < 0.5:
            rgb, mask = rgb[::-1], mask[::-1]
        k = random.randint(0, 3)
        return np.rot90(rgb, k), np.rot90(mask, k)

    def appearance(self, rgb: np.ndarray) -> np.ndarray:
        a = self.aug
        x = rgb.astype(np.float32)
        if a.jitter:
            j = a.jitter
            x = x * random.uniform(1 - j, 1 + j)  # brightness
            mean = x.mean()
            x = (x - mean) * random.uniform(1 - j, 1 + j) + mean  # contrast
            grey = x.mean(axis=2, keepdims=True)
            x = (x - grey) * random.uniform(1 - j, 1 + j) + grey  # saturation
        if a.strong_contrast and random.random() < a.strong_contrast:
            mean = x.mean()
            x = (x - mean) * random.uniform(0.4, 2.2) + mean + random.uniform(-60, 60)
        if a.grey and random.random() < a.grey:
            x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
        if a.invert and random.random() < a.invert:
            x = 255 - x  # pale cracks on dark concrete look like dark cracks on pale plaster
        out = np.clip(x, 0, 255).astype(np.uint8)
        if a.blur and random.random() < a.blur:
            out = cv2.GaussianBlur(out, (0, 0), random.uniform(0.5, 1.5))
        if a.jpeg and random.random() < a.jpeg:
            ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, random.randint(30, 90)])
            out = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if ok else out
        return out


def balanced_sampler(rows: list[Row], num_samples: int, seed: int) -> WeightedRandomSampler:
    """Draws each task equally often, whatever the datasets' sizes."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.task] = counts.get(r.task, 0) + 1
    weights = torch.tensor([1.0 / counts[r.task] for r in rows], dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples, replacement=True, generator=torch.Generator().manual_seed(seed))
