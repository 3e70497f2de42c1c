"""Micro-benchmark of the stats registry: the per-statement recording call, and the digest table's
bound under 1,000,000 distinct digests.

Theory of operation: two parts.

1. Per-call cost of `StatsRegistry.statement_done` (best over `--rounds` rounds of the mean ns per
   call within a round, timeit's convention; the load average is printed alongside): a hot digest
   (sysbench-like: a handful of statements), 1,000 digests in rotation, with rule hits and an error,
   a new digest that evicts the oldest (the table at its bound), the exact-LRU setting
   (lru_resolution=0: move_to_end on every hit), and the floor: an empty method with the same
   arguments. Target: a few hundred ns.
2. The bound: `--digests` (default 1,000,000) distinct digests recorded into a registry with
   max_digests=`--max` (default 10,000), and, as the reference, into one with no bound (what
   ProxySQL's unbounded map does). Each runs in its own process so the resident set (VmRSS from
   /proc/self/status) is its own; reported: entries at the end, evictions, ns per record (the loop
   minus the cost of generating the statements), RSS growth, and bytes per entry.

    .venv/bin/python bench/bench_stats.py
    .venv/bin/python bench/bench_stats.py --digests 200000 --max 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.stats import StatsRegistry
from rules.classify import Kind
from rules.digest import fingerprint

TEXT = "SELECT c, pad, k FROM sbtest{} WHERE id=? AND k BETWEEN ? AND ? ORDER BY c"  # ~80 chars normalized


class FP:
    """What statement_done reads of a rules.digest.Fingerprint."""

    __slots__ = ("digest", "text")

    def __init__(self, digest: int, text: str) -> None:
        self.digest, self.text = digest, text


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def best_ns(fn, number: int, rounds: int) -> float:
    """Best over rounds of the mean ns per iteration of fn(number)."""
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn(number)
        out.append((time.perf_counter_ns() - t0) / number)
    return min(out)


def per_call(number: int, rounds: int) -> list[tuple[str, float]]:
    reg = StatsRegistry(max_digests=10_000)
    exact = StatsRegistry(max_digests=10_000, lru_resolution=0)
    srv, srv_exact = reg.server(1, "10.0.0.2:3306"), exact.server(1, "10.0.0.2:3306")
    hot = [fingerprint(f"SELECT c FROM sbtest{i % 4 + 1} WHERE id={i}") for i in range(8)]
    many = [FP(i * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF, TEXT.format(i)) for i in range(1000)]
    select = Kind.SELECT
    start = time.monotonic_ns()
    # Pre-fill so the miss case runs with the table at its bound.
    for i in range(10_000):
        reg.statement_done(srv, FP(-i - 1, "warm"), select, "sbtest", "app", (), start)
    fresh = iter(range(10**12))

    def floor(n: int) -> None:
        class R:
            def statement_done(self, srv, fp, kind, schema, username, rule_ids, start_ns, rows_affected=0, error=0, rows_sent=0):
                pass

        sd, fp = R().statement_done, hot[0]
        for _ in range(n):
            sd(srv, fp, select, "sbtest", "app", (), start)

    def hot_hit(n: int) -> None:
        sd, fps = reg.statement_done, hot
        for i in range(n):
            sd(srv, fps[i & 7], select, "sbtest", "app", (), start)

    def hot_hit_exact(n: int) -> None:
        sd, fps = exact.statement_done, hot
        for i in range(n):
            sd(srv_exact, fps[i & 7], select, "sbtest", "app", (), start)

    def rotating(n: int) -> None:
        sd, fps = reg.statement_done, many
        for i in range(n):
            sd(srv, fps[i % 1000], select, "sbtest", "app", (), start)

    def rules_error(n: int) -> None:
        sd, fps, rules = reg.statement_done, hot, (3, 7)
        for i in range(n):
            sd(srv, fps[i & 7], select, "sbtest", "app", rules, start, 1, 1213)

    fps_new = [FP(next(fresh) + (1 << 40), TEXT.format(i)) for i in range(number * rounds)]
    pos = [0]

    def miss_evict(n: int) -> None:
        sd, p = reg.statement_done, pos[0]
        for fp in fps_new[p : p + n]:
            sd(srv, fp, select, "sbtest", "app", (), start)
        pos[0] = p + n

    def loop_only(n: int) -> None:
        fps = hot
        for i in range(n):
            fps[i & 7]

    base = best_ns(loop_only, number, rounds)
    out = [("(loop overhead, subtracted below)", base)]
    for name, fn in (
        ("empty method, same arguments (floor)", floor),
        ("hit: 8 hot digests (sysbench-like)", hot_hit),
        ("hit: 8 hot digests, exact LRU (lru_resolution=0)", hot_hit_exact),
        ("hit: 1,000 digests in rotation", rotating),
        ("hit + 2 rule hits + error code", rules_error),
        ("new digest, evicts the oldest (table at bound)", miss_evict),
    ):
        out.append((name, best_ns(fn, number, rounds) - base))
    assert reg.digest_count == 10_000
    return out


def child(n: int, max_digests: int | None) -> dict:
    """Record n distinct digests; report size, evictions, ns per record and RSS growth."""
    select = Kind.SELECT
    mask = 0xFFFFFFFFFFFFFFFF

    def gen_only() -> int:
        t0 = time.perf_counter_ns()
        for i in range(n):
            FP(i * 0x9E3779B97F4A7C15 & mask, TEXT.format(i))
        return time.perf_counter_ns() - t0

    gen_ns = min(gen_only() for _ in range(2))
    reg = StatsRegistry(max_digests=max_digests if max_digests is not None else 1 << 62)
    srv = reg.server(1, "10.0.0.2:3306")
    sd = reg.statement_done
    gc.collect()
    rss0 = rss_kib()
    start = time.monotonic_ns()
    t0 = time.perf_counter_ns()
    for i in range(n):
        sd(srv, FP(i * 0x9E3779B97F4A7C15 & mask, TEXT.format(i)), select, "sbtest", "app", (), start)
    total_ns = time.perf_counter_ns() - t0
    gc.collect()
    rss1 = rss_kib()
    t1 = time.perf_counter_ns()
    rows = len(reg.query_digest().rows)
    table_ms = (time.perf_counter_ns() - t1) / 1e6
    assert sum(reg.statements_by_kind().values()) == n
    return {
        "entries": reg.digest_count,
        "rows": rows,
        "evictions": reg.digest_evictions,
        "ns_per_record": (total_ns - gen_ns) / n,
        "rss0_mib": rss0 / 1024,
        "rss_growth_mib": (rss1 - rss0) / 1024,
        "bytes_per_entry": (rss1 - rss0) * 1024 / max(1, reg.digest_count),
        "table_ms": table_ms,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--number", type=int, default=200_000, help="calls per round in part 1")
    ap.add_argument("--digests", type=int, default=1_000_000, help="distinct digests in part 2")
    ap.add_argument("--max", type=int, default=10_000, help="max_digests of the bounded registry")
    ap.add_argument("--child", choices=("bounded", "unbounded"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.digests, args.max if args.child == "bounded" else None)))
        return 0

    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}; best of {args.rounds} rounds of {args.number:,} calls; "
          f"load average {load:.2f} on {os.cpu_count()} CPUs\n")  # fmt: skip
    print("1. statement_done(), ns per call")
    for name, ns in per_call(args.number, args.rounds):
        print(f"   {name:52} {ns:7.0f}")

    print(f"\n2. {args.digests:,} distinct digests (~{len(TEXT.format(1))}-char texts), each in its own process")
    head = f"   {'registry':28} {'entries':>9} {'evictions':>10} {'ns/record':>10} {'RSS growth':>11} {'B/entry':>8} {'table read':>11}"
    print(head)
    for scenario in ("bounded", "unbounded"):
        cmd = [sys.executable, __file__, "--child", scenario, "--digests", str(args.digests), "--max", str(args.max)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        label = f"max_digests={args.max:,}" if scenario == "bounded" else "unbounded (reference)"
        print(
            f"   {label:28} {res['entries']:>9,} {res['evictions']:>10,} {res['ns_per_record']:>10.0f} "
            f"{res['rss_growth_mib']:>8.1f} MiB {res['bytes_per_entry']:>8.0f} {res['table_ms']:>8.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
