"""Whole-process measurement (benchmarks/procs.py): the figures are the child's own."""

import sys

import pytest

from benchmarks.procs import Run, Series, measure, measure_rotated, ratio_table


def test_peak_rss_is_the_childs_not_the_parents():
    # A child forked from a big parent used to report the parent's size; a small child must look small
    # and a child that touches 150 MB must look at least that big.
    small = measure([sys.executable, "-c", "pass"])
    big = measure([sys.executable, "-c", "b = bytearray(150 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"])
    assert small.rss_mb < 60
    assert big.rss_mb > 150
    assert big.cpu_s >= 0 and big.wall_s > 0


def test_a_failing_child_has_no_figure():
    with pytest.raises(SystemExit, match="exit 3"):
        measure([sys.executable, "-c", "import sys; sys.exit(3)"])


def test_rotated_runs_and_ratios():
    seen = []
    series = measure_rotated({"a": [sys.executable, "-c", "pass"], "b": [sys.executable, "-c", "pass"]}, 2,
                             progress=lambda *_: None, after=seen.append)
    assert seen == ["a", "b", "b", "a"]  # the order rotates each repeat
    assert [len(s.runs) for s in series.values()] == [2, 2]
    table = ratio_table({"x": Series("x", [Run(2.0, 1.0, 10)]), "y": Series("y", [Run(3.0, 1.0, 20)])}, ["x"])
    assert "| y | 3.00 s | 1.00 s | 20 MB | 1.50× |" in table
