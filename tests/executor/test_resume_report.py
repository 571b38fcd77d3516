"""Truthful run reports (issue 7 finding 9): after a resume the report says which snapshot each group
came from (``mixed`` overall), sums the zero dates of every group (also those an earlier run read), and
says where the per-range COUNT(*) check against the source was taken — or why it was skipped."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from sparsesync.executor.run import execute_plan
from sparsesync.planner.api import make_plan
from sparsesync.errors import VerifyError
from tests.executor.test_run import out_dir

DDL = "CREATE TABLE {name} (id BIGINT PRIMARY KEY, d DATE NULL, v VARCHAR(20)) ENGINE=InnoDB"


class Interrupt(Exception):
    pass


def _table(engine, make, n=600):
    name = make(DDL, prefix="rr")
    rows = [{"id": i * 3, "d": "0000-00-00" if i % 10 == 0 else "2024-05-06", "v": f"v{i}"} for i in range(n)]
    with engine.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = ''")
        conn.execute(sa.text(f"INSERT INTO `{name}` VALUES (:id, :d, :v)"), rows)
    return name, sum(1 for r in rows if r["d"].startswith("0000"))


def _interrupted_then_resumed(plan, dest, url, reader, workers):
    second_group_first_range = plan.files[1].first_range

    def stop_in_group_1(ev):
        if ev.kind == "range" and ev.range_index == second_group_first_range:
            raise Interrupt()

    with pytest.raises(Interrupt):
        execute_plan(plan, str(dest), source_url=url, reader=reader, workers=1, progress=stop_in_group_1)
    ledger = json.loads((out_dir(dest, plan) / "_ledger.json").read_text())
    assert ledger["groups"][0]["state"] == "done" and ledger["groups"][0]["zero_dates"]
    return execute_plan(plan, str(dest), source_url=url, reader=reader, workers=workers)


@pytest.mark.mysql
@pytest.mark.parametrize("reader,workers,level", [("pymysql", 1, "mixed"), ("connectorx", 1, "per-range"),
                                                  ("pymysql", 2, "mixed")])
def test_resumed_report_is_truthful(reader, workers, level, mysql_engine, mysql_url, mysql_table, tmp_path):
    name, zero = _table(mysql_engine, mysql_table)
    plan = make_plan(mysql_engine, name, rows_per_query=60, file_size=1_500)
    assert len(plan.files) >= 3
    rep = _interrupted_then_resumed(plan, tmp_path / "out", mysql_url, reader, workers)
    assert rep.groups_skipped >= 1 and rep.rows == 600
    assert rep.zero_dates == {"d": zero}  # the skipped groups' zero dates are not lost
    assert rep.consistency == level
    kinds = {c for _, c, _ in rep.group_consistency}
    assert kinds == ({"per-range"} if reader == "connectorx" else {"snapshot"} if workers == 1 else {"snapshot", "per-range"})
    assert rep.count_check["where"] == "after-run" and "earlier run" in rep.count_check["reason"]
    assert rep.count_check["source_rows"] == 600 and rep.count_check["mismatched"] == 0
    saved = json.loads((out_dir(tmp_path / "out", plan) / "_report.json").read_text())
    assert saved["consistency"] == level and saved["zero_dates"] == {"d": zero}
    assert any("COUNT(*) per range matched the source after the run" in line for line in rep.summary_lines())


@pytest.mark.mysql
def test_uninterrupted_snapshot_run_counts_inside_the_snapshot(mysql_engine, mysql_url, mysql_table, tmp_path):
    name, zero = _table(mysql_engine, mysql_table)
    plan = make_plan(mysql_engine, name, rows_per_query=60, file_size=1_500)
    rep = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, reader="pymysql")
    assert rep.consistency == "snapshot" and rep.zero_dates == {"d": zero}
    assert rep.count_check["where"] == "snapshot" and rep.count_check["ranges"] == len(plan.ranges)
    ledger = json.loads((out_dir(tmp_path / "out", plan) / "_ledger.json").read_text())
    assert sum(g["zero_dates"].get("d", 0) for g in ledger["groups"]) == zero  # persisted per group
    rep = execute_plan(plan, str(tmp_path / "out2"), source_url=mysql_url, verify=False, workers=2)
    assert rep.verified == "skipped" and "--no-verify" in rep.count_check["skipped"]
    assert rep.zero_dates == {"d": zero}  # per group, also with parallel groups
    assert any(line.startswith("COUNT check skipped: --no-verify") for line in rep.summary_lines())


@pytest.mark.mysql
def test_a_row_deleted_from_a_range_already_read_fails_the_per_range_check(mysql_engine, mysql_url, mysql_table,
                                                                          tmp_path):
    """The end-of-run check compares with the source, not with what the reader streamed."""
    name, _ = _table(mysql_engine, mysql_table)
    plan = make_plan(mysql_engine, name, rows_per_query=60, file_size=1_500)
    done = []

    def delete_after_range_0(ev):
        if ev.kind == "range" and ev.range_index == 0 and not done:
            done.append(1)
            with mysql_engine.begin() as conn:
                conn.exec_driver_sql(f"DELETE FROM `{name}` WHERE id = 3")  # in range 0, already exported
    with pytest.raises(VerifyError) as err:
        execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, reader="connectorx",
                     progress=delete_after_range_0)
    assert "#0 [" in err.value.one_line() and "source 59, written 60" in err.value.one_line()
    assert not (out_dir(tmp_path / "out", plan) / "manifest.json").exists()


@pytest.mark.mysql
@pytest.mark.parametrize("reader", ["pymysql", "connectorx"])
def test_zero_dates_of_a_retried_attempt_are_counted_once_with_workers(reader, mysql_engine, mysql_url, mysql_table,
                                                                       tmp_path):
    """--workers 2 shares one reader (and its zero-date counter) between threads; a group whose first attempt
    read zero dates and then failed transiently is read again. The report counts each zero date once."""
    from sparsesync.errors import TransientSourceError

    name, zero = _table(mysql_engine, mysql_table)
    plan = make_plan(mysql_engine, name, rows_per_query=60, file_size=4_000)
    group = plan.files[1]
    assert group.last_range > group.first_range  # the fault comes after a range of the group was read
    failed = []

    def fail_once(ev):
        if ev.kind == "range" and ev.range_index == group.first_range + 1 and not failed:
            failed.append(ev.range_index)
            raise TransientSourceError("injected: connection lost", table=name)

    rep = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, reader=reader, workers=2,
                       progress=fail_once, retry_base_s=0.01)
    assert failed and rep.retries >= 1 and rep.rows == 600
    assert rep.zero_dates == {"d": zero}


@pytest.mark.mysql
def test_after_run_counts_start_once_every_range_is_read_while_the_last_file_closes(mysql_engine, mysql_url,
                                                                                    mysql_table, tmp_path, monkeypatch):
    """The after-run counts overlap the last group's finishing work, never a read: they begin after the last
    range's rows were read, and before the last group is done."""
    import time

    import sparsesync.executor.run as run

    name, _ = _table(mysql_engine, mysql_table)
    plan = make_plan(mysql_engine, name, rows_per_query=60, file_size=1_500)
    assert len(plan.files) >= 2
    events, seen_at_count = [], []
    real = run._after_run_counts

    def counts(engine, p):
        seen_at_count.extend(events)
        return real(engine, p)

    def progress(ev):
        if ev.kind == "group" and ev.group == plan.files[-1].index:
            time.sleep(0.5)  # a slow close or upload of the last file
        events.append((ev.kind, ev.range_index if ev.kind == "range" else ev.group))

    monkeypatch.setattr(run, "_after_run_counts", counts)
    report = execute_plan(plan, str(tmp_path / "out"), source_url=mysql_url, reader="connectorx", progress=progress)
    assert report.count_check["where"] == "after-run" and report.count_check["mismatched"] == 0
    ranges_read = {i for kind, i in seen_at_count if kind == "range"}
    assert ranges_read == {r.index for r in plan.ranges}  # every range read before counting began
    assert ("group", plan.files[-1].index) not in seen_at_count  # and the last group not yet done
    assert ("group", plan.files[-1].index) in events
