"""The ledger: transitions persisted atomically, round trip through a sink and a file, refusals."""

from __future__ import annotations

import json
import threading

import pytest

from sparsesync.executor.ledger import DONE, PENDING, RUNNING, Ledger, LedgerStore, PartRecord
from sparsesync.executor.sink import STAGING_MARK, LocalSink
from sparsesync.planner.api import make_plan
from sparsesync.errors import DestinationError
from tests.executor.test_run import make_sqlite_table


@pytest.fixture
def plan(sqlite_url):
    make_sqlite_table(sqlite_url, list(range(1, 1001)))
    return make_plan(sqlite_url, "t", rows_per_query=100, file_size=5_000)


def test_fresh_ledger_has_every_group_pending(plan):
    book = Ledger.fresh(plan)
    assert [g.index for g in book.groups] == [f.index for f in plan.files]
    assert all(g.state == PENDING for g in book.groups) and not book.all_done()
    assert book.plan_sha256 == plan.sha256 and book.plan_id == plan.plan_id


@pytest.mark.parametrize("where", ["sink", "file"])
def test_transitions_are_persisted_after_each_step(plan, tmp_path, where):
    store = (
        LedgerStore(sink=LocalSink(tmp_path), relpath="t/x/_ledger.json")
        if where == "sink"
        else LedgerStore(path=tmp_path / "deep" / "ledger.json")
    )
    assert store.load() is None
    book = Ledger.fresh(plan)
    store.save(book)
    store.transition(book, 0, RUNNING)
    assert store.load().groups[0].state == RUNNING and store.load().groups[0].attempts == 1
    part = PartRecord("t/x/part-00000.parquet", "/abs/part", 123, 10, "ab" * 32)
    store.transition(book, 0, DONE, parts=[part], rows=10, bytes=123, range_rows={"0": 4, "1": 6})
    again = store.load()
    assert again.groups[0].state == DONE and again.groups[0].parts == [part]
    assert again.groups[0].range_rows == {"0": 4, "1": 6} and again.groups[1].state == PENDING
    assert not list(tmp_path.rglob(f"*{STAGING_MARK}")) and not list(tmp_path.rglob("*.tmp"))


def test_concurrent_transitions_keep_every_update(plan, tmp_path):
    store = LedgerStore(path=tmp_path / "ledger.json")
    book = Ledger.fresh(plan)
    store.save(book)

    def finish(i):
        store.transition(book, i, RUNNING)
        store.transition(book, i, DONE, rows=i)

    threads = [threading.Thread(target=finish, args=(g.index,)) for g in book.groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    loaded = store.load()
    assert loaded.all_done() and [g.rows for g in loaded.groups] == [g.index for g in book.groups]


def test_torn_ledger_is_one_clear_error(tmp_path):
    path = tmp_path / "ledger.json"
    path.write_text('{"plan_id": "x", "groups": [')
    with pytest.raises(DestinationError, match="unreadable") as info:
        LedgerStore(path=path).load()
    assert "--overwrite" in info.value.one_line()


def test_ledger_json_is_plain_and_reviewable(plan, tmp_path):
    store = LedgerStore(path=tmp_path / "l.json")
    store.save(Ledger.fresh(plan))
    data = json.loads((tmp_path / "l.json").read_text())
    assert data["plan_sha256"] == plan.sha256 and len(data["groups"]) == len(plan.files)
