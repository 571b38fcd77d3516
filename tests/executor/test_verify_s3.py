"""verify on S3 (moto on loopback): NULL-key ranges, range names on mismatch, and parts streamed to disk
one at a time — never a whole part in Python memory (issue 7 finding 12)."""

from __future__ import annotations

import os
import tracemalloc

import pytest
import sqlalchemy as sa

from sparsesync.executor.run import execute_plan
from sparsesync.executor.s3 import S3Sink
from sparsesync.executor.verify import verify_output
from sparsesync.planner.api import make_plan
from sparsesync.errors import VerifyError
from tests.executor.test_null_keys import NULLABLE_DDL, _fill

pytestmark = pytest.mark.s3


@pytest.mark.mysql
@pytest.mark.parametrize("reader", ["pymysql", "connectorx"])
def test_s3_nullable_key_export_and_verify(reader, s3_bucket, s3_client, mysql_engine, mysql_url, mysql_table):
    name = mysql_table(NULLABLE_DDL, prefix="nk")
    n, nulls = _fill(mysql_engine, name, n=400)
    plan = make_plan(mysql_engine, name, key="ext_id", rows_per_query=80, file_size=3_000)
    dest = f"s3://{s3_bucket}/exports"
    rep = execute_plan(plan, dest, source_url=mysql_url, reader=reader, workers=2)
    assert rep.rows == n and rep.count_check["mismatched"] == 0
    v = verify_output(plan, dest, source_url=mysql_url, all_columns=True)
    assert v.ok and v.output_rows == n and v.files >= len(plan.files)  # parts may rotate at --file-size
    with mysql_engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO `{name}` (ext_id, v) VALUES (NULL, 'late')")
    with pytest.raises(VerifyError) as err:
        verify_output(plan, dest, source_url=mysql_url)
    assert f"missing rows: #{plan.null_range.index} key IS NULL" in err.value.one_line()


def test_s3_verify_never_holds_a_whole_part_in_memory(s3_bucket, tmp_path):
    """A ~24 MB part (incompressible, uncompressed): verify's Python allocations stay far below it."""
    url = f"sqlite:///{tmp_path / 'src.db'}"
    engine = sa.create_engine(url)
    rows = 96
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)")
        conn.execute(sa.text("INSERT INTO big VALUES (:id, :b)"), [{"id": i, "b": os.urandom(256 * 1024)} for i in range(rows)])
    plan = make_plan(engine, "big", rows_per_query=1000, file_size=10**9)
    assert len(plan.files) == 1
    dest = f"s3://{s3_bucket}/x"
    execute_plan(plan, dest, engine=engine, compression="none", batch_rows=16)
    part_size = rows * 256 * 1024
    sink = S3Sink.from_url(dest)  # built before tracing: loading botocore's service model is a fixed ~15 MB
    for all_columns in (False, True):
        tracemalloc.start()
        try:
            rep = verify_output(plan, sink, engine=engine, all_columns=all_columns)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert rep.ok and rep.output_rows == rows
        assert peak < part_size / 8, f"verify (all_columns={all_columns}) peaked at {peak / 1e6:.1f} MB of Python memory"
    sink.close()
    engine.dispose()
