//! The `Database` handle: a facade over the services of one open database — storage, the
//! featurizer, the search spaces, the re-rank indexes and the background worker.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use imgvec_ingest::{decode, set_torch_threads, FileList};
use imgvec_storage::lock::FolderLock;
use imgvec_storage::{
    CompactionPolicy, CompactionReport, ImageRecord, OpenMode, Store, StoreOptions,
};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::index::Save;
use crate::info::{DatabaseInfo, Hit};
use crate::ingest::{IngestEvent, IngestOptions, IngestSummary, Ingestor, Sink, Source};
use crate::local;
use crate::maintenance::Maintenance;
use crate::options::{OpenOptions, Query, SearchOptions};
use crate::pipeline::{self, Featurizer, PipelineConfig};
use crate::prepared::PreparedRow;
use crate::search::{Searcher, Spaces};

/// One image database (a folder). `Send + Sync`: share one handle across threads.
pub struct Database {
    store: Arc<Store>,
    /// Background worker of a writable handle; stopped and joined on drop (first).
    maintenance: Option<Maintenance>,
    featurizer: Arc<Featurizer>,
    spaces: Arc<Spaces>,
    threads: usize,
    /// Loads started by [`Database::preload`]; joined on drop.
    preloads: Mutex<Vec<JoinHandle<()>>>,
}

impl Database {
    /// Opens the database in folder `dir`; a writable handle creates it when the folder is
    /// absent or empty, unless `opts.create` is off ([`OpenOptions::create`]).
    pub fn open(dir: impl AsRef<Path>, opts: OpenOptions) -> Result<Database> {
        Database::open_with_lock(dir.as_ref(), opts, None)
    }

    /// [`Database::open`] for a writer that already holds the folder's lock (a reindex).
    pub(crate) fn open_with_lock(
        dir: &Path,
        opts: OpenOptions,
        folder_lock: Option<Arc<FolderLock>>,
    ) -> Result<Database> {
        crate::index::check_cpu()?;
        match &opts.file_layer {
            Some(layer) => crate::reindex::recover_interrupted_swap(layer.0.as_ref(), dir)?,
            None => crate::reindex::recover_interrupted_swap(&imgvec_storage::StdFs, dir)?,
        }
        let mode = if opts.read_only {
            OpenMode::ReadOnly
        } else {
            OpenMode::ReadWrite
        };
        let mut store_opts = StoreOptions {
            create: opts.create,
            folder_lock,
            ..StoreOptions::new(mode)
        };
        if let Some(layer) = &opts.file_layer {
            store_opts.vfs = layer.0.clone();
        }
        let store = Arc::new(Store::open_with(dir, store_opts)?);
        let threads = opts.threads.max(1);
        set_torch_threads(threads);
        let featurizer = Arc::new(Featurizer::new(
            store.clone(),
            pipeline::stored(&store)?,
            opts.pipeline,
        ));
        let spaces = Arc::new(Spaces::new(store.clone(), featurizer.clone(), opts.index));
        let maintenance = (mode == OpenMode::ReadWrite && opts.background_compaction)
            .then(|| Maintenance::start(store.clone(), spaces.clone()));
        Ok(Database {
            store,
            maintenance,
            featurizer,
            spaces,
            threads,
            preloads: Mutex::new(Vec::new()),
        })
    }

    /// Starts loading, in the background, the derived files this handle's verified searches
    /// read first (the voting and dense-window indexes of a pipeline with local features) and
    /// returns at once. For a process that opens a database to search it: the loads overlap
    /// the queries' decoding and featurizing. Searches give the same results
    /// with or without it; one that needs a structure still loading waits for it.
    pub fn preload(&self) {
        if let Some(t) = self.spaces.preload() {
            self.preloads.lock().push(t);
        }
    }

    /// A new, empty database in `dir` (absent or empty) that makes and scores rows exactly as
    /// this one does: the same pipeline and model, and this one's learned whitening (learned
    /// first if it is due), adopted and frozen so it is never relearned there. The shards of one
    /// collection are made like one database that learned on a sample of it, so their scores
    /// compare (docs/RAY.md). A database too small to have learned a whitening gives shards that
    /// never learn one either.
    pub fn create_like(&self, dir: impl AsRef<Path>, opts: OpenOptions) -> Result<Database> {
        let dir = dir.as_ref();
        let Some(mut config) = self.pipeline() else {
            return Err(Error::Invalid(format!(
                "{}: has no pipeline yet (ingest a sample first)",
                self.dir().display()
            )));
        };
        let projection = self.spaces.learned(self.store.snapshot())?;
        let model = pipeline::stored_model(self.dir(), &config)?;
        if let Some(w) = &mut config.whitening {
            w.frozen = true;
        }
        let opts = OpenOptions {
            read_only: false,
            create: true,
            pipeline: Default::default(),
            ..opts
        };
        {
            let db = Database::open(dir, opts.clone())?;
            if db.pipeline().is_some() || db.store.snapshot().max_id() > 0 {
                return Err(Error::Invalid(format!(
                    "{}: already holds a database",
                    dir.display()
                )));
            }
            pipeline::install(&db.store, &config, &model)?;
        }
        let db = Database::open(dir, opts)?;
        if let Some(projection) = projection {
            db.spaces.adopt(projection)?;
        }
        Ok(db)
    }

    /// Each row's vector in the space searches score in (the whitened view once there is one,
    /// else the stored vector); `None` for an id with no live row. What
    /// [`SearchOptions::expand_with`] sums.
    pub fn space_vectors(&self, ids: &[u64]) -> Result<Vec<Option<Vec<f32>>>> {
        let snap = self.store.snapshot();
        let space = self.spaces.space(snap.clone())?;
        ids.iter()
            .map(|&id| match snap.is_live(id) {
                true => Ok(space.snapshot.vector(id)?.map(<[f32]>::to_vec)),
                false => Ok(None),
            })
            .collect()
    }

    /// Whether `dir` holds an imgvec database (without opening it).
    pub fn exists(dir: impl AsRef<Path>) -> bool {
        Store::exists(dir.as_ref())
    }

    /// Whether a writable open would accept `dir` (a database, or an absent or empty folder to
    /// create one in), with the error it would give otherwise; nothing is created.
    pub fn check_writable_target(dir: impl AsRef<Path>) -> Result<()> {
        Ok(Store::check_writable_target(dir.as_ref())?)
    }

    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    pub fn pipeline(&self) -> Option<PipelineConfig> {
        self.featurizer.pipeline()
    }

    /// How many query images this handle's model ran on so far, each augmentation variant
    /// counted (a search's cost in model passes; an upright retry runs only the turns).
    pub fn query_images_embedded(&self) -> u64 {
        self.featurizer.embedded()
    }

    /// Ingests `sources` in parallel; `on_event` sees each image once it is durable or failed.
    /// Per-image failures are events; an `Err` means storage or the model failed, and everything
    /// reported before it stays durable. A file is keyed by its canonical path, however it is
    /// named (relative, through links, with `..`).
    pub fn ingest(
        &self,
        sources: Vec<Source>,
        opts: &IngestOptions,
        on_event: &(dyn Fn(&IngestEvent) + Sync),
    ) -> Result<IngestSummary> {
        let sources = canonical(sources);
        self.ingestor().run(sources, opts, on_event, Sink::Store)
    }

    fn ingestor(&self) -> Ingestor<'_> {
        Ingestor {
            store: &self.store,
            featurizer: &self.featurizer,
            threads: self.threads,
        }
    }

    /// Makes `sources` into rows with this database's pipeline, as [`ingest`](Self::ingest)
    /// would, and stores nothing: the rows (with `opts.attributes`) and the images that failed,
    /// as error events. Another database made [like](Self::create_like) this one stores them
    /// with [`commit_prepared`](Self::commit_prepared). The database needs its pipeline.
    pub fn prepare(
        &self,
        sources: Vec<Source>,
        opts: &IngestOptions,
    ) -> Result<(Vec<PreparedRow>, Vec<IngestEvent>)> {
        if self.pipeline().is_none() {
            return Err(Error::Invalid(format!(
                "{}: has no pipeline yet, so it cannot make rows",
                self.dir().display()
            )));
        }
        let rows = Mutex::new(Vec::new());
        let failed = Mutex::new(Vec::new());
        let take = |row| rows.lock().push(PreparedRow(row));
        let on_event = |e: &IngestEvent| failed.lock().push(e.clone());
        let sources = canonical(sources);
        self.ingestor()
            .run(sources, opts, &on_event, Sink::Collect(&take))?;
        Ok((rows.into_inner(), failed.into_inner()))
    }

    /// Stores rows that [`prepare`](Self::prepare) made (here or in another process), with the
    /// durability and events of [`ingest`](Self::ingest): a row whose key is stored with the
    /// same content is unchanged, one that does not fit this database's pipeline is an error
    /// event. The pipeline must be the one that made them, so this database must have one.
    pub fn commit_prepared(
        &self,
        rows: Vec<PreparedRow>,
        opts: &IngestOptions,
        on_event: &(dyn Fn(&IngestEvent) + Sync),
    ) -> Result<IngestSummary> {
        let Some(config) = self.pipeline() else {
            return Err(Error::Invalid(format!(
                "{}: has no pipeline; make it like the database that prepared the rows",
                self.dir().display()
            )));
        };
        let start = std::time::Instant::now();
        let mut summary =
            crate::prepared::commit(&self.store, &config, rows, opts.commit_rows, on_event)?;
        summary.seconds = start.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Ingests what a walk ([`collect_files`](crate::collect_files)) found: paths it could not
    /// read become error events first, then the images are ingested; the summary counts both,
    /// and the files it skipped (not images, not regular files).
    pub fn ingest_files(
        &self,
        files: FileList,
        opts: &IngestOptions,
        on_event: &(dyn Fn(&IngestEvent) + Sync),
    ) -> Result<IngestSummary> {
        for (path, reason) in &files.errors {
            on_event(&IngestEvent::error(
                path.display().to_string(),
                reason.clone(),
            ));
        }
        let sources = files.images.into_iter().map(Source::File).collect();
        let mut summary = self.ingest(sources, opts, on_event)?;
        summary.errors += files.errors.len() as u64;
        summary.skipped = (files.skipped.len() + files.not_regular.len()) as u64;
        Ok(summary)
    }

    /// Inserts one file (its canonical path is its key). Returns once it is durable.
    pub fn insert_path(&self, path: impl AsRef<Path>) -> Result<IngestEvent> {
        let path = path.as_ref();
        let canonical = std::fs::canonicalize(path).map_err(|e| Error::Image {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.insert(Source::File(canonical), BTreeMap::new())
    }

    /// Inserts encoded image bytes under `key`, with user attributes. Returns once durable.
    pub fn insert_bytes(
        &self,
        key: &str,
        bytes: &[u8],
        attributes: BTreeMap<String, String>,
    ) -> Result<IngestEvent> {
        let source = Source::Bytes {
            key: key.to_string(),
            bytes: Arc::from(bytes),
        };
        self.insert(source, attributes)
    }

    /// Inserts one image with user attributes. Returns once it is durable; an image that cannot
    /// be read is an [`Error::Image`] naming it.
    pub fn insert(
        &self,
        source: Source,
        attributes: BTreeMap<String, String>,
    ) -> Result<IngestEvent> {
        let opts = IngestOptions {
            attributes,
            ..IngestOptions::default()
        };
        let events = Mutex::new(Vec::new());
        self.ingest(vec![source], &opts, &|e| events.lock().push(e.clone()))?;
        let event = events.into_inner().pop();
        match event {
            Some(ev) if ev.error.is_some() => Err(Error::Image {
                path: ev.path,
                reason: ev.error.unwrap_or_default(),
            }),
            Some(ev) => Ok(ev),
            None => Err(Error::Invalid("insert was interrupted".into())),
        }
    }

    /// What readers see now: the sealed segments (memory-mapped), pending rows and deleted ids.
    /// Holding it keeps those segments mapped, even after a compaction replaced them.
    pub fn snapshot(&self) -> Arc<imgvec_storage::Snapshot> {
        self.store.snapshot()
    }

    /// Every live row's record (one pass over the records column family).
    pub fn records(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.store.records()?)
    }

    /// Hands `visit` the live records with ids above `after` (all, without) in id order, one at
    /// a time, until it returns false: listing a million rows never holds them all.
    pub fn scan_records(
        &self,
        after: Option<u64>,
        visit: &mut dyn FnMut(ImageRecord) -> bool,
    ) -> Result<()> {
        Ok(self.store.scan_records(after, visit)?)
    }

    /// One page of the records `filter` admits: up to `limit`, ids above `after`, in id order
    /// (continue from the last one's id).
    pub fn records_page(
        &self,
        filter: &crate::Filter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ImageRecord>> {
        let mut page = Vec::new();
        if limit == 0 {
            return Ok(page);
        }
        self.scan_records(after, &mut |r| {
            if filter.matches(&r) {
                page.push(r);
            }
            page.len() < limit
        })?;
        Ok(page)
    }

    pub fn get(&self, id: u64) -> Result<Option<ImageRecord>> {
        Ok(self.store.get(id)?)
    }

    pub fn get_by_path(&self, path: &str) -> Result<Option<ImageRecord>> {
        Ok(self.store.get_by_path(path)?)
    }

    /// The live row stored for the file `path` names, given the way a person gives it: relative
    /// or absolute, through links, or for a file that has since been removed (its folder is
    /// resolved instead). Last, `path` as written is tried as a key (images inserted from bytes).
    pub fn get_by_file(&self, path: impl AsRef<Path>) -> Result<Option<ImageRecord>> {
        use std::os::unix::ffi::OsStrExt;
        for key in file_keys(path.as_ref()) {
            if let Some(rec) = self.store.get_by_key(key.as_os_str().as_bytes())? {
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    /// The stored (unit-norm) vector of a live row.
    pub fn vector(&self, id: u64) -> Result<Option<Vec<f32>>> {
        Ok(self.store.vector(id)?)
    }

    /// The stored JPEG thumbnail (≤ 256 px) of a live row.
    pub fn thumbnail(&self, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.store.thumbnail(id)?)
    }

    /// Deletes rows by id; returns those that existed.
    pub fn delete(&self, ids: &[u64]) -> Result<Vec<u64>> {
        Ok(self.store.delete(ids)?)
    }

    /// What is stored for row `id` besides its record: vector, local features, thumbnail;
    /// `None` for an unknown or deleted id.
    pub fn stored_features(&self, id: u64) -> Result<Option<crate::info::StoredFeatures>> {
        let snap = self.store.snapshot();
        // A live row is in the snapshot and not deleted; no need to read its record.
        if snap.is_deleted(id) {
            return Ok(None);
        }
        let Some(vector) = snap.vector(id)? else {
            return Ok(None);
        };
        let local = snap.local(id)?.unwrap_or_default();
        let has_local = self.pipeline().is_some_and(|p| p.local.is_some());
        Ok(Some(crate::info::StoredFeatures {
            vector_dims: vector.len(),
            keypoints: has_local
                .then(|| imgvec_ingest::sift::keypoints_in(local.len()))
                .flatten(),
            local_bytes: local.len(),
            thumbnail_bytes: self.store.thumbnail(id)?.map_or(0, |t| t.len()),
        }))
    }

    /// Sets and removes user attributes of a stored row after ingest (`imgvec tag`); the record
    /// as it is now, `None` for an unknown id. Durable when it returns.
    pub fn set_attributes(
        &self,
        id: u64,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Option<ImageRecord>> {
        let rec = self.store.set_attributes(id, set, remove)?;
        if rec.is_some() {
            self.spaces.attributes_written();
        }
        Ok(rec)
    }

    /// Seals pending rows and rewrites every segment into one without deleted rows, in the
    /// foreground. Searches keep running on their snapshots meanwhile.
    /// The approximate indexes are purged of deleted rows (IVF-PQ rebuilt) and saved.
    pub fn compact(&self) -> Result<CompactionReport> {
        let report = self.store.compact(CompactionPolicy::Full)?;
        self.spaces
            .refresh(&self.store.snapshot(), Save::Unsaved, true)?;
        Ok(report)
    }

    /// Brings the approximate indexes (and a pipeline's whitening) up to date now: appends new
    /// rows, trains them once the collection is large enough, and (writers) saves them. The
    /// background worker keeps them current on its own; call it to have everything ready
    /// before the first search (it also learns a due whitening, which the worker leaves to the
    /// foreground).
    pub fn refresh_indexes(&self) -> Result<()> {
        let save = match self.store.mode() {
            OpenMode::ReadWrite => Save::Unsaved,
            OpenMode::ReadOnly => Save::Never,
        };
        self.spaces.refresh(&self.store.snapshot(), save, false)
    }

    /// What the database holds. Cheap: it loads a published whitening but neither learns one
    /// nor projects rows (searches and the writer's index refresh do that).
    pub fn info(&self) -> Result<DatabaseInfo> {
        let (indexes, whitening) = self.spaces.info();
        let local = self
            .pipeline()
            .and_then(|p| p.local)
            .map(|_| local::LocalInfo {
                indexes: self.spaces.rerank().status(),
                ..local::stats(&self.store.snapshot())
            });
        Ok(DatabaseInfo {
            path: self.dir().display().to_string(),
            read_only: self.store.mode() == OpenMode::ReadOnly,
            pipeline: self.pipeline(),
            stats: self.store.stats()?,
            indexes,
            whitening,
            local,
        })
    }

    /// Checks every checksum and cross-reference of the database: segments (at open), records
    /// against the path, hash and thumbnail indexes and the stored rows, the model file against
    /// its fingerprint, and every derived file a publication names. Damage is listed in the
    /// report (`ok` false); `Err` only when nothing could be read.
    pub fn verify(&self) -> Result<crate::verify::VerifyReport> {
        crate::verify::verify(&self.store)
    }

    /// Writes a consistent copy of the database to `dest` (absent or empty) while it stays in
    /// use (searches, and this handle's writes, go on), then verifies the copy.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<crate::backup::BackupReport> {
        crate::backup::backup(&self.store, dest.as_ref())
    }

    /// What this handle holds of the voting and dense-window indexes: how often it built them
    /// from scratch (a handle opened after a writer closed loads them instead), and the rows
    /// they cover once a verified search used them.
    pub fn rerank_status(&self) -> crate::search::RerankStatus {
        crate::search::RerankStatus {
            first_passes_reused: self.spaces.first_passes().found(),
            observations_reused: self.spaces.examined().found(),
            ..self.spaces.rerank().status()
        }
    }

    pub fn search(&self, query: Query, opts: &SearchOptions) -> Result<Vec<Hit>> {
        self.search_batch(vec![query], opts)
            .pop()
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Answers several queries, running the model once per batch of image queries. Each query
    /// gets its own result, so one unreadable image does not fail the others.
    ///
    /// A query becomes one vector per augmentation variant (whitened when the pipeline has a
    /// learned whitening); each variant is searched, every row keeps its best score over the
    /// variants, and query expansion, when on, searches once more with the expanded vector.
    /// docs/SEARCH.md describes the stages.
    pub fn search_batch(&self, queries: Vec<Query>, opts: &SearchOptions) -> Vec<Result<Vec<Hit>>> {
        self.searcher().search_batch(queries, opts)
    }

    /// The upright fallback a search with `opts` runs (docs/SEARCH.md 6c), `None` when it is
    /// off, and what tells it that a query found its match. A sharded search runs it over the
    /// merged answers (docs/RAY.md).
    pub fn upright_fallback(&self, opts: &SearchOptions) -> Option<crate::search::Found> {
        self.searcher().upright_fallback(opts)
    }

    /// Featurizes image queries as a search with `opts` would (augmentation variants, and the
    /// local features when it verifies), once: the answers search as [`Query::Features`] here or
    /// in any database made [like](Self::create_like) this one, with the same `opts`.
    /// `like[i]`, when given: query `i`'s image featurized before (any augmentation); its local
    /// features are taken from there instead of extracted again.
    pub fn featurize_query(
        &self,
        queries: &[Query],
        opts: &SearchOptions,
        like: &[Option<&crate::search::QueryFeatures>],
    ) -> Vec<Result<crate::search::QueryFeatures>> {
        self.searcher().featurize(queries, opts, like)
    }

    /// What verifying each of `queries` with `opts` would examine, gathered and not examined
    /// (empty lists when the search does not verify): the shards of one collection merge theirs
    /// and each examines its rows of the result ([`SearchOptions::candidates`], docs/RAY.md).
    pub fn candidates(
        &self,
        queries: &[Query],
        opts: &SearchOptions,
    ) -> Vec<Result<crate::Candidates>> {
        self.searcher().candidates(queries, opts)
    }

    /// The pipeline's global vectors of `queries`, computed as ingest computes them, without
    /// storing anything (an id gives its stored vector). One result per query.
    pub fn extract(&self, queries: Vec<Query>) -> Vec<Result<Vec<f32>>> {
        self.searcher().extract(queries)
    }

    fn searcher(&self) -> Searcher<'_> {
        Searcher {
            store: &self.store,
            featurizer: &self.featurizer,
            spaces: &self.spaces,
            threads: self.threads,
        }
    }
}

impl Drop for Database {
    /// A writer stops its background worker, then leaves the indexes current and saved, so the
    /// next handle (a read-only search, typically) loads them instead of rebuilding.
    fn drop(&mut self) {
        for t in self.preloads.get_mut().drain(..) {
            let _ = t.join();
        }
        drop(self.maintenance.take());
        if self.store.mode() == OpenMode::ReadWrite {
            if let Err(e) = self
                .spaces
                .refresh(&self.store.snapshot(), Save::Unsaved, false)
            {
                tracing::warn!("{}: saving indexes failed: {e}", self.dir().display());
            }
        }
    }
}

/// The keys a file given on a command line may be stored under, most likely first: its
/// canonical path; for a file that has gone, its canonical folder joined with its name; its
/// absolute path; the path as written.
fn file_keys(path: &Path) -> Vec<std::path::PathBuf> {
    let mut keys = Vec::new();
    if let Ok(canonical) = std::fs::canonicalize(path) {
        keys.push(canonical);
    } else if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(folder) = std::fs::canonicalize(parent) {
            keys.push(folder.join(name));
        }
    }
    if let Ok(absolute) = std::path::absolute(path) {
        keys.push(absolute);
    }
    keys.push(path.to_path_buf());
    keys.dedup();
    keys
}

/// A JPEG thumbnail (≤ 256 px) of encoded image bytes, as stored for each row.
pub fn make_thumbnail(bytes: &[u8]) -> Result<Vec<u8>> {
    let img = decode(bytes).map_err(|e| Error::Image {
        path: "<bytes>".into(),
        reason: e.to_string(),
    })?;
    Ok(imgvec_ingest::thumbnail_jpeg(&img.rgb))
}

/// Files named by their canonical paths, their keys (a file that cannot be resolved keeps its
/// name: reading it reports the error).
fn canonical(sources: Vec<Source>) -> Vec<Source> {
    sources
        .into_iter()
        .map(|s| match s {
            Source::File(p) => Source::File(std::fs::canonicalize(&p).unwrap_or(p)),
            bytes => bytes,
        })
        .collect()
}
