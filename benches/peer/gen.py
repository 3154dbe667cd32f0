"""Deterministic benchmark dataset: node-exporter-like hosts, HTTP services with classic
histograms, and high-cardinality Kubernetes pods, one sample per series every 15 s.

Writes two renderings of the same samples:
  data.om        OpenMetrics (seconds timestamps with fractions, `# TYPE` lines, `# EOF`), one
                 series after the other in time order, families contiguous; read by
                 `promtool tsdb create-blocks-from openmetrics` and `quiver import`.
  vm-<k>.jsonl   VictoriaMetrics `/api/v1/import` JSON lines, one line per series.

Every scrape sits at x.337 s so that no query window edge (always whole seconds) falls on a
sample; Prometheus 2.42's left-closed and 3.x's left-open windows then agree.

Speed matters (~58 M samples at the default size): all series share one timestamp vector, so
the timestamp suffixes of the OpenMetrics lines and the whole VictoriaMetrics `timestamps`
array are formatted once; label prefixes are formatted once per series; each worker process
builds a series' text with one `join` and writes it through a large buffer.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import signal
import time
from dataclasses import dataclass, field
from itertools import accumulate

SCRAPE_S = 15
OFFSET_MS = 337  # sub-second offset of every scrape
CPUS_PER_HOST = 4
CPU_MODES = ["idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice"]
# Share of a CPU second spent in each mode (idle takes the rest).
MODE_SHARE = {"user": 0.22, "system": 0.08, "iowait": 0.02, "irq": 0.005,
              "softirq": 0.01, "steal": 0.003, "nice": 0.001}
NET_DEVICES = ["eth0", "eth1", "lo"]
FILESYSTEMS = [("/", "/dev/vda1", "ext4"), ("/var/lib/data", "/dev/vdb1", "xfs")]
APP_JOBS = ["api", "web", "checkout"]
PATHS = ["/api/v1/orders", "/api/v1/users", "/api/v1/cart", "/login", "/health"]
METHODS = ["GET", "POST"]
STATUSES = ["200", "404", "500"]
STATUS_SHARE = {"200": 0.95, "404": 0.04, "500": 0.01}
BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
NAMESPACES = ["team-a", "team-b", "team-c", "team-d", "team-e", "kube-system"]
DEPLOYMENTS = ["frontend", "cart", "orders", "search", "payments", "worker", "gateway", "auth"]
# Series per host: node exporter (cpu, memory, load, network, filesystem, up) + application
# (requests, histogram buckets/sum/count, build info, up).
NODE_SERIES = CPUS_PER_HOST * len(CPU_MODES) + 2 + 1 + 2 * len(NET_DEVICES) + 2 * len(FILESYSTEMS) + 1
APP_SERIES = (len(METHODS) * len(PATHS) * len(STATUSES) + len(PATHS) * (len(BUCKETS) + 2) + 1 + 1)
SERIES_PER_HOST = NODE_SERIES + APP_SERIES
SERIES_PER_POD = 2
LATENCY_LEVELS = 16  # quantised latency regimes; bucket fractions precomputed per level


@dataclass
class Unit:
    """A group of series generated together (one histogram shares its request counts)."""
    family: str
    kind: str  # generator name in GENERATORS
    labels: dict
    n_series: int
    first_of_family: bool = False
    seed: int = 0


@dataclass
class Plan:
    hosts: int
    pods: int
    units: list = field(default_factory=list)
    families: dict = field(default_factory=dict)  # family -> OpenMetrics type

    @property
    def n_series(self) -> int:
        return sum(u.n_series for u in self.units)


def make_plan(series: int, seed: int) -> Plan:
    """About `series` series: 20 % pod series (high-cardinality `pod` label), the rest hosts."""
    pods = max(1, round(0.2 * series / SERIES_PER_POD))
    hosts = max(1, round((series - SERIES_PER_POD * pods) / SERIES_PER_HOST))
    plan = Plan(hosts, pods)
    rnd = random.Random(seed)
    hostnames = [f"host-{i:03d}" for i in range(hosts)]

    def add(family, ftype, kind, labels, n=1):
        if family not in plan.families:
            plan.families[family] = ftype
            first = True
        else:
            first = False
        plan.units.append(Unit(family, kind, labels, n, first, rnd.getrandbits(48)))

    # Families are contiguous: one loop per family.
    for h in hostnames:
        for cpu in range(CPUS_PER_HOST):
            for mode in CPU_MODES:
                add("node_cpu_seconds", "counter", "cpu",
                    {"cpu": str(cpu), "instance": f"{h}:9100", "job": "node", "mode": mode})
    for h in hostnames:
        add("node_memory_MemAvailable_bytes", "gauge", "mem_avail", {"instance": f"{h}:9100", "job": "node"})
    for h in hostnames:
        add("node_memory_MemTotal_bytes", "gauge", "mem_total", {"instance": f"{h}:9100", "job": "node"})
    for h in hostnames:
        add("node_load1", "gauge", "load", {"instance": f"{h}:9100", "job": "node"})
    for direction in ("receive", "transmit"):
        for h in hostnames:
            for dev in NET_DEVICES:
                add(f"node_network_{direction}_bytes", "counter", "net",
                    {"device": dev, "instance": f"{h}:9100", "job": "node"})
    for what in ("avail", "size"):
        for h in hostnames:
            for mnt, dev, fs in FILESYSTEMS:
                add(f"node_filesystem_{what}_bytes", "gauge", f"fs_{what}",
                    {"device": dev, "fstype": fs, "instance": f"{h}:9100", "job": "node", "mountpoint": mnt})
    for i, h in enumerate(hostnames):
        add("up", "gauge", "up", {"instance": f"{h}:9100", "job": "node"})
        add("up", "gauge", "up", {"instance": f"{h}:8080", "job": APP_JOBS[i % len(APP_JOBS)]})
    for i, h in enumerate(hostnames):
        job = APP_JOBS[i % len(APP_JOBS)]
        for path in PATHS:
            for method in METHODS:
                for status in STATUSES:
                    add("http_requests", "counter", "http",
                        {"instance": f"{h}:8080", "job": job, "method": method, "path": path, "status": status})
    for i, h in enumerate(hostnames):
        job = APP_JOBS[i % len(APP_JOBS)]
        for path in PATHS:
            add("http_request_duration_seconds", "histogram", "histogram",
                {"instance": f"{h}:8080", "job": job, "path": path}, len(BUCKETS) + 2)
    for i, h in enumerate(hostnames):
        add("app_build_info", "gauge", "info",
            {"instance": f"{h}:8080", "job": APP_JOBS[i % len(APP_JOBS)],
             "version": f"1.{4 + i % 3}.{i % 7}", "goversion": "go1.21.5"})
    pod_labels = []
    for p in range(pods):
        ns = NAMESPACES[p % len(NAMESPACES)]
        dep = DEPLOYMENTS[rnd.randrange(len(DEPLOYMENTS))]
        pod = f"{dep}-{rnd.getrandbits(36):09x}-{rnd.getrandbits(20):05x}"
        pod_labels.append({"container": dep, "namespace": ns, "pod": pod})
    for lab in pod_labels:
        add("container_memory_working_set_bytes", "gauge", "pod_mem", dict(lab))
    for lab in pod_labels:
        add("container_cpu_usage_seconds", "counter", "pod_cpu", dict(lab))
    return plan


# --- value generators: each returns [(sample_name, labels, [value strings])] -------------------

@dataclass
class Ctx:
    """Shared by all generators of one run."""
    n: int            # samples per series
    diurnal: list     # per-step load multiplier, same for every series
    start_ms: int


def _resets(rnd: random.Random, n: int, per_day: float) -> list:
    """Step indexes where a process restarted (counters restart from zero)."""
    expected = per_day * n / (86400 / SCRAPE_S)
    k = int(expected) + (1 if rnd.random() < expected - int(expected) else 0)
    return sorted(rnd.randrange(1, n) for _ in range(k)) if n > 1 else []


def _uptime_steps(rnd: random.Random) -> int:
    """Scrapes since a counter's process started: 1 to 30 days before the dataset begins.
    Counters start from that history rather than from 0, as on any long-running fleet. (A
    counter starting near 0 inside a rate window is where Prometheus 2.42 and later versions
    differ: prometheus/prometheus#13725 (2024) swapped the order of the zero-point and the
    half-interval limits of rate's extrapolation; Quiver follows the newer order.)"""
    return int(rnd.uniform(1, 30) * 86400 / SCRAPE_S)


def _counter(incs: list, resets: list, start: int) -> list:
    """Cumulative sums of `incs` starting at `start`, restarting from 0 at each reset index."""
    out, prev = [], 0
    for r in resets + [len(incs)]:
        seg = list(accumulate(incs[prev:r], initial=start if prev == 0 else 0))[1:]
        out.extend(seg)
        prev = r
    return out


def _cents(values: list) -> list:
    return ["%.2f" % (v / 100) for v in values]


def gen_cpu(u: Unit, c: Ctx, rnd: random.Random):
    mode = u.labels["mode"]
    busy = 0.2 + 0.4 * random.Random(u.labels["instance"]).random()  # host utilisation
    busy_total = sum(MODE_SHARE.values())
    cs = SCRAPE_S * 100  # node exporter reports centiseconds (USER_HZ)
    if mode == "idle":
        shares = [1 - busy * d for d in c.diurnal]
    else:
        shares = [busy * d * MODE_SHARE[mode] / busy_total for d in c.diurnal]
    incs = [int(cs * s * (0.7 + 0.6 * x)) for s, x in zip(shares, [rnd.random() for _ in range(c.n)])]
    vals = _counter(incs, _resets(rnd, c.n, 0.05), rnd.randrange(10**6, 10**9))
    return [("node_cpu_seconds_total", u.labels, _cents(vals))]


def _mem_total_pages(instance: str) -> int:
    return 2 ** random.Random("mem" + instance).randrange(20, 24)  # 4 to 32 GiB


def gen_mem_avail(u: Unit, c: Ctx, rnd: random.Random):
    total = _mem_total_pages(u.labels["instance"])
    v, out = int(total * (0.3 + 0.4 * rnd.random())), []
    lo, hi, stepsize = total // 20, total * 9 // 10, total // 500
    for x in [rnd.random() for _ in range(c.n)]:
        v = min(hi, max(lo, v + int((x - 0.5) * stepsize)))
        out.append(str(v * 4096))
    return [("node_memory_MemAvailable_bytes", u.labels, out)]


def gen_mem_total(u: Unit, c: Ctx, rnd: random.Random):
    return [("node_memory_MemTotal_bytes", u.labels, [str(4096 * _mem_total_pages(u.labels["instance"]))] * c.n)]


def gen_load(u: Unit, c: Ctx, rnd: random.Random):
    base = 0.5 + 3 * rnd.random()
    return [("node_load1", u.labels,
             ["%.2f" % (base * d * (0.6 + 0.8 * x)) for d, x in zip(c.diurnal, [rnd.random() for _ in range(c.n)])])]


def gen_net(u: Unit, c: Ctx, rnd: random.Random):
    rate = (2e4 if u.labels["device"] == "lo" else 2e6) * (0.2 + rnd.random())
    per_step = rate * SCRAPE_S
    incs = [int(per_step * d * (0.5 + x)) for d, x in zip(c.diurnal, [rnd.random() for _ in range(c.n)])]
    vals = _counter(incs, _resets(rnd, c.n, 0.05), rnd.randrange(10**9, 10**12))
    return [(u.family + "_total", u.labels, list(map(str, vals)))]


def gen_fs_avail(u: Unit, c: Ctx, rnd: random.Random):
    blocks = 2**rnd.randrange(24, 28)
    v = int(blocks * (0.2 + 0.6 * rnd.random()))
    out = []
    for x in [rnd.random() for _ in range(c.n)]:
        v -= int(x * 40)  # slowly filling
        if x > 0.9995:  # log rotation frees space
            v += blocks // 50
        v = max(0, min(blocks, v))
        out.append(str(v * 4096))
    return [("node_filesystem_avail_bytes", u.labels, out)]


def gen_fs_size(u: Unit, c: Ctx, rnd: random.Random):
    return [("node_filesystem_size_bytes", u.labels, [str(4096 * 2**28)] * c.n)]


def gen_up(u: Unit, c: Ctx, rnd: random.Random):
    out = ["1"] * c.n
    if rnd.random() < 0.1 and c.n > 40:  # a short outage on some targets
        s, k = rnd.randrange(c.n - 20), rnd.randrange(4, 20)
        out[s:s + k] = ["0"] * k
    return [("up", u.labels, out)]


def gen_http(u: Unit, c: Ctx, rnd: random.Random):
    path_weight = 3.0 if u.labels["path"] == "/health" else 1.0
    method_weight = 1.0 if u.labels["method"] == "GET" else 0.3
    rate = 20 * path_weight * method_weight * STATUS_SHARE[u.labels["status"]] * (0.5 + rnd.random())
    per_step = rate * SCRAPE_S
    incs = [int(per_step * d * (0.5 + x)) for d, x in zip(c.diurnal, [rnd.random() for _ in range(c.n)])]
    # Restarts of the instance: every counter of one instance resets at the same steps.
    resets = _resets(random.Random(u.labels["instance"]), c.n, 1.0)
    vals = _counter(incs, resets, int(per_step * _uptime_steps(rnd)))
    return [("http_requests_total", u.labels, list(map(str, vals)))]


def _bucket_fractions() -> list:
    """Cumulative share of requests at or under each bucket bound, per latency level
    (log-normal latency whose median grows with the level)."""
    table = []
    for level in range(LATENCY_LEVELS):
        median = 0.03 * 1.25**level
        row = []
        for le in BUCKETS:
            if le == "+Inf":
                row.append(1.0)
            else:
                z = (math.log(float(le)) - math.log(median)) / 0.9
                row.append(0.5 * (1 + math.erf(z / math.sqrt(2))))
        table.append((row, median * math.exp(0.9**2 / 2)))  # fractions, mean latency
    return table


BUCKET_TABLE = _bucket_fractions()


def gen_histogram(u: Unit, c: Ctx, rnd: random.Random):
    rate = 15 * (3.0 if u.labels["path"] == "/health" else 1.0) * (0.5 + rnd.random())
    per_step = rate * SCRAPE_S
    base_level = rnd.randrange(0, LATENCY_LEVELS // 2)
    counts = [int(per_step * d * (0.5 + x)) for d, x in zip(c.diurnal, [rnd.random() for _ in range(c.n)])]
    # Latency follows load: busier steps sit in slower regimes.
    levels = [min(LATENCY_LEVELS - 1, base_level + int(4 * (d - 0.5) + 3 * x))
              for d, x in zip(c.diurnal, [rnd.random() for _ in range(c.n)])]
    resets = _resets(random.Random(u.labels["instance"]), c.n, 1.0)
    history = int(per_step * _uptime_steps(rnd))  # requests before the dataset starts
    fractions, mean = BUCKET_TABLE[base_level]
    out = []
    for i, le in enumerate(BUCKETS):
        incs = [int(round(n * BUCKET_TABLE[lv][0][i])) for n, lv in zip(counts, levels)]
        labels = dict(u.labels, le=le)
        start = int(round(history * fractions[i]))
        out.append(("http_request_duration_seconds_bucket", labels, list(map(str, _counter(incs, resets, start)))))
    # The sum is kept in integer microseconds so that it does not drift from rounding.
    sums = _counter([int(n * BUCKET_TABLE[lv][1] * 1e6) for n, lv in zip(counts, levels)], resets,
                    int(history * mean * 1e6))
    out.append(("http_request_duration_seconds_sum", u.labels, ["%.6f" % (s / 1e6) for s in sums]))
    out.append(("http_request_duration_seconds_count", u.labels, out[len(BUCKETS) - 1][2]))
    return out


def gen_info(u: Unit, c: Ctx, rnd: random.Random):
    return [("app_build_info", u.labels, ["1"] * c.n)]


def gen_pod_mem(u: Unit, c: Ctx, rnd: random.Random):
    v = rnd.randrange(10_000, 500_000)  # pages
    out = []
    for x in [rnd.random() for _ in range(c.n)]:
        v = max(1000, v + int((x - 0.5) * v * 0.02))
        out.append(str(v * 4096))
    return [("container_memory_working_set_bytes", u.labels, out)]


def gen_pod_cpu(u: Unit, c: Ctx, rnd: random.Random):
    per_step = SCRAPE_S * 1e6 * (0.05 + rnd.random())  # microseconds of CPU per scrape
    incs = [int(per_step * d * (0.5 + x)) for d, x in zip(c.diurnal, [rnd.random() for _ in range(c.n)])]
    vals = _counter(incs, _resets(rnd, c.n, 0.3), int(per_step * _uptime_steps(rnd)))
    return [("container_cpu_usage_seconds_total", u.labels, ["%.6f" % (v / 1e6) for v in vals])]


GENERATORS = {
    "cpu": gen_cpu, "mem_avail": gen_mem_avail, "mem_total": gen_mem_total, "load": gen_load,
    "net": gen_net, "fs_avail": gen_fs_avail, "fs_size": gen_fs_size, "up": gen_up,
    "http": gen_http, "histogram": gen_histogram, "info": gen_info,
    "pod_mem": gen_pod_mem, "pod_cpu": gen_pod_cpu,
}


# --- rendering ----------------------------------------------------------------------------------

def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _om_prefix(name: str, labels: dict) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} "


def _vm_metric(name: str, labels: dict) -> str:
    return json.dumps({"__name__": name, **labels}, separators=(",", ":"))


def _worker(args) -> dict:
    """Renders units[lo:hi] into part files; returns sample and series counts."""
    plan, lo, hi, ctx, om_path, vm_path, last = args
    ts_suffix = [f" {t // 1000}.{t % 1000:03d}\n" for t in
                 (ctx.start_ms + k * SCRAPE_S * 1000 for k in range(ctx.n))]
    vm_ts = ",".join(str(ctx.start_ms + k * SCRAPE_S * 1000) for k in range(ctx.n))
    samples = series = 0
    with open(om_path, "w", buffering=1 << 24) as om, open(vm_path, "w", buffering=1 << 24) as vm:
        for u in plan.units[lo:hi]:
            if u.first_of_family:
                om.write(f"# TYPE {u.family} {plan.families[u.family]}\n")
            for name, labels, vals in GENERATORS[u.kind](u, ctx, random.Random(u.seed)):
                assert len(vals) == ctx.n, (name, labels, len(vals))
                prefix = _om_prefix(name, labels)
                om.write("".join([prefix + v + t for v, t in zip(vals, ts_suffix)]))
                vm.write(f'{{"metric":{_vm_metric(name, labels)},"values":[{",".join(vals)}],"timestamps":[{vm_ts}]}}\n')
                samples += len(vals)
                series += 1
        if last:
            om.write("# EOF\n")
    return {"samples": samples, "series": series}


def _split(plan: Plan, parts: int) -> list:
    """Contiguous unit ranges with about equal series counts."""
    total, bounds, acc, lo = plan.n_series, [], 0, 0
    for i, u in enumerate(plan.units):
        acc += u.n_series
        if len(bounds) < parts - 1 and acc >= total * (len(bounds) + 1) / parts:
            bounds.append((lo, i + 1))
            lo = i + 1
    bounds.append((lo, len(plan.units)))
    return bounds


def _append_file(dst: str, src: str) -> None:
    """dst += src inside the kernel (no copy through Python)."""
    with open(src, "rb") as s, open(dst, "r+b") as d:
        pos, left = os.fstat(d.fileno()).st_size, os.fstat(s.fileno()).st_size
        while left > 0:  # copy_file_range refuses O_APPEND files: explicit offsets instead
            n = os.copy_file_range(s.fileno(), d.fileno(), min(left, 1 << 30), offset_dst=pos)
            if n == 0:
                raise OSError(f"copy_file_range stopped with {left} bytes left")
            left -= n
            pos += n
    os.remove(src)


def generate(workdir: str, series: int, hours: float, end_ms: int, seed: int, workers: int = 2) -> dict:
    """Writes data.om and vm-*.jsonl into workdir; samples end just before `end_ms`
    (a whole second); the last scrape is at end_ms - 15 s + 0.337 s."""
    t0 = time.monotonic()
    plan = make_plan(series, seed)
    n = int(hours * 3600 // SCRAPE_S)
    start_ms = end_ms - n * SCRAPE_S * 1000 + OFFSET_MS
    # Daily load curve: peak in the afternoon (UTC), trough at night.
    diurnal = [1.0 + 0.5 * math.sin(2 * math.pi * (((start_ms / 1000 + k * SCRAPE_S) % 86400) / 86400 - 0.375))
               for k in range(n)]
    ctx = Ctx(n, diurnal, start_ms)
    ranges = _split(plan, workers)
    om_parts = [os.path.join(workdir, f"data.om.part{i}") for i in range(len(ranges))]
    vm_parts = [os.path.join(workdir, f"vm-{i}.jsonl") for i in range(len(ranges))]
    jobs = [(plan, lo, hi, ctx, om_parts[i], vm_parts[i], i == len(ranges) - 1)
            for i, (lo, hi) in enumerate(ranges)]
    if workers > 1:
        # Workers take the default SIGTERM action: the pool terminates them when done, and the
        # harness's own handler (inherited through fork) would print a traceback for each.
        with multiprocessing.get_context("fork").Pool(workers, initializer=signal.signal,
                                                      initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
            results = pool.map(_worker, jobs)
    else:
        results = [_worker(j) for j in jobs]
    om_path = os.path.join(workdir, "data.om")
    os.replace(om_parts[0], om_path)
    for p in om_parts[1:]:
        _append_file(om_path, p)
    return {
        "hosts": plan.hosts,
        "pods": plan.pods,
        "series": sum(r["series"] for r in results),
        "samples": sum(r["samples"] for r in results),
        "samples_per_series": n,
        "first_sample_ms": start_ms,
        "last_sample_ms": start_ms + (n - 1) * SCRAPE_S * 1000,
        "om_path": om_path,
        "om_bytes": os.path.getsize(om_path),
        "vm_paths": vm_parts,
        "vm_bytes": sum(os.path.getsize(p) for p in vm_parts),
        "seconds": time.monotonic() - t0,
    }


if __name__ == "__main__":  # quick manual run: python3 gen.py DIR SERIES HOURS
    import sys
    d, s, h = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    os.makedirs(d, exist_ok=True)
    end = int(time.time()) // 120 * 120 * 1000
    print(generate(d, s, h, end, seed=42))
