"""The `qa-daemon` command line: a thin layer over `model/`, `daemon/` and `reports/`.

Each command parses its options, calls the one function that does the work and prints the
result; the commands live in this package by concern:

    data.py      prep
    training.py  train, eval, model export, model quantize
    predict.py   predict
    service.py   run, status
    retrain.py   retrain
    reports.py   report, history
    models.py    model list, model promote, model rollback
    store.py     backup, scrub
    options.py   the shared options (--store, --config, ...), the config of a command, `open_store`

Library errors (`QAError`) become one line on stderr and exit code 2 here, at
the edge, and nowhere else.
"""

from __future__ import annotations

import sys

import typer

from daemon.cli import data, models, predict, reports, retrain, service, store, training
from daemon.cli.options import ConfigOption, err
from daemon.config import DEFAULT_CONFIG
from model.errors import QAError

app = typer.Typer(
    help="Drywall QA by prompted segmentation: crack and taping-area masks from site photos.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(ctx: typer.Context, config: ConfigOption = DEFAULT_CONFIG) -> None:
    # without --config or QA_DAEMON_CONFIG, a missing ./config.yaml means the defaults (compared by name: typer
    # may bring its own copy of click, whose ParameterSource is not click.core's)
    source = ctx.get_parameter_source("config")
    ctx.obj = {"config_path": config, "missing_ok": getattr(source, "name", None) == "DEFAULT"}


app.command()(data.prep)
app.command()(training.train)
app.command("eval")(training.evaluate)
app.command()(predict.predict)
app.command()(service.run)
app.command()(retrain.retrain)
app.command()(reports.report)
app.command()(reports.history)
app.command()(service.status)
app.command()(store.backup)
app.command()(store.scrub)

model_app = typer.Typer(help="The model versions in the store: list, promote, roll back.", no_args_is_help=True)
model_app.command("export")(training.model_export)
model_app.command("quantize")(training.model_quantize)
model_app.command("list")(models.model_list)
model_app.command("promote")(models.model_promote)
model_app.command("rollback")(models.model_rollback)
app.add_typer(model_app, name="model")


def main() -> None:
    """Entry point of the `qa-daemon` script."""
    try:
        app()  # usage errors are click's: one message, exit code 2
    except QAError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
