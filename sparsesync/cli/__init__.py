"""The ``sparsesync`` command: thin typer wrappers around the library.

Each command parses its options, calls one library function, renders the result, and maps
:class:`SparsesyncError` to a one-line message and its exit code. Only this package imports typer
or renders for a terminal.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from sparsesync.errors import SparsesyncError

app = typer.Typer(
    name="sparsesync",
    help="Plan and execute exactly-once exports of sparse-keyed MySQL tables into consolidated Parquet "
    "for one Redshift COPY per table.\n\nExample: sparsesync plan mysql+pymysql://user@db:3306/shop orders",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


_state: dict = {"config_path": None, "config": None, "log_level": None}


@app.callback()
def _root(
    config: Optional[Path] = typer.Option(
        None, "--config", metavar="FILE",
        help="YAML settings for plan, execute and bench (default: $SPARSESYNC_CONFIG if set). "
        "Command-line options override it. Example: sparsesync --config sync.yaml plan URL orders",
    ),
    log_level: Optional[str] = typer.Option(
        None, "--log-level", metavar="LEVEL",
        help="debug, info, warning or error [default: warning, or monitoring.log_level]. "
        "info logs per-range efficiency and sparse regions (JSON lines when stderr is not a terminal).",
    ),
) -> None:
    """Plan and execute exactly-once exports of sparse-keyed tables into consolidated Parquet."""
    _state["config_path"] = config
    _state["config"] = None
    _state["log_level"] = log_level


def current_config():
    """The effective :class:`sparsesync.config.Config` (loaded once per invocation); logging follows it.

    Raises :class:`ConfigError` for an unreadable file, unknown keys or bad values.
    """
    if _state["config"] is None:
        from sparsesync import logs
        from sparsesync.config import load_config, merge

        cfg = load_config(_state["config_path"])
        mon = merge(cfg, "monitoring", log_level=_state["log_level"])  # validates --log-level too
        logs.configure(mon.log_format, level=mon.log_level.upper())
        # The switches silence one kind of event each, whatever the level.
        logging.getLogger("sparsesync.efficiency").disabled = not mon.log_efficiency_metrics
        logging.getLogger("sparsesync.detection").disabled = not mon.alert_on_sparse_detection
        _state["config"] = cfg
    return _state["config"]


def fail(exc: SparsesyncError) -> "typer.Exit":
    """Print one line to stderr and return the Exit to raise."""
    typer.echo(error_line(exc), err=True)
    return typer.Exit(exc.exit_code)


def error_line(exc: SparsesyncError) -> str:
    """``sparsesync: error: …``; a run stopped by SIGINT/SIGTERM is no error: ``sparsesync: interrupted by …``."""
    from sparsesync.interrupt import Interrupted

    return f"sparsesync: {exc.one_line()}" if isinstance(exc, Interrupted) else f"sparsesync: error: {exc.one_line()}"


def _register() -> None:
    # Command modules attach themselves to ``app``; import order is the order in --help.
    from . import plan_cmd  # noqa: F401
    from . import show_cmd  # noqa: F401
    from . import execute_cmd  # noqa: F401
    from . import finalize_cmd  # noqa: F401
    from . import bench_cmd  # noqa: F401
    from . import sync_cmd  # noqa: F401

    _escape_help_markup(app)


_escaped: set[int] = set()  # ids of help holders already escaped (_register may run more than once)


def _escape_help_markup(typer_app: typer.Typer) -> None:
    """Help texts are plain text: escape what rich would read as markup, once, for every command.

    typer renders help through rich markup, which takes ``[default: 100000]`` (and any ``[...]``) for a
    style tag and drops it ("… rows per range query ."). Escaping every option's, argument's and command's
    help here keeps each ``[default: …]`` visible without touching the command modules.
    """
    import inspect

    try:
        from rich.markup import escape
    except ImportError:  # no rich: typer prints plain click help, nothing is read as markup
        return
    for info in typer_app.registered_commands:
        if id(info) not in _escaped:
            _escaped.add(id(info))
            doc = info.help if info.help is not None else inspect.getdoc(info.callback)
            if doc:
                info.help = escape(doc)
        for param in inspect.signature(info.callback).parameters.values():
            holder = param.default
            if isinstance(getattr(holder, "help", None), str) and id(holder) not in _escaped:
                _escaped.add(id(holder))
                if "[default:" in holder.help and hasattr(holder, "show_default"):
                    holder.show_default = False  # the text states its default: typer must not repeat it
                holder.help = escape(holder.help)
    for group in typer_app.registered_groups:
        _escape_help_markup(group.typer_instance)


def main() -> None:
    """Console entry point."""
    _register()
    try:
        app()
    except SparsesyncError as exc:  # a library error escaping a command: still one line
        typer.echo(error_line(exc), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("sparsesync: interrupted", err=True)
        sys.exit(130)
