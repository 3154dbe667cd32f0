//! The value columns of `samples.parquet`: a float sample stored as an exact decimal.
//!
//! Since block format 3 a sample's value is `m ÷ 10^value_scale` (scale 0–15) or
//! `m × 2^(value_scale − 64)` (scale 65–127), computed in f64, where the mantissa `m` is
//! `value_mantissa + value_base`; or `value_raw` where `value_mantissa` is null. The writer
//! picks one scale per series (the decimals that cover all but 1 % of its values; for
//! integers, the power of two every mantissa shares: byte counts of pages are multiples of
//! 4096) and checks each value against the very computation readers do, so a value that
//! would not come back bit for bit (NaN stale markers, infinities, 17-digit floats) is
//! stored raw. Mantissas are delta-binary-packed: a counter's row costs the bits of its
//! increment, where the byte-stream-split doubles of formats 1 and 2 cost its whole width.
//! The base, one per series, chains the series together: each starts where the previous
//! one ended, so the delta at a series boundary is 0 (a boundary's jump set the bit width
//! of a whole block of 128 deltas: 4 % of the peer dataset's bytes). Scales and bases
//! repeat per series and dictionary-encode to almost nothing; the value columns keep
//! statistics per row group only (nothing filters on them; per page they cost about 0.5 %
//! of the file).
//!
//! Blocks of formats 1 and 2 hold one `value` double column; readers take either
//! ([`ValueLayout`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, UInt8Array};
use datafusion::arrow::buffer::{NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, UInt8Type};
use datafusion::parquet::file::metadata::RowGroupMetaData;

use crate::storage::StorageError;
use crate::storage::decimal::{POW10, mantissa};

pub const MANTISSA: &str = "value_mantissa";
pub const SCALE: &str = "value_scale";
pub const BASE: &str = "value_base";
pub const RAW: &str = "value_raw";

/// Stored mantissas stay within ±2^53, so that `value_mantissa + value_base` cannot
/// overflow an i64 in any reader (a chain that would drift further starts again at 0).
const CHAIN_LIMIT: i64 = 1 << 53;

/// Scales from here on multiply by a power of two: `SHIFTED + s` is `× 2^s`.
const SHIFTED: u8 = 64;

/// Leaf index of the first value column (after `series_id` and `timestamp`).
const FIRST: usize = 2;

/// The value fields of the current format, in file order.
pub fn fields() -> [Field; 4] {
    [
        Field::new(MANTISSA, DataType::Int64, true),
        Field::new(SCALE, DataType::UInt8, false),
        Field::new(BASE, DataType::Int64, false),
        Field::new(RAW, DataType::Float64, true),
    ]
}

/// How a series' mantissas scale back to values: `m ÷ 10^decimals` or `m × 2^shift` (one
/// of the two is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scale {
    pub decimals: u8,
    pub shift: u8,
}

impl Scale {
    /// The scale's byte in `value_scale`.
    pub fn code(self) -> u8 {
        if self.shift > 0 {
            SHIFTED + self.shift
        } else {
            self.decimals
        }
    }

    /// The scale of a `value_scale` byte; `None` for bytes no writer makes.
    pub fn of_code(c: u8) -> Option<Scale> {
        match c {
            0..=15 => Some(Scale {
                decimals: c,
                shift: 0,
            }),
            65..=127 => Some(Scale {
                decimals: 0,
                shift: c - SHIFTED,
            }),
            _ => None,
        }
    }
}

/// 2^s as an f64 (exact for s < 1024).
#[inline]
fn pow2(s: u8) -> f64 {
    f64::from_bits((1023 + u64::from(s)) << 52)
}

/// The value a mantissa stands for: the computation the writer checked.
#[inline]
pub fn value_of(m: i64, s: Scale) -> f64 {
    let mut x = m as f64;
    if s.shift != 0 {
        x *= pow2(s.shift);
    }
    if s.decimals != 0 {
        x /= POW10[usize::from(s.decimals)];
    }
    x
}

/// The mantissa of `v` at scale `s`, if [`value_of`] gives back `v`'s bits.
fn mantissa_at(v: f64, s: Scale) -> Option<i64> {
    let m = mantissa(v, usize::from(s.decimals))?;
    let stored = m >> s.shift;
    (value_of(stored, s).to_bits() == v.to_bits()).then_some(stored)
}

/// The smallest exponent at which `v` is an exact decimal, searched from `guess` (the
/// previous value's): scraped series keep their decimals, so this is one or two tries.
fn exponent_near(v: f64, guess: usize) -> Option<usize> {
    if mantissa(v, guess).is_some() {
        let mut e = guess;
        while e > 0 && mantissa(v, e - 1).is_some() {
            e -= 1;
        }
        Some(e)
    } else {
        (guess + 1..POW10.len()).find(|&e| mantissa(v, e).is_some())
    }
}

/// The scale for one series' values: the fewest decimals that leave at most 1 % of its
/// exact values out (a handful of long decimals must not push every mantissa past 2^53),
/// and for integers the trailing zero bits all their mantissas share.
pub fn scale_for(vals: &[f64]) -> Scale {
    let mut by_exp = [0usize; POW10.len()];
    let mut guess = 0;
    for &v in vals {
        if let Some(e) = exponent_near(v, guess) {
            by_exp[e] += 1;
            guess = e;
        }
    }
    let exact: usize = by_exp.iter().sum();
    let mut covered = 0;
    let mut decimals = 0;
    for (e, &n) in by_exp.iter().enumerate() {
        covered += n;
        decimals = e;
        if covered * 100 >= exact * 99 {
            break;
        }
    }
    let mut shift = 0;
    if decimals == 0 {
        let tz = vals
            .iter()
            .filter_map(|&v| mantissa(v, 0))
            .filter(|&m| m != 0)
            .map(i64::trailing_zeros)
            .min();
        shift = tz.unwrap_or(0) as u8;
    }
    Scale {
        decimals: decimals as u8,
        shift,
    }
}

/// Value columns being built for a samples file, row by row.
#[derive(Debug, Default)]
pub struct ValueRows {
    mantissa: Vec<i64>,
    exact: Vec<bool>,
    scale: Vec<u8>,
    base: Vec<i64>,
    raw: Vec<f64>,
}

impl ValueRows {
    /// One series' values, at the scale [`scale_for`] picks, stored from `chain` (the last
    /// stored mantissa of the file so far, 0 at its start; updated).
    pub fn series(vals: &[f64], chain: &mut i64) -> ValueRows {
        let s = scale_for(vals);
        let ms: Vec<Option<i64>> = vals.iter().map(|&v| mantissa_at(v, s)).collect();
        // The series' first mantissa is stored as the chain's last: the delta across the
        // boundary is 0. Mantissas are below 2^53, so the differences fit an i64.
        let mut base = ms.iter().flatten().next().map_or(0, |&m0| m0 - *chain);
        if ms.iter().flatten().any(|&m| (m - base).abs() > CHAIN_LIMIT) {
            base = 0;
        }
        let mut rows = ValueRows {
            mantissa: Vec::with_capacity(vals.len()),
            exact: Vec::with_capacity(vals.len()),
            scale: vec![s.code(); vals.len()],
            base: vec![base; vals.len()],
            raw: Vec::with_capacity(vals.len()),
        };
        for (&v, m) in vals.iter().zip(&ms) {
            rows.mantissa.push(m.map_or(0, |m| m - base));
            rows.exact.push(m.is_some());
            rows.raw.push(if m.is_some() { 0.0 } else { v });
        }
        if let Some(last) = ms.iter().rev().flatten().next() {
            *chain = last - base;
        }
        rows
    }

    pub fn len(&self) -> usize {
        self.mantissa.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mantissa.is_empty()
    }

    /// Appends `other`'s rows `at..at + n`.
    pub fn extend_from(&mut self, other: &ValueRows, at: usize, n: usize) {
        let r = at..at + n;
        self.mantissa.extend_from_slice(&other.mantissa[r.clone()]);
        self.exact.extend_from_slice(&other.exact[r.clone()]);
        self.scale.extend_from_slice(&other.scale[r.clone()]);
        self.base.extend_from_slice(&other.base[r.clone()]);
        self.raw.extend_from_slice(&other.raw[r]);
    }

    /// The rows as the four value columns, leaving this empty.
    pub fn take_columns(&mut self) -> [ArrayRef; 4] {
        let exact = NullBuffer::from(std::mem::take(&mut self.exact));
        let raw_valid = NullBuffer::from(exact.inner().iter().map(|e| !e).collect::<Vec<_>>());
        let m = Int64Array::new(
            std::mem::take(&mut self.mantissa).into(),
            (exact.null_count() > 0).then_some(exact),
        );
        let r = Float64Array::new(
            std::mem::take(&mut self.raw).into(),
            (raw_valid.null_count() > 0).then_some(raw_valid),
        );
        [
            Arc::new(m),
            Arc::new(UInt8Array::from(std::mem::take(&mut self.scale))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.base))),
            Arc::new(r),
        ]
    }
}

/// Which value columns a samples file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueLayout {
    /// Formats 1 and 2: one `value` double column.
    Float,
    /// Format 3: mantissa, scale, base and raw (this module).
    Decimal,
}

impl ValueLayout {
    /// The layout of a samples file, from its schema.
    pub fn of(schema: &Schema) -> Result<ValueLayout, StorageError> {
        let name = |i: usize| schema.fields().get(i).map(|f| f.name().as_str());
        match (name(FIRST), name(FIRST + 3)) {
            (Some("value"), _) => Ok(ValueLayout::Float),
            (Some(MANTISSA), Some(RAW)) => Ok(ValueLayout::Decimal),
            _ => Err(StorageError::Corrupt(format!(
                "samples file has neither a value column nor {MANTISSA}…{RAW}: {schema:?}"
            ))),
        }
    }

    /// Parquet leaves to read for values in row group `rg`: the raw column is skipped when
    /// every row of the group is a decimal (its statistics count only nulls).
    pub fn leaves(self, rg: &RowGroupMetaData) -> Vec<usize> {
        match self {
            ValueLayout::Float => vec![FIRST],
            ValueLayout::Decimal => {
                let all_null = rg
                    .columns()
                    .get(FIRST + 3)
                    .and_then(|c| c.statistics())
                    .and_then(|s| s.null_count_opt())
                    .is_some_and(|n| n == rg.num_rows() as u64);
                let mut v = vec![FIRST, FIRST + 1, FIRST + 2];
                if !all_null {
                    v.push(FIRST + 3);
                }
                v
            }
        }
    }

    /// The values of a batch from its value columns, in the order of [`Self::leaves`]:
    /// no copy for the float layout.
    pub fn decode(self, cols: &[ArrayRef]) -> Result<ScalarBuffer<f64>, StorageError> {
        let bad = |what: &str| StorageError::Corrupt(format!("samples file: {what}"));
        match self {
            ValueLayout::Float => {
                let c = cols.first().ok_or_else(|| bad("no value column read"))?;
                let v = c
                    .as_primitive_opt::<Float64Type>()
                    .ok_or_else(|| bad("value is not a double"))?;
                Ok(v.values().clone())
            }
            ValueLayout::Decimal => {
                let (Some(m), Some(s), Some(b)) = (
                    cols.first().and_then(|c| c.as_primitive_opt::<Int64Type>()),
                    cols.get(1).and_then(|c| c.as_primitive_opt::<UInt8Type>()),
                    cols.get(2).and_then(|c| c.as_primitive_opt::<Int64Type>()),
                ) else {
                    return Err(bad("value columns of the wrong types"));
                };
                let raw = cols
                    .get(3)
                    .and_then(|c| c.as_primitive_opt::<Float64Type>());
                decode_decimal(m, s, b, raw).ok_or_else(|| {
                    bad("a value scale out of range, or a row with neither mantissa nor raw value")
                })
            }
        }
    }
}

/// Values from the decimal columns; `None` for a file no writer makes (a scale byte out of
/// range, a null mantissa without a raw value). Mantissa plus base wraps: a corrupt file
/// gives wrong values, never a panic.
fn decode_decimal(
    m: &Int64Array,
    s: &UInt8Array,
    b: &Int64Array,
    raw: Option<&Float64Array>,
) -> Option<ScalarBuffer<f64>> {
    let (ms, ss, bs) = (m.values(), s.values(), b.values());
    let mut out: Vec<f64> = Vec::with_capacity(ms.len());
    if let Some(nulls) = m.nulls().filter(|n| n.null_count() > 0) {
        for i in 0..ms.len() {
            out.push(if nulls.is_null(i) {
                match raw {
                    Some(r) if r.is_valid(i) => r.value(i),
                    _ => return None,
                }
            } else {
                value_of(ms[i].wrapping_add(bs[i]), Scale::of_code(ss[i])?)
            });
        }
        return Some(out.into());
    }
    // Rows come a series at a time and a series has one scale and one base: convert each
    // run of them in a loop without a branch per row.
    let mut i = 0;
    while i < ms.len() {
        let (code, base) = (ss[i], bs[i]);
        let len = ss[i..]
            .iter()
            .zip(&bs[i..])
            .position(|(&c, &b)| c != code || b != base)
            .unwrap_or(ms.len() - i);
        let run = &ms[i..i + len];
        let scale = Scale::of_code(code)?;
        let m = |x: i64| x.wrapping_add(base) as f64;
        if scale.shift > 0 {
            let p = pow2(scale.shift);
            out.extend(run.iter().map(|&x| m(x) * p));
        } else if scale.decimals > 0 {
            let p = POW10[usize::from(scale.decimals)];
            out.extend(run.iter().map(|&x| m(x) / p));
        } else {
            out.extend(run.iter().map(|&x| m(x)));
        }
        i += len;
    }
    Some(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values through the columns and back.
    fn round_trip(vals: &[f64]) -> Vec<f64> {
        let mut rows = ValueRows::series(vals, &mut 0);
        let cols = rows.take_columns();
        ValueLayout::Decimal.decode(&cols).unwrap().to_vec()
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn scraped_series_pick_their_scale() {
        // A counter: integers, no shared power of two.
        assert_eq!(scale_for(&[1e6, 1e6 + 3.0, 1e6 + 10.0]), Scale::default());
        // Page-granular bytes share 4096 = 2^12.
        let pages: Vec<f64> = (1..50).map(|p| (p * 37 * 4096) as f64).collect();
        assert_eq!(
            scale_for(&pages),
            Scale {
                decimals: 0,
                shift: 12
            }
        );
        // Two decimals (node_load1), six (seconds in microseconds).
        assert_eq!(scale_for(&[0.5, 1.25, 3.0]).decimals, 2);
        assert_eq!(scale_for(&[12.000001, 12.5]).decimals, 6);
        // One long decimal among a hundred short ones does not widen every mantissa.
        let mut v: Vec<f64> = (0..200).map(|i| 1e9 + f64::from(i) / 10.0).collect();
        v.push(0.123456789012);
        let s = scale_for(&v);
        assert_eq!(s.decimals, 1);
        assert_eq!(bits(&round_trip(&v)), bits(&v));
        let rows = ValueRows::series(&v, &mut 0);
        assert_eq!(rows.exact.iter().filter(|e| !**e).count(), 1, "one raw row");
    }

    #[test]
    fn every_scale_has_one_byte() {
        for decimals in 0..16 {
            let s = Scale { decimals, shift: 0 };
            assert_eq!(Scale::of_code(s.code()), Some(s));
        }
        for shift in 1..64 {
            let s = Scale { decimals: 0, shift };
            assert_eq!(Scale::of_code(s.code()), Some(s));
        }
    }

    #[test]
    fn special_values_come_back_bit_for_bit() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let v = [
            0.0,
            -0.0,
            1.0,
            stale,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.1 + 0.2,
            f64::MAX,
            f64::MIN_POSITIVE,
            9_007_199_254_740_993.0,
            -4096.0,
            1e300,
        ];
        assert_eq!(bits(&round_trip(&v)), bits(&v));
        // All raw, all decimal, and each alone.
        for x in v {
            assert_eq!(bits(&round_trip(&[x, x])), bits(&[x, x]), "{x}");
        }
    }

    #[test]
    fn float_layout_reads_the_old_column_without_a_copy() {
        let col: ArrayRef = Arc::new(Float64Array::from(vec![1.5, f64::NAN]));
        let v = ValueLayout::Float
            .decode(std::slice::from_ref(&col))
            .unwrap();
        assert_eq!(
            v.inner().as_ptr(),
            col.as_primitive::<Float64Type>().values().inner().as_ptr()
        );
    }

    #[test]
    fn files_no_writer_makes_are_refused_not_panicked_on() {
        let m: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        let s: ArrayRef = Arc::new(UInt8Array::from(vec![0, 0]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![0, 0]));
        // A null mantissa and no raw column.
        assert!(
            ValueLayout::Decimal
                .decode(&[m, s.clone(), b.clone()])
                .is_err()
        );
        let m1: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        for bad in [16, 64, 128, 255] {
            let code: ArrayRef = Arc::new(UInt8Array::from(vec![0, bad]));
            assert!(
                ValueLayout::Decimal
                    .decode(&[m1.clone(), code, b.clone()])
                    .is_err(),
                "scale byte {bad}"
            );
        }
        // A base that overflows the mantissa wraps rather than panics.
        let huge: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX, i64::MAX]));
        assert!(
            ValueLayout::Decimal
                .decode(&[m1.clone(), s.clone(), huge])
                .is_ok()
        );
        assert!(
            ValueLayout::Decimal
                .decode(&[m1.clone(), s.clone()])
                .is_err()
        );
        assert!(ValueLayout::Decimal.decode(&[m1, s, b]).is_ok());
        assert!(ValueLayout::Decimal.decode(&[]).is_err());
    }

    /// Series written one after another chain: each stored run starts at the previous
    /// one's last stored mantissa (a delta of 0 across the boundary), and all read back.
    #[test]
    fn series_chain_across_boundaries() {
        let series: Vec<Vec<f64>> = vec![
            (0..50).map(|k| 1e12 + f64::from(k) * 7.0).collect(),
            (0..50).map(|k| 3.25 + f64::from(k) / 4.0).collect(),
            vec![f64::NAN, 12.0, f64::INFINITY, 13.0],
            (0..50).map(|k| f64::from(k * 4096)).collect(),
            vec![f64::NAN],
            (0..50).map(|k| -5e15 + f64::from(k)).collect(),
        ];
        let (mut all, mut chain) = (ValueRows::default(), 0);
        let mut bounds = Vec::new();
        for v in &series {
            let rows = ValueRows::series(v, &mut chain);
            bounds.push(all.len());
            all.extend_from(&rows, 0, rows.len());
        }
        let stored: Vec<(i64, bool)> = all
            .mantissa
            .iter()
            .copied()
            .zip(all.exact.iter().copied())
            .collect();
        for &b in &bounds[1..] {
            let before = stored[..b].iter().rev().find(|s| s.1).map(|s| s.0);
            let after = stored[b..].iter().find(|s| s.1).map(|s| s.0);
            if let (Some(x), Some(y)) = (before, after) {
                assert_eq!(x, y, "the chain continues at row {b}");
            }
        }
        assert!(stored.iter().all(|s| s.0.abs() <= CHAIN_LIMIT));
        let want: Vec<f64> = series.concat();
        let got = ValueLayout::Decimal
            .decode(&all.take_columns())
            .unwrap()
            .to_vec();
        assert_eq!(bits(&got), bits(&want));
    }

    proptest! {
        #[test]
        fn any_values_round_trip(
            vals in proptest::collection::vec(prop_oneof![
                any::<f64>(),
                (0i64..1_000_000_000, 0u32..9).prop_map(|(m, e)| m as f64 / 10f64.powi(e as i32)),
                (0i64..1_000_000, 0u32..20).prop_map(|(m, s)| (m << s) as f64),
                Just(f64::from_bits(0x7ff0_0000_0000_0002)),
            ], 0..300)
        ) {
            prop_assert_eq!(bits(&round_trip(&vals)), bits(&vals));
        }
    }
}
