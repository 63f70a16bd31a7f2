//! The engine's integration tests on the real stack (RocksDB, libtorch, FAISS, the default
//! model) and real photos: one test binary, one module per area.

mod api;
mod borders;
mod calibration;
mod indexes;
mod local;
mod parsers;
mod power_cut;
mod presets;
mod upright;
