"""bench_peers end to end on a tiny table: every contender runs, writes all rows, and is reported."""

import pytest
import sqlalchemy as sa

from benchmarks import bench_peers

pytestmark = pytest.mark.mysql


def test_small_run_reports_every_contender(mysql_url, tmp_path, capsys):
    assert bench_peers.main(["--url", mysql_url, "--rows", "1500", "--repeat", "1", "--fixtures", "outliers",
                             "--out", str(tmp_path)]) == 0
    md = (tmp_path / "peers-1500.md").read_text()
    # The outliers fixture ran as its own section, with its own chart; the goal ratios are reported.
    assert "## outliers fixture (9 columns), 1,500 rows" in md
    assert (tmp_path / "peers-outliers-1500.png").stat().st_size > 10_000
    assert "goal 1: execute (1 worker) / bare ConnectorX 1 partition" in md and "goal 4: peak RSS" in md
    names = [bench_peers.WIRE, bench_peers.CX1, bench_peers.CX2, "sparsesync execute |",
             "sparsesync execute --workers 2", "sparsesync execute --reader pymysql", bench_peers.SS_NOVERIFY,
             bench_peers.SS_VIA_SA]
    if bench_peers.dlt_version():
        names += ["dlt sql_table, connectorx backend", "dlt sql_table, pyarrow backend"]
    else:
        assert "dlt is not installed" in capsys.readouterr().out
    for name in names:
        assert name in md
    assert "every Parquet output checked for all rows" in md
    assert (tmp_path / "peers-1500.png").stat().st_size > 10_000
    # The table was dropped again.
    engine = sa.create_engine(mysql_url)
    with engine.connect() as conn:
        left = conn.exec_driver_sql("SHOW TABLES LIKE 'bench\\_peers\\_%%1500\\_%%'").fetchall()
    engine.dispose()
    assert left == []


def test_a_short_output_fails_the_run(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2]}), tmp_path / "cx1.parquet")
    with pytest.raises(SystemExit, match="wrote 2 rows, the table has 3"):
        bench_peers.check_and_clean(str(tmp_path), bench_peers.CX1, 3)
    bench_peers.check_and_clean(str(tmp_path), bench_peers.CX1, 2)
    assert list(tmp_path.iterdir()) == []


def test_only_measures_the_named_contenders(mysql_url, tmp_path):
    assert bench_peers.main(["--url", mysql_url, "--rows", "1200", "--repeat", "1", "--fixtures", "none",
                             "--only", f"{bench_peers.CX1};{bench_peers.SS1}", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "peers-1200.md").read_text()
    assert f"| {bench_peers.CX1} |" in md and f"| {bench_peers.SS1} |" in md
    assert bench_peers.CX2 not in md.split("### Issue 11 goals")[0] and bench_peers.SS_PYMYSQL not in md
    with pytest.raises(SystemExit, match="--only names no contender"):
        bench_peers.main(["--url", mysql_url, "--rows", "1200", "--repeat", "1", "--fixtures", "none",
                          "--only", "no such contender"])


def test_base_runs_the_same_execute_from_another_checkout(mysql_url, tmp_path):
    from pathlib import Path

    repo = Path(bench_peers.__file__).resolve().parents[1]
    assert bench_peers.main(["--url", mysql_url, "--rows", "1100", "--repeat", "1", "--fixtures", "none",
                             "--base", str(repo), "--only", f"{bench_peers.SS1};{bench_peers.SS_BASE}",
                             "--out", str(tmp_path)]) == 0
    md = (tmp_path / "peers-1100.md").read_text()
    assert f"| {bench_peers.SS_BASE} |" in md and "failed" not in md.split("### Issue 11 goals")[0]
