"""rules.digest: normalization, digests, hints, executable comments, and the never-raises property."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.digest import (
    Fingerprint,
    digest_hex,
    digest_text,
    fingerprint,
    prepare_for_parse,
    unwrap_comments,
)


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("SELECT c FROM sbtest1 WHERE id=5000", "SELECT C FROM SBTEST1 WHERE ID=?"),
        ("select c from sbtest1 where id = 5000;", "SELECT C FROM SBTEST1 WHERE ID=?"),
        ("  \n\tSELECT   1  ;  ; ", "SELECT ?"),
        ("SELECT 'a', \"b\", 'it''s', 'x\\'y' FROM t", "SELECT ?,?,?,? FROM T"),
        ("SELECT 1.5, .5, 1e5, 1.5e-3, 0x1F, 0b101, X'1F', x'1f', B'01', N'n', _utf8mb4'u'",
         "SELECT ?,?,?,?,?,?,?,?,?,?,?"),
        ("SELECT -1, - 2, a - 3, a-4, x = -5", "SELECT ?,?,A - ?,A-?,X=?"),
        ("SELECT * FROM t WHERE a BETWEEN -1 AND +2", "SELECT * FROM T WHERE A BETWEEN ? AND ?"),
        ("SELECT NULL, TRUE, FALSE", "SELECT NULL,TRUE,FALSE"),
        ("SELECT * FROM t1 JOIN t2 ON t1.a = t2.b", "SELECT * FROM T1 JOIN T2 ON T1.A=T2.B"),
        ("SELECT tbl2.col3, 1abc, t$1 FROM db1.tbl2", "SELECT TBL2.COL3,1ABC,T$1 FROM DB1.TBL2"),
        ("SELECT `My Col`, `x``y` FROM `Db`.`T 1`", "SELECT `My Col`,`x``y` FROM `Db`.`T 1`"),
        ("SELECT a /* c */ FROM t -- x\n WHERE b = 1 # y", "SELECT A FROM T WHERE B=?"),
        ("SELECT /*+ MAX_EXECUTION_TIME(10) */ a FROM t", "SELECT A FROM T"),
        ("SELECT COUNT(*) FROM t", "SELECT COUNT(*) FROM T"),
        ("SELECT ( a ) FROM t", "SELECT (A) FROM T"),
        ("SELECT 1 --1", "SELECT ? -?"),  # not a comment: 1 minus -1
        ("SELECT tëst FROM ü1", "SELECT TëST FROM ü1"),  # ASCII letters only
        ("SELECT * FROM straße", "SELECT * FROM STRAßE"),
        ("SELECT * FROM t WHERE id = ?", "SELECT * FROM T WHERE ID=?"),
        ("", ""),
        ("   ", ""),
        ("/* only */", ""),
    ],
)
def test_normalization(sql: str, text: str) -> None:
    assert fingerprint(sql).text == text


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM T WHERE ID IN (...)"),
        ("SELECT * FROM t WHERE id IN (1)", "SELECT * FROM T WHERE ID IN (...)"),
        ("SELECT * FROM t WHERE id in('a','b')", "SELECT * FROM T WHERE ID IN (...)"),
        ("SELECT * FROM t WHERE id NOT IN (1, -2)", "SELECT * FROM T WHERE ID NOT IN (...)"),
        ("SELECT * FROM t WHERE id IN (SELECT a FROM u)", "SELECT * FROM T WHERE ID IN (SELECT A FROM U)"),
        ("SELECT * FROM t WHERE id IN (a, 1)", "SELECT * FROM T WHERE ID IN (A,?)"),
        ("INSERT INTO t (a,b) VALUES (1,'x'),(2,'y'), (3, 'z')", "INSERT INTO T (A,B) VALUES (?,?),..."),
        ("INSERT INTO t VALUES (1, NOW()), (2, NOW())", "INSERT INTO T VALUES (?,NOW()),..."),
        ("INSERT INTO t VALUES (1)", "INSERT INTO T VALUES (?)"),
        ("INSERT INTO t VALUE (1), (2)", "INSERT INTO T VALUE (?),..."),
        ("INSERT INTO t VALUES (1, 2), (3, NULL)", "INSERT INTO T VALUES (?,?),(?,NULL)"),
    ],
)
def test_list_collapse(sql: str, text: str) -> None:
    assert fingerprint(sql).text == text


def test_in_lists_of_any_length_share_a_digest() -> None:
    a = fingerprint("SELECT * FROM t WHERE id IN (1, 2, 3)")
    b = fingerprint("SELECT * FROM t WHERE id IN (" + ", ".join(map(str, range(5000))) + ")")
    assert a == b


def test_bulk_inserts_of_any_row_count_share_a_digest() -> None:
    two = fingerprint("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')")
    many = fingerprint(
        "INSERT INTO t (a, b) VALUES " + ", ".join(f"({i}, 'v{i}')" for i in range(3000))
    )
    assert two.digest == many.digest


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SELECT c FROM sbtest1 WHERE id=1", "SELECT c FROM sbtest1 WHERE id=987654"),
        ("SELECT c FROM sbtest1 WHERE id=1", "select   c from sbtest1\nwhere id = 2 ;"),
        ("UPDATE t SET c='abc' WHERE id=1", "UPDATE t SET c=\"x'y\" WHERE id=-42"),
        ("SELECT * FROM t WHERE a = 1.5e3", "SELECT * FROM t WHERE a = 0x1F"),
        ("SELECT 1", "/* comment */ SELECT 2 -- trailing"),
        ("SELECT 1", "/* rwproxy:route=writer */ SELECT 1"),
        ("SET time_zone='+05:00'", "SET time_zone='+01:00'"),
    ],
)
def test_literal_varying_statements_share_a_digest(a: str, b: str) -> None:
    fa, fb = fingerprint(a), fingerprint(b)
    assert fa.text == fb.text
    assert fa.digest == fb.digest


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SELECT c FROM sbtest1 WHERE id=1", "SELECT c FROM sbtest2 WHERE id=1"),
        ("SELECT c FROM t WHERE id=1", "SELECT c FROM t WHERE k=1"),
        ("SELECT c FROM t WHERE id=1", "SELECT c FROM t WHERE id=1 FOR UPDATE"),
        ("SELECT * FROM t WHERE id IN (1,2)", "SELECT * FROM t WHERE id NOT IN (1,2)"),
        ("SELECT `a` FROM t", "SELECT `A` FROM t"),
        ("SELECT 1", "SELECT 1; SELECT 2"),
        ("SELECT 'x'", "SELECT 'x"),  # unterminated: the server rejects it
        ("SELECT * FROM t", "SELECT * FROM t /* unterminated"),
        ("SELECT 1", "SELECT /*! 1"),
        ("SELECT 1", "SELECT /*!50000 1 */ FOR UPDATE"),
        # the extent of the literal depends on sql_mode NO_BACKSLASH_ESCAPES
        ("SELECT 'a' , b -- '", "SELECT 'a\\' , b -- '"),
    ],
)
def test_structurally_different_statements_differ(a: str, b: str) -> None:
    assert fingerprint(a).digest != fingerprint(b).digest


def test_digest_is_blake2b_of_the_text_and_rendered_like_proxysql() -> None:
    fp = fingerprint("SELECT c FROM sbtest1 WHERE id=5000")
    expected = int.from_bytes(hashlib.blake2b(fp.text.encode(), digest_size=8).digest(), "big")
    assert fp.digest == expected == digest_text(fp.text)
    assert 0 <= fp.digest < 2**64
    h = digest_hex(fp.digest)
    assert h.startswith("0x") and len(h) == 18 and h[2:] == h[2:].upper()
    assert int(h, 16) == fp.digest
    assert digest_hex(0) == "0x0000000000000000"


def test_digest_is_stable_across_processes() -> None:
    sql = "SELECT c FROM sbtest1 WHERE id=5000"
    out = subprocess.run(
        [sys.executable, "-c", f"from rules.digest import fingerprint; print(fingerprint({sql!r}).digest)"],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )
    assert int(out.stdout) == fingerprint(sql).digest


def test_fingerprint_is_a_frozen_dataclass() -> None:
    fp = fingerprint("SELECT 1")
    assert isinstance(fp, Fingerprint)
    with pytest.raises(AttributeError):
        fp.text = "x"  # type: ignore[misc]


# -- executable comments and comment markers inside literals ---------------------------------------


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("/*!40101 SET NAMES utf8 */;", "SET NAMES UTF8"),
        ("/*!SET NAMES utf8*/", "SET NAMES UTF8"),
        ("/*M!100100 SELECT 1 */", "SELECT ?"),
        ("/*M! SELECT 1 */", "SELECT ?"),
        ("SELECT 1 /*!50000 FOR UPDATE */", "SELECT ? FOR UPDATE"),
        ("/*!50100 SELECT */ a FROM t", "SELECT A FROM T"),
        ("SELECT /*!50100 'x', */ 1", "SELECT ?,?"),
        ("/*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 DEFINER=`root`@`localhost` */ /*!50001 VIEW `v` AS select 1 */",
         "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` VIEW `v` AS SELECT ?"),
        ("SELECT 1 /*M plain comment starting with M */", "SELECT ?"),
    ],
)
def test_executable_comments_are_unwrapped(sql: str, text: str) -> None:
    assert fingerprint(sql).text == text


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT '/* not a comment */' FROM t",
        "SELECT '-- not a comment' FROM t",
        "SELECT '# not a comment' FROM t",
        'SELECT "/*!50000 not executable */" FROM t',
        "SELECT 'a;b' FROM t",
        "SELECT `a -- b` FROM t",
        "SELECT 'it''s /* still */ a string' FROM t",
        "SELECT 'esc\\' /* still */ a string' FROM t",
    ],
)
def test_comment_markers_inside_literals_are_not_comments(sql: str) -> None:
    fp = fingerprint(sql)
    assert fp.text.endswith("FROM T")
    assert "/*" not in fp.text.replace("`a -- b`", "")
    assert fp.hints == ()
    assert prepare_for_parse(sql) == (sql, None)


def test_unwrap_keeps_literals_and_case() -> None:
    sql = "/* hint */ SeLeCt 'It''s' /*!50000 , `Col` */ FROM t -- tail"
    assert unwrap_comments(sql) == "  SeLeCt 'It''s'   , `Col`   FROM t  "
    assert unwrap_comments("SELECT 1") == "SELECT 1"


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELECT 'abc", "unterminated string literal"),
        ("SELECT 'abc\\'", "unterminated string literal"),
        ('SELECT "abc', "unterminated string literal"),
        ("SELECT `abc", "unterminated quoted identifier"),
        ("SELECT 1 /* abc", "unterminated comment"),
        ("SELECT /*!50000 1", "unterminated executable comment"),
        ("SELECT 'abc'", None),
        ("SELECT ''", None),
        ("SELECT 1 -- no newline at the end", None),
        ("SELECT 'O\\'Brien' FROM t", None),  # without backslash escapes: a syntax error
        ("SELECT 'a\\\\' FROM t", None),  # an escaped backslash reads the same both ways
        ("SELECT 'a\\'; DELETE FROM t; -- '", "string literal with a backslash-escaped quote reads differently under sql_mode NO_BACKSLASH_ESCAPES"),
        ("SELECT /*M! 'x*/ 1; DELETE FROM t; -- ' */", "'*/' inside a string inside an executable comment"),
    ],
)
def test_prepare_for_parse_reports_unterminated_tokens(sql: str, problem: str | None) -> None:
    assert prepare_for_parse(sql)[1] == problem


# -- hints -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "hints"),
    [
        ("/* rwproxy:route=writer */ SELECT 1", (("route", "writer"),)),
        ("SELECT 1 /* rwproxy:route=reader */", (("route", "reader"),)),
        ("/* rwproxy: route = READER */ SELECT 1", (("route", "reader"),)),
        ("/* rwproxy:route=master */ SELECT 1", (("route", "writer"),)),
        ("/* rwproxy:route=reader;hostgroup=3 */ SELECT 1", (("route", "reader"), ("hostgroup", "3"))),
        ("-- rwproxy:route=writer\nSELECT 1", (("route", "writer"),)),
        ("/* hostgroup=2 */ SELECT 1", (("hostgroup", "2"),)),
        ("/* hostgroup=2;query_timeout=100 */ SELECT 1", (("hostgroup", "2"), ("query_timeout", "100"))),
        ("/* app=web; hostgroup=1 */ SELECT 1", (("hostgroup", "1"),)),
        ("SELECT 1 /* first */ /* hostgroup=2 */", ()),  # ProxySQL reads only the first comment
        ("-- maxscale route to master\nSELECT 1", (("route", "writer"),)),
        ("SELECT 1 -- maxscale route to slave", (("route", "reader"),)),
        ("SELECT 1 # maxscale route to server db-3", (("server", "db-3"),)),
        ("/* maxscale route to master */ SELECT 1", (("route", "writer"),)),
        ("SELECT '/* rwproxy:route=reader */'", ()),
        ("/*!50000 rwproxy:route=reader */ SELECT 1", ()),  # executable comments are SQL, not hints
        ("SELECT 1", ()),
    ],
)
def test_hints(sql: str, hints: tuple[tuple[str, str], ...]) -> None:
    assert fingerprint(sql).hints == hints


def test_hints_do_not_change_the_digest() -> None:
    assert fingerprint("/* rwproxy:route=reader */ SELECT 1").digest == fingerprint("SELECT 1").digest


# -- properties -----------------------------------------------------------------------------------

_SQLISH = st.sampled_from(
    [
        "SELECT", "INSERT", "INTO", "VALUES", "IN", "FROM", "WHERE", "a", "t1", "`x y`", "`q``q`",
        "'s'", "'it''s'", "'esc\\'d'", '"d"', "1", "-1", "- 2", "1.5e3", "0x1F", "x'41'", "_utf8'a'",
        "(", ")", ",", "=", "<", "!", "+", "*", ";", "NULL", "/* c */", "/* rwproxy:route=reader */",
        "-- c\n", "#c\n", "/*!50100 ", "/*M!100100 ", "*/", "@x", "@@y", "é", "表", "\n", "\t",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text())
def test_fingerprint_never_raises(sql: str) -> None:
    fp = fingerprint(sql)
    assert isinstance(fp.text, str)
    assert 0 <= fp.digest < 2**64
    assert fp.digest == digest_text(fp.text)
    prepare_for_parse(sql)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_SQLISH, max_size=25).map(" ".join))
def test_normalization_is_idempotent_and_drops_comments(sql: str) -> None:
    fp = fingerprint(sql)
    assert fingerprint(fp.text).text == fp.text
    assert "rwproxy" not in fp.text.lower()
    assert "  " not in re.sub(r"`[^`]*(?:``[^`]*)*`", "I", fp.text)  # whitespace runs collapsed


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=0, max_value=10**9),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
)
def test_literal_values_never_change_the_digest(i: int, j: int, s: str) -> None:
    quoted = "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"
    a = fingerprint(f"SELECT c FROM sbtest1 WHERE id = {i} AND k IN ({j}, {i}) AND pad = {quoted}")
    b = fingerprint("SELECT c FROM sbtest1 WHERE id = 1 AND k IN (2, 3) AND pad = 'x'")
    assert a.text == b.text
