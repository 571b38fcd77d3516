"""``--shard I/N`` and ``finalize`` in process: parsing, the assignment, locks, refusals, mixed ledgers.

The array-job runs themselves (concurrent CLI processes on MariaDB, one killed) are in test_shard_array.py.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sparsesync.errors import IncompleteRunError, UsageError
from sparsesync.executor.lock import FileLock, LockedError
from sparsesync.executor.run import execute_plan, lock_relpath
from sparsesync.executor.shard import (
    Shard, assign_groups, finalize_plan, ledger_name, owners, parse_shard, shard_groups, shard_lock_relpath,
)
from sparsesync.planner.api import make_plan
from tests.executor.test_run import make_sqlite_table, out_dir, read_output, sparse_keys


# ---- parsing ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [("1/1", Shard(1, 1)), ("3/8", Shard(3, 8)), (" 2 / 2 ", Shard(2, 2))])
def test_parse_shard(text, want):
    assert parse_shard(text, environ={}) == want


@pytest.mark.parametrize("text, says", [("3/2", "between 1 and 2"), ("0/2", "between 1 and 2"), ("a/b", "is not I/N"),
                                        ("2", "is not I/N"), ("1/0", "at least 1"), ("-1/3", "is not I/N")])
def test_parse_shard_refuses_one_line(text, says):
    with pytest.raises(UsageError) as exc:
        parse_shard(text, environ={})
    assert says in exc.value.one_line() and "\n" not in exc.value.one_line()


def test_parse_shard_auto_reads_the_orchestrators_zero_based_index():
    assert parse_shard("auto/4", environ={"JOB_COMPLETION_INDEX": "0"}) == Shard(1, 4)
    assert parse_shard("auto/4", environ={"AWS_BATCH_JOB_ARRAY_INDEX": "3"}) == Shard(4, 4)
    with pytest.raises(UsageError, match="between 1 and 4"):
        parse_shard("auto/4", environ={"JOB_COMPLETION_INDEX": "4"})
    with pytest.raises(UsageError, match="none is set"):
        parse_shard("auto/4", environ={})
    with pytest.raises(UsageError, match="exactly one"):  # two orchestrators' variables: ambiguous
        parse_shard("auto/4", environ={"JOB_COMPLETION_INDEX": "0", "AWS_BATCH_JOB_ARRAY_INDEX": "1"})


@pytest.mark.parametrize("bad", ["3/2", "0/2", "a/b"])
def test_cli_refuses_a_bad_shard_in_one_line(bad, tmp_path):
    from sparsesync.cli import _register, app

    _register()
    res = CliRunner().invoke(app, ["execute", str(tmp_path / "missing.json"), "--dest", str(tmp_path), "--shard", bad])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sparsesync: error: --shard") and "Traceback" not in res.output


# ---- assignment -------------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=10**12), max_size=200), count=st.integers(1, 40))
def test_assignment_is_a_balanced_partition(sizes, count):
    split = assign_groups(sizes, count)
    assert len(split) == count
    flat = sorted(i for shard in split for i in shard)
    assert flat == list(range(len(sizes)))  # every group in exactly one shard
    if sizes:
        loads = [sum(sizes[i] for i in shard) for shard in split]
        assert max(loads) <= sum(sizes) / count + max(sizes)  # greedy onto the lightest: mean + largest at most
    assert assign_groups(list(sizes), count) == split  # from the sizes alone: every machine computes the same


def test_assignment_ties_go_by_index():
    assert assign_groups([5, 5, 5, 5, 5], 2) == [[0, 2, 4], [1, 3]]
    assert assign_groups([1, 9, 1], 2) == [[1], [0, 2]]  # largest first onto shard 1; the small ones fill shard 2
    assert assign_groups([], 3) == [[], [], []]


# ---- in-process runs on SQLite ---------------------------------------------------------------------------------
@pytest.fixture
def planned(sqlite_url, tmp_path):
    keys = sparse_keys(3000, seed=11)
    make_sqlite_table(sqlite_url, keys)
    plan = make_plan(sqlite_url, "t", rows_per_query=200, file_size=20_000, use_cache=False)
    assert len(plan.files) >= 6
    return plan, keys


def test_shards_then_finalize_and_what_each_writes(planned, sqlite_url, tmp_path):
    plan, keys = planned
    dest = tmp_path / "out"
    folder = out_dir(dest, plan)
    reports = [execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(i, 3)) for i in (1, 2, 3)]
    for i, r in enumerate(reports, 1):
        assert r.status == "shard-done" and r.shard["groups"] == shard_groups(plan, Shard(i, 3))
        assert r.shard["done_now"] == r.shard["groups"]
        saved = json.loads((folder / f"_report.shard-{i}-of-3.json").read_text())
        assert saved["shard"]["groups"] == r.shard["groups"] and saved["rows"] == r.rows
    assert not any((folder / a).exists() for a in ("manifest.json", "copy.sql", "create_table.sql", "_report.json"))
    assert sum(r.rows for r in reports) == len(keys)

    rerun = execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(2, 3))  # resumes: nothing left
    assert rerun.shard["done_now"] == [] and rerun.groups_skipped == len(rerun.shard["groups"])

    final = finalize_plan(plan, str(dest), source_url=sqlite_url)
    assert final.status == "done" and final.rows == len(keys) and final.verified == "counts"
    assert [r[0] for r in read_output(dest, plan, "id")] == sorted(keys)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(e["url"] for e in manifest["entries"]) == sorted(str(p) for p in folder.glob("*.parquet"))
    assert finalize_plan(plan, str(dest), source_url=sqlite_url).status == "already-complete"


def test_finalize_before_every_shard_is_done_names_the_missing_groups(planned, sqlite_url, tmp_path):
    plan, _ = planned
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(2, 3))
    before = sorted(p.name for p in out_dir(dest, plan).iterdir())
    with pytest.raises(IncompleteRunError) as exc:
        finalize_plan(plan, str(dest), source_url=sqlite_url)
    line = exc.value.one_line()
    for s in (1, 3):
        missing = ", ".join(f"#{g}" for g in shard_groups(plan, Shard(s, 3)))
        assert f"shard {s}/3 (not started): group{'s' if ',' in missing else ''} {missing}" in line
    assert "shard 2/3" not in line and exc.value.exit_code == 11
    assert sorted(p.name for p in out_dir(dest, plan).iterdir()) == before  # nothing written


def test_whole_plan_run_refuses_a_sharded_folder_and_shards_refuse_a_whole_plan_run(planned, sqlite_url, tmp_path):
    plan, _ = planned
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(1, 2))
    with pytest.raises(UsageError, match="ledgers of a sharded run"):
        execute_plan(plan, str(dest), source_url=sqlite_url)
    with pytest.raises(UsageError, match="split 2 ways"):
        execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(1, 3))
    with pytest.raises(UsageError, match="--overwrite"):
        execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(2, 2), overwrite=True)

    # The plan's lock held (a whole-plan run or finalize in progress): a shard refuses and leaves no ledger.
    with FileLock(dest / lock_relpath(plan), purpose="execute plan (test)"):
        with pytest.raises(LockedError, match="execute plan \\(test\\)"):
            execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(2, 2))
    assert not (out_dir(dest, plan) / ledger_name(Shard(2, 2))).exists()


def test_a_shard_refuses_one_point_in_time(planned, sqlite_url, tmp_path):
    plan, _ = planned
    dest = tmp_path / "out"
    with pytest.raises(UsageError, match="--consistency snapshot cannot be combined with --shard"):
        execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(1, 2), consistency="snapshot")
    assert not dest.exists()  # refused before anything was written


def test_a_shard_runs_beside_another_but_not_beside_itself(planned, sqlite_url, tmp_path):
    plan, keys = planned
    dest = tmp_path / "out"
    with FileLock(dest / shard_lock_relpath(plan, Shard(1, 2)), purpose="shard 1/2 (test)"):
        with pytest.raises(LockedError, match="shard 1/2 \\(test\\)"):
            execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(1, 2))
        assert execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(2, 2)).status == "shard-done"
    execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(1, 2))
    assert finalize_plan(plan, str(dest), source_url=sqlite_url).rows == len(keys)


def test_finalize_merges_an_interrupted_whole_plan_run_with_shards(planned, sqlite_url, tmp_path):
    """A whole-plan run stopped after its first group; shards then do the rest and skip that group."""
    plan, keys = planned
    dest = tmp_path / "out"

    class Stop(Exception):
        pass

    def stop_after_first_group(ev):
        if ev.kind == "group":
            raise Stop()

    with pytest.raises(Stop):
        execute_plan(plan, str(dest), source_url=sqlite_url, progress=stop_after_first_group)
    whole = json.loads((out_dir(dest, plan) / "_ledger.json").read_text())
    done = [g["index"] for g in whole["groups"] if g["state"] == "done"]
    assert done, "the whole-plan run finished at least one group"
    owner = owners(plan, 2)
    reports = {i: execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(i, 2)) for i in (1, 2)}
    for g in done:  # its owner left it alone: the whole-plan run's part stays, not written twice
        assert g in reports[owner[g]].shard["elsewhere"] and g not in reports[owner[g]].shard["done_now"]
    final = finalize_plan(plan, str(dest), source_url=sqlite_url)
    assert final.shard["groups"]["whole-plan"] == done
    assert [r[0] for r in read_output(dest, plan, "id")] == sorted(keys)


def test_cli_finalize_refuses_in_one_line_then_finalizes(planned, sqlite_url, tmp_path, monkeypatch):
    from sparsesync.cli import _register, app

    _register()
    monkeypatch.delenv("SPARSESYNC_SOURCE_URL", raising=False)
    plan, keys = planned
    path = plan.save(tmp_path / "plan.json")
    dest = str(tmp_path / "out")
    run = CliRunner()
    res = run.invoke(app, ["execute", str(path), "--dest", dest, "--source", sqlite_url, "--shard", "1/2"])
    assert res.exit_code == 0 and "shard 1/2:" in res.output, res.output
    res = run.invoke(app, ["finalize", str(path), "--dest", dest, "--source", sqlite_url])
    assert res.exit_code == 11 and res.output.count("\n") == 1 and "shard 2/2 (not started)" in res.output, res.output
    res = run.invoke(app, ["execute", str(path), "--dest", dest, "--source", sqlite_url, "--shard", "2/2"])
    assert res.exit_code == 0, res.output
    res = run.invoke(app, ["finalize", str(path), "--dest", dest, "--source", sqlite_url])
    assert res.exit_code == 0 and f"{len(keys):,} rows" in res.output and "manifest:" in res.output, res.output


def test_dry_run_of_a_shard_lists_only_its_ranges_and_writes_nothing(planned, sqlite_url, tmp_path):
    plan, _ = planned
    mine = shard_groups(plan, Shard(2, 3))
    report = execute_plan(plan, str(tmp_path / "out"), source_url=sqlite_url, shard=Shard(2, 3), dry_run=True)
    assert report.status == "dry-run"
    assert len(report.queries_sql) == sum(len(plan.ranges_of(plan.files[g])) for g in mine) < len(plan.ranges)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("combo", ["shard", "snapshot"])
def test_the_dask_engine_refuses_what_it_does_not_do(planned, sqlite_url, tmp_path, combo):
    pytest.importorskip("distributed")  # the test extra installs it; a clear reason where it is not
    from sparsesync.executor.engine_dask import DaskOptions

    plan, _ = planned
    dest = tmp_path / "out"
    kwargs = {"shard": Shard(1, 2)} if combo == "shard" else {"consistency": "snapshot"}
    what = "--shard" if combo == "shard" else "--consistency snapshot"
    with pytest.raises(UsageError, match=f"--engine dask cannot be combined with {what}"):
        execute_plan(plan, str(dest), source_url=sqlite_url, dask=DaskOptions(), **kwargs)
    assert not dest.exists()  # refused before anything was written or any cluster started


def test_a_rerun_shard_removes_the_temp_file_of_its_own_killed_ledger_write_only(planned, sqlite_url, tmp_path):
    """A kill during the shard's atomic ledger write leaves ``_ledger.shard-I-of-N.json.<pid>.sparsesync-tmp``."""
    plan, _ = planned
    dest = tmp_path / "out"
    execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(1, 2))
    folder = out_dir(dest, plan)
    mine = folder / f"{ledger_name(Shard(1, 2))}.4242.sparsesync-tmp"
    theirs = folder / f"{ledger_name(Shard(2, 2))}.4243.sparsesync-tmp"
    mine.write_text("{")
    theirs.write_text("{")
    execute_plan(plan, str(dest), source_url=sqlite_url, shard=Shard(1, 2))
    assert not mine.exists()
    assert theirs.exists()  # shard 2 may be writing it right now: never ours to remove
