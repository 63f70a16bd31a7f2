//! The ingest crate's integration tests: pooling of real TorchScript feature maps, and our SIFT
//! against OpenCV's on warped real photos. One test binary, one module per area.

mod pooling;
mod sift_oracle;
