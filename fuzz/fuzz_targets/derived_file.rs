//! Any bytes as a whole derived file (magic, kind, version, length, CRC): refused unless the
//! frame is whole, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((kind, body)) = imgvec::fuzzing::split_derived(data) {
        imgvec::fuzzing::derived_body(kind, body);
    }
});
