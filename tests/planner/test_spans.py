"""make_plan(spans=…): only the ranges inside some key spans, re-cut into the plan's ranges and files."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from sparsesync.planner.api import make_plan
from sparsesync.planner.plan import Plan, check_structure
from sparsesync.planner.spans import restrict_to_spans


@pytest.fixture
def plan(tmp_path) -> Plan:
    db = tmp_path / "s.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(1, 5001)])
    con.commit()
    con.close()
    return make_plan(f"sqlite:///{db}", "t", rows_per_query=500, file_size=1, use_cache=False)


def test_ranges_stay_inside_the_spans_and_files_never_cross_them(plan):
    spans = [(100, 1300), (2000, 2001), (4001, None)]
    p = restrict_to_spans(plan, spans)
    check_structure(p)
    assert p.ranges[0].lo == 100 and p.ranges[-1].hi is None
    for r in p.ranges:
        assert any(r.lo >= lo and (hi is None or (r.hi is not None and r.hi <= hi)) for lo, hi in spans)
    for g in p.files:  # a file's ranges are contiguous: it never spans the keys between two spans
        rs = p.ranges[g.first_range : g.last_range + 1]
        assert all(a.hi == b.lo for a, b in zip(rs, rs[1:]))
    covered = sum((r.hi - r.lo) for r in p.ranges if r.hi is not None and r.hi <= 2001)
    assert covered == (1300 - 100) + 1
    assert [r for r in p.ranges if r.lo >= 4001][0].lo == 4001
    assert len([r for r in p.ranges if r.lo >= 100 and r.hi and r.hi <= 1300]) >= 3  # a grown span is re-cut


def test_few_new_keys_and_the_open_tail_are_one_query(plan):
    p = restrict_to_spans(plan, [(4801, None)])
    assert [(r.lo, r.hi) for r in p.ranges] == [(4801, None)]


def test_make_plan_takes_spans_and_the_plan_round_trips(plan, tmp_path):
    p = make_plan(f"sqlite:///{tmp_path / 's.db'}", "t", rows_per_query=500, file_size=1, use_cache=False,
                  spans=[(10, 20), (3000, None)])
    assert p.strategy.key_spans == (("10", "20"), ("3000", None))
    assert Plan.from_json(p.to_json()) == p


def test_gaps_between_ranges_are_refused_without_spans(plan):
    p = restrict_to_spans(plan, [(10, 20), (3000, None)])
    with pytest.raises(ValueError, match="contiguous"):
        check_structure(replace(p, strategy=replace(p.strategy, key_spans=())))


@pytest.mark.parametrize("spans", [[(1, 10)], [(1, 10), (5, None)], [(3, 3), (5, None)]])
def test_bad_spans_are_refused(plan, spans):
    with pytest.raises(ValueError):
        restrict_to_spans(plan, spans)
