#!/usr/bin/env python3
"""Peer benchmark: Quiver against Prometheus and VictoriaMetrics on the same machine, data and
queries, in one run (issue 6). Run it with `make bench-peers` or

    python3 benches/peer/harness.py [--series N] [--hours H] [--reps R] [--no-build] ...

Phases: install missing Debian packages, build Quiver, generate the dataset, load it into the
three systems, check every system sees every series, run the query set (a correctness pass,
then timed interleaved repetitions), simulate a refreshing Grafana dashboard against Quiver,
read peak RSS, stop the servers, and write the report (docs/benchmarks.md between the
peer-bench markers, raw JSON in benches/peer/results/).
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import gen  # noqa: E402
import report  # noqa: E402
import runner  # noqa: E402
import systems  # noqa: E402
from systems import log  # noqa: E402

SYSTEMS = ["quiver", "prometheus", "victoria-metrics"]
# Bypass the results caches for the main comparison (Prometheus has none).
NOCACHE = {"quiver": {"nocache": "1"}, "prometheus": {}, "victoria-metrics": {"nocache": "1"}}


def parse_args(argv=None):
    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    p.add_argument("--series", type=int, default=10_000, help="about this many series")
    p.add_argument("--hours", type=float, default=24, help="hours of data, ending at the start of the run")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of the query set")
    p.add_argument("--seed", type=int, default=20240601, help="dataset RNG seed")
    p.add_argument("--no-build", action="store_true", help="use the existing binary of --profile")
    p.add_argument("--profile", default="release",
                   help="cargo profile to build and run (`release` is what `make run` ships; `bench` skips LTO "
                        "and builds faster)")
    p.add_argument("--skip-install", action="store_true", help="never run apt-get (fail if packages are missing)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (dataset, data dirs, logs)")
    p.add_argument("--workdir", help="work dir (default: a new dir under /var/tmp; ~8 GB at the default size)")
    p.add_argument("--timeout", type=float, default=60, help="per-request timeout, seconds")
    p.add_argument("--query-budget", type=float, default=480,
                   help="seconds for the query phase (correctness pass + timed repetitions); repetitions that "
                        "would not fit are dropped (at least one runs) and the report says so")
    p.add_argument("--dash-refreshes", type=int, default=30, help="dashboard refreshes in the warm-cache simulation")
    p.add_argument("--dash-interval", type=float, default=2,
                   help="seconds between dashboard refreshes (Grafana's 30 s, compressed)")
    p.add_argument("--queries", default=os.path.join(HERE, "queries.txt"), help="query set file")
    p.add_argument("--docs", default=os.path.join(REPO, "docs", "benchmarks.md"),
                   help="markdown file whose peer-bench section is replaced")
    p.add_argument("--no-docs", action="store_true", help="do not touch the docs (for trial runs)")
    p.add_argument("--quiver-bin", help="Quiver binary (default: the --profile build under the cargo target dir)")
    args = p.parse_args(argv)
    if args.quiver_bin is None:
        args.quiver_bin = os.path.join(systems.target_dir(REPO), systems.profile_dir(args.profile), "quiver")
    return args


class Phases:
    """Wall time of each phase, in order."""

    def __init__(self):
        self.seconds = {}
        self.loadavg = {}  # 1-min load average at each phase start: other work on the machine

    def run(self, name, fn, *a, **kw):
        self.loadavg[name] = os.getloadavg()[0]
        log(f"== {name} (load average {self.loadavg[name]:.2f})")
        t0 = time.monotonic()
        try:
            return fn(*a, **kw)
        finally:
            self.seconds[name] = round(time.monotonic() - t0, 2)
            log(f"== {name}: {self.seconds[name]:.1f}s")


def _sigterm(_signo, _frame):
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the servers


# --- loading --------------------------------------------------------------------------------------

def load_all(args, workdir, data, servers, raw):
    """Loads the dataset into the three systems and starts them; fills raw["load"]."""
    dirs = {s: os.path.join(workdir, s) for s in SYSTEMS}
    load = raw["load"] = {s: {} for s in SYSTEMS}
    load["prometheus"]["method"] = "promtool tsdb create-blocks-from openmetrics --max-block-duration=54h"
    load["prometheus"]["seconds"] = systems.backfill_prometheus(data["om_path"], dirs["prometheus"], workdir)
    load["quiver"]["method"] = "quiver import (offline, into the data dir; includes flush and compaction)"
    load["quiver"]["seconds"] = systems.import_quiver(args.quiver_bin, data["om_path"], dirs["quiver"], workdir)

    vm = servers["victoria-metrics"] = systems.victoria_metrics(workdir, dirs["victoria-metrics"])
    vm.start()
    load["victoria-metrics"]["method"] = (f"POST /api/v1/import ({len(data['vm_paths'])} concurrent JSON-line "
                                          "streams) + /internal/force_flush, until all series are visible")
    secs = systems.import_victoria_metrics(vm, data["vm_paths"])
    secs += systems.wait_series_visible(vm, data["series"], data["end_s"], NOCACHE["victoria-metrics"])
    load["victoria-metrics"]["seconds"] = secs

    if not args.keep:  # the text files are no longer needed; free ~8 GB before querying
        for p in [data["om_path"], *data["vm_paths"]]:
            os.remove(p)

    for name, factory in (("prometheus", lambda: systems.prometheus(workdir, dirs["prometheus"])),
                       ("quiver", lambda: systems.quiver(args.quiver_bin, workdir, dirs["quiver"]))):
        servers[name] = factory()
        servers[name].start()
    for name in SYSTEMS:
        load[name]["startup_seconds"] = round(servers[name].started_s, 2)

    # On-disk size once background work (VM merges, compaction) has settled.
    systems.wait_vm_merges(vm)
    for name, du in systems.wait_disk_settled(dirs).items():
        load[name]["disk"] = du
        load[name]["bytes_per_sample"] = du["allocated"] / data["samples"]
    load["disk_note"] = ("whole data dir (du-style allocated bytes) after the server started and its size "
                         "stopped changing for 5 s: Prometheus = backfilled blocks + wal/chunks_head it "
                         "creates on start; VictoriaMetrics = storageDataPath after force_flush and merges; "
                         "Quiver = data dir (blocks, catalog, WAL dir) after import and server start")

    # Every system must see every series at the data end before any timing counts.
    for name in SYSTEMS:
        n = systems.instant_value(servers[name].port, 'count({__name__=~".+"})', data["end_s"], NOCACHE[name])
        load[name]["series_visible"] = n
        if n != data["series"]:
            raise RuntimeError(f"{name} sees {n} series at the data end, expected {data['series']}")


# --- queries ----------------------------------------------------------------------------------------

def query_pass(clients, queries, end_s, rng, record, skip):
    """One interleaved pass: for each query and variant, the systems in shuffled order."""
    for q in queries:
        for variant in runner.VARIANTS:
            order = SYSTEMS[:]
            rng.shuffle(order)
            for name in order:
                if (q.name, variant, name) in skip:
                    continue
                path, params = runner.request_params(q, variant, end_s)
                ans = clients[name].get(path, params)
                record(q, variant, name, ans)
                if ans.status == "timeout":
                    skip.add((q.name, variant, name))  # do not burn the budget on it again


def run_queries(args, servers, queries, data, raw):
    clients = {s: runner.Client(s, servers[s].port, args.timeout, NOCACHE[s]) for s in SYSTEMS}
    end_s = data["end_s"]
    cells = raw["queries"] = {}  # "name|variant" -> per-system timings, correctness
    skip = set()

    def cell(q, variant):
        return cells.setdefault(f"{q.name}|{variant}", {
            "name": q.name, "variant": variant, "tags": sorted(q.tags), "expr": q.expr,
            "times": {s: [] for s in SYSTEMS}, "failures": {s: [] for s in SYSTEMS}, "first_seconds": {},
        })

    # Pass 0 (untimed, fixed order): answers for the correctness check; it also warms the
    # page cache and each server's own caches of file metadata.
    log("== correctness pass (untimed)")
    t_phase = t0 = time.monotonic()
    for q in queries:
        for variant in runner.VARIANTS:
            c = cell(q, variant)
            got = {}
            for name in SYSTEMS:
                path, params = runner.request_params(q, variant, end_s)
                ans = got[name] = clients[name].get(path, params)
                c["first_seconds"][name] = ans.seconds
                if ans.status != "ok":
                    c["failures"][name].append(f"correctness pass: {ans.status} {ans.detail}")
                if ans.status == "timeout":
                    skip.add((q.name, variant, name))
            ok, why = runner.compare(got["quiver"], got["prometheus"], "quiver", "prometheus")
            c["quiver_vs_prometheus"] = {"equal": ok, "detail": why}
            if not ok:
                log(f"MISMATCH {q.name} {variant}: {why}")
            ok, why = runner.compare(got["victoria-metrics"], got["prometheus"], "vm", "prometheus")
            c["vm_vs_prometheus"] = {"equal": ok, "detail": why}
    raw["correctness_pass_seconds"] = round(time.monotonic() - t0, 2)

    def record(q, variant, name, ans):
        c = cell(q, variant)
        if ans.status == "ok":
            c["times"][name].append(ans.seconds)
        else:
            c["failures"][name].append(f"{ans.status} {ans.detail}")

    t0 = time.monotonic()
    done = 0
    for rep in range(args.reps):
        # A timed pass costs about what the correctness pass did (or the passes so far).
        per_pass = (time.monotonic() - t0) / done if done else raw["correctness_pass_seconds"]
        elapsed = time.monotonic() - t_phase
        if done and elapsed + per_pass > args.query_budget:
            log(f"query budget: stopping after {done} of {args.reps} repetitions ({elapsed:.0f}s)")
            break
        log(f"== timed repetition {rep + 1}/{args.reps}")
        query_pass(clients, queries, end_s, random.Random(args.seed + rep), record, skip)
        done += 1
    raw["reps_done"] = done
    raw["timed_seconds"] = round(time.monotonic() - t0, 2)
    for c in clients.values():
        c.close()


def dashboard(args, quiver, queries, raw):
    """Warm-cache simulation: the `dash` queries over the last 6 h up to the real wall-clock
    now, step 30 s, refreshed every --dash-interval seconds, without nocache."""
    dash = [q for q in queries if "dash" in q.tags]
    client = runner.Client("quiver", quiver.port, args.timeout, {})
    before = systems.metrics_text(quiver)
    latencies = []  # per refresh: [seconds per query]
    failures = []
    next_at = time.monotonic()
    for i in range(args.dash_refreshes):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += args.dash_interval
        end = int(time.time()) // 30 * 30
        times = []
        for q in dash:
            ans = client.get("/api/v1/query_range",
                             {"query": q.expr, "start": str(end - 6 * 3600), "end": str(end), "step": "30"},
                             parse=False)
            times.append(ans.seconds)
            if ans.status != "ok":
                failures.append(f"refresh {i + 1} {q.name}: {ans.status} {ans.detail}")
        latencies.append(times)
    after = systems.metrics_text(quiver)
    client.close()
    counters = {}
    for key, metric in (("hits", "quiver_results_cache_hits_total"), ("misses", "quiver_results_cache_misses_total")):
        b, a = systems.metric_sum(before, metric), systems.metric_sum(after, metric)
        counters[key] = None if a is None else a - (b or 0)
    raw["dashboard"] = {
        "queries": [q.name for q in dash], "refreshes": args.dash_refreshes, "interval_s": args.dash_interval,
        "latencies": latencies, "failures": failures[:20], "cache": counters,
    }


# --- main ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.time()
    cpu0 = systems.cpu_snapshot()
    phases = Phases()
    raw = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": " ".join(["python3", os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])
        if argv is None else "harness.main(" + repr(argv) + ")",
        "args": vars(args), "machine": systems.machine(), "phases": phases.seconds,
        "loadavg": phases.loadavg,
    }
    queries = runner.load_queries(args.queries)
    # The build runs in the background while packages install and the dataset is generated;
    # the "build" phase is the wait for it afterwards, raw["build"] its whole wall time.
    own_workdir = args.workdir is None
    workdir = args.workdir or tempfile.mkdtemp(prefix="quiver-peer-", dir="/var/tmp")
    os.makedirs(workdir, exist_ok=True)
    log(f"work dir {workdir}")
    servers = {}
    build = None
    try:
        if not args.no_build:
            build = systems.Build(REPO, args.profile)
        raw["installed"] = phases.run("install", systems.ensure_packages, args.skip_install)
        # Data ends at the start of the run (a whole multiple of 120 s, the widest step), so
        # "now"-relative queries and a refreshing dashboard see recent data.
        end_s = int(started) // 120 * 120
        data = phases.run("generate", gen.generate, workdir, args.series, args.hours, end_s * 1000, args.seed)
        data["end_s"] = end_s
        if build:
            phases.run("build", build.wait)
            raw["build"] = {"profile": args.profile, "seconds": build.seconds, "from_empty": build.from_empty,
                            "overlapped_with": ["install", "generate"]}
        if not os.path.exists(args.quiver_bin):
            raise SystemExit(f"{args.quiver_bin} missing: build it (drop --no-build)")
        raw["versions"] = systems.versions(args.quiver_bin, REPO)
        others = systems.busy_peers()
        if others:
            log(f"WARNING: other prometheus/victoria-metrics processes are running and will skew timings: {others}")
            raw["warnings"] = [f"other peer processes running: {others}"]
        raw["dataset"] = {k: v for k, v in data.items() if not k.endswith("_path") and k != "vm_paths"}
        log(f"dataset: {data['series']} series, {data['samples']} samples, "
            f"OpenMetrics {data['om_bytes'] / 1e9:.2f} GB, VM JSON {data['vm_bytes'] / 1e9:.2f} GB")
        phases.run("load", load_all, args, workdir, data, servers, raw)
        phases.run("queries", run_queries, args, servers, queries, data, raw)
        phases.run("dashboard", dashboard, args, servers["quiver"], queries, raw)
        raw["peak_rss"] = {name: s.peak_rss() for name, s in servers.items()}
    finally:
        if build:
            build.kill()
        for s in servers.values():
            s.stop()
        if args.keep:
            log(f"kept {workdir}")
        elif own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:  # a caller-given work dir: remove only what this run put there
            for p in glob.glob(os.path.join(workdir, "data.om*")) + glob.glob(os.path.join(workdir, "vm-*.jsonl")):
                os.remove(p)
            for name in SYSTEMS:
                shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    raw["total_seconds"] = round(time.time() - started, 1)
    raw["cpu"] = systems.cpu_since(cpu0)
    summary = report.summarise(raw)
    raw["summary"] = summary
    md = report.markdown(raw, summary)
    print("\n" + md)
    path = report.write_json(os.path.join(HERE, "results"), raw)
    log(f"raw results: {os.path.relpath(path, REPO)}")
    if not args.no_docs:
        report.update_docs(args.docs, md)
        log(f"updated {os.path.relpath(args.docs, REPO)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
