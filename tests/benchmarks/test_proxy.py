"""The latency proxy forwards bytes intact and adds its delay to each round trip."""

from __future__ import annotations

import os
import socket
import threading
import time

import sqlalchemy as sa

from benchmarks.proxy import LatencyProxy


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return

            def echo(c=conn) -> None:
                with c:
                    while data := c.recv(65536):
                        c.sendall(data)

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def _round_trips(port: int, n: int, payload: bytes) -> float:
    with socket.create_connection(("127.0.0.1", port)) as s:
        t0 = time.perf_counter()
        for _ in range(n):
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += s.recv(65536)
            assert got == payload
        return time.perf_counter() - t0


def test_forwards_bytes_intact_and_adds_latency():
    srv, port = _echo_server()
    try:
        direct = _round_trips(port, 5, b"x" * 100)
        big = os.urandom(3 * 1024 * 1024 + 17)  # larger than one chunk, random bytes
        with LatencyProxy("127.0.0.1", port, latency_ms=40) as proxy:
            delayed = _round_trips(proxy.port, 5, b"y" * 100)
            assert _round_trips(proxy.port, 1, big) >= 0  # compares bytes inside
            assert proxy.bytes_up >= len(big) and proxy.bytes_down >= len(big)
        # Five round trips through a 40 ms proxy take at least 5 × 40 ms; direct ones far less.
        assert delayed >= 5 * 0.040
        assert delayed > direct
    finally:
        srv.close()


def test_stops_by_itself_after_max_seconds():
    srv, port = _echo_server()
    try:
        proxy = LatencyProxy("127.0.0.1", port, latency_ms=1, max_seconds=0.3)
        p = proxy.start()
        proxy._stopped.wait(5)
        assert proxy._stopped.is_set()
        try:
            socket.create_connection(("127.0.0.1", p), timeout=1).close()
            refused = False
        except OSError:
            refused = True
        assert refused
    finally:
        srv.close()


def test_mysql_through_proxy(mysql_url):
    u = sa.engine.make_url(mysql_url)
    with LatencyProxy(u.host or "127.0.0.1", u.port or 3306, latency_ms=15) as proxy:
        engine = sa.create_engine(proxy.rewrite(u))
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
                t0 = time.perf_counter()
                for _ in range(4):
                    assert conn.exec_driver_sql("SELECT REPEAT('a', 100000)").scalar() == "a" * 100000
                assert time.perf_counter() - t0 >= 4 * 0.015
        finally:
            engine.dispose()
