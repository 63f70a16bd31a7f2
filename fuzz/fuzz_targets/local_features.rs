//! Any bytes read back as a row's packed local features give the features or an error: never a
//! panic, and accepted features are fully readable.
#![no_main]

use imgvec_ingest::sift::{PackedFeatures, DESCRIPTOR_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(p)) = PackedFeatures::parse(data) {
        assert_eq!(p.descriptors_f32().len(), p.len() * DESCRIPTOR_LEN);
        let f = p.unpack();
        assert_eq!(f.keypoints.len(), p.len());
        assert!(f
            .keypoints
            .iter()
            .all(|k| k.x.is_finite() && k.y.is_finite() && k.scale >= 0.0));
    }
});
