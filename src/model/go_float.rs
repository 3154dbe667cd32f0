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
    if v.is_sign_negative() {
        out.push('-');
    }
    if a == 0.0 {
        out.push('0');
        return;
    }
    // Go's shortest digits are ryu's: the fewest that read back to the same bits, and of
    // those the closest, ties to even (Rust's `Display` rounds ties up:
    // 1658206780088562.25 is "…562.2" in Prometheus's JSON, "…562.3" from `Display`).
    // ryu lays them out in its own way; they are laid out again here in Go's.
    let mut buf = ryu::Buffer::new();
    let (digits, point) = shortest(buf.format_finite(a));
    if exponent_form {
        // `'e'`: d.ddde±XX, the exponent signed and at least two digits.
        out.push(char::from(digits[0]));
        if digits.len() > 1 {
            out.push('.');
            digits[1..].iter().for_each(|&d| out.push(char::from(d)));
        }
        let e = point - 1;
        out.push_str(if e < 0 { "e-" } else { "e+" });
        if e.abs() < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(e.abs()));
        return;
    }
    // `'f'`: every digit, no exponent.
    let n = digits.len() as i32;
    if point <= 0 {
        out.push_str("0.");
        (0..-point).for_each(|_| out.push('0'));
        digits.iter().for_each(|&d| out.push(char::from(d)));
    } else if point >= n {
        digits.iter().for_each(|&d| out.push(char::from(d)));
        (0..point - n).for_each(|_| out.push('0'));
    } else {
        let (int, frac) = digits.split_at(point as usize);
        int.iter().for_each(|&d| out.push(char::from(d)));
        out.push('.');
        frac.iter().for_each(|&d| out.push(char::from(d)));
    }
}

/// The significant digits of ryu's text of a positive float, and where the decimal point
/// goes among them (`0.00123` → `123`, -2; `1.5e30` → `15`, 31; `120.0` → `12`, 3). On the
/// stack: this runs for every value of a JSON answer.
struct Digits {
    buf: [u8; 24],
    len: usize,
}

impl std::ops::Deref for Digits {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn shortest(text: &str) -> (Digits, i32) {
    let (mantissa, exp) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().expect("ryu writes an integer exponent")),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut d = Digits {
        buf: [0; 24],
        len: 0,
    };
    let mut point = int.len() as i32 + exp;
    for b in int.bytes().chain(frac.bytes()) {
        if d.len == 0 && b == b'0' {
            // A leading zero (of "0.00123") moves the point, not the digits.
            point -= 1;
            continue;
        }
        d.buf[d.len] = b;
        d.len += 1;
    }
    while d.len > 1 && d.buf[d.len - 1] == b'0' {
        d.len -= 1;
    }
    (d, point)
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

    /// Go's digits are `Display`'s except at ties, where Go (and ryu) round to even: the
    /// text reads back to the same bits, is never longer, and differs only at a tie.
    #[test]
    fn digits_are_displays_but_ties_go_to_even() {
        assert_eq!(
            format(1658206780088562.0 + 0.25, Style::Json),
            "1658206780088562.2"
        );
        assert_eq!(
            format(1658206780088562.0 + 0.75, Style::Json),
            "1658206780088562.8"
        );
        assert_eq!(format(2.5e15 + 0.5, Style::Json), "2500000000000000.5");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300_000 {
            // xorshift: bits of every exponent, and short decimals.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for v in [f64::from_bits(x), (x % 10_000_000) as f64 / 1000.0] {
                if !v.is_finite() {
                    continue;
                }
                let (ours, display) = (format(v, Style::Fixed), format!("{v}"));
                assert_eq!(ours.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{v:e}");
                if ours != display {
                    // A tie: the same digits but the last, one apart.
                    let (a, b) = (ours.as_bytes(), display.as_bytes());
                    let n = a.len();
                    assert!(
                        n == b.len()
                            && a[..n - 1] == b[..n - 1]
                            && a[n - 1].abs_diff(b[n - 1]) == 1,
                        "{v:e}: {ours} vs {display}"
                    );
                }
                let sci = format(v, Style::G);
                assert_eq!(sci.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{v:e}");
            }
        }
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
