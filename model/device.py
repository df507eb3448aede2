"""Which torch device a run uses. Its own module: training, checkpoint loading and the benchmarks
all choose a device, and none of them is the others' home."""

from __future__ import annotations

import torch

from model.errors import CheckpointError


def resolve_device(device: str) -> torch.device:
    """'auto' is the GPU when there is one; 'cuda' without one is an error the user can fix."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device cuda asked for, but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(device)
