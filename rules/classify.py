"""Statement classification: what a statement is, whether a replica may run it, what it touches.

Theory of operation
-------------------
`classify(sql)` is called for every COM_QUERY / COM_STMT_PREPARE text. It is three lookups deep:

1. **raw-text LRU** (`RAW_CACHE_SIZE` entries, texts up to `RAW_CACHE_MAX_CHARS`): the same bytes
   again (ORMs, prepared texts, health checks) cost one dict hit.
2. **digest LRU** keyed by the normalized text of `rules.digest.fingerprint` (`DIGEST_CACHE_SIZE`
   entries): texts that differ only in literals (sysbench, any app that inlines values) share one
   analysis. This is sound because nothing in a `Classification` depends on literal values -- with
   one exception, `set_targets`, which carries the assigned values (``SET time_zone='+05:00'`` and
   ``'+01:00'`` share a digest). So any classification with set targets, and every ``SET``, is cached
   by raw text only. (Hints come from comments, which the digest ignores: a digest hit whose hints
   differ gets a copy carrying its own fingerprint.)
3. **analysis**: a leading-keyword fast path for statements whose meaning is in their first words
   (transaction control, SHOW, USE, LOCK/UNLOCK TABLES, HANDLER, XA, FLUSH, KILL, PREPARE/EXECUTE,
   CALL, LOAD DATA, GRANT, SET TRANSACTION ...); sqlglot (dialect "mysql") for everything whose meaning
   is in its structure (SELECT/WITH/TABLE/VALUES/INSERT/UPDATE/DELETE/REPLACE/SET/DO/EXPLAIN/DDL).
   The parser sees the text with comments removed and executable comments (``/*! */``, ``/*M! */``)
   unwrapped, because the server runs their content. A long statement whose normalized text is much
   shorter (bulk ``VALUES``, long ``IN`` lists) is parsed from the normalized text instead (``?`` for
   every literal), falling back to the original text if sqlglot rejects that. Multi-statement texts
   are split on top-level ``;`` and each statement is analysed; the result has the first statement's
   kind and the union of the others' facts.

Fail-safe invariant: ``read_only`` is True only when the statement is *proven* safe on a replica
(see docs/rules-interface.md, "What read_only means"). Anything the parser rejects, any statement
kind we do not model, any function we do not know (``exp.Anonymous``: could be a stored function
that writes), any multi-statement, locking read, SELECT ... INTO, user variable or session-affine
function makes it False. When sqlglot fails, the kind comes from the leading keyword and the
session-affecting flags (user variables, GET_LOCK, SQL_CALC_FOUND_ROWS ...) are read from the
normalized text instead, so pinning still works. ``parse_error`` also carries the other reasons a
text was not analysed: empty, unrecognized leading keyword, unterminated string/comment, a string
whose extent depends on sql_mode NO_BACKSLASH_ESCAPES (see rules.digest), too long, too deeply
nested. Whatever the reason, a classification with a parse_error is never read_only.

Conventions beyond docs/rules-interface.md, for rules.engine and the proxy:

* ``SetTarget.value is None`` means "cannot be replayed" (an expression, ``SET ROLE``, ``SET RESOURCE
  GROUP``); a SET with a parse_error has no targets at all. Either way the session's state is no
  longer known: pin it. Scope keywords carry over (``SET GLOBAL a=1, b=2`` sets two globals);
  ``@@x`` with no scope is SESSION; PERSIST / PERSIST_ONLY are GLOBAL.
* Transaction characteristics always come out as scope TRANSACTION with canonical names, whichever
  syntax set them: ``transaction_isolation`` (value ``'READ-COMMITTED'`` ...) and
  ``transaction_read_only`` (``1``/``0``) for the session, ``next_transaction_isolation`` /
  ``next_transaction_read_only`` for the one-shot forms (``SET TRANSACTION ...`` without SESSION, and
  ``SET @@transaction_isolation = ...`` without a scope, which both servers treat as next-transaction
  only). ``tx_isolation`` / ``tx_read_only`` are the same variables. Replay them with
  ``SET SESSION TRANSACTION ...`` syntax, which both MySQL and MariaDB accept. GLOBAL stays GLOBAL.
* ``ROLLBACK TO [SAVEPOINT] x`` is kind SAVEPOINT: it does not end the transaction.
* ``SET PASSWORD`` / ``SET DEFAULT ROLE`` are kind GRANT (account management, no session state);
  MariaDB's ``SET STATEMENT v=x FOR <stmt>`` is classified as ``<stmt>`` (the variables last one
  statement); MariaDB's ``ANALYZE <stmt>`` and every ``EXPLAIN <stmt>`` are kind EXPLAIN and carry
  the inner statement's facts (``ANALYZE UPDATE`` runs the UPDATE); ``EXPLAIN tbl`` is DESCRIBE.

sqlglot 30 quirks handled here (see `_prepare_tokens`): REPLACE and RENAME are swallowed whole by its
tokenizer (REPLACE is re-spelled INSERT before tokenizing); ``SELECT ... INTO OUTFILE/DUMPFILE/@a, @b``
and trailing ``INTO`` fail to parse (the INTO clause is cut out of the token stream and recorded);
SELECT modifiers after DISTINCT and INSERT/UPDATE/DELETE priority modifiers (LOW_PRIORITY, DELAYED,
HIGH_PRIORITY, QUICK, IGNORE after UPDATE/DELETE) fail (dropped); ``NEXT VALUE FOR s`` / ``PREVIOUS VALUE
FOR s`` fail (re-spelled NEXTVAL(s) / LASTVAL(s)); a bare ``VALUES (1,2)`` statement fails (wrapped as
``SELECT * FROM (VALUES ...) AS _v``); ``NOW()``, ``UNIX_TIMESTAMP()``, ``USER()`` and many other
built-ins parse as ``exp.Anonymous`` (hence `BUILTIN_FUNCTIONS`); ``SET SESSION TRANSACTION`` loses its
SESSION keyword (SET TRANSACTION is read by the fast path); ``FLUSH TABLES`` / ``SAVEPOINT a`` parse as
a column with an alias (the fast path never sends them to the parser); unsupported statements become
``exp.Command`` with a logged warning (that one message is filtered from the "sqlglot" logger).
Deeply nested text makes sqlglot recurse past Python's limit, so nesting deeper than
`MAX_PAREN_DEPTH` is not parsed (fail-safe).

Never raises for any ``str``; pure (no I/O); never imports proxy/ or admin/. Not thread-safe by design:
the proxy calls it from its event-loop thread (concurrent callers only risk a lost cache update).
"""

from __future__ import annotations

import enum
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, replace

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import Token, TokenType

from rules.digest import Fingerprint, fingerprint, prepare_for_parse

__all__ = [
    "Kind",
    "SetScope",
    "SetTarget",
    "Classification",
    "classify",
    "cache_info",
    "cache_clear",
    "SESSION_FUNCTIONS",
    "BUILTIN_FUNCTIONS",
]


class Kind(enum.Enum):
    SELECT = "SELECT"
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    REPLACE = "REPLACE"
    DDL = "DDL"
    SET = "SET"
    SHOW = "SHOW"
    DESCRIBE = "DESCRIBE"
    EXPLAIN = "EXPLAIN"
    USE = "USE"
    BEGIN = "BEGIN"
    COMMIT = "COMMIT"
    ROLLBACK = "ROLLBACK"
    SAVEPOINT = "SAVEPOINT"
    RELEASE_SAVEPOINT = "RELEASE_SAVEPOINT"
    CALL = "CALL"
    LOCK_TABLES = "LOCK_TABLES"
    UNLOCK_TABLES = "UNLOCK_TABLES"
    PREPARE = "PREPARE"
    EXECUTE = "EXECUTE"
    DEALLOCATE = "DEALLOCATE"
    LOAD_DATA = "LOAD_DATA"
    DO = "DO"
    HANDLER = "HANDLER"
    XA = "XA"
    GRANT = "GRANT"
    ANALYZE = "ANALYZE"
    FLUSH = "FLUSH"
    KILL = "KILL"
    OTHER = "OTHER"


class SetScope(enum.Enum):
    SESSION = "SESSION"
    GLOBAL = "GLOBAL"
    USER = "USER"
    NAMES = "NAMES"
    CHARSET = "CHARSET"
    TRANSACTION = "TRANSACTION"


@dataclass(frozen=True, slots=True)
class SetTarget:
    scope: SetScope
    name: str
    value: str | None
    collation: str | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    kind: Kind
    read_only: bool
    locking_read: bool
    select_into: str | None
    session_functions: frozenset[str]
    reads_user_vars: bool
    assigns_user_vars: bool
    temp_table: str | None
    calc_found_rows: bool
    tables_read: frozenset[str]
    tables_written: frozenset[str]
    set_targets: tuple[SetTarget, ...]
    txn_read_only: bool | None
    multi_statement: bool
    parse_error: str | None
    fingerprint: Fingerprint
    # About the statement before it (SHOW WARNINGS / ERRORS, GET DIAGNOSTICS, @@warning_count): its
    # answer lives on the connection that ran the previous statement.
    diagnostics: bool = False
    # A read whose answer is about the server it runs on, not the data: global variables
    # (@@global.x, @@port, @@read_only...) and information_schema (which a replica may not have
    # caught up on after DDL). Routed to the writer by default, as a client expects of "the server".
    server_specific: bool = False
    # Its meaning depends on the client session, not on the server connection that runs it: it
    # names connection ids (KILL, SHOW PROCESSLIST), asks for CONNECTION_ID(), ROW_COUNT(),
    # LAST_INSERT_ID(), @@last_gtid, or sets the proxy's rwproxy_min_gtid. A proxy that multiplexes
    # answers these (in part) from the client session.
    client_session: bool = False


# -- function knowledge --------------------------------------------------------------------------

# Functions whose result depends on (or which change) state private to one server connection.
SESSION_FUNCTIONS = frozenset(
    {
        "GET_LOCK",
        "RELEASE_LOCK",
        "RELEASE_ALL_LOCKS",
        "IS_USED_LOCK",
        "IS_FREE_LOCK",
        "LAST_INSERT_ID",
        "FOUND_ROWS",
        "ROW_COUNT",
        "NEXTVAL",
        "SETVAL",
        "LASTVAL",
    }
)

# MySQL/MariaDB built-in functions that neither write nor depend on connection state. Only names
# sqlglot leaves as exp.Anonymous are looked up here (functions sqlglot models -- CONCAT, COUNT,
# COALESCE, DATE_FORMAT ... -- are known by construction). An unqualified call resolves to the
# built-in even when a stored function of the same name exists, so a name here is safe; anything
# else (stored functions, loadable functions, db.f()) may write and routes to the writer.
# Deliberately absent: SESSION_FUNCTIONS, CONNECTION_ID, LOAD_FILE, MASTER_POS_WAIT, SOURCE_POS_WAIT,
# MASTER_GTID_WAIT, WAIT_FOR_EXECUTED_GTID_SET, BINLOG_GTID_POS, PS_THREAD_ID, PS_CURRENT_THREAD_ID,
# the WSREP_* functions: their answer is about one particular server or connection.
BUILTIN_FUNCTIONS = frozenset(
    """
    ABS ACOS ADDDATE ADDTIME ADD_MONTHS AES_DECRYPT AES_ENCRYPT ANY_VALUE ASCII ASIN ATAN ATAN2 AVG
    BENCHMARK BIN BINARY BIN_TO_UUID BIT_AND BIT_COUNT BIT_LENGTH BIT_OR BIT_XOR CAST CEIL CEILING
    CHAR CHARACTER_LENGTH CHARSET CHAR_LENGTH CHR COALESCE COERCIBILITY COLLATION COLUMN_ADD
    COLUMN_CHECK COLUMN_CREATE COLUMN_DELETE COLUMN_EXISTS COLUMN_GET COLUMN_JSON COLUMN_LIST
    COMPRESS CONCAT CONCAT_WS CONV CONVERT CONVERT_TZ COS COT COUNT CRC32 CRC32C CUME_DIST CURDATE
    CURRENT_DATE CURRENT_ROLE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURTIME DATABASE DATE
    DATEDIFF DATE_ADD DATE_FORMAT DATE_SUB DAY DAYNAME DAYOFMONTH DAYOFWEEK DAYOFYEAR DECODE
    DECODE_ORACLE DEFAULT DEGREES DENSE_RANK DES_DECRYPT DES_ENCRYPT ELT ENCODE ENCRYPT EXP
    EXPORT_SET EXTRACT EXTRACTVALUE FIELD FIND_IN_SET FIRST_VALUE FLOOR FORMAT FORMAT_BYTES
    FORMAT_PICO_TIME FROM_BASE64 FROM_DAYS FROM_UNIXTIME GEOMETRYCOLLECTION GET_FORMAT GREATEST
    GROUPING GROUP_CONCAT GTID_SUBSET GTID_SUBTRACT HEX HOUR ICU_VERSION IF IFNULL INET6_ATON
    INET6_NTOA INET_ATON INET_NTOA INSERT INSTR INTERVAL ISNULL IS_IPV4 IS_IPV4_COMPAT
    IS_IPV4_MAPPED IS_IPV6 IS_UUID JSON_ARRAY JSON_ARRAYAGG JSON_ARRAY_APPEND JSON_ARRAY_INSERT
    JSON_ARRAY_INTERSECT JSON_COMPACT JSON_CONTAINS JSON_CONTAINS_PATH JSON_DEPTH JSON_DETAILED
    JSON_EQUALS JSON_EXISTS JSON_EXTRACT JSON_INSERT JSON_KEYS JSON_KEY_VALUE JSON_LENGTH
    JSON_LOOSE JSON_MERGE JSON_MERGE_PATCH JSON_MERGE_PRESERVE JSON_NORMALIZE JSON_OBJECT
    JSON_OBJECTAGG JSON_OBJECT_FILTER_KEYS JSON_OBJECT_TO_ARRAY JSON_OVERLAPS JSON_PRETTY
    JSON_QUERY JSON_QUOTE JSON_REMOVE JSON_REPLACE JSON_SCHEMA_VALID JSON_SCHEMA_VALIDATION_REPORT
    JSON_SEARCH JSON_SET JSON_STORAGE_FREE JSON_STORAGE_SIZE JSON_TABLE JSON_TYPE JSON_UNQUOTE
    JSON_VALID JSON_VALUE KDF LAG LAST_DAY LAST_VALUE LCASE LEAD LEAST LEFT LENGTH LENGTHB
    LINESTRING LN LOCALTIME LOCALTIMESTAMP LOCATE LOG LOG10 LOG2 LOWER LPAD LTRIM MAKEDATE
    MAKETIME MAKE_SET MATCH MAX MBRCONTAINS MBRCOVEREDBY MBRCOVERS MBRDISJOINT MBREQUALS
    MBRINTERSECTS MBROVERLAPS MBRTOUCHES MBRWITHIN MD5 MEDIAN MICROSECOND MID MIN MINUTE MOD MONTH
    MONTHNAME MULTILINESTRING MULTIPOINT MULTIPOLYGON NATURAL_SORT_KEY NOW NTH_VALUE NTILE
    NULLIF NVL NVL2 OCT OCTET_LENGTH OLD_PASSWORD ORD PASSWORD PERCENTILE_CONT PERCENTILE_DISC
    PERCENT_RANK PERIOD_ADD PERIOD_DIFF PI POINT POLYGON POSITION POW POWER QUARTER QUOTE RADIANS
    RAND RANDOM_BYTES RANK REGEXP_INSTR REGEXP_LIKE REGEXP_REPLACE REGEXP_SUBSTR REPEAT REPLACE
    REVERSE RIGHT ROLES_GRAPHML ROUND ROW ROW_NUMBER RPAD RTRIM SCHEMA SECOND SEC_TO_TIME SESSION_USER
    SFORMAT SHA SHA1 SHA2 SIGN SIN SLEEP SOUNDEX SPACE SQRT STATEMENT_DIGEST STATEMENT_DIGEST_TEXT
    STD STDDEV STDDEV_POP STDDEV_SAMP STRCMP STR_TO_DATE ST_AREA ST_ASBINARY ST_ASGEOJSON
    ST_ASTEXT ST_ASWKB ST_ASWKT ST_BUFFER ST_CENTROID ST_CONTAINS ST_CONVEXHULL ST_CROSSES
    ST_DIFFERENCE ST_DIMENSION ST_DISJOINT ST_DISTANCE ST_DISTANCE_SPHERE ST_ENDPOINT ST_ENVELOPE
    ST_EQUALS ST_GEOMETRYFROMTEXT ST_GEOMETRYTYPE ST_GEOMFROMGEOJSON ST_GEOMFROMTEXT
    ST_GEOMFROMWKB ST_INTERSECTION ST_INTERSECTS ST_ISEMPTY ST_ISVALID ST_LATITUDE ST_LENGTH
    ST_LINEFROMTEXT ST_LONGITUDE ST_MAKEENVELOPE ST_NUMPOINTS ST_OVERLAPS ST_POINTFROMTEXT
    ST_POINTN ST_POLYFROMTEXT ST_SIMPLIFY ST_SRID ST_STARTPOINT ST_SYMDIFFERENCE ST_TOUCHES
    ST_TRANSFORM ST_UNION ST_VALIDATE ST_WITHIN ST_X ST_Y SUBDATE SUBSTR SUBSTRING
    SUBSTRING_INDEX SUBTIME SUM SYSDATE SYSTEM_USER SYS_GUID TAN TIME TIMEDIFF TIMESTAMP
    TIMESTAMPADD TIMESTAMPDIFF TIME_FORMAT TIME_TO_SEC TO_BASE64 TO_CHAR TO_DAYS TO_SECONDS TRIM
    TRUNCATE UCASE UNCOMPRESS UNCOMPRESSED_LENGTH UNHEX UNIX_TIMESTAMP UPDATEXML UPPER USER
    UTC_DATE UTC_TIME UTC_TIMESTAMP UUID UUID_SHORT UUID_TO_BIN VALIDATE_PASSWORD_STRENGTH VALUES
    VARIANCE VAR_POP VAR_SAMP VERSION WEEK WEEKDAY WEEKOFYEAR WEIGHT_STRING YEAR YEARWEEK
    """.split()
)

# -- caches --------------------------------------------------------------------------------------

RAW_CACHE_SIZE = 10_000
RAW_CACHE_MAX_CHARS = 4096  # longer texts are not kept by raw text (memory bound: ~40 MB worst case)
DIGEST_CACHE_SIZE = 10_000
DIGEST_CACHE_MAX_CHARS = 16_384

_raw: OrderedDict[str, Classification] = OrderedDict()
_by_digest: OrderedDict[str, Classification] = OrderedDict()
_raw_hits = 0
_digest_hits = 0
_misses = 0


def classify(sql: str) -> Classification:
    """Classify one COM_QUERY text (possibly several statements). Cached; never raises."""
    global _raw_hits, _digest_hits, _misses
    c = _raw.get(sql)
    if c is not None:
        _raw_hits += 1
        try:
            _raw.move_to_end(sql)
        except KeyError:  # evicted meanwhile by another thread
            pass
        return c
    fp = fingerprint(sql)
    key = fp.text
    c = _by_digest.get(key)
    if c is not None:
        _digest_hits += 1
        try:
            _by_digest.move_to_end(key)
        except KeyError:
            pass
        if c.fingerprint.hints != fp.hints:
            c = replace(c, fingerprint=fp)
    else:
        _misses += 1
        c = _analyze(sql, fp)
        if (
            not c.set_targets
            and c.kind is not Kind.SET
            and len(key) <= DIGEST_CACHE_MAX_CHARS
            and (c.parse_error is None or len(sql) <= MAX_PARSE_CHARS)
        ):
            _by_digest[key] = c
            if len(_by_digest) > DIGEST_CACHE_SIZE:
                _evict(_by_digest)
    if len(sql) <= RAW_CACHE_MAX_CHARS:
        _raw[sql] = c
        if len(_raw) > RAW_CACHE_SIZE:
            _evict(_raw)
    return c


def _evict(cache: OrderedDict[str, Classification]) -> None:
    try:
        cache.popitem(last=False)
    except KeyError:
        pass


def cache_info() -> dict[str, int]:
    """Counters for metrics: hits = raw + digest hits; misses = full analyses; size = raw entries."""
    return {
        "hits": _raw_hits + _digest_hits,
        "misses": _misses,
        "size": len(_raw),
        "maxsize": RAW_CACHE_SIZE,
        "raw_hits": _raw_hits,
        "digest_hits": _digest_hits,
        "digest_size": len(_by_digest),
        "digest_maxsize": DIGEST_CACHE_SIZE,
    }


def cache_clear() -> None:
    """Forget every cached classification and reset the counters (tests, config reloads)."""
    global _raw_hits, _digest_hits, _misses
    _raw.clear()
    _by_digest.clear()
    _raw_hits = _digest_hits = _misses = 0


# -- analysis ------------------------------------------------------------------------------------

MAX_PAREN_DEPTH = 64  # deeper nesting is not handed to sqlglot (it recurses per level)
MAX_PARSE_CHARS = 16_384  # longer statements are always parsed from their normalized text
MAX_REDUCED_PARSE_CHARS = 65_536  # ... and not at all when even that is longer
MAX_UNCONDITIONED_JOINS = 10  # JOINs without ON/USING in a row beyond which a text is not parsed (~5 ms at 10)

_READ_KINDS = frozenset({Kind.SELECT, Kind.DESCRIBE, Kind.EXPLAIN, Kind.DO})


class _Facts:
    """Mutable accumulator for one statement; frozen into a Classification at the end."""

    __slots__ = (
        "kind",
        "maybe_read",
        "locking_read",
        "select_into",
        "session_functions",
        "reads_user_vars",
        "assigns_user_vars",
        "temp_table",
        "calc_found_rows",
        "tables_read",
        "tables_written",
        "set_targets",
        "txn_read_only",
        "parse_error",
        "unknown_function",
        "writes",
        "compound",
    )

    def __init__(self, kind: Kind = Kind.OTHER) -> None:
        self.kind = kind
        self.maybe_read = False  # the analyser recognised a read-shaped statement
        self.locking_read = False
        self.select_into: str | None = None
        self.session_functions: set[str] = set()
        self.reads_user_vars = False
        self.assigns_user_vars = False
        self.temp_table: str | None = None
        self.calc_found_rows = False
        self.tables_read: set[str] = set()
        self.tables_written: set[str] = set()
        self.set_targets: list[SetTarget] = []
        self.txn_read_only: bool | None = None
        self.parse_error: str | None = None
        self.unknown_function = False
        self.writes = False
        self.compound = False

    def read_only(self) -> bool:
        return (
            self.maybe_read
            and self.kind in _READ_KINDS
            and self.parse_error is None
            and not self.locking_read
            and self.select_into is None
            and not self.session_functions
            and not self.reads_user_vars
            and not self.assigns_user_vars
            and not self.calc_found_rows
            and not self.unknown_function
            and not self.writes
        )

    def absorb(self, other: _Facts) -> None:
        """Merge the facts of a later statement of the same text (multi-statement)."""
        self.locking_read |= other.locking_read
        self.select_into = self.select_into or other.select_into
        self.session_functions |= other.session_functions
        self.reads_user_vars |= other.reads_user_vars
        self.assigns_user_vars |= other.assigns_user_vars
        if other.temp_table == "CREATE" or self.temp_table is None:
            self.temp_table = other.temp_table or self.temp_table
        self.calc_found_rows |= other.calc_found_rows
        self.tables_read |= other.tables_read
        self.tables_written |= other.tables_written
        self.set_targets.extend(other.set_targets)
        if self.txn_read_only is None:
            self.txn_read_only = other.txn_read_only
        self.parse_error = self.parse_error or other.parse_error
        self.unknown_function |= other.unknown_function
        self.writes |= other.writes


def _analyze(sql: str, fp: Fingerprint) -> Classification:
    try:
        text, problem = prepare_for_parse(sql)
        ftext = fp.text
        if problem is not None:
            # the server rejects it; classify by keyword for the record, route fail-safe
            f = _Facts(_kind_from_keyword(ftext))
            f.parse_error = problem
            _text_heuristics(ftext, f)
            multi = len(_split_statements(text)) > 1
        elif not ftext or not text.strip(" \t\r\n\f\v;"):
            f = _Facts()
            f.parse_error = "empty statement"
            multi = False
        else:
            first = _COMPOUND.match(ftext)
            pieces = [text] if first is not None else _split_statements(text)
            multi = len(pieces) > 1
            if not multi:
                f = _analyze_statement(text, ftext, 0)
                if first is not None:
                    f.compound = True
            else:
                f = _analyze_statement(pieces[0], fingerprint(pieces[0]).text, 0)
                for piece in pieces[1:]:
                    f.absorb(_analyze_statement(piece, fingerprint(piece).text, 0))
        read_only = f.read_only() and not multi
    except Exception as e:  # noqa: BLE001 -- a bug or a sqlglot surprise: fail safe, never fail the query
        f = _Facts(_kind_from_keyword(fp.text))
        f.parse_error = f"classifier error: {type(e).__name__}: {e}"[:300]
        read_only = False
        multi = ";" in fp.text
    return Classification(
        kind=f.kind,
        read_only=read_only,
        locking_read=f.locking_read,
        select_into=f.select_into,
        session_functions=frozenset(f.session_functions),
        reads_user_vars=f.reads_user_vars,
        assigns_user_vars=f.assigns_user_vars,
        temp_table=f.temp_table,
        calc_found_rows=f.calc_found_rows,
        tables_read=frozenset(f.tables_read),
        tables_written=frozenset(f.tables_written),
        set_targets=tuple(f.set_targets),
        txn_read_only=f.txn_read_only,
        multi_statement=multi,
        parse_error=f.parse_error,
        fingerprint=fp,
        diagnostics=_DIAGNOSTICS.search(fp.text) is not None,
        server_specific=_SERVER_SPECIFIC.search(fp.text) is not None or any(t.startswith("information_schema.") for t in f.tables_read),
        client_session=_CLIENT_SESSION.search(fp.text) is not None,
    )


# On the normalized (upper-case) text. See Classification.diagnostics / server_specific.
_DIAGNOSTICS = re.compile(
    r"^SHOW (?:COUNT\(\*\) ?)?(?:WARNINGS|ERRORS)\b|^GET (?:CURRENT |STACKED )?DIAGNOSTICS\b|@@(?:SESSION\.)?(?:WARNING_COUNT|ERROR_COUNT)\b"
)
_CLIENT_SESSION = re.compile(
    r"(?:^|; ?)KILL\b|^SHOW (?:FULL )?PROCESSLIST\b|\b(?:CONNECTION_ID|ROW_COUNT|LAST_INSERT_ID) ?\( ?\)"
    r"|@@(?:SESSION\.)?LAST_GTID\b|^SET (?:SESSION |@@SESSION\.|@@)?RWPROXY_MIN_GTID\b"
)
_SERVER_SPECIFIC = re.compile(r"@@GLOBAL\.|@@(?:PORT|READ_ONLY|SUPER_READ_ONLY|INNODB_READ_ONLY|HOSTNAME|SOCKET|DATADIR|VERSION_COMPILE_\w+)\b")


# Statement text splitting on top-level ';' (strings and quoted identifiers skipped).
_SPLIT = re.compile(
    r"""'[^'\\]*(?:(?:\\.|'')[^'\\]*)*(?:'|\Z)|"[^"\\]*(?:(?:\\.|"")[^"\\]*)*(?:"|\Z)|`[^`]*(?:``[^`]*)*(?:`|\Z)|;""",
    re.S,
)


def _split_statements(text: str) -> list[str]:
    if ";" not in text:
        return [text]
    pieces = []
    start = 0
    for m in _SPLIT.finditer(text):
        if m.group() == ";":
            pieces.append(text[start : m.start()])
            start = m.end()
    pieces.append(text[start:])
    return [p for p in pieces if p.strip(" \t\r\n\f\v")]


# Statements that contain ';' but are one statement to the server: stored-program definitions and
# MariaDB's stand-alone compound statements.
_COMPOUND = re.compile(
    r"(?:CREATE (?:OR REPLACE )?(?:DEFINER ?=\s?\S+ )?(?:AGGREGATE )?(?:PROCEDURE|FUNCTION|TRIGGER|EVENT|PACKAGE)\b"
    r"|ALTER (?:DEFINER ?=\s?\S+ )?EVENT\b"
    r"|BEGIN NOT ATOMIC\b|(?:IF|CASE|LOOP|REPEAT|WHILE|FOR)\b|[\w`]+ ?: ?(?:BEGIN|LOOP|REPEAT|WHILE|FOR)\b)"
)

_FIRST_WORD = re.compile(r"[(\s]*([A-Z_]+)")


def _kind_from_keyword(ftext: str) -> Kind:
    m = _FIRST_WORD.match(ftext)
    if m is None:
        return Kind.OTHER
    return _KEYWORD_KIND.get(m.group(1), Kind.OTHER)


_KEYWORD_KIND = {
    "SELECT": Kind.SELECT,
    "WITH": Kind.SELECT,
    "TABLE": Kind.SELECT,
    "VALUES": Kind.SELECT,
    "INSERT": Kind.INSERT,
    "UPDATE": Kind.UPDATE,
    "DELETE": Kind.DELETE,
    "REPLACE": Kind.REPLACE,
    "CREATE": Kind.DDL,
    "ALTER": Kind.DDL,
    "DROP": Kind.DDL,
    "TRUNCATE": Kind.DDL,
    "RENAME": Kind.DDL,
    "SET": Kind.SET,
    "SHOW": Kind.SHOW,
    "DESCRIBE": Kind.DESCRIBE,
    "DESC": Kind.DESCRIBE,
    "EXPLAIN": Kind.EXPLAIN,
    "USE": Kind.USE,
    "BEGIN": Kind.BEGIN,
    "START": Kind.BEGIN,
    "COMMIT": Kind.COMMIT,
    "ROLLBACK": Kind.ROLLBACK,
    "SAVEPOINT": Kind.SAVEPOINT,
    "RELEASE": Kind.RELEASE_SAVEPOINT,
    "CALL": Kind.CALL,
    "LOCK": Kind.LOCK_TABLES,
    "UNLOCK": Kind.UNLOCK_TABLES,
    "PREPARE": Kind.PREPARE,
    "EXECUTE": Kind.EXECUTE,
    "DEALLOCATE": Kind.DEALLOCATE,
    "LOAD": Kind.LOAD_DATA,
    "DO": Kind.DO,
    "HANDLER": Kind.HANDLER,
    "XA": Kind.XA,
    "GRANT": Kind.GRANT,
    "REVOKE": Kind.GRANT,
    "ANALYZE": Kind.ANALYZE,
    "FLUSH": Kind.FLUSH,
    "KILL": Kind.KILL,
}

# Leading keywords of real MySQL/MariaDB statements we do not model further (kind OTHER, writer,
# no parse error). Anything else is reported as unrecognized.
_OTHER_STATEMENTS = frozenset(
    """
    BACKUP BINLOG CACHE CHANGE CHECK CHECKSUM CLONE CLOSE DECLARE FETCH GET HELP IMPORT INSTALL
    ITERATE LEAVE OPEN OPTIMIZE PURGE REPAIR RESET RESIGNAL RESTART RETURN SHUTDOWN SIGNAL STOP
    UNINSTALL IF CASE LOOP REPEAT WHILE FOR
    """.split()
)

_IDENT = r"(?:`[^`]*(?:``[^`]*)*`|[^\s.,();`=]+)"
_TABLE_REF = re.compile(rf"({_IDENT})(?:\.({_IDENT}))?")


def _table_from_text(m: re.Match[str]) -> str:
    a, b = m.group(1), m.group(2)
    a = a[1:-1].replace("``", "`") if a.startswith("`") else a
    if b is None:
        return a.lower()
    b = b[1:-1].replace("``", "`") if b.startswith("`") else b
    return f"{a}.{b}".lower()


def _analyze_statement(text: str, ftext: str, depth: int) -> _Facts:
    """Classify one statement. `text`: comment-free original text; `ftext`: its normalized text."""
    m = _FIRST_WORD.match(ftext)
    word = m.group(1) if m is not None else ""
    handler = _HANDLERS.get(word)
    if handler is not None:
        return handler(text, ftext, depth)
    f = _Facts(Kind.OTHER)
    if _COMPOUND.match(ftext):
        f.compound = True
    elif word not in _OTHER_STATEMENTS:
        shown = ftext[:40]
        f.parse_error = f"unrecognized statement: {shown!r}"
    return f


# -- fast-path handlers (leading keywords) -------------------------------------------------------


def _simple(kind: Kind):
    def handler(text: str, ftext: str, depth: int) -> _Facts:
        return _Facts(kind)

    return handler


def _h_begin(text: str, ftext: str, depth: int) -> _Facts:
    if ftext in ("BEGIN", "BEGIN WORK"):
        return _Facts(Kind.BEGIN)
    f = _Facts(Kind.OTHER)  # BEGIN NOT ATOMIC ... END (MariaDB compound statement)
    f.compound = True
    return f


_START_TXN = re.compile(r"START TRANSACTION\b ?(.*)$")


def _h_start(text: str, ftext: str, depth: int) -> _Facts:
    m = _START_TXN.match(ftext)
    if m is None:  # START SLAVE / REPLICA / GROUP_REPLICATION
        return _Facts(Kind.OTHER)
    f = _Facts(Kind.BEGIN)
    modes = m.group(1)
    if "READ ONLY" in modes:
        f.txn_read_only = True
    elif "READ WRITE" in modes:
        f.txn_read_only = False
    return f


_ROLLBACK_TO = re.compile(r"ROLLBACK (?:WORK )?TO\b")


def _h_rollback(text: str, ftext: str, depth: int) -> _Facts:
    # ROLLBACK TO SAVEPOINT keeps the transaction open: report it as a savepoint operation so
    # nothing mistakes it for the end of the transaction.
    if _ROLLBACK_TO.match(ftext):
        return _Facts(Kind.SAVEPOINT)
    return _Facts(Kind.ROLLBACK)


def _h_release(text: str, ftext: str, depth: int) -> _Facts:
    if ftext.startswith("RELEASE SAVEPOINT"):
        return _Facts(Kind.RELEASE_SAVEPOINT)
    return _Facts(Kind.OTHER)


_LOCK_TABLES = re.compile(r"LOCK (?:TABLES?) (.*)$", re.S)


def _h_lock(text: str, ftext: str, depth: int) -> _Facts:
    m = _LOCK_TABLES.match(ftext)
    if m is None:  # LOCK INSTANCE FOR BACKUP, LOCK BINLOG ...
        return _Facts(Kind.OTHER)
    f = _Facts(Kind.LOCK_TABLES)
    for item in m.group(1).split(","):
        ref = _TABLE_REF.search(item)
        if ref is None:
            continue
        name = _table_from_text(ref)
        if " WRITE" in item.upper():
            f.tables_written.add(name)
        else:
            f.tables_read.add(name)
    return f


def _h_unlock(text: str, ftext: str, depth: int) -> _Facts:
    if ftext.startswith(("UNLOCK TABLES", "UNLOCK TABLE")):
        return _Facts(Kind.UNLOCK_TABLES)
    return _Facts(Kind.OTHER)


_HANDLER_TABLE = re.compile(rf"HANDLER ({_IDENT}(?:\.{_IDENT})?) (OPEN|READ|CLOSE)\b")


def _h_handler(text: str, ftext: str, depth: int) -> _Facts:
    f = _Facts(Kind.HANDLER)
    m = _HANDLER_TABLE.match(ftext)
    if m is not None and m.group(2) == "OPEN":
        ref = _TABLE_REF.match(m.group(1))
        if ref is not None:
            f.tables_read.add(_table_from_text(ref))
    return f


def _h_drop(text: str, ftext: str, depth: int) -> _Facts:
    if ftext.startswith("DROP PREPARE"):
        return _Facts(Kind.DEALLOCATE)
    return _h_ddl(text, ftext, depth)


_LOAD_INTO = re.compile(rf"\bINTO TABLE ({_IDENT}(?:\.{_IDENT})?)")


def _h_load(text: str, ftext: str, depth: int) -> _Facts:
    if not ftext.startswith(("LOAD DATA", "LOAD XML")):
        return _Facts(Kind.OTHER)  # LOAD INDEX INTO CACHE
    f = _Facts(Kind.LOAD_DATA)
    m = _LOAD_INTO.search(ftext)
    if m is not None:
        ref = _TABLE_REF.match(m.group(1))
        if ref is not None:
            f.tables_written.add(_table_from_text(ref))
    return f


_ANALYZE_TABLE = re.compile(r"ANALYZE (?:NO_WRITE_TO_BINLOG |LOCAL )?TABLES? ")


def _h_analyze(text: str, ftext: str, depth: int) -> _Facts:
    if _ANALYZE_TABLE.match(ftext):
        return _Facts(Kind.ANALYZE)
    # MariaDB's ANALYZE <statement>: runs the statement and reports its plan.
    return _h_explain(text, ftext, depth)


_DESCRIBE_TABLE = re.compile(
    rf"(?:DESCRIBE|DESC|EXPLAIN) (?!(?:SELECT|WITH|TABLE|VALUES|INSERT|UPDATE|DELETE|REPLACE|FORMAT|"
    rf"EXTENDED|PARTITIONS|ANALYZE|FOR)\b)({_IDENT}(?:\.{_IDENT})?)(?: \S+)?$"
)
_EXPLAIN_PREFIX = re.compile(
    r"\s*(?:EXPLAIN|DESCRIBE|DESC|ANALYZE)\b\s*(?:(?:EXTENDED|PARTITIONS|ANALYZE|FORMAT\s*=\s*['\"]?\w+['\"]?)\s*)*",
    re.I,
)


def _h_explain(text: str, ftext: str, depth: int) -> _Facts:
    m = _DESCRIBE_TABLE.match(ftext)
    if m is not None:
        f = _Facts(Kind.DESCRIBE)
        ref = _TABLE_REF.match(m.group(1))
        if ref is not None:
            f.tables_read.add(_table_from_text(ref))
        f.maybe_read = True
        return f
    kind = Kind.EXPLAIN
    if ftext.startswith(("EXPLAIN FOR CONNECTION", "DESCRIBE FOR CONNECTION", "DESC FOR CONNECTION")):
        return _Facts(kind)  # the plan of another connection: server-specific
    p = _EXPLAIN_PREFIX.match(text)
    if p is None or depth >= 3:
        f = _Facts(kind)
        f.parse_error = "cannot read the explained statement"
        return f
    inner = text[p.end() :]
    f = _analyze_statement(inner, fingerprint(inner).text, depth + 1)
    # EXPLAIN runs nothing, but EXPLAIN ANALYZE / MariaDB's ANALYZE do run the statement: keep every
    # fact of the inner statement, so EXPLAIN of a write or a locking read still goes to the writer.
    inner_read = f.read_only()
    f.kind = kind
    f.maybe_read = inner_read
    f.set_targets = []
    return f


# -- SET -----------------------------------------------------------------------------------------

_SET_TRANSACTION = re.compile(r"SET (?:(SESSION|LOCAL|GLOBAL) )?TRANSACTION (.*)$")
_ISOLATION = re.compile(
    r"ISOLATION LEVEL (READ UNCOMMITTED|READ COMMITTED|REPEATABLE READ|SERIALIZABLE)\b"
)
_SET_STATEMENT_FOR = re.compile(
    r"""\s*SET\s+STATEMENT\s+(?:'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'|"[^"\\]*(?:(?:\\.|"")[^"\\]*)*"|`[^`]*`|[^'"`])*?\bFOR\s+""",
    re.I | re.S,
)

_TX_VARS = {
    "transaction_isolation": "transaction_isolation",
    "tx_isolation": "transaction_isolation",
    "transaction_read_only": "transaction_read_only",
    "tx_read_only": "transaction_read_only",
}
_BARE_WORD_VALUES = frozenset({"ON", "OFF", "DEFAULT", "SYSTEM", "ALL", "NONE"})


def _h_set(text: str, ftext: str, depth: int) -> _Facts:
    m = _SET_TRANSACTION.match(ftext)
    if m is not None:
        return _set_transaction(m.group(1), m.group(2))
    if ftext.startswith(("SET PASSWORD", "SET DEFAULT ROLE")):
        return _Facts(Kind.GRANT)  # account management, not session state
    if ftext.startswith("SET ROLE"):
        f = _Facts(Kind.SET)
        f.set_targets.append(SetTarget(SetScope.SESSION, "role", None))
        return f
    if ftext.startswith("SET RESOURCE GROUP"):
        f = _Facts(Kind.SET)
        f.set_targets.append(SetTarget(SetScope.SESSION, "resource_group", None))
        return f
    if ftext.startswith("SET STATEMENT"):
        # MariaDB: SET STATEMENT var=value [, ...] FOR <statement> -- the variables apply to that one
        # statement only, so the result is the inner statement's classification.
        sm = _SET_STATEMENT_FOR.match(text)
        if sm is None or depth >= 3:
            f = _Facts(Kind.SET)
            f.parse_error = "cannot read SET STATEMENT ... FOR"
            return f
        inner = text[sm.end() :]
        return _analyze_statement(inner, fingerprint(inner).text, depth + 1)
    f = _Facts(Kind.SET)
    tree = _parse(text, ftext, f, query=False, literals=True)
    if tree is None:
        _text_heuristics(ftext, f)
        return f
    if not isinstance(tree, exp.Set):
        f.parse_error = f"SET parsed as {type(tree).__name__}"
        return f
    _walk(tree, f)
    _set_targets(tree, text, f)
    return f


def _set_transaction(scope_word: str | None, rest: str) -> _Facts:
    f = _Facts(Kind.SET)
    if scope_word == "GLOBAL":
        scope, prefix = SetScope.GLOBAL, ""
    elif scope_word in ("SESSION", "LOCAL"):
        scope, prefix = SetScope.TRANSACTION, ""
    else:  # no keyword: the next transaction only
        scope, prefix = SetScope.TRANSACTION, "next_"
    iso = _ISOLATION.search(rest)
    if iso is not None:
        level = iso.group(1).replace(" ", "-")
        f.set_targets.append(SetTarget(scope, prefix + "transaction_isolation", f"'{level}'"))
    if "READ ONLY" in rest:
        f.set_targets.append(SetTarget(scope, prefix + "transaction_read_only", "1"))
    elif "READ WRITE" in rest:
        f.set_targets.append(SetTarget(scope, prefix + "transaction_read_only", "0"))
    if not f.set_targets:
        f.parse_error = "unrecognized SET TRANSACTION characteristics"
    return f


def _set_targets(tree: exp.Set, text: str, f: _Facts) -> None:
    current: SetScope | None = None  # a scope keyword carries over to later unqualified items
    for item in tree.expressions:
        if not isinstance(item, exp.SetItem):
            f.set_targets.append(SetTarget(SetScope.SESSION, item.sql("mysql").lower(), None))
            continue
        kind = (item.args.get("kind") or "").upper()
        this = item.this
        if kind == "NAMES" or kind == "CHARACTER SET":
            scope = SetScope.NAMES if kind == "NAMES" else SetScope.CHARSET
            name = _word(this)
            collate = item.args.get("collate")
            coll = _word(collate) if collate is not None else None
            if name is None:
                f.set_targets.append(SetTarget(scope, this.sql("mysql").lower() if this else "", None))
            else:
                value = "DEFAULT" if name == "default" else name
                f.set_targets.append(SetTarget(scope, name, value, coll))
            continue
        if kind == "TRANSACTION":  # normally read by the fast path; keep the parser's view as a fallback
            f.set_targets.append(SetTarget(SetScope.TRANSACTION, "transaction", None))
            continue
        if kind in ("SESSION", "LOCAL"):
            current = SetScope.SESSION
        elif kind in ("GLOBAL", "PERSIST", "PERSIST_ONLY"):
            current = SetScope.GLOBAL
        if not isinstance(this, (exp.EQ, exp.PropertyEQ)):
            f.set_targets.append(SetTarget(current or SetScope.SESSION, this.sql("mysql").lower() if this else "", None))
            continue
        left, right = this.this, this.expression
        next_txn = False
        if isinstance(left, exp.Parameter):
            scope = SetScope.USER
            name = left.name.lower()
        elif isinstance(left, exp.SessionParameter):
            sk = (left.args.get("kind") or "").lower()
            if sk in ("global", "persist", "persist_only"):
                scope = SetScope.GLOBAL
            else:
                scope = SetScope.SESSION
                next_txn = sk == ""  # SET @@var (no scope) is OPT_DEFAULT: next transaction for tx vars
            name = left.name.lower()
        elif isinstance(left, exp.Column):
            scope = current or SetScope.SESSION
            name = ".".join(p.name for p in left.parts).lower()
        else:
            scope = current or SetScope.SESSION
            name = left.sql("mysql").lower()
        value = _set_value(right, text, scope)
        tx = _TX_VARS.get(name)
        if tx is not None and scope is SetScope.SESSION:
            scope = SetScope.TRANSACTION
            name = ("next_" if next_txn else "") + tx
            value = _tx_value(tx, value)
        f.set_targets.append(SetTarget(scope, name, value))


def _word(node: exp.Expression | None) -> str | None:
    if node is None:
        return None
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this.lower()
    if isinstance(node, (exp.Var, exp.Identifier)):
        return node.name.lower()
    if isinstance(node, exp.Column) and not node.table:
        return node.name.lower()
    return None


def _set_value(node: exp.Expression | None, text: str, scope: SetScope) -> str | None:
    """The assigned value as replayable SQL text, or None when it is an expression."""
    if isinstance(node, exp.Literal):
        if not node.is_string:
            return node.this
        meta = node.meta
        start, end = meta.get("start"), meta.get("end")
        if isinstance(start, int) and isinstance(end, int):
            src = text[start : end + 1]
            if len(src) >= 2 and src[0] == "'" and src[-1] == "'":
                return src
        if "\\" in node.this:
            return None  # cannot re-quote it the same way under every sql_mode
        return "'" + node.this.replace("'", "''") + "'"
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return "-" + node.this.this
    if isinstance(node, exp.Boolean):
        return "1" if node.this else "0"
    if isinstance(node, exp.Null):
        return "NULL"
    if scope is SetScope.USER:
        return None
    if isinstance(node, exp.Var):
        word = node.name
        return word.upper() if word.upper() in _BARE_WORD_VALUES else word
    if (
        isinstance(node, exp.Column)
        and not node.table
        and isinstance(node.this, exp.Identifier)
        and not node.this.quoted
    ):
        word = node.name  # a bare word for a system variable is a keyword value (TRADITIONAL, InnoDB)
        return word.upper() if word.upper() in _BARE_WORD_VALUES else word
    return None


def _tx_value(var: str, value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip("'\"").upper()
    if var == "transaction_read_only":
        if v in ("1", "ON", "TRUE"):
            return "1"
        if v in ("0", "OFF", "FALSE"):
            return "0"
        return None
    v = v.replace(" ", "-").replace("_", "-")
    if v in ("READ-UNCOMMITTED", "READ-COMMITTED", "REPEATABLE-READ", "SERIALIZABLE"):
        return f"'{v}'"
    return value if value == "DEFAULT" else None


# -- DDL -----------------------------------------------------------------------------------------

_TEMP_CREATE = re.compile(r"CREATE (?:OR REPLACE )?TEMPORARY TABLE\b")
_TEMP_DROP = re.compile(r"DROP TEMPORARY TABLES?\b")
_DDL_PARSED = re.compile(
    r"(?:CREATE (?:OR REPLACE )?(?:TEMPORARY )?TABLE"
    r"|CREATE (?:OR REPLACE )?(?:ONLINE |OFFLINE )?(?:UNIQUE |FULLTEXT |SPATIAL )?INDEX"
    r"|CREATE (?:OR REPLACE )?(?:ALGORITHM ?=\s?\w+ )?(?:DEFINER ?=\s?\S+ )?(?:SQL SECURITY \w+ )?VIEW"
    r"|CREATE (?:OR REPLACE )?SEQUENCE"
    r"|ALTER (?:ONLINE |IGNORE )*TABLE"
    r"|DROP (?:TEMPORARY )?TABLES?|DROP INDEX|DROP VIEW|DROP SEQUENCE"
    r"|TRUNCATE)\b"
)
_RENAME_TABLE = re.compile(r"RENAME TABLES? (.*)$", re.S)


def _h_ddl(text: str, ftext: str, depth: int) -> _Facts:
    f = _Facts(Kind.DDL)
    if _TEMP_CREATE.match(ftext):
        f.temp_table = "CREATE"
    elif _TEMP_DROP.match(ftext):
        f.temp_table = "DROP"
    if _COMPOUND.match(ftext):
        f.compound = True
        return f
    m = _RENAME_TABLE.match(ftext)
    if m is not None:
        for ref in _TABLE_REF.finditer(m.group(1)):
            name = _table_from_text(ref)
            if name not in ("to",):
                f.tables_written.add(name)
        return f
    if not _DDL_PARSED.match(ftext):
        return f  # users, roles, databases, servers, tablespaces, routines: nothing more to know
    tree = _parse(text, ftext, f, query=False)
    if tree is None or isinstance(tree, exp.Command):
        return f
    targets: list[exp.Expression] = []
    ignore: list[exp.Expression] = []
    if isinstance(tree, exp.Create):
        ckind = (tree.args.get("kind") or "").upper()
        target = tree.this
        if isinstance(target, exp.Schema):
            target = target.this
        if ckind == "INDEX" and isinstance(target, exp.Index):
            tbl = target.args.get("table")
            if tbl is not None:
                targets.append(tbl)
        elif ckind in ("TABLE", "VIEW", "SEQUENCE") and target is not None:
            targets.append(target)
        elif target is not None:
            ignore.append(target)
    elif isinstance(tree, exp.Drop):
        dkind = (tree.args.get("kind") or "").upper()
        dropped = tree.args.get("tables") or ([tree.this] if tree.this is not None else [])
        if dkind in ("TABLE", "VIEW", "SEQUENCE"):
            targets.extend(dropped)
        else:
            ignore.extend(dropped)
            on = tree.args.get("cluster")
            if dkind == "INDEX" and isinstance(on, exp.OnProperty) and on.this is not None:
                targets.append(on.this)
    elif isinstance(tree, exp.Alter):
        targets.append(tree.this)
        for action in tree.args.get("actions") or []:
            if isinstance(action, exp.AlterRename) and action.this is not None:
                targets.append(action.this)
    elif isinstance(tree, exp.TruncateTable):
        targets.extend(tree.expressions)
    _walk(tree, f, targets, ignore)
    f.writes = True
    return f


# -- queries and DML -----------------------------------------------------------------------------


def _h_query(text: str, ftext: str, depth: int) -> _Facts:
    f = _Facts(Kind.SELECT)
    tree = _parse(text, ftext, f, query=True)
    if tree is None:
        if ftext.startswith("WITH"):
            f.kind = _with_kind(ftext)
        _text_heuristics(ftext, f)
        return f
    if isinstance(tree, (exp.Query, exp.Subquery, exp.Values)):
        f.maybe_read = True
        _walk(tree, f)
        return f
    if isinstance(tree, exp.Insert):
        f.kind = Kind.INSERT
        targets = [_insert_target(tree)]
    elif isinstance(tree, exp.Update):
        f.kind = Kind.UPDATE
        targets = _update_targets(tree)
    elif isinstance(tree, exp.Delete):
        f.kind = Kind.DELETE
        targets, ignore = _delete_targets(tree)
        f.writes = True
        _walk(tree, f, targets, ignore)
        return f
    else:
        f.kind = Kind.OTHER
        f.parse_error = f"unexpected statement shape: {type(tree).__name__}"
        return f
    f.writes = True
    _walk(tree, f, targets)
    return f


def _h_dml(kind: Kind):
    def handler(text: str, ftext: str, depth: int) -> _Facts:
        f = _Facts(kind)
        f.writes = True
        tree = _parse(text, ftext, f, query=False)
        if tree is None:
            _text_heuristics(ftext, f)
            return f
        ignore: list[exp.Expression] = []
        if isinstance(tree, exp.Insert):
            targets = [_insert_target(tree)]
        elif isinstance(tree, exp.Update):
            targets = _update_targets(tree)
        elif isinstance(tree, exp.Delete):
            targets, ignore = _delete_targets(tree)
        else:
            f.parse_error = f"{kind.value} parsed as {type(tree).__name__}"
            _text_heuristics(ftext, f)
            return f
        _walk(tree, f, targets, ignore)
        return f

    return handler


def _h_do(text: str, ftext: str, depth: int) -> _Facts:
    # DO expr[, expr]: evaluates like SELECT and discards the result; read-only when the expressions
    # are (DO SLEEP(1)), not when they call unknown or session-affine functions (DO GET_LOCK(...)).
    f = _Facts(Kind.DO)
    tree = _parse(text, ftext, f, query=True, do=True)
    if tree is None:
        _text_heuristics(ftext, f)
        return f
    if isinstance(tree, exp.Select):
        f.maybe_read = True
    _walk(tree, f)
    return f


def _insert_target(tree: exp.Insert) -> exp.Expression:
    target = tree.this
    if isinstance(target, exp.Schema):
        target = target.this
    return target


def _table_nodes(node: exp.Expression | None) -> list[exp.Table]:
    """The tables named directly in a FROM-like clause (the table and its joins, not subqueries)."""
    out: list[exp.Table] = []
    if isinstance(node, exp.Table):
        out.append(node)
        for j in node.args.get("joins") or []:
            out.extend(_table_nodes(j.this))
    elif isinstance(node, exp.Join):
        out.extend(_table_nodes(node.this))
    return out


def _alias_map(tables: list[exp.Table]) -> dict[str, exp.Table]:
    amap: dict[str, exp.Table] = {}
    for t in tables:
        if t.alias:
            amap[t.alias.lower()] = t
        amap.setdefault(t.name.lower(), t)
    return amap


def _update_targets(tree: exp.Update) -> list[exp.Expression]:
    tables = _table_nodes(tree.this)
    for j in tree.args.get("joins") or []:
        tables.extend(_table_nodes(j.this))
    if len(tables) <= 1:
        return list(tables)
    amap = _alias_map(tables)
    targets: list[exp.Expression] = []
    for assignment in tree.expressions:
        col = assignment.this if isinstance(assignment, exp.EQ) else None
        qualifier = col.table.lower() if isinstance(col, exp.Column) and col.table else ""
        t = amap.get(qualifier) if qualifier else None
        if t is None:
            return list(tables)  # unqualified column in a multi-table UPDATE: any of them
        targets.append(t)
    return targets


def _delete_targets(tree: exp.Delete) -> tuple[list[exp.Expression], list[exp.Expression]]:
    """(tables deleted from, name-only references to ignore) for DELETE [t1, t2] FROM ... [USING ...]."""
    named = tree.args.get("tables")
    if not named:  # DELETE FROM t ... / DELETE FROM t1, t2 USING ...: the FROM list is the targets
        return list(_table_nodes(tree.this)), []
    sources = _table_nodes(tree.this)
    for u in tree.args.get("using") or []:
        sources.extend(_table_nodes(u))
    amap = _alias_map(sources)
    targets: list[exp.Expression] = []
    ignore: list[exp.Expression] = []
    for t in named:
        real = amap.get(t.name.lower())
        if real is not None and real is not t:
            targets.append(real)
            ignore.append(t)  # `DELETE t1 FROM tbl AS t1`: t1 only points at tbl
        else:
            targets.append(t)
    return targets, ignore


def _with_kind(ftext: str) -> Kind:
    """The statement a WITH clause leads to, from the first top-level keyword after the CTEs."""
    depth = 0
    for m in re.finditer(r"[()]|\b(SELECT|UPDATE|DELETE|INSERT|REPLACE|TABLE|VALUES)\b", ftext):
        tok = m.group()
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif depth == 0:
            return _KEYWORD_KIND.get(tok, Kind.SELECT)
    return Kind.SELECT


# -- the parser bridge ---------------------------------------------------------------------------

_MYSQL = Dialect.get_or_raise("mysql")


class _DropCommandFallbackWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Falling back to parsing as a 'Command'" not in record.getMessage()


logging.getLogger("sqlglot").addFilter(_DropCommandFallbackWarning())


def _tok(token_type: TokenType, text: str) -> Token:
    return Token(token_type, text, 1, 1, 0, 0, [])


_SELECT_MODIFIERS = frozenset(
    {
        "SQL_CALC_FOUND_ROWS",
        "SQL_NO_CACHE",
        "SQL_CACHE",
        "HIGH_PRIORITY",
        "STRAIGHT_JOIN",
        "SQL_SMALL_RESULT",
        "SQL_BIG_RESULT",
        "SQL_BUFFER_RESULT",
    }
)
_SELECT_KEEP = frozenset({"DISTINCT", "DISTINCTROW", "ALL"})
_DML_MODIFIERS = {
    TokenType.INSERT: frozenset({"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY"}),
    TokenType.UPDATE: frozenset({"LOW_PRIORITY", "IGNORE"}),
    TokenType.DELETE: frozenset({"LOW_PRIORITY", "QUICK", "IGNORE"}),
}
_INTO_END = frozenset(
    {
        "FROM",
        "WHERE",
        "GROUP BY",
        "GROUP",
        "HAVING",
        "ORDER BY",
        "ORDER",
        "LIMIT",
        "FOR",
        "LOCK",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "WINDOW",
        ";",
    }
)
_REPLACE_LEAD = re.compile(r"(\s*)REPLACE\b", re.I)


def _paren_depth_exceeds(s: str, limit: int) -> bool:
    if s.count("(") <= limit:
        return False
    depth = 0
    for m in re.finditer(r"[()]", s):
        if m.group() == "(":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _reduced_text(ftext: str) -> str:
    """A parseable stand-in for a huge statement: the normalized text with lists re-expanded to one item."""
    return ftext.replace("IN (...)", "IN (?)").replace("),...", ")")


def _parse(
    text: str, ftext: str, f: _Facts, *, query: bool, do: bool = False, literals: bool = False
) -> exp.Expression | None:
    """Parse one statement with sqlglot; None (and f.parse_error set) when it cannot be parsed.

    A long statement whose normalized text is much shorter (bulk VALUES, long IN lists) is parsed
    from that normalized text: nothing but SET values depends on literals, and sqlglot's cost is
    linear in the tokens. `literals=True` (SET) keeps the original text unless it is too long.
    """
    reduced = None
    if len(text) > MAX_PARSE_CHARS or (not literals and len(text) > 1024):
        reduced = _reduced_text(ftext)
        if len(text) <= MAX_PARSE_CHARS and len(reduced) * 2 > len(text):
            reduced = None  # not worth it: parse what the client sent
        elif len(reduced) > MAX_REDUCED_PARSE_CHARS:
            f.parse_error = f"statement too long to parse ({len(reduced)} characters after normalization)"
            return None
    if reduced is not None:
        tree = _parse_text(reduced, f, query=query, do=do)
        if tree is not None or len(text) > MAX_PARSE_CHARS:
            return tree
        f.parse_error = None  # sqlglot may choke on a '?' where a literal was: try the original
        f.calc_found_rows = False
        f.select_into = None
        f.assigns_user_vars = False
    return _parse_text(text, f, query=query, do=do)


def _parse_text(text: str, f: _Facts, *, query: bool, do: bool) -> exp.Expression | None:
    if _paren_depth_exceeds(text, MAX_PAREN_DEPTH):
        f.parse_error = f"nesting deeper than {MAX_PAREN_DEPTH} levels"
        return None
    try:
        m = _REPLACE_LEAD.match(text)
        if m is not None:  # sqlglot's tokenizer swallows everything after REPLACE into one string
            text = m.group(1) + "INSERT " + text[m.end() :]
        tokens = _MYSQL.tokenize(text)
        tokens = _prepare_tokens(tokens, f, query=query, do=do)
        if not tokens:
            f.parse_error = "empty statement"
            return None
        joins = _unconditioned_joins(tokens)
        if joins > MAX_UNCONDITIONED_JOINS:
            f.parse_error = f"{joins} JOINs without ON or USING in a row (not analysed: the parser's time doubles with each)"
            return None
        trees = [t for t in _MYSQL.parser().parse(tokens, text) if t is not None]
    except Exception as e:  # noqa: BLE001 -- ParseError, TokenError, RecursionError, sqlglot bugs
        f.parse_error = _error_message(e)
        return None
    if len(trees) != 1:
        f.parse_error = f"expected one statement, parsed {len(trees)}"
        return None
    return trees[0]


def _unconditioned_joins(tokens: list[Token]) -> int:
    """The longest run of JOINs with no ON or USING between them: sqlglot's parser backtracks over
    every way to attach the conditions to them, twice the time per JOIN (20 took 5 s; a client's
    statement must not hold the event loop, so such a text is not parsed)."""
    run = worst = 0
    for t in tokens:
        tt = t.token_type
        if tt is TokenType.JOIN:
            run += 1
            if run > worst:
                worst = run
        elif tt is TokenType.ON or tt is TokenType.USING:
            run = 0
    return worst


def _error_message(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if errors:
        first = errors[0]
        desc = first.get("description") or ""
        line, col = first.get("line"), first.get("col")
        msg = f"{desc} (line {line}, col {col})" if line is not None else desc
    else:
        msg = str(e).split("\n", 1)[0]
    return f"{type(e).__name__}: {msg}"[:300]


def _prepare_tokens(tokens: list[Token], f: _Facts, *, query: bool, do: bool) -> list[Token]:
    """Rewrite MySQL syntax sqlglot 30 does not parse into equivalent syntax it does (see module doc)."""
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        tokens = tokens[:-1]
    if not tokens:
        return tokens
    out: list[Token] = []
    n = len(tokens)
    i = 0
    first = tokens[0]
    if do and first.text.upper() == "DO":
        out.append(_tok(TokenType.SELECT, "SELECT"))
        i = 1
    while i < n:
        tok = tokens[i]
        tt = tok.token_type
        up = tok.text.upper()
        if tt == TokenType.SELECT:
            out.append(tok)
            i += 1
            while i < n:
                w = tokens[i].text.upper()
                if w in _SELECT_MODIFIERS and tokens[i].token_type != TokenType.STRING:
                    if w == "SQL_CALC_FOUND_ROWS":
                        f.calc_found_rows = True
                    i += 1
                elif w in _SELECT_KEEP and tokens[i].token_type != TokenType.STRING:
                    out.append(tokens[i])
                    i += 1
                else:
                    break
            continue
        if tt in _DML_MODIFIERS:
            out.append(tok)
            i += 1
            drop = _DML_MODIFIERS[tt]
            while i < n and tokens[i].text.upper() in drop and tokens[i].token_type != TokenType.STRING:
                i += 1
            continue
        if tt == TokenType.INTO and query:
            i = _cut_into(tokens, i, f)
            continue
        if (
            up in ("NEXT", "PREVIOUS")
            and i + 3 < n
            and tokens[i + 1].text.upper() == "VALUE"
            and tokens[i + 2].token_type == TokenType.FOR
        ):
            out.append(_tok(TokenType.VAR, "NEXTVAL" if up == "NEXT" else "LASTVAL"))
            out.append(_tok(TokenType.L_PAREN, "("))
            i += 3
            out.append(tokens[i])
            i += 1
            while i + 1 < n and tokens[i].token_type == TokenType.DOT:
                out.append(tokens[i])
                out.append(tokens[i + 1])
                i += 2
            out.append(_tok(TokenType.R_PAREN, ")"))
            continue
        out.append(tok)
        i += 1
    if query and out and out[0].token_type == TokenType.VALUES:
        out = (
            [
                _tok(TokenType.SELECT, "SELECT"),
                _tok(TokenType.STAR, "*"),
                _tok(TokenType.FROM, "FROM"),
                _tok(TokenType.L_PAREN, "("),
            ]
            + out
            + [
                _tok(TokenType.R_PAREN, ")"),
                _tok(TokenType.ALIAS, "AS"),
                _tok(TokenType.VAR, "_v"),
            ]
        )
    return out


def _cut_into(tokens: list[Token], i: int, f: _Facts) -> int:
    """Skip a SELECT ... INTO clause starting at tokens[i]; record it; return the index after it."""
    n = len(tokens)
    j = i + 1
    target = tokens[j].text.upper() if j < n else ""
    if target in ("OUTFILE", "DUMPFILE"):
        f.select_into = target
    else:
        f.select_into = f.select_into or "VARIABLE"
    depth = 0
    while j < n:
        t = tokens[j]
        tt = t.token_type
        if tt == TokenType.L_PAREN:
            depth += 1
        elif tt == TokenType.R_PAREN:
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and tt != TokenType.STRING and t.text.upper() in _INTO_END:
            break
        if tt == TokenType.PARAMETER:
            f.assigns_user_vars = True
        j += 1
    return j


# -- walking the tree ----------------------------------------------------------------------------

_WRITE_NODES = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Command,
)


def _table_name(t: exp.Table) -> str | None:
    ident = t.this
    if not isinstance(ident, exp.Identifier):
        return None
    name = ident.name
    db = t.args.get("db")
    if isinstance(db, exp.Identifier) and db.name:
        return f"{db.name}.{name}".lower()
    return name.lower()


_CLASS_SESSION_NAME: dict[type, str | None] = {}


def _session_name_of_class(cls: type) -> str | None:
    """The SESSION_FUNCTIONS name a sqlglot function class stands for, if any (memoized)."""
    try:
        return _CLASS_SESSION_NAME[cls]
    except KeyError:
        pass
    names = {n.upper() for n in getattr(cls, "sql_names", list)()}
    names.add(cls.__name__.upper())  # e.g. LastInsertId -> LASTINSERTID
    hit = next((n for n in SESSION_FUNCTIONS if n in names or n.replace("_", "") in names), None)
    _CLASS_SESSION_NAME[cls] = hit
    return hit


def _walk(
    tree: exp.Expression,
    f: _Facts,
    targets: list[exp.Expression] | None = None,
    ignore: list[exp.Expression] | None = None,
) -> None:
    """One pass over the tree: functions, user variables, locks, INTO, tables, nested writes."""
    tables: list[exp.Table] = []
    ctes: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.Table):
            tables.append(node)
        elif isinstance(node, exp.Func):
            parent = node.parent
            if isinstance(node, (exp.Anonymous, exp.AnonymousAggFunc)):
                name = node.name.upper()
                if name in SESSION_FUNCTIONS:
                    f.session_functions.add(name)
                elif name not in BUILTIN_FUNCTIONS:
                    f.unknown_function = True
            else:
                name = _session_name_of_class(type(node))
                if name is not None:  # a later sqlglot that models LAST_INSERT_ID & co. as classes
                    f.session_functions.add(name)
            if isinstance(parent, exp.Dot) and parent.expression is node:
                f.unknown_function = True  # db.f(): a stored function
        elif isinstance(node, exp.Parameter):  # @user_var
            parent = node.parent
            if isinstance(parent, (exp.PropertyEQ, exp.EQ)) and parent.this is node and (
                isinstance(parent, exp.PropertyEQ) or isinstance(parent.parent, exp.SetItem)
            ):
                f.assigns_user_vars = True
            elif isinstance(parent, exp.Table) and isinstance(parent.parent, exp.Into):
                f.assigns_user_vars = True
            else:
                f.reads_user_vars = True
        elif isinstance(node, exp.Lock):
            f.locking_read = True
        elif isinstance(node, exp.Into):
            f.select_into = f.select_into or "VARIABLE"
        elif isinstance(node, exp.CTE):
            alias = node.alias
            if alias:
                ctes.add(alias.lower())
        elif isinstance(node, _WRITE_NODES) and node is not tree:
            f.writes = True
    target_ids = {id(t) for t in targets or () if t is not None}
    ignore_ids = {id(t) for t in ignore or () if t is not None}
    for t in tables:
        tid = id(t)
        if tid in ignore_ids:
            continue
        name = _table_name(t)
        if name is None:
            continue
        if tid in target_ids:
            f.tables_written.add(name)
        elif name == "dual" or ("." not in name and name in ctes):
            continue
        else:
            f.tables_read.add(name)


# -- heuristics when the parser fails ------------------------------------------------------------

_H_SESSION_FN = re.compile(r"\b(" + "|".join(sorted(SESSION_FUNCTIONS)) + r") ?\(")
_H_SEQUENCE = re.compile(r"\b(NEXT|PREVIOUS) VALUE FOR\b")
_H_ASSIGN = re.compile(r"@[\w$.]+ ?:=|\bINTO @|\bSET @(?!@)")
_H_USER_VAR = re.compile(r"(?<![@\w$])@(?!@)")
_H_LOCK = re.compile(r"\bFOR UPDATE\b|\bFOR SHARE\b|\bLOCK IN SHARE MODE\b")
_H_INTO = re.compile(r"\bINTO (OUTFILE|DUMPFILE)\b|\bINTO @")


def _text_heuristics(ftext: str, f: _Facts) -> None:
    """Session-affecting facts read from the normalized text (strings are already `?`)."""
    for m in _H_SESSION_FN.finditer(ftext):
        f.session_functions.add(m.group(1))
    for m in _H_SEQUENCE.finditer(ftext):
        f.session_functions.add("NEXTVAL" if m.group(1) == "NEXT" else "LASTVAL")
    if _H_ASSIGN.search(ftext):
        f.assigns_user_vars = True
    if _H_USER_VAR.search(ftext):
        f.reads_user_vars = True
    if _H_LOCK.search(ftext):
        f.locking_read = True
    if f.kind in (Kind.SELECT, Kind.DO) and f.select_into is None:
        m = _H_INTO.search(ftext)
        if m is not None:
            f.select_into = m.group(1) or "VARIABLE"
    if "SQL_CALC_FOUND_ROWS" in ftext:
        f.calc_found_rows = True


def _h_get(text: str, ftext: str, depth: int) -> _Facts:
    """GET [CURRENT | STACKED] DIAGNOSTICS @a = NUMBER ...: its targets may be user variables."""
    f = _Facts(Kind.OTHER)
    if _USER_VAR_TARGET.search(ftext):
        f.assigns_user_vars = True
    return f


_USER_VAR_TARGET = re.compile(r"(?<![@\w])@(?!@)\w")


_HANDLERS = {
    "SELECT": _h_query,
    "WITH": _h_query,
    "TABLE": _h_query,
    "VALUES": _h_query,
    "INSERT": _h_dml(Kind.INSERT),
    "UPDATE": _h_dml(Kind.UPDATE),
    "DELETE": _h_dml(Kind.DELETE),
    "REPLACE": _h_dml(Kind.REPLACE),
    "SET": _h_set,
    "EXPLAIN": _h_explain,
    "DESCRIBE": _h_explain,
    "DESC": _h_explain,
    "ANALYZE": _h_analyze,
    "DO": _h_do,
    "CREATE": _h_ddl,
    "ALTER": _h_ddl,
    "DROP": _h_drop,
    "TRUNCATE": _h_ddl,
    "RENAME": _h_ddl,
    "CALL": _simple(Kind.CALL),
    "SHOW": _simple(Kind.SHOW),
    "USE": _simple(Kind.USE),
    "BEGIN": _h_begin,
    "START": _h_start,
    "COMMIT": _simple(Kind.COMMIT),
    "ROLLBACK": _h_rollback,
    "SAVEPOINT": _simple(Kind.SAVEPOINT),
    "RELEASE": _h_release,
    "XA": _simple(Kind.XA),
    "LOCK": _h_lock,
    "UNLOCK": _h_unlock,
    "HANDLER": _h_handler,
    "FLUSH": _simple(Kind.FLUSH),
    "KILL": _simple(Kind.KILL),
    "GET": _h_get,
    "PREPARE": _simple(Kind.PREPARE),
    "EXECUTE": _simple(Kind.EXECUTE),
    "DEALLOCATE": _simple(Kind.DEALLOCATE),
    "LOAD": _h_load,
    "GRANT": _simple(Kind.GRANT),
    "REVOKE": _simple(Kind.GRANT),
}
