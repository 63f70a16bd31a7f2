//! Derived data: everything a database computes from its stored rows and can recompute — the
//! ANN index sets, the whitening and VLAD of the whitened view, the voting and dense-window
//! indexes. All of it shares one lifecycle ([`lifecycle`]: watermark, catch-up, retrain at
//! growth, purge at deletes), one file format ([`artifact`]: header, body, CRC footer, written
//! atomically) and one publication mechanism ([`publish`]: a synced meta key naming the
//! generation's files; unnamed files are swept). A missing or damaged file is rebuilt from the
//! segments, never trusted.

pub(crate) mod artifact;
pub(crate) mod lifecycle;
pub(crate) mod publish;
pub(crate) mod slot;
pub(crate) mod view_file;
