//! The decode budget: what decoding one ingest request may build in memory, counted before
//! it is built.
//!
//! A protobuf body grows when decoded: two wire bytes (`0a 00`) become a 96-byte empty
//! `TimeSeries`, a one-byte packed delta an 8-byte `i64` and then an 8-byte `f64` bucket.
//! So the body limit alone does not bound memory: a 12 MB snappy body of empty series once
//! built 6 GB. Every decoder therefore charges a [`Meter`] first:
//!
//! - protobuf bodies are walked on the wire by [`charge_wire`] (no allocation) with a
//!   [`Msg`] schema of what prost will build, so an over-budget body is refused before
//!   `prost::Message::decode` runs;
//! - JSON bodies are scanned by [`charge_json`] (objects, arrays, strings, nesting);
//! - conversions that can multiply what was decoded (symbol references of remote write 2.0,
//!   OTLP resource attributes copied to every series) charge what they build as they go.
//!
//! Beyond the budget the request is refused with 413 ([`IngestError::Budget`]), naming the
//! flag. The meter is an estimate that errs high (vectors count their doubling headroom,
//! strings an allocation header), never low.

use super::IngestError;

/// Bytes one request's decoding may build (`--ingest-decode-budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeBudget(pub usize);

impl DecodeBudget {
    /// The default: twice the body limit (128 MiB with the default 64 MiB bodies), at least
    /// 16 MiB.
    pub fn from_body_limit(max_body_bytes: usize) -> Self {
        DecodeBudget(max_body_bytes.saturating_mul(2).max(16 << 20))
    }
}

impl Default for DecodeBudget {
    fn default() -> Self {
        DecodeBudget::from_body_limit(64 << 20)
    }
}

/// The process-wide side of the budget: what the decodes in flight hold together, in KiB
/// permits. One request may use up to the whole budget; the pool holds four times that, so
/// a few large requests decode at once and a flood of them gets 503 (Prometheus and
/// OpenTelemetry senders retry it) instead of growing memory.
#[derive(Debug)]
pub struct DecodePool {
    budget: DecodeBudget,
    kib: std::sync::Arc<tokio::sync::Semaphore>,
}

impl DecodePool {
    pub fn new(budget: DecodeBudget) -> Self {
        let kib = (budget.0 / 1024)
            .saturating_mul(4)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        DecodePool {
            budget,
            kib: std::sync::Arc::new(tokio::sync::Semaphore::new(kib)),
        }
    }

    /// A meter for one request, drawing on the pool; what it took returns when it drops.
    pub fn meter(&self) -> Meter {
        Meter {
            limit: self.budget.0,
            used: 0,
            pool: Some((self.kib.clone(), 0)),
            head_room: None,
        }
    }
}

/// Counts what one request's decoding builds against its budget. Keep it alive while the
/// decoded batch is: its share of the [`DecodePool`] is released on drop.
#[derive(Debug)]
pub struct Meter {
    limit: usize,
    used: usize,
    /// The pool and the KiB permits taken from it.
    pool: Option<(std::sync::Arc<tokio::sync::Semaphore>, u32)>,
    /// What the heads may still grow by (`--head-memory-limit`), when set.
    head_room: Option<usize>,
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some((sem, held)) = &self.pool {
            sem.add_permits(*held as usize);
        }
    }
}

/// Heap bytes of a string of `len` bytes beside its 24-byte handle: the allocator's header
/// and rounding, when it allocates at all.
pub fn string_heap(len: usize) -> usize {
    if len == 0 { 0 } else { len + 16 }
}

impl Meter {
    /// A meter of its own, outside any pool (benchmarks, tests).
    pub fn new(budget: DecodeBudget) -> Self {
        Meter {
            limit: budget.0,
            used: 0,
            pool: None,
            head_room: None,
        }
    }

    /// Also refuses (503, [`IngestError::HeadFull`]) once what is built passes what the
    /// heads may still hold: a request is charged to `--head-memory-limit` before it is
    /// decoded, not after.
    pub fn within_head_room(mut self, room: usize) -> Self {
        self.head_room = Some(room);
        self
    }

    pub fn used(&self) -> usize {
        self.used
    }

    /// Adds `bytes`; past the limit, the 413 error (nothing more should be built).
    pub fn charge(&mut self, bytes: usize) -> Result<(), IngestError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(IngestError::Budget {
                needed: self.used,
                limit: self.limit,
            });
        }
        if let Some(room) = self.head_room
            && self.used > room
        {
            return Err(IngestError::HeadFull { room });
        }
        if let Some((sem, held)) = &mut self.pool {
            // Taken in 256 KiB steps: one semaphore operation per step, not per KiB.
            let want = u32::try_from(self.used.div_ceil(256 << 10).saturating_mul(256))
                .unwrap_or(u32::MAX);
            if want > *held {
                // Never wait here: decoding runs on a request's thread, and senders retry 503.
                let permit = sem
                    .try_acquire_many(want - *held)
                    .map_err(|_| IngestError::Busy)?;
                permit.forget();
                *held = want;
            }
        }
        Ok(())
    }

    /// A label set built from these pairs, as [`crate::model::Labels`] holds it (one text
    /// buffer and an offset per string) beside the series it names. The pairs a converter
    /// copies on the way are per series and freed at once; the decoded message they come
    /// from was charged with vector headroom that covers them.
    pub fn charge_labels<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), IngestError> {
        let mut n = 96;
        for (k, v) in pairs {
            n += k.len() + v.len() + 8;
        }
        self.charge(n)
    }

    /// Gives back what a converter charged for memory it has freed (remote write 2.0's
    /// resolved pairs of one series, once its label set is built).
    pub fn refund(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }
}

/// How a field decodes.
#[derive(Debug)]
pub enum Field {
    /// A sub-message (repeated or singular): its struct, and what it holds.
    Msg(&'static Msg),
    /// A singular `string` or `bytes`: the text (its handle is in the parent's struct).
    Bytes,
    /// A repeated `string` or `bytes`: a 24-byte handle in the vector, and the text.
    RepeatedBytes,
    /// A repeated scalar, packed or not: `decoded` bytes per element in the prost vector.
    Scalars { decoded: usize, wire: Wire },
}

/// The wire encoding of a packed scalar's elements.
#[derive(Debug, Clone, Copy)]
pub enum Wire {
    Varint,
    Fixed32,
    Fixed64,
}

/// A message: the size of the struct prost builds and the fields that allocate.
/// Fields not listed are skipped as prost skips them (unknown) or hold no heap (scalars).
#[derive(Debug)]
pub struct Msg {
    pub size: usize,
    pub fields: &'static [(u32, Field)],
}

impl Msg {
    fn field(&self, n: u32) -> Option<&Field> {
        self.fields.iter().find(|(k, _)| *k == n).map(|(_, f)| f)
    }
}

/// Deepest nesting walked (prost's own recursion limit is 100).
const MAX_DEPTH: u32 = 100;

fn malformed(what: &'static str) -> IngestError {
    IngestError::Parse {
        line: 0,
        message: format!("malformed protobuf: {what}"),
    }
}

fn varint(b: &[u8], i: &mut usize) -> Result<u64, IngestError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i).ok_or_else(|| malformed("truncated varint"))?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(malformed("varint longer than 10 bytes"))
}

/// Charges what prost would build decoding `buf` as `msg` (the struct itself is charged by
/// the caller: by its parent's vector, or [`charge_wire`] for the root). Malformed input
/// is refused here too, before prost sees it.
fn walk(buf: &[u8], msg: &Msg, meter: &mut Meter, depth: u32) -> Result<(), IngestError> {
    if depth > MAX_DEPTH {
        return Err(malformed("messages nested too deeply"));
    }
    let mut i = 0;
    // Repeated fields met so far in this message: a vector's first push allocates room
    // for four elements (and a heap header), later ones at most double it.
    let mut seen: u64 = 0;
    let mut first = |field: u32, size: usize| -> usize {
        let bit = 1u64 << (field % 64);
        if seen & bit == 0 {
            seen |= bit;
            2 * size + 16
        } else {
            0
        }
    };
    while i < buf.len() {
        let key = varint(buf, &mut i)?;
        let (field, wire) = ((key >> 3) as u32, key & 7);
        let f = msg.field(field);
        match wire {
            0 => {
                varint(buf, &mut i)?;
                if let Some(Field::Scalars { decoded, .. }) = f {
                    meter.charge(2 * decoded + first(field, *decoded))?;
                }
            }
            1 | 5 => {
                i += if wire == 1 { 8 } else { 4 };
                if i > buf.len() {
                    return Err(malformed("truncated fixed-width field"));
                }
                if let Some(Field::Scalars { decoded, .. }) = f {
                    meter.charge(2 * decoded + first(field, *decoded))?;
                }
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut i)?)
                    .map_err(|_| malformed("length overflows"))?;
                let end = i
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or_else(|| malformed("length past the end of the message"))?;
                let body = &buf[i..end];
                i = end;
                match f {
                    // A vector slot with doubling headroom, then what the message holds.
                    Some(Field::Msg(m)) => {
                        meter.charge(2 * m.size + first(field, m.size))?;
                        walk(body, m, meter, depth + 1)?;
                    }
                    Some(Field::Bytes) => meter.charge(string_heap(len))?,
                    Some(Field::RepeatedBytes) => {
                        meter.charge(2 * 24 + first(field, 24) + string_heap(len))?
                    }
                    Some(Field::Scalars { decoded, wire }) => {
                        let count = match wire {
                            Wire::Varint => body.iter().filter(|&&b| b < 0x80).count(),
                            Wire::Fixed32 => len / 4,
                            Wire::Fixed64 => len / 8,
                        };
                        meter
                            .charge(2 * count.saturating_mul(*decoded) + first(field, *decoded))?;
                    }
                    None => {}
                }
            }
            _ => return Err(malformed("unsupported wire type (groups are not used)")),
        }
    }
    Ok(())
}

/// Charges decoding `buf` as the root message `msg`; call before `prost::Message::decode`.
pub fn charge_wire(buf: &[u8], msg: &Msg, meter: &mut Meter) -> Result<(), IngestError> {
    meter.charge(msg.size)?;
    walk(buf, msg, meter, 0)
}

/// Deepest JSON nesting accepted (serde_json's own limit is 128).
const MAX_JSON_DEPTH: usize = 64;

/// Charges deserializing a JSON body into structs of at most `max_struct` bytes: each object
/// may become one (with vector headroom), each array a vector, each string its text, each
/// number an 8-byte element. Refuses nesting deeper than 64 before serde recurses.
pub fn charge_json(buf: &[u8], max_struct: usize, meter: &mut Meter) -> Result<(), IngestError> {
    let mut depth = 0usize;
    // Objects and strings, each weighted by how many times serde may buffer it: OTLP's
    // attribute values are `#[serde(flatten)]`, which copies a nested value once per level
    // of nesting below the data points (~12 brackets deep).
    let weight = |depth: usize| depth.saturating_sub(12).max(1);
    let mut objects = 0usize;
    let mut values = 0usize;
    let mut text = 0usize;
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(IngestError::Parse {
                        line: 0,
                        message: format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"),
                    });
                }
                if buf[i] == b'{' {
                    objects += weight(depth);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => values += 1,
            b'"' => {
                let start = i;
                i += 1;
                while i < buf.len() && buf[i] != b'"' {
                    i += if buf[i] == b'\\' { 2 } else { 1 };
                }
                text += (string_heap(i.saturating_sub(start)) + 24) * weight(depth);
            }
            _ => {}
        }
        i += 1;
    }
    meter.charge(objects.saturating_mul(2 * max_struct) + values * 24 + text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::prompb;
    use prost::Message;

    fn meter(limit: usize) -> Meter {
        Meter::new(DecodeBudget(limit))
    }

    #[test]
    fn empty_series_are_charged_their_structs() {
        let body = [0x0a, 0x00].repeat(1000);
        let mut m = meter(usize::MAX);
        charge_wire(&body, &schemas::RW1_REQUEST, &mut m).unwrap();
        assert!(
            m.used() >= 1000 * std::mem::size_of::<prompb::TimeSeries>(),
            "{}",
            m.used()
        );
        // And the estimate is not below what prost builds (a vector of 1000 structs).
        let req = prompb::WriteRequest::decode(body.as_slice()).unwrap();
        assert!(m.used() >= req.timeseries.capacity() * std::mem::size_of::<prompb::TimeSeries>());
        let mut small = meter(10_000);
        assert!(matches!(
            charge_wire(&body, &schemas::RW1_REQUEST, &mut small),
            Err(IngestError::Budget { .. })
        ));
    }

    /// vmagent sends blocks of up to 8 MiB of protobuf (`-remoteWrite.maxBlockSize`): one of
    /// node-exporter-like series (10 labels, one sample) fits the default budget whole.
    #[test]
    fn a_full_vmagent_block_fits_the_default_budget() {
        let series = |i: usize| prompb::TimeSeries {
            labels: [
                ("__name__", "node_cpu_seconds_total".to_string()),
                ("cpu", (i % 64).to_string()),
                ("instance", format!("host-{}.example.com:9100", i / 512)),
                ("job", "node".to_string()),
                ("mode", "idle".to_string()),
                ("env", "production".to_string()),
                ("region", "eu-west-1".to_string()),
                ("az", "eu-west-1a".to_string()),
                ("team", "platform".to_string()),
                ("series", i.to_string()),
            ]
            .into_iter()
            .map(|(name, value)| prompb::Label {
                name: name.to_string(),
                value,
            })
            .collect(),
            samples: vec![prompb::Sample {
                value: 1.5,
                timestamp: 1_700_000_000_000,
            }],
            ..Default::default()
        };
        let mut req = prompb::WriteRequest::default();
        let mut len = 0;
        while len < 8 << 20 {
            let s = series(req.timeseries.len());
            len += s.encoded_len() + 4;
            req.timeseries.push(s);
        }
        let body = req.encode_to_vec();
        let mut walk = Meter::new(DecodeBudget(usize::MAX));
        charge_wire(&body, &schemas::RW1_REQUEST, &mut walk).unwrap();
        let mut convert = Meter::new(DecodeBudget(usize::MAX));
        crate::ingest::remote_write::from_proto(req, &mut convert).unwrap();
        let total = body.len() + walk.used() + convert.used();
        eprintln!(
            "{} bytes of protobuf charged {total} (walk {}, labels {})",
            body.len(),
            walk.used(),
            convert.used()
        );
        assert!(
            total <= DecodeBudget::default().0,
            "{} bytes of protobuf charged {} (walk {}, labels {})",
            body.len(),
            total,
            walk.used(),
            convert.used()
        );
    }

    /// The pool bounds what the decodes in flight hold together (503, `Busy`), and gives
    /// it back when a meter drops; the head room refuses with `HeadFull` (503).
    #[test]
    fn the_pool_and_the_head_room_bound_decodes_in_flight() {
        let pool = DecodePool::new(DecodeBudget(1 << 20)); // 4 MiB in flight
        let mut held: Vec<Meter> = (0..4)
            .map(|_| {
                let mut m = pool.meter();
                m.charge(1 << 20).unwrap();
                m
            })
            .collect();
        let mut fifth = pool.meter();
        assert!(matches!(fifth.charge(1), Err(IngestError::Busy)));
        held.pop();
        fifth.charge(1).unwrap();
        assert!(matches!(
            pool.meter().charge((1 << 20) + 1),
            Err(IngestError::Budget { .. })
        ));
        let mut m = Meter::new(DecodeBudget(1 << 20)).within_head_room(1000);
        m.charge(900).unwrap();
        assert!(matches!(
            m.charge(200),
            Err(IngestError::HeadFull { room: 1000 })
        ));
    }

    #[test]
    fn packed_deltas_are_counted_per_element() {
        let h = prompb::Histogram {
            positive_deltas: vec![0; 100_000],
            ..Default::default()
        };
        let ts = prompb::TimeSeries {
            histograms: vec![h],
            ..Default::default()
        };
        let req = prompb::WriteRequest {
            timeseries: vec![ts],
            metadata: vec![],
        };
        let body = req.encode_to_vec();
        let mut m = meter(usize::MAX);
        charge_wire(&body, &schemas::RW1_REQUEST, &mut m).unwrap();
        assert!(m.used() >= 100_000 * 8, "{}", m.used());
    }

    #[test]
    fn malformed_wire_is_refused_not_walked_past() {
        let mut m = meter(usize::MAX);
        // A length that points past the end.
        assert!(charge_wire(&[0x0a, 0x05, 0x00], &schemas::RW1_REQUEST, &mut m).is_err());
        // A truncated varint.
        assert!(charge_wire(&[0x0a, 0x80], &schemas::RW1_REQUEST, &mut m).is_err());
        // Nesting deeper than prost allows (OTLP attribute values nest).
        let mut v: Vec<u8> = vec![];
        for _ in 0..150 {
            // AnyValue{array_value: ArrayValue{values: [v]}}
            let mut inner = vec![0x0a];
            inner.extend(encode_len(v.len()));
            inner.extend(&v);
            let mut any = vec![0x2a];
            any.extend(encode_len(inner.len()));
            any.extend(inner);
            v = any;
        }
        assert!(walk(&v, &schemas::OTLP_ANY_VALUE, &mut m, 0).is_err());
    }

    fn encode_len(n: usize) -> Vec<u8> {
        let mut out = vec![];
        prost::encoding::encode_varint(n as u64, &mut out);
        out
    }

    #[test]
    fn json_objects_and_depth_are_charged() {
        let body = format!("[{}]", vec!["{}"; 10_000].join(","));
        let mut m = meter(usize::MAX);
        charge_json(body.as_bytes(), 200, &mut m).unwrap();
        assert!(m.used() >= 10_000 * 200, "{}", m.used());
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(charge_json(deep.as_bytes(), 200, &mut meter(usize::MAX)).is_err());
    }
}

/// Schemas of the protobuf messages Quiver decodes from request bodies.
pub mod schemas {
    use super::{Field, Msg, Wire};
    use std::mem::size_of;

    use crate::ingest::prompb;
    use crate::ingest::remote_write_v2 as v2;
    use opentelemetry_proto::tonic::collector::metrics::v1 as otlp_collector;
    use opentelemetry_proto::tonic::common::v1 as otlp_common;
    use opentelemetry_proto::tonic::metrics::v1 as otlp;
    use opentelemetry_proto::tonic::resource::v1 as otlp_resource;

    const I64: Field = Field::Scalars {
        decoded: 8,
        wire: Wire::Varint,
    };
    const U32: Field = Field::Scalars {
        decoded: 4,
        wire: Wire::Varint,
    };

    // Prometheus remote write 1.0 and remote read (`prompb`).
    pub static LABEL: Msg = Msg {
        size: size_of::<prompb::Label>(),
        fields: &[(1, Field::Bytes), (2, Field::Bytes)],
    };
    pub static SAMPLE: Msg = Msg {
        size: size_of::<prompb::Sample>(),
        fields: &[],
    };
    pub static EXEMPLAR: Msg = Msg {
        size: size_of::<prompb::Exemplar>(),
        fields: &[(1, Field::Msg(&LABEL))],
    };
    pub static BUCKET_SPAN: Msg = Msg {
        size: size_of::<prompb::BucketSpan>(),
        fields: &[],
    };
    /// Bucket deltas and counts are charged twice their wire form: the prost vector, then
    /// the absolute `f64` buckets ingest expands them into.
    pub static HISTOGRAM: Msg = Msg {
        size: size_of::<prompb::Histogram>(),
        fields: &[
            (8, Field::Msg(&BUCKET_SPAN)),
            (
                9,
                Field::Scalars {
                    decoded: 16,
                    wire: Wire::Varint,
                },
            ),
            (
                10,
                Field::Scalars {
                    decoded: 16,
                    wire: Wire::Fixed64,
                },
            ),
            (11, Field::Msg(&BUCKET_SPAN)),
            (
                12,
                Field::Scalars {
                    decoded: 16,
                    wire: Wire::Varint,
                },
            ),
            (
                13,
                Field::Scalars {
                    decoded: 16,
                    wire: Wire::Fixed64,
                },
            ),
            // Custom bounds are copied into the histogram (and a created-timestamp zero).
            (
                16,
                Field::Scalars {
                    decoded: 24,
                    wire: Wire::Fixed64,
                },
            ),
        ],
    };
    pub static TIME_SERIES: Msg = Msg {
        size: size_of::<prompb::TimeSeries>(),
        fields: &[
            (1, Field::Msg(&LABEL)),
            (2, Field::Msg(&SAMPLE)),
            (3, Field::Msg(&EXEMPLAR)),
            (4, Field::Msg(&HISTOGRAM)),
        ],
    };
    pub static METRIC_METADATA: Msg = Msg {
        size: size_of::<prompb::MetricMetadata>(),
        fields: &[(2, Field::Bytes), (4, Field::Bytes), (5, Field::Bytes)],
    };
    pub static RW1_REQUEST: Msg = Msg {
        size: size_of::<prompb::WriteRequest>(),
        fields: &[
            (1, Field::Msg(&TIME_SERIES)),
            (3, Field::Msg(&METRIC_METADATA)),
        ],
    };

    // Remote read requests.
    pub static LABEL_MATCHER: Msg = Msg {
        size: size_of::<prompb::LabelMatcher>(),
        fields: &[(2, Field::Bytes), (3, Field::Bytes)],
    };
    pub static READ_HINTS: Msg = Msg {
        size: size_of::<prompb::ReadHints>(),
        fields: &[(2, Field::Bytes), (5, Field::RepeatedBytes)],
    };
    pub static QUERY: Msg = Msg {
        size: size_of::<prompb::Query>(),
        fields: &[
            (3, Field::Msg(&LABEL_MATCHER)),
            (4, Field::Msg(&READ_HINTS)),
        ],
    };
    pub static READ_REQUEST: Msg = Msg {
        size: size_of::<prompb::ReadRequest>(),
        fields: &[(1, Field::Msg(&QUERY)), (2, I64)],
    };

    // Remote write 2.0 (`io.prometheus.write.v2`).
    pub static V2_SAMPLE: Msg = Msg {
        size: size_of::<v2::Sample>(),
        fields: &[],
    };
    pub static V2_EXEMPLAR: Msg = Msg {
        size: size_of::<v2::Exemplar>(),
        fields: &[(1, U32)],
    };
    pub static V2_METADATA: Msg = Msg {
        size: size_of::<v2::Metadata>(),
        fields: &[],
    };
    pub static V2_TIME_SERIES: Msg = Msg {
        size: size_of::<v2::TimeSeries>(),
        fields: &[
            (1, U32),
            (2, Field::Msg(&V2_SAMPLE)),
            (3, Field::Msg(&HISTOGRAM)),
            (4, Field::Msg(&V2_EXEMPLAR)),
            (5, Field::Msg(&V2_METADATA)),
        ],
    };
    pub static RW2_REQUEST: Msg = Msg {
        size: size_of::<v2::Request>(),
        fields: &[(4, Field::RepeatedBytes), (5, Field::Msg(&V2_TIME_SERIES))],
    };

    // OTLP metrics (`opentelemetry.proto.*`).
    pub static OTLP_ANY_VALUE: Msg = Msg {
        size: size_of::<otlp_common::AnyValue>(),
        fields: &[
            (1, Field::Bytes),
            (5, Field::Msg(&OTLP_ARRAY_VALUE)),
            (6, Field::Msg(&OTLP_KEY_VALUE_LIST)),
            (7, Field::Bytes),
        ],
    };
    pub static OTLP_ARRAY_VALUE: Msg = Msg {
        size: size_of::<otlp_common::ArrayValue>(),
        fields: &[(1, Field::Msg(&OTLP_ANY_VALUE))],
    };
    pub static OTLP_KEY_VALUE_LIST: Msg = Msg {
        size: size_of::<otlp_common::KeyValueList>(),
        fields: &[(1, Field::Msg(&OTLP_KEY_VALUE))],
    };
    pub static OTLP_KEY_VALUE: Msg = Msg {
        size: size_of::<otlp_common::KeyValue>(),
        fields: &[(1, Field::Bytes), (2, Field::Msg(&OTLP_ANY_VALUE))],
    };
    pub static OTLP_ENTITY_REF: Msg = Msg {
        size: size_of::<otlp_common::EntityRef>(),
        fields: &[
            (1, Field::Bytes),
            (2, Field::Bytes),
            (3, Field::RepeatedBytes),
            (4, Field::RepeatedBytes),
        ],
    };
    pub static OTLP_RESOURCE: Msg = Msg {
        size: size_of::<otlp_resource::Resource>(),
        fields: &[
            (1, Field::Msg(&OTLP_KEY_VALUE)),
            (3, Field::Msg(&OTLP_ENTITY_REF)),
        ],
    };
    pub static OTLP_SCOPE: Msg = Msg {
        size: size_of::<otlp_common::InstrumentationScope>(),
        fields: &[
            (1, Field::Bytes),
            (2, Field::Bytes),
            (3, Field::Msg(&OTLP_KEY_VALUE)),
        ],
    };
    pub static OTLP_EXEMPLAR: Msg = Msg {
        size: size_of::<otlp::Exemplar>(),
        fields: &[
            (7, Field::Msg(&OTLP_KEY_VALUE)),
            (4, Field::Bytes),
            (5, Field::Bytes),
        ],
    };
    pub static OTLP_NUMBER_POINT: Msg = Msg {
        size: size_of::<otlp::NumberDataPoint>(),
        fields: &[
            (7, Field::Msg(&OTLP_KEY_VALUE)),
            (5, Field::Msg(&OTLP_EXEMPLAR)),
        ],
    };
    /// Bucket counts and bounds charged twice: the prost vectors, then the series each
    /// bucket becomes (classic) or the native buckets (NHCB).
    pub static OTLP_HISTOGRAM_POINT: Msg = Msg {
        size: size_of::<otlp::HistogramDataPoint>(),
        fields: &[
            (9, Field::Msg(&OTLP_KEY_VALUE)),
            (
                6,
                Field::Scalars {
                    decoded: 16,
                    wire: Wire::Fixed64,
                },
            ),
            (
                7,
                Field::Scalars {
                    decoded: 16,
                    wire: Wire::Fixed64,
                },
            ),
            (8, Field::Msg(&OTLP_EXEMPLAR)),
        ],
    };
    /// Each count also becomes an entry of the map that merges buckets by index when the
    /// schema is reduced (~64 bytes a node).
    pub static OTLP_EXP_BUCKETS: Msg = Msg {
        size: size_of::<otlp::exponential_histogram_data_point::Buckets>(),
        fields: &[(
            2,
            Field::Scalars {
                decoded: 80,
                wire: Wire::Varint,
            },
        )],
    };
    pub static OTLP_EXP_HISTOGRAM_POINT: Msg = Msg {
        size: size_of::<otlp::ExponentialHistogramDataPoint>(),
        fields: &[
            (1, Field::Msg(&OTLP_KEY_VALUE)),
            (8, Field::Msg(&OTLP_EXP_BUCKETS)),
            (9, Field::Msg(&OTLP_EXP_BUCKETS)),
            (11, Field::Msg(&OTLP_EXEMPLAR)),
        ],
    };
    pub static OTLP_QUANTILE: Msg = Msg {
        size: size_of::<otlp::summary_data_point::ValueAtQuantile>(),
        fields: &[],
    };
    pub static OTLP_SUMMARY_POINT: Msg = Msg {
        size: size_of::<otlp::SummaryDataPoint>(),
        fields: &[
            (7, Field::Msg(&OTLP_KEY_VALUE)),
            (6, Field::Msg(&OTLP_QUANTILE)),
        ],
    };
    pub static OTLP_GAUGE: Msg = Msg {
        size: size_of::<otlp::Gauge>(),
        fields: &[(1, Field::Msg(&OTLP_NUMBER_POINT))],
    };
    pub static OTLP_SUM: Msg = Msg {
        size: size_of::<otlp::Sum>(),
        fields: &[(1, Field::Msg(&OTLP_NUMBER_POINT))],
    };
    pub static OTLP_HISTOGRAM: Msg = Msg {
        size: size_of::<otlp::Histogram>(),
        fields: &[(1, Field::Msg(&OTLP_HISTOGRAM_POINT))],
    };
    pub static OTLP_EXP_HISTOGRAM: Msg = Msg {
        size: size_of::<otlp::ExponentialHistogram>(),
        fields: &[(1, Field::Msg(&OTLP_EXP_HISTOGRAM_POINT))],
    };
    pub static OTLP_SUMMARY: Msg = Msg {
        size: size_of::<otlp::Summary>(),
        fields: &[(1, Field::Msg(&OTLP_SUMMARY_POINT))],
    };
    pub static OTLP_METRIC: Msg = Msg {
        size: size_of::<otlp::Metric>(),
        fields: &[
            (1, Field::Bytes),
            (2, Field::Bytes),
            (3, Field::Bytes),
            (12, Field::Msg(&OTLP_KEY_VALUE)),
            (5, Field::Msg(&OTLP_GAUGE)),
            (7, Field::Msg(&OTLP_SUM)),
            (9, Field::Msg(&OTLP_HISTOGRAM)),
            (10, Field::Msg(&OTLP_EXP_HISTOGRAM)),
            (11, Field::Msg(&OTLP_SUMMARY)),
        ],
    };
    pub static OTLP_SCOPE_METRICS: Msg = Msg {
        size: size_of::<otlp::ScopeMetrics>(),
        fields: &[
            (1, Field::Msg(&OTLP_SCOPE)),
            (2, Field::Msg(&OTLP_METRIC)),
            (3, Field::Bytes),
        ],
    };
    pub static OTLP_RESOURCE_METRICS: Msg = Msg {
        size: size_of::<otlp::ResourceMetrics>(),
        fields: &[
            (1, Field::Msg(&OTLP_RESOURCE)),
            (2, Field::Msg(&OTLP_SCOPE_METRICS)),
            (3, Field::Bytes),
        ],
    };
    pub static OTLP_REQUEST: Msg = Msg {
        size: size_of::<otlp_collector::ExportMetricsServiceRequest>(),
        fields: &[(1, Field::Msg(&OTLP_RESOURCE_METRICS))],
    };

    /// The largest struct an OTLP/JSON object can become (for [`super::charge_json`]).
    pub const OTLP_MAX_STRUCT: usize = {
        let sizes = [
            size_of::<otlp::Metric>(),
            size_of::<otlp::NumberDataPoint>(),
            size_of::<otlp::HistogramDataPoint>(),
            size_of::<otlp::ExponentialHistogramDataPoint>(),
            size_of::<otlp::SummaryDataPoint>(),
            size_of::<otlp::ResourceMetrics>(),
            size_of::<otlp::ScopeMetrics>(),
            size_of::<otlp_common::KeyValue>(),
            size_of::<otlp_common::AnyValue>(),
            size_of::<otlp::Exemplar>(),
        ];
        let mut max = 0;
        let mut i = 0;
        while i < sizes.len() {
            if sizes[i] > max {
                max = sizes[i];
            }
            i += 1;
        }
        max
    };
}
