//! Bucket index and bound math, and the span/bucket plumbing that the histogram operations
//! share. Nothing here is public: the functions work on spans, bucket slices and
//! (index, value) pairs, never on a whole `FloatHistogram`.

use super::{Span, is_custom_buckets_schema, is_exponential_schema};
use crate::model::kahan::kahan_inc;
use bounds_table::EXPONENTIAL_BOUNDS;

// ---------------------------------------------------------------------------------------
// Bucket bounds.

/// `x * 2^exp` like Go's math.Ldexp (std has no ldexp). Exact unless the result leaves
/// the normal range.
fn ldexp(x: f64, exp: i32) -> f64 {
    fn pow2(e: i32) -> f64 {
        // Valid for -1022..=1023.
        f64::from_bits(((e + 1023) as u64) << 52)
    }
    if exp > 1023 {
        return ldexp(x * pow2(1023), exp - 1023);
    }
    if exp >= -1022 {
        return x * pow2(exp);
    }
    // Scale exactly first and round once at the end for subnormal results.
    let e2 = exp + 1074;
    if e2 >= -1022 {
        x * pow2(e2) * f64::from_bits(1)
    } else {
        x * 0.0
    }
}

/// Upper bound of exponential bucket `idx` (absolute value). The last finite bucket ends
/// at f64::MAX rather than +Inf so that only ±Inf observations land in the bucket above it.
pub(super) fn exponential_bound(idx: i32, schema: i32) -> f64 {
    if schema < 0 {
        let exp = (idx as i64) << (-schema);
        if exp == 1024 {
            return f64::MAX;
        }
        let exp = exp.clamp(-100_000, 100_000) as i32;
        return ldexp(1.0, exp);
    }
    let frac_idx = (idx & ((1 << schema) - 1)) as usize;
    let frac = EXPONENTIAL_BOUNDS[schema as usize][frac_idx];
    let exp = (idx >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    ldexp(frac, exp)
}

/// Upper bound of bucket `idx` (absolute value for negative exponential buckets). Custom
/// buckets run from -Inf (idx -1) to +Inf (idx len).
pub(super) fn bucket_bound(idx: i32, schema: i32, custom_values: &[f64]) -> f64 {
    if is_custom_buckets_schema(schema) {
        let len = custom_values.len() as i64;
        let i = idx as i64;
        if i >= len {
            f64::INFINITY
        } else if i < 0 {
            f64::NEG_INFINITY
        } else {
            custom_values[idx as usize]
        }
    } else {
        exponential_bound(idx, schema)
    }
}

/// Index in `target` schema of bucket `idx` in `origin` schema (target <= origin).
fn target_idx(idx: i32, origin: i32, target: i32) -> i32 {
    ((idx - 1) >> (origin - target)) + 1
}

// ---------------------------------------------------------------------------------------
// Span/bucket plumbing. Internally a side of a histogram is handled as a sorted list of
// (bucket index, value) pairs, which makes merging and re-bucketing straightforward.

/// The (index, value) pairs described by spans and buckets. Stops early if there are fewer
/// buckets than the spans promise, like Prometheus's iterators.
pub(super) fn indexed(spans: &[Span], buckets: &[f64]) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(buckets.len());
    let mut idx: i32 = 0;
    let mut k = 0;
    for span in spans {
        idx = idx.wrapping_add(span.offset);
        for _ in 0..span.length {
            if k >= buckets.len() {
                return out;
            }
            out.push((idx, buckets[k]));
            k += 1;
            idx = idx.wrapping_add(1);
        }
    }
    out
}

/// Spans (maximal contiguous runs) and values for pairs with strictly increasing indexes.
pub(super) fn from_indexed(pairs: impl IntoIterator<Item = (i32, f64)>) -> (Vec<Span>, Vec<f64>) {
    let (spans, values, _) = from_indexed_with_comp(pairs.into_iter().map(|(i, v)| (i, v, 0.0)));
    (spans, values)
}

pub(super) fn from_indexed_with_comp(
    triples: impl IntoIterator<Item = (i32, f64, f64)>,
) -> (Vec<Span>, Vec<f64>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut values = Vec::new();
    let mut comps = Vec::new();
    let mut last: Option<i32> = None;
    for (idx, v, c) in triples {
        match last {
            Some(l) if idx == l + 1 => spans.last_mut().expect("span exists").length += 1,
            Some(l) => spans.push(Span {
                offset: idx - l - 1,
                length: 1,
            }),
            None => spans.push(Span {
                offset: idx,
                length: 1,
            }),
        }
        values.push(v);
        comps.push(c);
        last = Some(idx);
    }
    (spans, values, comps)
}

/// Merges buckets into a lower-resolution schema by summing (plain or Kahan) the buckets
/// that fall into the same target bucket.
pub(super) fn reduce_pairs(
    pairs: &[(i32, f64, f64)],
    origin: i32,
    target: i32,
    kahan: bool,
) -> Vec<(i32, f64, f64)> {
    let mut out: Vec<(i32, f64, f64)> = Vec::with_capacity(pairs.len());
    for &(idx, v, c) in pairs {
        let t = target_idx(idx, origin, target);
        match out.last_mut() {
            Some(last) if last.0 == t => {
                if kahan {
                    let (s, cc) = kahan_inc(v, last.1, last.2);
                    let (s, cc) = kahan_inc(c, s, cc);
                    last.1 = s;
                    last.2 = cc;
                } else {
                    last.1 += v;
                }
            }
            _ => out.push((t, v, c)),
        }
    }
    out
}

pub(super) fn with_zero_comp(pairs: Vec<(i32, f64)>) -> Vec<(i32, f64, f64)> {
    pairs.into_iter().map(|(i, v)| (i, v, 0.0)).collect()
}

/// Index list of `spans`/`buckets` together with the matching compensation values.
pub(super) fn indexed_with_comp(
    spans: &[Span],
    buckets: &[f64],
    comp: &[f64],
) -> Vec<(i32, f64, f64)> {
    indexed(spans, buckets)
        .into_iter()
        .enumerate()
        .map(|(k, (i, v))| (i, v, comp.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// Adds (or subtracts) side B into side A. B's leading buckets that lie entirely within
/// the zero bucket (exponential schemas only) are skipped: their counts were already moved
/// into the zero bucket when the zero thresholds were reconciled. Empty buckets are kept,
/// so the result layout is the union of both layouts.
pub(super) fn add_pairs(
    schema: i32,
    threshold: f64,
    negate: bool,
    a: &[(i32, f64, f64)],
    b: &[(i32, f64, f64)],
    kahan: bool,
) -> Vec<(i32, f64, f64)> {
    let skip = if is_exponential_schema(schema) {
        b.iter()
            .take_while(|(i, _, _)| exponential_bound(*i, schema) <= threshold)
            .count()
    } else {
        0
    };
    let b = &b[skip..];
    let sign = |x: f64| if negate { -x } else { x };
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j >= b.len() || (i < a.len() && a[i].0 < b[j].0) {
            out.push(a[i]);
            i += 1;
        } else if i >= a.len() || b[j].0 < a[i].0 {
            out.push((b[j].0, sign(b[j].1), sign(b[j].2)));
            j += 1;
        } else {
            let (idx, mut v, mut c) = a[i];
            let (bv, bc) = (sign(b[j].1), sign(b[j].2));
            if kahan {
                (v, c) = kahan_inc(bv, v, c);
                if bc != 0.0 {
                    (v, c) = kahan_inc(bc, v, c);
                }
            } else {
                v += bv;
            }
            out.push((idx, v, c));
            i += 1;
            j += 1;
        }
    }
    out
}

/// Drops empty buckets (value and compensation both zero) except runs of at most
/// `max_empty` empty buckets between populated ones, which stay inside one span.
pub(super) fn compact_pairs(pairs: &[(i32, f64, f64)], max_empty: usize) -> Vec<(i32, f64, f64)> {
    let populated = |p: &(i32, f64, f64)| p.1 != 0.0 || p.2 != 0.0;
    let mut out: Vec<(i32, f64, f64)> = Vec::with_capacity(pairs.len());
    let mut cursor = 0; // into `pairs`, to reuse the original empty values when filling
    for (k, p) in pairs.iter().enumerate() {
        if !populated(p) {
            continue;
        }
        if let Some(&(last, _, _)) = out.last() {
            let gap = (p.0 as i64 - last as i64 - 1) as u64;
            if gap > 0 && gap <= max_empty as u64 {
                for idx in (last + 1)..p.0 {
                    while cursor < k && pairs[cursor].0 < idx {
                        cursor += 1;
                    }
                    if cursor < k && pairs[cursor].0 == idx {
                        out.push(pairs[cursor]);
                    } else {
                        out.push((idx, 0.0, 0.0));
                    }
                }
            }
        }
        out.push(*p);
    }
    out
}

/// Go's spansMatch: equal layouts, where zero-length spans are folded into their
/// neighbours (but adjacent spans with offset 0 are NOT merged).
pub(super) fn spans_match(s1: &[Span], s2: &[Span]) -> bool {
    fn fold(s: &[Span]) -> Vec<Span> {
        let mut out = Vec::new();
        let mut pending_offset = 0i64;
        for sp in s {
            pending_offset += sp.offset as i64;
            if sp.length > 0 {
                out.push((pending_offset, sp.length));
                pending_offset = 0;
            }
        }
        out.into_iter()
            .map(|(o, l)| Span {
                offset: o as i32,
                length: l,
            })
            .collect()
    }
    fold(s1) == fold(s2)
}

pub(super) fn bits_match(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Bounds shared by both custom bucket layouts.
pub(super) fn intersect_custom_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(a[i]);
            i += 1;
            j += 1;
        } else if a[i] < b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Adds/subtracts two NHCB sides with different bounds by mapping every bucket into the
/// bucket of `intersected` that contains it. Sums use Kahan; `a_comp` (if any) is folded
/// into A's values. Buckets that end up empty are dropped.
pub(super) fn add_custom_mismatched(
    negate: bool,
    a: &[(i32, f64)],
    a_bounds: &[f64],
    a_comp: Option<&[f64]>,
    b: &[(i32, f64)],
    b_bounds: &[f64],
    intersected: &[f64],
) -> (Vec<Span>, Vec<f64>, Vec<f64>) {
    let n = intersected.len() + 1;
    let mut vals = vec![0.0; n];
    let mut comps = vec![0.0; n];
    let mut map = |pairs: &[(i32, f64)], bounds: &[f64], negate: bool, comp: Option<&[f64]>| {
        let mut ii = 0;
        for (k, &(src, v)) in pairs.iter().enumerate() {
            let mut target = n - 1;
            if src >= 0 && (src as usize) < bounds.len() {
                let bound = bounds[src as usize];
                while ii < intersected.len() {
                    if intersected[ii] >= bound {
                        target = ii;
                        break;
                    }
                    ii += 1;
                }
            }
            if negate {
                (vals[target], comps[target]) = kahan_inc(-v, vals[target], comps[target]);
            } else {
                (vals[target], comps[target]) = kahan_inc(v, vals[target], comps[target]);
                if let Some(c) = comp {
                    let cv = c.get(k).copied().unwrap_or(0.0);
                    (vals[target], comps[target]) = kahan_inc(cv, vals[target], comps[target]);
                }
            }
        }
    };
    map(a, a_bounds, false, a_comp);
    map(b, b_bounds, negate, None);
    from_indexed_with_comp(
        (0..n)
            .filter(|&i| vals[i] != 0.0 || comps[i] != 0.0)
            .map(|i| (i as i32, vals[i], comps[i])),
    )
}

#[allow(
    clippy::approx_constant,
    clippy::excessive_precision,
    clippy::unreadable_literal
)]
mod bounds_table {
    /// Upper bucket bounds within [0.5, 1) for schemas 0..=8, identical to Prometheus's
    /// precomputed table so that bucket boundaries agree with it bit for bit.
    #[rustfmt::skip]
    pub(super) const EXPONENTIAL_BOUNDS: [&[f64]; 9] = [
        &[
            0.5,
        ],
        &[
            0.5, 0.7071067811865475,
        ],
        &[
            0.5, 0.5946035575013605, 0.7071067811865475, 0.8408964152537144,
        ],
        &[
            0.5, 0.5452538663326288, 0.5946035575013605, 0.6484197773255048,
            0.7071067811865475, 0.7711054127039704, 0.8408964152537144, 0.9170040432046711,
        ],
        &[
            0.5, 0.5221368912137069, 0.5452538663326288, 0.5693943173783458,
            0.5946035575013605, 0.620928906036742, 0.6484197773255048, 0.6771277734684463,
            0.7071067811865475, 0.7384130729697496, 0.7711054127039704, 0.805245165974627,
            0.8408964152537144, 0.8781260801866495, 0.9170040432046711, 0.9576032806985735,
        ],
        &[
            0.5, 0.5109485743270583, 0.5221368912137069, 0.5335702003384117,
            0.5452538663326288, 0.5571933712979462, 0.5693943173783458, 0.5818624293887887,
            0.5946035575013605, 0.6076236799902344, 0.620928906036742, 0.6345254785958666,
            0.6484197773255048, 0.6626183215798706, 0.6771277734684463, 0.6919549409819159,
            0.7071067811865475, 0.7225904034885232, 0.7384130729697496, 0.7545822137967112,
            0.7711054127039704, 0.7879904225539431, 0.805245165974627, 0.8228777390769823,
            0.8408964152537144, 0.8593096490612387, 0.8781260801866495, 0.8973545375015533,
            0.9170040432046711, 0.9370838170551498, 0.9576032806985735, 0.9785720620876999,
        ],
        &[
            0.5, 0.5054446430258502, 0.5109485743270583, 0.5165124395106142,
            0.5221368912137069, 0.5278225891802786, 0.5335702003384117, 0.5393803988785598,
            0.5452538663326288, 0.5511912916539204, 0.5571933712979462, 0.5632608093041209,
            0.5693943173783458, 0.5755946149764913, 0.5818624293887887, 0.5881984958251406,
            0.5946035575013605, 0.6010783657263515, 0.6076236799902344, 0.6142402680534349,
            0.620928906036742, 0.6276903785123455, 0.6345254785958666, 0.6414350080393891,
            0.6484197773255048, 0.6554806057623822, 0.6626183215798706, 0.6698337620266515,
            0.6771277734684463, 0.6845012114872953, 0.6919549409819159, 0.6994898362691555,
            0.7071067811865475, 0.7148066691959849, 0.7225904034885232, 0.7304588970903234,
            0.7384130729697496, 0.7464538641456323, 0.7545822137967112, 0.762799075372269,
            0.7711054127039704, 0.7795022001189185, 0.7879904225539431, 0.7965710756711334,
            0.805245165974627, 0.8140137109286738, 0.8228777390769823, 0.8318382901633681,
            0.8408964152537144, 0.8500531768592616, 0.8593096490612387, 0.8686669176368529,
            0.8781260801866495, 0.8876882462632604, 0.8973545375015533, 0.9071260877501991,
            0.9170040432046711, 0.9269895625416926, 0.9370838170551498, 0.9472879907934827,
            0.9576032806985735, 0.9680308967461471, 0.9785720620876999, 0.9892280131939752,
        ],
        &[
            0.5, 0.5027149505564014, 0.5054446430258502, 0.5081891574554764,
            0.5109485743270583, 0.5137229745593818, 0.5165124395106142, 0.5193170509806894,
            0.5221368912137069, 0.5249720429003435, 0.5278225891802786, 0.5306886136446309,
            0.5335702003384117, 0.5364674337629877, 0.5393803988785598, 0.5423091811066545,
            0.5452538663326288, 0.5482145409081883, 0.5511912916539204, 0.5541842058618393,
            0.5571933712979462, 0.5602188762048033, 0.5632608093041209, 0.5663192597993595,
            0.5693943173783458, 0.572486072215902, 0.5755946149764913, 0.5787200368168754,
            0.5818624293887887, 0.585021884841625, 0.5881984958251406, 0.5913923554921704,
            0.5946035575013605, 0.5978321960199137, 0.6010783657263515, 0.6043421618132907,
            0.6076236799902344, 0.6109230164863786, 0.6142402680534349, 0.6175755319684665,
            0.620928906036742, 0.6243004885946023, 0.6276903785123455, 0.6310986751971253,
            0.6345254785958666, 0.637970889198196, 0.6414350080393891, 0.6449179367033329,
            0.6484197773255048, 0.6519406325959679, 0.6554806057623822, 0.659039800633032,
            0.6626183215798706, 0.6662162735415805, 0.6698337620266515, 0.6734708931164728,
            0.6771277734684463, 0.6808045103191123, 0.6845012114872953, 0.688217985377265,
            0.6919549409819159, 0.6957121878859629, 0.6994898362691555, 0.7032879969095076,
            0.7071067811865475, 0.7109463010845827, 0.7148066691959849, 0.718687998724491,
            0.7225904034885232, 0.7265139979245261, 0.7304588970903234, 0.7344252166684908,
            0.7384130729697496, 0.7424225829363761, 0.7464538641456323, 0.7505070348132126,
            0.7545822137967112, 0.7586795205991071, 0.762799075372269, 0.7669409989204777,
            0.7711054127039704, 0.7752924388424999, 0.7795022001189185, 0.7837348199827764,
            0.7879904225539431, 0.7922691326262467, 0.7965710756711334, 0.8008963778413465,
            0.805245165974627, 0.8096175675974316, 0.8140137109286738, 0.8184337248834821,
            0.8228777390769823, 0.8273458838280969, 0.8318382901633681, 0.8363550898207981,
            0.8408964152537144, 0.8454623996346523, 0.8500531768592616, 0.8546688815502312,
            0.8593096490612387, 0.8639756154809185, 0.8686669176368529, 0.8733836930995842,
            0.8781260801866495, 0.8828942179666361, 0.8876882462632604, 0.8925083056594671,
            0.8973545375015533, 0.9022270839033115, 0.9071260877501991, 0.9120516927035263,
            0.9170040432046711, 0.9219832844793128, 0.9269895625416926, 0.9320230241988943,
            0.9370838170551498, 0.9421720895161669, 0.9472879907934827, 0.9524316709088368,
            0.9576032806985735, 0.9628029718180622, 0.9680308967461471, 0.9732872087896164,
            0.9785720620876999, 0.9838856116165875, 0.9892280131939752, 0.9945994234836328,
        ],
        &[
            0.5, 0.5013556375251013, 0.5027149505564014, 0.5040779490592088,
            0.5054446430258502, 0.5068150424757447, 0.5081891574554764, 0.509566998038869,
            0.5109485743270583, 0.5123338964485679, 0.5137229745593818, 0.5151158188430205,
            0.5165124395106142, 0.5179128468009786, 0.5193170509806894, 0.520725062344158,
            0.5221368912137069, 0.5235525479396449, 0.5249720429003435, 0.526395386502313,
            0.5278225891802786, 0.5292536613972564, 0.5306886136446309, 0.5321274564422321,
            0.5335702003384117, 0.5350168559101208, 0.5364674337629877, 0.5379219445313954,
            0.5393803988785598, 0.5408428074966075, 0.5423091811066545, 0.5437795304588847,
            0.5452538663326288, 0.5467321995364429, 0.5482145409081883, 0.549700901315111,
            0.5511912916539204, 0.5526857228508706, 0.5541842058618393, 0.5556867516724088,
            0.5571933712979462, 0.5587040757836845, 0.5602188762048033, 0.5617377836665098,
            0.5632608093041209, 0.564787964283144, 0.5663192597993595, 0.5678547070789026,
            0.5693943173783458, 0.5709381019847808, 0.572486072215902, 0.5740382394200894,
            0.5755946149764913, 0.5771552102951081, 0.5787200368168754, 0.5802891060137493,
            0.5818624293887887, 0.5834400184762408, 0.585021884841625, 0.5866080400818185,
            0.5881984958251406, 0.5897932637314379, 0.5913923554921704, 0.5929957828304968,
            0.5946035575013605, 0.5962156912915756, 0.5978321960199137, 0.5994530835371903,
            0.6010783657263515, 0.6027080545025619, 0.6043421618132907, 0.6059806996384005,
            0.6076236799902344, 0.6092711149137041, 0.6109230164863786, 0.6125793968185725,
            0.6142402680534349, 0.6159056423670379, 0.6175755319684665, 0.6192499490999082,
            0.620928906036742, 0.622612415087629, 0.6243004885946023, 0.6259931389331581,
            0.6276903785123455, 0.6293922197748583, 0.6310986751971253, 0.6328097572894031,
            0.6345254785958666, 0.6362458516947014, 0.637970889198196, 0.6397006037528346,
            0.6414350080393891, 0.6431741147730128, 0.6449179367033329, 0.6466664866145447,
            0.6484197773255048, 0.6501778216898253, 0.6519406325959679, 0.6537082229673385,
            0.6554806057623822, 0.6572577939746774, 0.659039800633032, 0.6608266388015788,
            0.6626183215798706, 0.6644148621029772, 0.6662162735415805, 0.6680225691020727,
            0.6698337620266515, 0.6716498655934177, 0.6734708931164728, 0.6752968579460171,
            0.6771277734684463, 0.6789636531064505, 0.6808045103191123, 0.6826503586020058,
            0.6845012114872953, 0.6863570825438342, 0.688217985377265, 0.690083933630119,
            0.6919549409819159, 0.6938310211492645, 0.6957121878859629, 0.6975984549830999,
            0.6994898362691555, 0.7013863456101023, 0.7032879969095076, 0.7051948041086352,
            0.7071067811865475, 0.7090239421602076, 0.7109463010845827, 0.7128738720527471,
            0.7148066691959849, 0.7167447066838943, 0.718687998724491, 0.7206365595643126,
            0.7225904034885232, 0.7245495448210174, 0.7265139979245261, 0.7284837772007218,
            0.7304588970903234, 0.7324393720732029, 0.7344252166684908, 0.7364164454346837,
            0.7384130729697496, 0.7404151139112358, 0.7424225829363761, 0.7444354947621984,
            0.7464538641456323, 0.7484777058836176, 0.7505070348132126, 0.7525418658117031,
            0.7545822137967112, 0.7566280937263048, 0.7586795205991071, 0.7607365094544071,
            0.762799075372269, 0.7648672334736434, 0.7669409989204777, 0.7690203869158282,
            0.7711054127039704, 0.7731960915705107, 0.7752924388424999, 0.7773944698885442,
            0.7795022001189185, 0.7816156449856788, 0.7837348199827764, 0.7858597406461707,
            0.7879904225539431, 0.7901268813264122, 0.7922691326262467, 0.7944171921585818,
            0.7965710756711334, 0.7987307989543135, 0.8008963778413465, 0.8030678282083853,
            0.805245165974627, 0.8074284071024302, 0.8096175675974316, 0.8118126635086642,
            0.8140137109286738, 0.8162207259936375, 0.8184337248834821, 0.820652723822003,
            0.8228777390769823, 0.8251087869603088, 0.8273458838280969, 0.8295890460808079,
            0.8318382901633681, 0.8340936325652911, 0.8363550898207981, 0.8386226785089391,
            0.8408964152537144, 0.8431763167241966, 0.8454623996346523, 0.8477546807446661,
            0.8500531768592616, 0.8523579048290255, 0.8546688815502312, 0.8569861239649629,
            0.8593096490612387, 0.8616394738731368, 0.8639756154809185, 0.8663180910111553,
            0.8686669176368529, 0.871022112577578, 0.8733836930995842, 0.8757516765159389,
            0.8781260801866495, 0.8805069215187917, 0.8828942179666361, 0.8852879870317771,
            0.8876882462632604, 0.890095013257712, 0.8925083056594671, 0.8949281411607002,
            0.8973545375015533, 0.8997875124702672, 0.9022270839033115, 0.9046732696855155,
            0.9071260877501991, 0.909585556079304, 0.9120516927035263, 0.9145245157024483,
            0.9170040432046711, 0.9194902933879467, 0.9219832844793128, 0.9244830347552253,
            0.9269895625416926, 0.92950288621441, 0.9320230241988943, 0.9345499949706191,
            0.9370838170551498, 0.93962450902828, 0.9421720895161669, 0.9447265771954693,
            0.9472879907934827, 0.9498563490882775, 0.9524316709088368, 0.9550139751351947,
            0.9576032806985735, 0.9601996065815236, 0.9628029718180622, 0.9654133954938133,
            0.9680308967461471, 0.9706554947643201, 0.9732872087896164, 0.9759260581154889,
            0.9785720620876999, 0.9812252401044634, 0.9838856116165875, 0.9865531961276168,
            0.9892280131939752, 0.9919100824251095, 0.9945994234836328, 0.9972960560854698,
        ],
    ];
}

#[cfg(test)]
#[allow(clippy::approx_constant, clippy::excessive_precision)]
mod tests {
    use super::*;

    #[test]
    fn exponential_bounds() {
        assert_eq!(exponential_bound(0, 0), 1.0);
        assert_eq!(exponential_bound(1, 0), 2.0);
        assert_eq!(exponential_bound(-1, 0), 0.5);
        assert_eq!(exponential_bound(1, -1), 4.0);
        // Go's table value, one ulp below sqrt(2).
        assert_eq!(exponential_bound(1, 1), 0.7071067811865475 * 2.0);
        assert_eq!(exponential_bound(1024, 0), f64::MAX);
        assert_eq!(exponential_bound(1025, 0), f64::INFINITY);
        assert_eq!(exponential_bound(-1074, 0), f64::from_bits(1));
        assert_eq!(exponential_bound(256, -2), f64::MAX);
        assert_eq!(ldexp(0.75, -1074), f64::from_bits(1));
    }
}
