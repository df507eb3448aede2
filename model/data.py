"""Training and validation samples from a prepared manifest: image, mask, prompt.

Each training sample is one image of one task, augmented (scale and crop,
flips, 90-degree rotations, colour jitter), paired with a prompt drawn from that
task's phrasings. With probability `negative_prob` it is paired with the other
task's prompt and an empty mask instead, so the model must read the prompt
rather than segment whatever the photo shows most.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from model.errors import DataError
from model.prep import Row


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


class Rot90(torch.nn.Module):
    """A random multiple of 90 degrees, the same for image and mask."""

    def forward(self, image: tv_tensors.Image, mask: tv_tensors.Mask):
        k = random.randint(0, 3)
        return (tv_tensors.wrap(torch.rot90(image, k, (-2, -1)), like=image),
                tv_tensors.wrap(torch.rot90(mask, k, (-2, -1)), like=mask))


class SegmentationSet(Dataset):
    """(image uint8 (3, S, S), mask float (1, S, S), prompt, task) per manifest row."""

    def __init__(self, rows: list[Row], prompts: dict[str, list[str]], size: int, train: bool,
                 negative_prob: float = 0.0, crop_scale: tuple[float, float] = (0.2, 0.7)):
        self.rows, self.prompts, self.size, self.train = rows, prompts, size, train
        self.negative_prob = negative_prob
        self.augment = v2.Compose([
            v2.RandomResizedCrop(size, scale=crop_scale, ratio=(0.75, 1.333), antialias=True),
            v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), Rot90(),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
        ]) if train else v2.Resize((size, size), antialias=True)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        image = tv_tensors.Image(torch.from_numpy(read_rgb(row.image)).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(read_mask(row.mask)).unsqueeze(0).to(torch.uint8))
        image, mask = self.augment(image, mask)
        task, prompt = row.task, self.prompts[row.task][0]
        if self.train:
            others = [t for t in self.prompts if t != row.task]
            if others and random.random() < self.negative_prob:
                task = random.choice(others)
                mask = torch.zeros_like(mask)
            prompt = random.choice(self.prompts[task])
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).float(), prompt, task


def balanced_sampler(rows: list[Row], num_samples: int, seed: int) -> WeightedRandomSampler:
    """Draws each task equally often, whatever the datasets' sizes."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.task] = counts.get(r.task, 0) + 1
    weights = torch.tensor([1.0 / counts[r.task] for r in rows], dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples, replacement=True, generator=torch.Generator().manual_seed(seed))
