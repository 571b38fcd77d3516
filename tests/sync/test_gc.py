"""gc removes only parts no image references, only once they are older than --keep, never a pending run's."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

from sparsesync.errors import UsageError
from sparsesync.sync.duration import parse_duration
from sparsesync.sync.gc import collect_garbage

from .imagekit import Image

HOUR = 3600


def image_with_one_replaced_part(root):
    img = Image(root)
    img.sync({1: "a", 2: "b"}, [])
    first = next(p["path"] for p in img.parts if p["path"])
    img.sync({1: "a", 2: "B"}, [])  # the part of run 1 is replaced
    assert first not in {p["path"] for p in img.parts}
    return img, f"orders/{first}"


def image_rows(root, img):
    paths = [str(root / "orders" / p["path"]) for p in img.parts if p["path"]]
    return sorted(duckdb.connect().execute("SELECT id, v FROM read_parquet(?)", [paths]).fetchall())


def test_dry_run_by_default_lists_old_unreferenced_parts_and_deletes_nothing(tmp_path):
    img, old = image_with_one_replaced_part(tmp_path)
    later = (img.clock + timedelta(hours=2)).timestamp()
    [res] = collect_garbage(str(tmp_path), keep_s=HOUR, now=later)
    assert res.dry_run and res.removed == [old] and res.removed_bytes > 0
    assert (tmp_path / old).exists()


def test_delete_removes_them_and_the_image_stays_whole(tmp_path):
    img, old = image_with_one_replaced_part(tmp_path)
    later = (img.clock + timedelta(hours=2)).timestamp()
    [res] = collect_garbage(str(tmp_path), "orders", keep_s=HOUR, delete=True, now=later)
    assert res.removed == [old] and not (tmp_path / old).exists()
    assert res.referenced == sum(1 for p in img.parts if p["path"])
    assert image_rows(tmp_path, img) == [(1, "a"), (2, "B")]
    assert collect_garbage(str(tmp_path), keep_s=HOUR, delete=True, now=later)[0].removed == []


def test_a_part_replaced_recently_is_kept_until_keep_has_passed_since_gc_first_saw_it(tmp_path):
    img, old = image_with_one_replaced_part(tmp_path)
    t1 = (img.clock + timedelta(minutes=5)).timestamp()
    [res] = collect_garbage(str(tmp_path), keep_s=HOUR, delete=True, now=t1)
    assert res.removed == [] and res.too_young == 1 and (tmp_path / old).exists()
    for i in range(12):  # frequent syncs keep moving the latest run forward
        img.sync({1: "a", 2: "B", 10 + i: "n"}, [])
    t2 = t1 + 2 * HOUR
    assert img.clock.timestamp() > t1 + HOUR  # the latest run alone would still call it young
    [res] = collect_garbage(str(tmp_path), keep_s=HOUR, delete=True, now=t2)
    assert old in res.removed and not (tmp_path / old).exists()


def test_the_further_files_of_a_spilled_part_are_referenced_too(tmp_path):
    img, old = image_with_one_replaced_part(tmp_path)
    part = next(p for p in img.parts if p["path"])
    spill = tmp_path / "orders" / part["path"].replace(".parquet", "-001.parquet")
    spill.write_bytes((tmp_path / "orders" / part["path"]).read_bytes())
    part["more"] = [{"path": part["path"].replace(".parquet", "-001.parquet"), "rows": 0, "bytes": 1}]
    img._write(img.runs[-1], [])
    [res] = collect_garbage(str(tmp_path), keep_s=0, delete=True, now=(img.clock + timedelta(days=1)).timestamp())
    assert res.removed == [old] and spill.exists()


def test_parts_of_a_run_not_yet_applied_are_never_touched(tmp_path):
    img, _ = image_with_one_replaced_part(tmp_path)
    pending = tmp_path / "orders" / "20260101T050000Z-000099" / "part-00000.parquet"
    pending.parent.mkdir(parents=True)
    pending.write_bytes(b"PAR1")
    [res] = collect_garbage(str(tmp_path), keep_s=0, delete=True, now=(img.clock + timedelta(days=30)).timestamp())
    assert res.in_progress == 1 and pending.exists()


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600 and parse_duration("7d") == 7 * 86400
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration("soon")


def test_gc_is_refused_while_the_table_is_locked_by_a_sync(tmp_path):
    from sparsesync.executor.dest import open_sink
    from sparsesync.executor.lock import LockedError, destination_lock

    img, old = image_with_one_replaced_part(tmp_path)
    with destination_lock(open_sink(str(tmp_path)), "orders/_sync.lock", purpose="sync orders"):
        with pytest.raises(LockedError, match="sync orders"):
            collect_garbage(str(tmp_path), keep_s=0, delete=True, now=(img.clock + timedelta(days=1)).timestamp())
    assert (tmp_path / old).exists()
