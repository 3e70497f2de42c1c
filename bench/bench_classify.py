"""Micro-benchmark of the per-statement classifier: fingerprint, cache hits, cold parses.

Theory of operation: every figure is the best, over `--rounds` rounds, of the mean time per call
within a round of `--number` calls (timeit's convention: on a shared machine the fastest round is
the one least disturbed by other processes; the load average is printed alongside). Four things
are measured, matching the targets in rules/classify.py's brief:

    fingerprint    rules.digest.fingerprint() on statements of various shapes (target <= 5 us at ~60 chars)
    raw hit        classify() of a text already in the raw-text LRU (target <= 1 us)
    digest hit     classify() of a new text whose literals differ from a cached one: fingerprint +
                   digest-LRU lookup + raw-LRU insert (target <= 8 us for sysbench-like statements)
    cold           classify() with empty caches: fingerprint + sqlglot parse + analysis (report only)
    route (warm)   classify() + rules.engine.decide() as the proxy calls them per statement, with the
                   default split (pair 0 -> 1, no rules) and a warm cache: the raw-text hit (a text
                   seen before) and the digest hit (new literals). Target: <= 15 us per statement.

`--out docs/benchmarks.md` replaces the section between `<!-- BEGIN classification -->` and
`<!-- END classification -->` with the table and the command.

It also prints sqlglot's version and whether its compiled (mypyc) modules are in use, because the
pure-Python build is several times slower.

    .venv/bin/python bench/bench_classify.py
    .venv/bin/python bench/bench_classify.py --rounds 9 --number 20000
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlglot
import sqlglot.parser

import rules.classify as rc
from rules.digest import fingerprint
from rules.engine import SessionView, decide
from rules.model import ReplicationHostgroup, RuleSet

RULESET = RuleSet(replication_hostgroups=(ReplicationHostgroup(0, 1, writer_is_also_reader=False),))
VIEW = SessionView(default_hostgroup=0, username="app", schemaname="sbtest", client_addr="127.0.0.1", proxy_port=6033)
ONLINE = frozenset({0, 1})


def route(sql: str) -> object:
    return decide(rc.classify(sql), VIEW, RULESET, ONLINE)

SYSBENCH = {
    "point select": "SELECT c FROM sbtest1 WHERE id={i}",
    "simple range": "SELECT c FROM sbtest1 WHERE id BETWEEN {i} AND {j}",
    "sum range": "SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN {i} AND {j}",
    "order range": "SELECT c FROM sbtest1 WHERE id BETWEEN {i} AND {j} ORDER BY c",
    "distinct range": "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN {i} AND {j} ORDER BY c",
    "index update": "UPDATE sbtest1 SET k=k+1 WHERE id={i}",
    "non-index update": "UPDATE sbtest1 SET c='{c}' WHERE id={i}",
    "delete": "DELETE FROM sbtest1 WHERE id={i}",
    "insert": "INSERT INTO sbtest1 (id, k, c, pad) VALUES ({i}, {j}, '{c}', '{p}')",
}
C_VALUE = "83868641912-28773972837-60736120486-75162659906-27563526494-20381887404-41576422241-93426793964-56405065102-33518432330"
P_VALUE = "67847967377-48000963322-62604785301-91415491898-96926520291"

OTHER = {
    "60-char select": "SELECT name, email FROM users WHERE id = 42 AND active = 1",
    "ORM select (joins, IN)": (
        "SELECT u.id, u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id "
        "WHERE u.status = 'active' AND o.id IN (1, 2, 3, 4, 5) ORDER BY o.total DESC LIMIT 20"
    ),
    "hinted select": "/* rwproxy:route=reader */ SELECT `c` FROM `sbtest1` WHERE id = 5",
    "SET autocommit": "SET autocommit=0",
    "SET NAMES": "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
    "SET session vars": "SET SESSION sql_mode = 'STRICT_TRANS_TABLES', time_zone = '+00:00'",
    "BEGIN": "BEGIN",
    "SHOW": "SHOW FULL PROCESSLIST",
    "CTE + UPDATE": "WITH x AS (SELECT id FROM u WHERE f = 1) UPDATE t JOIN x ON t.id = x.id SET t.a = 0",
    "SELECT FOR UPDATE": "SELECT * FROM t WHERE id = 7 FOR UPDATE",
    "bulk INSERT (100 rows)": "INSERT INTO t (a, b) VALUES "
    + ", ".join(f"({i}, 'v{i}')" for i in range(100)),
}


def sysbench_text(name: str, n: int) -> str:
    return SYSBENCH[name].format(i=n, j=n + 99, c=C_VALUE, p=P_VALUE)


def measure(fn: Callable[[], object], number: int, rounds: int) -> float:
    """Best over rounds of the mean microseconds per call."""
    per_round = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        per_round.append((time.perf_counter() - t0) / number * 1e6)
    return min(per_round)


def measure_each(items: list[str], fn: Callable[[str], object], rounds: int, setup: Callable[[], None]) -> float:
    """Best over rounds of the mean microseconds per call, each call on a different item."""
    per_round = []
    for _ in range(rounds):
        setup()
        t0 = time.perf_counter()
        for s in items:
            fn(s)
        per_round.append((time.perf_counter() - t0) / len(items) * 1e6)
    return min(per_round)


def compiled() -> bool:
    return sqlglot.parser.__file__.endswith((".so", ".pyd"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--number", type=int, default=20_000, help="calls per round for hit paths")
    ap.add_argument("--cold", type=int, default=30, help="cold classifications per round")
    ap.add_argument("--out", help="write the table into this markdown file (its classification section)")
    args = ap.parse_args()
    rounds, number = args.rounds, args.number

    print(f"python {sys.version.split()[0]}, sqlglot {sqlglot.__version__}, compiled={compiled()}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"best of {rounds} rounds; microseconds per call; load average {load:.2f} on {os.cpu_count()} CPUs\n")

    statements = {name: sysbench_text(name, 5000) for name in SYSBENCH} | OTHER
    width = max(len(n) for n in statements) + 2

    head = f"{'statement':{width}} {'chars':>6} {'fingerprint':>12} {'raw hit':>9} {'digest hit':>11} {'cold':>9} {'route raw':>10} {'route dig':>10}"
    print(head)
    results = []
    for name, sql in statements.items():
        fp_us = measure(lambda sql=sql: fingerprint(sql), number, rounds)

        rc.cache_clear()
        rc.classify(sql)
        raw_us = measure(lambda sql=sql: rc.classify(sql), number, rounds)

        # digest hit: texts never seen before that share the cached statement's digest
        if name in SYSBENCH:
            variants = [sysbench_text(name, 10_000 + k) for k in range(min(number, rc.RAW_CACHE_SIZE))]
        elif "SET" in name or name in ("BEGIN", "SHOW"):
            variants = []  # SET is never served by digest; BEGIN/SHOW have no literals to vary
        else:
            variants = [
                re.sub(r"\b\d+\b", lambda m, k=k: str(int(m.group()) + k + 1), sql) for k in range(2000)
            ]
            digest = fingerprint(sql).digest
            variants = [v for v in dict.fromkeys(variants) if v != sql and fingerprint(v).digest == digest]

        def warm_digest_only(sql: str = sql) -> None:
            rc.cache_clear()
            rc.classify(sql)

        dig_us = measure_each(variants, rc.classify, rounds, warm_digest_only) if variants else float("nan")

        cold_items = [sql] * args.cold

        def cold_one(s: str) -> None:
            rc.cache_clear()
            rc.classify(s)

        cold_us = measure_each(cold_items, cold_one, rounds, lambda: None)
        warm_digest_only(sql)
        route_raw = measure(lambda sql=sql: route(sql), number, rounds)
        route_dig = measure_each(variants, route, rounds, warm_digest_only) if variants else float("nan")
        results.append((name, len(sql), fp_us, raw_us, dig_us, cold_us, route_raw, route_dig))
        dig = f"{'-':>11}" if math.isnan(dig_us) else f"{dig_us:11.2f}"
        rdig = f"{'-':>10}" if math.isnan(route_dig) else f"{route_dig:10.2f}"
        print(f"{name:{width}} {len(sql):6d} {fp_us:12.2f} {raw_us:9.2f} {dig} {cold_us:9.1f} {route_raw:10.2f} {rdig}")

    sys_rows = [r for r in results if r[0] in SYSBENCH]
    print()
    print("targets: fingerprint <= 5 us @ ~60 chars; raw hit <= 1 us; digest hit <= 8 us (sysbench)")
    print(f"  worst raw hit          {max(r[3] for r in results):6.2f} us")
    print(f"  worst sysbench digest  {max(r[4] for r in sys_rows):6.2f} us")
    sixty = [r for r in results if 45 <= r[1] <= 75]
    print(f"  fingerprint 45-75 chars: {', '.join(f'{r[0]} {r[2]:.2f}' for r in sixty)} us")
    worst_route = max(max(r[6], 0 if math.isnan(r[7]) else r[7]) for r in sys_rows)
    print(f"  classify + decide, warm, sysbench statements: worst {worst_route:.2f} us (target <= 15 us)")
    rc.cache_clear()
    if args.out:
        write_section(Path(args.out), results, load, rounds, number, worst_route)
    return 0


def _fmt(v: float, spec: str) -> str:
    return "-" if math.isnan(v) else format(v, spec)


def write_section(path: Path, results: list[tuple], load: float, rounds: int, number: int, worst_route: float) -> None:
    lines = [
        "<!-- BEGIN classification -->",
        "## Classification and routing cost (issue 3)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; python {sys.version.split()[0]}, sqlglot {sqlglot.__version__} "
        f"(compiled: {compiled()}); {os.cpu_count()} CPUs, load average {load:.2f} at start.",
        "",
        "Command: `.venv/bin/python bench/bench_classify.py --out docs/benchmarks.md` "
        f"(best of {rounds} rounds of {number} calls; microseconds per statement).",
        "",
        "*route raw* / *route dig* = `classify()` + `decide()` as the proxy calls them per COM_QUERY, default split",
        "(replication pair 0 -> 1, no rules), warm cache: a text seen before / a new text whose literals differ",
        "from a cached one. *cold* = empty caches: fingerprint + sqlglot parse + analysis.",
        "",
        "| statement | chars | fingerprint | raw hit | digest hit | cold | route raw | route dig |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n, fp, raw, dig, cold, rr, rd in results:
        lines.append(f"| {name} | {n} | {fp:.2f} | {raw:.2f} | {_fmt(dig, '.2f')} | {cold:.1f} | {rr:.2f} | {_fmt(rd, '.2f')} |")
    lines += ["", f"Worst classify + decide with a warm cache over the sysbench statements: **{worst_route:.2f} µs** (criterion ≤ 15 µs).", "<!-- END classification -->"]
    section = "\n".join(lines)
    text = path.read_text() if path.exists() else ""
    begin, end = "<!-- BEGIN classification -->", "<!-- END classification -->"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
