"""Prometheus metrics of a sync, fed by its events: served over HTTP while it runs, or written at the end
in the node-exporter textfile format (for cron and Airflow).

Per table (label ``table``): rows read, bytes written, spans re-exported, retries, duration, status and
the last successful sync time; overall: tables by status and the sync's duration. Gauges, because each
value describes the latest run (a textfile is rewritten per run, not accumulated).
"""

from __future__ import annotations

import threading
from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge, start_http_server, write_to_textfile

PREFIX = "sparsesync_sync"
STATUSES = ("running", "ok", "empty", "skipped", "failed", "interrupted", "not_started")


class SyncMetrics:
    """A registry of its own (never the process-global one) updated from sync events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, t = self.registry, ["table"]
        self.rows = Gauge(f"{PREFIX}_rows_read", "Rows read from the source by the latest run", t, registry=r)
        self.bytes = Gauge(f"{PREFIX}_bytes_written", "Parquet bytes written by the latest run", t, registry=r)
        self.spans = Gauge(f"{PREFIX}_spans_reexported", "Key spans re-exported by the latest run", t, registry=r)
        self.retries = Gauge(f"{PREFIX}_retries", "Retries in the latest run", t, registry=r)
        self.duration = Gauge(f"{PREFIX}_duration_seconds", "Duration of the latest run", t, registry=r)
        self.image_rows = Gauge(f"{PREFIX}_image_rows", "Rows in the table's image after the latest run", t, registry=r)
        self.status = Gauge(f"{PREFIX}_table_status", "1 for the table's current status", ["table", "status"], registry=r)
        self.last_success = Gauge(f"{PREFIX}_last_success_timestamp_seconds",
                                  "Unix time the table's last successful run finished", t, registry=r)
        self.tables = Gauge(f"{PREFIX}_tables", "Tables of this sync by status", ["status"], registry=r)
        self.total = Gauge(f"{PREFIX}_seconds", "Duration of the whole sync so far", registry=r)
        self.interrupted = Gauge(f"{PREFIX}_interrupted", "1 when SIGINT/SIGTERM stopped the sync (label: the signal)",
                                 ["signal"], registry=r)
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}

    def __call__(self, ev: dict) -> None:
        """Take one sync event (``table_start``, a table's own progress events, ``table_done``, ``sync_summary``)."""
        kind, table = ev.get("event"), ev.get("table")
        with self._lock:
            if kind == "table_start":
                self._set_status(table, "running")
            elif kind == "table_done":
                self._done(table, ev)
            elif kind == "sync_summary":
                self.total.set(float(ev.get("seconds") or 0))
                for sig in ("SIGINT", "SIGTERM"):
                    self.interrupted.labels(sig).set(1 if ev.get("interrupted") == sig else 0)
            elif table and "rows_done" in ev:  # live progress of a running table
                self.rows.labels(table).set(float(ev["rows_done"] or 0))

    def _done(self, table: str, ev: dict) -> None:
        for gauge, name in ((self.rows, "rows_read"), (self.bytes, "bytes_written"), (self.spans, "spans_reexported"),
                            (self.retries, "retries"), (self.duration, "seconds"), (self.image_rows, "rows_in_image")):
            if ev.get(name) is not None:
                gauge.labels(table).set(float(ev[name]))
        status = ev.get("status") or "failed"
        self._set_status(table, status if status in STATUSES else "failed")
        last = ev.get("last_success")
        if last:
            self.last_success.labels(table).set(datetime.fromisoformat(str(last).replace("Z", "+00:00")).timestamp())

    def _set_status(self, table: str, status: str) -> None:
        self._state[table] = status
        for s in STATUSES:
            self.status.labels(table, s).set(1 if s == status else 0)
            self.tables.labels(s).set(sum(1 for v in self._state.values() if v == s))

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread until :meth:`stop`."""
        self._server = start_http_server(port, addr=addr, registry=self.registry)

    def stop(self) -> None:
        """Stop serving and free the port."""
        server = getattr(self, "_server", None)
        if server is not None:
            httpd, thread = server
            httpd.shutdown()
            httpd.server_close()  # shutdown() alone leaves the port bound
            thread.join()
            self._server = None

    def write_textfile(self, path: str) -> None:
        """Write the node-exporter textfile (atomically: a temporary file renamed into place)."""
        write_to_textfile(path, self.registry)


def check_textfile(path: str, option: str = "--metrics-file") -> None:
    """Refuse (UsageError, one line naming ``option``) a textfile path that cannot be written, before any work:
    its directory must exist and take a new file (the write is a temporary file renamed into place), and the
    path must not be a directory. A probe file is created in the directory and removed again."""
    import os

    from sparsesync.atomic import probe_writable
    from sparsesync.errors import UsageError

    parent = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise UsageError(f"{option} {path} is a directory", hint="name a file, e.g. /var/lib/node_exporter/sparsesync.prom")
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise UsageError(f"{option} {path}: its directory {parent} {what}", hint="create the directory or choose another path")
    try:
        probe_writable(parent)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {parent}: {exc.strerror or exc}",
                         hint="choose a writable path") from None
    # The file itself needs no write permission: the textfile replaces it by a rename in that directory.
