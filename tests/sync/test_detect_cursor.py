"""--detect cursor:COL with a row stamped far in the future (issue 16, finding 2): the watermark is capped at the
server's clock, so later updates, inserts below the max and deletes inside the lookback are still seen; the
future row is re-read every run and reported; an image whose watermark a future value froze recovers once."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from sparsesync.executor.dest import open_sink
from sparsesync.sync import detect as det
from sparsesync.sync.state import load_state, save_state
from sparsesync.sync.table import SyncOptions, sync_table
from tests.sync.conftest import image_rows, source_rows, state_of

pytestmark = pytest.mark.mysql

DDL = ("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(40), n INT NULL, "
       "updated_at {type} NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (updated_at))")
OPTS = SyncOptions(detect="cursor:updated_at", lookback_s=600, rows_per_query=200, file_size_mb=0.002,
                   reader="pymysql")
FUTURE = "2030-01-01 00:00:00"


def execute(engine, *sql: str) -> None:
    with engine.begin() as conn:
        for s in sql:
            conn.exec_driver_sql(s)


def table_with_a_future_row(mysql_table, engine, col_type: str) -> str:
    """Even ids 2..2000 stamped in 2020, and id 1000 stamped 2030-01-01."""
    t = mysql_table(DDL.replace("{type}", col_type), prefix="fut")
    execute(engine,
            f"INSERT INTO `{t}` (id, v, n, updated_at) SELECT 2 * seq, CONCAT('a', seq), MOD(seq, 7), "
            f"TIMESTAMP'2020-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_1000",
            f"UPDATE `{t}` SET updated_at = '{FUTURE}' WHERE id = 1000")
    return t


def sync(mysql_url, t, dest):
    r = sync_table(mysql_url, t, dest, OPTS, raise_errors=True)
    assert r.status == "ok"
    return r


def ahead_notes(r) -> list[str]:
    return [n for n in r.notes if "ahead of the server clock" in n]


@pytest.mark.parametrize("col_type", ["DATETIME(6)", "TIMESTAMP(6)"])
def test_a_future_timestamp_does_not_freeze_the_watermark(mysql_url, mysql_engine, mysql_table, tmp_path, col_type):
    t = table_with_a_future_row(mysql_table, mysql_engine, col_type)
    first = sync(mysql_url, t, tmp_path)
    assert first.kind == "first"
    wm = det.cursor_value(state_of(tmp_path, t)["cursor"]["watermark"])

    # An update of another row (stamped now by ON UPDATE) and an insert below the max key.
    execute(mysql_engine, f"UPDATE `{t}` SET v = 'updated' WHERE id = 300",
            f"INSERT INTO `{t}` (id, v) VALUES (701, 'below the max')")
    r = sync(mysql_url, t, tmp_path)
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)
    assert r.kind == "changed"
    assert wm < datetime(2030, 1, 1)  # capped at the server's clock
    assert ahead_notes(first) and ahead_notes(first)[0].startswith(f"1 row(s) of {t} have updated_at ahead")
    assert len(ahead_notes(r)) == 1  # reported every run while it is ahead

    # A delete inside the lookback (id 300 was stamped a moment ago), and the future row updated in place
    # (still 2030: only a re-read every run can see that).
    execute(mysql_engine, f"DELETE FROM `{t}` WHERE id = 300",
            f"UPDATE `{t}` SET v = 'future again', updated_at = '{FUTURE}' WHERE id = 1000")
    r = sync(mysql_url, t, tmp_path)
    assert r.kind == "changed"
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)

    # The future row deleted: its span's digest (the window is open above) loses it.
    execute(mysql_engine, f"DELETE FROM `{t}` WHERE id = 1000")
    r = sync(mysql_url, t, tmp_path)
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)
    assert not ahead_notes(r)

    r = sync(mysql_url, t, tmp_path)  # nothing ahead any more: a quiet run re-reads nothing
    assert (r.kind, r.spans_reexported, r.rows_read) == ("append", 0, 0)


def test_an_image_frozen_by_a_future_watermark_is_reread_once(mysql_url, mysql_engine, mysql_table, tmp_path):
    t = table_with_a_future_row(mysql_table, mysql_engine, "DATETIME(6)")
    sync(mysql_url, t, tmp_path)
    sink = open_sink(str(tmp_path))
    state = load_state(sink, t)
    # As an earlier version left it: the future value as the watermark, its window just below it.
    frozen = {"column": "updated_at", "watermark": FUTURE,
              "window": {"lo": "2029-12-31 23:50:00", "parts": {}}}
    save_state(sink, t, replace(state, cursor=frozen))
    execute(mysql_engine, f"UPDATE `{t}` SET v = 'missed before' WHERE id = 40")
    r = sync(mysql_url, t, tmp_path)
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)
    assert any("is ahead of the server clock" in n and "re-read once" in n for n in r.notes)
    assert r.kind == "changed" and r.spans_reexported == len(state.parts)
    assert det.cursor_value(state_of(tmp_path, t)["cursor"]["watermark"]) < datetime(2030, 1, 1)

    execute(mysql_engine, f"UPDATE `{t}` SET v = 'seen' WHERE id = 42")
    r = sync(mysql_url, t, tmp_path)  # back to normal: the changed span and the future row's span
    assert r.kind == "changed" and r.spans_reexported <= 2
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)


def test_the_clock_of_a_cursor_column():
    from sparsesync.planner.plan import ColumnSpec

    class Info:
        columns = (ColumnSpec("a", "datetime(6)", "timestamp[us]", "TIMESTAMP"),
                   ColumnSpec("b", "timestamp", "timestamp[us, tz=UTC]", "TIMESTAMPTZ"),
                   ColumnSpec("c", "date", "date32", "DATE"), ColumnSpec("d", "bigint", "int64", "BIGINT"))

    assert [det.clock_kind(Info, c) for c in "abcdx"] == ["datetime", "timestamp", "date", None, None]
    local, utc = datetime(2026, 1, 1, 14, 30), datetime(2026, 1, 1, 13, 30)  # a server at UTC+1
    assert det._clock_of("timestamp", local, utc) == local  # read in the session's zone, as NOW() is
    assert det._clock_of("datetime", local, utc) == utc  # no zone: the earlier of the two
    assert det._clock_of("date", local, utc) == datetime(2026, 1, 1)
    probe = det.CursorProbe(None, ((1, datetime(2026, 1, 1, 13, 30, 0, 500000)), (2, datetime(2030, 1, 1))),
                            clock=utc, kind="datetime")
    assert probe.watermark == utc and probe.ahead == ((2, datetime(2030, 1, 1)),)  # rounding is not "ahead"
    assert det.CursorProbe(None, ((1, 7), (2, 10**9))).watermark == 10**9  # a numeric cursor has no clock
