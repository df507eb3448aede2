"""Processing queued photos: decode, segment with both prompts, write masks and overlay, measure, commit.

For each batch the processor claims from the store:

1. decode each photo fast: JPEG DCT scaling (Pillow's draft mode) straight to about twice
   the model's input side, EXIF orientation applied;
2. run the model: one image encoding per photo, both canonical prompts decoded against it; on a GPU
   a batch of photos per call (CUDA out-of-memory halves the batch and tries again), on a CPU one
   photo per call, which measured faster there (`Processor.infer_batch`);
3. per photo: threshold at working resolution, scale the masks to the source's size and write
   `{image_id}__segment_crack.png` and `{image_id}__segment_taping_area.png` ({0,255}) and an
   overlay JPEG under `outputs/<site>/<capture date>/` (with `outputs.fsync`, each file and then its
   folder flushed to disk), and measure;
4. store detections and mark the job done in one transaction, committed only after the files are on
   disk, so a power cut cannot leave a done photo pointing at a lost file; then, if configured, move
   the photo to the archive.

A photo that fails is retried with backoff and, after `watch.max_attempts`, moved to quarantine
with its error recorded. Nothing here stops the daemon.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sqlalchemy.exc import SQLAlchemyError

from daemon.config import TASKS, Config
from daemon.measure import measure
from daemon.paths import move_into, present, quarantine, safe_part
from daemon.space import Space, no_space
from daemon.store import Claimed, DetectionResult, PhotoResult, Store, StoreError, worker_name
from model.checkpoint import load_checkpoint
from model.device import resolve_device
from model.errors import QAError
from model.files import durable, make_dirs
from model.images import Decoded, decode
from model.masks import at_size, write_masks, write_overlay
from model.segmenter import Predictor

log = logging.getLogger("qa-daemon")


def warm_up(model: Predictor, config: Config) -> None:
    """One pass before the first photo, so the first photo's time is not the runtime's set-up."""
    prompts = [config.prompts.for_task(t).canonical for t in TASKS]
    model.predict([np.zeros((model.input_size, model.input_size, 3), np.uint8)], prompts)


def load_warm(checkpoint: Path, device: str | torch.device, config: Config) -> Predictor:
    """A checkpoint's model, loaded and warmed up; raises what loading raises (QAError, OSError, RuntimeError).

    On a CPU, from the checkpoint's compiled graph in `model.compiled_cache` when it is there: no PyTorch
    model is built, which saves seconds of start-up (model/runtime.py). Otherwise from the checkpoint,
    which compiles it (with `model.runtime` auto or onnx) for the next start."""
    model = None
    on_cpu = (device if isinstance(device, torch.device) else resolve_device(device)).type == "cpu"
    if config.model.runtime != "eager" and on_cpu:
        from model.runtime import load_compiled

        prompts = [config.prompts.for_task(t).canonical for t in TASKS]
        model = load_compiled(checkpoint, config.model.compiled_cache, prompts, torch.get_num_threads(),
                              config.model.runtime)
    if model is None:
        model, _ = load_checkpoint(checkpoint, device, config.model.runtime, config.model.compiled_cache)
    warm_up(model, config)
    return model


def gpu_batch_size(model: Predictor, config: Config, headroom: float = 0.6) -> int:
    """The largest batch (up to `model.batch_size`) that fits in `headroom` of the GPU's free memory,
    from the memory one batch of two working-size photos takes."""
    side = 2 * model.largest_input_size
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(model.device)
    before = torch.cuda.memory_allocated(model.device)
    model.predict([np.zeros((side * 3 // 4, side, 3), np.uint8)] * 2, [config.prompts.crack.canonical,
                                                                        config.prompts.taping.canonical])
    per_photo = max(1, (torch.cuda.max_memory_allocated(model.device) - before) // 2)
    free, _ = torch.cuda.mem_get_info(model.device)
    fits = max(1, int(free * headroom // per_photo))
    log.info("GPU: %.0f MB free, about %.0f MB a photo: batches of %d", free / 2**20, per_photo / 2**20,
             min(fits, config.model.batch_size))
    return min(fits, config.model.batch_size)


class Processor(threading.Thread):
    """Claims queued photos in batches and processes them; the only thread that runs the model."""

    def __init__(self, config: Config, stop_event: threading.Event, store: Store, model: Predictor,
                 model_version_id: int, work_ready: threading.Event, roots: list[Path], space: Space,
                 recover_stale_s: float | None = None):
        super().__init__(name="processor", daemon=True)
        self.config, self.stop_event, self.store, self.model = config, stop_event, store, model
        self.model_version_id, self.work_ready, self.roots, self.space = model_version_id, work_ready, roots, space
        self.prompts = {t: config.prompts.for_task(t).canonical for t in TASKS}
        self.batch_size = config.model.batch_size  # lowered for good after a CUDA out-of-memory
        if model.device.type == "cuda":
            self.batch_size = gpu_batch_size(model, config)
        self.side = 2 * model.largest_input_size  # working resolution: masks are measured here, then scaled up
        self.worker = worker_name()
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="photo")  # cv2 and Pillow free the GIL
        self.recover_stale_s = recover_stale_s  # None: this daemon holds the store alone
        self.checked_model_at, self.refused_version = 0.0, None
        self.stranded = False  # a job's outcome could not be recorded: it is still `running` in the store

    def recover(self) -> None:
        """Before the first claim: the work an earlier run left unfinished. Jobs left running go back to
        the queue (alone on the store all of them; on a shared one, those of silent daemons); a photo that
        was in hand at every one of its attempts is quarantined (it may be what stops the daemon); photos
        processed but not yet archived are archived."""
        max_attempts = self.config.watch.max_attempts
        if self.recover_stale_s is None:
            requeued, exhausted = self.store.queue.recover(max_attempts)
        else:
            requeued, exhausted = self.store.queue.take_over(max_attempts, self.recover_stale_s)
        if requeued:
            log.info("%d photos left in progress by an earlier run are queued again", requeued)
        for job in exhausted:
            self.failed(job, f"the daemon stopped {job.attempts} times while processing this photo", final=True)
        if self.config.outputs.archive is not None:  # finish archive moves cut short by a crash
            for root in self.roots:
                for photo_id, path in self.store.queue.done_photos_under(root):
                    if path.exists():
                        self.archive(photo_id, path)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.recover()
                break
            except SQLAlchemyError as exc:
                log.warning("store not available for recovery (%s); trying again", exc)
                self.stop_event.wait(2.0)
        while not self.stop_event.is_set():
            if not self.space.ok():  # the outputs disk is full: the queue waits
                self.stop_event.wait(1.0)
                continue
            try:
                if self.stranded:  # between batches nothing is in hand: our running jobs go back to the queue
                    if n := self.store.queue.release(self.worker):
                        log.info("%d photos whose outcome could not be recorded are queued again", n)
                    self.stranded = False
                self.follow_promotions()
                jobs = self.store.queue.claim(self.batch_size, self.worker)
            except SQLAlchemyError as exc:
                log.warning("store not available (%s); trying again", exc)
                self.stop_event.wait(2.0)
                continue
            if jobs:
                try:
                    self.process(jobs)  # a stop request lets the batch in hand finish
                except Exception as exc:  # noqa: BLE001 - a bug must not stall the queue: count it, go on
                    log.exception("unexpected error while processing a batch")
                    for job in jobs:
                        self.failed(job, f"unexpected error: {exc!r}")
            else:
                self.work_ready.wait(timeout=1.0)
                self.work_ready.clear()
        self.pool.shutdown(wait=True)

    def follow_promotions(self, every_s: float = 2.0) -> None:
        """Switch to the store's active model version when another was promoted; between batches, so every
        result records the version that produced it. A version that cannot be loaded leaves the old one."""
        if time.monotonic() - self.checked_model_at < every_s:
            return
        self.checked_model_at = time.monotonic()
        active = self.store.models.active()
        if active is None or active.id in (self.model_version_id, self.refused_version):
            return
        try:
            model = load_warm(Path(active.path), self.model.device, self.config)
        except (QAError, OSError, RuntimeError) as exc:
            self.refused_version = active.id  # should the store not take the rejection below
            log.error("model version %s cannot be loaded (%s); it is marked rejected and the current model "
                      "stays; fix it and `qa-daemon model promote` it again", active.name, exc)
            self.store.models.reject(active.id, keep_id=self.model_version_id)
            return
        self.model, self.model_version_id, self.side = model, active.id, 2 * model.largest_input_size
        log.info("switched to model version %s (%s)", active.name, active.path)

    @property
    def infer_batch(self) -> int:
        """Photos per model call: the batch on a GPU; one on a CPU, where batching makes each photo slower
        (measured: 87 ms a photo alone, 114 ms in fours, for the compact encoder at 448 on 2 cores)."""
        return self.batch_size if self.model.device.type == "cuda" else 1

    def process(self, jobs: list[Claimed]) -> None:
        """A pipeline over one claimed batch: every photo is decoded in the pool; the model takes them as
        their decodes complete; each photo's finishing (masks, overlay, measures) goes back to the pool
        while the model goes on; the batch's results are committed in one transaction."""
        decodes = [(j, self.pool.submit(self._attempt, j, partial(self._decode, j))) for j in jobs]
        finishing = []
        for i in range(0, len(decodes), self.infer_batch):
            ready = [(j, d) for j, f in decodes[i: i + self.infer_batch] if (d := f.result()) is not None]
            start = time.perf_counter()
            probs = self._predict([d.rgb for _, d in ready])
            infer_ms = (time.perf_counter() - start) * 1000 / max(1, len(ready))
            for (job, d), prob in zip(ready, probs, strict=True):
                if isinstance(prob, Exception):
                    self.failed(job, f"the model failed on this photo ({prob})")
                else:
                    work = partial(self._finish, job, d, prob, infer_ms)
                    finishing.append((job, self.pool.submit(self._attempt, job, work, True)))
        self._commit([(job, r) for job, f in finishing if (r := f.result()) is not None])

    def _decode(self, job: Claimed) -> Decoded:
        roots = [r for r in self.roots if job.path.is_relative_to(r)]
        if roots and not any(present(r) for r in roots):
            raise RootMissing(f"{job.path}: its watch root is not there (unmounted share?)")
        return decode(job.path, self.side)

    def _predict(self, images: list[np.ndarray]) -> list[np.ndarray | Exception]:
        """Per image, (P, h, w) probabilities, or the error it alone failed with. A failing batch is
        halved until the culprit is alone; a CUDA out-of-memory also lowers the batch size for good."""
        if not images:
            return []
        try:
            return self.model.predict(images, list(self.prompts.values()))
        except Exception as exc:  # noqa: BLE001 - narrowed to the photo that causes it, below
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            if len(images) == 1:
                return [exc]
            half = len(images) // 2
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                self.batch_size = max(1, min(self.batch_size, half))
                log.warning("CUDA out of memory with %d photos; batch size now %d", len(images), self.batch_size)
            return self._predict(images[:half]) + self._predict(images[half:])

    def _finish(self, job: Claimed, d: Decoded, probs: np.ndarray, infer_ms: float) -> PhotoResult:
        start = time.perf_counter()
        out_dir = self.config.outputs.dir / safe_part(job.site) / job.captured_at.strftime("%Y-%m-%d")
        w, h = d.size
        scale = w / d.rgb.shape[1]
        site = self.config.sites.get(job.site)
        masks, fulls = [], []
        for prompt, prob in zip(self.prompts.values(), probs, strict=True):
            work = self.model.mask(prob, prompt)
            masks.append(work)
            fulls.append(at_size(work, (w, h)))
        with durable(self.config.outputs.fsync):  # files, then their folder, on disk before `_commit` runs
            make_dirs(out_dir)
            paths = write_masks(out_dir, job.image_id, list(self.prompts.values()), fulls)
            over = None
            if self.config.outputs.overlay:
                over = write_overlay(out_dir / f"{job.image_id}__overlay.jpg", d.rgb, masks,
                                     self.config.outputs.overlay_max_side)
        detections = []
        for (task, prompt), prob, work, full, path in zip(self.prompts.items(), probs, masks, fulls, paths,
                                                          strict=True):
            m = measure(work > 0, prob, scale, task, site.mm_per_pixel if site else None,
                        self.config.measure.severity, self.config.measure.min_component_px,
                        int(np.count_nonzero(full)))
            detections.append(DetectionResult(task, prompt, path, self.model.threshold(prompt), m))
        ms = d.ms + infer_ms + (time.perf_counter() - start) * 1000
        return PhotoResult(out_dir, over, ms, detections)

    def _commit(self, results: list[tuple[Claimed, PhotoResult]]) -> None:
        if not results:
            return
        try:
            self.store.queue.complete(results, self.model_version_id)
        except SQLAlchemyError as exc:
            for job, _ in results:
                self.failed(job, f"could not store the results ({exc})", count=False)
            return
        for job, result in results:
            by_task = {d.task: d for d in result.detections}
            crack, taping = by_task.get("crack"), by_task.get("taping")
            sev = f" ({crack.measures['severity']})" if crack and crack.measures.get("severity") else ""
            log.info("%s  site=%s/%s  crack %.2f%%%s  taping %.2f%%  %.0f ms", job.path.name, job.site,
                     job.location, crack.measures["area_pct"] if crack else 0.0, sev,
                     taping.measures["area_pct"] if taping else 0.0, result.processing_ms)
            if self.config.outputs.archive is not None:
                self.archive(job.photo_id, job.path)

    def archive(self, photo_id: int, path: Path) -> None:
        """Move a processed photo to the archive (after its results are committed) and record where it went."""
        if path.is_relative_to(self.config.outputs.archive):
            return  # archived already: a photo the scrub queued again is re-made where it lies
        root = next((r for r in self.roots if path.is_relative_to(r)), path.parent)
        try:
            moved = move_into(path, root, self.config.outputs.archive)
            self.store.queue.moved(photo_id, moved)
        except (OSError, SQLAlchemyError) as exc:
            log.warning("%s: processed, but could not be archived (%s); it stays in place", path, exc)

    def _attempt(self, job: Claimed, work: Callable, outputs: bool = False):
        """`work()`, or None after recording the failure of `job`. Trouble that is not the photo's
        (its share is unmounted, the outputs disk is full) does not use up its attempts."""
        try:
            return work()
        except RootMissing as exc:
            self.failed(job, str(exc), count=False)
        except Image.DecompressionBombError as exc:
            self.failed(job, f"too many pixels to decode safely ({exc})", final=True)
        except OSError as exc:
            if outputs:
                full = no_space(exc)
                if full:
                    self.space.full(str(exc))  # the pause holds the queue; the photo is due as soon as it ends
                self.failed(job, f"writing the results failed: {exc}", count=False, delay_s=0.0 if full else None)
            elif isinstance(exc, FileNotFoundError):
                self.vanished(job)
            else:
                self.failed(job, f"the photo could not be decoded: {exc}")
        except Exception as exc:  # noqa: BLE001 - anything else is this photo's failure, never the daemon's
            self.failed(job, f"{type(exc).__name__}: {exc}")
        return None

    def vanished(self, job: Claimed) -> None:
        """The photo's file is gone: moved (queued again at its new place) or it waits for the file to be back."""
        try:
            if self.store.queue.vanished(job):
                log.info("%s: moved before it was processed; queued again at its new place", job.path)
            else:
                log.warning("%s: vanished before it was processed; it is taken again if it reappears", job.path)
        except (SQLAlchemyError, StoreError) as exc:  # still running in the store: released before the next batch
            self.stranded = True
            log.error("%s: vanished, and that could not be recorded (%s)", job.path, exc)

    def failed(self, job: Claimed, error: str, final: bool = False, count: bool = True,
               delay_s: float | None = None) -> None:
        """Retry later with backoff (or after `delay_s`), or after the last attempt quarantine the photo;
        never raises."""
        w = self.config.watch
        try:
            if final or (count and job.attempts >= w.max_attempts):
                root = next((r for r in self.roots if job.path.is_relative_to(r)), job.path.parent)
                moved = None
                try:
                    moved = quarantine(job.path, root, self.config.outputs.quarantine, error)
                except OSError as exc:
                    log.error("%s: could not be quarantined (%s)", job.path, exc)
                self.store.queue.give_up(job, error, moved)
                log.warning("%s: failed %d times, quarantined to %s: %s", job.path, job.attempts, moved, error)
            else:
                if delay_s is None:
                    delay_s = w.retry_backoff_s * 2 ** (job.attempts - 1) if count else max(w.retry_backoff_s, 1.0)
                self.store.queue.retry_later(job, error, delay_s, count=count)
                log.warning("%s: %s; retrying in %.0f s", job.path, error, delay_s)
        except (SQLAlchemyError, StoreError) as exc:  # still running in the store: released before the next batch
            self.stranded = True
            log.error("%s: failure could not be recorded (%s)", job.path, exc)


class RootMissing(OSError):
    """The photo's watch root is gone (an unmounted share): wait for it, do not count an attempt."""
