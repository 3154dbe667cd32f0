#!/usr/bin/env python3
"""Send one OTLP/HTTP metrics export to Quiver using the official OpenTelemetry
Python SDK, and print (stdout, one JSON object) exactly what was sent.

Usage:  send_metrics.py <quiver-base-url> [--gzip]   e.g. http://127.0.0.1:9090
        (--gzip: send with Content-Encoding: gzip instead of uncompressed)
Needs:  pip install 'opentelemetry-sdk==1.45.*' 'opentelemetry-exporter-otlp-proto-http==1.45.*'
Exit:   0 if the exporter got a 2xx, 1 if the export failed, 2 on usage error.

Wire format (observed with SDK 1.45.2): exactly ONE `POST <url>/api/v1/otlp/v1/metrics`
with `Content-Type: application/x-protobuf` (exactly, no parameters), no
Content-Encoding (SDK default "none", forced here; with --gzip: `Content-Encoding:
gzip`, ~465 instead of ~801 bytes), `User-Agent: OTel-OTLP-Exporter-Python/1.45.2`,
`Accept-Encoding: gzip, deflate` (from requests), body = a
serialized ExportMetricsServiceRequest with 1 ResourceMetrics / 1 ScopeMetrics
(scope name "quiver.otlp.test", version "0.1.0") / 4 Metrics, all CUMULATIVE,
all data points sharing one time_unix_nano (one collection).
Any 2xx/3xx is success for the exporter (body ignored); 429/502/503/504 are retried.

Expected Prometheus series under Prometheus 3.x DEFAULT OTLP translation
(translation_strategy=UnderscoreEscapingWithSuffixes, no promoted resource
attributes, promote_scope_metadata=false, convert_histograms_to_nhcb=false).
Every sample timestamp = time_unix_nano // 1_000_000 (ms). Common labels on every
metric series: job="quiver-otel-test" (service.name; no service.namespace) and
instance="inst-1" (service.instance.id). No otel_scope_* labels, no exemplars
(the default trace_based exemplar filter records none without a sampled span).

  test.requests   Counter, unit "{request}"  -> OTLP Sum{monotonic, cumulative, asInt 7}
      test_requests_total{job="quiver-otel-test",instance="inst-1",method="GET"}  7
      ("{request}" annotation yields no unit suffix; monotonic sum gets _total; type counter)

  test.temperature Gauge (sync), no unit     -> OTLP Gauge{asDouble 21.5}
      test_temperature{job="quiver-otel-test",instance="inst-1"}  21.5

  test.latency    Histogram, unit "s", explicit bounds [0.1, 0.5, 1]
                  values 0.05 0.3 0.7 2.0    -> OTLP Histogram{bucket_counts [1,1,1,1], count 4, sum 3.05}
      test_latency_seconds_bucket{job=..,instance=..,le="0.1"}   1
      test_latency_seconds_bucket{job=..,instance=..,le="0.5"}   2
      test_latency_seconds_bucket{job=..,instance=..,le="1"}     3     (le formatted Go 'f',-1: "1" not "1.0")
      test_latency_seconds_bucket{job=..,instance=..,le="+Inf"}  4
      test_latency_seconds_sum{job=..,instance=..}               3.05  (python float sum, see JSON)
      test_latency_seconds_count{job=..,instance=..}             4
      (with convert_histograms_to_nhcb=true instead: one native histogram
       test_latency_seconds{job=..,instance=..} schema -53, custom_values [0.1,0.5,1])

  test.size       Histogram, unit "By", View -> ExponentialBucketHistogramAggregation(max_scale=20)
                  values 0, 100, 100.2, 100.2, 100.4 -> OTLP ExponentialHistogram (SDK 1.45.2 picks
                  scale 14 for this 0.4% value range; positive.offset 108852, 128 bucket counts
                  incl. trailing zeros; zero_count 1; negative = {offset 0, bucket_counts [0]})
      test_size_bytes{job="quiver-otel-test",instance="inst-1"}  native (integer) histogram:
          scale 14 > 8 => schema 8, OTLP buckets merged in groups of 2^(14-8)=64; Prometheus
          bucket index = (otlp_index >> 6) + 1  => buckets {1701: 1, 1702: 2, 1703: 1}
          (positive spans [(1701,3)], deltas [1,1,-1]; Prometheus also emits the SDK's empty
          negative bucket as negative span [(1,1)] delta [0]); zero_threshold 1e-128 (OTLP
          value ignored), zero_count 1, count 5, sum 400.8 (python float, see JSON),
          CounterResetHint unknown, min/max dropped.  Exact values: JSON "prometheus".
          (Values were chosen so that no all-zero 64-bucket group lies between non-empty
          ones: Prometheus' convertBucketsLayout misplaces buckets in that case, see
          "prometheus_literal_matches_exact" in the JSON.)

  target_info (resource has non-identifying attributes, so it IS emitted; gauge 1, one
  sample at the data points' timestamp; identifying attrs service.name/
  service.instance.id are dropped and replaced by job/instance):
      target_info{job="quiver-otel-test",instance="inst-1",deployment_environment="ci",
                  telemetry_sdk_language="python",telemetry_sdk_name="opentelemetry",
                  telemetry_sdk_version="1.45.2"}  1
      (telemetry.sdk.* are added by Resource.create(); the exact set is in JSON
       "resource_attributes" / "target_info".)
"""

from __future__ import annotations

import json
import math
import os
import re
import sys

# Make the run hermetic: none of these may alter what is sent.
for _var in list(os.environ):
    if _var.startswith("OTEL_"):
        del os.environ[_var]

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics  # noqa: E402
from opentelemetry.exporter.otlp.proto.http import Compression  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: E402
from opentelemetry.proto.metrics.v1 import metrics_pb2  # noqa: E402
from opentelemetry.sdk.metrics import (  # noqa: E402
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import _Gauge as SyncGauge  # noqa: E402
from opentelemetry.sdk.metrics.export import (  # noqa: E402
    AggregationTemporality,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import (  # noqa: E402
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource  # noqa: E402

OTLP_PATH = "/api/v1/otlp/v1/metrics"
SCOPE_NAME = "quiver.otlp.test"
SCOPE_VERSION = "0.1.0"

RESOURCE_ATTRS = {
    "service.name": "quiver-otel-test",
    "service.instance.id": "inst-1",
    "deployment.environment": "ci",
}
COUNTER_VALUE = 7
COUNTER_ATTRS = {"method": "GET"}
GAUGE_VALUE = 21.5
LATENCY_BOUNDS = [0.1, 0.5, 1.0]
LATENCY_VALUES = [0.05, 0.3, 0.7, 2.0]
SIZE_MAX_SCALE = 20
SIZE_VALUES = [0.0, 100.0, 100.2, 100.2, 100.4]

PROM_SCHEMA_MAX = 8
PROM_SCHEMA_MIN = -4
PROM_DEFAULT_ZERO_THRESHOLD = 1e-128
IDENTIFYING = ("service.name", "service.namespace", "service.instance.id")


class CapturingExporter(OTLPMetricExporter):
    """OTLPMetricExporter that also keeps the exact protobuf request it sent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests: list[bytes] = []
        self.results: list[str] = []

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        # Same encoder the parent uses; deterministic for the same MetricsData.
        self.requests.append(encode_metrics(metrics_data).SerializeToString())
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.results.append(result.name)
        return result


def prom_label_name(key: str) -> str:
    """Prometheus 3.x default label-name sanitisation (UnderscoreEscaping,
    label_name_underscore_sanitization=true, preserve_multiple_underscores=true)."""
    out = re.sub(r"[^A-Za-z0-9]", "_", key)
    if out[0].isdigit():
        out = "key_" + out
    elif out.startswith("_") and not out.startswith("__"):
        out = "key" + out
    return out


def attrs_to_dict(kvs) -> dict:
    out = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        out[kv.key] = getattr(v, which) if which else None
    return out


def go_float(f: float) -> str:
    """Go strconv.FormatFloat(f, 'f', -1, 64) for the values used here."""
    if f == math.inf:
        return "+Inf"
    r = repr(float(f))
    if "e" in r or "E" in r:
        r = format(f, ".17f").rstrip("0").rstrip(".")
    return r[:-2] if r.endswith(".0") else r


def convert_buckets_layout(counts: list[int], offset: int, scale_down: int):
    """Literal port of Prometheus convertBucketsLayout(adjustOffset=true)
    (storage/remote/otlptranslator/prometheusremotewrite/histograms.go).
    Returns (spans [(offset,length)], deltas)."""
    if not counts:
        return [], []
    spans: list[list[int]] = []
    deltas: list[int] = []
    prev = 0

    def append_delta(c: int):
        nonlocal prev
        spans[-1][1] += 1
        deltas.append(c - prev)
        prev = c

    bucket_idx = (offset >> scale_down) + 1
    spans.append([(offset >> scale_down) + 1, 0])
    count = 0
    for i, c in enumerate(counts):
        next_idx = ((i + offset) >> scale_down) + 1
        if bucket_idx == next_idx:
            count += c
            continue
        if count == 0:
            count = c
            continue
        gap = next_idx - bucket_idx - 1
        if gap > 2:
            spans.append([gap, 0])
        else:
            for _ in range(gap):
                append_delta(0)
        append_delta(count)
        count = c
        bucket_idx = next_idx
    gap = ((len(counts) + offset - 1) >> scale_down) + 1 - bucket_idx
    if gap > 2:
        spans.append([gap, 0])
    else:
        for _ in range(gap):
            append_delta(0)
    append_delta(count)
    return [tuple(s) for s in spans], deltas


def expand_spans(spans, deltas) -> dict[int, int]:
    """Absolute non-zero bucket counts by Prometheus index from spans+deltas."""
    out: dict[int, int] = {}
    idx = 0
    pos = 0
    cur = 0
    for off, length in spans:
        idx += off
        for _ in range(length):
            cur += deltas[pos]
            pos += 1
            if cur:
                out[idx] = cur
            idx += 1
    return out


def main() -> int:
    args = sys.argv[1:]
    use_gzip = "--gzip" in args
    args = [a for a in args if a != "--gzip"]
    if len(args) != 1:
        print(f"usage: {sys.argv[0]} <quiver-base-url> [--gzip]", file=sys.stderr)
        return 2
    base = args[0].rstrip("/")
    endpoint = base + OTLP_PATH

    cumulative = {
        k: AggregationTemporality.CUMULATIVE
        for k in (
            Counter,
            UpDownCounter,
            Histogram,
            ObservableCounter,
            ObservableUpDownCounter,
            ObservableGauge,
            SyncGauge,
        )
    }
    exporter = CapturingExporter(
        endpoint=endpoint,
        compression=Compression.Gzip if use_gzip else Compression.NoCompression,
        timeout=10,
        preferred_temporality=cumulative,
    )
    # math.inf: no background thread, so the only export is the explicit
    # force_flush() below (shutdown() then exports nothing more).
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
    resource = Resource.create(RESOURCE_ATTRS)
    provider = MeterProvider(
        resource=resource,
        metric_readers=[reader],
        views=[
            View(
                instrument_name="test.latency",
                aggregation=ExplicitBucketHistogramAggregation(boundaries=LATENCY_BOUNDS),
            ),
            View(
                instrument_name="test.size",
                aggregation=ExponentialBucketHistogramAggregation(max_scale=SIZE_MAX_SCALE),
            ),
        ],
    )
    meter = provider.get_meter(SCOPE_NAME, SCOPE_VERSION)

    counter = meter.create_counter("test.requests", unit="{request}", description="Test requests")
    counter.add(COUNTER_VALUE, COUNTER_ATTRS)

    gauge = meter.create_gauge("test.temperature", description="Test temperature")
    gauge.set(GAUGE_VALUE)

    latency = meter.create_histogram("test.latency", unit="s", description="Test latency")
    for v in LATENCY_VALUES:
        latency.record(v)

    size = meter.create_histogram("test.size", unit="By", description="Test size")
    for v in SIZE_VALUES:
        size.record(v)

    flushed = provider.force_flush()
    provider.shutdown()

    out: dict = {
        "endpoint": endpoint,
        "content_type": "application/x-protobuf",
        "compression": "gzip" if use_gzip else "none",
        "force_flush": flushed,
        "exports": len(exporter.requests),
        "export_results": exporter.results,
        "ok": exporter.results == [MetricExportResult.SUCCESS.name],
        "recorded": {
            "test.requests": {"kind": "Counter", "unit": "{request}", "attributes": COUNTER_ATTRS, "add": COUNTER_VALUE},
            "test.temperature": {"kind": "Gauge", "unit": "", "attributes": {}, "set": GAUGE_VALUE},
            "test.latency": {"kind": "Histogram", "unit": "s", "attributes": {}, "bounds": LATENCY_BOUNDS, "values": LATENCY_VALUES},
            "test.size": {"kind": "Histogram(exponential)", "unit": "By", "attributes": {}, "max_scale": SIZE_MAX_SCALE, "values": SIZE_VALUES},
        },
    }
    if not exporter.requests:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 1

    req = metrics_pb2.MetricsData()  # same wire layout as ExportMetricsServiceRequest
    req.ParseFromString(exporter.requests[0])
    out["request_bytes"] = len(exporter.requests[0])
    rm = req.resource_metrics[0]
    res_attrs = attrs_to_dict(rm.resource.attributes)
    out["resource_attributes"] = res_attrs
    sm = rm.scope_metrics[0]
    out["scope"] = {"name": sm.scope.name, "version": sm.scope.version}

    job = res_attrs.get("service.name")
    if "service.namespace" in res_attrs:
        job = f'{res_attrs["service.namespace"]}/{job}'
    common = {"job": job, "instance": res_attrs.get("service.instance.id")}

    metrics_out = {}
    series: list[dict] = []
    timestamps = []
    for m in sm.metrics:
        kind = m.WhichOneof("data")
        entry: dict = {"otlp_type": kind, "unit": m.unit, "description": m.description}
        if kind == "sum":
            dp = m.sum.data_points[0]
            entry["monotonic"] = m.sum.is_monotonic
            entry["temporality"] = metrics_pb2.AggregationTemporality.Name(m.sum.aggregation_temporality)
            value = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
            entry["value"] = value
            name = "test_requests_total"
            series.append({"name": name, "labels": {**common, **attrs_to_dict(dp.attributes)}, "value": value})
        elif kind == "gauge":
            dp = m.gauge.data_points[0]
            value = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
            entry["value"] = value
            series.append({"name": "test_temperature", "labels": {**common, **attrs_to_dict(dp.attributes)}, "value": value})
        elif kind == "histogram":
            dp = m.histogram.data_points[0]
            entry["temporality"] = metrics_pb2.AggregationTemporality.Name(m.histogram.aggregation_temporality)
            entry.update(
                explicit_bounds=list(dp.explicit_bounds),
                bucket_counts=list(dp.bucket_counts),
                count=dp.count,
                sum=dp.sum,
                min=dp.min,
                max=dp.max,
            )
            base = "test_latency_seconds"
            lbls = {**common, **attrs_to_dict(dp.attributes)}
            cum = 0
            for bound, c in zip(dp.explicit_bounds, dp.bucket_counts):
                cum += c
                series.append({"name": base + "_bucket", "labels": {**lbls, "le": go_float(bound)}, "value": cum})
            series.append({"name": base + "_bucket", "labels": {**lbls, "le": "+Inf"}, "value": dp.count})
            series.append({"name": base + "_sum", "labels": lbls, "value": dp.sum})
            series.append({"name": base + "_count", "labels": lbls, "value": dp.count})
        elif kind == "exponential_histogram":
            dp = m.exponential_histogram.data_points[0]
            entry["temporality"] = metrics_pb2.AggregationTemporality.Name(m.exponential_histogram.aggregation_temporality)
            entry.update(
                scale=dp.scale,
                zero_count=dp.zero_count,
                zero_threshold=dp.zero_threshold,
                positive={"offset": dp.positive.offset, "bucket_counts": list(dp.positive.bucket_counts)},
                negative={"offset": dp.negative.offset, "bucket_counts": list(dp.negative.bucket_counts)},
                count=dp.count,
                sum=dp.sum,
                min=dp.min,
                max=dp.max,
            )
            scale = dp.scale
            scale_down = max(0, scale - PROM_SCHEMA_MAX)
            p_spans, p_deltas = convert_buckets_layout(list(dp.positive.bucket_counts), dp.positive.offset, scale_down)
            n_spans, n_deltas = convert_buckets_layout(list(dp.negative.bucket_counts), dp.negative.offset, scale_down)
            # Absolute per-index counts, convenient for asserting.
            p_abs: dict[int, int] = {}
            for i, c in enumerate(dp.positive.bucket_counts):
                if c:
                    idx = ((i + dp.positive.offset) >> scale_down) + 1
                    p_abs[idx] = p_abs.get(idx, 0) + c
            series.append(
                {
                    "name": "test_size_bytes",
                    "labels": {**common, **attrs_to_dict(dp.attributes)},
                    "native_histogram": {
                        "schema": min(scale, PROM_SCHEMA_MAX),
                        "otlp_scale": scale,
                        "scale_down": scale_down,
                        "zero_threshold": PROM_DEFAULT_ZERO_THRESHOLD,
                        "zero_count": dp.zero_count,
                        "count": dp.count,
                        "sum": dp.sum,
                        "positive_spans": p_spans,
                        "positive_deltas": p_deltas,
                        "positive_bucket_counts_by_index": {str(k): v for k, v in sorted(p_abs.items())},
                        "negative_spans": n_spans,
                        "negative_deltas": n_deltas,
                        "counter_reset_hint": "unknown",
                        "prometheus_literal_matches_exact": expand_spans(p_spans, p_deltas) == p_abs,
                    },
                }
            )
            if scale < PROM_SCHEMA_MIN:
                entry["prometheus_rejects"] = "scale < -4"
        else:
            continue
        dp_any = getattr(m, kind).data_points[0]
        entry["time_unix_nano"] = dp_any.time_unix_nano
        entry["start_time_unix_nano"] = dp_any.start_time_unix_nano
        timestamps.append(dp_any.time_unix_nano)
        metrics_out[m.name] = entry
    out["metrics"] = metrics_out

    ts_ms = sorted({t // 1_000_000 for t in timestamps})
    for s in series:
        s["timestamp_ms"] = ts_ms[0] if len(ts_ms) == 1 else None
    ti_labels = dict(common)
    for k, v in res_attrs.items():
        if k not in IDENTIFYING:
            ti_labels[prom_label_name(k)] = str(v)
    out["target_info"] = {
        "name": "target_info",
        "labels": ti_labels,
        "value": 1,
        # one sample at min and max data-point timestamp (plus every 2m30s between)
        "timestamps_ms": ts_ms,
    }
    out["prometheus"] = series
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0 if out["ok"] and len(exporter.requests) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
