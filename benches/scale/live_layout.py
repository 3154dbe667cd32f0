#!/usr/bin/env python3
"""A live server's block layout (issue 27): N series written through the HTTP API
(remote write, by the `cluster_load` bench tool) into a `quiver serve` with the default
flush cadence, so the head is flushed to many uncompacted blocks as it fills; then the
server is stopped and started again, and the run reports restart-to-ready time and RSS at
ready, beside the layout it restarted on (blocks, bytes) and the memory breakdown from
`/metrics` at ready.

    python3 benches/scale/live_layout.py --quiver BIN --load CLUSTER_LOAD [--series 1000000]
        [--seconds 150] [--restarts 3] [--out results.json]

A/B of restarts on one layout: `--work DIR --keep` keeps the data dir of a run;
`--reuse --work DIR --quiver A --quiver B` then writes nothing and restarts the binaries in
turns (A, B, B, A, A, B, …) on that same data dir, `--restarts` times each, reporting each
binary's median. The restarts write nothing (the heads are empty), so every turn starts on
the same blocks.

`cluster_load` is built by `cargo build --profile bench --bench cluster_load` (its path is
printed by cargo); every round sends one sample per series with a new timestamp. The
defaults write about 1M series × ~30 rounds: at the default `--head-max-samples`
(20M) the head is flushed every ~20 rounds. The server keeps its defaults except the data
dir and the port; compaction runs every 5 min by default, so a run shorter than that
restarts on the blocks as flushed (the script reports how many there were).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peer"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import systems  # noqa: E402
from million import start_timed  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def scrape(port: int) -> dict:
    """Every sample of `/metrics` as {name{labels}: value}."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def breakdown(m: dict) -> dict:
    """Owners' bytes, the allocator's figures and RSS from one scrape."""
    out = {k.split('"')[1]: int(v) for k, v in m.items() if k.startswith("quiver_memory_owner_bytes{")}
    out.update({"allocator_" + k.split('"')[1]: int(v) for k, v in m.items()
                if k.startswith("quiver_allocator_bytes{")})
    out["process_resident"] = int(m.get("process_resident_memory_bytes", 0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quiver", required=True, action="append", help="quiver binary (twice with --reuse: an A/B)")
    ap.add_argument("--load", help="cluster_load binary (not needed with --reuse)")
    ap.add_argument("--reuse", action="store_true", help="restart on the data dir of --work, writing nothing")
    ap.add_argument("--series", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=int, default=150, help="how long to write")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--per-request", type=int, default=10_000)
    ap.add_argument("--restarts", type=int, default=3, help="timed restarts (the median is reported)")
    ap.add_argument("--work", help="work dir (default: a new dir under /var/tmp, removed unless --keep)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    if args.reuse:
        if not args.work:
            ap.error("--reuse needs --work")
        return reuse(args)
    if len(args.quiver) != 1 or not args.load:
        ap.error("writing a layout needs one --quiver and --load")
    work = args.work or tempfile.mkdtemp(prefix="quiver-live-layout-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    port = systems.free_port()
    argv = [args.quiver[0], "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"]
    srv = systems.Server("quiver", argv, port, data, os.path.join(work, "quiver.log"), "/-/ready")
    rec = {"series": args.series, "seconds": args.seconds, "argv": argv}
    try:
        srv.start(ready_timeout=120)
        log(f"writing {args.series} series for {args.seconds}s")
        out = subprocess.run([args.load, "--url", srv.url, "--series", str(args.series),
                              "--seconds", str(args.seconds), "--concurrency", str(args.concurrency),
                              "--per-request", str(args.per_request)],
                             check=True, capture_output=True, text=True).stdout
        rec["ingest"] = json.loads(out.strip().splitlines()[-1])
        log(f"ingest: {rec['ingest']}")
        m = scrape(port)
        rec["before_stop"] = {k: m.get(k) for k in ("quiver_blocks", "quiver_block_bytes", "quiver_head_samples",
                                                     "quiver_catalog_series", "quiver_compactions_total")}
        rec["before_stop"]["peak_rss"] = srv.peak_rss()
        log(f"before stop: {rec['before_stop']}")
        srv.stop()
        restarts = []
        for i in range(args.restarts):
            r = restart(srv, port)
            restarts.append(r)
            log(f"restart {i + 1}: ready {r['ready_s']:.3f}s, RSS {r['rss_at_ready'] / 1e6:.0f} MB, "
                f"{r['blocks']:.0f} blocks, {r['series']:.0f} series")
        rec["restarts"] = restarts
        med = sorted(restarts, key=lambda r: r["ready_s"])[len(restarts) // 2]
        rec["median"] = {"ready_s": med["ready_s"], "rss_at_ready": med["rss_at_ready"], "memory": med["memory"]}
        rec["layout"] = {"blocks": med["blocks"], "bytes": rec["before_stop"]["quiver_block_bytes"]}
        print(json.dumps(rec, indent=1))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rec, f, indent=1)
        return 0
    finally:
        srv.stop()
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)


def restart(srv: systems.Server, port: int) -> dict:
    """One timed start to ready, with what `/metrics` says at ready; the server is stopped."""
    r = start_timed(srv, 600)
    m = scrape(port)
    r["blocks"] = m.get("quiver_blocks")
    r["series"] = m.get("quiver_catalog_series")
    r["memory"] = breakdown(m)
    srv.stop()
    return r


def reuse(args) -> int:
    """Restarts of each binary in turns on an existing data dir."""
    data = os.path.join(args.work, "data")
    if not os.path.isdir(data):
        sys.exit(f"no data dir at {data}: write one first with --work {args.work} --keep")
    port = systems.free_port()
    runs: dict[str, list] = {b: [] for b in args.quiver}
    order = list(args.quiver)
    for i in range(args.restarts):
        for b in (order if i % 2 == 0 else order[::-1]):
            argv = [b, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"]
            srv = systems.Server("quiver", argv, port, data, os.path.join(args.work, "quiver.log"), "/-/ready")
            try:
                r = restart(srv, port)
            finally:
                srv.stop()
            runs[b].append(r)
            log(f"{b}: ready {r['ready_s']:.3f}s, RSS {r['rss_at_ready'] / 1e6:.0f} MB, "
                f"catalog {r['memory'].get('catalog', 0) / 1e6:.0f} MB, "
                f"allocated {r['memory'].get('allocator_allocated', 0) / 1e6:.0f} MB")
    rec = {"work": args.work, "binaries": {}}
    for b, rs in runs.items():
        ready = sorted(r["ready_s"] for r in rs)
        rss = sorted(r["rss_at_ready"] for r in rs)
        rec["binaries"][b] = {"ready_s": ready, "rss_at_ready": rss,
                              "median_ready_s": ready[len(ready) // 2],
                              "median_rss_at_ready": rss[len(rss) // 2],
                              "memory": rs[len(rs) // 2]["memory"], "blocks": rs[0]["blocks"],
                              "series": rs[0]["series"]}
    print(json.dumps(rec, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rec, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
