#!/usr/bin/env python3
"""Peak RSS of Quiver while it compacts one day of 10k series (issue 12: under 512 MB).

    python3 benches/compaction/day.py [--series N] [--limits 64MiB,256MiB] [--write-docs] ...
    make bench-compaction ARGS="..."

1. Dataset: benches/peer/gen.py (the peer benchmark's generator, imported, fixed seed) writes
   about --series series (node-exporter hosts, an HTTP service with classic histograms,
   Kubernetes pods: counters and gauges with realistic labels) x --hours (24) at 15 s, 5,760
   samples per series, as OpenMetrics text. The data lies in one whole UTC day that ended more
   than Quiver's out-of-order window (3 h) ago, so a server treats that day as sealed and
   compacts it into one block of `--max-block-duration` (1d).
2. Source blocks: `quiver import --block-duration 2h --max-block-duration 2h` loads the text
   offline. Import always ends with `compact_all`; capping the largest window at the block
   window makes that step merge only the 2 h blocks its own flushes (one per
   `--head-max-samples`, 20M) cut from the same window, so it leaves one uncompacted 2 h block
   per window: 12 blocks for a day, each holding every series. That is the layout a server
   reaches after a day of remote write. Import leaves the replaced blocks' empty dirs behind;
   they are removed. This source data dir is never modified: every measured run gets a copy
   (block files hard-linked — blocks are immutable and compaction only deletes files — the
   rest copied).
3. Measured process: `quiver serve` on the copy, 127.0.0.1 on a free port, with
   `--compaction-interval` --delay (5 s) and `--compaction-memory-limit` L. Its head and WAL
   are empty (import writes no WAL), so after startup it does nothing but wait, and the first
   compaction, --delay after storage is ready, merges the 12 blocks into one. No request is
   sent to it until the compaction has finished. Why a server and not `quiver import`: import
   has no way to skip its own ingest (parsing, head, flushes happen in the same process and
   leave their high-water mark), and a server is where compaction runs in production.
4. Memory: right after readiness the script reads VmRSS (RSS at ready), then resets the
   process's peak RSS (`echo 5 > /proc/PID/clear_refs`), so VmHWM read when the compaction is
   done is the peak *during* the idle wait and the compaction only, not during startup. A
   monitor thread also samples VmRSS, RssAnon, RssFile and CPU time (/proc/PID/status, stat)
   every --poll s, for the timeline in the raw JSON and as a cross-check of VmHWM (a sampled
   maximum can only be lower). The compaction starts at the first sample after the scheduled
   time in which the process used more than 30 % of a core (it is idle before); it ends at the
   log line `compaction merged=1 ... deleted=12` (merge written, block swapped in, parents
   deleted). MB = 10^6 bytes, MiB = 2^20.
5. Correctness: after the server is stopped (by PID), `quiver sql` counts per series over the
   compacted data dir — number of series, samples, min/max samples per series, first/last
   timestamp, sum of values — and must equal the same query over the source blocks (sum
   within relative 1e-9) and the generated dataset; exactly one live block (a dir with
   meta.json) must remain, listing the 12 source blocks as its parents.
6. Every limit in --limits runs --reps times (3), each run on its own copy, the limits
   interleaved: peak RSS varies by tens of MB between identical runs, so the table gives the
   largest peak and the range. Report: a Markdown table on stdout (with --write-docs also in
   docs/benchmarks.md between the compaction-bench markers), raw JSON (every run, with its
   RSS / CPU timeline) in benches/compaction/results/ (git-ignored). Work dir under /var/tmp,
   removed at the end unless --keep (a kept work dir's `source` data dir can be reused with
   --source). Standard library only.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "benches", "peer"))

import gen  # noqa: E402  (the peer benchmark's dataset generator)
import systems  # noqa: E402  (servers, free ports, machine facts, CPU accounting, disk usage)
from systems import log  # noqa: E402

START, END = "<!-- compaction-bench:start -->", "<!-- compaction-bench:end -->"
HEADING = "## Compacting a day of 10k series (issue 12)"
DAY_MS = 86_400_000
OOO_WINDOW_MS = 3 * 3_600_000  # Quiver's default --ooo-window: younger windows are not sealed
DEFAULT_LIMIT = 256 << 20      # Quiver's default --compaction-memory-limit
REL_TOL = 1e-9
BUSY_SHARE = 0.3  # CPU share of one core that marks the compaction's start

# One query, per series first: any sample lost, duplicated or moved shows in some column.
CHECK_SQL = ("SELECT count(*) AS series, sum(n) AS samples, min(n) AS min_per_series, "
             "max(n) AS max_per_series, min(lo) AS min_t, max(hi) AS max_t, sum(s) AS value_sum FROM "
             "(SELECT series_id, count(*) AS n, sum(value) AS s, min(timestamp) AS lo, max(timestamp) AS hi "
             "FROM samples GROUP BY series_id) AS per_series")
CHECK_EXACT = ["series", "samples", "min_per_series", "max_per_series", "min_t", "max_t"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """'256MiB', '512MB', '1GiB' or plain bytes -> bytes (KB/MB/GB decimal, KiB/MiB/GiB binary)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB, 512MB, 1GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_duration(text: str) -> int:
    """'2h', '5s', '500ms' or plain seconds -> milliseconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 2h, 5s)")
    return int(round(float(m.group(1)) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[m.group(2) or "s"]))


def fmt_size(b: int) -> str:
    for unit, n in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= n and b % n == 0:
            return f"{b // n} {unit}"
    return f"{b:,} B"


def fmt_s(x) -> str:
    return "—" if x is None else f"{x:.1f} s"


def fmt_mb(b) -> str:
    return "—" if b is None else f"{b / 1e6:.0f} MB"


def prom_dur(ms: int) -> str:
    """Milliseconds as a Prometheus duration string (Quiver's flags): 7200000 -> '2h'."""
    for unit, n in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % n == 0:
            return f"{ms // n}{unit}"
    return f"{ms}ms"


def parse_args(argv=None):
    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    p.add_argument("--series", type=int, default=10_000, help="about this many series (gen.py's plan)")
    p.add_argument("--hours", type=float, default=24, help="hours of data (at most one day: one compaction window)")
    p.add_argument("--seed", type=int, default=20240601, help="dataset RNG seed (the peer benchmark's)")
    p.add_argument("--gen-workers", type=int, default=2, help="processes generating the dataset")
    p.add_argument("--block-duration", type=parse_duration, default="2h",
                   help="window of the source blocks (import's --block-duration and --max-block-duration)")
    p.add_argument("--limits", default="256MiB",
                   help="comma-separated --compaction-memory-limit values, one measured run each "
                        "(Quiver's default is 256MiB)")
    p.add_argument("--reps", type=int, default=3,
                   help="measured runs per limit, each on a fresh copy, interleaved (limit order repeated); "
                        "peak RSS varies by tens of MB between identical runs")
    p.add_argument("--rss-target", type=parse_size, default="512MB", help="the issue's peak-RSS target")
    p.add_argument("--delay", type=float, default=5,
                   help="server's --compaction-interval, seconds: the idle wait between readiness and the compaction")
    p.add_argument("--poll", type=float, default=0.05, help="RSS / CPU sampling interval of the monitor, seconds")
    p.add_argument("--timeout", type=float, default=1800, help="longest wait for one compaction, seconds")
    p.add_argument("--quiver", default=os.path.join(systems.target_dir(REPO), "release", "quiver"),
                   help="Quiver binary (release/quiver under $CARGO_TARGET_DIR, else under target/)")
    p.add_argument("--source",
                   help="data dir of uncompacted blocks from an earlier run (WORK/source of a --keep run): used, "
                        "never modified, instead of generating and importing")
    p.add_argument("--work", help="work dir (OpenMetrics text, source data dir, one data dir per run, logs); "
                                  "default a new dir under /var/tmp, removed at the end unless --keep")
    p.add_argument("--keep", action="store_true", help="keep the work dir (its `source` dir can be given to --source)")
    p.add_argument("--docs", default=os.path.join(REPO, "docs", "benchmarks.md"), help="file for --write-docs")
    p.add_argument("--write-docs", action="store_true",
                   help="replace the compaction-bench section of --docs (appended with its markers if absent)")
    args = p.parse_args(argv)
    try:
        args.limits = [parse_size(x) for x in args.limits.split(",") if x.strip()]
    except argparse.ArgumentTypeError as e:
        p.error(f"--limits: {e}")
    if not args.limits or min(args.limits) < 1:
        p.error("--limits needs at least one size")
    if args.series < 1 or not 0 < args.hours <= 24 or args.delay < 1 or args.poll <= 0 or args.reps < 1:
        p.error("need --series >= 1, 0 < --hours <= 24 (one day window), --delay >= 1, --poll > 0, --reps >= 1")
    if DAY_MS % args.block_duration:
        p.error("--block-duration must divide a day")
    return args


def _sigterm(_signo, _frame):
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the server


# --- data ----------------------------------------------------------------------------------------

def live_blocks(data_dir: str) -> list:
    """Metas of the block dirs that have a meta.json (compaction deletes a replaced block's
    meta.json first and leaves its empty dir), sorted by id."""
    out = []
    for meta in sorted(glob.glob(os.path.join(data_dir, "blocks", "*", "meta.json"))):
        with open(meta) as f:
            m = json.load(f)
        m["dir_bytes"] = systems.disk_usage(os.path.dirname(meta))["apparent"]
        out.append(m)
    return out


def block_summary(blocks: list) -> dict:
    return {
        "blocks": len(blocks),
        "ids": [b["id"] for b in blocks],
        "levels": sorted({b["level"] for b in blocks}),
        "spans_h": sorted({round((b["max_t"] - b["min_t"]) / 3_600_000, 2) for b in blocks}),
        "num_samples": sum(b["num_samples"] for b in blocks),
        "num_series_max": max((b["num_series"] for b in blocks), default=0),
        "bytes": sum(b["dir_bytes"] for b in blocks),
        "min_t": min((b["min_t"] for b in blocks), default=None),
        "max_t": max((b["max_t"] for b in blocks), default=None),
        "parents": sorted(p for b in blocks for p in b.get("parents", [])),
    }


def remove_empty_block_dirs(data_dir: str) -> int:
    n = 0
    for d in glob.glob(os.path.join(data_dir, "blocks", "*")):
        if os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)
            n += 1
    return n


def clone_data_dir(src: str, dst: str) -> None:
    """Block files hard-linked (immutable; compaction unlinks, never rewrites), the rest copied."""
    blocks = os.path.join(src, "blocks")
    for root, _dirs, files in os.walk(src):
        out = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(out, exist_ok=True)
        for f in files:
            s, d = os.path.join(root, f), os.path.join(out, f)
            if os.path.commonpath([s, blocks]) == blocks:
                os.link(s, d)
            else:
                shutil.copy2(s, d)


def day_end_ms(now_s: float) -> int:
    """End of the last whole UTC day that a server started now treats as sealed (ended more
    than the out-of-order window ago, with 10 minutes to spare)."""
    return (int(now_s * 1000) - OOO_WINDOW_MS - 600_000) // DAY_MS * DAY_MS


def prepare_source(args, work: str, raw: dict) -> str:
    """Generates and imports the dataset into WORK/source, or takes --source. Returns the dir."""
    if args.source:
        src = os.path.abspath(args.source)
        if not live_blocks(src):
            raise SystemExit(f"--source {src}: no live blocks under blocks/")
        raw["dataset"] = {"reused": src}
        return src
    src = os.path.join(work, "source")
    end_ms = day_end_ms(time.time())
    log(f"generating about {args.series:,} series x {args.hours:g} h ending at "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(end_ms / 1000))} ({args.gen_workers} worker(s))")
    t0 = time.monotonic()
    data = gen.generate(work, args.series, args.hours, end_ms, args.seed, workers=args.gen_workers)
    gen_s = time.monotonic() - t0
    for p in data["vm_paths"]:  # gen.py also renders VictoriaMetrics JSON; not needed here
        os.remove(p)
    log(f"generated {data['series']:,} series, {data['samples']:,} samples, "
        f"{data['om_bytes'] / 1e9:.2f} GB OpenMetrics in {gen_s:.1f}s")
    os.makedirs(src)
    bd = prom_dur(args.block_duration)
    argv = [args.quiver, "import", "--data-dir", src, "--block-duration", bd, "--max-block-duration", bd,
            data["om_path"]]
    import_log = os.path.join(work, "quiver-import.log")
    log("running " + shlex.join(argv))
    t0 = time.monotonic()
    with open(import_log, "ab") as f:
        r = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    import_s = time.monotonic() - t0
    if not args.keep:
        os.remove(data["om_path"])
    if r.returncode != 0:
        raise SystemExit(f"quiver import failed ({r.returncode}); see {import_log}")
    with open(import_log, errors="replace") as f:
        summary = [strip_ansi(ln).strip() for ln in f if "imported " in ln]
    empty = remove_empty_block_dirs(src)
    raw["dataset"] = {
        "reused": False, "seed": args.seed, "hosts": data["hosts"], "pods": data["pods"],
        "series": data["series"], "samples": data["samples"], "samples_per_series": data["samples_per_series"],
        "first_sample_ms": data["first_sample_ms"], "last_sample_ms": data["last_sample_ms"], "day_end_ms": end_ms,
        "om_bytes": data["om_bytes"], "generate_seconds": round(gen_s, 2), "import_seconds": round(import_s, 2),
        "import_summary": summary[-1] if summary else "", "empty_block_dirs_removed": empty,
        "import_argv": argv[1:-1] + ["data.om"],
    }
    log(f"imported in {import_s:.1f}s: {raw['dataset']['import_summary']} ({empty} empty block dirs removed)")
    return src


def sql_check(quiver: str, data_dir: str, log_path: str) -> dict:
    """CHECK_SQL over a data dir (opened read-only): the per-series aggregates, the wall time."""
    argv = [quiver, "sql", "--data-dir", data_dir, "--format", "csv", CHECK_SQL]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    secs = time.monotonic() - t0
    with open(log_path, "a") as f:
        f.write(f"$ quiver sql --data-dir {data_dir} ...\n{r.stdout}{r.stderr}\n")
    if r.returncode != 0:
        raise RuntimeError(f"quiver sql failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    lines = r.stdout.strip().splitlines()
    if len(lines) != 2:
        raise RuntimeError(f"quiver sql: unexpected output {r.stdout[:300]!r}")
    out = {}
    for k, v in zip(lines[0].split(","), lines[1].split(",")):
        out[k] = float(v) if k == "value_sum" else int(v)
    out["seconds"] = round(secs, 2)
    return out


def compare_check(got: dict, want: dict) -> list:
    """Differences between two sql_check answers (empty when equal)."""
    bad = [f"{k} {got.get(k)} vs {want.get(k)}" for k in CHECK_EXACT if got.get(k) != want.get(k)]
    a, b = got.get("value_sum"), want.get("value_sum")
    if a is None or b is None or not math.isclose(a, b, rel_tol=REL_TOL):
        bad.append(f"value_sum {a!r} vs {b!r}")
    return bad


def expected_check(ds: dict) -> dict:
    """What CHECK_SQL must answer for the generated dataset (sum of values not known)."""
    return {"series": ds["series"], "samples": ds["samples"], "min_per_series": ds["samples_per_series"],
            "max_per_series": ds["samples_per_series"], "min_t": ds["first_sample_ms"], "max_t": ds["last_sample_ms"]}


# --- measuring -----------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(s: str) -> str:
    return ANSI.sub("", s)


def proc_status(pid: int) -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile of a process, bytes; {} once it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                m = re.match(r"(VmRSS|VmHWM|RssAnon|RssFile|Threads):\s+(\d+)", line)
                if m:
                    out[m.group(1)] = int(m.group(2)) * (1 if m.group(1) == "Threads" else 1024)
    except OSError:
        pass
    return out


def proc_cpu(pid: int):
    """utime + stime of a process, seconds; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def reset_hwm(pid: int) -> bool:
    """Resets the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError as e:
        log(f"WARNING: could not reset VmHWM of {pid} ({e}); the peak then includes startup")
        return False


class Monitor(threading.Thread):
    """Samples (wall time, VmRSS, RssAnon, RssFile, CPU seconds) of a process every `poll` s."""

    def __init__(self, pid: int, poll: float):
        super().__init__(daemon=True)
        self.pid, self.poll = pid, poll
        self.samples = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            st, cpu = proc_status(self.pid), proc_cpu(self.pid)
            if not st or cpu is None:
                break
            self.samples.append((time.time(), st.get("VmRSS"), st.get("RssAnon"), st.get("RssFile"), cpu))
            self.stopping.wait(self.poll)

    def stop(self):
        self.stopping.set()
        self.join()


def log_time(line: str):
    """Epoch seconds of a tracing log line's RFC 3339 UTC timestamp, else None."""
    m = re.match(r"\s*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", line)
    if not m:
        return None
    stamp = m.group(1)
    if "." in stamp:  # microseconds at most for strptime
        head, frac = stamp.split(".")
        stamp = f"{head}.{frac[:6]}"
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in stamp else "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(stamp, fmt).replace(tzinfo=timezone.utc).timestamp()


def read_log(path: str, offset: int) -> tuple:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    return [strip_ansi(ln) for ln in data.decode("utf-8", "replace").splitlines()], offset + len(data)


def log_tail(path: str, n: int = 15) -> list:
    try:
        with open(path, errors="replace") as f:
            return [strip_ansi(ln.rstrip("\n")) for ln in f.readlines()[-n:]]
    except OSError:
        return []


def run_limit(args, work: str, source: str, limit: int, rep: int, src_blocks: dict, before: dict,
              raw: dict) -> dict:
    """One measured compaction of a copy of `source` under `limit`."""
    name = f"limit-{limit}-run{rep}"
    rec = {"limit": limit, "rep": rep, "state": "failed"}
    run_dir = os.path.join(work, name)
    data_dir = os.path.join(run_dir, "data")
    shutil.rmtree(run_dir, ignore_errors=True)
    clone_data_dir(source, data_dir)
    port = systems.free_port()
    srv = systems.Server("quiver", [
        args.quiver, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}",
        "--compaction-interval", prom_dur(int(args.delay * 1000)), "--compaction-memory-limit", str(limit),
    ], port, data_dir, os.path.join(run_dir, "quiver.log"), "/-/ready")
    rec["argv"] = srv.argv[1:]
    monitor = None
    try:
        srv.start(ready_timeout=300)
        pid = srv.proc.pid
        t_ready = time.time()
        cpu_ready = proc_cpu(pid)
        st = proc_status(pid)
        rec.update(ready_s=round(srv.started_s, 2), rss_at_ready=st.get("VmRSS"), hwm_at_ready=st.get("VmHWM"),
                   anon_at_ready=st.get("RssAnon"), file_at_ready=st.get("RssFile"))
        rec["hwm_reset"] = reset_hwm(pid)
        monitor = Monitor(pid, args.poll)
        monitor.start()
        log(f"ready after {srv.started_s:.1f}s, RSS {fmt_mb(st.get('VmRSS'))} (VmHWM {fmt_mb(st.get('VmHWM'))}); "
            f"compaction due in ~{args.delay:g}s under a {fmt_size(limit)} limit")
        offset, merged, compacted, failed = 0, None, None, None
        deadline = time.monotonic() + args.delay + args.timeout
        while merged is None:
            if srv.proc.poll() is not None:
                raise RuntimeError(f"quiver exited with {srv.proc.returncode} during compaction")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no compaction within {args.delay + args.timeout:.0f}s")
            time.sleep(0.2)
            lines, offset = read_log(srv.log_path, offset)
            for ln in lines:
                if "compacted blocks" in ln and compacted is None:
                    compacted = ln
                elif "compaction merged=" in ln:
                    merged = ln
                elif "compaction failed" in ln:
                    failed = ln
            if failed:
                raise RuntimeError(f"compaction failed: {failed.strip()[-300:]}")
        t_seen = time.time()
        st_end = proc_status(pid)
        cpu_end = proc_cpu(pid)
        monitor.stop()
        samples = monitor.samples
        t_end = log_time(merged) or t_seen
        t_merge_end = log_time(compacted) if compacted else None
        # Start: first sample, from a second before the scheduled tick, with the process busy.
        t_start = None
        for (t0, *_r0, c0), (t1, *_r1, c1) in zip(samples, samples[1:]):
            if t1 >= t_ready + args.delay - 1 and t1 > t0 and (c1 - c0) / (t1 - t0) > BUSY_SHARE:
                t_start = t0
                break
        before_samples = [s for s in samples if t_start is None or s[0] <= t_start]
        during = [s for s in samples if t_start is not None and t_start <= s[0] <= t_end]
        peak_sample = max(during or samples, key=lambda s: s[1] or 0) if samples else None
        m = re.search(r"merged=(\d+).*?deleted=(\d+)", merged)
        rec.update(
            rss_before=(before_samples[-1][1] if before_samples else st.get("VmRSS")),
            peak_rss=st_end.get("VmHWM"),
            sampled_peak_rss=peak_sample[1] if peak_sample else None,
            sampled_peak_anon=peak_sample[2] if peak_sample else None,
            sampled_peak_file=peak_sample[3] if peak_sample else None,
            rss_after=st_end.get("VmRSS"), anon_after=st_end.get("RssAnon"), file_after=st_end.get("RssFile"),
            threads_after=st_end.get("Threads"),
            compaction_s=round(t_end - t_start, 2) if t_start else None,
            merge_s=round(t_merge_end - t_start, 2) if t_start and t_merge_end else None,
            start_detected=t_start is not None,
            start_after_ready_s=round(t_start - t_ready, 2) if t_start else None,
            cpu_s=round(cpu_end - cpu_ready, 2) if cpu_end is not None and cpu_ready is not None else None,
            merged=int(m.group(1)) if m else None, deleted=int(m.group(2)) if m else None,
            log_merged=merged.strip(), log_compacted=(compacted or "").strip(),
            # (seconds since ready, VmRSS, RssAnon, RssFile, CPU s since ready), for plots
            timeline=[(round(t - t_ready, 3), r, a, fl, round(c - cpu_ready, 3)) for t, r, a, fl, c in samples],
        )
        try:
            text = systems.metrics_text(srv)
            rec["metrics"] = {k: systems.metric_sum(text, k) for k in
                              ("quiver_blocks", "quiver_compactions_total", "quiver_blocks_deleted_total",
                               "quiver_catalog_series")}
        except OSError as e:
            rec["metrics"] = {"error": str(e)}
        log(f"compaction {'took ' + format(rec['compaction_s'], '.1f') + 's' if rec['compaction_s'] else 'done'}: "
            f"peak RSS {fmt_mb(rec['peak_rss'])} (sampled {fmt_mb(rec['sampled_peak_rss'])}), "
            f"RSS before {fmt_mb(rec['rss_before'])}, after {fmt_mb(rec['rss_after'])}, CPU {rec['cpu_s']}s")
    except Exception as e:
        rec["error"] = str(e)
        rec["log_tail"] = log_tail(srv.log_path)
        log(f"FAILED ({fmt_size(limit)}): {e}")
        return rec
    finally:
        if monitor is not None and monitor.is_alive():
            monitor.stop()
        srv.stop()
    # After the server is gone: the blocks and the samples.
    blocks = live_blocks(data_dir)
    rec["blocks_after"] = block_summary(blocks)
    problems = []
    if len(blocks) != 1:
        problems.append(f"{len(blocks)} live blocks after compaction, expected 1")
    elif sorted(blocks[0].get("parents", [])) != sorted(src_blocks["ids"]):
        problems.append("the merged block's parents are not the source blocks")
    if rec["blocks_after"]["num_samples"] != src_blocks["num_samples"]:
        problems.append(f"meta.json samples {rec['blocks_after']['num_samples']:,} vs "
                        f"{src_blocks['num_samples']:,} in the source blocks")
    try:
        after = rec["sql_after"] = sql_check(args.quiver, data_dir, os.path.join(run_dir, "sql.log"))
        problems += [f"vs source: {d}" for d in compare_check(after, before)]
        ds = raw.get("dataset", {})
        if ds.get("reused") is False:
            want = expected_check(ds)
            problems += [f"vs generated: {k} {after.get(k)} vs {want[k]}" for k in want if after.get(k) != want[k]]
    except RuntimeError as e:
        problems.append(str(e))
    rec["problems"] = problems
    rec["state"] = "ok" if not problems else "wrong"
    if problems:
        print(f"\n!!!!!!!! CHECK FAILED ({fmt_size(limit)}): {'; '.join(problems)}\n", file=sys.stderr, flush=True)
    else:
        log(f"check: 1 block, {after['series']:,} series, {after['samples']:,} samples, as before compaction")
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return rec


# --- report -------------------------------------------------------------------------------------

def versions(quiver: str) -> dict:
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"
    built = time.strftime("%Y-%m-%d %H:%M", time.gmtime(os.path.getmtime(quiver)))
    rev = first_line(["git", "-C", REPO, "describe", "--always", "--dirty"])
    return {"quiver": f"{first_line([quiver, '--version'])} (binary {quiver}, built {built} UTC; "
                      f"tree at run time {rev})"}


def markdown(raw: dict) -> str:
    m, ds, a = raw["machine"], raw.get("dataset", {}), raw["args"]
    src = raw.get("source_blocks", {})
    target = a["rss_target"]
    lines = [
        HEADING, "",
        f"Generated by `benches/compaction/day.py` on {raw['started']} — do not edit by hand.", "",
        f"Command: `{raw['command']}`. Machine: {m['nproc']} cores ({m['cpu']}), {m['mem_bytes'] / 2**30:.1f} GiB "
        f"RAM, {m['os']}. Version: {raw.get('versions', {}).get('quiver', 'n/a')}.", "",
    ]
    if ds.get("reused") is False:
        day = time.strftime("%Y-%m-%d", time.gmtime((ds["day_end_ms"] - DAY_MS) / 1000))
        lines += [
            f"Dataset: the peer benchmark's generator (`benches/peer/gen.py`, seed {ds['seed']}): "
            f"{ds['series']:,} series ({ds['hosts']} hosts, {ds['pods']} pods; node-exporter, HTTP and histogram, "
            f"pod counters and gauges), {ds['samples_per_series']:,} samples each every 15 s inside the UTC day "
            f"{day}, {ds['samples']:,} samples; generated in {ds['generate_seconds']:.0f} s "
            f"({ds['om_bytes'] / 1e9:.2f} GB OpenMetrics), loaded with `quiver {' '.join(ds['import_argv'])}` "
            f"in {ds['import_seconds']:.0f} s (`{ds['import_summary']}`)"
            + ("" if ds["series"] >= 9_900 else f" — **{ds['series']:,} series, not the 10k default**") + ".", "",
        ]
    elif ds:
        lines += [f"Dataset: the uncompacted blocks of an earlier run (`--source`), used as they were.", ""]
    if src:
        lines += [
            f"Before compaction: {src['blocks']} blocks (level {', '.join(map(str, src['levels']))}, "
            f"spanning {', '.join(f'{h:g}' for h in src['spans_h'])} h each, up to {src['num_series_max']:,} series "
            f"each), {src['num_samples']:,} samples, {src['bytes'] / 1e6:.0f} MB.", "",
        ]
    lines += [
        "Method: `quiver serve` on a copy of those blocks (empty head and WAL), 127.0.0.1, with "
        f"`--compaction-interval {a['delay']:g}s` and the `--compaction-memory-limit` of the row; nothing else runs "
        "in it and no request reaches it until the compaction is over. Its first compaction merges the day's "
        f"blocks into one 1-day block. *RSS before*: VmRSS after startup, just before the compaction began. "
        "*Peak RSS*: VmHWM read when the compaction had finished, after resetting it at readiness "
        "(`/proc/PID/clear_refs`), so startup is not in it; *anon / file*: RssAnon and RssFile at the largest "
        f"VmRSS sampled every {a['poll'] * 1000:.0f} ms. *Time*: from the first sample with the process busy "
        "to the log line `compaction merged=1` (block written, swapped in, parents deleted); *CPU*: the "
        "process's user + system time over it. *Check*: `quiver sql` per series (series, samples, samples "
        "per series, first and last timestamp, sum of values) over the compacted data dir equals the same "
        "query over the source blocks" + (" and the generated data" if ds.get("reused") is False else "")
        + ", and one block is left. Each limit ran "
        f"{a['reps']} time(s), each on a fresh copy, the limits interleaved; *peak RSS* is the largest over those "
        "runs (range in brackets), *anon / file* are that run's; RSS before and after (VmRSS once the "
        "compaction is over), time and CPU are medians. MB = 10^6 bytes.", "",
        f"| `--compaction-memory-limit` | runs | RSS before | **peak RSS** (max; range) | peak anon / file "
        f"| RSS after | time | CPU | blocks | check | peak < {target / 1e6:.0f} MB? |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    def rng(xs, f):
        return f(xs[0]) if min(xs) == max(xs) else f"{f(min(xs))}–{f(max(xs))}"

    for limit in dict.fromkeys(r["limit"] for r in raw["runs"]):
        label = fmt_size(limit) + (" (default)" if limit == DEFAULT_LIMIT else "")
        runs = [r for r in raw["runs"] if r["limit"] == limit]
        done = [r for r in runs if r["state"] != "failed"]
        failed = [r for r in runs if r["state"] == "failed"]
        if not done:
            lines.append(f"| {label} | {len(runs)} | failed: {failed[0].get('error', '')[:120]} |" + " |" * 8)
            continue
        peaks = [r["peak_rss"] if r.get("hwm_reset") else r.get("sampled_peak_rss") for r in done]
        top = done[max(range(len(done)), key=lambda i: peaks[i] or 0)]
        peak = max(p for p in peaks if p is not None) if any(p is not None for p in peaks) else None
        times = [r["compaction_s"] for r in done if r.get("compaction_s")]
        wrong = [p for r in done for p in r.get("problems", [])]
        check = f"ok ({len(done)} of {len(runs)})" if not wrong and not failed else \
            "**FAILED**: " + "; ".join(wrong + [f"run failed: {r.get('error', '')}" for r in failed])[:200]
        blocks = sorted({r.get("blocks_after", {}).get("blocks") for r in done}, key=str)
        met = "—" if peak is None else ("met" if peak < target else "**NOT met**")
        lines.append(
            f"| {label} | {len(runs)} | {fmt_mb(med([r.get('rss_before') for r in done]))} | "
            f"**{fmt_mb(peak)}** ({rng([p for p in peaks if p is not None], fmt_mb) if peak else '—'}) | "
            f"{fmt_mb(top.get('sampled_peak_anon'))} / {fmt_mb(top.get('sampled_peak_file'))} | "
            f"{fmt_mb(med([r.get('rss_after') for r in done]))} | "
            f"{format(med(times), '.1f') + ' s' if times else 'n/a'} | {fmt_s(med([r.get('cpu_s') for r in done]))} | "
            f"{src.get('blocks', '?')} → {', '.join(map(str, blocks))} | {check} | {met} |")
    ok = [r for r in raw["runs"] if r["state"] != "failed"]
    if ok:
        r = ok[0]
        ba, sq = r.get("blocks_after", {}), r.get("sql_after", {})
        lines += ["", f"After compaction: {ba.get('blocks')} block of {', '.join(f'{h:g}' for h in ba.get('spans_h', []))} h "
                  f"(level {', '.join(map(str, ba.get('levels', [])))}), {ba.get('num_samples', 0):,} samples, "
                  f"{ba.get('bytes', 0) / 1e6:.0f} MB; `quiver sql` counted {sq.get('series', 0):,} series and "
                  f"{sq.get('samples', 0):,} samples ({sq.get('min_per_series')}–{sq.get('max_per_series')} per series)."]
        if not all(x.get("hwm_reset") for x in ok):
            lines += ["", "VmHWM could not be reset for some runs; their peak is the largest sampled VmRSS."]
    for r in raw["runs"]:
        if r["state"] == "failed" and r.get("log_tail"):
            lines += ["", f"Last lines of the server log ({fmt_size(r['limit'])}, run {r['rep']}):", "", "```", *r["log_tail"][-8:], "```"]
    cpu = raw.get("cpu")
    if cpu and raw.get("measure_seconds"):
        capacity = raw["measure_seconds"] * m["nproc"]
        share = cpu["others_s"] / capacity if capacity else 0
        lines += ["", f"CPU during the measured runs ({raw['measure_seconds']:.0f} s): the benchmark and what it "
                  f"started used {cpu['harness_s']:.0f} CPU-s, other processes {cpu['others_s']:.0f} CPU-s "
                  f"({share:.0%} of {capacity:.0f} available)" + (" — they competed with the benchmark, so its "
                  "times are inflated (memory figures are not affected)." if share > 0.05 else ".")]
    lines.append("")
    return "\n".join(lines)


def update_docs(path: str, section: str) -> None:
    """Replaces the text between the compaction-bench markers (appending them if absent)."""
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
    path = os.path.join(d, time.strftime("compaction-%Y%m%d-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump(raw, f, indent=1, default=str)
    return path


# --- main ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    if not os.access(args.quiver, os.X_OK):
        raise SystemExit(f"{args.quiver} missing: build it (cargo build --release --bin quiver) or pass --quiver")
    args.quiver = os.path.abspath(args.quiver)
    started = time.time()
    raw = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": shlex.join(["python3", os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])
        if argv is None else "day.main(" + repr(argv) + ")",
        "args": vars(args), "machine": systems.machine(), "versions": versions(args.quiver),
        "loadavg_start": os.getloadavg()[0], "runs": [],
    }
    own_work = args.work is None
    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="quiver-compaction-", dir="/var/tmp"))
    os.makedirs(work, exist_ok=True)
    log(f"work dir {work}; {raw['versions']['quiver']}")
    try:
        source = prepare_source(args, work, raw)
        src_blocks = raw["source_blocks"] = block_summary(live_blocks(source))
        if src_blocks["blocks"] < 2:
            raise SystemExit(f"{source} holds {src_blocks['blocks']} block(s): nothing to compact")
        if (src_blocks["min_t"] // DAY_MS != src_blocks["max_t"] // DAY_MS
                or (src_blocks["max_t"] // DAY_MS + 1) * DAY_MS > time.time() * 1000 - OOO_WINDOW_MS):
            raise SystemExit(f"{source}: blocks not within one sealed UTC day; a server would not merge them")
        log(f"source: {src_blocks['blocks']} blocks, {src_blocks['num_samples']:,} samples, "
            f"{src_blocks['bytes'] / 1e6:.0f} MB; checking them with quiver sql")
        before = raw["sql_before"] = sql_check(args.quiver, source, os.path.join(work, "sql-source.log"))
        log(f"source: {before['series']:,} series, {before['samples']:,} samples ({before['seconds']:.1f}s)")
        cpu0 = systems.cpu_snapshot()
        t0 = time.monotonic()
        for rep in range(args.reps):
            for limit in args.limits:
                log(f"== compaction under --compaction-memory-limit {fmt_size(limit)}, run {rep + 1}/{args.reps} "
                    f"(load average {os.getloadavg()[0]:.2f})")
                raw["runs"].append(run_limit(args, work, source, limit, rep + 1, src_blocks, before, raw))
        raw["measure_seconds"] = round(time.monotonic() - t0, 1)
        raw["cpu"] = systems.cpu_since(cpu0)
    finally:
        if args.keep or not own_work:
            log(f"kept {work}" + ("" if args.source else f"; reuse its blocks with --source {work}/source"))
        else:
            shutil.rmtree(work, ignore_errors=True)
    raw["total_seconds"] = round(time.time() - started, 1)
    md = markdown(raw)
    print("\n" + md)
    path = write_json(raw)
    log(f"raw results: {os.path.relpath(path, REPO)}")
    if args.write_docs:
        update_docs(args.docs, md)
        log(f"updated {os.path.relpath(args.docs, REPO)}")
    return 0 if all(r["state"] == "ok" for r in raw["runs"]) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; server stopped")
        sys.exit(130)
