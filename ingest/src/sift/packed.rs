//! The on-disk format of local features (docs/FORMAT.md, "Packed local features"): what the
//! segments' `local` column holds per row, read zero-copy from the memory map.

use super::{Keypoint, LocalFeatures, DESCRIPTOR_LEN};

/// Packed local features: `LOCAL_MAGIC`, version, frame width and height (u16 each), keypoint
/// count (u32), then per keypoint 8 bytes of geometry (x and y in quarter pixels, u16; scale in
/// 1/32 px, u16; angle in 1/256 turns, u8; one zero byte), then per keypoint the 128 RootSIFT
/// values quantised to u8 (`round(v * QUANT)`, saturating at 255). 136 bytes a keypoint.
/// docs/FORMAT.md describes the same bytes.
pub const LOCAL_MAGIC: [u8; 2] = *b"IL";
pub const LOCAL_VERSION: u8 = 1;
const LOCAL_HEADER: usize = 12;
const GEOMETRY_BYTES: usize = 8;
/// Quantisation step of packed descriptors: RootSIFT values above 0.5 are rare (< 0.1%).
pub const QUANT: f32 = 512.0;

/// Packs features for storage (see `LOCAL_MAGIC`). Frames are at most 16383 px a side.
pub fn pack(f: &LocalFeatures) -> Vec<u8> {
    let n = f.len();
    let mut out = Vec::with_capacity(LOCAL_HEADER + n * (GEOMETRY_BYTES + DESCRIPTOR_LEN));
    out.extend_from_slice(&LOCAL_MAGIC);
    out.push(LOCAL_VERSION);
    out.push(0);
    out.extend_from_slice(&(f.width.min(u16::MAX as u32) as u16).to_le_bytes());
    out.extend_from_slice(&(f.height.min(u16::MAX as u32) as u16).to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    let q16 = |v: f32, step: f32| ((v * step).round().clamp(0.0, u16::MAX as f32)) as u16;
    for k in &f.keypoints {
        out.extend_from_slice(&q16(k.x, 4.0).to_le_bytes());
        out.extend_from_slice(&q16(k.y, 4.0).to_le_bytes());
        out.extend_from_slice(&q16(k.scale, 32.0).to_le_bytes());
        let turn = (k.angle / std::f32::consts::TAU * 256.0).round() as u32 % 256;
        out.push(turn as u8);
        out.push(0);
    }
    out.extend(
        f.descriptors
            .iter()
            .map(|v| (v * QUANT).round().clamp(0.0, 255.0) as u8),
    );
    out
}

/// How many keypoints a packed row of `len` bytes holds, read from its length alone (`None`
/// when no count fits; an empty row holds none).
pub fn keypoints_in(len: usize) -> Option<usize> {
    let per = GEOMETRY_BYTES + DESCRIPTOR_LEN;
    match len {
        0 => Some(0),
        _ if len >= LOCAL_HEADER && (len - LOCAL_HEADER).is_multiple_of(per) => {
            Some((len - LOCAL_HEADER) / per)
        }
        _ => None,
    }
}

/// A view of packed features, as stored (zero-copy over the mapped segment).
#[derive(Debug, Clone, Copy)]
pub struct PackedFeatures<'a> {
    pub width: u32,
    pub height: u32,
    geometry: &'a [u8],
    /// `len() * DESCRIPTOR_LEN` quantised values.
    pub descriptors: &'a [u8],
}

impl<'a> PackedFeatures<'a> {
    /// Reads the header; an empty slice (a row without local features) is `Ok(None)`.
    pub fn parse(bytes: &'a [u8]) -> Result<Option<PackedFeatures<'a>>, String> {
        if bytes.is_empty() {
            return Ok(None);
        }
        if bytes.len() < LOCAL_HEADER || bytes[..2] != LOCAL_MAGIC {
            return Err("not packed local features (bad magic)".into());
        }
        if bytes[2] != LOCAL_VERSION {
            return Err(format!("unsupported local-feature version {}", bytes[2]));
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]) as u32;
        let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let geometry_end = LOCAL_HEADER + n * GEOMETRY_BYTES;
        if bytes.len() != geometry_end + n * DESCRIPTOR_LEN {
            return Err(format!(
                "local features of {} bytes do not hold {n} keypoints",
                bytes.len()
            ));
        }
        Ok(Some(PackedFeatures {
            width: u16_at(4),
            height: u16_at(6),
            geometry: &bytes[LOCAL_HEADER..geometry_end],
            descriptors: &bytes[geometry_end..],
        }))
    }

    pub fn len(&self) -> usize {
        self.geometry.len() / GEOMETRY_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.geometry.is_empty()
    }

    /// Keypoint `i` (position, scale and angle; `response` is not stored and reads 0).
    pub fn keypoint(&self, i: usize) -> Keypoint {
        let g = &self.geometry[i * GEOMETRY_BYTES..(i + 1) * GEOMETRY_BYTES];
        let u = |j: usize| u16::from_le_bytes([g[j], g[j + 1]]) as f32;
        Keypoint {
            x: u(0) / 4.0,
            y: u(2) / 4.0,
            scale: u(4) / 32.0,
            angle: g[6] as f32 / 256.0 * std::f32::consts::TAU,
            response: 0.0,
        }
    }

    /// The descriptors back as floats (`len() * DESCRIPTOR_LEN`, close to unit L2).
    pub fn descriptors_f32(&self) -> Vec<f32> {
        self.descriptors.iter().map(|&v| v as f32 / QUANT).collect()
    }

    /// Unpacked, e.g. to search with a stored image's features.
    pub fn unpack(&self) -> LocalFeatures {
        LocalFeatures {
            width: self.width,
            height: self.height,
            keypoints: (0..self.len()).map(|i| self.keypoint(i)).collect(),
            descriptors: self.descriptors_f32(),
        }
    }
}
