"""Statement fingerprints: the normalized text, its 64-bit digest, and routing hints from comments.

Theory of operation
-------------------
`fingerprint(sql)` runs for every statement whose raw text is not already in the classifier's cache
(sysbench and most ORMs send literal-varying text), so it is built from a handful of compiled `re`
passes that run in C; Python-level callbacks run only for the rare "special" tokens (quoted strings,
backquoted identifiers, comments). Statements with none of ``' " ` # /* -- */`` take a fast path with
no callback at all.

The normalized text (`Fingerprint.text`) is, in order:

1. Quoted strings ``'...'`` / ``"..."`` (backslash escapes and doubled quotes, with an optional
   ``_charset`` / ``N`` / ``X`` / ``B`` introducer) become ``?``. An unterminated quote runs to the end
   of the text, as it does for the server, which keeps every scan linear; it reads ``'?`` so the
   broken text never shares a digest with the well-formed one (likewise ``/*`` and ``/*!`` for
   unterminated comments). A string whose extent depends on the server -- a backslash-escaped quote
   that ends the string earlier under sql_mode NO_BACKSLASH_ESCAPES with a well-formed remainder
   (``'a\\'; DELETE FROM t; -- '``), or ``*/`` inside a string inside an executable comment -- reads
   ``?\\?`` and `prepare_for_parse` reports it, so the classifier fails safe on it.
2. Comments (``/* */``, ``-- ``, ``#``) are removed (read for hints first). Executable comments
   ``/*! */``, ``/*!50100 */``, ``/*M! */``, ``/*M!100100 */`` are *unwrapped*: their content is kept,
   because MariaDB runs it. Optimizer hints ``/*+ */`` are ordinary comments here.
3. Numbers (decimal, exponent, ``0x..``, ``0b..``) become ``?``; a unary minus/plus in front of a literal
   is folded into it (``id = -1`` and ``id = - 1`` read ``ID=?``); ``NULL``, ``TRUE``, ``FALSE`` stay.
4. Whitespace runs become one space; leading/trailing whitespace and trailing ``;`` are dropped.
5. ASCII letters outside backquoted identifiers are upper-cased (keywords, function names and
   unquoted identifiers alike: cheap, and stable; MySQL keywords, function and column names are
   case-insensitive). Non-ASCII letters and backquoted identifiers (backquotes included) are kept
   verbatim, so lower-casing the text gives back every table name exactly.
6. Spaces on either side of ``=`` and ``,``, after ``(`` and before ``)`` are removed (``id = ?`` and
   ``id=?`` are one digest); the space before ``(`` is kept as written (``COUNT(*)``), and other
   operators keep their spacing (``a < ?`` and ``a<?`` differ: cheap beats complete here).
7. ``IN (?,?,?)`` (any number of literal items, including one) becomes ``IN (...)``; a ``VALUES``
   list of two or more identical tuples becomes the first tuple followed by ``,...``
   (``VALUES (?,?),...``), ProxySQL style.

So ``select c from sbtest1 where id = 5000`` reads ``SELECT C FROM SBTEST1 WHERE ID=?``.

`digest` is blake2b (8 bytes, big-endian) of the UTF-8 normalized text: stable across processes and
Python versions (never ``hash()``).

Hints (`Fingerprint.hints`), in the order they appear:

* ``/* rwproxy:route=writer */`` or ``reader`` (any comment style; several ``key=value`` pairs may
  follow ``rwproxy:`` separated by ``;`` ``,`` or spaces; keys lower-case, ``route`` values lower-case,
  ``master``/``primary`` read as writer and ``slave``/``replica`` as reader).
* ProxySQL annotations in the *first* block comment: ``/* hostgroup=2;query_timeout=100 */`` — only the
  keys ProxySQL knows (`PROXYSQL_ANNOTATIONS`) are kept.
* MaxScale: ``-- maxscale route to master`` -> ("route", "writer"), ``slave`` -> ("route", "reader"),
  ``server NAME`` -> ("server", "NAME"), in ``--``, ``#`` or ``/* */`` comments.

Invariants: `fingerprint` never raises for any ``str``; the normalized text never contains comment
text; equal structure with different literals gives equal text and digest.

This module must never import from proxy/ or admin/, and does no I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = [
    "Fingerprint",
    "fingerprint",
    "digest_hex",
    "digest_text",
    "unwrap_comments",
    "prepare_for_parse",
    "PROXYSQL_ANNOTATIONS",
]


@dataclass(frozen=True, slots=True)
class Fingerprint:
    text: str
    digest: int
    hints: tuple[tuple[str, str], ...] = ()


def digest_hex(d: int) -> str:
    """ProxySQL-style rendering of a digest: ``0x`` + 16 upper-case hex digits."""
    return "0x%016X" % (d & 0xFFFFFFFFFFFFFFFF)


def digest_text(text: str) -> int:
    """The 64-bit digest of an already-normalized text."""
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big"
    )


# ProxySQL's first-comment annotations (Query_Processor: hostgroup, cache_ttl, query_timeout, ...).
PROXYSQL_ANNOTATIONS = frozenset(
    {
        "hostgroup",
        "cache_ttl",
        "query_timeout",
        "query_delay",
        "query_retries",
        "mirror",
        "max_lag_ms",
        "min_epoch_ms",
        "min_gtid",
        "create_new_connection",
    }
)

# -- the scanner -------------------------------------------------------------------------------
# `_CANDIDATE` finds the next character that may open a special token; every branch starts with a
# literal, so the C engine skips ordinary text with a first-character set. `_SPECIAL.match` then
# reads the token at that position. Alternatives are tried in order at one position, so a quote inside
# a comment or a comment marker inside a string is never mistaken for the other. Each alternative
# matches to its terminator or to the end of the text (unterminated), so nothing is rescanned and
# the scan is linear in the length of the text.
_CANDIDATE = re.compile(r"""'|"|`|\#|/\*|\*/|--""")
_SPECIAL = re.compile(
    r"""
      (?P<s>'[^'\\]*(?:(?:\\.|'')[^'\\]*)*(?:'|\Z)|"[^"\\]*(?:(?:\\.|"")[^"\\]*)*(?:"|\Z))
    | (?P<b>`[^`]*(?:``[^`]*)*(?:`|\Z))
    | (?P<x>/\*M?!\d{0,6})
    | (?P<c>/\*.*?(?:\*/|\Z))
    | (?P<l>(?:\#|--(?=[\x00-\x20]|\Z))[^\n]*)
    | (?P<e>\*/(?!\*))
    """,
    re.S | re.X,
)
_TERMINATED_STRING = re.compile(
    r"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'" + r'|"[^"\\]*(?:(?:\\.|"")[^"\\]*)*"', re.S
)
_TERMINATED_IDENT = re.compile(r"`[^`]*(?:``[^`]*)*`")
# The same tokens as the server reads them with sql_mode NO_BACKSLASH_ESCAPES (backslash is an
# ordinary character inside strings): used to detect texts whose meaning depends on that mode.
_NBE_SPECIAL = re.compile(
    r"""
      (?P<s>'[^']*(?:''[^']*)*'|"[^"]*(?:""[^"]*)*")
    | (?P<u>['"])
    | (?P<b>`[^`]*(?:``[^`]*)*(?:`|\Z))
    | (?P<c>/\*.*?(?:\*/|\Z))
    | (?P<l>(?:\#|--(?=[\x00-\x20]|\Z))[^\n]*)
    """,
    re.S | re.X,
)
# A string literal's character-set introducer or type prefix: _utf8mb4'x', N'x', X'1F', B'01'.
_INTRODUCER = re.compile(r"(?:(?<![\w$])(?:[xXbBnN]|_[A-Za-z0-9]+))\Z")

_IDENT_MARK = "\ue000"  # stands in for a backquoted identifier while the rest is normalized
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Starts with a character class so the engine can skip non-digits quickly; the lookbehind keeps
# digits inside identifiers (sbtest1, t2) and after a dot (db.1t) out.
_NUM = re.compile(
    r"[\d.](?<![\w$.][\d.])"
    r"(?:(?<=0)[xX][0-9a-fA-F]+|(?<=0)[bB][01]+|(?<=\d)\d*\.?\d*(?:[eE][-+]?\d+)?|(?<=\.)\d+(?:[eE][-+]?\d+)?)"
    r"(?![\w$])"
)
_UNARY_AFTER_KW = (
    "SELECT", "WHERE", "AND", "OR", "NOT", "XOR", "WHEN", "THEN", "ELSE", "CASE", "LIMIT", "OFFSET",
    "BETWEEN", "LIKE", "RETURN", "HAVING", "ON", "DO", "INTERVAL", "DEFAULT", "DIV", "MOD", "BY",
)
# A sign directly before a literal, in a position where it cannot be a binary operator, is folded
# into the literal. The pattern starts with the sign (a character class the engine can scan for);
# the lookbehinds, one fixed width each, then check what precedes it.
_UNARY = re.compile(
    "[-+](?:"
    + "|".join(
        [r"(?<=[=(,<>*/%+\-!^&|~][-+])", r"(?<=[=(,<>*/%+\-!^&|~] [-+])"]
        + [rf"(?<=\b{kw} [-+])" for kw in _UNARY_AFTER_KW]
    )
    + r")(?: ?[-+])* ?\?"
)
_IN_LIST = re.compile(r"\bIN ?\(\?(?:,\?)*\)")
_VALUES_ROWS = re.compile(r"\b(VALUES?) ?(\((?:[^()]|\([^()]*\))*\))(?:,\2)+")

_RWPROXY = re.compile(r"rwproxy\s*:\s*((?:[\w.-]+\s*=\s*[\w.@:-]+[\s;,]*)+)", re.I)
_KV = re.compile(r"([\w.-]+)\s*=\s*([\w.@:-]+)")
_MAXSCALE = re.compile(r"\bmaxscale\s+route\s+to\s+(master|slave|server\s+([^\s*;]+))", re.I)

_ROUTE_ALIASES = {
    "writer": "writer",
    "master": "writer",
    "primary": "writer",
    "reader": "reader",
    "slave": "reader",
    "replica": "reader",
}


def _hints_from_comment(body: str, first_block: bool, out: list[tuple[str, str]]) -> None:
    low = body.lower()
    if "rwproxy" in low:
        for m in _RWPROXY.finditer(body):
            for k, v in _KV.findall(m.group(1)):
                k = k.lower()
                if k == "route":
                    v = _ROUTE_ALIASES.get(v.lower(), v.lower())
                out.append((k, v))
    if "maxscale" in low:
        for m in _MAXSCALE.finditer(body):
            target = m.group(1).lower()
            if target == "master":
                out.append(("route", "writer"))
            elif target == "slave":
                out.append(("route", "reader"))
            else:
                out.append(("server", m.group(2)))
    if first_block and "=" in body and "rwproxy" not in low:
        for part in body.split(";"):
            k, sep, v = part.partition("=")
            k = k.strip().lower()
            if sep and k in PROXYSQL_ANNOTATIONS:
                out.append((k, v.strip()))


def _reads_differently_without_backslash_escapes(sql: str, i: int, end: int) -> bool:
    """Does the string literal at sql[i:end] end earlier under NO_BACKSLASH_ESCAPES, leaving a
    well-formed remainder (the server would then run different SQL)? A remainder that ends inside a
    string is a syntax error in that mode, hence harmless: 'O\\'Brien' alone is not ambiguous."""
    m = _NBE_SPECIAL.match(sql, i)
    if m is None or m.lastgroup != "s" or m.end() >= end:
        return False
    pos = m.end()
    while True:
        cand = _CANDIDATE.search(sql, pos)
        if cand is None:
            return True
        t = _NBE_SPECIAL.match(sql, cand.start())
        if t is None:
            pos = cand.start() + 1
            continue
        if t.lastgroup == "u":
            return False  # unterminated string: a syntax error in that mode
        if t.lastgroup == "c" and not t.group().endswith("*/"):
            return False
        pos = t.end()


def _scan(
    sql: str, keep_literals: bool
) -> tuple[str, list[str] | None, list[tuple[str, str]] | None, str | None]:
    """One pass over the special tokens of `sql`.

    keep_literals=False (fingerprint): strings -> " ? ", backquoted identifiers -> `_IDENT_MARK`
    (returned in order), comments -> " " (hints collected), executable comments unwrapped.
    keep_literals=True (prepare_for_parse): strings and identifiers kept verbatim, no hints.
    The last item names an unterminated string, identifier or comment (the server rejects such a
    text), or a string literal whose extent depends on the server (a backslash-escaped quote under
    sql_mode NO_BACKSLASH_ESCAPES, or ``*/`` inside a string inside an executable comment, which a
    server skipping that comment ends there). The normalized text then keeps a marker (``'?``,
    ``/*``, ``/*!``, ``?\\?``) so it never shares a digest with the unambiguous statement.
    """
    out: list[str] = []
    idents: list[str] | None = None
    hints: list[tuple[str, str]] | None = None
    problem: str | None = None
    search = _CANDIDATE.search
    match = _SPECIAL.match
    n = len(sql)
    last = pos = 0
    in_exec = False
    seen_block = False
    nbe_checked = False
    while True:
        cand = search(sql, pos)
        if cand is None:
            break
        i = cand.start()
        m = match(sql, i)
        if m is None:
            pos = i + 1
            continue
        kind = m.lastgroup
        end = m.end()
        if kind == "s":
            unterminated = end == n and _TERMINATED_STRING.fullmatch(sql, i) is None
            ambiguous = False
            if unterminated:
                problem = "unterminated string literal"
            elif not nbe_checked and sql.find("\\", i, end) != -1:
                nbe_checked = True  # the first early end decides for the rest of the text
                if _reads_differently_without_backslash_escapes(sql, i, end):
                    ambiguous = True
                    problem = problem or (
                        "string literal with a backslash-escaped quote reads differently"
                        " under sql_mode NO_BACKSLASH_ESCAPES"
                    )
            if in_exec and sql.find("*/", i, end) != -1:
                ambiguous = True
                problem = problem or "'*/' inside a string inside an executable comment"
            if keep_literals:
                pos = end
                continue
            seg = sql[last:i]
            if seg and (seg[-1].isalnum() or seg[-1] == "_"):
                intro = _INTRODUCER.search(seg, max(0, len(seg) - 80))
                if intro is not None:
                    seg = seg[: intro.start()]
            out.append(seg)
            out.append(" '? " if unterminated else " ?\\? " if ambiguous else " ? ")
        elif kind == "b":
            if end == n and _TERMINATED_IDENT.fullmatch(sql, i) is None:
                problem = "unterminated quoted identifier"
            if keep_literals:
                pos = end
                continue
            out.append(sql[last:i])
            if idents is None:
                idents = []
            idents.append(m.group())
            out.append(_IDENT_MARK)
        elif kind == "x":
            in_exec = True
            out.append(sql[last:i])
            out.append(" ")
        elif kind == "e":
            if not in_exec:
                pos = end
                continue
            in_exec = False
            out.append(sql[last:i])
            out.append(" ")
        else:  # "c" block comment, "l" line comment
            out.append(sql[last:i])
            text = m.group()
            if kind == "c" and (len(text) < 4 or not text.endswith("*/")):
                problem = "unterminated comment"
                out.append(" /* ")
            else:
                out.append(" ")
            if not keep_literals:
                if hints is None:
                    hints = []
                if kind == "c":
                    body = text[2:-2] if len(text) >= 4 and text.endswith("*/") else text[2:]
                    _hints_from_comment(body, not seen_block, hints)
                    seen_block = True
                else:
                    _hints_from_comment(text, False, hints)
        last = pos = end
    if in_exec:
        problem = problem or "unterminated executable comment"
        out.append(sql[last:])
        out.append(" /*! ")
        return "".join(out), idents, hints, problem
    if not out:
        return sql, idents, hints, problem
    out.append(sql[last:])
    return "".join(out), idents, hints, problem


def fingerprint(sql: str) -> Fingerprint:
    """Normalize `sql` (see module doc), digest it, and collect comment hints. Never raises."""
    idents: list[str] | None = None
    hints: tuple[tuple[str, str], ...] = ()
    if _CANDIDATE.search(sql) is not None:
        if _IDENT_MARK in sql:
            sql = sql.replace(_IDENT_MARK, "")
        sql, idents, found, _ = _scan(sql, False)
        if found:
            hints = tuple(found)
    t = " ".join(_NUM.sub("?", sql).split())
    # ASCII letters only: a non-ASCII identifier keeps its exact spelling (str.upper would turn
    # "straße" into "STRASSE", which no longer lower-cases back to the table's name)
    t = t.upper() if t.isascii() else t.translate(_ASCII_UPPER)
    t = (
        t.replace(" =", "=")
        .replace("= ", "=")
        .replace(" ,", ",")
        .replace(", ", ",")
        .replace("( ", "(")
        .replace(" )", ")")
    )
    if "-" in t or "+" in t:
        t = _UNARY.sub("?", t)
    if t.endswith(";"):
        t = t.rstrip("; ")
    if "IN (?" in t or "IN(?" in t:
        t = _IN_LIST.sub("IN (...)", t)
    if "),(" in t:
        t = _VALUES_ROWS.sub(_collapse_values, t)
    if idents is not None:
        parts = t.split(_IDENT_MARK)
        if len(parts) == len(idents) + 1:
            out = [parts[0]]
            for ident, part in zip(idents, parts[1:]):
                out.append(ident)
                out.append(part)
            t = "".join(out)
        else:  # cannot happen (marks are stripped from the input); keep the digest stable anyway
            t = t.replace(_IDENT_MARK, "`?`")
    return Fingerprint(t, digest_text(t), hints)


def _collapse_values(m: re.Match[str]) -> str:
    return f"{m.group(1)} {m.group(2)},..."


def prepare_for_parse(sql: str) -> tuple[str, str | None]:
    """(`sql` with comments replaced by a space and executable comments unwrapped, problem).

    Strings, identifiers and literals are left exactly as written: this is the text the classifier
    hands to the SQL parser. `problem` names an unterminated string, identifier or comment, which
    the server would reject; None for a well-formed text. Never raises.
    """
    if _CANDIDATE.search(sql) is None:
        return sql, None
    text, _, _, problem = _scan(sql, True)
    return text, problem


def unwrap_comments(sql: str) -> str:
    """`sql` with comments replaced by a space and executable comments unwrapped (content kept)."""
    return prepare_for_parse(sql)[0]
