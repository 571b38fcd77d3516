"""Prometheus: the endpoint is scraped while a sync runs; the textfile is parsed with prometheus_client."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sparsesync.sync.many import sync_many
from sparsesync.sync.metrics import SyncMetrics

from .dbkit import database  # noqa: F401 - fixture
from .test_many import Opts, full_export


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.mark.mysql
def test_endpoint_is_scraped_during_the_sync_and_the_textfile_parses(database, tmp_path):
    database.fixture("dense", 1200, table="big")
    database.fixture("dense", 300, table="small")
    metrics = SyncMetrics()
    port = free_port()
    metrics.serve(port, "127.0.0.1")
    scraped = {}

    def sync_and_scrape(source_url, table, dest, options, *, engine, events):
        out = full_export(source_url, table, dest, options, engine=engine, events=events)
        if table == "small":  # the second (smaller) table: "big" is done, "small" is still running
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                scraped["text"] = resp.read().decode()
        return out

    try:
        summary = sync_many(database.url, None, str(tmp_path), Opts(), connections=1, sync_fn=sync_and_scrape,
                            events=metrics)
    finally:
        metrics.stop()
    with socket.socket() as s:  # the port is free again (REUSEADDR as any server sets it: the scrape left TIME_WAIT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    assert summary.failed == []
    live = samples(scraped["text"])
    assert live[("sparsesync_sync_rows_read", (("table", "big"),))] == 1200
    assert live[("sparsesync_sync_table_status", (("status", "running"), ("table", "small")))] == 1
    assert live[("sparsesync_sync_table_status", (("status", "ok"), ("table", "big")))] == 1

    path = tmp_path / "sparsesync.prom"
    metrics.write_textfile(str(path))
    final = samples(path.read_text())
    by = {t["table"]: t for t in summary.tables}
    for table in ("big", "small"):
        assert final[("sparsesync_sync_rows_read", (("table", table),))] == by[table]["rows_read"]
        assert final[("sparsesync_sync_bytes_written", (("table", table),))] == by[table]["bytes_written"] > 0
        assert final[("sparsesync_sync_duration_seconds", (("table", table),))] == pytest.approx(by[table]["seconds"])
        assert final[("sparsesync_sync_table_status", (("status", "ok"), ("table", table)))] == 1
    assert final[("sparsesync_sync_tables", (("status", "ok"),))] == 2
    assert final[("sparsesync_sync_seconds", ())] == pytest.approx(summary.seconds)


def test_a_failed_table_keeps_its_last_success_time():
    m = SyncMetrics()
    m({"event": "table_start", "table": "t"})
    m({"event": "table_done", "table": "t", "status": "failed", "error": "x", "last_success": "2026-01-01T00:00:00+00:00"})
    got = samples(__import__("prometheus_client").generate_latest(m.registry).decode())
    assert got[("sparsesync_sync_last_success_timestamp_seconds", (("table", "t"),))] == 1767225600
    assert got[("sparsesync_sync_table_status", (("status", "failed"), ("table", "t")))] == 1
    assert got[("sparsesync_sync_tables", (("status", "failed"),))] == 1
