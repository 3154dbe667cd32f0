//! Packed series runs: the samples cache's compact form of one series of one block.
//!
//! A run is cut into frames of up to [`FRAME`] samples, each packed on its own so a read of
//! a few minutes decodes only the frames overlapping them (a binary search on each frame's
//! first timestamp):
//! - timestamps as their deltas above the frame's smallest delta, at the frame's bit width
//!   (a regular scrape interval packs to 0 bits);
//! - values as decimal mantissas with one exponent per frame (counters are integers, most
//!   gauges have a few decimals), as first or second differences above the smallest,
//!   whichever packs smaller; a frame whose values are not all exact decimals keeps their
//!   bits raw.
//!
//! Scrape data packs to 1–3 bytes a sample (the peer benchmark's dataset to 1.72) where
//! decoded runs take 16, so the cache holds several times more series in the same memory. Decoding reproduces every value's bits:
//! packing checks each value against the exact computation decoding does and keeps the
//! frame raw otherwise (NaN stale markers, -0.0, infinities and 17-digit floats included).

use super::decimal::{decimal, exponent, mantissa};
#[cfg(test)]
use super::read::Piece;

/// Samples per frame: a short read decodes at most two frames per series.
const FRAME: usize = 128;

const RAW: u8 = 0;
const DELTA: u8 = 1;
const DELTA2: u8 = 2;

/// One series' samples from one block, packed (see the module docs).
#[derive(Debug)]
pub struct PackedRun {
    /// First timestamp of each frame.
    firsts: Box<[i64]>,
    /// Start of each frame in `bytes`.
    offsets: Box<[usize]>,
    /// The frames, then [`PAD`] zero bytes so the bit reader can always load 16.
    bytes: Box<[u8]>,
    len: usize,
    /// The last timestamp.
    last: i64,
}

const PAD: usize = 16;

/// The largest packing buffer a thread keeps between runs.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    static PACK_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl PackedRun {
    /// Packs samples sorted by time (`ts` and `vals` of one length).
    pub fn pack(ts: &[i64], vals: &[f64]) -> PackedRun {
        assert_eq!(ts.len(), vals.len(), "a run's columns have one length");
        let frames = ts.len().div_ceil(FRAME);
        let mut firsts = Vec::with_capacity(frames);
        let mut offsets = Vec::with_capacity(frames);
        // Packed in a buffer kept per thread, then copied into one allocation of the exact
        // size: a run lives in the cache for long, and shrinking a larger buffer in place
        // left a free hole behind every cached run, between which the queries' buffers
        // could not be given back.
        let bytes = PACK_SCRATCH.with_borrow_mut(|bytes| {
            bytes.clear();
            for (t, v) in ts.chunks(FRAME).zip(vals.chunks(FRAME)) {
                firsts.push(t[0]);
                offsets.push(bytes.len());
                pack_frame(t, v, bytes);
            }
            bytes.extend_from_slice(&[0; PAD]);
            let exact: Box<[u8]> = bytes.as_slice().into();
            // A run of a very long series must not keep its size per thread.
            if bytes.capacity() > SCRATCH_KEEP {
                *bytes = Vec::new();
            }
            exact
        });
        PackedRun {
            firsts: firsts.into(),
            offsets: offsets.into(),
            bytes,
            len: ts.len(),
            last: ts.last().copied().unwrap_or(i64::MIN),
        }
    }

    /// Bytes this run holds on the heap (what the cache weighs).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.len() + self.firsts.len() * 16
    }

    /// The first and last timestamps (none for an empty run).
    pub fn time_range(&self) -> Option<(i64, i64)> {
        self.firsts.first().map(|&f| (f, self.last))
    }

    /// The frames overlapping `[min_t, max_t]`, as a range of frame indices.
    fn frames(&self, min_t: i64, max_t: i64) -> std::ops::Range<usize> {
        if self.len == 0 || min_t > max_t {
            return 0..0;
        }
        // The frame holding `min_t` (the last starting at or before it) through the last
        // frame starting at or before `max_t`.
        let a = self
            .firsts
            .partition_point(|&f| f <= min_t)
            .saturating_sub(1);
        let b = self.firsts.partition_point(|&f| f <= max_t);
        a..b.max(a)
    }

    /// At least as many samples as [`PackedRun::unpack_into`] appends for the range.
    pub fn bound(&self, min_t: i64, max_t: i64) -> usize {
        let f = self.frames(min_t, max_t);
        (f.end * FRAME)
            .min(self.len)
            .saturating_sub(f.start * FRAME)
    }

    /// The samples within `[min_t, max_t]`, if any: only the frames overlapping the range
    /// are decoded.
    #[cfg(test)]
    pub fn unpack(&self, min_t: i64, max_t: i64) -> Option<Piece> {
        let n = self.bound(min_t, max_t);
        let (mut ts, mut vals) = (Vec::with_capacity(n), Vec::with_capacity(n));
        self.unpack_into(min_t, max_t, &mut ts, &mut vals);
        (!ts.is_empty()).then(|| Piece::new(ts, vals))
    }

    /// Appends the samples within `[min_t, max_t]` to `ts` and `vals`. A frame wholly
    /// inside the range is decoded straight into them; one across an end, into a scratch
    /// frame first and then cut.
    pub fn unpack_into(&self, min_t: i64, max_t: i64, ts: &mut Vec<i64>, vals: &mut Vec<f64>) {
        let mut scratch = Scratch {
            ts: [0; FRAME],
            vals: [0.0; FRAME],
            offs: [0; FRAME],
            ms: [0; FRAME],
        };
        for f in self.frames(min_t, max_t) {
            let count = FRAME.min(self.len - f * FRAME);
            // The frame's samples are before the next frame's first (or are the run's last).
            let inside = self.firsts[f] >= min_t
                && match self.firsts.get(f + 1) {
                    Some(&next) => next <= max_t,
                    None => self.last <= max_t,
                };
            let Scratch {
                ts: st,
                vals: sv,
                offs,
                ms,
            } = &mut scratch;
            let at = ts.len();
            let out = if inside {
                ts.resize(at + count, 0);
                vals.resize(at + count, 0.0);
                (&mut ts[at..], &mut vals[at..])
            } else {
                (&mut st[..count], &mut sv[..count])
            };
            unpack_frame(
                &self.bytes,
                self.offsets[f],
                self.firsts[f],
                count,
                out,
                offs,
                ms,
            );
            if inside {
                continue;
            }
            let (ft, fv) = (&st[..count], &sv[..count]);
            let lo = ft.partition_point(|&t| t < min_t);
            let hi = ft.partition_point(|&t| t <= max_t);
            ts.extend_from_slice(&ft[lo..hi]);
            vals.extend_from_slice(&fv[lo..hi]);
        }
    }
}

/// Bits needed for `x`.
fn width(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// Offsets of `xs` above their minimum (wrapping, so any i64 input round-trips), and that
/// minimum and the offsets' bit width.
fn offsets_above_min(xs: &[i64]) -> (i64, u32, Vec<u64>) {
    let min = xs.iter().copied().min().unwrap_or(0);
    let offs: Vec<u64> = xs.iter().map(|&x| x.wrapping_sub(min) as u64).collect();
    let w = offs.iter().map(|&o| width(o)).max().unwrap_or(0);
    (min, w, offs)
}

fn packed_len(count: usize, w: u32) -> usize {
    (count * w as usize).div_ceil(8)
}

/// Appends `vals` (each below 2^w) at `w` bits each, little-endian, byte-aligned at the start.
fn put_bits(out: &mut Vec<u8>, vals: &[u64], w: u32) {
    if w == 0 {
        return;
    }
    let (mut acc, mut nbits) = (0u128, 0u32);
    for &v in vals {
        acc |= u128::from(v) << nbits;
        nbits += w;
        while nbits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            nbits -= 8;
        }
    }
    if nbits > 0 {
        out.push(acc as u8);
    }
}

/// Reads `out.len()` values of `w` bits from `bytes[start..]` (which has [`PAD`] bytes
/// after the last packed byte).
fn get_bits(bytes: &[u8], start: usize, w: u32, out: &mut [u64]) {
    // One copy of the loop per width, so shifts and offsets are constants.
    macro_rules! widths {
        ($($w:literal)*) => {
            match w {
                0 => out.fill(0),
                $($w => get_bits_of::<$w>(&bytes[start..], out),)*
                _ => unreachable!("a width is at most 64 bits"),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30
        31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59
        60 61 62 63 64);
}

/// [`get_bits`] at a width known when compiling: eight values are `W` bytes.
fn get_bits_of<const W: usize>(src: &[u8], out: &mut [u64]) {
    let mask = if W == 64 { u64::MAX } else { (1u64 << W) - 1 };
    let one = |g: &[u8], bit: usize| -> u64 {
        let at = bit / 8;
        if W <= 56 {
            u64::from_le_bytes(g[at..at + 8].try_into().expect("8 bytes")) >> (bit % 8) & mask
        } else {
            (u128::from_le_bytes(g[at..at + 16].try_into().expect("16 bytes")) >> (bit % 8)) as u64
                & mask
        }
    };
    let mut groups = out.chunks_exact_mut(8);
    let mut base = 0;
    for group in &mut groups {
        // The group's bytes and the padding its last load reaches, checked once.
        let g = &src[base..base + W + 16];
        for (k, o) in group.iter_mut().enumerate() {
            *o = one(g, k * W);
        }
        base += W;
    }
    let rest = groups.into_remainder();
    let g = &src[base..];
    for (k, o) in rest.iter_mut().enumerate() {
        *o = one(g, k * W);
    }
}

fn put_i64(out: &mut Vec<u8>, x: i64) {
    out.extend_from_slice(&x.to_le_bytes());
}

fn get_i64(bytes: &[u8], at: &mut usize) -> i64 {
    let x = i64::from_le_bytes(bytes[*at..*at + 8].try_into().expect("8 bytes"));
    *at += 8;
    x
}

/// Frame layout: value mode, timestamp width, value width, exponent (a byte each); then
/// the timestamps' minimum delta and packed deltas (when more than one sample); then the
/// values: raw bits, or the first mantissa (and first difference for second differences),
/// the minimum difference and the packed differences.
fn pack_frame(ts: &[i64], vals: &[f64], out: &mut Vec<u8>) {
    let n = ts.len();
    let deltas: Vec<i64> = ts.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let (t_min, t_w, t_offs) = offsets_above_min(&deltas);

    let values = pack_values(vals);
    out.extend_from_slice(&[values.mode, t_w as u8, values.width as u8, values.exp]);
    if n > 1 {
        put_i64(out, t_min);
        put_bits(out, &t_offs, t_w);
    }
    match values.mode {
        RAW => {
            for v in vals {
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        _ => {
            for h in &values.head {
                put_i64(out, *h);
            }
            put_bits(out, &values.offs, values.width);
        }
    }
}

struct Values {
    mode: u8,
    exp: u8,
    width: u32,
    /// The leading mantissa(s) and the differences' minimum.
    head: Vec<i64>,
    offs: Vec<u64>,
}

fn pack_values(vals: &[f64]) -> Values {
    let raw = Values {
        mode: RAW,
        exp: 0,
        width: 0,
        head: Vec::new(),
        offs: Vec::new(),
    };
    let mut exp = 0;
    for &v in vals {
        match exponent(v) {
            Some(e) => exp = exp.max(e),
            None => return raw,
        }
    }
    let mut ms = Vec::with_capacity(vals.len());
    for &v in vals {
        match mantissa(v, exp) {
            Some(m) => ms.push(m),
            None => return raw,
        }
    }
    // Mantissas are below 2^53 in magnitude: differences of differences fit an i64.
    let d1: Vec<i64> = ms.windows(2).map(|w| w[1] - w[0]).collect();
    let d2: Vec<i64> = d1.windows(2).map(|w| w[1] - w[0]).collect();
    let (min1, w1, offs1) = offsets_above_min(&d1);
    let (min2, w2, offs2) = offsets_above_min(&d2);
    let size1 = 8 + if d1.is_empty() { 0 } else { 8 } + packed_len(d1.len(), w1);
    let size2 = 16 + if d2.is_empty() { 0 } else { 8 } + packed_len(d2.len(), w2);
    if size1.min(size2) >= 8 * vals.len() {
        return raw;
    }
    let exp = exp as u8;
    if size2 < size1 {
        let mut head = vec![ms[0], d1[0]];
        if !d2.is_empty() {
            head.push(min2);
        }
        Values {
            mode: DELTA2,
            exp,
            width: w2,
            head,
            offs: offs2,
        }
    } else {
        let mut head = vec![ms[0]];
        if !d1.is_empty() {
            head.push(min1);
        }
        Values {
            mode: DELTA,
            exp,
            width: w1,
            head,
            offs: offs1,
        }
    }
}

/// A frame's decoded samples and the intermediate values decoding them takes.
struct Scratch {
    ts: [i64; FRAME],
    vals: [f64; FRAME],
    offs: [u64; FRAME],
    ms: [i64; FRAME],
}

/// Decodes one frame of `n` samples into `out` (two slices of `n`), with `offs` and `ms`
/// as working space.
fn unpack_frame(
    bytes: &[u8],
    start: usize,
    first: i64,
    n: usize,
    out: (&mut [i64], &mut [f64]),
    offs: &mut [u64; FRAME],
    ms: &mut [i64; FRAME],
) {
    let (ts, vals) = (&mut out.0[..n], &mut out.1[..n]);
    let [mode, t_w, v_w, exp] = [
        bytes[start],
        bytes[start + 1],
        bytes[start + 2],
        bytes[start + 3],
    ];
    let mut at = start + 4;
    ts[0] = first;
    if n > 1 {
        let t_min = get_i64(bytes, &mut at);
        if t_w == 0 {
            // A regular interval.
            let mut t = first;
            for slot in ts[1..].iter_mut() {
                t = t.wrapping_add(t_min);
                *slot = t;
            }
        } else {
            let offs = &mut offs[..n - 1];
            get_bits(bytes, at, u32::from(t_w), offs);
            at += packed_len(n - 1, u32::from(t_w));
            let mut t = first;
            for (slot, &o) in ts[1..].iter_mut().zip(offs.iter()) {
                t = t.wrapping_add(t_min.wrapping_add(o as i64));
                *slot = t;
            }
        }
    }
    if mode == RAW {
        for (v, b) in vals.iter_mut().zip(bytes[at..at + 8 * n].chunks_exact(8)) {
            *v = f64::from_bits(u64::from_le_bytes(b.try_into().expect("8 bytes")));
        }
        return;
    }
    // Mantissas first (a running sum), then their values in one pass.
    let ms = &mut ms[..n];
    ms[0] = get_i64(bytes, &mut at);
    if mode == DELTA {
        if n > 1 {
            let min = get_i64(bytes, &mut at);
            let offs = &mut offs[..n - 1];
            get_bits(bytes, at, u32::from(v_w), offs);
            let mut m = ms[0];
            for (slot, &o) in ms[1..].iter_mut().zip(offs.iter()) {
                m = m.wrapping_add(min.wrapping_add(o as i64));
                *slot = m;
            }
        }
    } else if n > 1 {
        let mut d = get_i64(bytes, &mut at);
        ms[1] = ms[0].wrapping_add(d);
        if n > 2 {
            let min = get_i64(bytes, &mut at);
            let offs = &mut offs[..n - 2];
            get_bits(bytes, at, u32::from(v_w), offs);
            let mut m = ms[1];
            for (slot, &o) in ms[2..].iter_mut().zip(offs.iter()) {
                d = d.wrapping_add(min.wrapping_add(o as i64));
                m = m.wrapping_add(d);
                *slot = m;
            }
        }
    }
    // The computation packing checked every value against.
    let e = usize::from(exp);
    for (v, &m) in vals.iter_mut().zip(ms.iter()) {
        *v = decimal(m, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Packing and unpacking the whole run and any window gives back exactly the samples
    /// (bit for bit) a decoded run would.
    fn round_trips(ts: &[i64], vals: &[f64], windows: &[(i64, i64)]) {
        let run = PackedRun::pack(ts, vals);
        let whole = Piece::new(ts.to_vec(), vals.to_vec());
        assert_eq!(run.len, ts.len());
        for &(a, b) in windows.iter().chain([(i64::MIN, i64::MAX)].iter()) {
            let got = run.unpack(a, b);
            let want = whole.clip(a, b);
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    assert_eq!(&g.ts[..], &w.ts[..], "timestamps in [{a}, {b}]");
                    assert_eq!(bits(&g.vals), bits(&w.vals), "values in [{a}, {b}]");
                }
                (g, w) => panic!("window [{a}, {b}]: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn special_values_keep_their_bits() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let vals = [
            1.0,
            stale,
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            0.1 + 0.2,
            1e300,
            5e-324,
            -123.456,
            9_007_199_254_740_993.0,
            f64::MAX,
        ];
        let ts: Vec<i64> = (0..vals.len() as i64).map(|i| i * 15_000).collect();
        round_trips(&ts, &vals, &[(15_000, 45_000)]);
        // The same values one per frame among ordinary ones.
        let mut many = vec![];
        for (i, v) in vals.iter().enumerate() {
            many.extend(std::iter::repeat_n(i as f64, FRAME - 1));
            many.push(*v);
        }
        let ts: Vec<i64> = (0..many.len() as i64).collect();
        round_trips(&ts, &many, &[(100, 300), (127, 128), (-5, 0)]);
    }

    #[test]
    fn scrape_data_packs_small_and_windows_decode_alone() {
        // A day of a counter and a two-decimal gauge at 15 s, with millisecond jitter.
        let n = 5760;
        let ts: Vec<i64> = (0..n as i64)
            .map(|i| 1_700_000_000_000 + i * 15_000 + (i * 7919) % 5)
            .collect();
        let counter: Vec<f64> = (0..n).map(|i| (i * (i % 13)) as f64).collect();
        let gauge: Vec<f64> = (0..n)
            .map(|i| ((i * 7919 % 10_000) as f64) / 100.0)
            .collect();
        for vals in [&counter, &gauge] {
            let run = PackedRun::pack(&ts, vals);
            let per_sample = run.heap_bytes() as f64 / n as f64;
            assert!(per_sample < 4.0, "{per_sample} bytes a sample");
            let last5m = ts[n - 1] - 300_000;
            round_trips(&ts, vals, &[(last5m, ts[n - 1]), (ts[100], ts[4000])]);
        }
        // A regular counter with a constant rate: second differences of 0.
        let regular: Vec<f64> = (0..n).map(|i| (i * 60) as f64).collect();
        let ts: Vec<i64> = (0..n as i64).map(|i| i * 15_000).collect();
        let run = PackedRun::pack(&ts, &regular);
        assert!(run.heap_bytes() < n, "{} bytes", run.heap_bytes());
    }

    /// Every width reads back what was written, for groups of eight and the rest.
    #[test]
    fn bits_round_trip_at_every_width() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for w in 0..=64u32 {
            for count in [0, 1, 7, 8, 9, 16, 23, 127] {
                let mask = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
                let vals: Vec<u64> = (0..count)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x & mask
                    })
                    .collect();
                let mut bytes = vec![0xAB];
                put_bits(&mut bytes, &vals, w);
                assert_eq!(bytes.len(), 1 + packed_len(count, w));
                bytes.extend_from_slice(&[0; PAD]);
                let mut got = vec![0; count];
                get_bits(&bytes, 1, w, &mut got);
                assert_eq!(got, vals, "width {w}, {count} values");
            }
        }
    }

    #[test]
    fn empty_and_single_sample_runs() {
        let run = PackedRun::pack(&[], &[]);
        assert_eq!(run.len, 0);
        assert_eq!(run.unpack(i64::MIN, i64::MAX), None);
        round_trips(&[42], &[0.5], &[(0, 41), (42, 42), (43, 100)]);
        round_trips(
            &[i64::MIN, i64::MAX],
            &[1.0, 2.0],
            &[(0, 0), (i64::MIN, i64::MIN)],
        );
    }

    proptest! {
        #[test]
        fn arbitrary_runs_round_trip(
            start in any::<i64>(),
            steps in prop::collection::vec(0i64..100_000, 1..600),
            raw in prop::collection::vec(
                prop_oneof![
                    any::<f64>(),
                    any::<u64>().prop_map(f64::from_bits),
                    (0i64..1_000_000, 0u32..8).prop_map(|(m, e)| m as f64 / 10f64.powi(e as i32)),
                    (-50i64..50).prop_map(|x| x as f64),
                ],
                600,
            ),
            win in (any::<i64>(), 0i64..2_000_000),
        ) {
            let mut t = start;
            let ts: Vec<i64> = steps
                .iter()
                .map(|d| {
                    t = t.saturating_add(d + 1);
                    t
                })
                .collect();
            // Saturation can repeat the last timestamp: keep them strictly ascending.
            let n = ts.windows(2).position(|w| w[0] >= w[1]).map_or(ts.len(), |p| p + 1);
            let mid = ts[n / 2];
            round_trips(
                &ts[..n],
                &raw[..n],
                &[(win.0, win.0.saturating_add(win.1)), (mid, mid.saturating_add(win.1))],
            );
        }
    }
}
