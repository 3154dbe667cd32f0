#!/usr/bin/env python3
"""High-cardinality benchmark: Quiver beside Prometheus and VictoriaMetrics on one counter
family with a unique `pod` label per series (default 1M series x 4 samples), all of it flushed
to blocks. Run it with `make bench-scale` or

    python3 benches/scale/million.py [--series N] [--samples S] [--reps R] [--write-docs] ...

Phases: install missing Debian packages (through benches/peer/systems.py), generate the
dataset (OpenMetrics text and VictoriaMetrics JSON lines), load it into each system
(`quiver import` offline into blocks, `promtool tsdb create-blocks-from openmetrics`,
VictoriaMetrics `/api/v1/import` + `/internal/force_flush`), then one system at a time:
start it on its loaded data and check it sees every series, stop it, restart it and time the
restart to ready with its RSS at ready, run the queries (one untimed warm-up, then --reps
timed), read its peak RSS and stop it. Answers of the three PromQL queries are compared with
the generated truth and across systems. The report is a Markdown table on stdout (and, with
--write-docs, in docs/benchmarks.md between the scale-bench markers); raw JSON goes to
benches/scale/results/ (git-ignored).

Every figure is measured by the run; a system that is missing or fails is reported as such.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "benches", "peer"))

import runner  # noqa: E402  (benches/peer: HTTP client with timing, float comparison)
import systems  # noqa: E402  (benches/peer: install, servers, loading, measuring)
from systems import log  # noqa: E402

SYSTEMS = ["quiver", "prometheus", "victoria-metrics"]
TITLES = {"quiver": "Quiver", "prometheus": "Prometheus", "victoria-metrics": "VictoriaMetrics"}
# Bypass the results caches (Prometheus has none), as the peer harness does.
NOCACHE = {"quiver": {"nocache": "1"}, "prometheus": {}, "victoria-metrics": {"nocache": "1"}}
COMMANDS = {"quiver": [], "prometheus": ["prometheus", "promtool"], "victoria-metrics": ["victoria-metrics"]}

FAMILY = "quiver_scale_requests"
METRIC = FAMILY + "_total"
JOBS, INSTANCES = 20, 100
OFFSET_MS = 337  # every sample at x.337 s: no query window edge (whole seconds) falls on one
SERIES_POD = 42  # the pod of the narrow /api/v1/series match

START, END = "<!-- scale-bench:start -->", "<!-- scale-bench:end -->"
HEADING = "## One million series: startup, fan-out queries and the label index"

# Targets (the issue): ready within 2 s, RSS at ready under 500 MB, fan-out instant queries at
# least as fast as Prometheus, label names / values / series with match[] under 50 ms.
READY_TARGET_S = 2.0
RSS_TARGET_BYTES = 500e6
LABEL_TARGET_S = 0.050
READY_POLL_S = 0.005


def parse_duration(text: str) -> int:
    """'15s', '1m', '500ms' or plain seconds -> milliseconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 15s, 1m)")
    unit = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[m.group(2) or "s"]
    return int(round(float(m.group(1)) * unit))


def parse_args(argv=None):
    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass
    default_bin = os.path.join(systems.target_dir(REPO), "release", "quiver")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    p.add_argument("--series", type=int, default=1_000_000, help="series (one per pod)")
    p.add_argument("--samples", type=int, default=4, help="samples per series")
    p.add_argument("--step", type=parse_duration, default="15s", help="interval between samples")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of each request (after one warm-up)")
    p.add_argument("--work", help="work dir (default: a new dir under /var/tmp, removed at the end unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (dataset, data dirs, logs)")
    p.add_argument("--quiver", default=default_bin,
                   help="Quiver binary ($CARGO_TARGET_DIR/release/quiver, else target/release/quiver)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated systems to run; the others are reported as not run")
    p.add_argument("--timeout", type=float, default=60, help="per-request timeout, seconds")
    p.add_argument("--ready-timeout", type=float, default=600, help="longest wait for a server to become ready, s")
    p.add_argument("--skip-install", action="store_true", help="never run apt-get (missing systems are reported)")
    p.add_argument("--write-docs", action="store_true",
                   help="replace the scale-bench section of --docs (appended with its markers if absent)")
    p.add_argument("--docs", default=os.path.join(REPO, "docs", "benchmarks.md"), help="markdown file for --write-docs")
    args = p.parse_args(argv)
    if args.series < 1 or args.samples < 2 or args.reps < 1 or args.step < 1000:
        p.error("need --series >= 1, --samples >= 2 (rate needs two), --reps >= 1, --step >= 1s")
    chosen = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SYSTEMS))
    if unknown:
        p.error(f"unknown systems {unknown}; choose from {SYSTEMS}")
    args.systems = [s for s in SYSTEMS if s in chosen]
    return args


def _sigterm(_signo, _frame):
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the servers


def fmt_duration_ms(ms: int) -> str:
    return f"{ms // 1000} s" if ms % 1000 == 0 else f"{ms} ms"


# --- dataset ------------------------------------------------------------------------------------------

def value(i: int, k: int) -> int:
    """Sample k of series i: a counter starting far from zero (so Prometheus's extrapolation is
    never clamped at zero) that grows by 1..10 per step, the same for every series of a job."""
    return 100 * (i + 1) + k * (1 + i % 10)


def labels(i: int) -> tuple:
    return f"job-{i % JOBS}", f"inst-{i % INSTANCES}", f"pod-{i:07d}"


def generate(workdir: str, n: int, samples: int, step_ms: int, end_s: int) -> dict:
    """Writes data.om (OpenMetrics: `# TYPE`, seconds timestamps with fractions, `# EOF`, one
    series after the other, as benches/peer/gen.py writes it for promtool and `quiver import`)
    and vm.jsonl (VictoriaMetrics /api/v1/import JSON lines, millisecond timestamps). The last
    sample is at end_s - step + 0.337 s."""
    t0 = time.monotonic()
    first_ms = end_s * 1000 - samples * step_ms + OFFSET_MS
    ts = [first_ms + k * step_ms for k in range(samples)]
    om_suffix = [f" {t // 1000}.{t % 1000:03d}\n" for t in ts]
    vm_ts = ",".join(map(str, ts))
    om_path, vm_path = os.path.join(workdir, "data.om"), os.path.join(workdir, "vm.jsonl")
    with open(om_path, "w", buffering=1 << 24) as om, open(vm_path, "w", buffering=1 << 24) as vm:
        om.write(f"# TYPE {FAMILY} counter\n")
        for i in range(n):
            job, inst, pod = labels(i)
            vals = [str(value(i, k)) for k in range(samples)]
            prefix = f'{METRIC}{{job="{job}",instance="{inst}",pod="{pod}"}} '
            om.write("".join([prefix + v + s for v, s in zip(vals, om_suffix)]))
            vm.write(f'{{"metric":{{"__name__":"{METRIC}","job":"{job}","instance":"{inst}","pod":"{pod}"}},'
                     f'"values":[{",".join(vals)}],"timestamps":[{vm_ts}]}}\n')
        om.write("# EOF\n")
    return {
        "series": n, "samples_per_series": samples, "samples": n * samples, "step_ms": step_ms,
        "first_sample_ms": first_ms, "last_sample_ms": ts[-1], "end_s": end_s,
        "om_path": om_path, "vm_path": vm_path,
        "om_bytes": os.path.getsize(om_path), "vm_bytes": os.path.getsize(vm_path),
        "seconds": round(time.monotonic() - t0, 2),
    }


def prometheus_rate(ts_ms: list, vals: list, at_ms: int, range_ms: int):
    """rate(x[range]) at `at_ms` as Prometheus computes it (extrapolatedRate, counter without
    resets): the samples in the window (no sample sits on an edge here, so left-open and
    left-closed windows agree), extrapolated towards the edges, clamped at zero."""
    pts = [(t, v) for t, v in zip(ts_ms, vals) if at_ms - range_ms < t <= at_ms]
    if len(pts) < 2:
        return None
    (t0, v0), (t1, v1) = pts[0], pts[-1]
    result = v1 - v0
    sampled = (t1 - t0) / 1000
    to_start, to_end = (t0 - (at_ms - range_ms)) / 1000, (at_ms - t1) / 1000
    avg = sampled / (len(pts) - 1)
    if result > 0 and v0 >= 0:
        to_start = min(to_start, sampled * (v0 / result))
    interval = sampled
    interval += to_start if to_start < avg * 1.1 else avg / 2
    interval += to_end if to_end < avg * 1.1 else avg / 2
    return result * (interval / sampled) / (range_ms / 1000)


def expected(data: dict) -> dict:
    """The answers the generated data implies: series count, `sum by (job) (rate(...[1m]))`
    with Prometheus's extrapolation, the five largest last values, label names, job values
    and the one series of the narrow match."""
    n, samples, end_ms = data["series"], data["samples_per_series"], data["end_s"] * 1000
    ts = [data["first_sample_ms"] + k * data["step_ms"] for k in range(samples)]
    sums = {}
    # A series' rate depends on its increment (i % 10) and the timestamps only: the first value,
    # 100 (i + 1), is too far from zero for the zero clamp. So series i and i + 200 (same job,
    # same increment) have the same rate; count the members of each such class.
    for i in range(min(n, JOBS * 10)):
        r = prometheus_rate(ts, [value(i, k) for k in range(samples)], end_ms, 60_000)
        if r is not None:
            job = labels(i)[0]
            members = len(range(i, n, JOBS * 10))
            sums[job] = sums.get(job, 0.0) + r * members
    pod_i = min(SERIES_POD, n - 1)
    job, inst, pod = labels(pod_i)
    return {
        "count": n,
        "sum_rate": sums,
        "topk": sorted(heapq.nlargest(5, (value(i, samples - 1) for i in range(n))), reverse=True),
        "labels": sorted(["__name__", "job", "instance", "pod"]),
        "label_values": sorted({labels(i)[0] for i in range(min(n, JOBS))}),
        "series": [json.dumps({"__name__": METRIC, "job": job, "instance": inst, "pod": pod}, sort_keys=True)],
    }


# --- requests -------------------------------------------------------------------------------------------

def requests(n: int, end_s: int) -> list:
    """(key, label, kind, path, params). PromQL: instant at the data end. Label endpoints
    without start/end (each server's default window, all time for Quiver and Prometheus)."""
    pod = f"pod-{min(SERIES_POD, n - 1):07d}"
    t = str(end_s)
    return [
        ("count", f"`count({METRIC})`", "promql", "/api/v1/query", {"query": f"count({METRIC})", "time": t}),
        ("sum_rate", f"`sum by (job) (rate({METRIC}[1m]))`", "promql", "/api/v1/query",
         {"query": f"sum by (job) (rate({METRIC}[1m]))", "time": t}),
        ("topk", f"`topk(5, {METRIC})`", "promql", "/api/v1/query", {"query": f"topk(5, {METRIC})", "time": t}),
        ("labels", "`/api/v1/labels`", "label", "/api/v1/labels", {}),
        ("label_values", "`/api/v1/label/job/values`", "label", "/api/v1/label/job/values", {}),
        ("series", f"`/api/v1/series?match[]={METRIC}{{pod=\"{pod}\"}}`", "label", "/api/v1/series",
         {"match[]": f'{METRIC}{{pod="{pod}"}}'}),
        ("tsdb", "`/api/v1/status/tsdb`", "status", "/api/v1/status/tsdb", {}),
    ]


def start_timed(srv: systems.Server, timeout_s: float) -> dict:
    """Spawns the server and polls its readiness endpoint every READY_POLL_S until it answers
    200. Returns seconds from spawn to that answer and VmRSS / VmHWM read right after it.
    (systems.Server.start polls every 0.2 s, too coarse for sub-second startups.)"""
    log(f"starting {srv.name}: {' '.join(srv.argv)}")
    with open(srv.log_path, "ab") as logf:
        t0 = time.monotonic()
        srv.proc = subprocess.Popen(srv.argv, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    polls = 0
    while True:
        polls += 1
        try:
            status, _ = systems.http_get(srv.port, srv.ready_path, timeout=5)
        except OSError:
            status = None
        if status == 200:
            t_ready = time.monotonic()
            mem = proc_status(srv.proc.pid)
            break
        if srv.proc.poll() is not None:
            raise RuntimeError(f"{srv.name} exited with {srv.proc.returncode} before ready; see {srv.log_path}")
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{srv.name} not ready after {timeout_s:.0f}s; see {srv.log_path}")
        time.sleep(READY_POLL_S)
    srv.started_s = t_ready - t0
    log(f"{srv.name} ready on {srv.url} after {srv.started_s:.3f}s (pid {srv.proc.pid}, "
        f"RSS {mem.get('VmRSS', 0) / 1e6:.0f} MB)")
    return {"ready_s": round(srv.started_s, 4), "rss_at_ready": mem.get("VmRSS"),
            "hwm_at_ready": mem.get("VmHWM"), "polls": polls}


def proc_status(pid: int) -> dict:
    """VmRSS and VmHWM of a process, bytes."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                m = re.match(r"(VmRSS|VmHWM):\s+(\d+) kB", line)
                if m:
                    out[m.group(1)] = int(m.group(2)) * 1024
    except OSError:
        pass
    return out


def time_requests(srv: systems.Server, name: str, reqs: list, reps: int, timeout_s: float) -> dict:
    """Per request: one untimed warm-up (its latency and answer kept), then `reps` timed."""
    client = runner.Client(name, srv.port, timeout_s, NOCACHE[name])
    out = {}
    try:
        for key, _label, _kind, path, params in reqs:
            r = out[key] = {"times": [], "failures": []}
            first = client.get(path, params)
            r["first_s"] = first.seconds
            r["answer"] = first.body if first.status == "ok" else None
            if first.status != "ok":
                r["failures"].append(f"warm-up: {first.status} {first.detail}")
                log(f"{name} {key}: {first.status} {first.detail}")
                if first.status == "timeout":
                    continue
            for _ in range(reps):
                a = client.get(path, params)
                if a.status == "ok":
                    r["times"].append(a.seconds)
                else:
                    r["failures"].append(f"{a.status} {a.detail}")
            r["median_s"] = statistics.median(r["times"]) if r["times"] else None
            log(f"{name} {key}: median {fmt_s(r['median_s'])} over {len(r['times'])} "
                f"(warm-up {fmt_s(r['first_s'])})")
    finally:
        client.close()
    return out


# --- answers ----------------------------------------------------------------------------------------------

def vector(body) -> list:
    if not body or body.get("data", {}).get("resultType") != "vector":
        return []
    return [(r.get("metric", {}), float(r["value"][1])) for r in body["data"]["result"]]


def extract(key: str, body):
    """The comparable part of an answer."""
    if body is None:
        return None
    data = body.get("data")
    if key == "count":
        v = vector(body)
        return v[0][1] if len(v) == 1 else None
    if key == "sum_rate":
        return {m.get("job"): x for m, x in vector(body)}
    if key == "topk":
        return sorted((x for _m, x in vector(body)), reverse=True)
    if key in ("labels", "label_values"):
        return sorted(data or [])
    if key == "series":
        return sorted(json.dumps(s, sort_keys=True) for s in data or [])
    if key == "tsdb":  # series of our metric the endpoint counted
        by_name = (data or {}).get("seriesCountByMetricName") or []
        return sum(int(e.get("value", 0)) for e in by_name if e.get("name") == METRIC)
    return None


def same(key: str, a, b) -> tuple:
    """(equal?, reason) for extracted answers a (a system) and b (the reference)."""
    if a is None or b is None:
        return False, "no answer"
    if key == "sum_rate":
        if sorted(a) != sorted(b):
            return False, f"jobs differ: {len(a)} vs {len(b)} (only here: {sorted(set(a) - set(b))[:3]}, " \
                          f"missing: {sorted(set(b) - set(a))[:3]})"
        for job in sorted(b):
            if not runner.almost_equal(a[job], b[job]):
                return False, f"{job}: {a[job]!r} vs {b[job]!r}"
        return True, f"{len(a)} jobs"
    if key in ("count", "tsdb"):
        return (a == b), f"{a:g} vs {b:g}" if a != b else f"{a:g}"
    if key == "topk":
        ok = len(a) == len(b) and all(runner.almost_equal(x, y) for x, y in zip(a, b))
        return ok, (f"{[f'{x:g}' for x in a]} vs {[f'{y:g}' for y in b]}" if not ok else f"{len(a)} values")
    ok = a == b
    return ok, (f"{len(a)} vs {len(b)} entries" + ("" if len(a) != len(b) else ", contents differ")) if not ok \
        else f"{len(a)} entr{'y' if len(a) == 1 else 'ies'}"


def check_answers(raw: dict, exp: dict) -> None:
    """Fills raw["answers"][key][system] with "truth" (equal to what the data implies) and
    "vs_prometheus" (equal to Prometheus's answer), each [ok, why]; for status/tsdb
    "counted" (series of the metric the answer counts)."""
    res = raw["answers"] = {}
    got = {s: raw["systems"][s].get("requests") or {} for s in SYSTEMS}
    for key in ("count", "sum_rate", "topk", "labels", "label_values", "series", "tsdb"):
        vals = {s: extract(key, (got[s].get(key) or {}).get("answer")) for s in SYSTEMS if got[s].get(key)}
        ref = vals.get("prometheus")
        row = res[key] = {}
        for s, v in vals.items():
            cell = {}
            if key == "tsdb":
                cell["counted"] = v
            else:
                truth = exp[key]
                cell["truth"] = same(key, v, float(truth) if key == "count" else
                                     [float(x) for x in truth] if key == "topk" else truth)
                if s != "prometheus" and ref is not None:
                    cell["vs_prometheus"] = same(key, v, ref)
            row[s] = cell


# --- one system -----------------------------------------------------------------------------------------

def data_layout(path: str) -> dict:
    """Blocks (dirs with meta.json under blocks/) and bytes under any wal/ dir of Quiver's data dir."""
    blocks = wal = 0
    for root, _dirs, files in os.walk(path):
        rel = os.path.relpath(root, path).split(os.sep)
        if "meta.json" in files and rel[0] == "blocks":
            blocks += 1
        if any(part.lower() == "wal" for part in rel):
            wal += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return {"blocks": blocks, "wal_bytes": wal}


LOGS = {"quiver": ["quiver-import.log", "quiver.log"], "prometheus": ["promtool.log", "prometheus.log"],
        "victoria-metrics": ["victoria-metrics.log"]}


def log_tails(name: str, workdir: str, lines: int = 20) -> dict:
    """Last lines of a system's logs in the work dir, kept in the results (the work dir may be
    removed at the end)."""
    out = {}
    for fname in LOGS[name]:
        try:
            with open(os.path.join(workdir, fname), errors="replace") as f:
                out[fname] = [ln.rstrip("\n") for ln in f.readlines()[-lines:]]
        except OSError:
            pass
    return out


def make_server(name: str, args, workdir: str, data_dir: str) -> systems.Server:
    if name == "quiver":
        return systems.quiver(args.quiver, workdir, data_dir)
    if name == "prometheus":
        return systems.prometheus(workdir, data_dir)
    srv = systems.victoria_metrics(workdir, data_dir)
    # Its default limit of 300,000 series per query would refuse the fan-out queries (and the
    # visibility check) at 1M series; the other two have no such limit.
    srv.argv.append(f"-search.maxUniqueTimeseries={vm_series_limit(args.series)}")
    return srv


def vm_series_limit(series: int) -> int:
    return max(300_000, 2 * series)


def load_system(name: str, args, workdir: str, data: dict, rec: dict, live: dict) -> None:
    """Loads the dataset, then starts the server once on it and checks that it sees every
    series at the data end (VictoriaMetrics: this first start is the import), and stops it."""
    data_dir = rec["data_dir"] = os.path.join(workdir, name)
    shutil.rmtree(data_dir, ignore_errors=True)  # only our own per-system subdir
    n, end_s = data["series"], data["end_s"]
    if name == "prometheus":
        rec["load_method"] = "promtool tsdb create-blocks-from openmetrics --max-block-duration=54h"
        rec["load_s"] = round(systems.backfill_prometheus(data["om_path"], data_dir, workdir), 2)
    elif name == "quiver":
        rec["load_method"] = "quiver import (offline, into blocks)"
        rec["load_s"] = round(systems.import_quiver(args.quiver, data["om_path"], data_dir, workdir), 2)
        rec["layout_after_load"] = data_layout(data_dir)
        if rec["layout_after_load"]["blocks"] == 0:
            raise RuntimeError(f"quiver import left no blocks in {data_dir}")
    srv = live[name] = make_server(name, args, workdir, data_dir)
    try:
        rec["first_start"] = start_timed(srv, args.ready_timeout)
        if name == "victoria-metrics":
            rec["load_method"] = "POST /api/v1/import (JSON lines) + /internal/force_flush, until every series is visible"
            secs = systems.import_victoria_metrics(srv, [data["vm_path"]])
            secs += systems.wait_series_visible(srv, n, end_s, NOCACHE[name])
            rec["load_s"] = round(secs, 2)
            systems.wait_vm_merges(srv)
        else:
            systems.wait_series_visible(srv, n, end_s, NOCACHE[name])
        rec["series_visible_first_start"] = systems.instant_value(
            srv.port, 'count({__name__=~".+"})', end_s, NOCACHE[name])
    finally:
        srv.stop()
        live.pop(name, None)


def bench_system(name: str, args, workdir: str, data: dict, rec: dict, live: dict) -> None:
    """Restart (timed, RSS at ready), requests, peak RSS, stop."""
    srv = live[name] = make_server(name, args, workdir, rec["data_dir"])
    try:
        rec["restart"] = start_timed(srv, args.ready_timeout)
        rec["requests"] = time_requests(srv, name, requests(data["series"], data["end_s"]), args.reps, args.timeout)
        rec["peak_rss"] = srv.peak_rss()
        rec["rss_at_end"] = proc_status(srv.proc.pid).get("VmRSS")
    finally:
        srv.stop()
        live.pop(name, None)
    rec["disk"] = systems.disk_usage(rec["data_dir"])
    if name == "quiver":
        rec["layout_after_run"] = data_layout(rec["data_dir"])


# --- report ---------------------------------------------------------------------------------------------

def fmt_s(x) -> str:
    if x is None:
        return "—"
    ms = x * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def fmt_mb(x) -> str:
    return "n/a" if x is None else f"{x / 1e6:.0f} MB"


def short(text: str, n: int = 70) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= n else text[:n] + "…"


def status_cell(rec: dict):
    """'not run' / 'missing …' / 'failed …' when the system has no result, else None."""
    if rec.get("state") == "ok":
        return None
    state = rec.get("state")
    if state == "failed":
        return f"failed ({rec.get('error', '').split(':', 1)[0]})"  # the stage; the reason is below the table
    return str(state)


def targets(raw: dict) -> dict:
    """key -> (met: bool | None, text)."""
    q = raw["systems"]["quiver"]
    p = raw["systems"]["prometheus"]
    answers = raw.get("answers", {})
    out = {}
    if q.get("state") != "ok":
        why = f"Quiver {q.get('state')}"
        for k in ("ready", "rss", "count", "sum_rate", "topk", "labels", "label_values", "series"):
            out[k] = (False if q.get("state") != "not run" else None, why)
        return out
    r = q["restart"]
    out["ready"] = (r["ready_s"] <= READY_TARGET_S, f"≤ {READY_TARGET_S:g} s")
    rss = r.get("rss_at_ready")
    out["rss"] = (rss is not None and rss < RSS_TARGET_BYTES, f"< {RSS_TARGET_BYTES / 1e6:.0f} MB")
    for k in ("count", "sum_rate", "topk"):
        qm = q["requests"].get(k, {}).get("median_s")
        pm = (p.get("requests") or {}).get(k, {}).get("median_s") if p.get("state") == "ok" else None
        ans = answers.get(k, {}).get("quiver", {})
        right = all(v[0] for kk, v in ans.items() if kk in ("truth", "vs_prometheus"))
        if qm is None:
            out[k] = (False, "≤ Prometheus; Quiver failed")
        elif pm is None:
            out[k] = (None, f"≤ Prometheus; no Prometheus figure ({p.get('state')})")
        else:
            fast = qm <= pm
            text = f"≤ Prometheus; Prom/Quiver {pm / qm:.2f}×"
            if not right:
                text += "; Quiver's answer is wrong"
            out[k] = (fast and right, text)
    for k in ("labels", "label_values", "series"):
        qm = q["requests"].get(k, {}).get("median_s")
        out[k] = (qm is not None and qm < LABEL_TARGET_S, f"< {LABEL_TARGET_S * 1000:.0f} ms")
    return out


def met_cell(t) -> str:
    if t is None:
        return "—"
    ok, text = t
    return f"{'n/a' if ok is None else 'met' if ok else 'NOT met'}: {text}"


def answer_cell(cell: dict) -> str:
    parts = []
    if "truth" in cell:
        ok, why = cell["truth"]
        parts.append(f"= expected ({why})" if ok else f"≠ expected: {short(why, 60)}")
    if "vs_prometheus" in cell:
        ok, why = cell["vs_prometheus"]
        parts.append("= Prometheus" if ok else f"≠ Prometheus: {short(why, 60)}")
    return "; ".join(parts) or "—"


def markdown(raw: dict) -> str:
    m, ds, a = raw["machine"], raw.get("dataset", {}), raw["args"]
    v = raw.get("versions", {})
    sysr = raw["systems"]
    tg = targets(raw) if ds else {}
    lines = [
        HEADING, "",
        f"Generated by `benches/scale/million.py` on {raw['started']} — do not edit by hand.", "",
        f"Command: `{raw['command']}`. Machine: {m['nproc']} cores ({m['cpu']}), {m['mem_bytes'] / 2**30:.1f} GiB "
        f"RAM, {m['os']}. Versions: {v.get('quiver', 'n/a')}; {v.get('prometheus', 'n/a')}; "
        f"{v.get('victoria-metrics', 'n/a')}.", "",
    ]
    if ds:
        end = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ds["end_s"]))
        lines += [
            f"Dataset: {ds['series']:,} series of one counter family `{METRIC}` with labels `job` "
            f"({min(JOBS, ds['series'])} values), `instance` ({min(INSTANCES, ds['series'])}) and `pod` (unique), "
            f"{ds['samples_per_series']} samples each every {fmt_duration_ms(ds['step_ms'])} at x.337 s "
            f"({ds['samples']:,} samples), the last one {(ds['end_s'] * 1000 - ds['last_sample_ms']) / 1000:.3f} s "
            f"before {end} (the time of the instant queries, a few minutes before the run started); generated in {ds['seconds']:.1f} s ({ds['om_bytes'] / 1e6:.0f} MB OpenMetrics, "
            f"{ds['vm_bytes'] / 1e6:.0f} MB VictoriaMetrics JSON lines)"
            + ("" if ds["series"] == 1_000_000 else f" — **{ds['series']:,} series, not the 1M default**") + ".",
            "",
            "Method: one server at a time on 127.0.0.1 (the others stopped), each on its own data dir. After "
            "loading, each server was started once and checked to see every series at the data end "
            "(VictoriaMetrics: that start took the import, `/internal/force_flush` and its merges), then "
            "stopped by PID and started again: *restart to ready* is the time from spawning the process to the "
            "first 200 from its readiness endpoint (Quiver and Prometheus `/-/ready`, VictoriaMetrics "
            f"`/health`), polled every {READY_POLL_S * 1000:.0f} ms; *RSS at ready* is the process's VmRSS read "
            "right after that answer. The data had just been written and read, so the OS page cache held it "
            f"for every system. Each request then ran once untimed (warm-up) and {a['reps']} times timed; the "
            "figure is the median client wall time over a keep-alive connection, gzip accepted. Instant "
            "queries at the data end; `nocache=1` to Quiver and VictoriaMetrics (Prometheus has no results "
            "cache). Label endpoints without `start`/`end`. VictoriaMetrics ran with "
            f"`-search.maxUniqueTimeseries={vm_series_limit(ds['series'])}` (twice the series, at least its "
            "default of 300,000 series per query, which refuses the fan-out queries at 1M series); otherwise "
            "every server ran with the peer benchmark's flags (`benches/peer/systems.py`). MB = 10^6 bytes.", "",
        ]

    def row(label, fn, target=None):
        cells = []
        for s in SYSTEMS:
            bad = status_cell(sysr[s])
            if bad is not None:
                cells.append(bad)
                continue
            try:
                cells.append(fn(s, sysr[s]))
            except (KeyError, TypeError) as e:
                cells.append(f"n/a ({type(e).__name__})")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {met_cell(target)} |")

    def req_cell(key):
        def f(_s, rec):
            r = rec["requests"].get(key, {})
            cell = fmt_s(r.get("median_s")) if r.get("median_s") is not None else "failed"
            if r.get("failures"):
                cell += f" ({len(r['failures'])} failed: {short(r['failures'][0], 50)})"
            return cell
        return f

    lines += ["| metric | Quiver | Prometheus | VictoriaMetrics | target met? |", "|---|---|---|---|---|"]
    if ds:
        row("load into blocks / storage", lambda s, r: f"{r['load_s']:.1f} s")
        row("first start after load: to ready", lambda s, r: f"{r['first_start']['ready_s']:.2f} s"
            + (" (empty dir: the import ran after it)" if s == "victoria-metrics" else ""))
        row("**restart: process start to ready**", lambda s, r: f"{r['restart']['ready_s']:.2f} s", tg.get("ready"))
        row("**RSS at ready**", lambda s, r: fmt_mb(r["restart"]["rss_at_ready"]), tg.get("rss"))
        answers = raw.get("answers", {})
        for key, label, kind, _p, _params in requests(ds["series"], ds["end_s"]):
            if kind == "status":
                def tsdb_cell(s, r, _f=req_cell(key)):
                    counted = answers.get("tsdb", {}).get(s, {}).get("counted")
                    return f"{_f(s, r)}; counts {counted:,} series" if counted is not None else _f(s, r)
                row(label, tsdb_cell)
            else:
                row(label, req_cell(key), tg.get(key))
        for key, label, kind, _p, _params in requests(ds["series"], ds["end_s"]):
            if kind == "status":
                continue
            row(f"answer of {label}", lambda s, r, k=key: answer_cell(answers.get(k, {}).get(s, {})))
        row(f"first `count({METRIC})` after restart (warm-up)",
            lambda s, r: fmt_s(r["requests"]["count"]["first_s"]))
        row("peak RSS (VmHWM) at the end", lambda s, r: fmt_mb(r["peak_rss"]))
        row("data dir on disk (allocated)", lambda s, r: fmt_mb(r["disk"]["allocated"]))
    lines += ["", "Answers: *= expected* is equal to what the generated data implies (the series count, the "
              "five largest values, the label names, the job values, the one matching series, and each job's "
              "summed rate computed from the samples with Prometheus's extrapolation); *= Prometheus* is equal "
              "to Prometheus's answer. Floats within relative 1e-6. Checked on the warm-up request's answer.", ""]
    q = sysr["quiver"]
    if q.get("layout_after_load"):
        la, lr = q["layout_after_load"], q.get("layout_after_run", {})
        lines += [f"Quiver's data after `quiver import`: {la['blocks']} block(s), {la['wal_bytes']:,} WAL bytes"
                  + (f"; after the run: {lr['blocks']} block(s), {lr['wal_bytes']:,} WAL bytes." if lr else "."), ""]
    tsdb_counts = {s: c.get("counted") for s, c in raw.get("answers", {}).get("tsdb", {}).items()}
    if tsdb_counts:
        lines += ["`/api/v1/status/tsdb` answers differ in scope, so its times are not comparable: Prometheus "
                  "counts only its head block (empty after a restart over backfilled blocks), VictoriaMetrics "
                  "one day (`date`, default today), Quiver every series; the row gives how many series of "
                  f"`{METRIC}` each answer counted.", ""]
    for s in SYSTEMS:
        if sysr[s].get("state") != "ok":
            lines += [f"{TITLES[s]}: {sysr[s].get('state')} — {sysr[s].get('error', '')}", ""]
            for log_name, tail in sysr[s].get("log_tails", {}).items():
                if tail:
                    lines += [f"Last lines of {log_name}:", "", "```", *tail[-8:], "```", ""]
    cpu = raw.get("cpu")
    if cpu and raw.get("total_seconds"):
        capacity = raw["total_seconds"] * m["nproc"]
        share = cpu["others_s"] / capacity if capacity else 0
        lines += [f"CPU during the run ({raw['total_seconds']:.0f} s): this script and what it started used "
                  f"{cpu['harness_s']:.0f} CPU-s, other processes {cpu['others_s']:.0f} CPU-s ({share:.0%} of "
                  f"{capacity:.0f} available)" + (" — they competed with the benchmark, so its times are "
                  "inflated." if share > 0.05 else "."), ""]
    if raw.get("warnings"):
        lines += ["Warnings: " + "; ".join(raw["warnings"]), ""]
    return "\n".join(lines)


def update_docs(path: str, section: str) -> None:
    """Replaces the text between the scale-bench markers (appending them if absent)."""
    text = open(path).read() if os.path.exists(path) else ""
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{START}\n{section.rstrip()}\n{END}{tail}")


def write_json(raw: dict) -> str:
    d = os.path.join(HERE, "results")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, time.strftime("scale-%Y%m%d-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump(raw, f, indent=1, default=str)
    return path


# --- main -----------------------------------------------------------------------------------------------

def check_commands(args, raw: dict) -> None:
    """Marks systems whose commands are missing (after trying apt-get unless --skip-install)."""
    sysr = raw["systems"]
    if not os.path.exists(args.quiver) and "quiver" in args.systems:
        sysr["quiver"].update(state="missing", error=f"no binary at {args.quiver} (cargo build --release)")
    wanted = [c for s in args.systems if s != "quiver" for c in COMMANDS[s]]
    if any(shutil.which(c) is None for c in wanted):
        if args.skip_install:
            raw["installed"] = "--skip-install"
        else:
            try:
                raw["installed"] = systems.ensure_packages(False)
            except (subprocess.CalledProcessError, OSError, SystemExit) as e:
                raw["installed"] = f"apt-get failed: {e}"
    for s in args.systems:
        gone = [c for c in COMMANDS[s] if shutil.which(c) is None]
        if gone:
            sysr[s].update(state="missing", error=f"command(s) not found: {', '.join(gone)}")


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.time()
    cpu0 = systems.cpu_snapshot()
    raw = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": " ".join(["python3", os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])
        if argv is None else "million.main(" + repr(argv) + ")",
        "args": vars(args), "machine": systems.machine(), "loadavg_start": os.getloadavg()[0],
        "systems": {s: {"state": "pending" if s in args.systems else "not run",
                        **({} if s in args.systems else {"error": "not in --systems"})} for s in SYSTEMS},
    }
    sysr = raw["systems"]
    own_work = args.work is None
    workdir = args.work or tempfile.mkdtemp(prefix="quiver-scale-", dir="/var/tmp")
    os.makedirs(workdir, exist_ok=True)
    log(f"work dir {workdir}")
    live = {}
    try:
        check_commands(args, raw)
        raw["versions"] = systems.versions(args.quiver, REPO) if os.path.exists(args.quiver) else \
            {**systems.versions("/bin/true", REPO), "quiver": f"missing ({args.quiver})"}
        others = systems.busy_peers()
        if others:
            raw["warnings"] = [f"other prometheus/victoria-metrics processes running: {others}"]
            log(f"WARNING: {raw['warnings'][0]}")
        # Data ends a few minutes before now (whole minute): VictoriaMetrics ignores the last
        # 30 s (-search.latencyOffset) and nothing is still "in the future" for anyone.
        end_s = int(started) // 60 * 60 - 180
        log(f"generating {args.series:,} series x {args.samples} samples")
        data = generate(workdir, args.series, args.samples, args.step, end_s)
        raw["dataset"] = {k: val for k, val in data.items() if not k.endswith("_path")}
        log(f"dataset: {data['om_bytes'] / 1e6:.0f} MB OpenMetrics, {data['vm_bytes'] / 1e6:.0f} MB VM JSON "
            f"in {data['seconds']:.1f}s")
        exp = raw["expected"] = expected(data)

        todo = [s for s in args.systems if sysr[s]["state"] == "pending"]
        for name in todo:
            log(f"== load {name} (load average {os.getloadavg()[0]:.2f})")
            try:
                load_system(name, args, workdir, data, sysr[name], live)
            except Exception as e:  # reported, and the other systems still run
                sysr[name].update(state="failed", error=f"load: {e}", log_tails=log_tails(name, workdir))
                log(f"{name} failed to load: {e}")
        if not args.keep:
            for p in (data["om_path"], data["vm_path"]):
                os.remove(p)
        for name in todo:
            if sysr[name]["state"] != "pending":
                continue
            log(f"== benchmark {name} (load average {os.getloadavg()[0]:.2f})")
            sysr[name]["loadavg_at_start"] = os.getloadavg()[0]
            try:
                bench_system(name, args, workdir, data, sysr[name], live)
                sysr[name]["state"] = "ok"
            except Exception as e:
                sysr[name].update(state="failed", error=f"benchmark: {e}", log_tails=log_tails(name, workdir))
                log(f"{name} failed: {e}")
        check_answers(raw, exp)
    finally:
        for srv in list(live.values()):
            srv.stop()
        if args.keep:
            log(f"kept {workdir}")
        elif own_work:
            shutil.rmtree(workdir, ignore_errors=True)
        else:  # a caller-given work dir: remove only what this run put there
            for p in ("data.om", "vm.jsonl"):
                if os.path.exists(os.path.join(workdir, p)):
                    os.remove(os.path.join(workdir, p))
            for name in SYSTEMS:
                shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    raw["total_seconds"] = round(time.time() - started, 1)
    raw["cpu"] = systems.cpu_since(cpu0)
    raw["targets"] = {k: list(v) for k, v in targets(raw).items()}
    md = markdown(raw)
    print("\n" + md)
    path = write_json(raw)
    log(f"raw results: {os.path.relpath(path, REPO)}")
    if args.write_docs:
        update_docs(args.docs, md)
        log(f"updated {os.path.relpath(args.docs, REPO)}")
    bad = [s for s in args.systems if sysr[s]["state"] != "ok"]
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
