#!/usr/bin/env python3
"""Cluster benchmark (issue 25): ingest throughput and acknowledgement latency through a
cluster on this machine against the single process, and object-store requests at rest and
under a steady write load, priced at S3's list prices.

    python3 benches/cluster/run.py --bin target/release/quiver --load target/release/cluster_load-* \
        [--seconds 20] [--rest 30] [--out results.json]

Quiver's processes are pinned to CPU 0, the load generator and moto_server (standing in
for S3, which runs elsewhere in production) to CPU 1 (taskset), so both setups get the same
single core. Figures vary with the machine; compare within a run.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
# S3 Standard list prices (us-east-1), USD per 1,000 requests.
PRICE = {"put": 0.005, "list": 0.005, "copy": 0.005, "multipart": 0.005,
         "get": 0.0004, "get_range": 0.0004, "head": 0.0004, "delete": 0.0}
MONTH_S = 30 * 86400


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except Exception:
        return None, ""


def wait(what, check, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


def requests_by_op(urls):
    """Object-store requests so far, summed over nodes, by operation."""
    out = {}
    for u in urls:
        code, text = get(u + "/metrics")
        if code != 200:
            continue
        for m in re.finditer(r'^quiver_object_store_requests_total\{([^}]*)\} (\S+)', text, re.M):
            op = re.search(r'operation="([^"]+)"', m.group(1)).group(1)
            out[op] = out.get(op, 0) + float(m.group(2))
    return out


def rate(before, after, secs):
    return {op: (after.get(op, 0) - before.get(op, 0)) / secs for op in set(before) | set(after)}


def monthly_cost(per_s):
    return sum(PRICE.get(op, 0.0005) / 1000 * r * MONTH_S for op, r in per_s.items())


def load(args, url):
    cmd = ["taskset", "-c", "1", args.load, "--url", url, "--seconds", str(args.seconds),
           "--concurrency", str(args.concurrency), "--series", str(args.series)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mib(pid):
    """Peak resident memory of a process (VmHWM), MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def measure(args, name, write_url, nodes, pids=None):
    before, t0 = requests_by_op(nodes), time.time()
    result = load(args, write_url)
    under = rate(before, requests_by_op(nodes), time.time() - t0)
    time.sleep(3)  # let flushes triggered by the load pass
    before, t0 = requests_by_op(nodes), time.time()
    time.sleep(args.rest)
    rest = rate(before, requests_by_op(nodes), time.time() - t0)
    result.update({
        "setup": name,
        "requests_per_s_under_load": {k: round(v, 2) for k, v in sorted(under.items()) if v},
        "requests_per_s_at_rest": {k: round(v, 2) for k, v in sorted(rest.items()) if v},
        "usd_per_month_under_load": round(monthly_cost(under), 2),
        "usd_per_month_at_rest": round(monthly_cost(rest), 2),
        "peak_rss_mib": {n: peak_rss_mib(p) for n, p in (pids or {}).items()},
    })
    print(json.dumps(result), flush=True)
    return result


def single(args, tmp):
    port = free_port()
    env = dict(os.environ, **AWS)
    moto = subprocess.Popen(["taskset", "-c", "1", shutil.which("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    wait("moto", lambda: urllib.request.urlopen(urllib.request.Request(f"{endpoint}/bench", method="PUT")).status == 200)
    log = open(os.path.join(tmp, "single.log"), "w")
    q = subprocess.Popen(["taskset", "-c", "0", args.bin, "serve", "--listen", "127.0.0.1:0",
                          "--data-dir", os.path.join(tmp, "single"), "--storage-url", "s3://bench",
                          "--s3-endpoint", endpoint, "--head-flush-interval", "60s"],
                         stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        url = None

        def up():
            nonlocal url
            m = re.search(r"listening on (http://\S+)", open(os.path.join(tmp, "single.log")).read())
            url = m and m.group(1)
            return url and get(url + "/-/ready")[0] == 200
        wait("single", up)
        return measure(args, "single process (local WAL, blocks in S3)", url, [url], {"single": q.pid})
    finally:
        q.terminate()
        q.wait()
        moto.terminate()
        moto.wait()


def cluster(args, tmp, writers, distributors, commit="100ms"):
    d = os.path.join(tmp, f"cluster-{writers}w-{commit}")
    up = [os.path.join(ROOT, "deploy/local-cluster/up"), d, "--bin", args.bin,
          "--writers", str(writers), "--distributors", str(distributors), "--queriers", "1",
          "--compactors", "1", "--lease", "15s", "--", "--head-flush-interval", "60s",
          "--cluster-commit-interval", commit]
    # Every process the script starts inherits CPU 0; the S3 stand-in moves to CPU 1.
    subprocess.run(["taskset", "-c", "0"] + up, check=True, capture_output=True)
    with open(os.path.join(d, "pids", "s3-1.pid")) as f:
        subprocess.run(["taskset", "-a", "-cp", "1", f.read().strip()], check=True, capture_output=True)
    try:
        env = dict(l.strip().split("=", 1) for l in open(os.path.join(d, "cluster.env")) if "=" in l)
        nodes = [v for k, v in env.items() if k.endswith("_URL") and re.match(r"[A-Z]+_\d+_URL", k)]
        pids = {}
        for f in sorted(os.listdir(os.path.join(d, "pids"))):
            if not f.startswith("s3-"):
                pids[f[:-4]] = int(open(os.path.join(d, "pids", f)).read().strip())
        return measure(args, f"cluster: {writers} writers, {distributors} distributors, 1 querier, 1 compactor, commit interval {commit}",
                       env["WRITE_URL"], nodes, pids)
    finally:
        subprocess.run([os.path.join(ROOT, "deploy/local-cluster/down"), d], capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--rest", type=int, default=30)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--out")
    a = ap.parse_args()
    a.bin, a.load = os.path.abspath(a.bin), os.path.abspath(a.load)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(single(a, tmp))
        results.append(cluster(a, tmp, 1, 1))
        results.append(cluster(a, tmp, 3, 2))
        results.append(cluster(a, tmp, 3, 2, "500ms"))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
