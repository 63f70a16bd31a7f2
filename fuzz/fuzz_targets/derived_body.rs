//! Any bytes as the body of a derived file (its first byte picks the kind: IVF-PQ, Hamming,
//! binary IVF, whitening, VLAD, voting, dense windows, whitened view), parsed as the loaders
//! parse a file whose frame and CRC matched, and an accepted structure searched once: an error
//! or a working structure, never a panic or an abort.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&kind, body)) = data.split_first() {
        imgvec::fuzzing::derived_body(kind, body);
    }
});
