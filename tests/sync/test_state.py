"""_state.json: round trip, hash, schema, version, coverage; the manifest follows the state."""

from __future__ import annotations

import json

import pytest

from sparsesync.executor.sink import LocalSink
from sparsesync.errors import DestinationError
from sparsesync.sync.state import (
    FORMAT_VERSION,
    ImageState, Part, PartFile, Run, check_coverage, load_state, narrowed, repair_manifest, save_state,
)

MIN = -(2**63)


def state(parts) -> ImageState:
    cols = ({"name": "id", "source_type": "bigint", "arrow_type": "int64", "redshift_type": "BIGINT", "nullable": False},)
    run = Run("20261129T000000Z-000001", 1, "first", "checksum", "a", "b", 10, 100, ((MIN, None),), True,
              "20261129T000000Z-000001/manifest.json")
    return ImageState(table="t", key="id", source={"dialect": "mysql", "table": "t", "key": "id"}, columns=cols,
                      schema_hash="0" * 64, sequence=1, parts=tuple(parts), runs=(run,))


def part(lo, hi, path, rows=5, **kw) -> Part:
    return Part(lo=lo, hi=hi, path=path, rows=rows, bytes=50 * rows, run_id="20261129T000000Z-000001", sequence=1, **kw)


P = "20261129T000000Z-000001/part-{:05d}.parquet"


def test_round_trip_and_manifest(tmp_path):
    sink = LocalSink(tmp_path)
    st = state([part(MIN, 10, P.format(0), more=(PartFile(P.format(0).replace(".parquet", "-001.parquet"), 2, 100),)),
                part(10, 2**64 - 1, None, rows=0), part(2**64 - 1, None, P.format(1), read_hi=2**64)])
    save_state(sink, "t", st)
    assert load_state(sink, "t") == st
    d = json.loads((tmp_path / "t" / "_state.json").read_text())
    assert d["parts"][1]["hi"] == str(2**64 - 1)  # keys as decimal strings
    m = json.loads((tmp_path / "t" / "current.manifest.json").read_text())
    assert [e["url"].rsplit("/", 1)[1] for e in m["entries"]] == ["part-00000.parquet", "part-00000-001.parquet",
                                                                   "part-00001.parquet"]
    assert [e["meta"]["content_length"] for e in m["entries"]] == [150, 100, 250]


def test_edited_or_foreign_state_is_refused_with_one_line(tmp_path):
    sink = LocalSink(tmp_path)
    save_state(sink, "t", state([part(MIN, None, P.format(0), read_hi=6)]))
    f = tmp_path / "t" / "_state.json"
    good = f.read_text()
    for bad, what in [(good.replace('"rows": 5', '"rows": 6'), "sha256"), ("{", "JSON"),
                      (good.replace(f'"format_version": "{FORMAT_VERSION}"', '"format_version": "2.0"'), "format_version")]:
        f.write_text(bad)
        with pytest.raises(DestinationError, match=what) as exc:
            load_state(sink, "t")
        assert "\n" not in exc.value.one_line()


def test_schema_violation_names_the_path(tmp_path):
    from sparsesync.planner.plan import content_hash

    body = state([part(MIN, None, P.format(0))]).body()
    body["parts"][0]["path"] = "../escape.parquet"
    body["sha256"] = content_hash(body)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "_state.json").write_text(json.dumps(body))
    with pytest.raises(DestinationError, match="parts/0/path"):
        load_state(LocalSink(tmp_path), "t")


def test_coverage_and_narrowing():
    with pytest.raises(ValueError, match="contiguous"):
        check_coverage([part(MIN, 5, None), part(6, None, None)])
    with pytest.raises(ValueError, match="open tail"):
        check_coverage([part(MIN, 5, None)])
    parts = narrowed((part(MIN, 5, P.format(0)), part(5, None, P.format(1), read_hi=9)))
    assert [(p.lo, p.hi) for p in parts] == [(MIN, 5), (5, 9)]
    assert narrowed((part(MIN, None, None, rows=0, read_hi=MIN),)) == []


def test_manifest_left_ahead_by_a_crash_is_repaired(tmp_path):
    sink = LocalSink(tmp_path)
    st = state([part(MIN, None, P.format(0), read_hi=6)])
    save_state(sink, "t", st)
    (tmp_path / "t" / "current.manifest.json").write_text('{"entries": []}')
    assert repair_manifest(sink, st) is True
    assert repair_manifest(sink, st) is False
    assert len(json.loads((tmp_path / "t" / "current.manifest.json").read_text())["entries"]) == 1
