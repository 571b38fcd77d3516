"""After ``finalize``, a shard's answer names what works (issue 17, finding 7): not ``--overwrite``,
which ``--shard`` refuses."""

from __future__ import annotations

from typer.testing import CliRunner

from sparsesync.cli import _register, app
from sparsesync.planner.api import make_plan
from tests.executor.test_run import make_sqlite_table, sparse_keys


def test_a_shard_of_a_finalized_run_does_not_suggest_overwrite(sqlite_url, tmp_path, monkeypatch):
    _register()
    monkeypatch.delenv("SPARSESYNC_SOURCE_URL", raising=False)
    make_sqlite_table(sqlite_url, sparse_keys(800, seed=3))
    path = make_plan(sqlite_url, "t", rows_per_query=200, file_size=20_000, use_cache=False).save(tmp_path / "plan.json")
    dest, run = str(tmp_path / "out"), CliRunner()
    base = ["--dest", dest, "--source", sqlite_url]
    for i in (1, 2):
        assert run.invoke(app, ["execute", str(path), *base, "--shard", f"{i}/2"]).exit_code == 0
    assert run.invoke(app, ["finalize", str(path), *base]).exit_code == 0

    res = run.invoke(app, ["execute", str(path), *base, "--shard", "1/2"])
    assert res.exit_code == 0 and "already completed" in res.output, res.output
    assert "pass --overwrite" not in res.output and "shard 1/2 has nothing to do" in res.output
    assert "--overwrite does not combine with --shard" in res.output
    # What the old line suggested is indeed refused:
    res = run.invoke(app, ["execute", str(path), *base, "--shard", "1/2", "--overwrite"])
    assert res.exit_code == 2 and "cannot be combined with --overwrite" in res.output
    # A whole-plan run of a finished plan still names --overwrite, and it works there (the line says so).
    res = run.invoke(app, ["execute", str(path), *base])
    assert res.exit_code == 0 and "pass --overwrite" in res.output, res.output
    res = run.invoke(app, ["execute", str(path), *base, "--overwrite"])
    assert res.exit_code == 0 and "800 rows" in res.output, res.output
