"""The NULL-key range in the plan contract: placement, grouping into files, structure checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sparsesync.planner.partition import group_files, with_null_range
from sparsesync.planner.plan import KeyRange, check_structure, load_plan


def _ranges():
    return (KeyRange(0, -(2**63), 100, 50, "dense"), KeyRange(1, 100, 200, 50, "dense"), KeyRange(2, 200, None, 0, "tail"))


def test_small_null_range_joins_the_last_file_and_a_big_one_gets_its_own():
    small = with_null_range(_ranges(), 3)
    assert small[-1] == KeyRange(3, None, None, 3, "nulls", True, nulls=True)
    files = group_files(small, bytes_per_row=10, file_size=2_000)
    assert len(files) == 1 and files[-1].last_range == 3
    big = with_null_range(_ranges(), 500)
    files = group_files(big, bytes_per_row=10, file_size=1_000)
    assert (files[-1].first_range, files[-1].last_range) == (3, 3) and files[-2].last_range == 2


def test_check_structure_accepts_only_a_last_null_range():
    plan = load_plan(Path(__file__).resolve().parents[2] / "plans" / "example-prealert.json")  # a 1.0 plan
    rs = with_null_range(plan.ranges, 7)
    files = plan.files[:-1] + (dataclasses.replace(plan.files[-1], last_range=rs[-1].index),)
    ok = dataclasses.replace(plan, ranges=rs, files=files)
    check_structure(ok)
    assert ok.tail is rs[-2] and ok.null_range is rs[-1] and ok.key_ranges == rs[:-1]
    assert rs[-1].contains(None) and not rs[-1].contains(5) and not rs[0].contains(None)
    moved = (rs[-1].__class__(0, None, None, 7, "nulls", True, nulls=True),) + tuple(
        dataclasses.replace(r, index=r.index + 1) for r in rs[:-1])
    with pytest.raises(ValueError, match="NULL-key range must be the last"):
        check_structure(dataclasses.replace(ok, ranges=moved))
