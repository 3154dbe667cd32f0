//! `histograms.parquet`: a block's native-histogram samples, one row per sample, sorted by
//! local series id then time. Columnar like the floats: fixed fields as columns, each side's
//! spans (offsets, lengths) and absolute bucket counts as list columns, custom bounds as a
//! list — so SQL reads `count`/`sum` without touching buckets, and zstd sees like with like.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Float64Builder, Int32Array, Int32Builder, Int64Array, ListArray,
    ListBuilder, RecordBatch, UInt8Array, UInt32Array, UInt32Builder,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Schema, SchemaRef, UInt8Type, UInt32Type,
};

use crate::model::histogram::{CounterResetHint, FloatHistogram, Span};
use crate::storage::StorageError;

fn list(name: &str, item: DataType) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new_list_field(item, false))),
        false,
    )
}

/// Schema of `histograms.parquet` (the SQL `histograms` table has the same columns, with
/// the global series id).
pub fn histograms_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::UInt32, false),
            Field::new("timestamp", DataType::Int64, false),
            Field::new("counter_reset_hint", DataType::UInt8, false),
            Field::new("schema", DataType::Int32, false),
            Field::new("zero_threshold", DataType::Float64, false),
            Field::new("zero_count", DataType::Float64, false),
            Field::new("count", DataType::Float64, false),
            Field::new("sum", DataType::Float64, false),
            list("positive_span_offsets", DataType::Int32),
            list("positive_span_lengths", DataType::UInt32),
            list("positive_buckets", DataType::Float64),
            list("negative_span_offsets", DataType::Int32),
            list("negative_span_lengths", DataType::UInt32),
            list("negative_buckets", DataType::Float64),
            list("custom_values", DataType::Float64),
        ]))
    });
    S.clone()
}

/// Rows as a record batch: `(series id, timestamp, histogram)`.
pub fn to_batch<'a>(
    rows: impl IntoIterator<Item = (u32, i64, &'a FloatHistogram)>,
) -> Result<RecordBatch, StorageError> {
    let schema = histograms_schema();
    let item = |i: usize| match schema.field(i).data_type() {
        DataType::List(f) => f.clone(),
        _ => unreachable!("list column"),
    };
    let mut ids = Vec::new();
    let mut ts = Vec::new();
    let mut hint = Vec::new();
    let mut sch = Vec::new();
    let mut fixed: [Vec<f64>; 4] = Default::default();
    let mut offs = [
        ListBuilder::new(Int32Builder::new()).with_field(item(8)),
        ListBuilder::new(Int32Builder::new()).with_field(item(11)),
    ];
    let mut lens = [
        ListBuilder::new(UInt32Builder::new()).with_field(item(9)),
        ListBuilder::new(UInt32Builder::new()).with_field(item(12)),
    ];
    let mut buckets = [
        ListBuilder::new(Float64Builder::new()).with_field(item(10)),
        ListBuilder::new(Float64Builder::new()).with_field(item(13)),
        ListBuilder::new(Float64Builder::new()).with_field(item(14)),
    ];
    for (id, t, h) in rows {
        ids.push(id);
        ts.push(t);
        hint.push(h.hint.code());
        sch.push(h.schema);
        for (col, v) in fixed
            .iter_mut()
            .zip([h.zero_threshold, h.zero_count, h.count, h.sum])
        {
            col.push(v);
        }
        for (side, spans) in [&h.positive_spans, &h.negative_spans]
            .into_iter()
            .enumerate()
        {
            offs[side].append_value(spans.iter().map(|s| Some(s.offset)));
            lens[side].append_value(spans.iter().map(|s| Some(s.length)));
        }
        for (col, vs) in
            buckets
                .iter_mut()
                .zip([&h.positive_buckets, &h.negative_buckets, &h.custom_values])
        {
            col.append_value(vs.iter().map(|&v| Some(v)));
        }
    }
    let [zt, zc, count, sum] = fixed;
    let [mut po, mut no] = offs;
    let [mut pl, mut nl] = lens;
    let [mut pb, mut nb, mut cv] = buckets;
    let cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(UInt32Array::from(ids)),
        Arc::new(Int64Array::from(ts)),
        Arc::new(UInt8Array::from(hint)),
        Arc::new(Int32Array::from(sch)),
        Arc::new(Float64Array::from(zt)),
        Arc::new(Float64Array::from(zc)),
        Arc::new(Float64Array::from(count)),
        Arc::new(Float64Array::from(sum)),
        Arc::new(po.finish()),
        Arc::new(pl.finish()),
        Arc::new(pb.finish()),
        Arc::new(no.finish()),
        Arc::new(nl.finish()),
        Arc::new(nb.finish()),
        Arc::new(cv.finish()),
    ];
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// Rows of a batch with this schema, as `(series id, timestamp, histogram)`; rows whose
/// histogram does not validate are a corrupt file.
pub fn from_batch(
    b: &RecordBatch,
    mut keep: impl FnMut(u32, i64) -> bool,
) -> Result<Vec<(u32, i64, FloatHistogram)>, StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("histograms file: {what}"));
    // Column types are checked before any downcast (which would panic on a foreign file).
    if b.schema().fields() != histograms_schema().fields() {
        return Err(corrupt("unexpected columns"));
    }
    let ids = b.column(0).as_primitive::<UInt32Type>();
    let ts = b
        .column(1)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let hint = b.column(2).as_primitive::<UInt8Type>();
    let schema = b.column(3).as_primitive::<Int32Type>();
    let f = |i: usize| b.column(i).as_primitive::<Float64Type>();
    let (zt, zc, count, sum) = (f(4), f(5), f(6), f(7));
    let l = |i: usize| b.column(i).as_list::<i32>();
    let ints = |a: &ListArray, row: usize| -> Vec<i32> {
        a.value(row).as_primitive::<Int32Type>().values().to_vec()
    };
    let uints = |a: &ListArray, row: usize| -> Vec<u32> {
        a.value(row).as_primitive::<UInt32Type>().values().to_vec()
    };
    let floats = |a: &ListArray, row: usize| -> Vec<f64> {
        a.value(row).as_primitive::<Float64Type>().values().to_vec()
    };
    let spans = |o: Vec<i32>, n: Vec<u32>| -> Result<Vec<Span>, StorageError> {
        if o.len() != n.len() {
            return Err(corrupt("span offsets and lengths differ in number"));
        }
        Ok(o.into_iter()
            .zip(n)
            .map(|(offset, length)| Span { offset, length })
            .collect())
    };
    let mut out = Vec::new();
    for row in 0..b.num_rows() {
        let (id, t) = (ids.value(row), ts.value(row));
        if !keep(id, t) {
            continue;
        }
        let h = FloatHistogram {
            hint: CounterResetHint::from_code(hint.value(row))
                .ok_or_else(|| corrupt("bad hint"))?,
            schema: schema.value(row),
            zero_threshold: zt.value(row),
            zero_count: zc.value(row),
            count: count.value(row),
            sum: sum.value(row),
            positive_spans: spans(ints(l(8), row), uints(l(9), row))?,
            positive_buckets: floats(l(10), row),
            negative_spans: spans(ints(l(11), row), uints(l(12), row))?,
            negative_buckets: floats(l(13), row),
            custom_values: floats(l(14), row),
        };
        h.validate()
            .map_err(|e| corrupt(&format!("series {id} at {t}: {e}")))?;
        out.push((id, t, h));
    }
    Ok(out)
}
