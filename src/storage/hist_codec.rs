//! A native histogram as bytes, for the WAL: fixed fields, then spans and absolute bucket
//! counts per side, then custom bounds. Little-endian; decoding checks every length against
//! the bytes left and refuses a histogram that does not validate, so a corrupt record reads
//! as torn instead of allocating or panicking.

use crate::model::histogram::{CounterResetHint, FloatHistogram, Span};

/// Bytes [`encode`] writes for `h`.
pub fn encoded_len(h: &FloatHistogram) -> usize {
    1 + 4
        + 4 * 8
        + 5 * 4
        + 8 * (h.positive_spans.len() + h.negative_spans.len())
        + 8 * (h.positive_buckets.len() + h.negative_buckets.len() + h.custom_values.len())
}

pub fn encode(h: &FloatHistogram, b: &mut Vec<u8>) {
    b.push(h.hint.code());
    b.extend_from_slice(&h.schema.to_le_bytes());
    for v in [h.zero_threshold, h.zero_count, h.count, h.sum] {
        b.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    for (spans, buckets) in [
        (&h.positive_spans, &h.positive_buckets),
        (&h.negative_spans, &h.negative_buckets),
    ] {
        b.extend_from_slice(&(spans.len() as u32).to_le_bytes());
        for s in spans {
            b.extend_from_slice(&s.offset.to_le_bytes());
            b.extend_from_slice(&s.length.to_le_bytes());
        }
        put_f64s(b, buckets);
    }
    put_f64s(b, &h.custom_values);
}

fn put_f64s(b: &mut Vec<u8>, vs: &[f64]) {
    b.extend_from_slice(&(vs.len() as u32).to_le_bytes());
    for v in vs {
        b.extend_from_slice(&v.to_bits().to_le_bytes());
    }
}

/// Reads one histogram from the front of `b`; returns it and the bytes used.
pub fn decode(b: &[u8]) -> Option<(FloatHistogram, usize)> {
    let mut r = Cursor { b, i: 0 };
    let hint = CounterResetHint::from_code(r.take(1)?[0])?;
    let schema = i32::from_le_bytes(r.take(4)?.try_into().ok()?);
    let zero_threshold = r.f64()?;
    let zero_count = r.f64()?;
    let count = r.f64()?;
    let sum = r.f64()?;
    let mut sides = Vec::with_capacity(2);
    for _ in 0..2 {
        let n = r.len(8)?;
        let mut spans = Vec::with_capacity(n);
        for _ in 0..n {
            let offset = i32::from_le_bytes(r.take(4)?.try_into().ok()?);
            let length = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
            spans.push(Span { offset, length });
        }
        sides.push((spans, r.f64s()?));
    }
    let custom_values = r.f64s()?;
    let (negative_spans, negative_buckets) = sides.pop()?;
    let (positive_spans, positive_buckets) = sides.pop()?;
    let h = FloatHistogram {
        hint,
        schema,
        zero_threshold,
        zero_count,
        count,
        sum,
        positive_spans,
        negative_spans,
        positive_buckets,
        negative_buckets,
        custom_values,
    };
    h.validate().ok()?;
    Some((h, r.i))
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(s)
    }
    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_bits(u64::from_le_bytes(
            self.take(8)?.try_into().ok()?,
        )))
    }
    /// A count of items of `size` bytes each, refused when the bytes left cannot hold them.
    fn len(&mut self, size: usize) -> Option<usize> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        (n.checked_mul(size)? <= self.b.len() - self.i).then_some(n)
    }
    fn f64s(&mut self) -> Option<Vec<f64>> {
        let n = self.len(8)?;
        (0..n).map(|_| self.f64()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_refuses_truncation() {
        let mut h = FloatHistogram::from_absolute(
            1,
            0.001,
            2.0,
            12.0,
            30.5,
            (-1, vec![1.0, 0.0, 3.0]),
            (2, vec![4.0, 2.0]),
            vec![],
        );
        h.hint = CounterResetHint::Gauge;
        let mut b = Vec::new();
        encode(&h, &mut b);
        assert_eq!(b.len(), encoded_len(&h));
        let (back, used) = decode(&b).unwrap();
        assert_eq!(used, b.len());
        assert_eq!(back, h);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_none(), "cut at {cut}");
        }
        // A count claiming more items than bytes left is refused before allocating.
        let mut huge = b.clone();
        huge[37..41].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_none());
    }
}
