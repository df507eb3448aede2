r"""What the commands share: option types, the config of a command, the store it opens, the consoles.

    def history(ctx: typer.Context, store: StoreOption = None) -> None:
        config = config_of(ctx, store)
        with open_store(config) as st:
            ...

Help texts are read as Rich markup, where `[config prep.out]` would be a style tag and vanish, so
the hints in brackets are written `\[config prep.out]`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from daemon.config import STORE_ENV, Config, load_config

if TYPE_CHECKING:
    from daemon.store import Store

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option(
    "--config", "-c", envvar="QA_DAEMON_CONFIG", show_envvar=True, help="Config file to use.", dir_okay=False)]
StoreOption = Annotated[str | None, typer.Option(
    "--store", help=r"SQLAlchemy URL of the results store \[config store.url].", envvar=STORE_ENV)]
PreparedOption = Annotated[Path | None, typer.Option(help=r"Prepared folder from `prep` \[config prep.out].")]
CheckpointOption = Annotated[Path | None, typer.Option(help=r"Checkpoint folder \[config model.checkpoint].")]
DeviceOption = Annotated[str | None, typer.Option(help=r"auto, cpu or cuda \[config model.device].")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def config_of(ctx: typer.Context, store: str | None = None) -> Config:
    """The validated config (the root callback says which file; loaded once per command), with `--store`."""
    if "config" not in ctx.obj:
        ctx.obj["config"] = load_config(ctx.obj["config_path"], missing_ok=ctx.obj["missing_ok"])
    return ctx.obj["config"].with_overrides(store=store)


@contextmanager
def open_store(config: Config, create: bool = False) -> Iterator[Store]:
    """The config's results store, closed when the block ends. Without `create` it must exist already: a
    command that reads the store says how to start instead of creating an empty one. A SQLite store on a
    network filesystem is refused as the daemon refuses it (`store.allow_network_fs`): a command writing
    beside a daemon, or reading a WAL file whose shared memory cannot be shared, is as unsafe there."""
    from daemon.store import Store  # SQLAlchemy: not for `--help`

    st = Store.from_config(config.store, create=create)
    try:
        yield st
    finally:
        st.close()
