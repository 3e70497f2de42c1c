"""A small load generator for fault tests: client threads with PyMySQL through the proxy.

Why not sysbench: sysbench 1.0.20 segfaults when a connection drops mid-run (directly against
MariaDB too), and dropped connections are what fault tests are about.

Each client thread holds one autocommit connection and runs its operation in a loop until `stop()`
or `max_seconds` (so a test that forgets to stop it still ends). Every operation is recorded: start
time (time.monotonic), latency, which server answered (@@server_id, when the operation returns it)
and the MySQL error code and message when it failed. A connection that broke is reopened (the
failed connect is recorded too, with thread-local backoff), so one client keeps one session's worth
of load. Records are appended from the threads (list.append is atomic under the GIL) and read once
the load has stopped, or as a snapshot while it runs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pymysql

Operation = Callable[[Any, int], "int | None"]  # (cursor, client number) -> server_id or None


@dataclass(frozen=True, slots=True)
class Op:
    client: int
    start: float  # time.monotonic()
    latency: float  # seconds
    server_id: int | None = None
    error: int | None = None  # MySQL error code; None = success
    message: str = ""
    connect: bool = False  # the failure was (re)connecting, not a statement

    @property
    def end(self) -> float:
        return self.start + self.latency

    @property
    def ok(self) -> bool:
        return self.error is None


def read_server_id(sql: str = "SELECT @@server_id") -> Operation:
    def op(cur: Any, client: int) -> int | None:
        cur.execute(sql)
        row = cur.fetchone()
        return int(row[0])

    return op


def insert_row(table: str = "ft.w") -> Operation:
    """An autocommit INSERT of a fresh key; the row records which server executed it (@@server_id)."""

    def op(cur: Any, client: int) -> int | None:
        cur.execute(f"INSERT INTO {table} (k, sid) VALUES (%s, @@server_id)", (f"{client}-{uuid.uuid4().hex}",))
        return None

    return op


class Load:
    def __init__(
        self,
        connect: Callable[[], Any],
        operation: Operation,
        clients: int = 8,
        *,
        max_seconds: float = 90.0,
        pause: float = 0.0,
        name: str = "load",
    ) -> None:
        self.connect = connect
        self.operation = operation
        self.clients = clients
        self.max_seconds = max_seconds
        self.pause = pause
        self.name = name
        self.ops: list[Op] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0

    # ---- running ----------------------------------------------------------------------------------

    def start(self) -> Load:
        self.started = time.monotonic()
        for i in range(self.clients):
            t = threading.Thread(target=self._client, args=(i,), name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 40.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            raise AssertionError(f"{self.name}: client threads still running {timeout:g}s after stop: {stuck}")

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _client(self, n: int) -> None:
        deadline = self.started + self.max_seconds
        conn = None
        backoff = 0.05
        while not self._stop.is_set() and time.monotonic() < deadline:
            if conn is None:
                t0 = time.monotonic()
                try:
                    conn = self.connect()
                    backoff = 0.05
                except pymysql.err.MySQLError as e:
                    self.ops.append(Op(n, t0, time.monotonic() - t0, None, _code(e), _message(e), connect=True))
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 0.5)
                    continue
            t0 = time.monotonic()
            try:
                with conn.cursor() as cur:
                    sid = self.operation(cur, n)
                self.ops.append(Op(n, t0, time.monotonic() - t0, sid))
            except pymysql.err.MySQLError as e:
                self.ops.append(Op(n, t0, time.monotonic() - t0, None, _code(e), _message(e)))
                if not conn.open:
                    conn = None
            if self.pause:
                self._stop.wait(self.pause)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - the proxy may have gone
                pass

    # ---- reading ----------------------------------------------------------------------------------

    def snapshot(self) -> list[Op]:
        return list(self.ops)

    def between(self, t0: float, t1: float, ops: Iterable[Op] | None = None) -> list[Op]:
        """Operations that started in [t0, t1)."""
        return [o for o in (self.ops if ops is None else ops) if t0 <= o.start < t1]

    def errors(self, t0: float = 0.0, t1: float = float("inf")) -> list[Op]:
        return [o for o in self.between(t0, t1) if not o.ok]

    def rate(self, t0: float, t1: float) -> dict[int, float]:
        """Successful operations per second per client, for operations that started in [t0, t1)."""
        counts = dict.fromkeys(range(self.clients), 0)
        for o in self.between(t0, t1):
            if o.ok:
                counts[o.client] += 1
        return {c: n / (t1 - t0) for c, n in counts.items()}

    def served_by(self, t0: float, t1: float) -> dict[int, int]:
        """server_id -> successful operations that started in [t0, t1)."""
        out: dict[int, int] = {}
        for o in self.between(t0, t1):
            if o.ok and o.server_id is not None:
                out[o.server_id] = out.get(o.server_id, 0) + 1
        return out

    def summary(self, t0: float = 0.0, t1: float = float("inf")) -> str:
        ops = self.between(t0, t1)
        errs: dict[tuple[int | None, str], int] = {}
        for o in ops:
            if not o.ok:
                key = (o.error, o.message[:120])
                errs[key] = errs.get(key, 0) + 1
        worst = max((o.latency for o in ops), default=0.0)
        return f"{self.name}: {len(ops)} ops, {sum(errs.values())} errors {errs}, max latency {worst:.3f}s, served by {self.served_by(t0, t1)}"


def _code(e: BaseException) -> int | None:
    args = getattr(e, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _message(e: BaseException) -> str:
    args = getattr(e, "args", ())
    return str(args[1]) if len(args) > 1 else str(e)
