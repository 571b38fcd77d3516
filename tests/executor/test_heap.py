"""glibc's mmap threshold is fixed once per process by the executor, and Arrow allocates from glibc (peak RSS
follows --memory-limit)."""

import subprocess
import sys

import pytest

from sparsesync.executor import heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_bound_heap_sets_the_threshold_once_and_respects_the_users_own():
    code = ("from sparsesync.executor.heap import bound_heap; import sys; "
            "sys.exit(0 if (bound_heap(), bound_heap()) == (True, True) else 1)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    code_user = "from sparsesync.executor.heap import bound_heap; import sys; sys.exit(1 if bound_heap() else 0)"
    env = {"MALLOC_MMAP_THRESHOLD_": "1048576", "PATH": "/usr/bin:/bin"}
    assert subprocess.run([sys.executable, "-c", code_user], env=env).returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
@pytest.mark.parametrize("user_env, pool", [({}, "system"), ({"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}, "mimalloc"),
                                            ({"MALLOC_MMAP_THRESHOLD_": "1048576"}, "mimalloc")])
def test_arrow_allocates_from_glibc_once_the_threshold_is_fixed_unless_the_user_chose(user_env, pool):
    import os

    code = ("import pyarrow as pa; from sparsesync.executor.heap import bound_heap; bound_heap(); "
            "pa.array([b'x' * 100] * 10); print(pa.default_memory_pool().backend_name)")
    env = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "MALLOC_MMAP_THRESHOLD_")}
    p = subprocess.run([sys.executable, "-c", code], env={**env, **user_env}, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == pool


def test_execute_plan_bounds_the_heap(tmp_path, monkeypatch):
    """The executor calls it before reading (SQLite source: no server needed)."""
    import sqlite3

    from sparsesync.executor.run import execute_plan
    from sparsesync.planner.api import make_plan
    from sparsesync.source import create_engine

    db = tmp_path / "s.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 51)])
    con.commit()
    con.close()
    url = f"sqlite:///{db}"
    engine = create_engine(url)
    plan = make_plan(engine, "t", use_cache=False)
    engine.dispose()
    calls = []
    monkeypatch.setattr(heap, "bound_heap", lambda: calls.append(1) or True)
    rep = execute_plan(plan, str(tmp_path / "out"), source_url=url)
    assert calls and rep.rows == 50
