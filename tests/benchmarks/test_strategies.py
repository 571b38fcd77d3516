"""Each strategy exports the rows it claims, through the shared reader and writer (MariaDB + SQLite)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from sparsesync.bench import fixtures as fxm
from sparsesync.bench import strategies as st
from sparsesync.bench.harness import compare_keys, read_back_keys
from sparsesync.executor.sink import LocalSink
from tests.conftest import unique_name

ALL_ROWS = ("fixed", "adaptive", "accumulate", "keyset", "planner_exact", "planner_sampled")


@pytest.fixture(params=["sqlite", "mysql"])
def source(request, tmp_path):
    """(engine, table) of a prealert fixture with 3000 rows, in SQLite or MariaDB."""
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    else:
        engine = request.getfixturevalue("mysql_engine")
    table = unique_name("fxs")
    fx = fxm.create_fixture(engine, "prealert", 3000, seed=11, table=table)
    yield engine, fx
    fxm.drop_fixture(engine, table)
    if request.param == "sqlite":
        engine.dispose()


def _ctx(engine, fx, tmp_path, name, cap=60.0, chunk=2000):
    return st.RunContext(engine=engine, table=fx.table, sink=LocalSink(tmp_path / "out"), prefix=f"{fx.table}/{name}",
                         deadline=time.monotonic() + cap, chunk=chunk, rows_per_query=1000)


def _output_keys(ctx, run):
    return read_back_keys(ctx.sink, [rel for rel, _ in run.files])


@pytest.mark.parametrize("name", ALL_ROWS)
def test_strategy_exports_every_row_once(source, tmp_path, name):
    engine, fx = source
    ctx = _ctx(engine, fx, tmp_path, name)
    run = st.run_strategy(name, ctx)
    assert run.finished
    exported, missing, dup = compare_keys(fx.keys, _output_keys(ctx, run))
    assert (exported, missing, dup) == (fx.rows, 0, 0)
    assert run.files and all(size > 0 for _, size in run.files)
    if name == "fixed":
        # One query per 2000-key chunk over the whole span, one file per non-empty chunk.
        span = fx.max_key - fx.min_key + 1
        assert run.read_queries == -(-span // 2000)
        assert len(run.files) <= run.read_queries
    if name.startswith("planner"):
        assert run.plan is not None and len(run.files) < 10


def test_quickfix_reports_exactly_the_rows_it_left(source, tmp_path):
    engine, fx = source
    ctx = _ctx(engine, fx, tmp_path, "quickfix")
    run = st.run_strategy("quickfix", ctx)
    assert run.stopped_at is not None and "sparse" in run.note
    got = _output_keys(ctx, run)
    exported, missing, dup = compare_keys(fx.keys, got)
    left = [k for k in fx.keys.tolist() if k >= run.stopped_at]
    assert missing == len(left) > 0 and dup == 0
    assert set(int(k) for k in got.tolist()) == set(fx.keys.tolist()) - set(left)


def test_adaptive_grows_chunks_in_the_sparse_tail(source, tmp_path):
    engine, fx = source
    fixed = st.run_strategy("fixed", _ctx(engine, fx, tmp_path, "fixed"))
    adaptive = st.run_strategy("adaptive", _ctx(engine, fx, tmp_path, "adaptive"))
    assert adaptive.read_queries < fixed.read_queries


def test_time_cap_reports_not_finished(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'o.db'}")
    try:
        fx = fxm.create_fixture(engine, "outliers", 2000, seed=1, table="fx_out")
        ctx = _ctx(engine, fx, tmp_path, "fixed", cap=0.5, chunk=1000)
        run = st.run_strategy("fixed", ctx)
        assert not run.finished and "time cap" in run.note
        assert run.progress is not None and run.progress < 1e-6
        exported, missing, dup = compare_keys(fx.keys, _output_keys(ctx, run))
        # What it did export is right; the two outliers near 2^63 were never reached.
        assert dup == 0 and missing >= 2 and exported == fx.rows - missing
        # Keyset pagination crosses the 4·10^18 gap in a few queries.
        ks = st.run_strategy("keyset", _ctx(engine, fx, tmp_path, "keyset", chunk=1000))
        assert ks.finished and ks.read_queries == 2
        assert compare_keys(fx.keys, _output_keys(_ctx(engine, fx, tmp_path, "keyset"), ks))[1:] == (0, 0)
        # So does the planner, on SQLite too (a range ending at 2^63 must not reach the driver).
        pl_ctx = _ctx(engine, fx, tmp_path, "planner_exact")
        pl = st.run_strategy("planner_exact", pl_ctx)
        assert pl.finished and compare_keys(fx.keys, _output_keys(pl_ctx, pl)) == (fx.rows, 0, 0)
    finally:
        engine.dispose()


def test_planner_crosses_the_outlier_gap(mysql_engine, tmp_path):
    table = unique_name("fxo")
    try:
        fx = fxm.create_fixture(mysql_engine, "outliers", 2000, seed=1, table=table)
        ctx = _ctx(mysql_engine, fx, tmp_path, "planner_exact")
        run = st.run_strategy("planner_exact", ctx)
        assert run.finished and len(run.files) == 1
        assert compare_keys(fx.keys, _output_keys(ctx, run)) == (fx.rows, 0, 0)
    finally:
        fxm.drop_fixture(mysql_engine, table)


def test_roadmap_settings_from_config_reach_the_baselines(tmp_path):
    """detection / adaptive_scaling thresholds change what the baselines do (SQLite only: quick)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    fx = fxm.create_fixture(engine, "prealert", 3000, seed=11, table="fxr")
    # Threshold 0: no chunk is ever "sparse enough" to stop, so the quick fix syncs everything.
    never = st.RoadmapSettings(efficiency_threshold=0.0)
    ctx = _ctx(engine, fx, tmp_path, "qf0")
    ctx.roadmap = never
    run = st.run_strategy("quickfix", ctx)
    assert run.stopped_at is None and compare_keys(fx.keys, _output_keys(ctx, run))[1] == 0
    # No scaling allowed: adaptive issues as many queries as fixed stride.
    fixed = st.run_strategy("fixed", _ctx(engine, fx, tmp_path, "fx"))
    ctx = _ctx(engine, fx, tmp_path, "ad1")
    ctx.roadmap = st.RoadmapSettings(max_scale_factor=1)
    assert st.run_strategy("adaptive", ctx).read_queries == fixed.read_queries
    engine.dispose()


def test_sizer_caps_follow_the_config():
    sizer = st.AdaptiveChunkSizer(50_000, max_scale_factor=4, max_chunk_size=120_000)
    assert sizer.get_next_chunk_size(0.01) == 120_000
    assert sizer.get_next_chunk_size(0.10) == 120_000  # ×3 = 150k, capped
    assert st.AdaptiveChunkSizer(50_000).get_next_chunk_size(0.01) == 500_000  # the roadmap's values
    assert st.AdaptiveChunkSizer(50_000).get_next_chunk_size(0.10) == 150_000
