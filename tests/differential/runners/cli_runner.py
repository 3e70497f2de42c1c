"""The libmariadb script runner of the differential harness: the ``mariadb`` command-line client.

Each scenario connection is one long-lived ``mariadb`` process in table mode (``--table -vv
--column-type-info --show-warnings --binary-as-hex``), fed statements on its stdin; what it prints
for a statement (the column definitions it got from libmariadb, rows, "Query OK, N rows affected",
"Records: …", the warnings it fetched itself with SHOW WARNINGS, "ERROR code (state) at line n:
message") is the transcript. Statements end with a delimiter no scenario uses, so a
multi-statement or a CREATE PROCEDURE reaches the server whole, as one COM_QUERY.

After each step the runner sends ``\\! echo <marker>`` and reads until the marker: the CLI runs
under ``stdbuf -o0`` so its own output and the shell's echo arrive in order. A step whose marker
does not come within the read timeout is recorded as a hang and that client is killed.

What the CLI has no command for (server-side prepared statements, cursors, COM_CHANGE_USER,
COM_RESET_CONNECTION, COM_PING) is recorded as unsupported.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

READ_TIMEOUT = float(os.environ.get("RWPROXY_DIFF_READ_TIMEOUT", "5"))  # set by the harness
DELIMITER = "~~~"


class Client:
    """One ``mariadb`` process: a connection."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.counter = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "backslashreplace").rstrip("\n"))
        self.lines.put(None)

    def send(self, text: str) -> dict[str, Any]:
        """Send `text`, then a marker; the lines printed before the marker (or until exit/timeout)."""
        self.counter += 1
        marker = f"__STEP_END_{self.counter}__"
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((text + "\n" + f"\\! echo {marker}\n").encode("utf-8", "surrogateescape"))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it exited: its last words are still in the queue
        out: list[str] = []
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.kill()
                return {"lines": out, "hang": f"no reply within {READ_TIMEOUT}s; client killed"}
            if line is None:
                self.proc.wait()
                return {"lines": out, "exited": self.proc.returncode}
            if line == marker:
                return {"lines": out}
            out.append(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> dict[str, Any]:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=READ_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        return {"closed": True, "status": self.proc.returncode}


def strip_echo(lines: list[str]) -> list[str]:
    """Drop the CLI's echo of the statement (``-vv``): the block between two dashed lines."""
    out, i = [], 0
    while i < len(lines):
        if lines[i] == "--------------":
            j = i + 1
            while j < len(lines) and lines[j] != "--------------":
                j += 1
            i = j + 1
            continue
        out.append(lines[i])
        i += 1
    return [line for line in out if line != "Bye"]


class Runner:
    def __init__(self, args: argparse.Namespace, tmpdir: Path) -> None:
        self.a = args
        self.tmpdir = tmpdir
        self.clients: dict[str, Client] = {}
        self.thread_ids: dict[str, int] = {}
        self.mariadb = shutil.which("mariadb") or "mariadb"
        self.stdbuf = shutil.which("stdbuf")

    def emit(self, obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def connect(self, name: str, s: dict[str, Any]) -> dict[str, Any]:
        o = s.get("options", {})
        if o.get("handshake_collation"):
            return {"unsupported": "libmariadb does not send collation id 255"}
        cmd = [
            self.mariadb, "--no-defaults", f"--host={self.a.host}", f"--port={self.a.port}",
            f"--user={o.get('user', self.a.user)}", f"--password={o.get('password', self.a.password)}",
            "--table", "-vv", "--force", "--unbuffered", "--column-type-info", "--show-warnings", "--binary-as-hex",
            "--local-infile=1", f"--delimiter={DELIMITER}", f"--default-character-set={o.get('charset', 'utf8mb4')}",
        ]  # fmt: skip
        if o.get("ignore_space"):
            cmd.append("--ignore-spaces")
        if s.get("database"):
            cmd.append(f"--database={s['database']}")
        if self.stdbuf:  # unbuffered stdout: the CLI's lines and the marker's echo stay in order
            cmd = [self.stdbuf, "-o0", "-e0", *cmd]
        client = Client(cmd)
        res = client.send("\\s")
        text = "\n".join(res["lines"])
        m = re.search(r"Connection id:\s+(\d+)", text)
        if m is None:
            client.kill()
            return {"error": {"lines": [line for line in res["lines"] if line.startswith("ERROR")], "exited": res.get("exited")}}
        self.clients[name] = client
        self.thread_ids[name] = int(m.group(1))
        # The status block also shows ports, uptime and counters; keep what the client learned at login.
        keep = ("Server version:", "Server characterset:", "Db     characterset:", "Client characterset:", "Conn.  characterset:", "Current database:", "Current user:")
        return {"connected": True, "thread_id": int(m.group(1)), "status": [line for line in res["lines"] if line.startswith(keep)]}

    def query(self, client: Client, sql: str) -> dict[str, Any]:
        res = client.send(sql + DELIMITER)
        res["lines"] = strip_echo(res["lines"])
        return res

    def step(self, op: str, conn: str, s: dict[str, Any]) -> dict[str, Any]:
        if op == "sync":
            self.emit({"type": "barrier", "action": "sync"})
            if sys.stdin.readline().strip() != "ok":
                raise SystemExit("harness did not answer a barrier")
            return {}
        if op == "sleep":
            time.sleep(s["seconds"])
            return {}
        if op == "connect":
            return self.connect(conn, s)
        c = self.clients.get(conn)
        if c is None:
            return {"error": {"message": f"no open connection {conn!r}"}}
        file = str(self.tmpdir / "load.txt")
        if op == "query":
            return self.query(c, s["sql"].replace("{file}", file))
        if op == "load_data":
            (self.tmpdir / "load.txt").write_text(s["content"])
            return self.query(c, s["sql"].replace("{file}", file))
        if op == "kill":
            return self.query(c, s.get("sql", "KILL {id}").replace("{id}", str(self.thread_ids[s["target"]])))
        if op == "connection_id":
            res = self.query(c, "SELECT CONNECTION_ID() AS id")
            got = [line for line in res["lines"] if line.isdigit()]
            return {"CONNECTION_ID() equals the handshake's connection id": bool(got) and int(got[0]) == self.thread_ids[conn]}
        if op == "init_db":
            res = c.send(f"\\u {s['database']}")
            return {"lines": strip_echo(res["lines"])}
        if op == "close":
            del self.clients[conn]
            return c.close()
        if op in ("prepared", "cursor", "change_user", "reset_connection", "ping"):
            return {"unsupported": f"the mariadb CLI has no command for {op}"}
        return {"unsupported": f"unknown op {op!r}"}

    def run_scenario(self, sc: dict[str, Any]) -> None:
        for i, step in enumerate(sc["steps"]):
            conn = step.get("conn", "a")
            t0 = time.monotonic()
            out = self.step(step["op"], conn, step)
            self.emit({"type": "step", "scenario": sc["name"], "index": i, "op": step["op"], "conn": conn, "out": out,
                       "elapsed": round(time.monotonic() - t0, 4)})  # fmt: skip
        for name in list(self.clients):
            self.clients.pop(name).close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("scenarios", nargs="+", type=Path)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rwproxy-diff-cli-") as tmp:
        r = Runner(a, Path(tmp))
        for path in a.scenarios:
            r.run_scenario(json.loads(path.read_text()))
    r.emit({"type": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
