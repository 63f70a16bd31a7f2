//! Any bytes as an image record (the `images` column family) and as the pipeline record
//! (`meta:pipeline`): parsed or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imgvec::fuzzing::record(data);
    imgvec::fuzzing::pipeline(data);
});
