//! `imgvec-ingest` owns everything between a file and a feature vector: finding image files,
//! decoding and validating them as a person sees them (EXIF orientation, any pixel format to
//! 8-bit RGB, refusing decompression bombs), preprocessing to model input and thumbnails, and
//! the `Extractor` seam with its libtorch (TorchScript) implementation. It never touches storage
//! or search; the engine drives it.

pub mod blocks;
pub mod borders;
pub mod decode;
pub mod extractor;
pub mod files;
pub mod model_meta;
pub mod precision;
pub mod preprocess;
pub mod sift;
mod simd;

pub use blocks::{CnnBlock, FusedExtractor, FusionSpec, HandBlock, Handcrafted};
pub use decode::{decode, has_image_extension, DecodeError, DecodedImage};
pub use extractor::{
    l2_normalize_rows, rmac_regions, set_torch_threads, ExtractError, Extractor, Pooling,
    TorchScriptExtractor,
};
pub use files::{
    collect_files, content_hash, default_model_path, model_dir, read_image_file, FileList,
    MAX_FILE_BYTES,
};
pub use preprocess::{
    model_input, resize, scaled_to_long_side, thumbnail_jpeg, within_long_side, ModelInput,
};
