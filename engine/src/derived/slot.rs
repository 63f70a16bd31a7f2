//! One derived structure persisted as one file and shared by a handle's searches and its
//! background worker (the voting and dense-window indexes). Every handle, read-only ones
//! included, loads the published file on first use instead of rebuilding; a search appends
//! the rows above its watermark in memory; the writer's worker follows the whole [`lifecycle`]
//! (catch up, purge, rebuild at growth) and publishes a new generation when enough changed.
//! A rebuild runs outside the lock, so searches keep using the old structure meanwhile.
//!
//! [`lifecycle`]: super::lifecycle

use std::sync::atomic::{AtomicU64, Ordering};

use imgvec_storage::{OpenMode, Snapshot, Store};
use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use serde::{Deserialize, Serialize};

use super::artifact::{self, Body, Kind};
use super::lifecycle::{plan, Collection, Derived, Plan};
use super::publish::{Manifest, Publisher};
use crate::error::{IndexError, Result};
use crate::index::{Save, INDEX_DIR};

/// What a [`Slot`] asks of a structure it keeps besides making and serialising it: purging, and
/// what the file it was read from says of it (both re-rank indexes have it from `KnnRows`).
pub(crate) trait Kept {
    /// Whether [`Kept::purge`] works in place (else purging means rebuilding, done only once
    /// deleted rows pass the lifecycle's share: until then searches filter them).
    fn purges_in_place(&self) -> bool;
    /// Drops the rows `snap` no longer holds.
    fn purge(&mut self, snap: &Snapshot) -> Result<()>;
    /// Whether its bulk is used where it lies in the mapped file (not copied into memory).
    fn in_place(&self) -> bool;
    /// Whether it was read from an older layout that a writer rewrites in the current one.
    fn outdated(&self) -> bool;
    /// Whether a use found its file damaged (that use failed): it is rebuilt, not used again.
    fn damaged(&self) -> bool;
}

/// A structure a [`Slot`] keeps.
pub(crate) trait Persisted: Derived + Kept + Sized {
    const KIND: Kind;
    /// Its folder under `indexes/`, its file stem and its meta key.
    const NAME: &'static str;
    /// Made anew from every live row of `snap`.
    fn build(store: &Store, snap: &Snapshot) -> Result<Self>;
    /// Appends the live rows of `snap` above the watermark; returns the rows added.
    fn catch_up(&mut self, store: &Store, snap: &Snapshot) -> Result<usize>;
    fn to_bytes(&self) -> std::result::Result<Vec<u8>, IndexError>;
    /// Reads what `to_bytes` wrote, from the file's mapped body (which it may keep).
    fn from_body(body: Body) -> std::result::Result<Self, IndexError>;
}

/// What a handle holds of one persisted structure (`imgvec info`, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DerivedStatus {
    /// Times this handle built it from scratch instead of loading the published file.
    pub builds: u64,
    /// Rows it covers (deleted ones not yet purged included), once loaded or built.
    pub rows: Option<usize>,
    /// Highest row id it covers, once loaded or built.
    pub watermark: Option<u64>,
    /// Bytes of its published file.
    pub bytes_on_disk: u64,
    /// Whether it is searched where it lies in the mapped file, not in a copy.
    pub in_place: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Published {
    generation: u64,
    file: Option<String>,
}

impl Manifest for Published {
    fn files(&self) -> Vec<&str> {
        self.file.iter().map(String::as_str).collect()
    }
}

struct State<T> {
    value: Option<T>,
    loaded: bool,
    published: Published,
    /// Rows appended since the file was written.
    unsaved_rows: usize,
    /// Built or purged since the file was written.
    changed: bool,
}

pub(crate) struct Slot<T> {
    publisher: Publisher,
    state: RwLock<State<T>>,
    /// Held by the one rebuild in progress.
    rebuilding: Mutex<()>,
    /// Structures this handle built from scratch (not loaded).
    builds: AtomicU64,
}

impl<T: Persisted> Slot<T> {
    pub fn new(store: &Store) -> Slot<T> {
        Slot {
            publisher: Publisher::new(
                store.vfs().clone(),
                store.dir().join(INDEX_DIR).join(T::NAME),
                format!("derived:{}", T::NAME),
            ),
            state: RwLock::new(State {
                value: None,
                loaded: false,
                published: Published::default(),
                unsaved_rows: 0,
                changed: false,
            }),
            rebuilding: Mutex::new(()),
            builds: AtomicU64::new(0),
        }
    }

    /// What this handle holds (loads nothing).
    pub fn status(&self) -> DerivedStatus {
        let st = self.state.read();
        DerivedStatus {
            builds: self.builds.load(Ordering::Relaxed),
            rows: st.value.as_ref().map(|v| v.rows()),
            watermark: st.value.as_ref().map(|v| v.watermark()),
            bytes_on_disk: self.publisher.bytes_on_disk(),
            in_place: st.value.as_ref().is_some_and(|v| v.in_place()),
        }
    }

    /// Loads the published file once (a damaged or missing one is logged and rebuilt); a writer
    /// sweeps what no publication names.
    fn load_once(&self, st: &mut State<T>, store: &Store) {
        if std::mem::replace(&mut st.loaded, true) {
            return;
        }
        let published: Option<Published> = self.publisher.load(store);
        if let Some(p) = published {
            if let Some(file) = &p.file {
                let path = self.publisher.path(file);
                // A structure used in place checks its own parts as they are read; any other
                // is checked whole (the file's CRC) before it is used.
                let read = artifact::read_body_unchecked(&path, T::KIND).and_then(|body| {
                    let file = body.clone();
                    let v = T::from_body(body)?;
                    if !v.in_place() {
                        // Once per file: a part read by FAISS checked it already.
                        file.check_whole().map_err(IndexError::Damaged)?;
                    }
                    Ok(v)
                });
                let read =
                    read.map_err(|e| IndexError::Invalid(format!("{}: {e}", path.display())));
                match read {
                    Ok(v) => {
                        // A writer's next refresh saves it in the current layout.
                        st.changed = v.outdated();
                        st.value = Some(v);
                    }
                    Err(e) => tracing::warn!("{e}; {} will be rebuilt", T::NAME),
                }
            }
            st.published = p;
        }
        self.publisher.sweep_unpublished(store, Some(&st.published));
    }

    fn build(&self, store: &Store, snap: &Snapshot) -> Result<T> {
        self.builds.fetch_add(1, Ordering::Relaxed);
        T::build(store, snap)
    }

    /// Loads the published file now if this handle has not yet, as a search's first use would
    /// (without building or catching up, which stay with that use): run on another thread, it
    /// moves the load off the search's path. A search that needs the structure meanwhile waits
    /// for the load.
    pub fn preload(&self, store: &Store) {
        let mut st = self.state.write();
        self.load_once(&mut st, store);
    }

    /// Runs `f` on the structure brought up to `snap` for a search: loaded (or built, when
    /// there is none) and caught up with the rows above its watermark. Purging and retraining
    /// are left to [`Slot::refresh`]; deleted rows are the caller's to filter. When `f` found
    /// the loaded file damaged (a part failing its checksum as it was read), the structure is
    /// dropped, rebuilt from the rows, and `f` runs again.
    pub fn with<R>(&self, store: &Store, snap: &Snapshot, f: impl Fn(&T) -> R) -> Result<R> {
        let r = self.with_once(store, snap, &f);
        if self.drop_damaged() {
            return self.with_once(store, snap, &f);
        }
        r
    }

    /// Drops the structure if a use found its file damaged; returns whether it did.
    fn drop_damaged(&self) -> bool {
        if !self
            .state
            .read()
            .value
            .as_ref()
            .is_some_and(|v| v.damaged())
        {
            return false;
        }
        let mut st = self.state.write();
        if st.value.as_ref().is_some_and(|v| v.damaged()) {
            tracing::warn!(
                "{}: the published file is damaged; it will be rebuilt",
                T::NAME
            );
            st.value = None;
        }
        true
    }

    fn with_once<R>(&self, store: &Store, snap: &Snapshot, f: &impl Fn(&T) -> R) -> Result<R> {
        {
            let st = self.state.read();
            if let Some(v) = st.value.as_ref().filter(|v| v.watermark() >= snap.max_id()) {
                return Ok(f(v));
            }
        }
        let mut st = self.state.write();
        self.load_once(&mut st, store);
        match st.value.as_mut() {
            None => {
                st.value = Some(self.build(store, snap)?);
                st.changed = true;
            }
            // Rows a newer snapshot added are not this one's: its liveness check filters them.
            Some(v) if v.watermark() < snap.max_id() => {
                let above = v.watermark();
                let added = v.catch_up(store, snap)?;
                tracing::debug!(
                    "{}: caught up {added} rows above {above} in memory",
                    T::NAME
                );
                st.unsaved_rows += added;
            }
            Some(_) => {}
        }
        let st = RwLockWriteGuard::downgrade(st);
        Ok(f(st.value.as_ref().expect("made above")))
    }

    /// Brings the structure up to `snap` by the lifecycle (`purge_all`: drop every deleted row
    /// now) and, for writers, writes it as `save` says.
    pub fn refresh(
        &self,
        store: &Store,
        snap: &Snapshot,
        save: Save,
        purge_all: bool,
    ) -> Result<()> {
        let _one_builder = self.rebuilding.lock();
        self.drop_damaged();
        let due = {
            let mut st = self.state.write();
            self.load_once(&mut st, store);
            match st.value.as_ref() {
                None => Plan::Rebuild,
                Some(v) if v.watermark() > snap.max_id() => Plan::Nothing,
                Some(v) => {
                    let c = Collection::of(snap, v.watermark());
                    match plan(v, c, purge_all) {
                        Plan::Purge if !v.purges_in_place() => {
                            if plan(v, c, false) == Plan::Purge {
                                Plan::Rebuild
                            } else {
                                Plan::Nothing
                            }
                        }
                        p => p,
                    }
                }
            }
        };
        if due == Plan::Rebuild {
            // Built without the lock: searches go on with the structure there is.
            let fresh = self.build(store, snap)?;
            let mut st = self.state.write();
            st.value = Some(fresh);
            st.changed = true;
        }
        let mut st = self.state.write();
        if let Some(v) = st.value.as_mut() {
            if due == Plan::Purge {
                v.purge(snap)?;
                st.changed = true;
            }
        }
        if let Some(v) = st.value.as_mut() {
            if v.watermark() < snap.max_id() {
                let caught_up = v.catch_up(store, snap);
                if v.damaged() {
                    // Rebuilt by the next refresh or search.
                    st.value = None;
                }
                st.unsaved_rows += caught_up?;
            }
        }
        if save == Save::Never || store.mode() != OpenMode::ReadWrite {
            return Ok(());
        }
        let rows = st.value.as_ref().map_or(0, |v| v.rows());
        let due = st.changed
            || st.unsaved_rows >= 1024.max(rows / 10)
            || (save == Save::Unsaved && st.unsaved_rows > 0);
        if due {
            self.save(&mut st, store)?;
        }
        Ok(())
    }

    fn save(&self, st: &mut State<T>, store: &Store) -> Result<()> {
        let Some(v) = st.value.as_ref() else {
            return Ok(());
        };
        self.publisher.prepare()?;
        let generation = st.published.generation + 1;
        let name = Publisher::file_name(T::NAME, generation, "idx");
        self.publisher.write(&name, T::KIND, &v.to_bytes()?)?;
        let next = Published {
            generation,
            file: Some(name),
        };
        self.publisher.publish(store, &next)?;
        st.published = next;
        st.unsaved_rows = 0;
        st.changed = false;
        Ok(())
    }
}
