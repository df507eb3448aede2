"""Retraining: the labeled-data inbox, the retrain request, and `qa-daemon retrain`'s promote-if-not-worse.

    check(config, store)        # the scheduled check: counts new labeled images, may request a retrain
    outcome = retrain(config, store)

Users drop Pascal VOC exports of newly labeled photos (for example corrected daemon
outputs) anywhere under `retrain.inbox`. A labeled image is a JPEG or PNG with an `.xml`
beside it; it is new when first seen after the active model was promoted. At
`retrain.min_new_images` the check records a request and, with `retrain.auto`, starts
`qa-daemon retrain` as a separate process (never in the daemon's inference thread).

`retrain` prepares the configured datasets plus the inbox, fine-tunes from the active
checkpoint, scores candidate and active model on the same validation split, and promotes
the candidate only when no task's mIoU drops by more than `retrain.max_regression`.
Every version stays in the store's `model_versions` with its metrics; a running daemon
switches to a promoted version between batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from daemon.config import STORE_ENV, TASKS, Config
from daemon.paths import PHOTO_SUFFIXES
from daemon.store import Store
from model.errors import DataError
from model.evaluate import evaluate, labeled_samples, samples_from_labels
from model.prep import Source, SplitPolicy, prepare
from model.segmenter import Segmenter, load_checkpoint, read_card, weights_sha256

log = logging.getLogger("qa-daemon")


def inbox_images(inbox: Path) -> list[Path]:
    """Labeled images in the inbox: photos with a VOC `.xml` beside them."""
    if not inbox.is_dir():
        return []
    return sorted(p for p in inbox.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES
                  and p.with_suffix(".xml").is_file() and not p.name.startswith("."))


def check(config: Config, store: Store, spawn: bool = True) -> int | None:
    """Record new inbox images; at `min_new_images` new ones, a retrain request (its id, else None)."""
    for image in inbox_images(config.retrain.inbox):
        with open(image, "rb") as f:
            store.add_labeled(hashlib.file_digest(f, "sha256").hexdigest(), image)
    new = store.new_labeled()
    if new < config.retrain.min_new_images:
        return None
    request = store.request_retrain(new)
    if request is not None:
        log.info("retrain requested: %d newly labeled images in %s", new, config.retrain.inbox)
        if config.retrain.auto and spawn:
            start_retrain(config, request)
    return request


def start_retrain(config: Config, request: int) -> subprocess.Popen:
    """`qa-daemon retrain` as its own process, logging to the training folder."""
    config.train.out.mkdir(parents=True, exist_ok=True)
    log_path = config.train.out / f"retrain-{request}.log"
    log.info("starting `qa-daemon retrain` for request %d; log: %s", request, log_path)
    config_option = ["--config", str(config.source)] if config.source.is_file() else []  # else: the defaults
    # the store the daemon runs on (it may come from --store), through the environment: a URL's password
    # must not show in the process list
    env = {**os.environ, STORE_ENV: config.store.url}
    with log_path.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "daemon", *config_option, "retrain", "--request", str(request),
                                 "--quiet"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)


@dataclass
class Outcome:
    promoted: bool
    candidate: Path
    candidate_version: int
    active_version: int | None
    scores: dict[str, dict[str, float]]  # task -> {"candidate": mIoU, "active": mIoU}
    reason: str


def gate(scores: dict[str, dict[str, float]], max_regression: float) -> tuple[bool, str]:
    """Promote only if no task's candidate mIoU is below the active one by more than `max_regression`."""
    drops = {t: s["active"] - s["candidate"] for t, s in scores.items()}
    worse = {t: d for t, d in drops.items() if d > max_regression}
    if worse:
        t, d = max(worse.items(), key=lambda kv: kv[1])
        return False, f"{t} mIoU would drop by {d:.3f} (more than retrain.max_regression {max_regression})"
    return True, f"no task's mIoU drops by more than retrain.max_regression ({max_regression})"


def score(model: Segmenter, prepared: Path, config: Config, max_images: int | None) -> dict[str, float]:
    """mIoU per task on the prepared validation split, canonical prompts."""
    out = {}
    for task in TASKS:
        images, truths, _ = labeled_samples(prepared, task, (), "valid")
        images, truths = images[:max_images], truths[:max_images]
        if not images:
            continue
        prompt = config.prompts.for_task(task).canonical
        results, _ = evaluate(model, samples_from_labels(images, truths), [prompt], [task],
                              batch_size=config.model.batch_size)
        out[task] = results[0].miou
    return out


def retrain(config: Config, store: Store, steps: int | None = None, request: int | None = None,
            progress: bool = True) -> Outcome:
    """Prepare, fine-tune from the active model, compare on one validation set, promote if not worse.
    Answers `request`, or else the newest open retrain request."""
    request = request if request is not None else store.open_request()
    if request is not None:
        store.update_request(request, "running")
    try:
        outcome = _retrain(config, store, steps, progress)
    except Exception as exc:
        if request is not None:
            store.update_request(request, "failed", detail=str(exc))
        raise
    if request is not None:
        store.update_request(request, "promoted" if outcome.promoted else "rejected", outcome.candidate_version,
                             outcome.reason)
    return outcome


def _retrain(config: Config, store: Store, steps: int | None, progress: bool) -> Outcome:
    from model.train import TrainSettings, train  # heavy; only this command needs it

    sources = [Source(d.name, config.require(f"datasets[{i}].root", d.root), d.task, tuple(d.classes), d.format)
               for i, d in enumerate(config.datasets)]
    if inbox_images(config.retrain.inbox):
        for task in TASKS:
            classes = tuple(c for d in config.datasets if d.task == task for c in d.classes)
            if classes:
                sources.append(Source(f"inbox-{task}", config.retrain.inbox, task, classes, "voc"))
    if not sources:
        raise DataError(f"{config.source}: datasets: nothing to train on; configure datasets (see README)")
    policy = SplitPolicy(config.prep.seed, config.prep.valid_fraction, config.prep.max_shared_fraction)
    prepare(sources, config.prep.out, config.prompts.canonical, policy, progress=progress)

    active = store.active_version()
    base = Path(active.path) if active else config.model.checkpoint
    card = read_card(base)
    run = config.retrain.models_dir / f"{base.name.split('-r')[0]}-r{time.strftime('%Y%m%d-%H%M%S')}"
    t = config.train
    best = train(TrainSettings(
        prepared=config.prep.out, out=run, prompts={task: config.prompts.for_task(task).all for task in TASKS},
        backend=card.backend, model=card.settings, init=base, epochs=1,
        steps_per_epoch=steps or config.retrain.steps, batch_size=t.batch_size, lr=config.retrain.lr,
        weight_decay=t.weight_decay, crop_size=t.crop_size, seed=t.seed, device=config.model.device,
        num_workers=t.num_workers, max_val_images=config.retrain.max_val_images, command="qa-daemon retrain",
        progress=progress))

    candidate_model, cand_card = load_checkpoint(best, config.model.device)
    active_model, _ = load_checkpoint(base, config.model.device)
    cand = score(candidate_model, config.prep.out, config, config.retrain.max_val_images)
    act = score(active_model, config.prep.out, config, config.retrain.max_val_images)
    scores = {task: {"candidate": cand[task], "active": act[task]} for task in cand if task in act}
    promoted, reason = gate(scores, config.retrain.max_regression)
    version = store.register_model(run.name, best, cand_card.backend, weights_sha256(best), asdict(cand_card),
                                   metrics={t: s["candidate"] for t, s in scores.items()}, activate=promoted)
    if not promoted:
        store.set_status(version, "rejected")
    log.info("candidate %s %s: %s; %s", run.name, "promoted" if promoted else "rejected", json.dumps(scores), reason)
    return Outcome(promoted, best, version, active.id if active else None, scores, reason)

