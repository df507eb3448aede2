"""Which torch device a run uses. Its own module: training, checkpoint loading and the benchmarks
all choose a device, and none of them is the others' home."""

from __future__ import annotations

from pathlib import Path

import torch

from model.errors import CheckpointError


def resolve_device(device: str) -> torch.device:
    """'auto' is the GPU when there is one; 'cuda' without one is an error the user can fix."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device cuda asked for, but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(device)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16); elsewhere bf16 is emulated and slower."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.is_file() else ""
    return "amx_bf16" in flags or "avx512_bf16" in flags
