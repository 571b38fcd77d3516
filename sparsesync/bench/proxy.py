"""A loopback TCP proxy that adds a fixed delay per round trip, to show network latency on one machine.

Production reads a database across a network; on one machine every query costs microseconds, which
hides the roadmap's symptom (minutes for 50k rows spread over dozens of queries). The proxy listens on
``127.0.0.1:<free port>`` and forwards to the server; every chunk the client sends is held for
``latency_ms`` before it is forwarded, so each request/response round trip costs at least that much,
while data keeps streaming (chunks are queued with their arrival time, not sent one at a time).

The proxy runs an asyncio loop in a daemon thread, is bounded (``max_seconds``, after which it stops by
itself) and stops on ``stop()`` / leaving the ``with`` block.
"""

from __future__ import annotations

import asyncio
import threading
import time

from sqlalchemy.engine import URL, make_url

_CHUNK = 64 * 1024


class LatencyProxy:
    """``with LatencyProxy("127.0.0.1", 3306, latency_ms=20) as p: url = p.rewrite(url)``."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 3306, *, latency_ms: float = 20.0,
                 max_seconds: float = 3600.0, listen_host: str = "127.0.0.1") -> None:
        if latency_ms < 0:
            raise ValueError("latency_ms must be ≥ 0")
        self.target = (target_host, int(target_port))
        self.delay = latency_ms / 1000.0
        self.max_seconds = max_seconds
        self.listen_host = listen_host
        self.port: int | None = None
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> int:
        """Start listening; returns the local port."""
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        if self.port is None:
            raise RuntimeError("latency proxy did not start")
        return self.port

    def stop(self) -> None:
        """Stop listening and close every forwarded connection."""
        if self._loop is not None and not self._stopped.is_set():
            self._loop.call_soon_threadsafe(self._stop_event.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "LatencyProxy":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def rewrite(self, url: str | URL) -> URL:
        """The same database URL, pointing at the proxy instead of the server."""
        u = make_url(url) if isinstance(url, str) else url
        return u.set(host=self.listen_host, port=self.port)

    # ---- the loop -------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - surfaced to start()
            self._error = exc
            self._ready.set()
        finally:
            self._stopped.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        tasks: set[asyncio.Task] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                up_r, up_w = await asyncio.open_connection(*self.target)
            except OSError:
                writer.close()
                return
            a = asyncio.create_task(self._pipe(reader, up_w, self.delay, "up"))
            b = asyncio.create_task(self._pipe(up_r, writer, 0.0, "down"))
            tasks.update((a, b))
            try:
                await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                pass  # the proxy is stopping: close both sides quietly
            finally:
                for t in (a, b):
                    t.cancel()
                for w in (writer, up_w):
                    try:
                        w.close()
                    except Exception:  # noqa: BLE001 - already closed
                        pass

        server = await asyncio.start_server(handle, self.listen_host, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop_event.wait(), timeout=self.max_seconds)
        except asyncio.TimeoutError:
            pass  # bounded: stop by itself
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.sleep(0)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float, way: str) -> None:
        """Copy bytes; each chunk leaves ``delay`` seconds after it arrived (order kept, no stalls)."""
        queue: asyncio.Queue = asyncio.Queue()

        async def sender() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()
                if way == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
            try:
                dst.write_eof()
            except (OSError, RuntimeError):
                pass

        task = asyncio.create_task(sender())
        try:
            while True:
                data = await src.read(_CHUNK)
                if not data:
                    break
                queue.put_nowait((time.monotonic() + delay, data))
            queue.put_nowait((0.0, None))
            await task
        finally:
            task.cancel()
