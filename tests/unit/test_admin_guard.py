"""admin.guard: what an admin client's SQL may do in the store's SQLite -- functions and tables by
allow-list, values and results bounded -- seen through ConfigStore.execute (no servers)."""

from __future__ import annotations

import resource

import pytest

from admin.guard import ALLOWED_FUNCTIONS
from admin.store import ConfigStore, StoreError
from proxy.config import parse_config

RAW = {
    "listeners": {"data": {"port": 6033}},
    "users": [{"username": "app", "password": "pw"}],
    "servers": [{"hostgroup_id": 0, "hostname": "127.0.0.1"}],
}


@pytest.fixture
def store() -> ConfigStore:
    s = ConfigStore(None)
    config = parse_config(RAW, "<t>")
    s.startup(config)
    s.attach_stats({"stats_mysql_global": lambda: (("Variable_Name", "Variable_Value"), [("Questions", "7")])})
    return s


def refused(store: ConfigStore, sql: str) -> StoreError:
    with pytest.raises(StoreError) as e:
        store.execute(sql)
    return e.value


@pytest.mark.parametrize(
    "sql,function",
    [
        ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer"),
        ("SELECT hex(fts3_tokenizer('simple'))", "fts3_tokenizer"),
        ("SELECT load_extension('/tmp/x.so')", "load_extension"),
        ("SELECT sqlite_log(1, 'forged')", "sqlite_log"),
        ("SELECT sqlite_compileoption_get(0)", "sqlite_compileoption_get"),
        ("SELECT fts5_source_id()", "fts5_source_id"),
        ("SELECT rtreenode(2, x'00')", "rtreenode"),
    ],
)
def test_functions_outside_the_dialect_are_refused(store, sql, function):
    e = refused(store, sql)
    assert (e.errno, e.sqlstate) == (1305, "42000")
    assert e.message.startswith(f"FUNCTION {function} is not available on the admin port")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM pragma_table_info('mysql_users')",
        "SELECT name FROM pragma_database_list",
        "SELECT * FROM dbstat",
        "SELECT sql FROM sqlite_stmt",
        "SELECT key FROM json_each('[1]')",
    ],
)
def test_virtual_tables_and_pragma_functions_are_refused(store, sql):
    for _ in range(2):  # the second time SQLite knows the table: the read itself is refused
        e = refused(store, sql)
        assert e.errno in (1142, 1227), e.message
        assert "are not available on the admin port" in e.message or "is not an admin table" in e.message or e.message.startswith("PRAGMA")


@pytest.mark.parametrize("sql", ["PRAGMA writable_schema = 1", "PRAGMA main.user_version = 5", "ATTACH DATABASE '/tmp/x.db' AS x"])
def test_pragma_and_attach_statements_are_refused(store, sql):
    e = refused(store, sql)
    assert e.errno == 1227


def test_the_dialect_still_works(store):
    rows = store.execute(
        "SELECT upper(username), length(password), coalesce(NULL, 1), printf('%05d', 42), json_extract('{\"a\":2}', '$.a'), "
        "round(sqrt(16)), date('2020-01-02'), typeof(randomblob(16)), group_concat(username) FROM mysql_users"
    ).rows
    assert rows == [("APP", 41, 1, "00042", 2, 4.0, "2020-01-02", "blob", "app")]  # the hash, not the password
    assert store.execute("SELECT Variable_Value FROM stats_mysql_global WHERE Variable_Name = 'Questions'").rows == [("7",)]
    assert store.execute("SELECT count(*) FROM stats.stats_mysql_global").rows == [(1,)]
    assert store.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT sum(x) FROM c").rows == [(15,)]
    assert store.execute("SELECT rank() OVER (ORDER BY hostgroup_id) FROM mysql_servers").rows == [(1,)]
    assert "sqlite_version" in ALLOWED_FUNCTIONS and "fts3_tokenizer" not in ALLOWED_FUNCTIONS


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT randomblob(200000000)",
        "SELECT length(zeroblob(200000000))",
        "SELECT length(replace(hex(randomblob(8000000)), 'A', hex(randomblob(64))))",
    ],
)
def test_huge_values_are_refused_before_they_are_built(store, sql):
    before = _rss_mib()
    e = refused(store, sql)
    assert (e.errno, e.sqlstate) == (1301, "HY000") and "limit of 16777216 bytes" in e.message
    assert _rss_mib() - before < 64


def test_printf_widths_stop_at_the_bound(store):
    before = _rss_mib()
    assert store.execute("SELECT length(printf('%.*c', 200000000, 'x'))").rows == [(None,)]  # SQLite gives up at the limit
    assert _rss_mib() - before < 64


def test_result_rows_are_capped(store):
    store.max_result_rows = 100
    e = refused(store, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) SELECT x FROM c")
    assert (e.errno, e.sqlstate) == (1104, "42000") and "100 rows ([admin] max_result_rows)" in e.message
    assert len(store.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) SELECT x FROM c").rows) == 100


def test_result_bytes_are_capped(store):
    store.max_result_bytes = 100_000
    e = refused(store, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) SELECT randomblob(10000) FROM c")
    assert e.errno == 1104 and "100000 bytes ([admin] max_result_bytes)" in e.message


def test_a_one_second_cte_is_stopped_at_the_statement_timeout(store):
    store.statement_timeout = 0.2
    e = refused(store, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
    assert e.errno == 3024
