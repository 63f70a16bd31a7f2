//! The vector spaces a database searches in: its stored vectors, or — for pipelines that learn
//! a whitening (`balanced`, `robust`) — their whitened view, each with its own index set; and,
//! for pipelines with local features, the re-rank indexes (voting, dense windows). One owner
//! for all of them, shared by searches and the background worker, so everything derived is
//! maintained.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use imgvec_storage::{Snapshot, Store};
use parking_lot::Mutex;

use crate::error::Result;
use crate::index::{IndexInfo, IndexOptions, Indexes, Save};
use crate::info::WhiteningInfo;
use crate::pipeline::Featurizer;
use crate::reduce::{Learn, Projection, Reducer};
use crate::search::first_pass::FirstPasses;
use crate::search::observed::Examined;
use crate::search::recent::Recent;
use crate::search::RerankIndexes;

/// The space one search runs in.
pub(crate) struct Space {
    /// The rows of this space: the stored vectors, or the whitened view's chunks.
    pub snapshot: Arc<Snapshot>,
    pub indexes: Arc<Indexes>,
    /// How query vectors map into the space (`None`: the stored vectors' own space).
    pub projection: Option<Arc<Projection>>,
}

/// One database handle's spaces.
pub(crate) struct Spaces {
    store: Arc<Store>,
    featurizer: Arc<Featurizer>,
    raw: Arc<Indexes>,
    index_opts: IndexOptions,
    /// The whitening of a pipeline that has one, made once the pipeline is known.
    reducer: Mutex<Option<Arc<Reducer>>>,
    /// Candidate sources of verified searches (used by pipelines with local features).
    rerank: RerankIndexes,
    /// Recent first rankings of verified searches of query features (first_pass.rs).
    first_passes: FirstPasses,
    /// What recent verified searches of query features examined (observed.rs).
    examined: Recent<Examined>,
    /// Attribute writes through this handle: a filter evaluated before one may allow other
    /// rows than after it, so the first passes of filtered searches are kept under this count
    /// (a read-only handle sees its open's records and never counts).
    attribute_writes: AtomicU64,
}

impl Spaces {
    pub fn new(store: Arc<Store>, featurizer: Arc<Featurizer>, index_opts: IndexOptions) -> Spaces {
        let raw = Arc::new(Indexes::new(&store, index_opts.clone()));
        let rerank = RerankIndexes::new(&store);
        Spaces {
            store,
            featurizer,
            raw,
            index_opts,
            reducer: Mutex::new(None),
            rerank,
            first_passes: FirstPasses::default(),
            examined: Recent::default(),
            attribute_writes: AtomicU64::new(0),
        }
    }

    pub fn rerank(&self) -> &RerankIndexes {
        &self.rerank
    }

    pub fn first_passes(&self) -> &FirstPasses {
        &self.first_passes
    }

    pub fn examined(&self) -> &Recent<Examined> {
        &self.examined
    }

    /// Counts an attribute write, once it is stored.
    pub fn attributes_written(&self) {
        self.attribute_writes.fetch_add(1, Ordering::SeqCst);
    }

    /// Attribute writes so far (read before a filter is evaluated).
    pub fn attribute_writes(&self) -> u64 {
        self.attribute_writes.load(Ordering::SeqCst)
    }

    /// Starts loading the re-rank indexes' published files (pipelines with local features) on a
    /// thread and returns it: the files, the largest a verified search reads (about 2 GB at
    /// 100,000 `robust` rows), then load beside the query's decoding and featurizing instead of
    /// inside the first search. One after the other, as a search loads them: each load holds
    /// its file's mapping and its copy at once, so two at a time would raise the peak memory.
    pub fn preload(self: &Arc<Self>) -> Option<std::thread::JoinHandle<()>> {
        self.featurizer.local()?;
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("imgvec-preload".into())
            .spawn(move || me.rerank.preload(&me.store));
        // Without a thread nothing is loaded ahead: the first search loads them, as always.
        spawned
            .inspect_err(|e| tracing::debug!("preloading: no thread: {e}"))
            .ok()
    }

    /// The pipeline's whitening, once the pipeline is known and asks for one.
    fn reducer(&self) -> Option<Arc<Reducer>> {
        let mut guard = self.reducer.lock();
        if guard.is_none() {
            let spec = self.featurizer.whitening()?;
            *guard = Some(Arc::new(Reducer::new(
                &self.store,
                spec,
                self.index_opts.clone(),
            )));
        }
        guard.clone()
    }

    /// Whether the view fuses a VLAD of the local descriptors (queries then need theirs).
    pub fn has_vlad(&self) -> bool {
        self.reducer().is_some_and(|r| r.spec().vlad.is_some())
    }

    /// The space searches of `snap` run in (learning the whitening when it is due).
    pub fn space(&self, snap: Arc<Snapshot>) -> Result<Space> {
        if let Some(reducer) = self.reducer() {
            if let Some(view) = reducer.view(&self.store, &snap, Learn::WhenDue)? {
                // The stored vectors' own indexes are no longer searched: stop maintaining them.
                self.raw.set_dormant();
                return Ok(Space {
                    snapshot: view.snapshot,
                    indexes: view.indexes,
                    projection: Some(view.projection),
                });
            }
        }
        Ok(Space {
            snapshot: snap,
            indexes: self.raw.clone(),
            projection: None,
        })
    }

    /// Brings every space up to `snap` in the foreground: learns or relearns the whitening when
    /// due, extends the view and its indexes, then the stored vectors' indexes (dormant once a
    /// view exists), writing them as `save` says (`purge_all`: drop every deleted row now).
    pub fn refresh(&self, snap: &Arc<Snapshot>, save: Save, purge_all: bool) -> Result<()> {
        self.refresh_view(snap, Learn::WhenDue, save, purge_all)?;
        self.raw.refresh(&self.store, snap, save, purge_all)?;
        self.refresh_rerank(snap, save, purge_all)
    }

    /// The background worker's pass: keeps the view (once a whitening exists; learning one is
    /// left to the foreground, which decides on which rows) and every index set current, and
    /// saves them when due.
    pub fn maintain(&self, snap: &Arc<Snapshot>) -> Result<()> {
        self.refresh_view(snap, Learn::Never, Save::WhenDue, false)?;
        self.raw.refresh(&self.store, snap, Save::WhenDue, false)?;
        self.refresh_rerank(snap, Save::WhenDue, false)
    }

    /// The voting and dense-window indexes, for pipelines with local features.
    fn refresh_rerank(&self, snap: &Snapshot, save: Save, purge_all: bool) -> Result<()> {
        if self.featurizer.local().is_none() {
            return Ok(());
        }
        self.rerank.refresh(&self.store, snap, save, purge_all)
    }

    fn refresh_view(
        &self,
        snap: &Arc<Snapshot>,
        learn: Learn,
        save: Save,
        purge_all: bool,
    ) -> Result<()> {
        let Some(reducer) = self.reducer() else {
            return Ok(());
        };
        if let Some(view) = reducer.view(&self.store, snap, learn)? {
            self.raw.set_dormant();
            view.indexes
                .refresh(&self.store, &view.snapshot, save, purge_all)?;
            reducer.save(&self.store, save)?;
        }
        Ok(())
    }

    /// The whitening learned on this database, learning it first when it is due (nothing when
    /// the pipeline has none or the collection is still too small for one).
    pub fn learned(&self, snap: Arc<Snapshot>) -> Result<Option<Arc<Projection>>> {
        let Some(reducer) = self.reducer() else {
            return Ok(None);
        };
        reducer.view(&self.store, &snap, Learn::WhenDue)?;
        Ok(reducer.projection(&self.store)?)
    }

    /// Makes `projection` this (new, empty, frozen) database's whitening and publishes it.
    pub fn adopt(&self, projection: Arc<Projection>) -> Result<()> {
        if let Some(reducer) = self.reducer() {
            reducer.adopt(&self.store, projection)?;
        }
        Ok(())
    }

    /// The searched space's index set and the whitening, as published (loads them, learns or
    /// projects nothing): what `imgvec info` reports.
    pub fn info(&self) -> (IndexInfo, Option<WhiteningInfo>) {
        let indexes = match self.reducer().and_then(|r| r.loaded_indexes(&self.store)) {
            Some(whitened) => whitened.info(&self.store),
            None => self.raw.info(&self.store),
        };
        (indexes, self.reducer().and_then(|r| r.info()))
    }
}
