#!/usr/bin/env python3
"""Ingest through a real sender (issue 27): vmagent, from Debian's victoria-metrics
package, remote-writes the peer dataset (benches/peer/gen.py, default 10k series × 2 h)
posted to its import endpoint, into Quiver and into VictoriaMetrics, one after the other
with the same vmagent settings, each on a fresh data dir with its defaults (Quiver's WAL
is fsynced; VictoriaMetrics does not fsync writes).

    python3 benches/peer/ingest_vmagent.py --quiver BIN [--series 10000] [--hours 2] [--reps 2]

For each system and repetition: start the server, start vmagent pointed at its
`/api/v1/write`, post the dataset's JSON lines to vmagent's `/api/v1/import` (two streams,
as the peer harness loads VictoriaMetrics), then time until (a) the server's own counter
says every sample arrived and (b) `count_over_time`, metric by metric, answers the whole
count. Samples per second = samples / (b). Prints one JSON document and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402
import systems  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def metric_sum(port: int, prefix: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(prefix) and (len(line) == len(prefix) or line[len(prefix)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def count_samples(port: int, at_s: float, hours: float) -> int:
    """Samples stored, metric name by metric name (`count_over_time` drops the name, so
    one query over every name would collide)."""
    window = int(hours * 3600) + 60
    get = lambda path: json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60).read())
    total = 0
    for name in get("/api/v1/label/__name__/values")["data"]:
        q = urllib.parse.urlencode({"query": f"sum(count_over_time({name}[{window}s]))",
                                    "time": f"{at_s:.3f}", "nocache": "1"})
        res = get(f"/api/v1/query?{q}")["data"]["result"]
        total += int(float(res[0]["value"][1])) if res else 0
    return total


def post(port: int, path: str) -> None:
    with open(path, "rb") as f:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/import", data=f, method="POST",
                                     headers={"Content-Length": str(os.path.getsize(path))})
        urllib.request.urlopen(req, timeout=600).read()


def run_one(name: str, args, data: dict, work: str) -> dict:
    d = tempfile.mkdtemp(prefix=f"{name}-", dir=work)
    if name == "quiver":
        srv = systems.quiver(args.quiver, d, os.path.join(d, "data"))
        counter = "quiver_ingested_samples_total"
    else:
        srv = systems.victoria_metrics(d, os.path.join(d, "data"))
        # Without it VictoriaMetrics hides the newest 30 s from queries.
        srv.argv.append("-search.latencyOffset=0s")
        counter = "vm_rows_inserted_total"
    agent_port = systems.free_port()
    agent = None
    try:
        srv.start(ready_timeout=120)
        agent_argv = ["vmagent", f"-httpListenAddr=127.0.0.1:{agent_port}",
                      f"-remoteWrite.url={srv.url}/api/v1/write",
                      f"-remoteWrite.tmpDataPath={os.path.join(d, 'vmagent')}", "-loggerLevel=WARN"]
        agent = subprocess.Popen(agent_argv, stdout=open(os.path.join(d, "vmagent.log"), "wb"),
                                 stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(200):
            try:
                if systems.http_get(agent_port, "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        n = data["samples"]
        before = metric_sum(srv.port, counter)
        t0 = time.monotonic()
        threads = [threading.Thread(target=post, args=(agent_port, p)) for p in data["vm_paths"]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        posted = time.monotonic() - t0
        arrived = None
        while time.monotonic() - t0 < args.timeout:
            if metric_sum(srv.port, counter) - before >= n:
                arrived = time.monotonic() - t0
                break
            time.sleep(0.1)
        queryable, counted = None, 0
        while arrived is not None and time.monotonic() - t0 < args.timeout:
            counted = count_samples(srv.port, data["last_sample_ms"] / 1000 + 1, args.hours)
            if counted >= n:
                queryable = time.monotonic() - t0
                break
            time.sleep(0.2)
        rec = {"system": name, "samples": n, "posted_s": round(posted, 2),
               "arrived_s": arrived and round(arrived, 2), "queryable_s": queryable and round(queryable, 2),
               "counted": counted, "peak_rss": srv.peak_rss(),
               "samples_per_s": queryable and round(n / queryable)}
        log(f"{name}: {rec}")
        return rec
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            agent.wait()
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quiver", required=True, help="quiver binary")
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--hours", type=float, default=2)
    ap.add_argument("--reps", type=int, default=2, help="runs per system, alternating")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="quiver-ingest-", dir="/var/tmp")
    try:
        end_ms = int(time.time()) * 1000
        data = gen.generate(work, args.series, args.hours, end_ms, args.seed)
        os.remove(data["om_path"])
        log(f"dataset: {data['series']} series, {data['samples']} samples")
        runs = []
        for rep in range(args.reps):
            order = ["quiver", "victoria-metrics"] if rep % 2 == 0 else ["victoria-metrics", "quiver"]
            for name in order:
                runs.append(run_one(name, args, data, work))
        out = {"series": data["series"], "samples": data["samples"], "runs": runs,
               "vmagent": "defaults (-remoteWrite.queues = 2 × CPUs)"}
        print(json.dumps(out, indent=1))
        print("\n| system | run | posted | all arrived | all queryable | samples/s | peak RSS |")
        print("|---|---|---|---|---|---|---|")
        for i, r in enumerate(runs):
            rate = f"{r['samples_per_s'] / 1e6:.2f} M" if r["samples_per_s"] else "n/a"
            rss = f"{r['peak_rss'] / 2**20:.0f} MiB" if r["peak_rss"] else "n/a"
            print(f"| {r['system']} | {i // 2 + 1} | {r['posted_s']} s | {r['arrived_s']} s | "
                  f"{r['queryable_s']} s | {rate} | {rss} |")
        if args.out:
            with open(args.out, "w") as f:
                json.dump(out, f, indent=1)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
