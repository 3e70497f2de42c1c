"""The admin worker: admin SQL runs on a thread of its own, never on the event loop.

Theory of operation
-------------------
Everything the admin port does with the config store -- parsing a statement, SQLite, validating a
LOAD, DIFF MYSQL ROUTES (which classifies every digest), EXPLAIN ROUTE, building result packets --
runs on one worker thread (`AdminWorker`, a one-thread executor) that owns the store's SQLite
connection. The event loop only reads and writes admin sockets and awaits the worker, so a
statement that runs for its whole `statement_timeout`, or a stream of them, leaves the data port's
latency alone. One thread means one statement at a time across all admin sessions (in arrival
order, `AdminWorker.turn`): the store needs no locks, and admin clients cannot multiply the load.

What crosses between the threads, and why it is consistent:

* The running proxy's state lives on the loop and is mutated there without locks (the stats
  registry, the session table, the pools). The worker never touches it. A statement that names
  stats tables gets them as snapshots taken on the loop: each table's live collection is copied in
  one step (StatsRegistry.table_chunks), then its rows are built a chunk per loop turn and each
  chunk is loaded into the store by the worker before the next is built (AdminSession._fill_stats;
  `snapshot_stats` for the few callers that want the rows themselves). So a 10,000-digest table
  never stalls the loop for more than a chunk, and neither thread holds it whole. The rows are
  plain tuples of ints and strings: nothing mutable crosses.
* Result sets are encoded as their rows are fetched (admin.server.WireRows): the worker keeps wire
  bytes, not tuples. Besides memory, this matters for latency: long-lived Python objects make the
  garbage collector's full passes, which hold the GIL for tens of milliseconds, come more often.
* The runtime configuration is an immutable `Config`: the worker may read the one it was given.
* Changes to the running proxy run on the loop: LOAD ... TO RUNTIME validates in the worker, then
  `on_loop(app.apply_config, config)` runs the swap on the event loop (the worker thread waits for
  it), exactly as when everything ran on the loop; KILL stays on the loop altogether.

CPU and the GIL: the worker thread runs at the lowest scheduling priority (nice 19, Linux sets it
per thread), so when the machine's cores are contended the kernel runs the event loop's thread
first: admin statements take longer, the data port does not. Its SQLite work releases the GIL, but
its Python work (parsing, validation, packet building) holds it in slices of
`sys.getswitchinterval()`, 5 ms by default, and a loop thread that wakes up for a client packet may
wait that long; the worker lowers the interval to 0.5 ms while it exists, so the loop waits at most
that (when the worker is idle the setting costs nothing). What remains is the worker being
preempted while it holds the GIL, which the loop then waits out; result encoding and chunk loading
are kept lean for that reason. Measured (tests/integration/test_admin_isolation.py): SELECT 1 p99
through the proxy stays under 10 ms during back-to-back heavy stats SELECTs and one-second CTEs.

Never: call the stats registry, a session or a pool from the worker thread; block the loop on
the worker (it is always awaited).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["AdminWorker", "snapshot_stats"]

T = TypeVar("T")
SWITCH_INTERVAL = 0.0005  # seconds; see the module docstring


WORKER_NICE = 19


def _lower_priority() -> None:
    """On the worker thread: let the scheduler prefer the event loop's thread (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except (OSError, AttributeError):
        pass


class AdminWorker:
    """One thread for the admin store, and the way back to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, apply_timeout: float = 60.0) -> None:
        self.loop = loop
        self.apply_timeout = apply_timeout
        self.turn = asyncio.Lock()  # one statement at a time, across sessions, in arrival order
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rwproxy-admin", initializer=_lower_priority)
        self._saved_interval = sys.getswitchinterval()
        if self._saved_interval > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        self.closed = False

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) on the worker thread; its result or its exception."""
        if self.closed:
            raise RuntimeError("the admin worker is closed")
        return await self.loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def on_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """From the worker thread: fn(*args) on the event loop; waits for it (its result or exception)."""

        async def call() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(self.apply_timeout)

    def close(self) -> None:
        """Stop taking work; a statement already running finishes on its own (bounded by its timeout)."""
        if not self.closed:
            self.closed = True
            self._executor.shutdown(wait=False, cancel_futures=True)
            if sys.getswitchinterval() == SWITCH_INTERVAL:
                sys.setswitchinterval(self._saved_interval)


async def snapshot_stats(stats: Any, names: Iterable[str], rows_per_chunk: int = 256) -> dict[str, tuple[tuple[str, ...], list[tuple]]]:
    """On the event loop: the stats tables `names` as {name: (columns, rows)}, every table's
    collection copied at once at the call, its rows built one chunk per loop turn."""
    started = [(name, *stats.table_chunks(name, rows_per_chunk)) for name in names]
    out: dict[str, tuple[tuple[str, ...], list[tuple]]] = {}
    for name, columns, chunks in started:
        rows: list[tuple] = []
        for chunk in chunks:
            rows.extend(chunk)
            await asyncio.sleep(0)  # let the data port run between chunks
        out[name] = (tuple(columns), rows)
    return out
