//! Floats as Go prints them, in one place: Prometheus's answers are Go's `strconv` and
//! `fmt` output, and a client compares them as text (label values of `count_values`, bucket
//! bounds, warning messages, the JSON API). Every style uses the shortest digits that
//! round-trip (Go's precision `-1`); they differ only in when the exponent form is used.

/// When the exponent form is used. The decimal exponent `e` is that of the first
/// significant digit (`1234.5` has `e = 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `strconv.FormatFloat(v, 'f', -1, 64)`: never (`count_values`, label values).
    Fixed,
    /// Prometheus's JSON sample values (`jsonutil.MarshalFloat`): `'e'` when
    /// `|v| < 1e-6` or `|v| ≥ 1e21`, else `'f'`.
    Json,
    /// `fmt`'s `%g` and `%v` (`strconv`'s `'g'`, -1): when `e < -4` or `e ≥ 6`.
    G,
}

/// `v` formatted in `style`; `NaN`, `+Inf` and `-Inf` in every style.
pub fn format(v: f64, style: Style) -> String {
    let mut out = String::new();
    write(v, style, &mut out);
    out
}

/// `%g`, the style of Prometheus's messages and histogram texts.
pub fn g(v: f64) -> String {
    format(v, Style::G)
}

/// [`format`] appended to `out` (the JSON writer's hot path: no allocation in fixed form).
pub fn write(v: f64, style: Style, out: &mut String) {
    use std::fmt::Write as _;
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    // The decimal exponent of a float's shortest digits is below -4 exactly when its
    // magnitude is below 1e-4 (and so on): no double lies between a power of ten and the
    // shortest text that reads back to it, so magnitudes decide.
    let a = v.abs();
    let exponent_form = a != 0.0
        && match style {
            Style::Fixed => false,
            Style::Json => !(1e-6..1e21).contains(&a),
            Style::G => !(1e-4..1e6).contains(&a),
        };
    if !exponent_form {
        // Rust's `Display` is Go's `'f', -1`: shortest round-trip digits, no exponent.
        let _ = write!(out, "{v}");
        return;
    }
    // Rust's `{:e}` gives the same digits as "1.2345e-7"; Go writes the exponent signed
    // and at least two digits long.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').expect("exponent present");
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    let _ = write!(out, "{mantissa}e{sign}{digits:0>2}");
}

#[cfg(test)]
mod tests {
    use super::{Style, format};

    /// Each row as Go 1.22 prints it (`strconv.FormatFloat` / `fmt.Sprintf`).
    #[test]
    fn every_style_as_go_prints_it() {
        use Style::*;
        let rows: &[(f64, &str, &str, &str)] = &[
            // value, 'f' -1, JSON, %g (= %v)
            (0.0, "0", "0", "0"),
            (-0.0, "-0", "-0", "-0"),
            (1.0, "1", "1", "1"),
            (-2.5, "-2.5", "-2.5", "-2.5"),
            (0.1, "0.1", "0.1", "0.1"),
            (123456.0, "123456", "123456", "123456"),
            (1e6, "1000000", "1000000", "1e+06"),
            (1234567.0, "1234567", "1234567", "1.234567e+06"),
            (
                1e20,
                "100000000000000000000",
                "100000000000000000000",
                "1e+20",
            ),
            (1e21, "1000000000000000000000", "1e+21", "1e+21"),
            (1e-4, "0.0001", "0.0001", "0.0001"),
            (1.5e-5, "0.000015", "0.000015", "1.5e-05"),
            (1e-6, "0.000001", "0.000001", "1e-06"),
            (1e-7, "0.0000001", "1e-07", "1e-07"),
            (f64::NAN, "NaN", "NaN", "NaN"),
            (f64::INFINITY, "+Inf", "+Inf", "+Inf"),
            (f64::NEG_INFINITY, "-Inf", "-Inf", "-Inf"),
            (123456.7, "123456.7", "123456.7", "123456.7"),
            (-2.5e-7, "-0.00000025", "-2.5e-07", "-2.5e-07"),
        ];
        for &(v, f, j, g) in rows {
            assert_eq!(format(v, Fixed), f, "'f' {v}");
            assert_eq!(format(v, Json), j, "json {v}");
            assert_eq!(format(v, G), g, "%g {v}");
        }
        assert_eq!(format(1e300, G), "1e+300");
        assert_eq!(format(1e300, Fixed), format!("1{}", "0".repeat(300)));
    }

    /// Shortest digits that read back to the same bits, in every style.
    #[test]
    fn digits_round_trip() {
        for v in [0.1 + 0.2, 1.0 / 3.0, 123.456e-12, f64::MAX, 5e-324, 1e23] {
            for s in [Style::Fixed, Style::Json, Style::G] {
                let t = format(v, s);
                assert_eq!(
                    t.parse::<f64>().unwrap().to_bits(),
                    v.to_bits(),
                    "{s:?} {t}"
                );
            }
        }
    }
}
