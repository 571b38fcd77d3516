"""The sync, load and gc commands: examples in --help, one-line errors, exit codes."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest
from typer.testing import CliRunner

from sparsesync.cli import _register, app

from .imagekit import Image

_register()


def invoke(*args):
    return CliRunner().invoke(app, list(args), terminal_width=200)


@pytest.mark.parametrize("command", ["sync", "load", "gc"])
def test_help_has_an_example(command):
    res = invoke(command, "--help")
    assert res.exit_code == 0 and "Example" in res.stdout and f"sparsesync {command}" in res.stdout


def test_sync_shares_plan_and_execute_option_definitions():
    import inspect

    from sparsesync.cli import options
    from sparsesync.cli.execute_cmd import execute_command
    from sparsesync.cli.plan_cmd import plan_command
    from sparsesync.cli.sync_cmd import sync_command

    def _option(command, name):
        return inspect.signature(command).parameters[name].default

    assert _option(sync_command, "rows_per_query") is _option(plan_command, "rows_per_query") is options.ROWS_PER_QUERY
    assert _option(sync_command, "reader") is _option(execute_command, "reader") is options.READER
    # the whole comparison, every option of plan/execute/run/sync: tests/test_cli_options.py


def test_load_into_duckdb_and_up_to_date_the_second_time(tmp_path):
    img = Image(tmp_path / "lake")
    img.sync({1: "a", 5: "b"}, ["n"])
    img.sync({1: "a", 5: "B", 9: "c"}, [])
    wh = tmp_path / "wh.duckdb"
    res = invoke("load", str(tmp_path / "lake"), "orders", "--into", f"duckdb:///{wh}", "--target", "main.orders_copy")
    assert res.exit_code == 0, res.output
    assert "loaded the image (sequence 2)" in res.stdout  # a new target: from the image
    rows = duckdb.connect(str(wh)).execute('SELECT id, v FROM main.orders_copy ORDER BY id').fetchall()
    assert rows == [(1, "a"), (5, "B"), (9, "c")]
    res = invoke("load", str(tmp_path / "lake"), "orders", "--into", f"duckdb:///{wh}", "--target", "main.orders_copy")
    assert res.exit_code == 0 and "up to date (sequence 2)" in res.stdout


def test_load_errors_are_one_line(tmp_path):
    res = invoke("load", str(tmp_path), "nothing", "--into", f"duckdb:///{tmp_path / 'wh.duckdb'}")
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.output.count("\n") == 1 and "sparsesync sync" in res.output
    res = invoke("load", str(tmp_path), "t", "--into", "oracle://x@y/z")
    assert res.exit_code == 2 and "unsupported warehouse oracle://" in res.output


def test_redshift_load_without_a_driver_says_what_to_install(tmp_path):
    img = Image(tmp_path / "lake")
    img.sync({1: "a"}, [])
    res = invoke("load", str(tmp_path / "lake"), "orders", "--into", "redshift+redshift_connector://u@h:5439/db")
    assert res.exit_code == 2 and "Redshift loads from S3 only" in res.output


def test_gc_dry_run_then_delete(tmp_path):
    img = Image(tmp_path / "lake")
    img.clock -= timedelta(days=30)  # runs a month ago: their replaced parts are old enough
    img.sync({1: "a"}, [])
    old = next(p["path"] for p in img.parts if p["path"])
    img.sync({1: "A"}, [])
    res = invoke("gc", str(tmp_path / "lake"), "--keep", "1d")
    assert res.exit_code == 0 and f"would remove orders/{old}" in res.stdout and "add --delete" in res.stdout
    assert (tmp_path / "lake" / "orders" / old).exists()
    res = invoke("gc", str(tmp_path / "lake"), "orders", "--keep", "1d", "--delete")
    assert res.exit_code == 0 and f"removed orders/{old}" in res.stdout
    assert not (tmp_path / "lake" / "orders" / old).exists()
    res = invoke("gc", str(tmp_path / "lake"), "--keep", "soon")
    assert res.exit_code == 2 and "not a duration" in res.output



def test_terminal_progress_follows_the_events(monkeypatch):
    import io

    from sparsesync.cli.sync_cmd import TableProgress

    monkeypatch.setattr("sys.stderr", io.StringIO())
    p = TableProgress()
    for ev in ({"event": "table_start", "table": "a"}, {"event": "sync_start", "table": "a", "kind": "append"},
               {"event": "table_start", "table": "b"}, {"event": "table_done", "table": "a", "status": "ok"}):
        p(ev)
    p.close()
    tasks = {t.description: t for t in p.bar.tasks}
    assert tasks["a"].finished and not tasks["b"].finished and tasks["all tables"].completed == 1


def test_sync_needs_tables_or_all(tmp_path):
    res = invoke("sync", "sqlite:///nowhere.db", "--dest", str(tmp_path))
    assert res.exit_code == 2 and "--all" in res.output and "Traceback" not in res.output
