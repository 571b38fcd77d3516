"""A real S3 on loopback for tests and benchmarks: moto's standalone server, and a failing proxy.

``MotoServer`` runs ``python -m moto.server`` as a subprocess on a free 127.0.0.1 port.
``FaultProxy`` is a small threaded HTTP proxy in front of it that can answer chosen requests with
503 SlowDown / 500 InternalError, drop the connection (before forwarding, or half-way through the
request body), or delay them. Rules match S3 operations (PutObject, UploadPart, ...), so a test can
say "every 3rd UploadPart fails". Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import http.client
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class MotoServer:
    """moto's standalone S3 server as a subprocess; ``url`` is its endpoint. Use as a context manager."""

    def __init__(self, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MotoServer":
        """Start the server and wait until it answers HTTP."""
        env = dict(os.environ)
        # The server must never reach out (no real AWS) and keep quiet.
        env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self.proc.returncode} on port {self.port}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.url} within {self.startup_timeout}s")

    def stop(self) -> None:
        """Terminate the subprocess (kill if it does not exit)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def s3_operation(method: str, path: str) -> str:
    """Name the S3 operation of a path-style request (enough of them for the tests)."""
    parts = urlsplit(path)
    q = parse_qs(parts.query, keep_blank_values=True)
    segments = [s for s in parts.path.split("/") if s]
    has_key = len(segments) >= 2
    if method == "PUT":
        if "partNumber" in q and "uploadId" in q:
            return "UploadPart"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        if "delete" in q:
            return "DeleteObjects"
        return "Post"
    if method == "DELETE":
        if "uploadId" in q:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if "uploads" in q:
            return "ListMultipartUploads"
        if "uploadId" in q:
            return "ListParts"
        if has_key:
            return "GetObject"
        return "ListObjectsV2" if q.get("list-type") == ["2"] else "ListObjects"
    return method


class _QuietServer(ThreadingHTTPServer):
    """Dropped connections are the point here: do not print their tracebacks."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


# Error bodies as S3 sends them; botocore parses the Code and decides on retrying.
_ERRORS = {  # action -> (HTTP status, S3 error code, message)
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "403": (403, "AccessDenied", "Access Denied"),
    "bad_key": (403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."),
}


@dataclass
class Rule:
    """Which requests to hit and how.

    ``op``: S3 operation name or "*"; ``action``: "503" (SlowDown), "500" (InternalError), "403"
    (AccessDenied), "bad_key" (403 InvalidAccessKeyId), "drop" (close after reading
    the request, nothing forwarded), "drop_mid_body" (close half-way through the body) or "delay";
    ``every``: hit every N-th matching request (1 = all); ``limit``: stop after that many hits
    (None = unlimited); ``delay_s`` for "delay".
    """

    op: str
    action: str
    every: int = 1
    limit: int | None = None
    delay_s: float = 0.0
    seen: int = 0
    hits: int = 0

    def take(self, op: str) -> bool:
        if self.op not in ("*", op):
            return False
        self.seen += 1
        if self.limit is not None and self.hits >= self.limit:
            return False
        if self.seen % self.every != 0:
            return False
        self.hits += 1
        return True


@dataclass
class ProxyLog:
    """What the proxy saw: (operation, outcome) per request; outcome is "ok" or the rule's action."""

    entries: list[tuple[str, str]] = field(default_factory=list)

    def count(self, op: str | None = None, outcome: str | None = None) -> int:
        return sum(1 for o, r in self.entries if (op is None or o == op) and (outcome is None or r == outcome))


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of ``upstream`` that injects faults by rule.

    Stops at :meth:`stop`, or by itself after ``max_lifetime_s`` so a forgotten proxy cannot linger.
    """

    def __init__(self, upstream: str, *, max_lifetime_s: float = 600.0) -> None:
        up = urlsplit(upstream)
        self.upstream_host, self.upstream_port = up.hostname, up.port
        self.rules: list[Rule] = []
        self.log = ProxyLog()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _read_body(self, partial: bool = False) -> bytes | None:
                te = (self.headers.get("Transfer-Encoding") or "").lower()
                if "chunked" in te:
                    chunks = []
                    while True:
                        line = self.rfile.readline()
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                        if partial:
                            return None
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                if partial:
                    self.rfile.read(length // 2)
                    return None
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                op = s3_operation(self.command, self.path)
                rule = proxy._match(op)
                action = rule.action if rule else "ok"
                if action == "drop_mid_body":
                    self._read_body(partial=True)
                    proxy._record(op, action)
                    self._abort_connection()
                    return
                body = self._read_body()
                proxy._record(op, action)
                if action == "drop":
                    self._abort_connection()
                    return
                if action in _ERRORS:
                    status, code, msg = _ERRORS[action]
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                        f"<Message>{msg}</Message><RequestId>fault</RequestId></Error>"
                    ).encode()
                    self.send_response_only(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload) if self.command != "HEAD" else 0))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                if action == "delay":
                    time.sleep(rule.delay_s)
                self._forward(body)

            def _abort_connection(self) -> None:
                # Close without a response: the client sees a dropped connection (reset or EOF).
                self.close_connection = True
                try:
                    # linger 0: close with a reset, like a crashed server or a cut network
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _forward(self, body: bytes) -> None:
                # hop-by-hop headers are ours to set; Expect was already answered by this handler
                hop = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "content-length", "expect"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response_only(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() in hop and not (k.lower() == "content-length" and self.command == "HEAD"):
                            continue
                        self.send_header(k, v)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = _QuietServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)
        self._timer = threading.Timer(max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._stopped = False

    def _match(self, op: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.take(op):
                    return rule
        return None

    def _record(self, op: str, outcome: str) -> None:
        with self._lock:
            self.log.entries.append((op, outcome))

    def fail(self, op: str, action: str, *, every: int = 1, limit: int | None = None, delay_s: float = 0.0) -> Rule:
        """Add a rule (see :class:`Rule`); rules are tried in the order added, first match wins."""
        rule = Rule(op=op, action=action, every=every, limit=limit, delay_s=delay_s)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove all rules (requests pass through again)."""
        with self._lock:
            self.rules.clear()

    def start(self) -> "FaultProxy":
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()

    def __str__(self) -> str:
        return self.url

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
