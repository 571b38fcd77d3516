"""Count queries on the server, not in the tool: MariaDB/MySQL general log written to a table.

Each fixture table has a unique name, so counting the logged statements that mention it isolates one
operation from every other client of the server (tests, other benchmarks) without trusting the tool
to report on itself. The log is switched on only while a :class:`QueryLog` is active.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlalchemy.engine import Engine

_lock = threading.Lock()
_active = 0


class QueryLog:
    """Context manager: ``with QueryLog(engine) as log: ...; log.count(table)``.

    ``count`` returns statements of kind ``Query``/``Execute`` mentioning ``table`` that were logged
    since the context was entered, excluding those on the QueryLog's own connection.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._since = None
        self._own_thread = None

    def __enter__(self) -> "QueryLog":
        global _active
        with _lock:
            with self.engine.connect() as conn:
                if _active == 0:
                    conn.exec_driver_sql("SET GLOBAL log_output = 'TABLE'")
                    conn.exec_driver_sql("SET GLOBAL general_log = 'ON'")
                _active += 1
                self._own_thread = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
                self._since = conn.exec_driver_sql("SELECT NOW(6)").scalar()
        return self

    def mark(self) -> None:
        """Restart counting from now."""
        with self.engine.connect() as conn:
            self._since = conn.exec_driver_sql("SELECT NOW(6)").scalar()

    def statements(self, table: str) -> list[str]:
        """The logged statements that mention ``table`` since the mark, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT argument FROM mysql.general_log WHERE event_time >= :since "
                    "AND command_type IN ('Query', 'Execute') AND argument LIKE :pat "
                    "AND argument NOT LIKE '%general_log%' ORDER BY event_time"
                ),
                {"since": self._since, "pat": f"%{table}%"},
            ).scalars()
            return [r.decode() if isinstance(r, (bytes, bytearray)) else str(r) for r in rows]

    def count(self, table: str, *, selects_only: bool = True, exclude_reflection: bool = True) -> int:
        """How many statements touched ``table`` (SELECTs against it by default, not reflection)."""
        n = 0
        for stmt in self.statements(table):
            low = stmt.lstrip().lower()
            if selects_only and not (low.startswith("select") or low.startswith("with")):
                continue
            if exclude_reflection and "information_schema" in low:
                continue
            n += 1
        return n

    def __exit__(self, *exc) -> None:
        global _active
        with _lock:
            _active -= 1
            if _active == 0:
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("SET GLOBAL general_log = 'OFF'")
