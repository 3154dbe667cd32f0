"""A/B of two Quiver binaries on one data dir: the peer query set, every query instant and
over 1 h / 6 h / 24 h, once untimed then --reps timed passes; both binaries serve at once
and every cell runs on both in each pass, the order alternating (run one after the other,
the second binary came out ~16 % faster with the same binary on both sides).

    python3 benches/peer/ab.py --data-dir DIR --at UNIX_SECONDS OLD_BINARY NEW_BINARY

Prints per-cell medians (ms), new/old ratios, the totals and each server's peak RSS. Use a data dir loaded by the
peer benchmark (`harness.py --keep`) or `benches/sql/duckdb_compare.py --keep`; --at is the
data end (e.g. `timestamp(up)` at the last scrape). Results-cache bypassed (`nocache=1`).
"""
import argparse, gzip, json, os, re, shutil, signal, tempfile, socket, statistics, subprocess, time, urllib.parse, urllib.request
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


class Server:
    """One binary serving the data dir on a free port (both run at once, so the cells can
    alternate between them: whichever runs second in a pass tends to be faster)."""

    def __init__(self, binary, data_dir, gzip=False):
        self.gzip = gzip
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.p = subprocess.Popen([binary, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            try:
                if urllib.request.urlopen(self.base + "/-/ready").status == 200:
                    return
            except Exception:
                time.sleep(0.1)

    def time(self, q, r, at):
        _, span, step = r
        if span == 0:
            url = self.base + "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": at, "nocache": "1"})
        else:
            end = (int(at) // step) * step
            url = self.base + "/api/v1/query_range?" + urllib.parse.urlencode(
                {"query": q, "start": end - span, "end": end, "step": step, "nocache": "1"})
        headers = {"Accept-Encoding": "gzip"} if self.gzip else {}
        a = time.time()
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120) as r:
            body = r.read()
            if r.headers.get("Content-Encoding") == "gzip":
                gzip.decompress(body)
        return (time.time() - a) * 1000

    def peak_rss_mib(self):
        """VmHWM: the most resident memory the server had."""
        for line in open(f"/proc/{self.p.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait()


def run_both(old_bin, new_bin, data_dir, at, reps, only=None, gzip=False, new_data_dir=None):
    """Per-cell medians of both binaries; each cell runs on both in every pass, the order
    alternating between passes and cells. With `new_data_dir`, the new binary serves that
    dir (the same samples in another block layout) instead of a copy of `data_dir`."""
    # Each server gets its own hard-linked copy (blocks are immutable; WAL and locks are
    # per copy), removed at the end.
    tmp = tempfile.mkdtemp(prefix="quiver-ab-", dir="/var/tmp")
    dirs = [os.path.join(tmp, x) for x in ("old", "new")]
    for d, src in zip(dirs, (data_dir, new_data_dir or data_dir)):
        shutil.copytree(src, d, copy_function=os.link)
    servers = [Server(old_bin, dirs[0], gzip), Server(new_bin, dirs[1], gzip)]
    try:
        qs = queries()
        cells = [(f"{n} {r[0]}", q, r) for n, q in qs for r in RANGES]
        if only:
            cells = [c for c in cells if re.search(only, c[0])]
        for _, q, r in cells:
            for s in servers:
                s.time(q, r, at)
        got = [{}, {}]
        for rep in range(reps):
            for i, (name, q, r) in enumerate(cells):
                order = (0, 1) if (rep + i) % 2 == 0 else (1, 0)
                for k in order:
                    got[k].setdefault(name, []).append(servers[k].time(q, r, at))
        peaks = [s.peak_rss_mib() for s in servers]
        return [{k: statistics.median(v) for k, v in g.items()} for g in got], peaks
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--at", type=float, required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", help="only the cells whose name (query name, space, range) matches this regex")
    ap.add_argument("--gzip", action="store_true",
                    help="ask for gzip and decompress the answers, as Grafana and the peer harness do")
    ap.add_argument("--new-data-dir",
                    help="the new binary serves this data dir (the same samples written by it: a block-format A/B)")
    ap.add_argument("old")
    ap.add_argument("new")
    a = ap.parse_args()
    (old, new), peaks = run_both(a.old, a.new, a.data_dir, a.at, a.reps, a.only, a.gzip, a.new_data_dir)
    rows = sorted(((k, old[k], new[k], new[k] / old[k]) for k in old), key=lambda r: -r[3])
    print("| cell | old ms | new ms | new/old |\n|---|---|---|---|")
    for k, o, n, r in rows:
        print(f"| {k} | {o:.1f} | {n:.1f} | {r:.2f}× |")
    print(f"\ntotal old {sum(old.values()):.0f} ms, new {sum(new.values()):.0f} ms; "
          f"median new/old {statistics.median(r[3] for r in rows):.2f}×")
    print(f"peak RSS (VmHWM) old {peaks[0]:.0f} MiB, new {peaks[1]:.0f} MiB")
    print(json.dumps({"old": old, "new": new, "peak_rss_mib": peaks}))


if __name__ == "__main__":
    main()
