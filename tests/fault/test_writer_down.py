"""The writer unreachable, and a query rule aimed at an unreachable hostgroup.

With the monitor alone, a writer that died is SHUNNED, reads keep working and a write fails fast
with an error naming its hostgroup. The rest is the session side's (login while the writer is down,
statement kinds in the reader fallback, server-range error codes), asserted as strict xfail tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pymysql
import pytest

from proxy.sandbox import free_port

from .conftest import Admin, connector, launch, servers_toml


def test_a_write_routed_to_an_unreachable_hostgroup_is_refused_naming_it(fcluster, fproxy):
    """A rule sends INSERTs on ft.audit to hostgroup 5, whose only server does not answer."""
    c = fcluster
    c.primary.sql("CREATE TABLE IF NOT EXISTS ft.audit (id INT PRIMARY KEY)")
    c.wait_replicated()
    dead = free_port()
    proxy = fproxy(
        servers=[*servers_toml(c), {"hostgroup_id": 5, "hostname": "127.0.0.1", "port": dead, "comment": "nobody listens"}],
        extra_toml='[[query_rules]]\nrule_id = 1\nmatch_pattern = "^INSERT INTO ft\\\\.audit"\ndestination_hostgroup = 5\napply = true\n',
    )
    admin = Admin(proxy)
    try:
        admin.wait("hostgroup 5's server SHUNNED", lambda: admin.placement(dead) == [(5, "SHUNNED")], 5)
        conn = connector(proxy)()
        try:
            with conn.cursor() as cur:
                with pytest.raises(pymysql.err.MySQLError) as e:
                    cur.execute("INSERT INTO ft.audit VALUES (1)")
                code, message = e.value.args[0], str(e.value.args[1])
        finally:
            conn.close()
        c.wait_replicated()
        written = [s.name for s in c.servers if s.value("SELECT COUNT(*) FROM ft.audit") != "0"]
        assert written == [] and "hostgroup 5" in message and not 2000 <= code < 3000, (written, code, message)
    finally:
        admin.close()
        c.primary.sql("DELETE FROM ft.audit")


@pytest.fixture(scope="module")
def writer_down(fcluster, tmp_path_factory):
    """A proxy, a client session opened while the writer was up, then the writer SIGKILLed and SHUNNED."""
    c = fcluster
    # A statement for a hostgroup with no ONLINE server may wait for one (ProxySQL's
    # connect_timeout_server_max; [pool] acquire_timeout in the session layer): 1 s here.
    proxy = launch(c, tmp_path_factory.mktemp("writer-down"), "writer-down", monitor={"connect_timeout_server_max": 1000},
                   extra_toml="[pool]\nacquire_timeout = 1.0\n")
    admin = Admin(proxy)
    existing = connector(proxy)()
    try:
        admin.wait_checked(3)
        c.primary.kill()
        admin.wait("writer SHUNNED", lambda: admin.placement(c.primary.port) == [(0, "SHUNNED")], 5)
        yield proxy, existing
    finally:
        existing.close()
        admin.close()
        proxy.stop()
        c.primary.start()
        c.wait_replicated(timeout=30)


def test_with_the_writer_down_reads_go_on_and_a_write_fails_fast_naming_its_hostgroup(fcluster, writer_down):
    proxy, existing = writer_down
    replicas = {r.server_id for r in fcluster.replicas}
    with existing.cursor() as cur:
        for _ in range(5):
            cur.execute("SELECT @@server_id")
            assert int(cur.fetchone()[0]) in replicas
        t0 = time.monotonic()
        with pytest.raises(pymysql.err.MySQLError) as e:
            cur.execute("INSERT INTO ft.w (k, sid) VALUES ('writer-down', @@server_id)")
        took = time.monotonic() - t0
        assert "hostgroup 0" in str(e.value.args[1]), e.value.args
        assert took < 2.0  # the 1 s wait for a writer at most, never a hang
        cur.execute("SELECT @@server_id")  # and the session carries on
        assert int(cur.fetchone()[0]) in replicas


def test_with_the_writer_down_a_new_client_logs_in_and_reads(fcluster, writer_down):
    proxy, _ = writer_down
    conn = connector(proxy)()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@server_id")
            assert int(cur.fetchone()[0]) in {r.server_id for r in fcluster.replicas}
    finally:
        conn.close()


def test_the_mariadb_cli_shows_the_proxys_message_with_the_writer_down(writer_down):
    proxy, _ = writer_down
    cli = shutil.which("mariadb") or "mariadb"
    out = subprocess.run(
        [cli, "--no-defaults", "-h127.0.0.1", f"-P{proxy.port}", f"-u{proxy.user}", f"-p{proxy.password}", "--connect-timeout=5",
         "-e", "INSERT INTO ft.w (k, sid) VALUES ('cli', @@server_id)"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    m = re.search(r"ERROR (\d+)", out.stderr)
    assert out.returncode != 0 and m is not None, out
    assert not 2000 <= int(m.group(1)) < 3000 and "hostgroup 0" in out.stderr, out.stderr
