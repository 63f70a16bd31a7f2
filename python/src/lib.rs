//! `imgvec._imgvec`: the native half of the Python package. It exposes the engine's
//! [`imgvec::Database`] to `pysrc/imgvec/__init__.py`, which gives it its Pythonic shape (query
//! types, `Results`, progress bars). Every call that does real work releases the GIL; results
//! cross as plain Python values, numpy arrays, or JSON text of the engine's serde types (the same
//! JSON the CLI prints).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use imgvec::{
    collect_files, Database, Error, IngestEvent, IngestOptions, IngestSummary, OpenOptions,
    PipelineChoice, PreparedRow, Preset, Query, QueryFeatures, SearchOptions, Snapshot, Source,
    StorageError,
};
use numpy::ndarray::ArrayView2;
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

mod blas;
mod convert;
mod sharding;
use blas::{released, Handle};
use convert::{hit_dict, record_dict, SearchArgs};

/// The Python exception class (defined in `imgvec/_errors.py`) an engine error maps to, and the
/// file it names, if any.
fn classify(e: &Error) -> (&'static str, Option<String>) {
    fn storage(s: &StorageError) -> (&'static str, Option<String>) {
        let shown = |p: &std::path::Path| Some(p.display().to_string());
        match s {
            StorageError::DataCorruption { path, .. } => ("CorruptionError", shown(path)),
            StorageError::Locked { path, .. } => ("LockedError", shown(path)),
            StorageError::NotADatabase { path, .. } | StorageError::Invalid { path, .. } => {
                ("InvalidArgument", shown(path))
            }
            _ => ("Error", None),
        }
    }
    match e {
        Error::Storage(s) | Error::Index(imgvec::index::IndexError::Storage(s)) => storage(s),
        Error::Image { path, .. } => ("ImageError", Some(path.clone())),
        Error::NoSuchId(_) | Error::Invalid(_) => ("InvalidArgument", None),
        _ => ("Error", None),
    }
}

/// An instance of `imgvec._errors.<kind>(message, path)`.
fn py_error(kind: &str, message: String, path: Option<String>) -> PyErr {
    Python::with_gil(|py| {
        let made = py
            .import("imgvec._errors")
            .and_then(|m| m.getattr(kind))
            .and_then(|cls| cls.call1((message.clone(), path)));
        match made {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => PyRuntimeError::new_err(format!("{message} (and raising it failed: {e})")),
        }
    })
}

fn to_py(e: Error) -> PyErr {
    let (kind, path) = classify(&e);
    py_error(kind, e.to_string(), path)
}

fn invalid(message: impl Into<String>) -> PyErr {
    py_error("InvalidArgument", message.into(), None)
}

fn json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

fn parse<T: std::str::FromStr<Err = imgvec::InvalidOption>>(value: &str) -> PyResult<T> {
    value
        .parse()
        .map_err(|e: imgvec::InvalidOption| invalid(e.to_string()))
}

/// A query as the Python layer hands it over: an id (int), a file (str) or encoded bytes.
fn query_of(item: &Bound<'_, PyAny>) -> PyResult<Query> {
    // Bytes are borrowed (`PyBackedBytes`), not extracted as `Vec<u8>`: that reads a sequence
    // item by item, ~20 ms for a robust query's 410 KB of features.
    if let Ok((tag, data)) = item.extract::<(String, PyBackedBytes)>() {
        if tag == "features" {
            let features = QueryFeatures::from_bytes(&data).map_err(to_py)?;
            return Ok(Query::Features(Arc::new(features)));
        }
    }
    if let Ok(b) = item.downcast::<PyBytes>() {
        return Ok(Query::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(s) = item.downcast::<PyString>() {
        return Ok(Query::Path(PathBuf::from(s.to_str()?)));
    }
    match item.extract::<u64>() {
        Ok(id) => Ok(Query::Id(id)),
        Err(_) => Err(invalid(format!(
            "a query is a path, bytes, an image array or an id, not {}",
            item.get_type().name()?
        ))),
    }
}

/// A prepared row for Python: its key and its bytes.
type KeyedRow = (String, Py<PyBytes>);

/// One Python value per query of a batch: `value` of its answer, or the exception it failed with.
fn answers<'py, T>(
    py: Python<'py>,
    results: Vec<Result<T, Error>>,
    value: impl Fn(T) -> PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for result in results {
        match result {
            Ok(answer) => out.append(value(answer)?)?,
            Err(e) => out.append(to_py(e).into_value(py))?,
        }
    }
    Ok(out)
}

/// Every query of a Python list (see `query_of`).
fn queries_of(queries: &Bound<'_, PyList>) -> PyResult<Vec<Query>> {
    queries.iter().map(|q| query_of(&q)).collect()
}

/// One open database. The Python `imgvec.Database` wraps it.
#[pyclass(module = "imgvec._imgvec", frozen)]
struct NativeDatabase {
    inner: Mutex<Option<Arc<Handle>>>,
}

impl NativeDatabase {
    fn db(&self) -> PyResult<Arc<Handle>> {
        self.inner
            .lock()
            .clone()
            .ok_or_else(|| py_error("Error", "the database is closed".into(), None))
    }

    /// `run` on the database with a Python batch of queries and `Database.search`'s options,
    /// off the GIL: one result per query.
    fn batch<T: Send>(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyList>,
        options: SearchArgs,
        run: impl FnOnce(&Database, Vec<Query>, &SearchOptions) -> Vec<Result<T, Error>> + Send,
    ) -> PyResult<Vec<Result<T, Error>>> {
        let db = self.db()?;
        let queries = queries_of(queries)?;
        let opts = options.options()?;
        Ok(released(py, || run(&db, queries, &opts)))
    }
}

/// Row ids and their vectors (one row each).
type IdsAndVectors<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray2<f32>>);

/// Keeps a snapshot (and so its segments' memory maps) alive while numpy arrays borrow from it.
#[pyclass(module = "imgvec._imgvec", frozen)]
struct MappedRows {
    _snapshot: Arc<Snapshot>,
}

/// Every row of `snap` as a read-only array over its one segment's memory map (ids ascending),
/// when the snapshot is exactly that: one segment, nothing pending, nothing deleted.
fn mapped_vectors(py: Python<'_>, snap: Arc<Snapshot>) -> PyResult<Option<IdsAndVectors<'_>>> {
    let [(_, seg)] = snap.segments() else {
        return Ok(None);
    };
    if !snap.pending().is_empty() || !snap.tombstones().is_empty() {
        return Ok(None);
    }
    // Reading the whole column checks every block of it once.
    let vectors = released(py, || seg.vectors()).map_err(|e| to_py(e.into()))?;
    let view = ArrayView2::from_shape((seg.rows(), seg.dims()), vectors)
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let owner = Bound::new(
        py,
        MappedRows {
            _snapshot: snap.clone(),
        },
    )?
    .into_any();
    // SAFETY: `owner` holds the snapshot, whose `Arc<Segment>` owns the memory map `view`
    // points into; the map is never modified, and the array is made read-only below.
    let array = unsafe { PyArray2::borrow_from_array(&view, owner) };
    array.call_method1("setflags", (false,))?;
    Ok(Some((PyArray1::from_slice(py, seg.ids()), array)))
}

/// `rows` vectors of `dims` floats as one (rows × dims) array.
fn matrix<'py>(
    py: Python<'py>,
    flat: Vec<f32>,
    rows: usize,
    dims: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    PyArray1::from_vec(py, flat)
        .reshape([rows, dims])
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

#[pymethods]
impl NativeDatabase {
    #[new]
    #[pyo3(signature = (path, pipeline=None, read_only=false, threads=None, create=true, model=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        pipeline: Option<String>,
        read_only: bool,
        threads: Option<usize>,
        create: bool,
        model: Option<PathBuf>,
    ) -> PyResult<Self> {
        let mut opts = OpenOptions {
            read_only,
            create: create && !read_only,
            ..OpenOptions::default()
        };
        let preset = pipeline.map(|name| parse::<Preset>(&name)).transpose()?;
        opts.pipeline = match (preset, model) {
            (Some(p), Some(path)) => PipelineChoice::preset_model(p, path).map_err(to_py)?,
            (Some(p), None) => PipelineChoice::Preset(p),
            (None, Some(path)) => {
                PipelineChoice::model(path, None, imgvec::Pooling::Gap).map_err(to_py)?
            }
            (None, None) => PipelineChoice::Default,
        };
        if let Some(t) = threads {
            if t == 0 {
                return Err(invalid("threads must be at least 1"));
            }
            opts.threads = t;
        }
        let db = released(py, || {
            Handle::open(read_only, || Database::open(&path, opts))
        })
        .map_err(to_py)?;
        Ok(NativeDatabase {
            inner: Mutex::new(Some(Arc::new(db))),
        })
    }

    /// A new, empty database at `path` that makes and scores rows as this one does (its
    /// pipeline, model and learned whitening, frozen): a shard of one collection.
    #[pyo3(signature = (path, threads=None))]
    fn create_like(
        &self,
        py: Python<'_>,
        path: PathBuf,
        threads: Option<usize>,
    ) -> PyResult<NativeDatabase> {
        let db = self.db()?;
        let mut opts = OpenOptions::default();
        if let Some(t) = threads.filter(|&t| t > 0) {
            opts.threads = t;
        }
        let shard =
            released(py, || Handle::open(false, || db.create_like(&path, opts))).map_err(to_py)?;
        Ok(NativeDatabase {
            inner: Mutex::new(Some(Arc::new(shard))),
        })
    }

    /// Makes images into rows with this database's pipeline, storing nothing. `items` are
    /// paths (str) or (key, bytes) pairs; returns each row as (its key, its bytes) and the
    /// failures as event JSON.
    fn prepare(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyList>,
        attrs: BTreeMap<String, String>,
    ) -> PyResult<(Vec<KeyedRow>, Vec<String>)> {
        let db = self.db()?;
        let mut sources = Vec::with_capacity(items.len());
        for item in items.iter() {
            if let Ok((key, bytes)) = item.extract::<(String, PyBackedBytes)>() {
                sources.push(Source::Bytes {
                    key,
                    bytes: Arc::from(&*bytes),
                });
            } else {
                sources.push(Source::File(item.extract::<PathBuf>()?));
            }
        }
        let opts = IngestOptions {
            attributes: attrs,
            ..IngestOptions::default()
        };
        let (rows, failed) = released(py, || db.prepare(sources, &opts)).map_err(to_py)?;
        let rows = rows
            .iter()
            .map(|r| {
                (
                    r.path().to_string(),
                    PyBytes::new(py, &r.to_bytes()).unbind(),
                )
            })
            .collect();
        let failed = failed.iter().map(json).collect::<PyResult<_>>()?;
        Ok((rows, failed))
    }

    /// Stores rows `prepare` made; returns the summary and every event, as JSON, once durable.
    fn commit_prepared(
        &self,
        py: Python<'_>,
        rows: Vec<PyBackedBytes>,
    ) -> PyResult<(String, Vec<String>)> {
        let db = self.db()?;
        let rows = rows
            .iter()
            .map(|b| PreparedRow::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(to_py)?;
        let events = Mutex::new(Vec::new());
        let on_event = |e: &IngestEvent| events.lock().push(e.clone());
        let summary = released(py, || {
            db.commit_prepared(rows, &IngestOptions::default(), &on_event)
        })
        .map_err(to_py)?;
        let events = events
            .into_inner()
            .iter()
            .map(json)
            .collect::<PyResult<_>>()?;
        Ok((json(&summary)?, events))
    }

    /// Each id's vector in the space searches score in (None for an id with no live row).
    fn space_vectors(&self, py: Python<'_>, ids: Vec<u64>) -> PyResult<Vec<Option<Vec<f32>>>> {
        let db = self.db()?;
        released(py, || db.space_vectors(&ids)).map_err(to_py)
    }

    /// Closes the handle (a writer flushes and releases its lock once every call in flight
    /// on it has returned).
    fn close(&self, py: Python<'_>) {
        let db = self.inner.lock().take();
        released(py, move || drop(db));
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().is_none()
    }

    #[getter]
    fn path(&self) -> PyResult<String> {
        Ok(self.db()?.dir().display().to_string())
    }

    /// Walks `paths` and starts ingesting the images found in a background thread; the stream
    /// yields each image's event (JSON) once it is durable or failed.
    #[pyo3(signature = (paths, attrs, follow_links=false))]
    fn ingest_stream(
        &self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        attrs: BTreeMap<String, String>,
        follow_links: bool,
    ) -> PyResult<IngestStream> {
        let db = self.db()?;
        let files = released(py, || collect_files(&paths, follow_links));
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let opts = IngestOptions {
            attributes: attrs,
            stop: stop.clone(),
            ..IngestOptions::default()
        };
        let total = files.images.len() + files.errors.len();
        let worker = std::thread::spawn(move || {
            let on_event = |e: &IngestEvent| {
                let _ = tx.send(Msg::Event(e.clone()));
            };
            let result = db.ingest_files(files, &opts, &on_event).inspect(|summary| {
                // Searches right after see trained, current indexes (as the CLI does).
                if !summary.interrupted {
                    if let Err(e) = db.refresh_indexes() {
                        tracing::warn!("index refresh after ingest: {e}");
                    }
                }
            });
            let _ = tx.send(Msg::Done(result));
        });
        Ok(IngestStream {
            rx,
            stop,
            total,
            worker: Mutex::new(Some(worker)),
            summary: Mutex::new(None),
        })
    }

    /// Stores one image given as encoded bytes (`key` names it) or as a file (`key` None: its
    /// canonical path is the key); returns its id once it is durable.
    #[pyo3(signature = (data, key, attrs))]
    fn insert(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        key: Option<String>,
        attrs: BTreeMap<String, String>,
    ) -> PyResult<u64> {
        let db = self.db()?;
        let source = match (data.downcast::<PyBytes>(), key) {
            (Ok(bytes), Some(key)) => Source::Bytes {
                key,
                bytes: Arc::from(bytes.as_bytes()),
            },
            (Ok(_), None) => return Err(invalid("inserting bytes needs a key")),
            (Err(_), _) => {
                let path: PathBuf = data.extract()?;
                let canonical = std::fs::canonicalize(&path).map_err(|e| {
                    py_error(
                        "ImageError",
                        format!("{}: {e}", path.display()),
                        Some(path.display().to_string()),
                    )
                })?;
                Source::File(canonical)
            }
        };
        let event = released(py, || db.insert(source, attrs)).map_err(to_py)?;
        event
            .id
            .ok_or_else(|| py_error("Error", "the insert stored no row".into(), None))
    }

    /// Runs `queries` as one batch; each query's result is a list of hit dicts or the
    /// exception it failed with.
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyList>,
        options: SearchArgs,
    ) -> PyResult<Bound<'py, PyList>> {
        let results = self.batch(py, queries, options, |db, q, opts| db.search_batch(q, opts))?;
        answers(py, results, |hits| {
            let list = PyList::empty(py);
            for hit in &hits {
                list.append(hit_dict(py, hit)?)?;
            }
            Ok(list.into_any())
        })
    }

    /// What a search with `options` makes of each image query, as bytes (a query that fails:
    /// its exception). `like[i]`, when given: features made of query `i`'s image before, whose
    /// local features are taken instead of extracted again.
    #[pyo3(signature = (queries, options, like=None))]
    fn featurize<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyList>,
        options: SearchArgs,
        like: Option<Vec<Option<PyBackedBytes>>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let like = like
            .unwrap_or_default()
            .iter()
            .map(|b| b.as_deref().map(QueryFeatures::from_bytes).transpose())
            .collect::<Result<Vec<_>, _>>()
            .map_err(to_py)?;
        let features = self.batch(py, queries, options, |db, q, opts| {
            let like: Vec<_> = like.iter().map(Option::as_ref).collect();
            db.featurize_query(&q, opts, &like)
        })?;
        answers(py, features, |f| {
            Ok(PyBytes::new(py, &f.to_bytes()).into_any())
        })
    }

    /// What verifying each query with `options` would examine, as JSON (a query that fails:
    /// its exception).
    fn candidates<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyList>,
        options: SearchArgs,
    ) -> PyResult<Bound<'py, PyList>> {
        let found = self.batch(py, queries, options, |db, q, opts| db.candidates(&q, opts))?;
        answers(py, found, |c| Ok(PyString::new(py, &json(&c)?).into_any()))
    }

    /// The upright fallback a search with `options` runs: `"verified"` or `"likely"` (what
    /// tells that a query found its match, docs/SEARCH.md 6c), `None` when it is off.
    fn upright_fallback(&self, options: SearchArgs) -> PyResult<Option<&'static str>> {
        let opts = options.options()?;
        Ok(self.db()?.upright_fallback(&opts).map(|f| f.name()))
    }

    /// The pipeline's global vectors of `queries` (ids give their stored vectors), one row
    /// each, without storing anything.
    fn extract<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyList>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let db = self.db()?;
        let queries = queries_of(queries)?;
        let n = queries.len();
        let vectors = released(py, || db.extract(queries));
        let mut flat = Vec::new();
        let mut dims = 0;
        for v in vectors {
            let v = v.map_err(to_py)?;
            dims = v.len();
            flat.extend(v);
        }
        matrix(py, flat, n, dims)
    }

    /// The stored vectors of `ids` (every live row when None), in that order, with the ids.
    /// Every live row of a database whose rows all sit in one segment (after a compaction, with
    /// nothing pending or deleted) is a read-only view of the memory map, not a copy.
    #[pyo3(signature = (ids=None))]
    fn vectors<'py>(&self, py: Python<'py>, ids: Option<Vec<u64>>) -> PyResult<IdsAndVectors<'py>> {
        let db = self.db()?;
        if ids.is_none() {
            if let Some(mapped) = mapped_vectors(py, db.snapshot())? {
                return Ok(mapped);
            }
        }
        let (ids, flat, dims) = released(py, || -> Result<_, Error> {
            let ids = match ids {
                Some(ids) => ids,
                None => db.records()?.iter().map(|r| r.id).collect(),
            };
            let mut flat = Vec::new();
            let mut dims = 0;
            for &id in &ids {
                let v = db.vector(id)?.ok_or(Error::NoSuchId(id))?;
                dims = v.len();
                flat.extend(v);
            }
            Ok((ids, flat, dims))
        })
        .map_err(to_py)?;
        let n = ids.len();
        Ok((PyArray1::from_vec(py, ids), matrix(py, flat, n, dims)?))
    }

    fn get<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Option<Bound<'py, PyDict>>> {
        let db = self.db()?;
        let rec = released(py, || db.get(id)).map_err(to_py)?;
        rec.map(|r| record_dict(py, &r)).transpose()
    }

    /// The record of a file as named (relative or absolute, through links, or since removed).
    fn get_by_file<'py>(
        &self,
        py: Python<'py>,
        path: PathBuf,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let db = self.db()?;
        let rec = released(py, || db.get_by_file(&path)).map_err(to_py)?;
        rec.map(|r| record_dict(py, &r)).transpose()
    }

    fn records<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let db = self.db()?;
        let recs = released(py, || db.records()).map_err(to_py)?;
        let out = PyList::empty(py);
        for r in &recs {
            out.append(record_dict(py, r)?)?;
        }
        Ok(out)
    }

    fn thumbnail<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let db = self.db()?;
        let bytes = released(py, || db.thumbnail(id)).map_err(to_py)?;
        Ok(bytes.map(|b| PyBytes::new(py, &b)))
    }

    /// Deletes rows; returns the ids that were live.
    fn delete(&self, py: Python<'_>, ids: Vec<u64>) -> PyResult<Vec<u64>> {
        let db = self.db()?;
        released(py, || db.delete(&ids)).map_err(to_py)
    }

    /// Starts loading the indexes verified searches read first, in the background.
    fn preload(&self) -> PyResult<()> {
        let db = self.db()?;
        Handle::preload(&db);
        Ok(())
    }

    /// Seals pending rows and merges segments without deleted rows (JSON report).
    fn compact(&self, py: Python<'_>) -> PyResult<String> {
        let db = self.db()?;
        let report = released(py, || db.compact()).map_err(to_py)?;
        json(&report)
    }

    /// What the database holds (JSON, as `imgvec info --json`).
    fn info(&self, py: Python<'_>) -> PyResult<String> {
        let db = self.db()?;
        let info = released(py, || db.info()).map_err(to_py)?;
        json(&info)
    }
}

enum Msg {
    Event(IngestEvent),
    Done(Result<IngestSummary, Error>),
}

/// A running ingest: iterate it for its events (JSON text); `summary` is set once it ends.
/// Ctrl-C while waiting stops the ingest after the images in flight are durable, then raises
/// `KeyboardInterrupt`.
#[pyclass(module = "imgvec._imgvec", frozen)]
struct IngestStream {
    rx: Receiver<Msg>,
    stop: Arc<AtomicBool>,
    total: usize,
    worker: Mutex<Option<JoinHandle<()>>>,
    summary: Mutex<Option<String>>,
}

impl IngestStream {
    /// Waits for the worker's last message, discarding events (after a stop).
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        loop {
            match released(py, || self.rx.recv()) {
                Ok(Msg::Event(_)) => {}
                Ok(Msg::Done(result)) => return self.done(py, result),
                Err(_) => return self.join(py),
            }
        }
    }

    fn done(&self, py: Python<'_>, result: Result<IngestSummary, Error>) -> PyResult<()> {
        let summary = result.map_err(to_py)?;
        *self.summary.lock() = Some(json(&summary)?);
        self.join(py)
    }

    fn join(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(worker) = self.worker.lock().take() {
            released(py, || worker.join())
                .map_err(|_| PyRuntimeError::new_err("the ingest thread panicked"))?;
        }
        Ok(())
    }
}

impl Drop for IngestStream {
    /// A stream dropped while its ingest runs stops it, after the images in flight are durable.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(worker) = self.worker.get_mut().take() {
            let _ = worker.join();
        }
    }
}

#[pymethods]
impl IngestStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            // A Ctrl-C is looked for before each wait, not only after a wait that timed out: a
            // fast ingest always has an event ready, and the interrupt must still stop it. No
            // event is dropped: one already received has been returned.
            if let Err(interrupt) = py.check_signals() {
                self.stop.store(true, Ordering::SeqCst);
                self.finish(py)?;
                return Err(interrupt);
            }
            let got = released(py, || self.rx.recv_timeout(Duration::from_millis(100)));
            match got {
                Ok(Msg::Event(e)) => return json(&e).map(Some),
                Ok(Msg::Done(result)) => return self.done(py, result).map(|()| None),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.join(py).map(|()| None),
            }
        }
    }

    /// Images (and unreadable paths) the walk found.
    #[getter]
    fn total(&self) -> usize {
        self.total
    }

    /// The summary (JSON) once the stream is exhausted.
    #[getter]
    fn summary(&self) -> Option<String> {
        self.summary.lock().clone()
    }

    /// Stops after the images in flight are durable, and waits for that.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.finish(py)
    }
}

/// Whether `path` holds an imgvec database (without opening it).
#[pyfunction]
fn exists(path: PathBuf) -> bool {
    Database::exists(path)
}

/// The threads OpenBLAS (FAISS's and the batched exact scan's matrix products) uses in this
/// process. Its threads spin between products, taking cores from the handle's threads: a
/// process that searches query features and runs no model (a shard reader of `imgvec.ray`)
/// sets 1. The model wants them (single-image pointwise convolutions are OpenBLAS products).
#[pyfunction]
fn set_blas_threads(n: usize) {
    imgvec::exact::set_blas_threads(n);
}

/// Stops OpenBLAS's worker threads until the next product instead of letting them spin, when
/// no other native call is running and no writable database is open (blas.rs); returns whether
/// it did. The `imgvec.ray` driver calls it after featurizing, while its shards search.
#[pyfunction]
fn rest_blas_threads() -> bool {
    blas::rest()
}

/// Encodes an image array (H×W×3, H×W×4 or H×W, uint8) as PNG bytes (lossless).
#[pyfunction]
fn encode_array<'py>(
    py: Python<'py>,
    array: PyReadonlyArrayDyn<'py, u8>,
) -> PyResult<Bound<'py, PyBytes>> {
    let shape = array.shape().to_vec();
    let (h, w, channels) = match shape[..] {
        [h, w] => (h, w, 1),
        [h, w, c @ (1 | 3 | 4)] => (h, w, c),
        _ => {
            return Err(invalid(format!(
                "an image array is H×W, H×W×3 or H×W×4 uint8, not shape {shape:?}"
            )))
        }
    };
    let pixels: Vec<u8> = array.as_array().iter().copied().collect();
    let color = match channels {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        _ => image::ExtendedColorType::Rgba8,
    };
    let (w32, h32) = match (u32::try_from(w), u32::try_from(h)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err(invalid(format!("an image array of {w}×{h} pixels"))),
    };
    let mut png = Vec::new();
    released(py, || {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(&mut png).write_image(&pixels, w32, h32, color)
    })
    .map_err(|e| invalid(format!("encoding the array: {e}")))?;
    Ok(PyBytes::new(py, &png))
}

#[pymodule]
fn _imgvec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    imgvec::tune_allocator();
    m.add_class::<NativeDatabase>()?;
    m.add_class::<IngestStream>()?;
    m.add_function(wrap_pyfunction!(encode_array, m)?)?;
    m.add_function(wrap_pyfunction!(exists, m)?)?;
    m.add_function(wrap_pyfunction!(set_blas_threads, m)?)?;
    m.add_function(wrap_pyfunction!(rest_blas_threads, m)?)?;
    m.add_function(wrap_pyfunction!(sharding::looks_beneath, m)?)?;
    m.add_function(wrap_pyfunction!(sharding::beneath_pick, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Whether this build is optimised as `pip install` builds it: `maturin develop` without
    // `--release` (scripts/setup.sh, for the tests) compiles imgvec's own crates at opt-level 1,
    // about twice as slow; benchmarks say which they ran on.
    m.add("OPTIMIZED", !cfg!(debug_assertions))?;
    Ok(())
}
