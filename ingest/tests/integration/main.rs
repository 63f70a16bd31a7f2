//! The ingest crate's integration tests: pooling of real TorchScript feature maps, the models'
//! bfloat16 forward against their float32 one, and our SIFT against OpenCV's on warped real
//! photos. One test binary, one module per area.

mod pooling;
mod precision;
mod sift_oracle;
