//! Any bytes given to the image decoder give an RGB image within the size limits or an error:
//! never a panic or an unbounded allocation.
#![no_main]

use imgvec_ingest::decode::{decode, MAX_SIDE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode(data) {
        let (w, h) = img.rgb.dimensions();
        assert!(w > 0 && h > 0 && w <= MAX_SIDE && h <= MAX_SIDE);
    }
});
