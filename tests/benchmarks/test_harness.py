"""Harness pieces: region scoring, key comparison, and one small end-to-end bench run."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sparsesync.bench import fixtures as fxm
from sparsesync.bench.harness import (
    BenchConfig,
    RegionScore,
    compare_keys,
    markdown_table,
    run_bench,
    score_regions,
    write_outputs,
)


def test_score_regions_exact_match_and_misses():
    assert score_regions([(10, 20)], [(10, 20)], 0, 100) == RegionScore(1.0, 0.0, 1.0)
    s = score_regions([(10, 20)], [(15, 30)], 0, 100)
    # 5 truly sparse keys missed, 10 dense keys called sparse: 85 of 100 right.
    assert s.accuracy == pytest.approx(0.85)
    assert s.false_positive_rate == pytest.approx(10 / 90)
    assert s.recall == pytest.approx(0.5)
    # Overlapping predictions are merged, predictions outside the span ignored.
    assert score_regions([(0, 50)], [(0, 30), (20, 50), (200, 300)], 0, 100) == RegionScore(1.0, 0.0, 1.0)
    # No truth: recall is vacuous, any prediction is a false positive.
    s = score_regions([], [(0, 10)], 0, 100)
    assert s.recall == 1.0 and s.false_positive_rate == pytest.approx(0.1)
    # Spans beyond int64 are exact (Python ints).
    big = 2**63
    s = score_regions([(100, big)], [(100, big - 1000)], 0, big)
    assert s.false_positive_rate == 0.0 and 0.999 < s.recall < 1.0


def test_compare_keys_counts_missing_and_duplicates():
    exp = np.array([1, 2, 3, 4], dtype=np.int64)
    assert compare_keys(exp, np.array([1, 2, 2, 4], dtype=object)) == (4, 1, 1)
    assert compare_keys(exp, np.array([4, 3, 2, 1], dtype=object)) == (4, 0, 0)


def test_bench_end_to_end(mysql_url, tmp_path):
    """Small run on MariaDB: server-counted queries, outputs read back, truth scored, cap enforced."""
    cfg = BenchConfig(source=mysql_url, fixtures=("prealert", "outliers"),
                      strategies=("fixed", "quickfix", "planner_exact"), sizes=(3000,), time_cap_s=2.0,
                      seed=int.from_bytes(os.urandom(3), "big"))  # own table names under concurrent runs
    res = run_bench(cfg)
    by = {(m.fixture, m.strategy): m for m in res.measurements}
    assert len(by) == 6
    fixed, quick, plan = by[("prealert", "fixed")], by[("prealert", "quickfix")], by[("prealert", "planner_exact")]
    assert fixed.finished and fixed.missing == 0 and fixed.duplicated == 0 and fixed.exported == 3000
    assert plan.finished and plan.missing == 0 and plan.exported == 3000
    assert plan.queries < fixed.queries and plan.files < fixed.files
    # Counted by the server: one SELECT per 50k-key chunk plus the MIN/MAX that bounds the loop.
    fx = fxm.generate("prealert", 3000, cfg.seed)
    assert fixed.queries == -(-(fx.max_key - fx.min_key + 1) // 50_000) + 1
    assert quick.missing > 0  # the quick fix leaves the sparse tail behind
    assert plan.detection is not None and plan.detection.accuracy > 0.9
    # Fixed stride cannot cross 4·10^18 keys: stopped by the cap, reported, never dropped.
    out = by[("outliers", "fixed")]
    assert not out.finished and out.missing >= 2 and 0 <= out.progress < 0.001
    assert by[("outliers", "planner_exact")].missing == 0
    md, png = write_outputs(res, tmp_path / "out", command="test")
    text = md.read_text()
    assert "NOT finished" in text and "planner_exact" in text
    assert png is not None and png.stat().st_size > 1000
    assert "| prealert |" in markdown_table(res.measurements)
