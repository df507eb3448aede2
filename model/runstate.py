"""What a training run keeps between sessions, beside its weights: EMA weights, optimizer moments, random state.

`model/train.py` writes these into `last/` at every checkpoint and reads them on `--resume`,
so a stopped run goes on exactly where it stopped. Nothing is pickled.
"""

from __future__ import annotations

import json
import random
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.segmenter import Segmenter

EMA_WEIGHTS = "ema.safetensors"


class EMA:
    """An exponential moving average of the checkpointed weights (batch-norm statistics included).

    The decay ramps up as min(decay, (1 + n) / (10 + n)), so early averages are not
    dominated by the untrained start.
    """

    def __init__(self, model: Segmenter, decay: float):
        self.decay, self.updates = decay, 0
        self.state = {k: v.detach().clone() for k, v in model.trainable_state().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: Segmenter) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.trainable_state()
        keys = list(self.state)
        torch._foreach_lerp_([self.state[k] for k in keys], [current[k].detach() for k in keys], 1 - d)

    @contextmanager
    def applied(self, model: Segmenter):
        """The model with the averaged weights inside the block, its own weights after it."""
        current = model.trainable_state()
        saved = {k: current[k].detach().clone() for k in self.state}
        with torch.no_grad():
            for k, v in self.state.items():
                current[k].copy_(v)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, v in saved.items():
                    current[k].copy_(v)

    def save(self, path: Path) -> None:
        save_file({k: v.contiguous() for k, v in self.state.items()}, str(path),
                  metadata={"updates": str(self.updates)})

    def load(self, path: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            self.updates = int(f.metadata().get("updates", 0))
        for k, v in load_file(str(path)).items():
            self.state[k].copy_(v)


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Optimizer moments as safetensors, its scalars as JSON: resumable without pickle."""
    sd = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, st in sd["state"].items()
               for k, v in st.items() if torch.is_tensor(v)}
    save_file(tensors, str(folder / "optimizer.safetensors"))
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": groups}))


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    tensors = load_file(str(folder / "optimizer.safetensors"))
    groups = json.loads((folder / "optimizer.json").read_text())["param_groups"]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def get_rng() -> dict:
    """The generators augmentation and sampling draw from (the sampler has its own, seeded per epoch)."""
    return {"python": repr(random.getstate()), "torch": torch.get_rng_state().tolist()}


def set_rng(rng: dict | None) -> None:
    if rng:
        import ast

        random.setstate(tuples_of(ast.literal_eval(rng["python"])))
        torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))


def tuples_of(x):
    return tuple(tuples_of(v) for v in x) if isinstance(x, list | tuple) else x
