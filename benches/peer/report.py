"""Turns the raw results of a harness run into numbers, a markdown section and a JSON file.
Every figure printed here is computed from the run; nothing is typed in by hand."""

from __future__ import annotations

import json
import math
import os
import statistics
import time

SYSTEMS = ["quiver", "prometheus", "victoria-metrics"]
START, END = "<!-- peer-bench:start -->", "<!-- peer-bench:end -->"
RSS_LIMIT = 2e9        # "peak RSS below 2 GB"
WARM_P95_LIMIT = 0.100  # seconds
HIT_RATIO_MIN = 0.80
AGG_24H_SPEEDUP = 2.0


def p95(xs: list):
    """Nearest-rank 95th percentile (with 5 samples: the largest)."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def median(xs: list):
    return statistics.median(xs) if xs else None


def summarise(raw: dict) -> dict:
    rows = []
    for key, c in raw.get("queries", {}).items():
        row = {"name": c["name"], "variant": c["variant"], "tags": c["tags"]}
        for s in SYSTEMS:
            row[s] = {"median": median(c["times"][s]), "p95": p95(c["times"][s]), "n": len(c["times"][s]),
                      "failures": len(c["failures"][s])}
        q = row["quiver"]["median"]
        for peer in ("prometheus", "victoria-metrics"):
            m = row[peer]["median"]
            row[f"ratio_{peer}"] = m / q if (m is not None and q) else None
        row["correct"] = c.get("quiver_vs_prometheus", {}).get("equal")
        row["correct_detail"] = c.get("quiver_vs_prometheus", {}).get("detail", "")
        row["vm_agrees"] = c.get("vm_vs_prometheus", {}).get("equal")
        rows.append(row)

    d = raw.get("dashboard", {})
    lat = d.get("latencies", [])
    warm = [t for refresh in lat[1:] for t in refresh]  # the first refresh fills the cache
    hits, misses = d.get("cache", {}).get("hits"), d.get("cache", {}).get("misses")
    hit_ratio = hits / (hits + misses) if hits is not None and misses is not None and hits + misses > 0 else None
    dash = {"cold_p95": p95(lat[0]) if lat else None, "warm_p95": p95(warm), "warm_median": median(warm),
            "hits": hits, "misses": misses, "hit_ratio": hit_ratio}

    load = raw.get("load", {})
    rss = raw.get("peak_rss", {})
    return {"rows": rows, "dashboard": dash, "targets": targets(rows, dash, load, rss)}


def _fmt_ratio(x):
    return "n/a" if x is None else f"{x:.2f}×"


def targets(rows, dash, load, rss) -> list:
    """[(target, met?, numbers)] for the issue's targets, from the measured values."""
    out = []
    timed = [r for r in rows if r["quiver"]["median"] is not None and r["prometheus"]["median"] is not None]
    slower = [r for r in timed if r["quiver"]["median"] > r["prometheus"]["median"]]
    untimed = len(rows) - len(timed)
    worst = min(timed, key=lambda r: r["ratio_prometheus"], default=None)
    out.append(("every query at least as fast as Prometheus at the median",
                bool(rows) and not slower and untimed == 0,
                f"{len(timed) - len(slower)} of {len(rows)} query/range cells"
                + (f"; {untimed} without timings" if untimed else "")
                + (f"; worst {worst['name']} {worst['variant']} at {_fmt_ratio(worst['ratio_prometheus'])}" if worst else "")))

    agg = [r for r in rows if r["variant"] == "24h" and "agg" in r["tags"]]
    agg_ratios = [r["ratio_prometheus"] for r in agg]
    ok = bool(agg) and all(x is not None and x >= AGG_24H_SPEEDUP for x in agg_ratios)
    known = [x for x in agg_ratios if x is not None]
    out.append((f"24 h aggregation queries ≥ {AGG_24H_SPEEDUP:g}× faster than Prometheus", ok,
                f"{sum(1 for x in known if x >= AGG_24H_SPEEDUP)} of {len(agg)} queries; ratios "
                f"{min(known):.2f}×–{max(known):.2f}× (median {statistics.median(known):.2f}×)" if known
                else "no timings"))

    w = dash.get("warm_p95")
    out.append((f"warm-cache dashboard p95 < {WARM_P95_LIMIT * 1000:.0f} ms",
                w is not None and w < WARM_P95_LIMIT, "n/a" if w is None else f"{w * 1000:.1f} ms"))

    h = dash.get("hit_ratio")
    out.append((f"results-cache hit ratio > {HIT_RATIO_MIN:.0%}", h is not None and h > HIT_RATIO_MIN,
                "n/a (Quiver exports no quiver_results_cache_{hits,misses}_total)" if h is None
                else f"{h:.1%} ({dash['hits']:.0f} hits, {dash['misses']:.0f} misses)"))

    r = rss.get("quiver")
    out.append(("Quiver peak RSS < 2 GB", r is not None and r < RSS_LIMIT,
                "n/a" if r is None else f"{r / 2**20:.0f} MiB"))

    qb = load.get("quiver", {}).get("bytes_per_sample")
    pb = load.get("prometheus", {}).get("bytes_per_sample")
    out.append(("on-disk bytes/sample ≤ Prometheus's", qb is not None and pb is not None and qb <= pb,
                "n/a" if qb is None or pb is None else f"Quiver {qb:.2f} vs Prometheus {pb:.2f}"))

    wrong = [r for r in rows if r["correct"] is not True]
    out.append(("(not a speed target) every answer equal to Prometheus's", bool(rows) and not wrong,
                f"{len(rows) - len(wrong)} of {len(rows)} query/range cells match"))
    return out


# --- markdown --------------------------------------------------------------------------------------

def _ms(x):
    return "—" if x is None else (f"{x * 1000:.0f}" if x >= 0.1 else f"{x * 1000:.1f}")


def _cell(stats):
    if stats["median"] is None:
        return "failed" if stats["failures"] else "—"
    flag = f" ({stats['failures']} failed)" if stats["failures"] else ""
    return f"{_ms(stats['median'])} / {_ms(stats['p95'])}{flag}"


def _gib(x):
    return "n/a" if x is None else f"{x / 2**20:.0f} MiB"


def markdown(raw: dict, summary: dict) -> str:
    m, ds, load = raw["machine"], raw.get("dataset", {}), raw.get("load", {})
    phases = raw.get("phases", {})
    lines = [
        "## Peer comparison: Prometheus and VictoriaMetrics (issue 6)",
        "",
        f"Generated by `benches/peer/harness.py` on {raw['started']} — do not edit by hand.",
        "",
        f"Command: `{raw['command']}`. Machine: {m['nproc']} cores ({m['cpu']}), "
        f"{m['mem_bytes'] / 2**30:.1f} GiB RAM, {m['os']}. Versions: {raw.get('versions', {}).get('quiver')}; "
        f"{raw.get('versions', {}).get('prometheus')}; {raw.get('versions', {}).get('victoria-metrics')}.",
        "",
    ]
    if ds:
        lines += [
            f"Dataset (seed {raw['args']['seed']}): {ds['series']} series ({ds['hosts']} hosts with node-exporter "
            f"and HTTP/histogram series, {ds['pods']} pods with a high-cardinality `pod` label), "
            f"{ds['samples_per_series']} samples each every 15 s at x.337 s, {ds['samples']:,} samples, "
            f"ending at the start of the run; generated in {phases.get('generate', 0):.0f} s "
            f"({ds['om_bytes'] / 1e9:.2f} GB OpenMetrics, {ds['vm_bytes'] / 1e9:.2f} GB VictoriaMetrics JSON).",
            "",
        ]
    lines += ["Phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
              + f"; total {raw.get('total_seconds', 0):.0f} s.", ""]
    b = raw.get("build")
    if b:
        lines += [f"Build: `cargo build --profile {b['profile']} --bin quiver` "
                  f"{'from an empty target dir' if b['from_empty'] else 'reusing already compiled crates'}, "
                  f"{b['seconds']:.0f} s wall time, started first and overlapped with "
                  f"{' and '.join(b['overlapped_with'])} (the build phase above is the wait after them).", ""]
    elif raw.get("args", {}).get("no_build"):
        lines += ["Build: not part of this run (`--no-build`).", ""]
    cpu = raw.get("cpu")
    if cpu:
        capacity = raw.get("total_seconds", 0) * m["nproc"]
        lines += [f"CPU during the run: the harness and everything it started used {cpu['harness_s']:.0f} CPU-s; "
                  f"other processes on the machine used {cpu['others_s']:.0f} CPU-s "
                  f"({cpu['others_s'] / capacity:.0%} of the {capacity:.0f} CPU-s available)"
                  + (" — they competed with the benchmark, so absolute times are inflated." if capacity and
                     cpu["others_s"] / capacity > 0.05 else ".") if capacity else "", ""]
    if raw.get("warnings"):
        lines += ["Warnings: " + "; ".join(raw["warnings"]), ""]

    if load:
        rss = raw.get("peak_rss", {})
        lines += ["| system | load | load time | start to ready | on disk | bytes/sample | peak RSS |",
                  "|---|---|---|---|---|---|---|"]
        for s in SYSTEMS:
            ld = load.get(s, {})
            if not ld:
                continue
            disk = ld.get("disk", {}).get("allocated")
            lines.append(f"| {s} | {ld.get('method', '')} | {ld.get('seconds', 0):.1f} s | "
                         f"{ld.get('startup_seconds', 0):.1f} s | {'n/a' if disk is None else f'{disk / 1e6:.0f} MB'} | "
                         f"{ld.get('bytes_per_sample', float('nan')):.2f} | {_gib(rss.get(s))} |")
        lines += ["", f"On disk: {load.get('disk_note', '')}. Peak RSS: VmHWM of the server process at the end "
                  "of the run (after all queries and the dashboard simulation).", ""]

    rows = summary["rows"]
    if rows:
        lines += [
            f"Latency in ms, median / p95 over {raw.get('reps_done', 0)} timed repetitions "
            f"(of {raw['args']['reps']} asked; p95 is nearest-rank); client wall time of the HTTP request "
            "including the (gzip) JSON transfer. Interleaved: each repetition runs every query and range on the "
            "three systems in shuffled order. `nocache=1` is sent to Quiver and VictoriaMetrics (Prometheus has no "
            "results cache); it bypasses only the results caches: Quiver's decoded-samples cache "
            "(`--samples-cache-bytes`, default 512 MiB), VictoriaMetrics' internal caches and the OS page cache "
            "stay on, and the untimed correctness pass warms them for all three. Instant queries at the data end; range queries end there, start/end aligned to the "
            "step (1 h at 15 s, 6 h at 30 s, 24 h at 120 s). Ratio = peer median / Quiver median (> 1: Quiver "
            "faster). Correct = Quiver's answer equals Prometheus's (same series and timestamps, values within "
            "relative 1e-6, as promqltest compares).",
            "",
            "| query | range | Quiver | Prometheus | VictoriaMetrics | Prom/Quiver | VM/Quiver | correct |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(f"| {r['name']} | {r['variant']} | {_cell(r['quiver'])} | {_cell(r['prometheus'])} | "
                         f"{_cell(r['victoria-metrics'])} | {_fmt_ratio(r['ratio_prometheus'])} | "
                         f"{_fmt_ratio(r['ratio_victoria-metrics'])} | {'yes' if r['correct'] else 'no'} |")
        lines.append("")
        wrong = [r for r in rows if not r["correct"]]
        if wrong:
            lines += ["Mismatches against Prometheus (first difference):", ""]
            lines += [f"- {r['name']} {r['variant']}: {r['correct_detail']}" for r in wrong]
            lines.append("")
        failed = [(c["name"], c["variant"], s, c["failures"][s][0])
                  for c in raw["queries"].values() for s in SYSTEMS if c["failures"][s]]
        if failed:
            lines += ["Failed or timed-out requests (first reason per cell):", ""]
            lines += [f"- {n} {v} on {s}: {why[:200]}" for n, v, s, why in failed]
            lines.append("")
        vm_ok = sum(1 for r in rows if r["vm_agrees"])
        lines += [f"VictoriaMetrics agrees with Prometheus on {vm_ok} of {len(rows)} cells (information only: "
                  "MetricsQL extrapolates `rate`/`increase` differently and may differ in edge handling).", ""]
        exprs = {}
        for c in raw["queries"].values():
            exprs.setdefault(c["name"], c["expr"])
        lines += ["<details><summary>Queries</summary>", ""]
        lines += [f"- `{n}`: `{e}`" for n, e in exprs.items()]
        lines += ["", "</details>", ""]

    d, sd = raw.get("dashboard"), summary["dashboard"]
    if d:
        lines += [
            f"Warm-cache dashboard (Quiver only, without `nocache`): {len(d['queries'])} range queries "
            f"({', '.join(d['queries'])}) over the last 6 h up to the wall-clock now at step 30 s, refreshed "
            f"{d['refreshes']} times every {d['interval_s']:g} s — compressed from Grafana's 30 s refresh, so the "
            "30 s-aligned end moves on only every few refreshes. First refresh p95 "
            f"{_ms(sd['cold_p95'])} ms; later refreshes median {_ms(sd['warm_median'])} ms, p95 "
            f"{_ms(sd['warm_p95'])} ms. Results-cache hit ratio (time extents, from "
            "`quiver_results_cache_hits_total` / `_misses_total` before and after): "
            + ("n/a — the counters are absent from this build's /metrics" if sd["hit_ratio"] is None
               else f"{sd['hit_ratio']:.1%}") + ".",
            "",
        ]
        if d.get("failures"):
            lines += ["Dashboard failures: " + "; ".join(d["failures"][:5]), ""]

    lines += ["Targets (issue 6):", "", "| target | met | measured |", "|---|---|---|"]
    lines += [f"| {t} | {'met' if ok else 'not met'} | {why} |" for t, ok, why in summary["targets"]]
    return "\n".join(lines) + "\n"


def update_docs(path: str, section: str) -> None:
    """Replaces the text between the peer-bench markers (appending the markers if absent)."""
    text = open(path).read() if os.path.exists(path) else ""
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{START}\n{section}{END}{tail}")


def write_json(results_dir: str, raw: dict) -> str:
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, time.strftime("peer-%Y%m%d-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump(raw, f, indent=1, default=str)
    return path


if __name__ == "__main__":
    # Re-render a stored run (e.g. after a change to this file):
    #   python3 benches/peer/report.py benches/peer/results/peer-YYYYmmdd-HHMMSS.json [--docs docs/benchmarks.md]
    import argparse
    p = argparse.ArgumentParser(description="Print (and optionally write into the docs) the report of a stored run")
    p.add_argument("results", help="raw JSON written by harness.py")
    p.add_argument("--docs", help="markdown file whose peer-bench section is replaced")
    a = p.parse_args()
    with open(a.results) as f:
        stored = json.load(f)
    text = markdown(stored, summarise(stored))
    print(text)
    if a.docs:
        update_docs(a.docs, text)
