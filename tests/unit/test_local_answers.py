"""proxy.local_answers.session_values: the session's own CONNECTION_ID() / ROW_COUNT() /
LAST_INSERT_ID(), with the column names a server would give (no servers needed)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from proxy.local_answers import session_values

SESSION = NS(id=7, commands=NS(row_count=3, insert_id=42), writer_hg=0, lending=NS(conns={}))


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT ROW_COUNT()", "SELECT CAST(0000000000000000000003 AS SIGNED) AS `ROW_COUNT()`"),
    ("select row_count(), 1", "select CAST(0000000000000000000003 AS SIGNED) AS `row_count()`, 1"),  # named as written
    ("SELECT LAST_INSERT_ID() FROM DUAL", "SELECT CAST(000000000000000000042 AS UNSIGNED) AS `LAST_INSERT_ID()` FROM DUAL"),
    ("SELECT CONNECTION_ID() AS id", "SELECT CAST(0000000007 AS UNSIGNED) AS id"),  # its own alias
    ("SELECT ROW_COUNT() rc", "SELECT CAST(0000000000000000000003 AS SIGNED) rc"),
    ("SELECT IF(ROW_COUNT() > 0, 1, 2)", "SELECT IF(CAST(0000000000000000000003 AS SIGNED) > 0, 1, 2)"),  # inside an expression
    ("SELECT CONCAT(CONNECTION_ID(), 'x')", "SELECT CONCAT(CAST(0000000007 AS UNSIGNED), 'x')"),
    ("INSERT INTO t VALUES (ROW_COUNT())", "INSERT INTO t VALUES (CAST(0000000000000000000003 AS SIGNED))"),
    ("SELECT 'ROW_COUNT()', `ROW_COUNT()` FROM t", "SELECT 'ROW_COUNT()', `ROW_COUNT()` FROM t"),  # strings and names
    ("SELECT 1", "SELECT 1"),
])
def test_session_values(sql: str, expected: str) -> None:
    assert session_values(sql, SESSION) == expected


def test_only_the_connection_id_in_passthrough_and_multi_statements() -> None:
    sql = "INSERT INTO t VALUES (1); SELECT ROW_COUNT(), CONNECTION_ID()"
    assert session_values(sql, SESSION, only_connection_id=True) == "INSERT INTO t VALUES (1); SELECT ROW_COUNT(), CAST(0000000007 AS UNSIGNED) AS `CONNECTION_ID()`"


def test_last_insert_id_is_asked_of_the_connection_that_made_it_while_held() -> None:
    held = NS(id=7, commands=NS(row_count=3, insert_id=42), writer_hg=0, lending=NS(conns={0: object()}))
    assert session_values("SELECT LAST_INSERT_ID()", held) == "SELECT LAST_INSERT_ID()"
