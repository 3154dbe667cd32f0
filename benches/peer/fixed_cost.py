#!/usr/bin/env python3
"""The fixed cost of a query (issue 27): Quiver and Prometheus on the peer benchmark's
loaded data (`harness.py --keep` leaves `quiver/` and `prometheus/` in its work dir), the
simplest instant queries, each `--n` times per round after 5 untimed, `--rounds` rounds
alternating which server goes first; median of the rounds' medians, in ms.

    python3 benches/peer/fixed_cost.py --quiver BIN --work PEER_WORK_DIR --at UNIX_SECONDS

`--peer-instant` times the peer query set's instant queries (`queries.txt`) instead, each
`--n` times per round: the peer table's instant cells, both servers in one run.

`--keep-alive` sends every request of a query on one connection, as Grafana and other
HTTP/1.1 clients do; without it each request opens a connection (the figures of sessions
16–21), which adds the connection's setup to every figure.

`--at` is the data end (the raw results' `dataset.last_sample_ms` / 1000). Quiver's data
dir is hard-linked into a temporary copy (its WAL and lock are its own); Prometheus serves
its TSDB dir as the harness left it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import systems  # noqa: E402

QUERIES = ["vector(1)", "time()", "day_of_week()", 'absent(up{job="node"})', "sum(up)/count(up)",
           'up{instance="host-07:9100"}']


def timed(url: str, q: str, at: float, n: int, keep_alive: bool = False) -> float:
    path = "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": at, "nocache": "1"})
    conn = None
    if keep_alive:
        host, port = urllib.parse.urlsplit(url).netloc.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port))
    out = []
    for i in range(n + 5):
        t = time.perf_counter()
        if conn is None:
            urllib.request.urlopen(url + path).read()
        else:
            conn.request("GET", path)
            conn.getresponse().read()
        if i >= 5:
            out.append((time.perf_counter() - t) * 1000)
    if conn is not None:
        conn.close()
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quiver", required=True)
    ap.add_argument("--work", required=True, help="the peer harness's kept work dir")
    ap.add_argument("--at", type=float, required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep-alive", action="store_true",
                    help="one connection per query's requests (default: a connection per request)")
    ap.add_argument("--peer-instant", action="store_true",
                    help="the peer query set's instant queries instead of the simplest ones")
    args = ap.parse_args()
    queries = QUERIES
    if args.peer_instant:
        queries = []
        for line in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "queries.txt")):
            line = line.strip()
            if line and not line.startswith("#"):
                queries.append(line.split("|", 2)[2].strip())
    tmp = tempfile.mkdtemp(prefix="quiver-fixed-", dir="/var/tmp")
    data = os.path.join(tmp, "quiver")
    shutil.copytree(os.path.join(args.work, "quiver"), data, copy_function=os.link)
    servers = [systems.quiver(args.quiver, tmp, data),
               systems.prometheus(args.work, os.path.join(args.work, "prometheus"))]
    try:
        for s in servers:
            s.start()
        res = {}
        for q in queries:
            got = {s.name: [] for s in servers}
            for r in range(args.rounds):
                for s in servers if r % 2 == 0 else servers[::-1]:
                    got[s.name].append(timed(s.url, q, args.at, args.n, args.keep_alive))
            res[q] = {k: round(statistics.median(v), 3) for k, v in got.items()}
        print(json.dumps(res, indent=1))
        print("\n| query | Quiver ms | Prometheus ms |\n|---|---:|---:|")
        for q, r in res.items():
            print(f"| `{q}` | {r['quiver']} | {r['prometheus']} |")
        at_or_below = sum(r["quiver"] <= r["prometheus"] for r in res.values())
        print(f"\nQuiver at or below Prometheus: {at_or_below} of {len(res)}")
        return 0
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
