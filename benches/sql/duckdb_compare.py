#!/usr/bin/env python3
"""SQL over the same block Parquet files: Quiver (`quiver sql`, DataFusion) against DuckDB.

    python3 benches/sql/duckdb_compare.py [--series N] [--hours H] [--reps R] [--data-dir DIR] ...
    make bench-sql ARGS="..."

1. Dataset: benches/peer/gen.py (the peer benchmark's generator, imported, fixed seed) writes
   OpenMetrics text, which `quiver import` loads offline into a Quiver data dir (flush and
   compaction included, as in the peer benchmark); the text is deleted once loaded. With
   --data-dir DIR holding blocks already, that data dir is used as it is.
2. Files: the live blocks are the dirs DATA/blocks/<ULID>/ that have a meta.json (compaction
   deletes meta.json first); DuckDB reads their samples.parquet and series.parquet, Quiver
   opens the data dir read-only. Both see the same bytes.
3. Queries (QUERIES below): each engine query runs as its own child process, `quiver sql
   --format csv` or a Python child that imports duckdb. Wall time is measured around the child
   (so it includes process start, opening the data / importing duckdb, and writing the CSV
   answer; the `startup` row, SELECT 1, shows that fixed part); peak RSS is the child's
   ru_maxrss from os.wait4, i.e. per process. One untimed warm-up per query and engine (its
   answers are compared), then --reps timed passes: each pass runs every query on both engines
   in shuffled order.
4. Answers: counts must agree exactly, sums within relative 1e-9; for grouped queries the
   number of groups, the total and every group (per key, or as a sorted list when the keys are
   engine-specific ids) are compared. A mismatch is printed loudly and makes the exit status 1.
5. Report: a Markdown table (printed; with --write-docs also written into docs/benchmarks.md
   between the sql-bench markers) and the raw JSON in benches/sql/results/. Every figure comes
   from this run.

DuckDB: `import duckdb` in this interpreter if it works, else --duckdb-venv (created with
`python3 -m venv` and `pip install duckdb` when missing). Standard library only otherwise.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import math
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "benches", "peer"))

import gen  # noqa: E402  (the peer benchmark's dataset generator)
import systems  # noqa: E402  (target dir, machine facts, CPU accounting, disk usage)
from systems import log  # noqa: E402

START, END = "<!-- sql-bench:start -->", "<!-- sql-bench:end -->"
HEADING = "## SQL: Quiver vs DuckDB on the same Parquet files"
ENGINES = ["quiver", "duckdb"]
REL_TOL = 1e-9

# DuckDB's views over the live blocks' files (the child substitutes the file lists). `samples`
# is the files with each row's value computed as block format 3 defines it (a decimal
# mantissa scaled back, or the raw double; migrations/0003_decimal_values.md), so DuckDB
# pays the same decoding Quiver does; `samples_f` / `series_f` add DuckDB's `filename`
# column, the only way to tell blocks apart: series ids are block-local.
VALUE = ("coalesce(value_raw, CASE WHEN value_scale >= 64 THEN (value_mantissa + value_base) * pow(2, value_scale - 64) "
         "ELSE (value_mantissa + value_base) / pow(10, value_scale) END)")
DUCKDB_VIEWS = [
    "CREATE VIEW samples AS SELECT series_id, timestamp, " + VALUE + " AS value FROM read_parquet({samples})",
    "CREATE VIEW samples_f AS SELECT series_id, timestamp, " + VALUE + " AS value, filename "
    "FROM read_parquet({samples}, filename = true)",
    "CREATE VIEW series_f AS SELECT * FROM read_parquet({series}, filename = true)",
]

# name, description, Quiver SQL, DuckDB SQL, how answers are compared.
#   scalar: one row; column 0 an exact count, the others sums (relative 1e-9)
#   keyed:  column 0 a key both engines share; column 1 compared per key
#   values: column 0 an engine-specific series key; column 1 compared as a sorted list
QUERIES = [
    {
        "name": "startup",
        "what": "SELECT 1: process start, opening the data / importing duckdb, output",
        "quiver": "SELECT 1 AS one",
        "duckdb": "SELECT 1 AS one",
        "compare": "scalar",
    },
    {
        "name": "count_sum",
        "what": "count(*), sum(value) over all samples",
        "quiver": "SELECT count(*) AS n, sum(value) AS s FROM samples",
        "duckdb": "SELECT count(*) AS n, sum(value) AS s FROM samples",
        "compare": "scalar",
    },
    {
        "name": "avg_by_series",
        "what": "avg(value) per series",
        "quiver": "SELECT series_id, avg(value) AS v FROM samples GROUP BY series_id",
        # Aggregated per (block file, local id) first, then merged across blocks by label set
        # (one small join over the per-block partial results).
        "duckdb": (
            "WITH part AS (SELECT filename, series_id, sum(value) AS s, count(*) AS n "
            "FROM samples_f GROUP BY filename, series_id), "
            "ident AS (SELECT replace(filename, '/series.parquet', '/samples.parquet') AS filename, series_id, "
            "string_agg(name || '=' || value, chr(31) ORDER BY name) AS labels "
            "FROM series_f GROUP BY filename, series_id) "
            "SELECT i.labels, sum(p.s) / sum(p.n) AS v FROM part p "
            "JOIN ident i ON p.filename = i.filename AND p.series_id = i.series_id GROUP BY i.labels"
        ),
        "compare": "values",
    },
    {
        "name": "count_by_hour",
        "what": "count(*) per hour bucket (timestamp / 3600000)",
        "quiver": "SELECT timestamp / 3600000 AS hour, count(*) AS n FROM samples GROUP BY timestamp / 3600000",
        "duckdb": "SELECT timestamp // 3600000 AS hour, count(*) AS n FROM samples GROUP BY timestamp // 3600000",
        "compare": "keyed",
    },
    {
        "name": "sum_by_metric",
        "what": "sum(value) per metric name: samples joined with series",
        "quiver": ("SELECT se.metric, sum(s.value) AS s FROM samples s "
                   "JOIN series se ON s.series_id = se.series_id GROUP BY se.metric"),
        # Every sample row joined with its block's __name__ row on (block, local id).
        "duckdb": (
            "WITH names AS (SELECT replace(filename, '/series.parquet', '/samples.parquet') AS filename, "
            "series_id, value AS metric FROM series_f WHERE name = '__name__') "
            "SELECT n.metric, sum(s.value) AS s FROM samples_f s "
            "JOIN names n ON s.filename = n.filename AND s.series_id = n.series_id GROUP BY n.metric"
        ),
        "compare": "keyed",
    },
]

# The DuckDB child: reads a JSON spec (file lists, SQL), prints the answer as CSV on stdout and
# its own timings as one JSON line on stderr.
DUCKDB_CHILD = r"""
import csv, json, sys, time
t0 = time.perf_counter()
import duckdb
t1 = time.perf_counter()
spec = json.load(open(sys.argv[1]))
con = duckdb.connect()
lst = lambda ps: "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in ps) + "]"
for v in spec["views"]:
    con.execute(v.format(samples=lst(spec["samples"]), series=lst(spec["series"])))
t2 = time.perf_counter()
cur = con.execute(spec["sql"])
rows = cur.fetchall()
t3 = time.perf_counter()
w = csv.writer(sys.stdout, lineterminator="\n")
w.writerow([d[0] for d in cur.description])
w.writerows(rows)
sys.stdout.flush()
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
print(json.dumps({"import_s": t1 - t0, "views_s": t2 - t1, "query_s": t3 - t2,
                  "version": duckdb.__version__, "threads": threads}), file=sys.stderr)
"""


def parse_args(argv=None):
    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    p.add_argument("--series", type=int, default=10_000, help="about this many series (generated datasets)")
    p.add_argument("--hours", type=float, default=24, help="hours of data, ending at the start of the run")
    p.add_argument("--seed", type=int, default=20240601, help="dataset RNG seed (the peer benchmark's)")
    p.add_argument("--gen-workers", type=int, default=2, help="processes generating the dataset")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of every query on each engine")
    p.add_argument("--quiver", default=os.path.join(systems.target_dir(REPO), "release", "quiver"),
                   help="Quiver binary (release/quiver under $CARGO_TARGET_DIR, else under target/)")
    p.add_argument("--data-dir",
                   help="Quiver data dir to use: reused as it is if it holds blocks (it should hold no unflushed "
                        "WAL data, which Quiver reads and DuckDB cannot), else the generated dataset is imported "
                        "into it (and kept)")
    p.add_argument("--work", help="work dir (OpenMetrics text, the data dir unless --data-dir, spec files, "
                                  "logs); default a new dir under /var/tmp, removed at the end unless --keep")
    p.add_argument("--keep", action="store_true",
                   help="keep the work dir (with the imported data dir, which a later run can take as --data-dir)")
    p.add_argument("--timeout", type=float, default=600, help="seconds one query process may take before it is "
                                                              "killed (it is then not run again)")
    p.add_argument("--duckdb-venv", default="/var/tmp/duckdb-venv",
                   help="venv providing duckdb when this interpreter has none (created when missing)")
    p.add_argument("--docs", default=os.path.join(REPO, "docs", "benchmarks.md"), help="file for --write-docs")
    p.add_argument("--write-docs", action="store_true",
                   help="replace the sql-bench section of --docs (appended, with its heading, if absent)")
    return p.parse_args(argv)


# --- setup ------------------------------------------------------------------------------------

def duckdb_python(venv: str) -> str:
    """An interpreter that can `import duckdb`: this one, or the venv's (made if needed)."""
    try:
        import duckdb  # noqa: F401
        return sys.executable
    except ImportError:
        pass
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py) and subprocess.run([py, "-c", "import duckdb"], capture_output=True).returncode == 0:
        return py
    if not os.path.exists(py):
        log(f"creating venv {venv}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    log(f"pip install duckdb into {venv}")
    subprocess.run([py, "-m", "pip", "install", "-q", "duckdb"], check=True)
    return py


def live_blocks(data_dir: str) -> list:
    """Block dirs with a meta.json (compaction deletes a replaced block's meta.json first and
    may leave its empty dir behind), sorted by ULID, with their meta."""
    out = []
    for d in sorted(glob.glob(os.path.join(data_dir, "blocks", "*"))):
        meta = os.path.join(d, "meta.json")
        if not os.path.exists(meta):
            continue
        for f in ("samples.parquet", "series.parquet"):
            if not os.path.exists(os.path.join(d, f)):
                raise SystemExit(f"block {d} has a meta.json but no {f}")
        with open(meta) as f:
            out.append({"dir": os.path.abspath(d), "meta": json.load(f)})
    return out


def block_facts(blocks: list, data_dir: str) -> dict:
    overlaps = []
    spans = sorted((b["meta"]["min_t"], b["meta"]["max_t"], b["meta"]["id"]) for b in blocks)
    for (a0, a1, ai), (b0, b1, bi) in zip(spans, spans[1:]):
        if b0 <= a1:
            overlaps.append(f"{ai} and {bi}")
    size = lambda name: sum(os.path.getsize(os.path.join(b["dir"], name)) for b in blocks)  # noqa: E731
    return {
        "blocks": len(blocks),
        "block_ids": [b["meta"]["id"] for b in blocks],
        "meta_samples": sum(b["meta"]["num_samples"] for b in blocks),
        "meta_series_rows": sum(b["meta"]["num_series"] for b in blocks),
        "min_t": min(b["meta"]["min_t"] for b in blocks),
        "max_t": max(b["meta"]["max_t"] for b in blocks),
        "time_overlaps": overlaps,
        "samples_parquet_bytes": size("samples.parquet"),
        "series_parquet_bytes": size("series.parquet"),
        "blocks_bytes": sum(systems.disk_usage(b["dir"])["apparent"] for b in blocks),
        "data_dir_bytes": systems.disk_usage(data_dir)["apparent"],
    }


def prepare_data(args, work: str, raw: dict) -> str:
    """Returns the Quiver data dir, generating and importing the dataset unless reused."""
    data_dir = os.path.abspath(args.data_dir) if args.data_dir else os.path.join(work, "quiver")
    if args.data_dir and live_blocks(data_dir):
        log(f"reusing the blocks in {data_dir}")
        wal = [f for f in glob.glob(os.path.join(data_dir, "wal", "**"), recursive=True) if os.path.isfile(f)
               and os.path.getsize(f) > 0]
        if wal:
            log(f"WARNING: {data_dir}/wal holds {len(wal)} non-empty file(s); samples not yet flushed to blocks "
                "are seen by Quiver only, so the answers may differ")
        raw["dataset"] = {"reused": True}
        return data_dir
    if os.path.isdir(os.path.join(data_dir, "blocks")) and os.listdir(os.path.join(data_dir, "blocks")):
        raise SystemExit(f"{data_dir}/blocks holds no live block but is not empty; use an empty dir")
    end_ms = int(time.time()) // 120 * 120 * 1000
    log(f"generating about {args.series} series x {args.hours} h ({args.gen_workers} worker(s))")
    t0 = time.monotonic()
    data = gen.generate(work, args.series, args.hours, end_ms, args.seed, workers=args.gen_workers)
    gen_s = time.monotonic() - t0
    for p in data["vm_paths"]:  # gen.py also renders VictoriaMetrics JSON; not needed here
        os.remove(p)
    log(f"generated {data['series']} series, {data['samples']:,} samples, "
        f"{data['om_bytes'] / 1e9:.2f} GB OpenMetrics in {gen_s:.1f}s")
    os.makedirs(data_dir, exist_ok=True)
    import_log = os.path.join(work, "quiver-import.log")
    argv = [args.quiver, "import", "--data-dir", data_dir, data["om_path"]]
    log("running " + shlex.join(argv))
    t0 = time.monotonic()
    with open(import_log, "ab") as f:
        r = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    import_s = time.monotonic() - t0
    os.remove(data["om_path"])
    if r.returncode != 0:
        raise SystemExit(f"quiver import failed ({r.returncode}); see {import_log}")
    with open(import_log) as f:
        summary = [ln.strip() for ln in f if ln.startswith("imported ")]
    raw["dataset"] = {
        "reused": False, "seed": args.seed, "hosts": data["hosts"], "pods": data["pods"],
        "series": data["series"], "samples": data["samples"], "samples_per_series": data["samples_per_series"],
        "first_sample_ms": data["first_sample_ms"], "last_sample_ms": data["last_sample_ms"],
        "om_bytes": data["om_bytes"], "generate_seconds": round(gen_s, 2),
        "import_seconds": round(import_s, 2), "import_summary": summary[-1] if summary else "",
    }
    log(f"imported in {import_s:.1f}s: {raw['dataset']['import_summary']}")
    return data_dir


# --- running ----------------------------------------------------------------------------------

class Runner:
    def __init__(self, args, work: str, data_dir: str, blocks: list, duck_py: str):
        self.args, self.work, self.data_dir = args, work, data_dir
        self.duck_py = duck_py
        self.spec_dir = os.path.join(work, "specs")
        os.makedirs(self.spec_dir, exist_ok=True)
        self.samples = [os.path.join(b["dir"], "samples.parquet") for b in blocks]
        self.series = [os.path.join(b["dir"], "series.parquet") for b in blocks]
        self.written = set()

    def argv(self, engine: str, q: dict) -> list:
        if engine == "quiver":
            return [self.args.quiver, "sql", "--data-dir", self.data_dir, "--format", "csv", q["quiver"]]
        spec = os.path.join(self.spec_dir, q["name"] + ".json")
        if spec not in self.written:  # written once per run (a reused --work may hold older ones)
            self.written.add(spec)
            with open(spec, "w") as f:
                json.dump({"views": DUCKDB_VIEWS, "samples": self.samples, "series": self.series,
                           "sql": q["duckdb"]}, f, indent=1)
        return [self.duck_py, "-c", DUCKDB_CHILD, spec]

    def run(self, engine: str, q: dict) -> dict:
        """One child process: wall seconds, peak RSS (ru_maxrss of that process), its output."""
        argv = self.argv(engine, q)
        with tempfile.TemporaryFile(dir=self.work) as out, tempfile.TemporaryFile(dir=self.work) as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.work)
            timed_out = []

            def kill():
                timed_out.append(True)
                proc.kill()
            timer = threading.Timer(self.args.timeout, kill)
            timer.start()
            try:
                _, status, ru = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(), err.read().decode()
        res = {"seconds": wall, "rss_bytes": ru.ru_maxrss * 1024, "cpu_s": ru.ru_utime + ru.ru_stime,
               "ok": proc.returncode == 0 and not timed_out, "stdout": stdout}
        if timed_out:
            res["error"] = f"killed after the {self.args.timeout:.0f}s timeout"
        elif proc.returncode != 0:
            res["error"] = f"exit {proc.returncode}: {stderr.strip()[-2000:]}"
        if engine == "duckdb" and res["ok"]:
            try:
                res["inner"] = json.loads(stderr.strip().splitlines()[-1])
            except (ValueError, IndexError):
                pass
        return res


def parse_csv(text: str) -> tuple:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ValueError("no output")
    return rows[0], rows[1:]


def _num(x: str):
    try:
        return int(x)
    except ValueError:
        return float(x)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-300) or (math.isnan(a) and math.isnan(b))


def compare(kind: str, q_out: str, d_out: str) -> dict:
    """Compares the two engines' CSV answers; returns agree, detail and figures for the report."""
    try:
        _, qr = parse_csv(q_out)
        _, dr = parse_csv(d_out)
    except ValueError as e:
        return {"agree": False, "detail": f"unparsable answer: {e}"}
    if kind == "scalar":
        if len(qr) != 1 or len(dr) != 1:
            return {"agree": False, "detail": f"rows: quiver {len(qr)}, duckdb {len(dr)} (expected 1)"}
        qv, dv = [_num(x) for x in qr[0]], [_num(x) for x in dr[0]]
        ok = len(qv) == len(dv) and qv[0] == dv[0] and all(_close(a, b) for a, b in zip(qv[1:], dv[1:]))
        return {"agree": ok, "detail": f"quiver {qv}, duckdb {dv}", "quiver": qv, "duckdb": dv}
    qk = {r[0]: _num(r[1]) for r in qr}
    dk = {r[0]: _num(r[1]) for r in dr}
    q_total, d_total = (sum(vs) if all(isinstance(x, int) for x in vs) else math.fsum(vs)
                        for vs in (list(qk.values()), list(dk.values())))
    res = {"groups": {"quiver": len(qr), "duckdb": len(dr)}, "total": {"quiver": q_total, "duckdb": d_total}}
    problems = []
    if len(qr) != len(dr):
        problems.append(f"{len(qr)} groups vs {len(dr)}")
    if not (q_total == d_total if isinstance(q_total, int) and isinstance(d_total, int) else _close(q_total, d_total)):
        problems.append(f"total {q_total!r} vs {d_total!r}")
    if kind == "keyed":
        if set(qk) != set(dk):
            only_q, only_d = sorted(set(qk) - set(dk)), sorted(set(dk) - set(qk))
            problems.append(f"keys only in quiver {only_q[:5]}, only in duckdb {only_d[:5]}")
        bad = [k for k in qk if k in dk and not (qk[k] == dk[k] if isinstance(qk[k], int) and isinstance(dk[k], int)
                                                  else _close(float(qk[k]), float(dk[k])))]
        if bad:
            problems.append(f"{len(bad)} groups differ, e.g. {bad[0]}: {qk[bad[0]]!r} vs {dk[bad[0]]!r}")
    else:  # values: the keys are engine-specific; the sorted per-group values must match
        qs, ds = sorted(float(v) for v in qk.values()), sorted(float(v) for v in dk.values())
        bad = [i for i, (a, b) in enumerate(zip(qs, ds)) if not _close(a, b)]
        if bad:
            problems.append(f"{len(bad)} of the sorted per-group values differ, e.g. {qs[bad[0]]!r} vs {ds[bad[0]]!r}")
    res["agree"] = not problems
    res["detail"] = "; ".join(problems) if problems else (
        f"{len(qr)} groups, total {q_total!r} (quiver) / {d_total!r} (duckdb)")
    return res


def run_all(args, runner: Runner, raw: dict) -> None:
    cells = raw["queries"] = {q["name"]: {
        "what": q["what"], "sql": {"quiver": q["quiver"], "duckdb": q["duckdb"]}, "compare": q["compare"],
        "warmup": {}, "times": {e: [] for e in ENGINES}, "rss_bytes": {e: [] for e in ENGINES},
        "cpu_s": {e: [] for e in ENGINES}, "duckdb_inner": [], "failures": {e: [] for e in ENGINES},
    } for q in QUERIES}
    dead = set()  # (query, engine) that timed out: not run again

    def record_failure(q, e, res, when):
        cells[q["name"]]["failures"][e].append(f"{when}: {res['error']}")
        log(f"FAILED {e} {q['name']} ({when}): {res['error'][:500]}")
        if "timeout" in res["error"]:
            dead.add((q["name"], e))

    log("== warm-up pass (untimed; its answers are compared)")
    for q in QUERIES:
        outs = {}
        for e in ENGINES:
            res = runner.run(e, q)
            cells[q["name"]]["warmup"][e] = {"seconds": res["seconds"], "rss_bytes": res["rss_bytes"],
                                             "answer_head": res["stdout"][:2000]}
            if res["ok"]:
                outs[e] = res["stdout"]
            else:
                record_failure(q, e, res, "warm-up")
        if len(outs) == 2:
            c = compare(q["compare"], outs["quiver"], outs["duckdb"])
        else:
            c = {"agree": False, "detail": "an engine failed: " + "; ".join(
                f for e in ENGINES for f in cells[q["name"]]["failures"][e])}
        cells[q["name"]]["answers"] = c
        log(f"{q['name']}: answers {'agree' if c['agree'] else 'DIFFER'} ({c['detail'][:300]})")
        if not c["agree"]:
            print(f"\n!!!!!!!! MISMATCH in {q['name']}: {c['detail']}\n", file=sys.stderr, flush=True)

    rng = random.Random(args.seed)
    for rep in range(args.reps):
        log(f"== timed pass {rep + 1}/{args.reps}")
        for q in QUERIES:
            order = ENGINES[:]
            rng.shuffle(order)
            for e in order:
                if (q["name"], e) in dead:
                    continue
                res = runner.run(e, q)
                if not res["ok"]:
                    record_failure(q, e, res, f"pass {rep + 1}")
                    continue
                c = cells[q["name"]]
                c["times"][e].append(res["seconds"])
                c["rss_bytes"][e].append(res["rss_bytes"])
                c["cpu_s"][e].append(res["cpu_s"])
                if e == "duckdb" and "inner" in res:
                    c["duckdb_inner"].append(res["inner"])


# --- report -------------------------------------------------------------------------------------

def versions(args, duck_py: str) -> dict:
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"
    built = time.strftime("%Y-%m-%d %H:%M", time.gmtime(os.path.getmtime(args.quiver)))
    rev = first_line(["git", "-C", REPO, "describe", "--always", "--dirty"])
    return {
        "quiver": f"{first_line([args.quiver, '--version'])} (binary {args.quiver}, built {built} UTC; "
                  f"tree at run time {rev})",
        "duckdb": "duckdb " + first_line([duck_py, "-c", "import duckdb; print(duckdb.__version__)"]),
        "python": first_line([duck_py, "-c", "import sys; print(sys.version.split()[0])"]),
    }


def summarise(raw: dict) -> list:
    rows = []
    for name, c in raw["queries"].items():
        row = {"name": name, "what": c["what"], "agree": c.get("answers", {}).get("agree", False)}
        for e in ENGINES:
            t = c["times"][e]
            row[e] = {"median_s": statistics.median(t) if t else None, "n": len(t),
                      "min_s": min(t) if t else None, "max_s": max(t) if t else None,
                      "peak_rss_bytes": max(c["rss_bytes"][e]) if c["rss_bytes"][e] else None,
                      "failures": len(c["failures"][e])}
        inner = [d["query_s"] for d in c["duckdb_inner"]]
        row["duckdb"]["inner_query_median_s"] = statistics.median(inner) if inner else None
        q, d = row["quiver"]["median_s"], row["duckdb"]["median_s"]
        row["ratio"] = q / d if q is not None and d else None
        rows.append(row)
    return rows


def _s(x):
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def _mb(x):
    return "—" if x is None else f"{x / 1e6:.0f}"


def _plural(n, one, many):
    return f"{n} {one if n == 1 else many}"


def _bytes(x):
    return f"{x / 1e6:.1f} MB" if x >= 1e5 else f"{x / 1e3:.1f} kB"


def _count(x):
    return "?" if x is None else f"{x:,}"


def markdown(raw: dict) -> str:
    m, ds, bf = raw["machine"], raw.get("dataset", {}), raw["blocks"]
    v = raw["versions"]
    rows = raw["summary"]
    n_samples = raw.get("samples_counted")
    n_series = raw.get("series_counted")
    lines = [
        HEADING,
        "",
        f"Generated by `benches/sql/duckdb_compare.py` on {raw['started']} — do not edit by hand.",
        "",
        f"Command: `{raw['command']}`. Machine: {m['nproc']} cores ({m['cpu']}), "
        f"{m['mem_bytes'] / 2**30:.1f} GiB RAM, {m['os']}. Versions: {v['quiver']}; {v['duckdb']} "
        f"(Python {v['python']}, {raw.get('duckdb_threads', '?')} threads).",
        "",
    ]
    if ds.get("reused") is False:
        lines += [
            f"Dataset: the peer benchmark's generator (`benches/peer/gen.py`, seed {ds['seed']}): "
            f"{ds['series']} series ({ds['hosts']} hosts, {ds['pods']} pods), {ds['samples_per_series']} samples "
            f"each every 15 s, {ds['samples']:,} samples, ending at the start of the run; generated in "
            f"{ds['generate_seconds']:.0f} s ({ds['om_bytes'] / 1e9:.2f} GB OpenMetrics), loaded with "
            f"`quiver import` (offline, with flush and compaction) in {ds['import_seconds']:.1f} s.",
            "",
        ]
    else:
        lines += [f"Dataset: an existing Quiver data dir (`--data-dir`), used as it was.", ""]
    overlap = ("no two blocks overlap in time" if not bf["time_overlaps"]
               else f"blocks overlapping in time: {', '.join(bf['time_overlaps'])}")
    lines += [
        f"Files both engines read: {_plural(bf['blocks'], 'block', 'blocks')} ({overlap}); "
        f"{_count(n_samples)} samples and {_count(n_series)} series as counted by Quiver's queries below; "
        f"samples.parquet {_bytes(bf['samples_parquet_bytes'])}, series.parquet "
        f"{_bytes(bf['series_parquet_bytes'])}, whole block dirs {_bytes(bf['blocks_bytes'])} "
        f"(data dir {_bytes(bf['data_dir_bytes'])}).",
        "",
        f"Method: every run is a new child process — `quiver sql --data-dir DIR --format csv \"…\"` for Quiver "
        f"(DataFusion over the data dir, opened read-only), a Python child that imports duckdb, creates views over "
        f"the live blocks' files and runs the query in an in-memory database for DuckDB. Time = wall time of the "
        f"child, so it includes process start, opening the data (Quiver) or importing duckdb (DuckDB) and writing "
        f"the answer as CSV; the `startup` row (SELECT 1) is that fixed part. Peak RSS = ru_maxrss of the child "
        f"(os.wait4), the largest over the timed runs, MB = 10^6 bytes. One untimed warm-up per query and engine "
        f"(page cache warm afterwards), then {_plural(raw['args']['reps'], 'timed pass', 'timed passes')}, each "
        f"running every query on both "
        f"engines in shuffled order. Ratio = Quiver median / DuckDB median (< 1: Quiver faster). Agree = "
        f"the warm-up answers match: counts exactly, sums within relative 1e-9; grouped queries: same number of "
        f"groups, same total, every group (per hour bucket / metric name; per series as sorted lists of averages, "
        f"since Quiver's series ids are process-global and DuckDB's per-series key is the label set).",
        "",
    ]
    cpu = raw.get("cpu")
    if cpu:
        capacity = raw["query_seconds"] * m["nproc"]
        share = cpu["others_s"] / capacity if capacity else 0
        lines += [f"CPU during the query phase ({raw['query_seconds']:.0f} s): the benchmark's processes used "
                  f"{cpu['harness_s']:.0f} CPU-s, other processes on the machine {cpu['others_s']:.0f} CPU-s "
                  f"({share:.0%} of the {capacity:.0f} CPU-s available)"
                  + (" — they competed with the benchmark, so the times are inflated." if share > 0.05 else "."), ""]
    lines += [
        "| query | Quiver median s | DuckDB median s | Quiver/DuckDB | Quiver peak RSS MB | DuckDB peak RSS MB "
        "| answers agree |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q, d = r["quiver"], r["duckdb"]
        fails = "".join(f" ({r[e]['failures']} {e} failures)" for e in ENGINES if r[e]["failures"])
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        lines.append(f"| {r['name']}: {r['what']} | {_s(q['median_s'])} | {_s(d['median_s'])} | {ratio} | "
                     f"{_mb(q['peak_rss_bytes'])} | {_mb(d['peak_rss_bytes'])} | "
                     f"{'yes' if r['agree'] else '**NO**'}{fails} |")
    inner = [(r["name"], r["duckdb"]["inner_query_median_s"]) for r in rows if r["name"] != "startup"]
    if all(x is not None for _, x in inner):
        lines += ["", "DuckDB's own query time inside the child (median, s; without Python start, `import duckdb` "
                  "and CSV output): " + ", ".join(f"{n} {x:.3f}" for n, x in inner) + "."]
    bad = [r["name"] for r in rows if not r["agree"]]
    if bad:
        lines += ["", f"**Answers differ for: {', '.join(bad)}** — see the raw JSON (`answers.detail`)."]
    lines += ["", "<details><summary>SQL of each query</summary>", "",
              "DuckDB views (FILES = the live blocks' files, listed explicitly):", "", "```sql"]
    lines += [s.format(samples="[SAMPLES FILES]", series="[SERIES FILES]") + ";" for s in DUCKDB_VIEWS]
    lines += ["```", ""]
    for name, c in raw["queries"].items():
        lines += [f"`{name}` — Quiver:", "", "```sql", c["sql"]["quiver"], "```", "", "DuckDB:", "", "```sql",
                  c["sql"]["duckdb"], "```", ""]
    lines += ["</details>", ""]
    return "\n".join(lines)


def update_docs(path: str, section: str) -> None:
    """Replaces the text between the sql-bench markers (appending them if absent)."""
    text = open(path).read() if os.path.exists(path) else ""
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{START}\n{section}{END}{tail}")


def write_json(raw: dict) -> str:
    d = os.path.join(HERE, "results")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, time.strftime("sql-%Y%m%d-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump(raw, f, indent=1, default=str)
    return path


# --- main ---------------------------------------------------------------------------------------

def _sigterm(_signo, _frame):
    raise KeyboardInterrupt


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
        if argv is None else "duckdb_compare.main(" + repr(argv) + ")",
        "args": vars(args), "machine": systems.machine(), "loadavg_start": os.getloadavg()[0],
    }
    own_work = args.work is None
    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="quiver-sqlbench-", dir="/var/tmp"))
    os.makedirs(work, exist_ok=True)
    log(f"work dir {work}")
    try:
        duck_py = duckdb_python(args.duckdb_venv)
        raw["versions"] = versions(args, duck_py)
        log(f"{raw['versions']['quiver']}; {raw['versions']['duckdb']} via {duck_py}")
        data_dir = prepare_data(args, work, raw)
        blocks = live_blocks(data_dir)
        if not blocks:
            raise SystemExit(f"no live blocks under {data_dir}/blocks")
        raw["data_dir"] = data_dir
        raw["blocks"] = block_facts(blocks, data_dir)
        if raw["blocks"]["time_overlaps"]:
            log(f"WARNING: blocks overlap in time ({raw['blocks']['time_overlaps']}); if a series has samples "
                "in two of them, DuckDB's plain reads may count differently from Quiver")
        runner = Runner(args, work, data_dir, blocks, duck_py)
        cpu0 = systems.cpu_snapshot()
        t0 = time.monotonic()
        run_all(args, runner, raw)
        raw["query_seconds"] = round(time.monotonic() - t0, 1)
        raw["cpu"] = systems.cpu_since(cpu0)
    finally:
        if args.keep or not own_work:
            log(f"kept {work}" + ("" if args.data_dir else
                                  f"; reuse its data with --data-dir {os.path.join(work, 'quiver')}"))
        else:
            shutil.rmtree(work, ignore_errors=True)
    raw["loadavg_end"] = os.getloadavg()[0]
    q = raw["queries"]
    raw["duckdb_threads"] = next((x.get("threads") for c in q.values() for x in c["duckdb_inner"]), None)
    try:
        raw["samples_counted"] = int(parse_csv(q["count_sum"]["warmup"]["quiver"]["answer_head"])[1][0][0])
    except (ValueError, IndexError, KeyError, TypeError):
        raw["samples_counted"] = None
    raw["series_counted"] = q.get("avg_by_series", {}).get("answers", {}).get("groups", {}).get("quiver")
    raw["summary"] = summarise(raw)
    md = markdown(raw)
    print("\n" + md)
    path = write_json(raw)
    log(f"raw results: {os.path.relpath(path, REPO)}")
    if args.write_docs:
        update_docs(args.docs, md)
        log(f"updated {os.path.relpath(args.docs, REPO)}")
    bad = [r["name"] for r in raw["summary"] if not r["agree"]]
    if bad:
        print(f"\n!!!!!!!! ANSWERS DIFFER: {', '.join(bad)} (see {path})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
