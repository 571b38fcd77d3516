"""What a sync costs the source after appends (issue 9, acceptance 3, at test scale): statements against
the table counted on the server (general log) and rows read; and the cursor's recorded lookback window,
which lets appends skip the window's unchanged rows without missing late commits inside it."""

from __future__ import annotations

import pytest

from sparsesync.sync.table import SyncOptions, sync_table
from tests.sync.conftest import image_rows, source_rows, state_of
from tests.sync.test_table import SMALL, fill


def _log_on(mysql_engine) -> bool:
    with mysql_engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT @@GLOBAL.general_log").scalar()) == 1


@pytest.mark.mysql
@pytest.mark.parametrize("detect", ["none", "checksum", "cursor:updated_at"])
def test_appends_read_only_the_new_rows_in_at_most_five_statements(detect, mysql_url, mysql_engine, sync_table_name,
                                                                    tmp_path, query_log):
    """~9 spans; the last 600 rows are stamped within the default 10-minute lookback of the watermark.
    Before: checksum ran one statement per span (16 here), cursor re-read the 3 spans of the lookback."""
    t = sync_table_name()
    fill(mysql_engine, t, 1, 2000)  # updated_at one second apart
    opts = SyncOptions(detect=detect, **SMALL)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert len(state_of(tmp_path, t)["parts"]) >= 9
    for attempt in range(3):  # another process's QueryLog may switch the global log off meanwhile: again
        lo = 2001 + 100 * attempt
        fill(mysql_engine, t, lo, lo + 99, v="b")
        with mysql_engine.connect() as conn:
            conn.exec_driver_sql("SET GLOBAL general_log = 'ON'")
        query_log.mark()
        r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
        trusted, statements = _log_on(mysql_engine), query_log.count(t)  # before this test's own queries
        assert (r.kind, r.rows_read, r.spans_reexported) == ("append", 100, 0)
        assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)
        if trusted:
            break
    else:
        pytest.fail("the general log was switched off during every counted sync: statements not counted")
    assert statements <= 5


@pytest.mark.mysql
def test_cursor_window_sees_late_commits_moves_and_deletes_inside_the_lookback(mysql_url, mysql_engine, sync_table_name,
                                                                               tmp_path):
    """Rows inside the lookback window that the last run did not see as they are now — a row committed
    late with a time inside the window, a row whose time moved within the window, a deleted row — make
    their spans re-read; unchanged window rows do not (a sync with nothing new reads nothing)."""
    t = sync_table_name()
    fill(mysql_engine, t, 1, 2000)  # row k stamped 2020-01-01 + k s; watermark = row 2000's
    opts = SyncOptions(detect="cursor:updated_at", lookback_s=600, **SMALL)
    sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert state_of(tmp_path, t)["cursor"]["window"]["lo"] == "2020-01-01 00:23:20"  # watermark − 600 s
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert (r.rows_read, r.spans_reexported) == (0, 0)  # before: the 3 spans of the window, every run
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{t}` (id, v, updated_at) VALUES (0, 'late', '2020-01-01 00:33:15')")
        conn.exec_driver_sql(f"UPDATE `{t}` SET v = 'moved', updated_at = '2020-01-01 00:33:10' WHERE id = 1900")
        conn.exec_driver_sql(f"DELETE FROM `{t}` WHERE id = 1700")
    parts = state_of(tmp_path, t)["parts"]  # (the open tail part may hold rows: sync.tidy folds an empty tail span)
    holding = {p["lo"] for p in parts for k in (0, 1700, 1900) if int(p["lo"]) <= k and (p["hi"] is None or k < int(p["hi"]))}
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert r.spans_reexported == len(holding) >= 2 and r.rows_read < 1000
    assert image_rows(tmp_path, t) == source_rows(mysql_engine, t)
    r = sync_table(mysql_url, t, tmp_path, opts, raise_errors=True)
    assert (r.rows_read, r.spans_reexported) == (0, 0)


def test_window_digest_is_a_multiset_and_only_covers_the_window():
    from sparsesync.sync.detect import CursorProbe, _window_digests, cursor_changed, cursor_value, window_record

    spans = [(0, 10), (10, 20), "nulls"]
    probe = CursorProbe(bound=5, pairs=((1, 7), (1, 7), (12, 6), (None, 9)))
    cursor = {"column": "c", "watermark": "9", "window": window_record(spans, probe, 9, 0)}
    assert cursor["window"] == {"lo": "9", "parts": _window_digests(spans, ((None, 9),), 9, 9)}  # numeric: COL = watermark
    assert cursor_changed(spans, CursorProbe(9, ((None, 9),)), cursor) == []
    assert cursor_changed(spans, CursorProbe(9, ((None, 9), (3, 10))), cursor) == [0]  # above the watermark
    assert cursor_changed(spans, CursorProbe(9, ()), cursor) == [2]  # the NULL-key row left the window
    assert cursor_changed(spans, CursorProbe(4, ((None, 9), (15, 4))), cursor) == [1]  # below the window
    # Two equal pairs (a non-unique key) do not cancel out: one of them gone is a change.
    wide = {"column": "c", "watermark": "9", "window": {"lo": "6", "parts": _window_digests(spans, probe.pairs, 6, 9)}}
    assert cursor_changed(spans, CursorProbe(6, probe.pairs), wide) == []
    assert cursor_changed(spans, CursorProbe(6, ((1, 7), (12, 6), (None, 9))), wide) == [0]
    assert cursor_value("20200101") == 20200101 and cursor_value("2020-01-01 00:00:01").second == 1
