"""A/B of two Quiver binaries on one data dir: the peer query set, every query instant and
over 1 h / 6 h / 24 h, once untimed then --reps timed passes, one binary after the other.

    python3 benches/peer/ab.py --data-dir DIR --at UNIX_SECONDS OLD_BINARY NEW_BINARY

Prints per-cell medians (ms), new/old ratios and the totals. Use a data dir loaded by the
peer benchmark (`harness.py --keep`) or `benches/sql/duckdb_compare.py --keep`; --at is the
data end (e.g. `timestamp(up)` at the last scrape). Results-cache bypassed (`nocache=1`).
"""
import argparse, json, signal, socket, statistics, subprocess, time, urllib.parse, urllib.request
from pathlib import Path

RANGES = [("instant", 0, 0), ("1h", 3600, 15), ("6h", 6 * 3600, 30), ("24h", 86400, 120)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def queries():
    out = []
    for line in (Path(__file__).parent / "queries.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _tags, q = [x.strip() for x in line.split("|", 2)]
            out.append((name, q))
    return out


def run_binary(binary, data_dir, at, reps):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    p = subprocess.Popen([binary, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(base + "/-/ready").status == 200:
                    break
            except Exception:
                time.sleep(0.1)
        def one(q, r):
            _, span, step = r
            if span == 0:
                url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": at, "nocache": "1"})
            else:
                end = (int(at) // step) * step
                url = base + "/api/v1/query_range?" + urllib.parse.urlencode(
                    {"query": q, "start": end - span, "end": end, "step": step, "nocache": "1"})
            a = time.time()
            urllib.request.urlopen(url, timeout=120).read()
            return (time.time() - a) * 1000
        qs = queries()
        for _, q in qs:
            for r in RANGES:
                one(q, r)
        cells = {}
        for _ in range(reps):
            for n, q in qs:
                for r in RANGES:
                    cells.setdefault(f"{n} {r[0]}", []).append(one(q, r))
        return {k: statistics.median(v) for k, v in cells.items()}
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--at", type=float, required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("old")
    ap.add_argument("new")
    a = ap.parse_args()
    old = run_binary(a.old, a.data_dir, a.at, a.reps)
    new = run_binary(a.new, a.data_dir, a.at, a.reps)
    rows = sorted(((k, old[k], new[k], new[k] / old[k]) for k in old), key=lambda r: -r[3])
    print("| cell | old ms | new ms | new/old |\n|---|---|---|---|")
    for k, o, n, r in rows:
        print(f"| {k} | {o:.1f} | {n:.1f} | {r:.2f}× |")
    print(f"\ntotal old {sum(old.values()):.0f} ms, new {sum(new.values()):.0f} ms; "
          f"median new/old {statistics.median(r[3] for r in rows):.2f}×")
    print(json.dumps({"old": old, "new": new}))


if __name__ == "__main__":
    main()
