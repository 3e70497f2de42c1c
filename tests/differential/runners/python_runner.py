"""The Python drivers' script runner of the differential harness.

Runs every scenario (``tests/differential/scenarios/*.json``) with one Python MySQL driver and
writes a transcript of what the application sees, one JSON object per line on stdout (the wire
format is in ``tests/differential/runners/README.md``). The harness runs this once against
MariaDB directly and once through the proxy and compares the two transcripts.

Drivers: ``pymysql``, ``mysqlconnector_pure`` and ``mysqlconnector_c`` (mysql-connector-python
with ``use_pure=True/False``; the C extension is libmysqlclient 8's protocol code, collation id
255 included), ``mysqlclient`` (``MySQLdb``, built on MariaDB Connector/C) and ``asyncmy``.

Each driver records what *it* exposes: values with their Python types, cursor metadata, affected
rows, insert ids, warning counts, status flags where the driver keeps them, errors. An operation a
driver has no API for is recorded as ``{"unsupported": ...}`` on both sides (so it never differs).
Nothing here is normalized: the harness does that, in one place, with a reason for each rule.
"""

from __future__ import annotations

import argparse
import sys

# mysql-connector-python's C extension links a newer libssl than Debian 12's; it loads only if it
# is imported before anything (the ssl module) maps the system libssl into the process.
if "--driver" in sys.argv and sys.argv[sys.argv.index("--driver") + 1] == "mysqlconnector_c":
    import _mysql_connector  # noqa: F401

import asyncio
import faulthandler
import datetime
import decimal
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

# Seconds: a reply that never comes (a hang) becomes an error in the transcript. The harness sets
# it (long directly, where MariaDB never hangs and only machine load can delay a reply).
READ_TIMEOUT = max(1, round(float(os.environ.get("RWPROXY_DIFF_READ_TIMEOUT", "5"))))  # whole seconds: some drivers take only ints


# -- value and error encoding --------------------------------------------------------------------


def enc(v: Any) -> Any:
    """A value as [python type name, canonical text]; NULL as None."""
    if v is None:
        return None
    t = type(v).__name__
    if isinstance(v, (bytes, bytearray, memoryview)):
        return [t, bytes(v).hex()]
    if isinstance(v, float):
        return [t, repr(v)]
    if isinstance(v, (datetime.date, datetime.time)):
        return [t, v.isoformat()]
    if isinstance(v, (set, frozenset)):
        return [t, sorted(str(x) for x in v)]
    if isinstance(v, (dict, list)):
        return [t, json.dumps(v, sort_keys=True, default=str)]
    return [t, str(v)]


def jsonable(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def error_of(exc: BaseException) -> dict[str, Any]:
    code = getattr(exc, "errno", None)
    msg = getattr(exc, "msg", None)
    sqlstate = getattr(exc, "sqlstate", None)
    args = getattr(exc, "args", ())
    if code is None and args and isinstance(args[0], int):
        code = args[0]
        msg = args[1] if len(args) > 1 else ""
    if msg is None:
        msg = str(exc)
    out = {"class": type(exc).__name__, "code": code, "sqlstate": sqlstate, "message": str(msg)}
    if isinstance(exc, RUNNER_BUGS) and _raised_here(exc):  # the runner's own mistake, not the driver's answer
        out["runner_bug"] = True
    return out


def _raised_here(exc: BaseException) -> bool:
    """The exception comes from this file, not from inside the driver (mysql-connector's pure
    protocol raises IndexError on some MariaDB binary rows: that is the driver's answer, the same
    directly and through the proxy)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is None or tb.tb_frame.f_code.co_filename == __file__


RUNNER_BUGS = (AttributeError, NameError, KeyError, IndexError)
_GONE = frozenset(("MySQL Connection not available",))  # mysql-connector: the connection is gone for it


def param_value(p: list[Any]) -> Any:
    """A scenario parameter [type, text] as the Python value an application would bind."""
    kind, text = p
    if text is None or kind == "null":
        return None
    return {
        "int": int,
        "float": float,
        "decimal": decimal.Decimal,
        "str": str,
        "bytes": bytes.fromhex,
        "bool": lambda s: s == "true",
        "date": datetime.date.fromisoformat,
        "datetime": datetime.datetime.fromisoformat,
        "time": lambda s: datetime.timedelta(seconds=float(s)),
    }[kind](text)


# -- drivers -------------------------------------------------------------------------------------


class Driver:
    """One DB-API driver: how to connect, and what of its state to record."""

    name = ""
    binary_prepared = False  # does `prepared` use COM_STMT_PREPARE/EXECUTE?
    load_data_support = ""  # why LOAD DATA LOCAL cannot be run with this driver ("" = it can)

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def connect(self, opts: dict[str, Any]) -> Any:
        raise NotImplementedError

    def thread_id(self, c: Any) -> int:
        return c.thread_id()

    def columns(self, cur: Any) -> list[Any]:
        return [jsonable(d) for d in cur.description or ()]

    def status(self, c: Any, cur: Any) -> dict[str, Any]:
        return {}

    def cursor(self, c: Any, prepared: bool = False) -> Any:
        return c.cursor()

    def one_result(self, c: Any, cur: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if cur.description:
            out["columns"] = self.columns(cur)
            out["rows"] = [[enc(v) for v in row] for row in cur.fetchall()]
        out["rowcount"] = cur.rowcount
        out["lastrowid"] = cur.lastrowid
        out.update(self.status(c, cur))
        return out

    def query(self, c: Any, sql: str, params: list[Any] | None = None, prepared: bool = False) -> dict[str, Any]:
        cur = self.cursor(c, prepared)
        results: list[dict[str, Any]] = []
        try:
            if params is None:
                cur.execute(sql)
            else:
                cur.execute(sql, [param_value(p) for p in params])
            while True:
                results.append(self.one_result(c, cur))
                if not cur.nextset():
                    break
        except Exception as exc:  # the transcript records it; the next step carries on
            return {"results": results, "error": error_of(exc)}
        finally:
            try:
                cur.close()
            except Exception:
                pass
        return {"results": results}

    # Operations a driver may lack (then: unsupported).
    def change_user(self, c: Any, user: str, password: str, database: str | None) -> Any:
        raise Unsupported(f"{self.name} has no COM_CHANGE_USER API")

    def reset_connection(self, c: Any) -> Any:
        raise Unsupported(f"{self.name} has no COM_RESET_CONNECTION API")

    def init_db(self, c: Any, database: str) -> Any:
        c.select_db(database)

    def ping(self, c: Any) -> Any:
        c.ping()

    def cursor_fetch(self, c: Any, sql: str, params: list[Any], fetch: int) -> Any:
        raise Unsupported(f"{self.name} has no server-side cursor API")

    def close(self, c: Any) -> None:
        c.close()


class Unsupported(Exception):
    pass


class PyMySQL(Driver):
    name = "pymysql"

    def connect(self, opts: dict[str, Any]) -> Any:
        import pymysql
        from pymysql.constants import CLIENT

        flags = CLIENT.MULTI_STATEMENTS | (CLIENT.IGNORE_SPACE if opts.get("ignore_space") else 0)
        return pymysql.connect(
            host=self.host, port=self.port, user=opts["user"], password=opts["password"], database=opts.get("database"),
            charset=opts.get("charset", "utf8mb4"), client_flag=flags, local_infile=True, autocommit=True,
            connect_timeout=10, read_timeout=READ_TIMEOUT, write_timeout=READ_TIMEOUT,
        )  # fmt: skip

    def columns(self, cur: Any) -> list[Any]:
        return [_field(f) for f in cur._result.fields]

    def status(self, c: Any, cur: Any) -> dict[str, Any]:
        r = cur._result
        return {"warning_count": r.warning_count, "info": r.message.decode() if r.message else "", "server_status": c.server_status}

    def ping(self, c: Any) -> Any:
        c.ping(reconnect=False)


def _field(f: Any) -> dict[str, Any]:
    """PyMySQL's/asyncmy's column definition packet, field by field (asyncmy's compiled packet
    keeps no public `db`/`catalog`: they are recorded where the driver exposes them)."""
    out = {
        "name": f.name, "org_name": f.org_name, "table": f.table_name, "org_table": f.org_table,
        "charsetnr": f.charsetnr, "length": f.length, "type": f.type_code, "flags": f.flags, "decimals": f.scale,
    }  # fmt: skip
    for attr in ("db", "catalog"):
        if hasattr(f, attr):
            out[attr] = jsonable(getattr(f, attr))
    return out


class MySQLConnector(Driver):
    binary_prepared = True

    def __init__(self, host: str, port: int, pure: bool) -> None:
        super().__init__(host, port)
        self.pure = pure
        self.name = "mysqlconnector_pure" if pure else "mysqlconnector_c"

    def connect(self, opts: dict[str, Any]) -> Any:
        import mysql.connector
        from mysql.connector.constants import ClientFlag

        flags = [ClientFlag.MULTI_STATEMENTS, ClientFlag.MULTI_RESULTS] + ([ClientFlag.IGNORE_SPACE] if opts.get("ignore_space") else [])
        kw: dict[str, Any] = {}
        if "charset" in opts:
            kw["charset"] = opts["charset"]
        if opts.get("database"):
            kw["database"] = opts["database"]
        c = mysql.connector.connect(
            host=self.host, port=self.port, user=opts["user"], password=opts["password"], use_pure=self.pure,
            client_flags=flags, allow_local_infile=True, autocommit=True, connection_timeout=10,
            read_timeout=READ_TIMEOUT, write_timeout=READ_TIMEOUT, ssl_disabled=True, **kw,
        )  # fmt: skip
        # The driver's own SHOW WARNINGS after a statement that warned (what an app that wants
        # warnings switches on).
        c.get_warnings = True
        return c

    def thread_id(self, c: Any) -> int:
        return c.connection_id

    def cursor(self, c: Any, prepared: bool = False) -> Any:
        return c.cursor(prepared=True) if prepared else c.cursor()

    def status(self, c: Any, cur: Any) -> dict[str, Any]:
        out = {"warning_count": cur.warning_count, "warnings": jsonable(cur.warnings)}
        out["in_transaction"] = c.in_transaction  # what it keeps of the status flags
        return out

    def change_user(self, c: Any, user: str, password: str, database: str | None) -> Any:
        c.cmd_change_user(username=user, password=password, database=database or "")

    def reset_connection(self, c: Any) -> Any:
        return c.cmd_reset_connection()

    def init_db(self, c: Any, database: str) -> Any:
        c.cmd_init_db(database)

    def ping(self, c: Any) -> Any:
        c.cmd_ping()

    def cursor_fetch(self, c: Any, sql: str, params: list[Any], fetch: int) -> Any:
        """COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH `fetch` rows at a time
        (mysql-connector's protocol-level API: its cursor classes never open server cursors)."""
        if not self.pure:
            raise Unsupported("the C extension has no protocol-level cursor API")
        from mysql.connector.constants import ServerFlag

        stmt = c.cmd_stmt_prepare(sql.encode())
        sid = stmt["statement_id"]
        out: dict[str, Any] = {"columns": [jsonable(col) for col in stmt["columns"]], "batches": []}
        try:
            res = c.cmd_stmt_execute(sid, [param_value(p) for p in params], stmt["parameters"], flags=1)
            if not isinstance(res, tuple):
                out["execute"] = jsonable(res)
                return out
            _, cols, eof = res
            status = eof.get("status_flag", eof.get("server_status", 0))
            out["cursor_exists"] = bool(status & ServerFlag.STATUS_CURSOR_EXISTS)
            while status & ServerFlag.STATUS_CURSOR_EXISTS and not status & ServerFlag.STATUS_LAST_ROW_SENT:
                c.cmd_stmt_fetch(sid, fetch)
                rows, eof = c.get_rows(binary=True, columns=cols)
                status = eof.get("status_flag", eof.get("server_status", 0))
                out["batches"].append({"rows": [[enc(v) for v in r] for r in rows], "last_row_sent": bool(status & ServerFlag.STATUS_LAST_ROW_SENT)})
                if len(out["batches"]) > 100:
                    raise RuntimeError("cursor never reported its last row")
            c.unread_result = False
        finally:
            c.cmd_stmt_close(sid)
        return out


class MySQLClient(Driver):
    name = "mysqlclient"

    def connect(self, opts: dict[str, Any]) -> Any:
        import MySQLdb
        from MySQLdb.constants import CLIENT

        flags = CLIENT.MULTI_STATEMENTS | CLIENT.MULTI_RESULTS | (CLIENT.IGNORE_SPACE if opts.get("ignore_space") else 0)
        kw = {"database": opts["database"]} if opts.get("database") else {}
        return MySQLdb.connect(
            host=self.host, port=self.port, user=opts["user"], password=opts["password"],
            charset=opts.get("charset", "utf8mb4"), client_flag=flags, local_infile=1, autocommit=True,
            connect_timeout=10, read_timeout=READ_TIMEOUT, write_timeout=READ_TIMEOUT, **kw,
        )  # fmt: skip

    def columns(self, cur: Any) -> list[Any]:
        return [jsonable(d) + [f] for d, f in zip(cur.description, cur.description_flags)]

    def status(self, c: Any, cur: Any) -> dict[str, Any]:
        return {"warning_count": c.warning_count(), "info": jsonable(c.info()), "sqlstate": c.sqlstate()}

    def change_user(self, c: Any, user: str, password: str, database: str | None) -> Any:
        c.change_user(user, password, database) if database else c.change_user(user, password)


class AsyncMy(Driver):
    """asyncmy, driven through one event loop (the runner itself stays synchronous)."""

    name = "asyncmy"
    # asyncmy 0.2's LOCAL INFILE handler passes the file name as bytes to a str parameter
    # (TypeError) and leaves the connection out of sync: every later step would be noise.
    load_data_support = "asyncmy's LOAD DATA LOCAL handler fails with a TypeError of its own (file name as bytes)"

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        # asyncmy has no read timeout of its own: a reply that never comes must still end.
        return self.loop.run_until_complete(asyncio.wait_for(coro, READ_TIMEOUT))

    def connect(self, opts: dict[str, Any]) -> Any:
        import asyncmy
        from asyncmy.constants import CLIENT

        flags = CLIENT.MULTI_STATEMENTS | (CLIENT.IGNORE_SPACE if opts.get("ignore_space") else 0)
        return self.run(asyncmy.connect(
            host=self.host, port=self.port, user=opts["user"], password=opts["password"], database=opts.get("database"),
            charset=opts.get("charset", "utf8mb4"), client_flag=flags, local_infile=True, autocommit=True, connect_timeout=10,
        ))  # fmt: skip

    def query(self, c: Any, sql: str, params: list[Any] | None = None, prepared: bool = False) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            results: list[dict[str, Any]] = []
            cur = c.cursor()
            try:
                if params is None:
                    await cur.execute(sql)
                else:
                    await cur.execute(sql, [param_value(p) for p in params])
                while True:
                    out: dict[str, Any] = {}
                    if cur.description:
                        out["columns"] = [_field(f) for f in cur._result.fields]
                        out["rows"] = [[enc(v) for v in row] for row in await cur.fetchall()]
                    r = cur._result
                    out |= {"rowcount": cur.rowcount, "lastrowid": cur.lastrowid, "warning_count": r.warning_count,
                            "info": jsonable(r.message), "server_status": c.server_status}  # fmt: skip
                    results.append(out)
                    if not await cur.nextset():
                        break
            except Exception as exc:
                return {"results": results, "error": error_of(exc)}
            return {"results": results}

        try:
            return self.run(go())
        except (asyncio.TimeoutError, TimeoutError) as exc:
            return {"results": [], "error": error_of(exc) | {"message": "no reply within the runner's read timeout"}}

    def init_db(self, c: Any, database: str) -> Any:
        self.run(c.select_db(database))

    def ping(self, c: Any) -> Any:
        self.run(c.ping(reconnect=False))

    def close(self, c: Any) -> None:
        self.run(c.ensure_closed())


def make_driver(name: str, host: str, port: int) -> Driver:
    if name == "pymysql":
        return PyMySQL(host, port)
    if name in ("mysqlconnector_pure", "mysqlconnector_c"):
        return MySQLConnector(host, port, pure=name.endswith("pure"))
    if name == "mysqlclient":
        return MySQLClient(host, port)
    if name == "asyncmy":
        return AsyncMy(host, port)
    raise SystemExit(f"unknown driver {name!r}")


# -- the scenario interpreter ----------------------------------------------------------------------


class Runner:
    def __init__(self, driver: Driver, user: str, password: str, tmpdir: Path) -> None:
        self.d, self.user, self.password, self.tmpdir = driver, user, password, tmpdir
        self.conns: dict[str, Any] = {}
        self.thread_ids: dict[str, int] = {}
        self.unusable: dict[str, str] = {}  # connection name -> what the driver said when it lost it

    def emit(self, obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()

    def barrier(self, action: str) -> None:
        """Ask the harness to do something (wait for the replicas) and wait until it is done."""
        self.emit({"type": "barrier", "action": action})
        if sys.stdin.readline().strip() != "ok":
            raise SystemExit("harness did not answer a barrier")

    def run_scenario(self, sc: dict[str, Any]) -> None:
        for i, step in enumerate(sc["steps"]):
            op = step["op"]
            conn = step.get("conn", "a")
            t0 = time.monotonic()
            try:
                out = self.step(op, conn, step)
            except Unsupported as exc:
                out = {"unsupported": str(exc)}
            except Exception as exc:
                out = {"error": error_of(exc)}
            message = out.get("error", {}).get("message", "") if isinstance(out, dict) else ""
            if message in _GONE and conn in self.conns:
                self.unusable[conn] = message
            self.emit({"type": "step", "scenario": sc["name"], "index": i, "op": op, "conn": conn, "out": out,
                       "elapsed": round(time.monotonic() - t0, 4)})  # fmt: skip
        for name in list(self.conns):
            self.step("close", name, {})

    def step(self, op: str, conn: str, s: dict[str, Any]) -> Any:
        d = self.d
        if op == "sync":
            self.barrier("sync")
            return {}
        if op == "sleep":
            time.sleep(s["seconds"])
            return {}
        if op == "connect":
            opts = {"user": self.user, "password": self.password} | s.get("options", {})
            if "database" in s:
                opts["database"] = s["database"]
            if s.get("options", {}).get("handshake_collation") and d.name != "mysqlconnector_c":
                raise Unsupported("only libmysqlclient 8 (mysqlconnector_c) sends collation id 255 by itself")
            c = d.connect(opts)
            self.conns[conn] = c
            self.unusable.pop(conn, None)
            self.thread_ids[conn] = d.thread_id(c)
            return {"connected": True, "thread_id": self.thread_ids[conn]}
        c = self.conns.get(conn)
        if c is None:
            return {"error": {"message": f"no open connection {conn!r}"}}
        if conn in self.unusable and op != "close":
            # The driver said the connection is gone (mysql-connector's pure protocol loses a
            # compound statement's replies, directly too); what it does with it afterwards reads
            # leftovers (a stale rowcount), which says nothing about the server or the proxy.
            return {"error": {"message": f"connection {conn!r} unusable since: {self.unusable[conn]}"}}
        if op == "query":
            return d.query(c, s["sql"].replace("{file}", str(self.tmpdir / "load.txt")))
        if op == "prepared":
            runs = s.get("runs", [s.get("params", [])])
            return {"binary_protocol": d.binary_prepared, "runs": [d.query(c, s["sql"], p, prepared=True) for p in runs]}
        if op == "cursor":
            return d.cursor_fetch(c, s["sql"], s.get("params", []), s.get("fetch", 1))
        if op == "connection_id":
            res = d.query(c, "SELECT CONNECTION_ID()")
            got = int(res["results"][0]["rows"][0][0][1]) if "error" not in res else None
            return {"CONNECTION_ID() equals the handshake's connection id": got == self.thread_ids[conn]}
        if op == "kill":
            target = self.thread_ids[s["target"]]
            sql = s.get("sql", "KILL {id}").replace("{id}", str(target))
            return d.query(c, sql)
        if op == "change_user":
            d.change_user(c, s["user"], s["password"], s.get("database"))
            return {"ok": True}
        if op == "reset_connection":
            d.reset_connection(c)
            return {"ok": True}
        if op == "init_db":
            d.init_db(c, s["database"])
            return {"ok": True}
        if op == "ping":
            d.ping(c)
            return {"ok": True}
        if op == "load_data":
            if d.load_data_support:
                raise Unsupported(d.load_data_support)
            (self.tmpdir / "load.txt").write_text(s["content"])
            return d.query(c, s["sql"].replace("{file}", str(self.tmpdir / "load.txt")))
        if op == "close":
            del self.conns[conn]
            try:
                d.close(c)
            except Exception as exc:
                return {"error": error_of(exc)}
            return {"closed": True}
        raise Unsupported(f"unknown op {op!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--driver", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("scenarios", nargs="+", type=Path)
    a = p.parse_args(argv)
    driver = make_driver(a.driver, a.host, a.port)
    with tempfile.TemporaryDirectory(prefix="rwproxy-diff-") as tmp:
        runner = Runner(driver, a.user, a.password, Path(tmp))
        for path in a.scenarios:
            runner.run_scenario(json.loads(path.read_text()))
    runner.emit({"type": "done"})
    return 0


if __name__ == "__main__":
    faulthandler.enable()  # a driver that crashes the process (a C extension) says where
    sys.exit(main())
