"""Retraining: the labeled-data inbox, the retrain request, and `qa-daemon retrain`'s promote-if-not-worse.

    check(config, store)        # the scheduled check: counts new labeled images, may request a retrain
    outcome = retrain(config, store)

Users drop Pascal VOC exports of newly labeled photos (for example corrected daemon
outputs) anywhere under `retrain.inbox`. A labeled image is a JPEG or PNG with an `.xml`
beside it; it is new when first seen after the active model was promoted. At
`retrain.min_new_images` the check records a request and, with `retrain.auto`, starts
`qa-daemon retrain` as a separate process (never in the daemon's inference thread).

`retrain` prepares the configured datasets plus the inbox, fine-tunes from the active
checkpoint, and scores candidate and active model the same way: the validation split is
divided by source photo into a calibration part and a gate part (`split_validation`);
each model's threshold per task is the one it scores best at on the calibration part, and
its mIoU at that threshold on the gate part is what counts (`score`). The candidate's own
thresholds were tuned on the whole validation split during training, so comparing it there
at those thresholds would favour it. The candidate is promoted only when no task's gate
mIoU drops by more than `retrain.max_regression`, and never when no task could be scored.
Every version stays in the store's `model_versions` with its metrics; a running daemon
switches to a promoted version between batches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from daemon.config import STORE_ENV, TASKS, Config
from daemon.store import RetrainStatus, Store
from model.checkpoint import load_checkpoint, read_card, weights_sha256
from model.evaluate import CLEANED, Accumulator, calibration_split, samples_from_labels, score_models
from model.images import PHOTO_SUFFIXES
from model.prep import Row, prepare, read_manifest
from model.segmenter import Segmenter

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
            store.runs.add_labeled(hashlib.file_digest(f, "sha256").hexdigest(), image)
    new = store.runs.new_labeled()
    if new < config.retrain.min_new_images:
        return None
    request = store.runs.request_retrain(new)
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


NO_CALIBRATION_THRESHOLD = 0.5  # both models' threshold for a task without calibration images


@dataclass
class Outcome:
    promoted: bool
    candidate: Path
    candidate_version: int
    active_version: int | None
    # task -> {"candidate", "active": gate mIoU; "candidate_dice", "active_dice"; "threshold_candidate",
    # "threshold_active": chosen on the calibration part; "calibration_images", "gate_images"}
    scores: dict[str, dict[str, float]]
    reason: str


def split_validation(rows: list[Row], seed: int = 0) -> tuple[list[Row], list[Row]]:
    """Validation rows as (calibration, gate), by source photo: all rows of one stem land in one part.

    The halves of `model.evaluate.calibration_split` (the ones `model export` chooses settings on and
    measures on): a seeded hash of dataset and stem decides, not the rows' order or number, so a photo
    keeps its part when new photos arrive.
    """
    calibration, held = calibration_split([(r.dataset, r.stem) for r in rows], seed)
    return [rows[i] for i in calibration], [rows[i] for i in held]


def gate(scores: dict[str, dict[str, float]], max_regression: float,
         tasks: tuple[str, ...] = TASKS) -> tuple[bool, str]:
    """Promote only if every task in `tasks` was scored and no task's candidate mIoU is below the active
    one by more than `max_regression`."""
    if not scores:
        return False, ("no task could be scored: the validation split has no gate images, so nothing shows "
                       "the candidate is not worse; add labeled photos to retrain.inbox")
    unscored = [t for t in tasks if t not in scores]
    if unscored:
        return False, (f"{' and '.join(unscored)} could not be scored (no gate images), so nothing shows the "
                       "candidate is not worse there; add labeled photos of it to retrain.inbox")
    drops = {t: s["active"] - s["candidate"] for t, s in scores.items()}
    worse = {t: d for t, d in drops.items() if d > max_regression}
    if worse:
        t, d = max(worse.items(), key=lambda kv: kv[1])
        return False, f"{t} mIoU would drop by {d:.3f} (more than retrain.max_regression {max_regression})"
    return True, f"no task's mIoU drops by more than retrain.max_regression ({max_regression})"


def score(models: dict[str, Segmenter], prepared: Path, config: Config, max_images: int | None,
          progress: bool = False) -> dict[str, dict[str, float]]:
    """Per task with gate images: each model's mIoU and Dice on the gate part of the validation split, at
    the threshold it scores best at on the calibration part; canonical prompts, at most `max_images`
    images per task and part. Keys: see `Outcome.scores` (`models` names them, e.g. "candidate")."""
    valid = [r for r in read_manifest(prepared) if r.split == "valid"]
    out = {}
    for task in TASKS:
        calibration, gate_rows = split_validation([r for r in valid if r.task == task])
        calibration, gate_rows = calibration[:max_images], gate_rows[:max_images]
        if not gate_rows:
            continue
        prompt = config.prompts.for_task(task).canonical
        batch = config.model.batch_size
        tuned = _accumulate(models, calibration, prompt, batch, f"{task}: calibration", progress)
        judged = _accumulate(models, gate_rows, prompt, batch, f"{task}: gate", progress)
        entry: dict[str, float] = {}
        for name in models:
            threshold = tuned[name].best_threshold() if calibration else NO_CALIBRATION_THRESHOLD
            s = judged[name].scores(threshold)
            entry.update({name: s["miou"], f"{name}_dice": s["dice"], f"threshold_{name}": threshold})
        out[task] = {**entry, "calibration_images": len(calibration), "gate_images": len(gate_rows)}
    return out


def _accumulate(models: dict[str, Segmenter], rows: list[Row], prompt: str, batch_size: int, what: str,
                progress: bool) -> dict[str, Accumulator]:
    """Each model's masks for `prompt` on the rows' images against their masks, at every grid threshold
    and with the model's clean-up (the gate scores the masks users get); each image is read once and
    encoded once per model."""
    samples = samples_from_labels([Path(r.image) for r in rows], [Path(r.mask) for r in rows])
    run = score_models(models, samples, [prompt], batch_size, (CLEANED,), f"scoring {what}", len(rows), progress)
    return {name: run.accs[name][prompt][CLEANED] for name in models}


def version_metrics(scores: dict[str, dict[str, float]]) -> dict:
    """What the store keeps of a retrain's scores: the candidate's gate mIoU per task (as before the
    calibrated gate), and per task both models' figures and the sizes of the two parts."""
    return {**{t: round(s["candidate"], 4) for t, s in scores.items()},
            "gate": {t: {k: round(s[k], 4) for k in ("candidate", "active", "candidate_dice", "active_dice",
                                              "threshold_candidate", "threshold_active")}
                     for t, s in scores.items()},
            "calibration_images": {t: int(s["calibration_images"]) for t, s in scores.items()},
            "gate_images": {t: int(s["gate_images"]) for t, s in scores.items()}}


def describe(scores: dict[str, dict[str, float]]) -> str:
    """One line per retrain for the log: both models' gate figures per task."""
    if not scores:
        return "no task scored (no gate images)"
    return "; ".join(
        f"{t} gate mIoU {s['candidate']:.3f} (Dice {s['candidate_dice']:.3f}, threshold {s['threshold_candidate']:.2f})"
        f" vs active {s['active']:.3f} (Dice {s['active_dice']:.3f}, threshold {s['threshold_active']:.2f}),"
        f" {s['calibration_images']} calibration / {s['gate_images']} gate images" for t, s in scores.items())


def retrain(config: Config, store: Store, steps: int | None = None, request: int | None = None,
            progress: bool = True) -> Outcome:
    """Prepare, fine-tune from the active model, score both on the gate part, promote if not worse.
    Answers `request`, or else the newest open retrain request."""
    request = request if request is not None else store.runs.open_request()
    if request is not None:
        store.runs.update_request(request, RetrainStatus.running)
    try:
        outcome = _retrain(config, store, steps, progress)
    except Exception as exc:
        if request is not None:
            store.runs.update_request(request, RetrainStatus.failed, detail=str(exc))
        raise
    if request is not None:
        store.runs.update_request(request, RetrainStatus.promoted if outcome.promoted else RetrainStatus.rejected,
                                  outcome.candidate_version, outcome.reason)
    return outcome


def _retrain(config: Config, store: Store, steps: int | None, progress: bool) -> Outcome:
    from model.train import train  # heavy; only this command needs it

    sources = config.sources(inbox=bool(inbox_images(config.retrain.inbox)))
    prepare(sources, config.prep.out, config.prompts.canonical, config.split_policy(), progress=progress)

    active = store.models.active()
    base = Path(active.path) if active else config.model.checkpoint
    card = read_card(base)
    run = config.retrain.models_dir / f"{base.name.split('-r')[0]}-r{time.strftime('%Y%m%d-%H%M%S')}"
    best = train(config.train_settings(
        prepared=config.prep.out, out=run, backend=card.backend, model=card.settings, init=base, epochs=1,
        steps_per_epoch=steps or config.retrain.steps, lr=config.retrain.lr,
        # a short fine-tune from trained weights: a tenth of it (at most the recipe's) to warm up
        warmup_steps=min(config.train.warmup_steps, (steps or config.retrain.steps) // 10),
        max_val_images=config.retrain.max_val_images, command="qa-daemon retrain", progress=progress))

    candidate_model, cand_card = load_checkpoint(best, config.model.device)
    active_model, _ = load_checkpoint(base, config.model.device)
    scores = score({"candidate": candidate_model, "active": active_model}, config.prep.out, config,
                   config.retrain.max_val_images, progress)
    promoted, reason = gate(scores, config.retrain.max_regression)
    version = store.models.register(run.name, best, cand_card.backend, weights_sha256(best), asdict(cand_card),
                                   metrics=version_metrics(scores), activate=promoted)
    if not promoted:
        store.models.reject(version)
    log.info("candidate %s %s: %s; %s", run.name, "promoted" if promoted else "rejected", describe(scores), reason)
    return Outcome(promoted, best, version, active.id if active else None, scores, reason)

