//! Prometheus names for OTLP metrics and attributes, as Prometheus 3 builds them with its
//! default translation (`UnderscoreEscapingWithSuffixes`): metric names escaped to
//! `[a-zA-Z0-9:_]` with unit, `_total` and `_ratio` suffixes; attribute keys escaped to
//! label names with runs of underscores kept.

/// What kind of metric a name is built for (suffixes depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    MonotonicCounter,
    NonMonotonicCounter,
    Histogram,
    Summary,
}

fn unit_word(u: &str) -> &str {
    match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        "1" => "",
        other => other,
    }
}

fn per_unit_word(u: &str) -> &str {
    match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

fn valid_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// Invalid characters to `_`, runs of `_` collapsed, leading `_` trimmed.
fn clean_unit(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if valid_metric_char(c) { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out.trim_start_matches('_').to_string()
}

/// The unit's suffixes: the main unit's word and `per_<unit>` (annotations in braces and
/// the dimensionless `1` give none).
fn unit_suffixes(unit: &str) -> (String, String) {
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), p.trim()),
        None => (unit.trim(), ""),
    };
    let braces = |s: &str| s.contains('{') || s.contains('}');
    let main = if !main.is_empty() && !braces(main) {
        clean_unit(unit_word(main))
    } else {
        String::new()
    };
    let per = if !per.is_empty() && !braces(per) {
        clean_unit(&format!("per_{}", per_unit_word(per)))
    } else {
        String::new()
    };
    (main, per)
}

/// The metric unit as the metadata API shows it (`seconds`, `bytes_per_second`).
pub fn unit_name(unit: &str) -> String {
    let (main, per) = unit_suffixes(unit);
    let joined = match (main.is_empty(), per.is_empty()) {
        (false, false) => format!("{main}_{per}"),
        (false, true) => main,
        (true, false) => per,
        (true, true) => String::new(),
    };
    joined.trim_matches('_').to_string()
}

/// The Prometheus metric name of an OTLP metric.
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> Result<String, String> {
    let mut tokens: Vec<String> = name
        .split(|c: char| !valid_metric_char(c))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let (main, per) = unit_suffixes(unit);
    let main = main.trim_end_matches('_').to_string();
    if !main.is_empty() && !tokens.contains(&main) {
        tokens.push(main);
    }
    let per = per.trim_end_matches('_').to_string();
    if !per.is_empty() && per != "per" {
        tokens.push(per);
    }
    if kind == Kind::MonotonicCounter {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if unit == "1" && kind == Kind::Gauge {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    let mut out = tokens.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if out.is_empty() || out.chars().all(|c| c == '_') {
        return Err(format!(
            "normalization for metric {name:?} resulted in empty name"
        ));
    }
    Ok(out)
}

/// The Prometheus label name of an attribute key.
pub fn label_name(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("label name is empty".into());
    }
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    if out.chars().all(|c| c == '_') {
        return Err(format!("label name {key:?} is only underscores"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_as_prometheus_builds_them() {
        let cases = [
            (
                "http.server.request.duration",
                "s",
                Kind::Histogram,
                "http_server_request_duration_seconds",
            ),
            (
                "system.memory.usage",
                "By",
                Kind::Gauge,
                "system_memory_usage_bytes",
            ),
            ("requests", "1", Kind::MonotonicCounter, "requests_total"),
            ("cpu.utilization", "1", Kind::Gauge, "cpu_utilization_ratio"),
            (
                "test.requests",
                "{request}",
                Kind::MonotonicCounter,
                "test_requests_total",
            ),
            (
                "net.io",
                "By/s",
                Kind::MonotonicCounter,
                "net_io_bytes_per_second_total",
            ),
            ("packets", "{packet}/s", Kind::Gauge, "packets_per_second"),
            ("speed", "m/s", Kind::Gauge, "speed_meters_per_second"),
            ("x", "By/ms", Kind::Gauge, "x_bytes_per_ms"),
            ("foo_total", "", Kind::MonotonicCounter, "foo_total"),
            ("total.foo", "", Kind::MonotonicCounter, "foo_total"),
            ("foo.seconds", "s", Kind::Gauge, "foo_seconds"),
            ("temp", "Cel", Kind::Gauge, "temp_celsius"),
            ("2xx.count", "", Kind::Gauge, "_2xx_count"),
            ("foo__bar", "", Kind::Gauge, "foo_bar"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                metric_name(name, unit, kind).unwrap(),
                want,
                "{name} {unit}"
            );
        }
        assert!(metric_name("...", "", Kind::Gauge).is_err());
        assert_eq!(unit_name("By/s"), "bytes_per_second");
        assert_eq!(unit_name("{x}"), "");
    }

    #[test]
    fn label_names_as_prometheus_builds_them() {
        for (key, want) in [
            ("foo.bar", "foo_bar"),
            ("foo..bar", "foo__bar"),
            ("0day", "key_0day"),
            ("_foo", "key_foo"),
            (".foo", "key_foo"),
            ("__foo", "__foo"),
            ("ö", "key_"),
        ] {
            assert_eq!(label_name(key).unwrap(), want, "{key}");
        }
        assert!(label_name("").is_err());
        assert!(label_name("..").is_err());
    }
}
