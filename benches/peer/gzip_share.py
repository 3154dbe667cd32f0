"""How much of each peer cell's time is the answer's gzip: every cell of the peer query set
(instant, 1 h, 6 h, 24 h) on one running server, asked with and without
`Accept-Encoding: gzip` in turns on one keep-alive connection (as Grafana asks, and the
peer harness times), medians of --reps each; the client's decompression is included, as in
the harness. Results-cache bypassed (`nocache=1`).

    python3 benches/peer/gzip_share.py --url http://127.0.0.1:PORT --at UNIX_SECONDS [--reps 5] [--only REGEX]

--at is the data end, as for ab.py. Prints per cell both medians, their ratio and the
answer's size compressed / plain, then the sums.
"""
import argparse, gzip, http.client, re, statistics, time, urllib.parse

from ab import RANGES, queries


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--at", type=float, required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", help="only the cells whose name (query name, space, range) matches this regex")
    a = ap.parse_args()
    host, port = urllib.parse.urlsplit(a.url).netloc.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))

    def ask(q, r, gz):
        _, span, step = r
        if span == 0:
            path = "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": a.at, "nocache": "1"})
        else:
            end = (int(a.at) // step) * step
            path = "/api/v1/query_range?" + urllib.parse.urlencode(
                {"query": q, "start": end - span, "end": end, "step": step, "nocache": "1"})
        t = time.perf_counter()
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gz else {})
        resp = conn.getresponse()
        body = resp.read()
        sent = len(body)
        if resp.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return (time.perf_counter() - t) * 1000, sent, len(body)

    print("| cell | gzip ms | plain ms | gzip/plain | bytes sent gzip / plain |\n|---|---:|---:|---:|---:|")
    total = [0.0, 0.0]
    for name, q in queries():
        for r in RANGES:
            cell = f"{name} {r[0]}"
            if a.only and not re.search(a.only, cell):
                continue
            ask(q, r, True), ask(q, r, False)
            got = {True: [], False: []}
            for i in range(a.reps):
                for gz in ((True, False) if i % 2 == 0 else (False, True)):
                    ms, sent, plain = ask(q, r, gz)
                    got[gz].append(ms)
                    if gz:
                        zipped = sent
            g, p = statistics.median(got[True]), statistics.median(got[False])
            total[0] += g
            total[1] += p
            print(f"| {cell} | {g:.1f} | {p:.1f} | {g / p:.2f} | {zipped} / {plain} |", flush=True)
    print(f"\nsum of medians: gzip {total[0]:.0f} ms, plain {total[1]:.0f} ms")


if __name__ == "__main__":
    main()
