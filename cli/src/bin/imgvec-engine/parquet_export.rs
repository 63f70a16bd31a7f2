//! `imgvec export --format parquet`: the records and vectors as one Apache Parquet file, written
//! a few thousand rows at a time (memory does not grow with the collection).

use std::sync::Arc;

use arrow_array::builder::{
    FixedSizeListBuilder, Float32Builder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use imgvec::{Database, ImageRecord};
use parquet::arrow::ArrowWriter;

fn invalid(e: impl std::fmt::Display) -> imgvec::Error {
    imgvec::Error::Invalid(format!("parquet: {e}"))
}

/// The file's columns: the record's fields (`attrs` as a JSON object in text), then `vector`
/// (a fixed-size list of float32) unless left out.
fn schema(dims: Option<i32>) -> Arc<Schema> {
    let mut fields = vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("width", DataType::UInt32, false),
        Field::new("height", DataType::UInt32, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
        Field::new("ingested_at_ms", DataType::UInt64, false),
        Field::new("attrs", DataType::Utf8, false),
        Field::new("duplicate_of", DataType::UInt64, true),
    ];
    if let Some(d) = dims {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        fields.push(Field::new(
            "vector",
            DataType::FixedSizeList(item, d),
            false,
        ));
    }
    Arc::new(Schema::new(fields))
}

/// One batch of `rows` in `schema`.
fn batch(
    db: &Database,
    rows: &[ImageRecord],
    schema: &Arc<Schema>,
    dims: Option<i32>,
) -> Result<RecordBatch, imgvec::Error> {
    let (mut id, mut width, mut height, mut at) = (
        UInt64Builder::new(),
        UInt32Builder::new(),
        UInt32Builder::new(),
        UInt64Builder::new(),
    );
    let (mut path, mut format, mut hash, mut attrs) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut duplicate_of = UInt64Builder::new();
    let mut vector = dims.map(|d| {
        FixedSizeListBuilder::new(Float32Builder::new(), d).with_field(Arc::new(Field::new(
            "item",
            DataType::Float32,
            false,
        )))
    });
    for r in rows {
        id.append_value(r.id);
        path.append_value(&r.path);
        width.append_value(r.width);
        height.append_value(r.height);
        format.append_value(&r.format);
        hash.append_value(r.content_hash.to_hex());
        at.append_value(r.ingested_at_ms);
        attrs.append_value(serde_json::to_string(&r.attributes).map_err(invalid)?);
        duplicate_of.append_option(r.duplicate_of);
        if let (Some(list), Some(d)) = (vector.as_mut(), dims) {
            let v = db.vector(r.id)?.unwrap_or_default();
            if v.len() != d as usize {
                return Err(invalid(format!(
                    "row {} has {} dims, not {d}",
                    r.id,
                    v.len()
                )));
            }
            list.values().append_slice(&v);
            list.append(true);
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(path.finish()),
        Arc::new(width.finish()),
        Arc::new(height.finish()),
        Arc::new(format.finish()),
        Arc::new(hash.finish()),
        Arc::new(at.finish()),
        Arc::new(attrs.finish()),
        Arc::new(duplicate_of.finish()),
    ];
    if let Some(mut list) = vector {
        columns.push(Arc::new(list.finish()));
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(invalid)
}

/// Writes every record (and its vector unless `vectors` is false) to `out`, a page of rows
/// (`inspect::PAGE`) per record batch and row group; how many were written.
pub(crate) fn write(
    db: &Database,
    vectors: bool,
    out: std::fs::File,
) -> Result<u64, imgvec::Error> {
    let dims = if vectors {
        let first = db.records_page(&imgvec::Filter::default(), None, 1)?;
        match first.first() {
            Some(r) => Some(db.vector(r.id)?.map_or(0, |v| v.len()) as i32),
            None => db.pipeline().map(|p| p.dims as i32),
        }
    } else {
        None
    };
    let schema = schema(dims);
    let mut writer = ArrowWriter::try_new(out, schema.clone(), None).map_err(invalid)?;
    let written = crate::commands::inspect::for_each_page(db, &mut |rows| {
        writer
            .write(&batch(db, rows, &schema, dims)?)
            .map_err(invalid)
    })?;
    writer.close().map_err(invalid)?;
    Ok(written)
}
