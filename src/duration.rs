//! Prometheus duration strings: `[0-9]+(y|w|d|h|m|s|ms)` groups, largest unit first, or `0`.

/// Parses a Prometheus duration to milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if s == "0" {
        return Ok(0);
    }
    let units: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let b = s.as_bytes();
    let (mut i, mut total, mut last_rank) = (0usize, 0i64, usize::MAX);
    if b.is_empty() {
        return Err("empty duration string".into());
    }
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("not a valid duration string: {s:?}"));
        }
        let n: i64 = s[start..i]
            .parse()
            .map_err(|_| format!("not a valid duration string: {s:?}"))?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[ustart..i];
        let rank = units
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(|| format!("not a valid duration string: {s:?}"))?;
        if last_rank != usize::MAX && rank <= last_rank {
            return Err(format!("not a valid duration string: {s:?}"));
        }
        last_rank = rank;
        total = n
            .checked_mul(units[rank].1)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| format!("duration out of range: {s:?}"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(parse_duration_ms("15d"), Ok(15 * 86_400_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        for bad in ["", "1", "h", "30m1h", "1x", "-1s", "1.5h"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
