//! Native histograms on the wire (`prometheus.Histogram`, remote write 1.0 and 2.0) to and
//! from [`FloatHistogram`]. Integer histograms carry bucket deltas; they are summed into
//! absolute counts here, so everything after ingest sees one representation.

use super::prompb::{self, histogram::Count, histogram::ZeroCount};
use crate::model::histogram::{CounterResetHint, FloatHistogram, Span};
use crate::model::is_stale_marker;

/// What one wire histogram is: a histogram sample, or a stale marker (Prometheus marks a
/// vanished histogram series with a histogram whose sum is the stale NaN; Quiver keeps
/// staleness as the float marker for every series kind).
#[derive(Debug)]
pub enum Decoded {
    Histogram(FloatHistogram),
    Stale,
}

/// Converts and validates one histogram; the error says what is wrong with it.
pub fn from_proto(h: &prompb::Histogram) -> Result<Decoded, String> {
    if is_stale_marker(h.sum) {
        return Ok(Decoded::Stale);
    }
    let integer = matches!(h.count, Some(Count::CountInt(_)) | None)
        && (!h.positive_deltas.is_empty()
            || !h.negative_deltas.is_empty()
            || (h.positive_counts.is_empty() && h.negative_counts.is_empty()));
    let count = match h.count {
        Some(Count::CountInt(n)) => n as f64,
        Some(Count::CountFloat(f)) => f,
        None => 0.0,
    };
    let zero_count = match h.zero_count {
        Some(ZeroCount::ZeroCountInt(n)) => n as f64,
        Some(ZeroCount::ZeroCountFloat(f)) => f,
        None => 0.0,
    };
    let side = |spans: &[prompb::BucketSpan], deltas: &[i64], counts: &[f64]| {
        // The spans must describe exactly the buckets sent: checked before anything is
        // expanded, so a span of 2^24 buckets with no counts costs nothing.
        let described: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
        let sent = if integer { deltas.len() } else { counts.len() };
        if described != sent as u64 {
            return Err(format!(
                "spans need {described} buckets, the histogram has {sent} bucket counts"
            ));
        }
        let spans: Vec<Span> = spans
            .iter()
            .map(|s| Span {
                offset: s.offset,
                length: s.length,
            })
            .collect();
        let buckets = if integer {
            let mut acc: i64 = 0;
            let mut out = Vec::with_capacity(deltas.len());
            for &d in deltas {
                acc = acc
                    .checked_add(d)
                    .ok_or_else(|| "bucket count overflows".to_string())?;
                if acc < 0 {
                    return Err(format!("negative bucket count {acc}"));
                }
                out.push(acc as f64);
            }
            out
        } else {
            counts.to_vec()
        };
        Ok::<_, String>((spans, buckets))
    };
    let (positive_spans, positive_buckets) =
        side(&h.positive_spans, &h.positive_deltas, &h.positive_counts)?;
    let (negative_spans, negative_buckets) =
        side(&h.negative_spans, &h.negative_deltas, &h.negative_counts)?;
    // An unknown code reads as "unknown": the data decides.
    let hint = u8::try_from(h.reset_hint)
        .ok()
        .and_then(CounterResetHint::from_code)
        .unwrap_or_default();
    let fh = FloatHistogram {
        hint,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count,
        count,
        sum: h.sum,
        positive_spans,
        negative_spans,
        positive_buckets,
        negative_buckets,
        custom_values: h.custom_values.clone(),
    };
    fh.validate().map_err(|e| e.to_string())?;
    Ok(Decoded::Histogram(fh))
}

/// The wire form of a histogram (float counts), for remote read and tests.
pub fn to_proto(h: &FloatHistogram, timestamp: i64) -> prompb::Histogram {
    let spans = |s: &[Span]| {
        s.iter()
            .map(|s| prompb::BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    };
    prompb::Histogram {
        count: Some(Count::CountFloat(h.count)),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: Some(ZeroCount::ZeroCountFloat(h.zero_count)),
        negative_spans: spans(&h.negative_spans),
        negative_deltas: vec![],
        negative_counts: h.negative_buckets.clone(),
        positive_spans: spans(&h.positive_spans),
        positive_deltas: vec![],
        positive_counts: h.positive_buckets.clone(),
        reset_hint: h.hint.code().into(),
        timestamp,
        custom_values: h.custom_values.clone(),
        start_timestamp: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_histogram() -> prompb::Histogram {
        prompb::Histogram {
            count: Some(Count::CountInt(9)),
            sum: 18.5,
            schema: 0,
            zero_threshold: 0.001,
            zero_count: Some(ZeroCount::ZeroCountInt(1)),
            positive_spans: vec![
                prompb::BucketSpan {
                    offset: 0,
                    length: 2,
                },
                prompb::BucketSpan {
                    offset: 1,
                    length: 1,
                },
            ],
            positive_deltas: vec![2, 1, -1],
            negative_spans: vec![prompb::BucketSpan {
                offset: 0,
                length: 1,
            }],
            negative_deltas: vec![1],
            ..Default::default()
        }
    }

    #[test]
    fn integer_deltas_become_absolute_counts_and_back() {
        let Decoded::Histogram(h) = from_proto(&int_histogram()).unwrap() else {
            panic!("not a histogram")
        };
        assert_eq!(h.positive_buckets, vec![2.0, 3.0, 2.0]);
        assert_eq!(h.negative_buckets, vec![1.0]);
        assert_eq!((h.count, h.zero_count, h.sum), (9.0, 1.0, 18.5));
        let Decoded::Histogram(back) = from_proto(&to_proto(&h, 5)).unwrap() else {
            panic!("not a histogram")
        };
        assert_eq!(back, h);
    }

    #[test]
    fn invalid_histograms_are_refused() {
        let mut neg = int_histogram();
        neg.positive_deltas = vec![2, -3, 1];
        assert!(from_proto(&neg).unwrap_err().contains("negative"));
        let mut short = int_histogram();
        short.positive_deltas.pop();
        assert!(from_proto(&short).is_err());
        let mut stale = int_histogram();
        stale.sum = crate::model::stale_marker();
        assert!(matches!(from_proto(&stale), Ok(Decoded::Stale)));
    }

    /// One side: spans (offsets up to i32's ends) and bucket deltas that fill them.
    fn side() -> impl proptest::strategy::Strategy<Value = (Vec<prompb::BucketSpan>, Vec<i64>)> {
        use proptest::prelude::*;
        proptest::collection::vec(
            (
                prop_oneof![4 => -3i32..4, 1 => Just(i32::MAX), 1 => Just(i32::MIN), 1 => Just(1 << 20)],
                0u32..4,
            ),
            0..4,
        )
        .prop_flat_map(|spans| {
            let n: usize = spans.iter().map(|s| s.1 as usize).sum();
            (Just(spans), proptest::collection::vec(0i64..6, n))
        })
        .prop_map(|(spans, counts)| {
            let mut prev = 0;
            let deltas = counts
                .iter()
                .map(|&c| {
                    let d = c - prev;
                    prev = c;
                    d
                })
                .collect();
            let spans = spans
                .into_iter()
                .map(|(offset, length)| prompb::BucketSpan { offset, length })
                .collect();
            (spans, deltas)
        })
    }

    fn arbitrary() -> impl proptest::strategy::Strategy<Value = prompb::Histogram> {
        use proptest::prelude::*;
        (
            prop_oneof![4 => -4i32..9, 1 => Just(-53), 1 => Just(-5)],
            side(),
            side(),
            prop_oneof![
                Just(vec![]),
                Just(vec![1.0, 10.0]),
                Just(vec![0.5, 1.0, 2.0, 5.0, 10.0])
            ],
            0u64..50,
            prop_oneof![Just(0.0), Just(0.001), Just(f64::NAN)],
        )
            .prop_map(|(schema, (ps, pd), (ns, nd), custom, count, zt)| {
                let custom_schema = schema == -53;
                prompb::Histogram {
                    count: Some(Count::CountInt(count)),
                    sum: count as f64 * 1.5,
                    schema,
                    zero_threshold: if custom_schema { 0.0 } else { zt },
                    positive_spans: ps,
                    positive_deltas: pd,
                    negative_spans: if custom_schema { vec![] } else { ns },
                    negative_deltas: if custom_schema { vec![] } else { nd },
                    custom_values: if custom_schema { custom } else { vec![] },
                    ..Default::default()
                }
            })
    }

    /// The property below is only as good as its valid inputs: most must decode.
    #[test]
    fn the_hostile_generator_makes_valid_histograms_too() {
        use proptest::strategy::{Strategy, ValueTree};
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let valid = (0..500)
            .filter(|_| {
                let h = arbitrary().new_tree(&mut runner).unwrap().current();
                matches!(from_proto(&h), Ok(Decoded::Histogram(_)))
            })
            .count();
        assert!(
            valid > 100,
            "only {valid} of 500 generated histograms are valid"
        );
    }

    proptest::proptest! {
        /// Whatever a client sends, decoding either refuses it or yields a histogram every
        /// operation handles without panicking (offsets near i32's ends included).
        #[test]
        fn hostile_histograms_are_refused_or_safe(a in arbitrary(), b in arbitrary()) {
            use crate::promql::kernels::histogram_stats as h;
            let (Ok(Decoded::Histogram(x)), Ok(Decoded::Histogram(y))) = (from_proto(&a), from_proto(&b)) else {
                return Ok(());
            };
            for (p, q) in [(&x, &y), (&y, &x)] {
                let mut s = p.clone();
                let _ = s.add(q);
                s.compact(0);
                let mut d = p.clone();
                let _ = d.sub(q);
                let mut k = p.clone();
                let mut comp = None;
                let _ = k.kahan_add(q, &mut comp);
                let _ = p.detect_reset(q);
                let _ = p.equals(q);
                let _ = p.copy_to_schema(-4);
                let _ = p.all_buckets();
                let _ = p.to_string();
                for q in [0.0, 0.5, 1.0] {
                    let _ = h::histogram_quantile(q, p);
                }
                let _ = h::histogram_fraction(-1.0, 10.0, p);
                let _ = h::histogram_stddev(p);
                let mut buf = Vec::new();
                crate::storage::hist_codec::encode(p, &mut buf);
                proptest::prop_assert!(crate::storage::hist_codec::decode(&buf).is_some());
            }
        }
    }
}
