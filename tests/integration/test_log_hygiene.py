"""Logs against a real proxy (issue 12, scope 7): a username with a newline cannot forge a log line
(data port and admin port), and a flood of 10,000 bad connections to the admin port writes a
bounded number of lines, with counts."""

from __future__ import annotations

import re
import socket
import struct
import time
from typing import Any

from tests.fuzz.wirefuzz import frame, handshake_response

FORGED = "2026-01-01 00:00:00,000 INFO rwproxy: session=1 client=127.0.0.1:1 user=admin logged in"


def _read_packet(sock: socket.socket) -> bytes:
    buf = b""
    while len(buf) < 4:
        chunk = sock.recv(4 - len(buf))
        if not chunk:
            return b""
        buf += chunk
    n = int.from_bytes(buf[:3], "little")
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            break
        body += chunk
    return body


def _bad_login(port: int, user: str, payload: bytes | None = None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        _read_packet(s)  # greeting
        s.sendall(frame(payload if payload is not None else handshake_response(user, b"\x01" * 20), 1))
        return _read_packet(s)


def _log_lines(proxy: Any) -> list[str]:
    return proxy.log_path.read_text(errors="replace").splitlines()


def test_a_username_with_a_newline_cannot_forge_a_log_line(start_proxy):
    proxy = start_proxy(admin=True)
    for port in (proxy.port, proxy.admin_port):
        err = _bad_login(port, "x\n" + FORGED + "\r\n\x1b[2J")
        assert err[:1] == b"\xff" and struct.unpack("<H", err[1:3])[0] == 1045
    deadline = time.monotonic() + 5
    while sum("access denied" in line for line in _log_lines(proxy)) < 2:
        assert time.monotonic() < deadline, proxy.log_tail()
        time.sleep(0.05)
    lines = _log_lines(proxy)
    assert not [line for line in lines if line.startswith("2026-01-01")], "a forged line reached the log"
    escaped = [line for line in lines if "user=x\\n2026-01-01 00:00:00,000 INFO rwproxy: session=1" in line]
    assert len(escaped) == 2 and all("\\r\\n\\x1b[2J" in line for line in escaped), escaped
    # every line of the log is a record (timestamp first) or a marked continuation
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
    assert all(stamp.match(line) or line.startswith("  | ") for line in lines if line), [l for l in lines if not stamp.match(l)][:5]


def test_a_flood_of_10000_bad_connections_writes_a_bounded_number_of_lines(start_proxy):
    # (The login throttle off: its delays and blocks are test_hostile_clients' subject; this one's
    # is the log lines of 10,000 bad connections.)
    proxy = start_proxy(admin=True, proxy_settings={"log_level": "info", "login_delay_after": 1_000_000, "max_connect_errors": 0})
    before = len(_log_lines(proxy))
    started = time.monotonic()
    for i in range(10_000):
        if i % 2:
            _bad_login(proxy.admin_port, f"intruder{i}")  # wrong password
        else:
            _bad_login(proxy.admin_port, "", payload=b"\x01\x02")  # a malformed handshake response
    took = time.monotonic() - started
    time.sleep(0.5)
    proxy.stop(timeout=10)  # flushes the last counts
    lines = _log_lines(proxy)[before:]
    flood = [line for line in lines if "admin session=" in line]
    windows = int(took // 10) + 2
    # two kinds of event, each at most 5 lines and one count per 10 s window
    assert len(flood) <= 2 * 6 * windows, (len(flood), took, flood[:20])
    counted = sum(int(m.group(1)) for line in flood if (m := re.search(r"\(repeated (\d+) times in the last 10 s\)", line)))
    assert counted + sum("(repeated " not in line for line in flood) == 10_000, (counted, len(flood))
    print(f"10,000 bad admin connections in {took:.1f}s: {len(flood)} log lines")


def test_admin_port_has_the_data_ports_backlog(start_proxy):
    import subprocess

    proxy = start_proxy(admin=True)
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    out = subprocess.run(["ss", "-Hltn", f"sport = :{proxy.admin_port}"], capture_output=True, text=True, check=True).stdout.split()
    data = subprocess.run(["ss", "-Hltn", f"sport = :{proxy.port}"], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[2]) == int(data[2]) == min(4096, somaxconn), (out, data)  # Send-Q of a listener: its backlog
