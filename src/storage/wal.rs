//! Write-ahead log: numbered segment files of CRC-framed records.
//!
//! A segment starts with `QWAL` + format version. Each record is
//! `[u32 len][u32 crc32(payload)][payload]`, little-endian. Series are written once per
//! segment (type 1 record declares `ref → labels`), so every segment replays on its own.
//! A samples record may end with native-histogram samples (format 2), so a request's floats
//! and histograms replay together.
//! A record that is cut short or fails its checksum ends the segment: replay truncates the
//! file there with a warning (a torn tail from a crash mid-write), never panics.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ingest::MetricMetadata;
use crate::model::Labels;
use crate::model::exemplar::Exemplar;
use crate::model::histogram::FloatHistogram;

const MAGIC: &[u8; 4] = b"QWAL";
/// On-disk WAL format version (see `migrations/`). 2 added histogram samples at the end of a
/// samples record: a binary that reads only 1 must refuse such a segment rather than replay
/// it without its histograms.
pub const WAL_FORMAT_VERSION: u32 = 2;
const HEADER_LEN: u64 = 8;
const REC_SERIES: u8 = 1;
const REC_SAMPLES: u8 = 2;
const REC_METADATA: u8 = 3;
/// Refuse absurd record lengths from a corrupt header instead of allocating them; the
/// writer never writes a longer one.
pub const MAX_RECORD: u32 = 512 << 20;
// Widths of what the encoder writes, which the record lengths below add up: the record
// type, a `put_u32` (count, series ref or string length), a timestamp or a float's bits.
const TYPE_LEN: usize = size_of::<u8>();
const U32_LEN: usize = size_of::<u32>();
const U64_LEN: usize = size_of::<u64>();
/// A float sample: series ref, timestamp, value.
const SAMPLE_LEN: usize = U32_LEN + 2 * U64_LEN;

pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:010}.wal"))
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(num) = name.strip_suffix(".wal")
            && let Ok(n) = num.parse::<u64>()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Injected I/O failures (tests): the next `writes` frame writes and `syncs` fsyncs fail.
#[derive(Debug, Default)]
pub struct WalFaults {
    pub writes: std::sync::atomic::AtomicU32,
    pub syncs: std::sync::atomic::AtomicU32,
}

impl WalFaults {
    fn take(counter: &std::sync::atomic::AtomicU32) -> bool {
        counter
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
    }
}

/// Appends records to the current segment. Not thread-safe by design: one WAL task owns it.
///
/// After a failed write or fsync the segment's tail is unknown (a half-written frame, or
/// pages the kernel dropped), and appending after it would hide every later record from
/// replay. So the writer is marked broken, and the next call first starts a fresh segment
/// (replay reads each segment on its own); until that succeeds every call fails.
pub struct WalWriter {
    dir: PathBuf,
    seq: u64,
    out: BufWriter<File>,
    declared: HashSet<u32>,
    buf: Vec<u8>,
    broken: bool,
    faults: Option<Arc<WalFaults>>,
}

impl WalWriter {
    /// Creates segment `seq` (which must not exist) and makes its directory entry durable.
    pub fn create(dir: &Path, seq: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = segment_path(dir, seq);
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let header = f
            .write_all(MAGIC)
            .and_then(|_| f.write_all(&WAL_FORMAT_VERSION.to_le_bytes()))
            .and_then(|_| f.sync_all())
            .and_then(|_| File::open(dir)?.sync_all());
        if let Err(e) = header {
            // E.g. ENOSPC: leave no half-made segment, or every retry would find it taken.
            drop(f);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(WalWriter {
            dir: dir.to_path_buf(),
            seq,
            out: BufWriter::with_capacity(1 << 20, f),
            declared: HashSet::new(),
            buf: Vec::new(),
            broken: false,
            faults: None,
        })
    }

    /// Fails writes and fsyncs as `faults` says (tests).
    pub fn with_faults(mut self, faults: Option<Arc<WalFaults>>) -> Self {
        self.faults = faults;
        self
    }

    /// After a failure: abandons the current segment (without flushing its buffer) and
    /// starts the next one.
    fn recover(&mut self) -> io::Result<()> {
        if !self.broken {
            return Ok(());
        }
        let next = WalWriter::create(&self.dir, self.seq + 1)?.with_faults(self.faults.clone());
        let old = std::mem::replace(self, next);
        // `into_parts` drops the buffered bytes instead of writing them on drop.
        let (file, _unwritten) = old.out.into_parts();
        drop(file);
        tracing::warn!(
            segment = self.seq,
            "WAL write failed earlier; continuing in a new segment"
        );
        Ok(())
    }

    fn fail_if_injected(&self, write: bool) -> io::Result<()> {
        if let Some(f) = &self.faults
            && WalFaults::take(if write { &f.writes } else { &f.syncs })
        {
            return Err(io::Error::other(if write {
                "injected WAL write failure"
            } else {
                "injected WAL fsync failure"
            }));
        }
        Ok(())
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Buffers one request: declarations of series not yet in this segment, then samples
    /// `(ref, ts, value)`. Both go into one record so a request is replayed whole or not at all.
    pub fn append(
        &mut self,
        series: &[(u32, Labels)],
        samples: &[(u32, i64, f64)],
        hists: &[(u32, i64, Arc<FloatHistogram>)],
        exemplars: &[(u32, Arc<Exemplar>)],
    ) -> io::Result<()> {
        self.recover()?;
        let new = encode_samples(
            &mut self.buf,
            &self.declared,
            series,
            samples,
            hists,
            exemplars,
        );
        self.write_frame()?;
        self.declared.extend(new);
        Ok(())
    }

    pub fn append_metadata(&mut self, md: &[MetricMetadata]) -> io::Result<()> {
        self.recover()?;
        encode_metadata(&mut self.buf, md)?;
        self.write_frame()
    }

    fn write_frame(&mut self) -> io::Result<()> {
        // Replay refuses longer records (as torn): never write one. Nothing was written,
        // so the segment stays healthy; the caller refuses the request.
        check_record_len(&self.buf)?;
        let crc = crc32fast::hash(&self.buf);
        let r = (|| {
            self.out.write_all(&(self.buf.len() as u32).to_le_bytes())?;
            self.out.write_all(&crc.to_le_bytes())?;
            if let Err(e) = self.fail_if_injected(true) {
                // As a real failure mid-write (ENOSPC, EIO): half a payload, then the error.
                self.out.write_all(&self.buf[..self.buf.len() / 2])?;
                self.out.flush()?;
                return Err(e);
            }
            self.out.write_all(&self.buf)
        })();
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Flushes buffered records and fsyncs them. Acknowledge writes only after this returns.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "an earlier WAL write failed; its records were not made durable",
            ));
        }
        let r = self
            .fail_if_injected(false)
            .and_then(|_| self.out.flush())
            .and_then(|_| self.out.get_ref().sync_data());
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Closes this segment and starts `seq + 1`. Returns the closed segment number.
    pub fn rotate(&mut self) -> io::Result<u64> {
        self.recover()?;
        self.sync()?;
        let closed = self.seq;
        *self = WalWriter::create(&self.dir, closed + 1)?.with_faults(self.faults.clone());
        Ok(closed)
    }
}

/// A whole segment built in memory: what a cluster writer puts in the bucket as one
/// object per commit (`storage::bucket_wal`). The same header, frames and records as a
/// segment file, so [`replay_bytes`] reads both; series are declared once per segment, so
/// each object replays on its own. Every buffer, `default()` included, starts with the
/// header.
pub struct SegmentBuf {
    out: Vec<u8>,
    declared: HashSet<u32>,
    buf: Vec<u8>,
    records: usize,
}

impl Default for SegmentBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl SegmentBuf {
    pub fn new() -> Self {
        let mut out = Vec::with_capacity(1 << 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
        SegmentBuf {
            out,
            declared: HashSet::new(),
            buf: Vec::new(),
            records: 0,
        }
    }

    /// As [`WalWriter::append`]: one record per request. Nothing is added on error.
    pub fn append(
        &mut self,
        series: &[(u32, Labels)],
        samples: &[(u32, i64, f64)],
        hists: &[(u32, i64, Arc<FloatHistogram>)],
        exemplars: &[(u32, Arc<Exemplar>)],
    ) -> io::Result<()> {
        let new = encode_samples(
            &mut self.buf,
            &self.declared,
            series,
            samples,
            hists,
            exemplars,
        );
        self.frame()?;
        self.declared.extend(new);
        Ok(())
    }

    pub fn append_metadata(&mut self, md: &[MetricMetadata]) -> io::Result<()> {
        encode_metadata(&mut self.buf, md)?;
        self.frame()
    }

    fn frame(&mut self) -> io::Result<()> {
        check_record_len(&self.buf)?;
        let crc = crc32fast::hash(&self.buf);
        self.out
            .extend_from_slice(&(self.buf.len() as u32).to_le_bytes());
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out.extend_from_slice(&self.buf);
        self.records += 1;
        Ok(())
    }

    /// Records appended so far.
    pub fn records(&self) -> usize {
        self.records
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }
}

fn check_record_len(buf: &[u8]) -> io::Result<()> {
    if buf.len() > MAX_RECORD as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a WAL record of {} bytes exceeds {MAX_RECORD}; split the request",
                buf.len()
            ),
        ));
    }
    Ok(())
}

/// Encodes one request's samples record into `buf` (cleared first): declarations of the
/// series `declared` does not hold, then the samples. Returns the ids it declared.
fn encode_samples(
    buf: &mut Vec<u8>,
    declared: &HashSet<u32>,
    series: &[(u32, Labels)],
    samples: &[(u32, i64, f64)],
    hists: &[(u32, i64, Arc<FloatHistogram>)],
    exemplars: &[(u32, Arc<Exemplar>)],
) -> Vec<u32> {
    buf.clear();
    buf.push(REC_SAMPLES);
    let new: Vec<&(u32, Labels)> = series
        .iter()
        .filter(|(id, _)| !declared.contains(id))
        .collect();
    put_u32(buf, new.len() as u32);
    for (id, labels) in &new {
        put_u32(buf, *id);
        put_labels(buf, labels);
    }
    put_u32(buf, samples.len() as u32);
    for &(id, t, v) in samples {
        put_u32(buf, id);
        buf.extend_from_slice(&t.to_le_bytes());
        buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    // Optional trailing sections: histograms, then exemplars (a record with exemplars
    // always has the histogram section, perhaps empty).
    if !hists.is_empty() || !exemplars.is_empty() {
        put_u32(buf, hists.len() as u32);
        for (id, t, h) in hists {
            put_u32(buf, *id);
            buf.extend_from_slice(&t.to_le_bytes());
            super::hist_codec::encode(h, buf);
        }
    }
    if !exemplars.is_empty() {
        put_u32(buf, exemplars.len() as u32);
        for (id, e) in exemplars {
            put_u32(buf, *id);
            buf.extend_from_slice(&e.ts.to_le_bytes());
            buf.extend_from_slice(&e.value.to_bits().to_le_bytes());
            put_labels(buf, &e.labels);
        }
    }
    new.into_iter().map(|(id, _)| *id).collect()
}

fn encode_metadata(buf: &mut Vec<u8>, md: &[MetricMetadata]) -> io::Result<()> {
    buf.clear();
    buf.push(REC_METADATA);
    let json = serde_json::to_vec(md).map_err(io::Error::other)?;
    buf.extend_from_slice(&json);
    Ok(())
}

/// What replay hands back, in log order.
pub enum Replayed {
    Samples {
        series: Vec<(u32, Labels)>,
        samples: Vec<(u32, i64, f64)>,
        hists: Vec<(u32, i64, FloatHistogram)>,
        exemplars: Vec<(u32, Exemplar)>,
    },
    Metadata(Vec<MetricMetadata>),
}

/// Outcome of replaying one segment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    pub records: u64,
    /// Bytes cut off a torn or corrupt tail.
    pub truncated_bytes: u64,
    /// Intact records that did not decode (skipped, not replayed).
    pub undecodable: u64,
}

/// Reads every intact record of a segment; truncates a torn tail in place.
/// With `truncate` false the file is left as is (read-only replay).
pub fn replay_segment(
    path: &Path,
    truncate: bool,
    mut f: impl FnMut(Replayed),
) -> io::Result<ReplayStats> {
    let mut file = OpenOptions::new().read(true).write(truncate).open(path)?;
    let len = file.metadata()?.len();
    let mut data = Vec::with_capacity(len as usize);
    file.read_to_end(&mut data)?;
    let mut stats = ReplayStats::default();
    if data.len() < HEADER_LEN as usize || &data[..4] != MAGIC {
        tracing::warn!(path = %path.display(), "WAL segment has no valid header; truncating it");
        stats.truncated_bytes = len;
        if !truncate {
            return Ok(stats);
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(MAGIC)?;
        file.write_all(&WAL_FORMAT_VERSION.to_le_bytes())?;
        file.sync_all()?;
        return Ok(stats);
    }
    let version = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    if version > WAL_FORMAT_VERSION {
        return Err(io::Error::other(format!(
            "WAL segment {} has format version {version}; this binary understands up to {WAL_FORMAT_VERSION}",
            path.display()
        )));
    }
    let pos = replay_records(&data, &path.display().to_string(), &mut stats, &mut f);
    if pos < data.len() {
        stats.truncated_bytes = (data.len() - pos) as u64;
        tracing::warn!(
            path = %path.display(),
            offset = pos,
            bytes = stats.truncated_bytes,
            "torn or corrupt WAL tail; truncating"
        );
        if truncate {
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
    }
    Ok(stats)
}

/// Replays the records of a segment held in memory (a cluster writer's segment object),
/// header included. A torn or corrupt tail ends it: returned in `truncated_bytes`.
pub fn replay_bytes(
    data: &[u8],
    name: &str,
    mut f: impl FnMut(Replayed),
) -> io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    if data.len() < HEADER_LEN as usize || &data[..4] != MAGIC {
        return Err(io::Error::other(format!(
            "WAL segment {name} has no valid header"
        )));
    }
    let version = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    if version > WAL_FORMAT_VERSION {
        return Err(io::Error::other(format!(
            "WAL segment {name} has format version {version}; this binary understands up to {WAL_FORMAT_VERSION}"
        )));
    }
    let pos = replay_records(data, name, &mut stats, &mut f);
    stats.truncated_bytes = (data.len() - pos) as u64;
    Ok(stats)
}

/// Hands every intact record after the header to `f`; returns where the intact part ends.
fn replay_records(
    data: &[u8],
    name: &str,
    stats: &mut ReplayStats,
    f: &mut impl FnMut(Replayed),
) -> usize {
    let mut pos = HEADER_LEN as usize;
    while pos < data.len() {
        match decode_frame(&data[pos..]) {
            Some((payload, used)) => {
                match decode_payload(payload) {
                    Some(rec) => {
                        f(rec);
                        stats.records += 1;
                    }
                    // Intact (its checksum holds) but not understood: not a torn tail, so
                    // the records after it are kept; this one is reported, not replayed.
                    None => {
                        tracing::error!(
                            segment = name,
                            offset = pos,
                            "WAL record passes its checksum but does not decode; skipping it"
                        );
                        stats.undecodable += 1;
                    }
                }
                pos += used;
            }
            None => break,
        }
    }
    pos
}

fn decode_frame(b: &[u8]) -> Option<(&[u8], usize)> {
    if b.len() < 8 {
        return None;
    }
    let len = u32::from_le_bytes(b[0..4].try_into().ok()?);
    let crc = u32::from_le_bytes(b[4..8].try_into().ok()?);
    if len > MAX_RECORD || b.len() < 8 + len as usize {
        return None;
    }
    let payload = &b[8..8 + len as usize];
    (crc32fast::hash(payload) == crc).then_some((payload, 8 + len as usize))
}

fn decode_payload(p: &[u8]) -> Option<Replayed> {
    let mut r = Reader { b: p, i: 1 };
    match *p.first()? {
        REC_SAMPLES | REC_SERIES => {
            let n = r.u32()? as usize;
            let mut series = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let id = r.u32()?;
                let nl = r.u32()? as usize;
                let mut pairs = Vec::with_capacity(nl.min(256));
                for _ in 0..nl {
                    pairs.push((r.str()?, r.str()?));
                }
                series.push((id, Labels::new(pairs).ok()?));
            }
            let n = r.u32()? as usize;
            let mut samples = Vec::with_capacity(n.min(1 << 20));
            for _ in 0..n {
                samples.push((r.u32()?, r.i64()?, f64::from_bits(r.i64()? as u64)));
            }
            let mut hists = Vec::new();
            if r.i < p.len() {
                let n = r.u32()? as usize;
                hists.reserve(n.min(1 << 16));
                for _ in 0..n {
                    let (id, t) = (r.u32()?, r.i64()?);
                    let (h, used) = super::hist_codec::decode(&p[r.i..])?;
                    r.i += used;
                    hists.push((id, t, h));
                }
            }
            let mut exemplars = Vec::new();
            if r.i < p.len() {
                let n = r.u32()? as usize;
                exemplars.reserve(n.min(1 << 16));
                for _ in 0..n {
                    let (id, ts) = (r.u32()?, r.i64()?);
                    let value = f64::from_bits(r.i64()? as u64);
                    let nl = r.u32()? as usize;
                    let mut pairs = Vec::with_capacity(nl.min(64));
                    for _ in 0..nl {
                        pairs.push((r.str()?, r.str()?));
                    }
                    let labels = Exemplar::labels_from(pairs).ok()?;
                    exemplars.push((id, Exemplar { labels, value, ts }));
                }
            }
            if r.i != p.len() {
                return None;
            }
            Some(Replayed::Samples {
                series,
                samples,
                hists,
                exemplars,
            })
        }
        REC_METADATA => serde_json::from_slice(&p[1..]).ok().map(Replayed::Metadata),
        _ => None,
    }
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_u32(b, s.len() as u32);
    b.extend_from_slice(s.as_bytes());
}

/// The pair count, then each name and value as a string.
fn put_labels(b: &mut Vec<u8>, l: &Labels) {
    put_u32(b, l.len() as u32);
    for (n, v) in l.iter() {
        put_str(b, n);
        put_str(b, v);
    }
}

/// Bytes [`put_labels`] writes for `l`.
fn labels_len(l: &Labels) -> usize {
    U32_LEN
        + l.iter()
            .map(|(n, v)| 2 * U32_LEN + n.len() + v.len())
            .sum::<usize>()
}

/// Payload bytes of the samples record [`WalWriter::append`] writes for one request: what
/// `write_frame` holds against [`MAX_RECORD`] (the frame's 8-byte header not counted), so
/// admission can refuse a request too large for one record before registering its series.
///
/// `series` are the request's series as `append` gets them (one entry per list a series is
/// in), `samples` its float samples. `append` declares only the series its segment has not
/// declared yet, which admission cannot know: the length is exact when none is declared,
/// an upper bound otherwise.
pub(crate) fn samples_record_len<'a>(
    series: impl IntoIterator<Item = &'a Labels>,
    samples: usize,
    hists: impl IntoIterator<Item = &'a FloatHistogram>,
    exemplars: impl IntoIterator<Item = &'a Exemplar>,
) -> usize {
    let declarations: usize = series.into_iter().map(|l| U32_LEN + labels_len(l)).sum();
    let (mut n_hists, mut hist_bytes) = (0usize, 0usize);
    for h in hists {
        n_hists += 1;
        hist_bytes += U32_LEN + U64_LEN + super::hist_codec::encoded_len(h);
    }
    let (mut n_exemplars, mut exemplar_bytes) = (0usize, 0usize);
    for e in exemplars {
        n_exemplars += 1;
        exemplar_bytes += U32_LEN + 2 * U64_LEN + labels_len(&e.labels);
    }
    let mut len = TYPE_LEN + U32_LEN + declarations + U32_LEN + samples * SAMPLE_LEN;
    // The optional trailing sections, as `append` writes them.
    if n_hists > 0 || n_exemplars > 0 {
        len += U32_LEN + hist_bytes;
    }
    if n_exemplars > 0 {
        len += U32_LEN + exemplar_bytes;
    }
    len
}

/// Payload bytes of the metadata record [`WalWriter::append_metadata`] writes for `md`: the
/// type byte and serde_json's compact text of `md`, counted without serialising it (remote
/// write 2.0 names every series as a carrier in every request, and admission checks them
/// all). Exact when no string needs escaping; an upper bound otherwise (see
/// `json_str_len`). It follows `MetricMetadata`'s serde derive: field order, the `type`
/// rename, `carriers` left out when empty and written as lists of `[name, value]`.
pub(crate) fn metadata_record_len(md: &[MetricMetadata]) -> usize {
    TYPE_LEN + json_array_len(md.iter().map(metadata_json_len))
}

/// `{"metric_family_name":…,"type":…,"help":…,"unit":…,"carriers":…}`.
fn metadata_json_len(m: &MetricMetadata) -> usize {
    // `"name":value`, and a comma before every field but the first.
    let field = |name: &str, value: usize| json_str_len(name) + 1 + value;
    let mut len = 2
        + field("metric_family_name", json_str_len(&m.metric_family_name))
        + 1
        + field("type", json_str_len(&m.metric_type))
        + 1
        + field("help", json_str_len(&m.help))
        + 1
        + field("unit", json_str_len(&m.unit));
    if !m.carriers.is_empty() {
        let carriers = json_array_len(m.carriers.iter().map(|l| {
            json_array_len(
                l.iter()
                    .map(|(n, v)| json_array_len([json_str_len(n), json_str_len(v)])),
            )
        }));
        len += 1 + field("carriers", carriers);
    }
    len
}

/// A JSON array of items of these lengths: brackets, and a comma between items.
fn json_array_len(items: impl IntoIterator<Item = usize>) -> usize {
    let (mut n, mut len) = (0usize, 2usize);
    for item in items {
        n += 1;
        len += item;
    }
    len + n.saturating_sub(1)
}

/// A JSON string as serde_json writes it: quotes around the bytes, of which it escapes
/// only control characters, `"` and `\`. Each of those is counted as the six bytes of
/// `\u00XX`; the two-byte escapes (`\n`, `\"`, …) make the real text shorter.
fn json_str_len(s: &str) -> usize {
    let escaped = s
        .bytes()
        .filter(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .count();
    2 + s.len() + 5 * escaped
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::STALE_NAN_BITS;

    fn labels(v: &str) -> Labels {
        Labels::new(vec![
            ("__name__".into(), "m".into()),
            ("i".into(), v.into()),
        ])
        .unwrap()
    }

    fn replay_all(path: &Path) -> (Vec<(u32, i64, u64)>, ReplayStats) {
        let mut got = Vec::new();
        let stats = replay_segment(path, true, |r| {
            if let Replayed::Samples { samples, .. } = r {
                got.extend(samples.into_iter().map(|(i, t, v)| (i, t, v.to_bits())));
            }
        })
        .unwrap();
        (got, stats)
    }

    /// `samples_record_len` of what `append` is given.
    fn record_len_of(
        series: &[(u32, Labels)],
        samples: &[(u32, i64, f64)],
        hists: &[(u32, i64, Arc<FloatHistogram>)],
        exemplars: &[(u32, Arc<Exemplar>)],
    ) -> usize {
        samples_record_len(
            series.iter().map(|(_, l)| l),
            samples.len(),
            hists.iter().map(|(_, _, h)| &**h),
            exemplars.iter().map(|(_, e)| &**e),
        )
    }

    /// Admission refuses a request by this length before the writer sees it, so it must be
    /// the payload `append` builds (its buffer, frame header not counted): exact while the
    /// series are new to the segment, an upper bound once they are declared.
    #[test]
    fn samples_record_len_is_the_encoded_length() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1).unwrap();
        let h = Arc::new(FloatHistogram::from_absolute(
            1,
            0.001,
            2.0,
            12.0,
            30.5,
            (-1, vec![1.0, 0.0, 3.0]),
            (2, vec![4.0, 2.0]),
            vec![],
        ));
        let traced = Arc::new(Exemplar {
            labels: Labels::new(vec![("trace_id".into(), "abc".into())]).unwrap(),
            value: 0.5,
            ts: 990,
        });
        let bare = Arc::new(Exemplar {
            labels: Labels::default(),
            value: 1.0,
            ts: 5,
        });
        type Case = (
            Vec<(u32, Labels)>,
            Vec<(u32, i64, f64)>,
            Vec<(u32, i64, Arc<FloatHistogram>)>,
            Vec<(u32, Arc<Exemplar>)>,
        );
        let cases: Vec<Case> = vec![
            // Floats only: no trailing sections.
            (
                vec![(1, labels("a")), (2, labels("bb"))],
                vec![(1, 10, 1.0), (2, 10, 2.0), (1, 20, 3.0)],
                vec![],
                vec![],
            ),
            // Histograms only: their section, no exemplar section.
            (
                vec![(3, labels("c"))],
                vec![],
                vec![(3, 10, h.clone()), (3, 20, h.clone())],
                vec![],
            ),
            // Exemplars without histograms: an empty histogram section comes first. The
            // series is named twice (floats and exemplars) and declared twice.
            (
                vec![(4, labels("d")), (4, labels("d"))],
                vec![(4, 10, 1.0)],
                vec![],
                vec![(4, traced.clone())],
            ),
            // Everything, with an exemplar without labels.
            (
                vec![(5, labels("e")), (6, labels("f"))],
                vec![(5, 10, 1.0)],
                vec![(6, 10, h.clone())],
                vec![(5, traced.clone()), (6, bare)],
            ),
        ];
        for (i, (series, samples, hists, exemplars)) in cases.iter().enumerate() {
            let len = record_len_of(series, samples, hists, exemplars);
            w.append(series, samples, hists, exemplars).unwrap();
            assert_eq!(w.buf.len(), len, "case {i}");
        }
        // Series already declared in the segment are not declared again.
        let (series, samples) = (&cases[0].0, &cases[0].1);
        let len = record_len_of(series, samples, &[], &[]);
        w.append(series, samples, &[], &[]).unwrap();
        let declarations: usize = series.iter().map(|(_, l)| U32_LEN + labels_len(l)).sum();
        assert_eq!(w.buf.len() + declarations, len);
    }

    /// The metadata record's length, counted from the fields as serde_json writes them.
    #[test]
    fn metadata_record_len_is_the_encoded_length() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1).unwrap();
        let md = |help: &str, carriers: Vec<Labels>| MetricMetadata {
            metric_family_name: "http_requests".into(),
            metric_type: "counter".into(),
            help: help.into(),
            unit: String::new(),
            carriers,
        };
        let plain = [
            md("Requests served.", vec![]),
            md(
                "Requests, by code.",
                vec![Labels::clone(&labels("a")), Labels::clone(&labels("bb"))],
            ),
        ];
        for case in [&plain[..0], &plain[..1], &plain[..]] {
            w.append_metadata(case).unwrap();
            assert_eq!(
                w.buf.len(),
                metadata_record_len(case),
                "{} entries",
                case.len()
            );
        }
        // Escaped characters (two bytes, or six for `\u0001`) are bounded at six each;
        // non-ASCII text is written as is.
        let escaped = vec![md(
            "A \"quoted\"\tword, a \\ and a\nnewline \u{1}.",
            vec![Labels::clone(&labels("é"))],
        )];
        w.append_metadata(&escaped).unwrap();
        assert!(w.buf.len() <= metadata_record_len(&escaped));
    }

    #[test]
    fn roundtrip_and_declares_series_once_per_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1).unwrap();
        let s = vec![(7, labels("a"))];
        w.append(&s, &[(7, 1000, 1.5)], &[], &[]).unwrap();
        w.append(&s, &[(7, 2000, f64::from_bits(STALE_NAN_BITS))], &[], &[])
            .unwrap();
        w.sync().unwrap();
        let mut declared = 0;
        replay_segment(&segment_path(dir.path(), 1), true, |r| {
            if let Replayed::Samples { series, .. } = r {
                declared += series.len();
            }
        })
        .unwrap();
        assert_eq!(declared, 1);
        let (got, stats) = replay_all(&segment_path(dir.path(), 1));
        assert_eq!(
            got,
            vec![(7, 1000, 1.5f64.to_bits()), (7, 2000, STALE_NAN_BITS)]
        );
        assert_eq!(stats.truncated_bytes, 0);
        assert_eq!(w.rotate().unwrap(), 1);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2]);
    }

    /// A record whose checksum holds but which does not decode (unknown type) is skipped;
    /// the acknowledged records after it are replayed, not cut off as a torn tail.
    #[test]
    fn an_intact_undecodable_record_does_not_truncate_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1).unwrap();
        w.append(&[(1, labels("a"))], &[(1, 10, 1.0)], &[], &[])
            .unwrap();
        w.sync().unwrap();
        drop(w);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let payload = [9u8, 1, 2, 3];
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        fs::write(&path, &bytes).unwrap();
        let mut w = WalWriter::create(dir.path(), 2).unwrap();
        w.append(&[(2, labels("b"))], &[(2, 20, 2.0)], &[], &[])
            .unwrap();
        w.sync().unwrap();
        // Segment 2 is separate; append segment 2's bytes after the bad record in 1.
        let tail = fs::read(segment_path(dir.path(), 2)).unwrap();
        let mut joined = fs::read(&path).unwrap();
        joined.extend_from_slice(&tail[HEADER_LEN as usize..]);
        fs::write(&path, &joined).unwrap();
        let mut got = Vec::new();
        let stats = replay_segment(&path, true, |r| {
            if let Replayed::Samples { samples, .. } = r {
                got.extend(samples.into_iter().map(|(i, t, _)| (i, t)));
            }
        })
        .unwrap();
        assert_eq!(got, vec![(1, 10), (2, 20)]);
        assert_eq!((stats.undecodable, stats.truncated_bytes), (1, 0));
    }

    #[test]
    fn torn_tail_is_truncated_at_every_cut_point() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1).unwrap();
        w.append(&[(1, labels("a"))], &[(1, 10, 1.0)], &[], &[])
            .unwrap();
        w.sync().unwrap();
        let good_len = fs::metadata(segment_path(dir.path(), 1)).unwrap().len();
        w.append(&[(2, labels("b"))], &[(2, 20, 2.0), (1, 30, 3.0)], &[], &[])
            .unwrap();
        w.sync().unwrap();
        let full = fs::read(segment_path(dir.path(), 1)).unwrap();
        for cut in good_len as usize..full.len() {
            let p = dir.path().join("cut.wal");
            fs::write(&p, &full[..cut]).unwrap();
            let (got, stats) = replay_all(&p);
            assert_eq!(got, vec![(1, 10, 1.0f64.to_bits())], "cut at {cut}");
            assert_eq!(stats.truncated_bytes, (cut as u64) - good_len);
            assert_eq!(fs::metadata(&p).unwrap().len(), good_len);
        }
        // A flipped bit in the last record is caught by the checksum.
        let mut corrupt = full.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        let p = dir.path().join("flip.wal");
        fs::write(&p, &corrupt).unwrap();
        assert_eq!(replay_all(&p).0.len(), 1);
    }
}
