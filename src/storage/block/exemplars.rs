//! `exemplars.parquet`: a block's exemplars, one row per exemplar, sorted by local series
//! id then time; the exemplar's own labels as two list columns (names, values).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Int64Array, ListBuilder, RecordBatch, StringBuilder, UInt32Array,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, UInt32Type,
};

use crate::model::exemplar::Exemplar;
use crate::storage::StorageError;

fn list(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, false))),
        false,
    )
}

/// Schema of `exemplars.parquet` (and of the SQL `exemplars` table, with global ids).
pub fn exemplars_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::UInt32, false),
            Field::new("timestamp", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
            list("label_names"),
            list("label_values"),
        ]))
    });
    S.clone()
}

/// Rows `(series id, exemplar)` as a record batch.
pub fn to_batch<'a>(
    rows: impl IntoIterator<Item = (u32, &'a Exemplar)>,
) -> Result<RecordBatch, StorageError> {
    let schema = exemplars_schema();
    let item = |i: usize| match schema.field(i).data_type() {
        DataType::List(f) => f.clone(),
        _ => unreachable!("list column"),
    };
    let (mut ids, mut ts, mut vs) = (Vec::new(), Vec::new(), Vec::new());
    let mut names = ListBuilder::new(StringBuilder::new()).with_field(item(3));
    let mut values = ListBuilder::new(StringBuilder::new()).with_field(item(4));
    for (id, e) in rows {
        ids.push(id);
        ts.push(e.ts);
        vs.push(e.value);
        names.append_value(e.labels.iter().map(|(n, _)| Some(n)));
        values.append_value(e.labels.iter().map(|(_, v)| Some(v)));
    }
    let cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(UInt32Array::from(ids)),
        Arc::new(Int64Array::from(ts)),
        Arc::new(Float64Array::from(vs)),
        Arc::new(names.finish()),
        Arc::new(values.finish()),
    ];
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// Rows of a batch with this schema that `keep(series id, t)` accepts.
pub fn from_batch(
    b: &RecordBatch,
    mut keep: impl FnMut(u32, i64) -> bool,
) -> Result<Vec<(u32, Exemplar)>, StorageError> {
    let corrupt = |what: String| StorageError::Corrupt(format!("exemplars file: {what}"));
    // Column types are checked before any downcast (which would panic on a foreign file).
    if b.schema().fields() != exemplars_schema().fields() {
        return Err(corrupt("unexpected columns".into()));
    }
    let ids = b.column(0).as_primitive::<UInt32Type>();
    let ts = b.column(1).as_primitive::<Int64Type>();
    let vs = b.column(2).as_primitive::<Float64Type>();
    let names = b.column(3).as_list::<i32>();
    let values = b.column(4).as_list::<i32>();
    let mut out = Vec::new();
    for row in 0..b.num_rows() {
        let (id, t) = (ids.value(row), ts.value(row));
        if !keep(id, t) {
            continue;
        }
        let (n, v) = (names.value(row), values.value(row));
        let (n, v) = (n.as_string::<i32>(), v.as_string::<i32>());
        if n.len() != v.len() {
            return Err(corrupt(format!(
                "series {id} at {t}: names and values differ"
            )));
        }
        let pairs = (0..n.len())
            .map(|i| (n.value(i).to_string(), v.value(i).to_string()))
            .collect();
        let labels = Exemplar::labels_from(pairs)
            .map_err(|e| corrupt(format!("series {id} at {t}: {e}")))?;
        out.push((
            id,
            Exemplar {
                labels,
                value: vs.value(row),
                ts: t,
            },
        ));
    }
    Ok(out)
}
