"""Query set, HTTP client with timing, and result comparison."""

from __future__ import annotations

import gzip
import http.client
import json
import math
import socket
import sys
import time
import urllib.parse
from dataclasses import dataclass

# (name, range seconds, step seconds): Grafana-like steps for a ~1500 px wide panel.
RANGES = [("1h", 3600, 15), ("6h", 6 * 3600, 30), ("24h", 24 * 3600, 120)]
VARIANTS = ["instant"] + [r[0] for r in RANGES]


@dataclass
class Query:
    name: str
    tags: set
    expr: str


def load_queries(path: str) -> list:
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split("|", 2)
            if len(parts) != 3:
                raise SystemExit(f"{path}:{n}: expected 'name | tags | query'")
            name, tags, expr = (p.strip() for p in parts)
            out.append(Query(name, {t.strip() for t in tags.split(",") if t.strip()}, expr))
    return out


def request_params(q: Query, variant: str, end_s: int) -> tuple:
    """(path, params) for a variant; range start/end are aligned down to multiples of the
    step as Grafana aligns them."""
    if variant == "instant":
        return "/api/v1/query", {"query": q.expr, "time": str(end_s)}
    _, length, step = next(r for r in RANGES if r[0] == variant)
    end = end_s // step * step
    start = (end_s - length) // step * step
    return "/api/v1/query_range", {"query": q.expr, "start": str(start), "end": str(end), "step": str(step)}


@dataclass
class Answer:
    seconds: float          # client wall time: request sent to body fully read
    status: str             # "ok", "timeout", "error"
    body: dict | None = None
    detail: str = ""


class Client:
    """One keep-alive connection to a server. Asks for gzip like Grafana does; the body is
    decompressed and parsed after the clock stops."""

    def __init__(self, name: str, port: int, timeout_s: float, extra_params: dict):
        self.name, self.port, self.timeout_s = name, port, timeout_s
        self.extra = extra_params
        self.conn = None

    def _connect(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def get(self, path: str, params: dict, extra: bool = True, parse: bool = True) -> Answer:
        # Server-side limit too, so a timed-out query does not keep burning CPU.
        p = dict(params, timeout=f"{int(self.timeout_s)}s", **(self.extra if extra else {}))
        url = path + "?" + urllib.parse.urlencode(p)
        headers = {"Accept-Encoding": "gzip"}
        t0 = time.perf_counter()
        try:
            conn = self._connect()
            conn.request("GET", url, headers=headers)
            r = conn.getresponse()
            raw = r.read()
            elapsed = time.perf_counter() - t0
        except (socket.timeout, TimeoutError):
            self.close()
            return Answer(time.perf_counter() - t0, "timeout", detail=f"no answer within {self.timeout_s:.0f}s")
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return Answer(time.perf_counter() - t0, "error", detail=f"{type(e).__name__}: {e}")
        if not parse:
            return Answer(elapsed, "ok" if r.status == 200 else "error", detail=f"HTTP {r.status}")
        if r.getheader("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        try:
            body = json.loads(raw)
        except ValueError:
            return Answer(elapsed, "error", detail=f"HTTP {r.status}: {raw[:200]!r}")
        if r.status != 200 or body.get("status") != "success":
            # Prometheus answers 503 {"errorType":"timeout"} when its own limit hits.
            kind = "timeout" if body.get("errorType") == "timeout" else "error"
            return Answer(elapsed, kind, body, f"HTTP {r.status} {body.get('errorType')}: {str(body.get('error'))[:300]}")
        return Answer(elapsed, "ok", body)


# --- comparison -------------------------------------------------------------------------------------

MIN_NORMAL = sys.float_info.min
EPSILON = 1e-6


def almost_equal(a: float, b: float) -> bool:
    """Prometheus promqltest's float comparison (relative 1e-6; NaN equals NaN)."""
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < MIN_NORMAL:
        return diff < EPSILON * MIN_NORMAL
    return diff / min(abs_sum, sys.float_info.max) < EPSILON


def normalise(body: dict) -> dict:
    """Result as {label-set key: [(t, v)]}; a scalar under the key "scalar"."""
    data = body["data"]
    kind = data["resultType"]

    def point(p):
        return float(p[0]), float(p[1])
    if kind == "scalar":
        return {"scalar": [point(data["result"])]}
    out = {}
    for r in data["result"]:
        key = json.dumps(r.get("metric", {}), sort_keys=True)
        if kind == "vector":
            out[key] = [point(r["value"])]
        elif kind == "matrix":
            out[key] = [point(p) for p in r["values"]]
        else:
            raise ValueError(f"result type {kind}")
    return out


def _cut(s: str, n: int = 160) -> str:
    return s if len(s) <= n else s[:n] + "…"


def compare(a: Answer, b: Answer, a_name: str, b_name: str) -> tuple:
    """(equal?, short reason) of two answers, series by series and point by point."""
    if a.status != "ok" or b.status != "ok":
        bad = [f"{n}: {x.status} {x.detail}" for n, x in ((a_name, a), (b_name, b)) if x.status != "ok"]
        return False, _cut("; ".join(bad), 300)
    x, y = normalise(a.body), normalise(b.body)
    only_a, only_b = sorted(set(x) - set(y)), sorted(set(y) - set(x))
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} series only in {a_name} (e.g. {_cut(only_a[0])})")
        if only_b:
            parts.append(f"{len(only_b)} series only in {b_name} (e.g. {_cut(only_b[0])})")
        return False, f"{len(x)} vs {len(y)} series: " + "; ".join(parts)
    for key in sorted(x):
        pa, pb = x[key], y[key]
        ta, tb = [p[0] for p in pa], [p[0] for p in pb]
        if ta != tb:
            missing = sorted(set(tb) - set(ta))
            extra = sorted(set(ta) - set(tb))
            return False, _cut(f"{key}: {len(pa)} vs {len(pb)} points; only in {b_name} t={missing[:2]}; "
                               f"only in {a_name} t={extra[:2]}", 300)
        for (t, va), (_, vb) in zip(pa, pb):
            if not almost_equal(va, vb):
                return False, _cut(f"{key} t={t}: {a_name} {va!r} vs {b_name} {vb!r}", 300)
    return True, f"{len(x)} series, {sum(len(v) for v in x.values())} points"
