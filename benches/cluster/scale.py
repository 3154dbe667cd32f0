#!/usr/bin/env python3
"""One query on many queriers (issue 26): the peer dataset's 24 h aggregations on one
querier pinned to one core, then on two queriers pinned to one core each, over the same
cluster and bucket; the speed-up, each querier's CPU (the coordinator's share), and each
query's stages, tasks and bytes shuffled from `explain --analyze`.

    python3 benches/cluster/scale.py --bin <quiver> --load <cluster_load bench binary> \
        [--series 10000] [--hours 24] [--runs 3] [--out results.json]

The dataset is benches/peer/gen.py's, sent through a distributor by `cluster_load --file`
(remote write, as Prometheus would) and flushed to blocks in the bucket (moto_server). The
writer, distributor, compactor and moto_server share CPU 1 while loading and are idle
while the queries run; querier 1 is pinned to CPU 0, querier 2 (started for the second
phase) to CPU 1. Queries bypass the results cache (`nocache=1`); each querier's decoded
samples cache holds the whole dataset, so warm runs measure computing, not reading S3.
Figures vary with the machine; compare within a run.

The speed-up is taken from alternating rounds once both queriers have served (`--rounds`):
querier 2 is paused (SIGSTOP) until querier 1 stops counting it a worker, the queries run
on querier 1 alone, then querier 2 resumes (SIGCONT) and they run on both. A querier that
has just started and filled its samples cache ran the same query 1.5x slower than it did
minutes later (session 20: 431 ms, then 250-300 ms), so comparing a fresh querier alone
with an older one beside another overstated the speed-up; the first phases are kept in the
report (`one_querier_fresh`, `two_queriers_first`) only for the record.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benches", "peer"))
import gen  # noqa: E402

AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=600):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception:
        return None, ""


def wait(what, check, seconds=600):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"scale: timed out waiting for {what}")


def metric(url, name):
    code, text = get(url + "/metrics", 10)
    if code != 200:
        return 0.0
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def sql_count(url):
    q = urllib.parse.urlencode({"query": "SELECT count(*) AS n FROM samples"})
    code, text = get(f"{url}/api/v1/sql?{q}", 120)
    if code != 200:
        return -1
    return int(json.loads(text)["data"]["rows"][0]["n"])


# One instant query that reads every sample of the dataset once (57.6 M): the
# acceptance's single query of at least 50 M samples, beside the 17 range aggregations.
# (`last_over_time` keeps the metric name: other functions would drop it and leave series
# of different metrics with one labelset, an error in PromQL.)
BIG = ("every_sample_last_by_job", 'sum by (job) (last_over_time({__name__=~".+"}[24h]))')


def agg_queries():
    out = []
    for line in open(os.path.join(ROOT, "benches", "peer", "queries.txt")):
        if not line.strip() or line.startswith("#"):
            continue
        name, tags, q = [p.strip() for p in line.split("|", 2)]
        if "agg" in tags.split(","):
            out.append((name, q))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--series", type=int, default=10000)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds of one querier (querier 2 paused) and two")
    ap.add_argument("--step", default="60")
    ap.add_argument("--out")
    ap.add_argument("--keep", help="work in this directory and leave it")
    ap.add_argument("--only", help="run only these queries (comma-separated names)")
    ap.add_argument("--hold", action="store_true",
                    help="after the two-querier phase, keep the cluster up (for a profiler) until killed")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="quiver-scale-")
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    procs = {}
    env = dict(os.environ, **AWS, RUST_LOG="warn")

    def start(name, argv, cpu):
        log = open(os.path.join(work, "logs", f"{name}.log"), "ab")
        # Everything but the queriers runs at the lowest priority: idle while the queries
        # run, yet moto_server answering the cluster's lease and membership polls took
        # 6.7 % of CPU 1 (session 19), which querier 2 shares in the two-querier phase
        # and querier 1 never did, alone on CPU 0.
        nice = [] if name.startswith("querier") else ["nice", "-n", "19"]
        p = subprocess.Popen(nice + ["taskset", "-c", str(cpu)] + argv, stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        procs[name] = p
        return p

    try:
        data = os.path.join(work, "data")
        end_file = os.path.join(data, "end_ms")
        if not os.path.exists(end_file):
            end_ms = int(time.time()) // 60 * 60 * 1000
            os.makedirs(data, exist_ok=True)
            t = time.time()
            info = gen.generate(data, a.series, a.hours, end_ms, seed=7, workers=2)
            print(f"generated {info['samples']:,} samples in {time.time() - t:.0f} s", flush=True)
            with open(end_file, "w") as f:
                f.write(str(end_ms))
        end_ms = int(open(end_file).read())
        s3_port = free_port()
        start("s3", [shutil.which("moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], 1)
        endpoint = f"http://127.0.0.1:{s3_port}"
        wait("the S3 API", lambda: get(f"{endpoint}/quiver")[0] is not None)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/quiver", method="PUT"))
        common = ["--storage-url", "s3://quiver", "--s3-endpoint", endpoint,
                  "--cluster-shards", "4", "--cluster-lease", "6s", "--cluster-secret", "bench",
                  "--cluster-poll-interval", "500ms"]
        ports = {}

        def node(role, n, cpu, extra=()):
            name = f"{role}-{n}"
            ports.setdefault(name, free_port())
            start(name, [a.bin, "serve", "--role", role, "--listen", f"127.0.0.1:{ports[name]}",
                         "--data-dir", os.path.join(work, name), "--cluster-node-id", name]
                  + common + list(extra), cpu)
            url = f"http://127.0.0.1:{ports[name]}"
            wait(f"{name} ready", lambda: get(url + "/-/ready", 2)[0] == 200)
            return url

        # Room for a dataset generated (and kept with --keep) a few hours earlier.
        window = f"{int(a.hours) + 8}h"
        writer = node("writer", 1, 1, ["--ooo-window", window, "--head-flush-interval", "20s",
                                       "--head-memory-limit", str(8 << 30)])
        dist = node("distributor", 1, 1, ["--ooo-window", window])
        node("compactor", 1, 1, ["--compaction-interval", "10s"])
        querier_flags = ["--query-max-samples", str(500_000_000), "--samples-cache-bytes", str(4 << 30)]
        q1 = node("querier", 1, 0, querier_flags)
        wait("the writer to own every shard", lambda: metric(writer, "quiver_cluster_shards_owned") == 4)

        t = time.time()
        out = subprocess.run(["taskset", "-c", "1", a.load, "--url", dist, "--file",
                              os.path.join(data, "data.om"), "--concurrency", "8",
                              "--per-request", "20000"], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(f"load failed: {out.stderr[-2000:]}")
        loaded = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"loaded {loaded['samples']:,} samples in {time.time() - t:.0f} s "
              f"({loaded['samples_per_s']:,.0f}/s)", flush=True)
        wait("querier 1 to hold every sample", lambda: sql_count(q1) == loaded["samples"], 900)
        # The heads flush (20 s after their oldest append) and the compactor merges the
        # blocks: both phases then read the same layout, as a server at rest would.
        seen = {"n": -1, "since": time.time()}

        def settled():
            n = metric(q1, "quiver_blocks")
            if n != seen["n"]:
                seen.update(n=n, since=time.time())
            return n > 0 and time.time() - seen["since"] > 90

        wait("flushes and compaction to settle", settled, 1800)
        # Then the compactor stops, so every phase reads one layout: left running, it
        # merged again between phases (session 18: 204 blocks, then 140), and the layout
        # changes a querier's time per sample by up to 2x.
        os.killpg(procs["compactor-1"].pid, signal.SIGTERM)
        procs["compactor-1"].wait()
        seen.update(n=-1, since=time.time())
        wait("the last compaction to be seen", settled, 600)
        blocks = metric(q1, "quiver_blocks")
        print(f"settled: {blocks:.0f} blocks (compactor stopped)", flush=True)

        queries = agg_queries() + [BIG]
        if a.only:
            queries = [(n, q) for n, q in queries if n in a.only.split(",")]
        start_s, end_s = (end_ms // 1000) - int(a.hours * 3600) + 600, end_ms // 1000

        def run_all(url, pids):
            res = {}
            for name, q in queries:
                if name == BIG[0]:
                    path = "query"
                    params = urllib.parse.urlencode({"query": q, "time": end_s, "nocache": "1"})
                else:
                    path = "query_range"
                    params = urllib.parse.urlencode({"query": q, "start": start_s, "end": end_s,
                                                     "step": a.step, "nocache": "1"})
                code, body = get(f"{url}/api/v1/{path}?{params}")
                if code != 200:
                    sys.exit(f"{name}: {code} {body[:500]}")
                times = []
                cpu0 = [cpu_s(p) for p in pids]
                for _ in range(a.runs):
                    t = time.perf_counter()
                    code, body = get(f"{url}/api/v1/{path}?{params}")
                    times.append(time.perf_counter() - t)
                    assert code == 200, body[:500]
                cpu1 = [cpu_s(p) for p in pids]
                res[name] = {"median_s": statistics.median(times), "runs_s": times,
                             "cpu_s": [round(b - c, 3) for b, c in zip(cpu1, cpu0)],
                             "series": len(json.loads(body)["data"]["result"])}
                print(f"  {name}: {res[name]['median_s'] * 1000:.0f} ms, cpu {res[name]['cpu_s']}", flush=True)
            return res

        def workers_are(url, n):
            wait(f"querier 1 to count {n} worker(s)", lambda: metric(url, "quiver_cluster_workers") == n, 120)

        def alternate(url, pids):
            """Rounds of querier 1 alone (querier 2 paused) then both; per query, the
            median of the rounds' medians and the CPU summed over the rounds."""
            rounds = {"one": [], "two": []}
            for _ in range(a.rounds):
                os.kill(pids[1], signal.SIGSTOP)
                workers_are(url, 1)
                rounds["one"].append(run_all(url, pids[:1]))
                os.kill(pids[1], signal.SIGCONT)
                workers_are(url, 2)
                rounds["two"].append(run_all(url, pids))
            out = {}
            for k, rs in rounds.items():
                out[k] = {name: {"median_s": statistics.median(r[name]["median_s"] for r in rs),
                                 "rounds_s": [r[name]["median_s"] for r in rs],
                                 "cpu_s": [round(sum(r[name]["cpu_s"][i] for r in rs), 3)
                                           for i in range(len(rs[0][name]["cpu_s"]))],
                                 "series": rs[0][name]["series"]}
                          for name in rs[0]}
            return out["one"], out["two"]

        def explain(url, q):
            start = end_s if q == BIG[1] else start_s
            return subprocess.run([a.bin, "explain", "--url", url, "--analyze", "--start",
                                   str(start), "--end", str(end_s), "--step", a.step, q],
                                  capture_output=True, text=True).stdout

        print("one querier (CPU 0):", flush=True)
        one = run_all(q1, [procs["querier-1"].pid])
        samples_read = {}
        for name, q in queries:
            m = re.search(r"(\d+) samples read", explain(q1, q))
            samples_read[name] = int(m.group(1)) if m else None

        q2 = node("querier", 2, 1, querier_flags)
        wait("querier 2 to hold every sample", lambda: sql_count(q2) == loaded["samples"], 900)
        wait("each querier to see the other", lambda: metric(q1, "quiver_cluster_workers") == 2
             and metric(q2, "quiver_cluster_workers") == 2, 60)
        print("two queriers (CPU 0 and CPU 1), querier 1 coordinating:", flush=True)
        two_first = run_all(q1, [procs["querier-1"].pid, procs["querier-2"].pid])
        print(f"alternating, {a.rounds} rounds: querier 1 alone (querier 2 paused), then both:", flush=True)
        one_fresh = one
        one, two = alternate(q1, [procs["querier-1"].pid, procs["querier-2"].pid])
        plans = {name: explain(q1, q) for name, q in queries}
        if a.hold:
            print(json.dumps({"querier-1": [q1, procs["querier-1"].pid],
                              "querier-2": [q2, procs["querier-2"].pid],
                              "start": start_s, "end": end_s}), flush=True)
            while True:
                time.sleep(60)
        retried = metric(q1, 'quiver_distributed_plans_total{outcome="retried"}')
        distributed = metric(q1, 'quiver_distributed_plans_total{outcome="ok"}')

        # The same two queriers, querier 1 restarted to fold partial aggregates itself
        # (--cluster-fold-on-coordinator): one network stage less per aggregation.
        os.killpg(procs["querier-1"].pid, 9)
        procs["querier-1"].wait()
        q1 = node("querier", 1, 0, querier_flags + ["--cluster-fold-on-coordinator"])
        wait("querier 1 to hold every sample again", lambda: sql_count(q1) == loaded["samples"], 900)
        wait("each querier to see the other again", lambda: metric(q1, "quiver_cluster_workers") == 2
             and metric(q2, "quiver_cluster_workers") == 2, 60)
        print("two queriers, querier 1 coordinating and folding aggregates (after a first pass):", flush=True)
        run_all(q1, [procs["querier-1"].pid, procs["querier-2"].pid])
        one_again, folded = alternate(q1, [procs["querier-1"].pid, procs["querier-2"].pid])
        folded_plans = {name: explain(q1, q) for name, q in queries}

        def share(res):
            coord = sum(v["cpu_s"][0] for v in res.values())
            total = sum(sum(v["cpu_s"]) for v in res.values())
            return coord / total if total else None

        def total(res):
            return sum(v["median_s"] for k, v in res.items() if k != BIG[0])

        total1, total2, total3 = total(one), total(two), total(folded)
        total1b = total(one_again)
        big = {k: r[BIG[0]]["median_s"] for k, r in (("one", one), ("two", two), ("one_again", one_again),
                                                       ("two_folded", folded))}
        report = {
            "series": a.series, "hours": a.hours, "samples": loaded["samples"], "step": a.step,
            "blocks": {"settled": blocks, "end": metric(q1, "quiver_blocks")},
            "samples_read": samples_read, "total_samples_read": sum(v or 0 for v in samples_read.values()),
            "rounds": a.rounds, "one_querier": one, "two_queriers": two,
            "one_querier_again": one_again, "two_queriers_folded": folded,
            "one_querier_fresh": one_fresh, "two_queriers_first": two_first,
            "sum_median_s": {"one": total1, "two": total2, "one_again": total1b, "two_folded": total3,
                             "one_fresh": total(one_fresh), "two_first": total(two_first)},
            "speedup": total1 / total2, "speedup_folded": total1b / total3,
            "big_query": BIG[1], "big_median_s": big, "big_samples_read": samples_read.get(BIG[0]),
            "big_speedup": big["one"] / big["two"], "big_speedup_folded": big["one_again"] / big["two_folded"],
            "big_fresh_ms": {"one_fresh": one_fresh[BIG[0]]["median_s"] * 1000,
                             "two_first": two_first[BIG[0]]["median_s"] * 1000},
            "big_coordinator_cpu_share": {k: r[BIG[0]]["cpu_s"][0] / sum(r[BIG[0]]["cpu_s"])
                                          for k, r in (("two", two), ("two_folded", folded))},
            "coordinator_cpu_share": share(two), "coordinator_cpu_share_folded": share(folded),
            "retried_plans": retried, "distributed_plans": distributed,
            "plans": plans, "folded_plans": folded_plans,
        }
        print(json.dumps({k: report[k] for k in ("samples", "total_samples_read", "sum_median_s",
                                                  "speedup", "speedup_folded", "coordinator_cpu_share",
                                                  "big_median_s", "big_samples_read", "big_speedup",
                                                  "big_speedup_folded", "big_fresh_ms", "big_coordinator_cpu_share",
                                                  "coordinator_cpu_share_folded", "retried_plans",
                                                  "distributed_plans")}))
        if a.out:
            with open(a.out, "w") as f:
                json.dump(report, f, indent=1)
    finally:
        for p in procs.values():
            try:
                os.killpg(p.pid, 9)
            except OSError:
                pass
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
