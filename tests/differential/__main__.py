"""python -m tests.differential --driver X --mode Y: print every difference a driver sees.

Starts its own MariaDB primary + 2 replicas (``proxy.sandbox.start_cluster``, a temp dir), then
for each driver: runs the scenarios directly against the primary, then through a fresh proxy in
each mode, and prints the differences. Exit status 0 when there are none, 1 otherwise.

    python -m tests.differential --driver pymysql --mode split
    python -m tests.differential --driver all --mode all --scenario charsets
    python -m tests.differential --driver mysql2 --mode passthrough --dump /tmp/t   # transcripts too
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

from proxy.sandbox import ProxyProcess, free_port, render_proxy_config, start_cluster
from tests.differential.harness import DRIVERS, MODES, differences, load_scenarios, proxy_layout, report, run_side


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.differential", description=__doc__.splitlines()[0])
    p.add_argument("--driver", action="append", help=f"one of {', '.join(DRIVERS)}, or all (repeatable; default all)")
    p.add_argument("--mode", action="append", help=f"one of {', '.join(MODES)}, or all (repeatable; default all)")
    p.add_argument("--scenario", action="append", help="only these scenarios (by name; default all)")
    p.add_argument("--dump", type=Path, help="write each transcript as JSON lines into this directory")
    a = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers and proxies started below are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    drivers = list(DRIVERS) if not a.driver or "all" in a.driver else a.driver
    modes = list(MODES) if not a.mode or "all" in a.mode else a.mode
    for name in drivers:
        if name not in DRIVERS:
            p.error(f"unknown driver {name!r}")
    for name in modes:
        if name not in MODES:
            p.error(f"unknown mode {name!r}")
    scenarios = load_scenarios(a.scenario)
    if not scenarios:
        p.error("no scenario matched")
    total = 0
    with tempfile.TemporaryDirectory(prefix="rwproxy-differential-") as tmp:
        work = Path(tmp)
        print(f"starting MariaDB primary + 2 replicas under {work} ...", file=sys.stderr, flush=True)
        cluster = start_cluster(work / "cluster", replicas=2)
        try:
            for driver in drivers:
                direct = run_side(cluster, driver, cluster.primary.host, cluster.primary.port, scenarios, work)
                _dump(a.dump, driver, "direct", direct.transcript)
                for mode in modes:
                    port = free_port()
                    cfg = work / f"proxy-{driver}-{mode}.toml"
                    cfg.write_text(render_proxy_config(cluster, port, **proxy_layout(cluster, mode)))
                    proxy = ProxyProcess(config_path=cfg, host="127.0.0.1", port=port, log_path=work / f"proxy-{driver}-{mode}.log")
                    proxy.start(timeout=60)
                    try:
                        proxied = run_side(cluster, driver, proxy.host, proxy.port, scenarios, work)
                    finally:
                        proxy.stop()
                    _dump(a.dump, driver, mode, proxied.transcript)
                    diffs = differences(driver, mode, scenarios, direct, proxied)
                    total += len(diffs)
                    print(f"== {driver} / {mode}: {report(diffs)}", flush=True)
        finally:
            cluster.stop()
    return 1 if total else 0


def _dump(directory: Path | None, driver: str, side: str, transcript: list[dict]) -> None:
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{driver}.{side}.jsonl", "w") as f:
        for rec in transcript:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
