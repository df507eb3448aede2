"""The `qa-daemon` command line: a thin layer over `model/`, `daemon/` and `reports/`.

Library errors (`QAError`) become one line on stderr and exit code 2 here, at
the edge, and nowhere else.
"""

from __future__ import annotations

import sys
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from daemon.config import DEFAULT_CONFIG, STORE_ENV, Config, ConfigError, StoreConfig, load_config
from model.errors import QAError

app = typer.Typer(
    help="Drywall QA by prompted segmentation: crack and taping-area masks from site photos.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()
err = Console(stderr=True)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option(
        "--config", "-c", envvar="QA_DAEMON_CONFIG", show_envvar=True,
        help="Config file to use.", dir_okay=False)] = DEFAULT_CONFIG,
) -> None:
    # without --config or QA_DAEMON_CONFIG, a missing ./config.yaml means the defaults (compared by name: typer
    # may bring its own copy of click, whose ParameterSource is not click.core's)
    source = ctx.get_parameter_source("config")
    ctx.obj = {"config_path": config, "missing_ok": getattr(source, "name", None) == "DEFAULT"}


def _config(ctx: typer.Context) -> Config:
    """The validated config, loaded once per command."""
    if "config" not in ctx.obj:
        ctx.obj["config"] = load_config(ctx.obj["config_path"], missing_ok=ctx.obj["missing_ok"])
    return ctx.obj["config"]


def _with_store(config: Config, store: str | None) -> Config:
    """The config with `--store URL` applied."""
    return config.model_copy(update={"store": StoreConfig(url=store)}) if store else config


STORE_HELP = "SQLAlchemy URL of the results store [config store.url]."


class TaskName(StrEnum):
    crack = "crack"
    taping = "taping"


class GroupBy(StrEnum):
    day = "day"
    week = "week"
    month = "month"


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def prep(
    ctx: typer.Context,
    data: Annotated[list[str] | None, typer.Option(
        "--data", "-d", metavar="[NAME=]DIR",
        help="Export folder replacing a configured dataset's root; matched by NAME=, by folder "
             "name, or by order. Repeat for each dataset.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Prepared folder [config prep.out].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Prepare the labeled datasets: {0,255} masks per image and task, and a leakage-free manifest.csv.

    Every augmented copy of a photo (Roboflow's `<stem>.rf.<hash>.jpg`) lands in one split.
    Bad files are reported and skipped. Re-running only redoes what changed.

    Example: qa-daemon prep --data ../shared/datasets/cracks.v1i.voc --out /tmp/prep
    """
    from model.prep import MANIFEST, PROBLEMS, Source, SplitPolicy, prepare

    config = _config(ctx)
    roots = _dataset_roots(config, data or [])
    # a root given with --data is checked as such; one from the config names its key
    sources = [Source(d.name, _must_exist(roots[d.name]) if roots[d.name] != d.root
                      else config.require(f"datasets[{i}].root", d.root), d.task, tuple(d.classes), d.format)
               for i, d in enumerate(config.datasets)]
    if not sources:
        raise ConfigError(f"{config.source}: datasets: no dataset configured; add one (see README)")
    target = out_dir or config.prep.out
    policy = SplitPolicy(config.prep.seed, config.prep.valid_fraction, config.prep.max_shared_fraction)
    result = prepare(sources, target, config.prompts.canonical, policy, progress=not quiet)

    table = Table(title=f"Prepared {len(result.rows)} image masks in {target}")
    for col in ("task", "split", "images", "stems", "objects", "mean mask area"):
        table.add_column(col, justify="left" if col in ("task", "split") else "right")
    for s in result.summary():
        table.add_row(s["task"], s["split"], str(s["images"]), str(s["stems"]), str(s["objects"]),
                      f"{s['mean_mask_area']:.2%}")
    out.print(table)
    for m in result.moves:
        out.print(f"moved {m.files} files ({m.stems} stems) of {m.dataset} from {m.source_split} "
                  f"to {m.split}: {m.reason}")
    if result.problems:
        for p in result.problems[:20]:
            err.print(f"[yellow]warning[/]: {p}", highlight=False, markup=True)
        more = len(result.problems) - 20
        err.print(f"{len(result.problems)} problems{f' ({more} not shown)' if more > 0 else ''}; "
                  f"all listed in {target / PROBLEMS}")
    out.print(f"manifest: {target / MANIFEST} ({result.decoded} images decoded this run)")


def _dataset_roots(config: Config, data: list[str]) -> dict[str, Path]:
    """Each configured dataset's root, with `--data` overrides applied."""
    roots = {d.name: d.root for d in config.datasets}
    by_folder = {d.root.name: d.name for d in config.datasets}
    positional = [x for x in data if "=" not in x]
    for item in data:
        name, _, folder = item.rpartition("=") if "=" in item else ("", "", item)
        path = Path(folder)
        name = name or by_folder.get(path.name) or (
            config.datasets[positional.index(item)].name if len(positional) == len(config.datasets) else "")
        if name not in roots:
            example = next(iter(roots), "cracks")
            raise ConfigError(f"--data {item}: cannot tell which dataset this is (configured: "
                              f"{', '.join(roots)}); write NAME=DIR, e.g. --data {example}={folder}")
        roots[name] = path
    return roots


def _configured_prompts(config: Config) -> dict[str, list[str]]:
    return {t: config.prompts.for_task(t).all for t in config.prompts.canonical}


def _must_exist(path: Path) -> Path:
    if not path.is_dir():
        raise ConfigError(f"--data {path}: folder not found; check the path")
    return path


@app.command()
def train(
    ctx: typer.Context,
    prepared: Annotated[Path | None, typer.Option(help="Prepared folder from `prep` [config prep.out].")] = None,
    backend: Annotated[str | None, typer.Option(help="compact or clipseg [config model.backend].")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder [config train.out].")] = None,
    epochs: Annotated[int | None, typer.Option(
        help="Epochs [config train.epochs]; with --resume, more epochs extend the run (its schedule is "
             "stretched).")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option(
        help="Steps per epoch [config train.steps_per_epoch].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step [config train.batch_size].")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate [config train.lr].")] = None,
    crop_size: Annotated[int | None, typer.Option(help="Training crop side [config train.crop_size].")] = None,
    input_size: Annotated[int | None, typer.Option(help="Model input side [config model.input_size].")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [config model.device].")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    init: Annotated[Path | None, typer.Option(help="Start from this checkpoint's weights.")] = None,
    tune_last_layers: Annotated[int, typer.Option(help="clipseg: also train the last N CLIP layers.")] = 0,
    max_val_images: Annotated[int | None, typer.Option(help="Validate on at most N images per task.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Validate every N epochs [config train.eval_every].")] = None,
    time_limit: Annotated[float | None, typer.Option(
        help="Minutes this session may train; stops after the epoch that passes it (continue with --resume).")] = None,
    num_workers: Annotated[int | None, typer.Option(help="Data-loading processes [config train.num_workers].")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a train: key of the config, VALUE in YAML "
        "(e.g. --set ema_decay=0 --set scale.crack=[0.5,1.0] --set architecture.output_stride=4).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fine-tune a segmentation model on prepared data; keeps the best checkpoint by validation mIoU.

    Prompts are drawn from each task's canonical prompt and synonyms; both tasks are sampled equally.
    The recipe (schedule, crops, EMA, loss phases, architecture) is the config's `train:` section.
    Writes OUT/best (the checkpoint to use), OUT/last (for --resume, which continues the run's own
    recipe and schedule), OUT/run.json and OUT/log.csv.

    Example: qa-daemon train --epochs 10 --out runs/compact --set ema_decay=0.999
    """
    from model.train import resume_settings
    from model.train import train as run_training

    config = _config(ctx).with_train_overrides(set_ or [])
    if resume:  # the run's own recipe; only how this session runs it (and more epochs) may change
        recipe = {"--set": set_, "--lr": lr, "--batch-size": batch_size, "--crop-size": crop_size,
                  "--input-size": input_size, "--init": init, "--eval-every": eval_every,
                  "--steps-per-epoch": steps_per_epoch, "--max-val-images": max_val_images, "--backend": backend}
        given = [k for k, v in recipe.items() if v]
        if given:
            raise ConfigError(f"--resume continues the run with its own recipe ({out_dir or config.train.out}/"
                              f"run.json); drop {', '.join(given)}, or start a new run with another --out")
        session = {"device": device, "num_workers": num_workers, "epochs": epochs, "progress": not quiet,
                   "time_limit_min": time_limit}
        settings = resume_settings(out_dir or config.train.out, **{k: v for k, v in session.items() if v is not None})
    else:
        model_settings = {"input_size": input_size} if input_size else {}
        if (backend or config.model.backend) == "clipseg":
            model_settings.update(base=config.model.base, tune_last_layers=tune_last_layers)
        settings = config.train_settings(
            prepared=config.require("prep.out", prepared or config.prep.out), out=out_dir, backend=backend,
            init=init, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr,
            device=device, num_workers=num_workers, eval_every=eval_every, max_val_images=max_val_images,
            time_limit_min=time_limit, command="qa-daemon " + " ".join(sys.argv[1:]), progress=not quiet)
        settings.model.update(model_settings)
        if crop_size:
            settings.augment.crop_size = crop_size
    best = run_training(settings)
    out.print(f"best checkpoint: {best}")


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="Prepared folder, export root, or flat folder of .jpg + .xml.")],
    task: Annotated[TaskName, typer.Option(help="Which task the labels are.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint folder [config model.checkpoint].")] = None,
    split: Annotated[str | None, typer.Option(help="Only this split of an export root (train, valid, test).")] = None,
    prompt: Annotated[list[str] | None, typer.Option(help="Prompt(s) to score [task's prompts].")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [config model.device].")] = None,
    input_size: Annotated[int | None, typer.Option(help="Run the model at this input side [the checkpoint's].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a checkpoint per prompt: mIoU, Dice, pooled IoU, milliseconds per image.

    mIoU is the mean of per-image IoU (an image where ground truth and prediction are both empty
    scores 1); pooled IoU counts all pixels of all images together. Masks use the checkpoint's
    per-task threshold.

    With a folder written by `prep`, --split picks its leakage-free split.

    Example: qa-daemon eval --data data/prepared --task crack --split valid --json
    """
    import json

    from model.evaluate import evaluate as run_eval
    from model.evaluate import labeled_samples, samples_from_labels
    from model.prompts import resolve_prompts, teach
    from model.segmenter import load_checkpoint, read_card

    config = _config(ctx)
    ckpt = checkpoint or config.model.checkpoint
    classes = tuple(c for d in config.datasets if d.task == task.value for c in d.classes)
    if not classes:
        raise ConfigError(f"{config.source}: datasets: no dataset of task {task.value} names its classes")
    images, objects, problems = labeled_samples(_must_exist(data), task.value, classes, split)
    if not images:
        where = f" in split {split!r}" if split else ""
        raise ConfigError(f"--data {data}: no labeled images of {task.value}{where}; check the folder and --split")
    prompts = prompt or config.prompts.for_task(task.value).all
    resolved = resolve_prompts(prompts, read_card(ckpt).prompts, _configured_prompts(config))
    model, _ = load_checkpoint(ckpt, device or config.model.device)
    teach(model, resolved)  # a paraphrase runs as its task's canonical prompt, results keep its words
    if input_size:
        model.set_input_size(input_size)
    results, _ = run_eval(model, samples_from_labels(images, objects), prompts, [task.value] * len(prompts),
                          batch_size=config.model.batch_size, total=len(images), progress=not as_json)
    for p in problems[:20]:
        err.print(f"warning: {p}", highlight=False, markup=False)
    if as_json:
        print(json.dumps({"checkpoint": str(ckpt), "data": str(data), "split": split,
                          "results": [r.as_dict() for r in results]}))
        return
    table = Table(title=f"{ckpt} on {data}{f' ({split})' if split else ''}")
    for col in ("prompt", "images", "mIoU", "Dice", "pooled IoU", "threshold", "ms/image"):
        table.add_column(col, justify="left" if col == "prompt" else "right")
    for r in results:
        table.add_row(r.prompt, str(r.images), f"{r.miou:.3f}", f"{r.dice:.3f}", f"{r.pooled_iou:.3f}",
                      f"{r.threshold:.2f}", f"{r.ms_per_image:.0f}")
    out.print(table)


@app.command()
def predict(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Images or folders of images.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where masks are written.")],
    prompt: Annotated[list[str] | None, typer.Option(help="Prompt(s) [both canonical prompts].")] = None,
    overlay: Annotated[bool, typer.Option(help="Also write `{image_id}__overlay.jpg`.")] = False,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint folder [config model.checkpoint].")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [config model.device].")] = None,
) -> None:
    """Write `{image_id}__{prompt}.png` masks ({0,255}, the source's size) for each image.

    The prompt's spaces become underscores: IMG_0001__segment_crack.png. Each image is encoded
    once for all prompts. Unreadable files are reported and skipped.

    Example: qa-daemon predict site/IMG_0001.jpg --out out/ --overlay
    """
    from rich.progress import track

    from model.masks import export_masks, find_images
    from model.prompts import resolve_prompts, teach
    from model.segmenter import load_checkpoint, read_card

    config = _config(ctx)
    ckpt = checkpoint or config.model.checkpoint
    images, problems = find_images(paths)
    prompts = prompt or list(config.prompts.canonical.values())
    resolved = resolve_prompts(prompts, read_card(ckpt).prompts, _configured_prompts(config))
    model, _ = load_checkpoint(ckpt, device or config.model.device)
    teach(model, resolved)  # a paraphrase runs as its task's canonical prompt, masks keep its words
    written = 0
    for _ in track(export_masks(model, images, out_dir, prompts, overlay, config.model.batch_size, problems),
                   description="predicting", total=len(images), console=err):
        written += 1
    for p in problems:
        err.print(f"warning: {p}", highlight=False, markup=False)
    out.print(f"{written} images, {written * len(prompts)} masks written to {out_dir}"
              + (f"; {len(problems)} skipped" if problems else ""))
    if not written and problems:
        raise typer.Exit(1)


@app.command()
def run(
    ctx: typer.Context,
    watch: Annotated[list[Path] | None, typer.Option(
        "--watch", "-w", help="Folder to watch; repeat for several [config watch.roots].")] = None,
    store: Annotated[str | None, typer.Option(help=STORE_HELP, envvar=STORE_ENV)] = None,
    outputs: Annotated[Path | None, typer.Option(help="Where masks and overlays go [config outputs.dir].")] = None,
    polling: Annotated[bool | None, typer.Option(
        "--polling/--events", help="Poll the folders (network shares) or use OS events [config watch.polling].",
        show_default=False)] = None,
) -> None:
    """Run the daemon: watch the incoming folders, segment every new photo with both prompts, store the results.

    Photos go in `<root>/<site>/<location>/` (watch.layout). Each is taken once it has stopped
    changing and decodes fully, identified by its content (a duplicate under another name is
    recorded, not processed again), segmented, measured and recorded in the store; masks and an
    overlay go to `<outputs>/<site>/<capture date>/`. Files that keep failing go to the quarantine
    folder with a `.error.txt`. Stop with Ctrl-C or SIGTERM: the photos in hand are finished.

    Example: qa-daemon run --watch ~/site-photos
    """
    import logging

    from daemon.app import App, OneLine

    config = _with_store(_config(ctx), store)
    updates: dict = {}
    if watch or polling is not None:
        updates["watch"] = config.watch.model_copy(update={
            **({"roots": [w.absolute() for w in watch]} if watch else {}),
            **({"polling": polling} if polling is not None else {})})
    if outputs:
        updates["outputs"] = config.outputs.model_copy(update={"dir": outputs.absolute()})
    config = config.model_copy(update=updates)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine("%(asctime)s %(levelname)-7s %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in ("watchdog", "alembic", "PIL", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    code = App(config).run()
    if code:
        raise typer.Exit(code)


@app.command()
def retrain(
    ctx: typer.Context,
    steps: Annotated[int | None, typer.Option(help="Fine-tuning steps [config retrain.steps].")] = None,
    store: Annotated[str | None, typer.Option(help=STORE_HELP, envvar=STORE_ENV)] = None,
    request: Annotated[int | None, typer.Option(help="The retrain request this run answers (set by the daemon).",
                                                hidden=True)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Retrain from the active model with the base datasets plus the labeled inbox; promote only if not worse.

    Candidate and active model are scored the same way: each at the threshold it does best at on
    one half of the validation photos (calibration), by mIoU on the other half (gate). The candidate
    is promoted when no task's gate mIoU drops by more than retrain.max_regression. Every version
    stays in the store (`qa-daemon model list`); a running daemon switches to a promoted one between batches.

    Example: qa-daemon retrain --steps 400
    """
    import logging

    from daemon.retrain import retrain as run_retrain
    from daemon.store import Store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(message)s", force=True)
    config = _with_store(_config(ctx), store)
    st = Store.open(config.store.url)
    try:
        outcome = run_retrain(config, st, steps=steps, request=request, progress=not quiet)
    finally:
        st.close()
    table = Table(title=f"candidate {outcome.candidate.parent.name}: "
                        f"{'promoted' if outcome.promoted else 'not promoted'}")
    for col in ("task", "candidate mIoU", "active mIoU", "thresholds", "images (calibration / gate)"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task, sc in outcome.scores.items():
        table.add_row(task, f"{sc['candidate']:.3f}", f"{sc['active']:.3f}",
                      f"{sc['threshold_candidate']:.2f} / {sc['threshold_active']:.2f}",
                      f"{sc['calibration_images']} / {sc['gate_images']}")
    out.print(table)
    out.print(outcome.reason)


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} {value}: not a day; write YYYY-MM-DD, e.g. {option} 2026-11-24") from None


def _open_store(config: Config):
    from daemon.store import Store

    return Store.open_existing(config.store.url)


@app.command()
def report(
    ctx: typer.Context,
    day: Annotated[str | None, typer.Option("--date", help="Day to report, YYYY-MM-DD [today].")] = None,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Folder [config schedule.reports_dir].")] = None,
    self_contained: Annotated[bool, typer.Option(help="Inline thumbnails so the file can be mailed.")] = False,
    weekly: Annotated[bool, typer.Option(help="The week (Monday to Sunday) that holds --date.")] = False,
    store: Annotated[str | None, typer.Option(help=STORE_HELP, envvar=STORE_ENV)] = None,
) -> None:
    """Render the HTML QA report of a day (photos by capture day), and the index of all reports.

    Example: qa-daemon report --date 2026-11-24 --site tower-a --self-contained
    """
    from datetime import timedelta

    from daemon.schedule import render

    config = _with_store(_config(ctx), store)
    start = _day(day, "--date") or date.today()
    end = start
    if weekly:
        start = start - timedelta(days=start.weekday())
        end = start + timedelta(days=6)
    st = _open_store(config)
    try:
        path = render(config, st, "weekly" if weekly else "daily", start, end, site=site, out_dir=out_dir,
                      self_contained=self_contained)
    finally:
        st.close()
    out.print(f"report: {path}")


@app.command()
def history(
    ctx: typer.Context,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    since: Annotated[str | None, typer.Option(help="From this capture day, YYYY-MM-DD.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this capture day, YYYY-MM-DD.")] = None,
    group_by: Annotated[GroupBy, typer.Option(help="Row per day, week or month.")] = GroupBy.day,
    prompt: Annotated[str | None, typer.Option(help="Only this prompt's figures (or a synonym).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    store: Annotated[str | None, typer.Option(help=STORE_HELP, envvar=STORE_ENV)] = None,
) -> None:
    """Trend rows from the results store: photos, share with cracks, mean crack %, crack length, severity.

    Rows are per period and site, by capture day. The same figures are in the SQL view
    daily_site_summary for any SQL tool (README: "Querying the history").

    Example: qa-daemon history --site tower-a --group-by week --format csv
    """
    import csv
    import json

    from daemon.summary import history as trend_rows

    config = _with_store(_config(ctx), store)
    task = None
    if prompt is not None:
        task = config.task_of_prompt(prompt)
        if task is None:
            known = ", ".join(config.prompts.canonical.values())
            raise ConfigError(f"--prompt {prompt!r}: not a configured prompt or synonym; use one of {known}")
    st = _open_store(config)
    try:
        rows = trend_rows(st, site, _day(since, "--since"), _day(until, "--until"), group_by.value, task)
    finally:
        st.close()
    columns = list(rows[0]) if rows else ["period", "site", "photos"]
    if fmt == Format.json:
        print(json.dumps(rows))
    elif fmt == Format.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table(title=f"history by {group_by.value}" + (f", site {site}" if site else ""))
        for col in columns:
            table.add_column(col.replace("_", " "), justify="left" if col in ("period", "site") else "right")
        for r in rows:
            table.add_row(*["—" if r[c] is None else f"{r[c]:g}" if isinstance(r[c], float) else str(r[c])
                            for c in columns])
        out.print(table)


model_app = typer.Typer(help="The model versions in the store: list, promote, roll back.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("export")
def model_export(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A training run folder (its best/ is used) or a checkpoint.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint folder to write.")],
    input_size: Annotated[list[int] | None, typer.Option(
        "--input-size", help="Input side(s) to choose from per task, on calibration images [the run's].")] = None,
    prepared: Annotated[Path | None, typer.Option(help="Prepared folder from `prep` [config prep.out].")] = None,
    tta: Annotated[bool, typer.Option(help="Ship with flip test-time augmentation (twice the model time).")] = False,
    per_task_sizes: Annotated[bool, typer.Option(
        help="Let each task pick its own input side (tasks at different sides cannot share the image "
             "encoding: nearly twice the model time).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Make a shippable checkpoint of a run: settings chosen on data, fp16 weights, a card with measured metrics.

    The input side (among --input-size; one for all tasks unless --per-task-sizes) and, per task,
    threshold, small-component removal and box filling are chosen on the calibration half of the
    validation split; the card's metrics are
    then measured on the exported files with the code `qa-daemon eval` runs, on the whole split
    and on the held-out half.

    Example: qa-daemon model export runs/v2 --out model/weights/compact-v2 --input-size 384 --input-size 448
    """
    from model.export import export, run_checkpoint
    from model.segmenter import read_card

    config = _config(ctx)
    read_card(run_checkpoint(run_dir))  # a clear error before any work when there is no checkpoint
    card = export(run_dir, out_dir, config.require("prep.out", prepared or config.prep.out), input_size or None,
                  tta, config.model.batch_size, progress=not quiet, per_task_sizes=per_task_sizes)
    table = Table(title=f"{out_dir} (fp16), measured on the exported files")
    for col in ("task", "input", "threshold", "clean-up", "images", "mIoU", "Dice", "held-out mIoU"):
        table.add_column(col, justify="left" if col in ("task", "clean-up") else "right")
    for task, inf in card.inference.items():
        m = card.metrics[task]
        cleanup = ", ".join(x for x in (f"min area {inf['min_area']:g}" if inf["min_area"] else "",
                                        "boxes" if inf["fill_boxes"] else "", "flip TTA" if inf["flip_tta"] else "")
                            if x) or "none"
        table.add_row(task, str(inf["input_size"]), f"{card.thresholds[task]:.2f}", cleanup, str(m["images"]),
                      f"{m['miou']:.3f}", f"{m['dice']:.3f}",
                      f"{m['held_out']['miou']:.3f} ({m['held_out']['images']})")
    out.print(table)


@model_app.command("list")
def model_list(
    ctx: typer.Context,
    store: Annotated[str | None, typer.Option(help=STORE_HELP, envvar=STORE_ENV)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every model version the store knows, with its status and validation metrics.

    Example: qa-daemon model list
    """
    import json

    st = _open_store(_with_store(_config(ctx), store))
    try:
        versions = st.versions()
    finally:
        st.close()
    rows = [{"id": v.id, "name": v.name, "status": v.status, "active": v.active, "backend": v.backend,
             "registered": v.registered_at.isoformat(timespec="seconds"),
             "promoted": v.promoted_at.isoformat(timespec="seconds") if v.promoted_at else None,
             "metrics": json.loads(v.metrics or "{}"), "path": v.path} for v in versions]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="model versions")
    for col in ("id", "name", "status", "registered", "promoted", "gate mIoU (vs active)", "path"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), r["name"], r["status"] + (" *" if r["active"] else ""), r["registered"],
                      r["promoted"] or "", _gate_cell(r["metrics"]), r["path"])
    out.print(table)


def _gate_cell(metrics: dict) -> str:
    """A version's retrain scores in a few words: `crack 0.612 vs 0.580 (cal 100 / gate 100)` per task."""
    if "gate" not in metrics:  # registered at start-up, or by a retrain before the calibrated gate
        return " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, int | float))
    if not metrics["gate"]:
        return "not scored (no gate images)"
    cal, n = metrics.get("calibration_images", {}), metrics.get("gate_images", {})
    return "; ".join(f"{t} {g['candidate']:.3f} vs {g['active']:.3f} (cal {cal.get(t, 0)} / gate {n.get(t, 0)})"
                     for t, g in metrics["gate"].items())


@model_app.command("promote")
def model_promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version id or name (see `qa-daemon model list`).")],
    store: Annotated[str | None, typer.Option(help=STORE_HELP, envvar=STORE_ENV)] = None,
) -> None:
    """Make a version the active one; a running daemon switches to it between batches.

    Example: qa-daemon model promote 3
    """
    _change_active(ctx, store, lambda st: st.promote(version))


@model_app.command("rollback")
def model_rollback(
    ctx: typer.Context,
    store: Annotated[str | None, typer.Option(help=STORE_HELP, envvar=STORE_ENV)] = None,
) -> None:
    """Make the version promoted before the active one active again.

    Example: qa-daemon model rollback
    """
    _change_active(ctx, store, lambda st: st.rollback())


def _change_active(ctx: typer.Context, store: str | None, change) -> None:
    st = _open_store(_with_store(_config(ctx), store))
    try:
        mv = change(st)
    finally:
        st.close()
    out.print(f"active model: {mv.name} (version {mv.id})")


@app.command()
def status(
    ctx: typer.Context,
    store: Annotated[str | None, typer.Option(help=STORE_HELP, envvar=STORE_ENV)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show whether the daemon runs, its queue (processed, pending, failed, duplicates), the model, recent failures.

    Example: qa-daemon status --json
    """
    import json

    from daemon.app import status as daemon_status

    state = daemon_status(_with_store(_config(ctx), store))
    if as_json:
        print(json.dumps(state))
        return
    table = Table(title=f"qa-daemon: {'running' if state['running'] else 'not running'}", show_header=False)
    for key in ("paused", "processed", "processed_today", "pending", "failed", "missing", "duplicates", "model",
                "store"):
        if key != "paused" or state[key]:
            table.add_row(key.replace("_", " "), str(state[key]))
    out.print(table)
    for f in state["recent_failures"]:
        err.print(f"{f['at']}  {f['path']}: {f['error']}" + (f" -> {f['quarantined_to']}" if f["quarantined_to"]
                                                            else ""), highlight=False, markup=False)


def main() -> None:
    """Entry point of the `qa-daemon` script."""
    try:
        app()  # usage errors are click's: one message, exit code 2
    except QAError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
