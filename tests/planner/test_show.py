"""``planner.show``: summary, density strip arithmetic over 64-bit spans, findings and plan diffs."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsesync.planner.api import make_plan
from sparsesync.planner.plan import KeyRange, Region
from sparsesync.planner.show import (
    SHADES,
    TAIL_NOTE,
    boundary_marks,
    cell_edges,
    choose_scale,
    comparable,
    density_strip,
    diff_dict,
    diff_plans,
    summarize,
    summary_dict,
    median_key,
    without_gaps,
    _rows_in_cells,
)


def make_db(path, keys, table="prealert", extra_col=False):
    con = sqlite3.connect(path)
    cols = "id INTEGER PRIMARY KEY, ref VARCHAR(20)" + (", added SMALLINT" if extra_col else "")
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
    con.executemany(f"INSERT INTO {table} (id, ref) VALUES (?, ?)", [(k, f"r{k}") for k in keys])
    con.commit()
    con.close()
    return f"sqlite:///{path}"


HEAD = list(range(1, 4001))
TAIL = list(range(10_000, 3_000_000, 9973))
OUTLIERS = [2**40, 2**40 + 3]


@pytest.fixture
def prealert_plan(tmp_path):
    url = make_db(tmp_path / "a.db", HEAD + TAIL + OUTLIERS)
    return make_plan(url, "prealert", rows_per_query=500, file_size=128 * 1024, use_cache=False)


# ---- key-space arithmetic --------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["linear", "log"])
@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("lo, hi", [(0, 2**64), (-(2**63), 2**63), (5, 9), (1, 10**12)])
def test_cells_tile_the_span_exactly(scale, where, lo, hi):
    center = lo + int((hi - lo - 1) * where)
    cells = cell_edges(lo, hi, 70, scale, center)
    assert cells[0][0] == lo and cells[-1][1] == hi
    assert all(a < b for a, b in cells)
    assert all(c[1] == d[0] for c, d in zip(cells, cells[1:]))
    assert all(isinstance(a, int) and isinstance(b, int) for a, b in cells)
    assert len(cells) <= 70


@pytest.mark.parametrize("center", [0, 2**63, 2**64 - 1])
def test_log_cells_are_fine_near_the_center(center):
    cells = cell_edges(0, 2**64, 64, "log", center)
    near = [b - a for a, b in cells if a <= center < b or b == center or a == center + 1]
    assert min(near) < 10
    assert max(b - a for a, b in cells) > 2**60


def test_bulk_in_the_middle_of_a_64_bit_span_gets_many_cells():
    bins = [Region(0, 1, 1), Region(2**63 - 2000, 2**63 + 2000, 4000), Region(2**64 - 1, 2**64, 1)]
    s = density_strip(bins, width=72)
    assert s.scale == "log" and s.center == 2**63
    bulk_cells = [i for i, (a, b) in enumerate(s.cells) if a < 2**63 + 2000 and b > 2**63 - 2000]
    assert len(bulk_cells) >= 8
    assert s.text[0] != " " and s.text[-1] != " "  # both single outliers visible


regions = st.lists(
    st.tuples(st.integers(-(2**63), 2**64 - 2), st.integers(1, 2**60), st.integers(0, 10**9)), min_size=1, max_size=20
)


@settings(max_examples=60, deadline=None)
@given(raw=regions, width=st.integers(4, 120), scale=st.sampled_from(["linear", "log"]))
def test_rows_are_conserved_over_cells(raw, width, scale):
    # Non-overlapping bins: sort by start and shift each past the previous one.
    bins, cursor = [], None
    for lo, w, rows in sorted(raw):
        lo = lo if cursor is None else max(lo, cursor)
        bins.append(Region(lo, lo + w, rows))
        cursor = lo + w
    lo, hi = bins[0].lo, bins[-1].hi
    cells = cell_edges(lo, hi, width, scale, median_key(bins, lo, hi))
    got = sum(_rows_in_cells(bins, cells))
    assert got == pytest.approx(sum(b.rows for b in bins), rel=1e-9, abs=1e-6)


def test_without_gaps_keeps_rows_and_avoids_gaps():
    bins = [Region(0, 100, 50), Region(100, 10**15, 7), Region(10**15, 10**15 + 10, 10)]
    gaps = [Region(120, 10**15 - 5, 0)]
    out = without_gaps(bins, gaps)
    assert sum(r.rows for r in out) == 67
    for r in out:
        assert r.hi <= gaps[0].lo or r.lo >= gaps[0].hi
    # the rows of the big bin now sit next to real keys, not over the gap
    assert [r for r in out if r.lo == 100][0].hi == 120


def test_scale_choice():
    uniform = [Region(i * 100, i * 100 + 100, 100) for i in range(50)]
    assert choose_scale(uniform, 0, 5000) == "linear"
    bulk_and_outlier = uniform + [Region(2**62, 2**62 + 1, 1)]
    assert choose_scale(bulk_and_outlier, 0, 2**62 + 1) == "log"


def test_log_strip_spreads_the_bulk_linear_would_squeeze_it():
    bins = [Region(i * 100, i * 100 + 100, 100) for i in range(50)] + [Region(2**62, 2**62 + 1, 1)]
    log = density_strip(bins, width=60)
    lin = density_strip(bins, width=60, scale="linear")
    assert log.scale == "log" and "log" in log.note
    assert lin.scale == "linear" and "linear" in lin.note
    filled = lambda s: sum(1 for ch in s.text if ch != " ")  # noqa: E731
    assert filled(lin) == 2  # bulk in the first cell, the outlier in the last
    assert filled(log) >= 10
    assert log.text[-1] != " "  # the single outlier row is visible
    assert len(log.text) == len(log.marks) or log.marks == ""


def test_strip_shades_dense_darker_than_sparse_and_blank_when_empty():
    bins = [Region(0, 1000, 1000), Region(5000, 10000, 50)]
    s = density_strip(bins, width=10, scale="linear")
    assert s.text[0] == SHADES[-1]
    assert s.text[1] == " "  # [1000, 2000) holds no rows
    assert SHADES.index(s.text[-1]) < SHADES.index(s.text[0])
    assert set(s.text) <= set(SHADES)
    assert density_strip([], width=10) is None


def test_boundary_marks_sit_under_their_cells():
    cells = cell_edges(0, 1000, 10, "linear")
    ranges = [KeyRange(0, -(2**63), 250, 1, "dense"), KeyRange(1, 250, 260, 1, "dense"),
              KeyRange(2, 260, 900, 1, "dense"), KeyRange(3, 900, None, 0, "tail")]
    marks, note = boundary_marks(ranges, cells)
    assert marks[2] == "2"  # 250 and 260 both in [200, 300)
    assert marks[9] == "┴"  # 900
    assert marks.count(" ") == 8 and "boundary" in note
    many = [KeyRange(i, i * 10, i * 10 + 10, 1, "dense") for i in range(100)]
    marks, note = boundary_marks(many, cells)
    assert marks == "" and "too many" in note


# ---- summary of a real plan ------------------------------------------------------------------------
def test_summary_of_a_real_plan(prealert_plan):
    plan = prealert_plan
    s = summarize(plan, width=64)
    assert re.fullmatch(
        r"prealert: \d+ ranges → \d+ files, ~[\d,]+ rows, ~[\d.,]+ MB, \d+ queries \(density exact, plan \S+\)", s.line
    )
    assert f"{len(plan.ranges)} ranges" in s.line and plan.plan_id in s.line
    assert s.rows == len(HEAD + TAIL + OUTLIERS)
    assert s.strip is not None and s.strip.scale == "log" and 50 <= len(s.strip.text) <= 64
    assert s.strip.lo == min(HEAD) and s.strip.hi == max(OUTLIERS) + 1
    assert [r.index for r in s.range_rows] == list(range(len(plan.ranges)))
    assert s.range_rows[-1].hi is None and s.range_rows[-1].density is None
    head = s.range_rows[0]
    assert head.density == pytest.approx(1.0)  # measured from min_key, not from the type minimum
    assert sum(f.est_rows for f in s.file_rows) == s.rows
    kinds = [f.kind for f in s.findings]
    assert "tail" in kinds and "estimate" in kinds and "sparse_region" in kinds
    assert any(TAIL_NOTE in f.message for f in s.findings)
    assert any("exact" in f.message for f in s.findings if f.kind == "estimate")


def test_summary_dict_is_stable_and_json_ready(prealert_plan):
    d = summary_dict(summarize(prealert_plan))
    text = json.dumps(d)
    assert json.loads(text) == d
    assert set(d) == {
        "table", "plan_id", "source", "ranges", "files", "rows", "bytes", "queries", "density", "exact",
        "min_key", "max_key", "summary", "strip", "range_list", "ranges_omitted", "file_list", "warnings",
    }
    assert d["max_key"] == str(2**40 + 3)
    assert all(isinstance(r["lo"], str) for r in d["range_list"])
    assert d["range_list"][-1]["hi"] is None
    short = summary_dict(summarize(prealert_plan), all_ranges=False)
    assert short["ranges_omitted"] == max(0, len(prealert_plan.ranges) - 20)


def test_sampled_estimates_are_flagged(prealert_plan):
    # A sampled histogram (estimates, not counts) must say so; built by replacing the flag because the
    # sampler counts tiny tables exactly.
    sampled = dataclasses.replace(
        prealert_plan, histogram=dataclasses.replace(prealert_plan.histogram, exact=False, method="sampled")
    )
    s = summarize(sampled)
    est = [f for f in s.findings if f.kind == "estimate"]
    assert len(est) == 1 and "sampled estimates" in est[0].message
    assert "(density sampled" in s.line
    assert "exact" in [f for f in summarize(prealert_plan).findings if f.kind == "estimate"][0].message


def test_empty_table_has_no_strip(tmp_path):
    url = make_db(tmp_path / "e.db", [])
    s = summarize(make_plan(url, "prealert", use_cache=False))
    assert s.strip is None and s.ranges == 1 and s.range_rows[0].hi is None


# ---- diff ------------------------------------------------------------------------------------------
def test_diff_of_a_grown_table(tmp_path):
    db = tmp_path / "g.db"
    url = make_db(db, HEAD + TAIL)
    old = make_plan(url, "prealert", rows_per_query=500, use_cache=False)
    new_keys = list(range(5_000_000, 5_003_000))
    make_db(db, new_keys)
    new = make_plan(url, "prealert", rows_per_query=500, use_cache=False)
    assert comparable(old, new) is None
    d = diff_plans(old, new)
    counts = {c.name: c for c in d.counts}
    assert counts["rows"].delta == len(new_keys)
    assert counts["ranges"].delta == len(new.ranges) - len(old.ranges) > 0
    assert not d.schema_changed
    assert any("max key moved" in line and str(max(new_keys)) in line for line in d.fingerprint)
    assert d.boundaries_added and all(k >= min(new_keys) or k > max(TAIL) for k in d.boundaries_added)
    assert d.ranges_unchanged >= 1
    # the new keys show up as density drift in a region covering them
    appeared = [x for x in d.drift if x.change in ("appeared", "grew")]
    assert appeared and any(x.lo <= 5_001_000 < x.hi for x in appeared)
    dd = diff_dict(d)
    assert json.loads(json.dumps(dd)) == dd
    assert dd["counts"]["rows"] == {"old": old.estimates.rows, "new": new.estimates.rows, "delta": len(new_keys)}


def test_diff_of_identical_plans_is_quiet(prealert_plan):
    d = diff_plans(prealert_plan, prealert_plan)
    assert all(c.delta == 0 for c in d.counts)
    assert d.fingerprint == () and d.drift == ()
    assert d.boundaries_added == () == d.boundaries_removed
    assert d.ranges_unchanged == len(prealert_plan.ranges)


def test_diff_sees_schema_change(tmp_path):
    a = make_plan(make_db(tmp_path / "x.db", HEAD), "prealert", use_cache=False)
    b = make_plan(make_db(tmp_path / "x2.db", HEAD, extra_col=True), "prealert", use_cache=False)
    # same table name on different files is a different source
    assert "different sources" in comparable(a, b)
    d = diff_plans(a, b)
    assert d.schema_changed and any("schema hash changed" in x for x in d.fingerprint)


def test_plans_of_different_tables_are_not_comparable(tmp_path):
    url = make_db(tmp_path / "t.db", HEAD)
    make_db(tmp_path / "t.db", HEAD, table="other")
    a, b = make_plan(url, "prealert", use_cache=False), make_plan(url, "other", use_cache=False)
    assert "different tables" in comparable(a, b)


def test_long_lists_of_regions_are_summarised(prealert_plan):
    many = tuple(Region(10**6 + 100 * i, 10**6 + 100 * i + 50, 1) for i in range(25))
    plan = dataclasses.replace(
        prealert_plan, histogram=dataclasses.replace(prealert_plan.histogram, sparse_regions=many, gaps=many, gaps_total=25)
    )
    fs = summarize(plan).findings
    sparse = [f for f in fs if f.kind == "sparse_region"]
    gaps = [f for f in fs if f.kind == "gap"]
    assert len(sparse) == 11 and sparse[-1].message.startswith("… 15 more sparse regions holding 15 rows")
    assert len(gaps) == 11 and gaps[-1].message == "… 15 more gaps"
