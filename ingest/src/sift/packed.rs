//! The on-disk format of local features (docs/FORMAT.md, "Packed local features"): what the
//! segments' `local` column holds per row, read zero-copy from the memory map.

use super::{Keypoint, LocalFeatures, DESCRIPTOR_LEN};

/// Packed local features: `LOCAL_MAGIC`, version, frame width and height (u16 each), keypoint
/// count (u32), then per keypoint 8 bytes of geometry (x and y in quarter pixels, u16; scale in
/// 1/32 px, u16; angle in 1/256 turns, u8; one zero byte), then the descriptors.
///
/// - Version 2 (written now): four more zero header bytes, then each descriptor as 128 RootSIFT
///   levels of 4 bits (`round(v * QUANT4)`, saturating at 15), two a byte, the even index in the
///   low nibble. 72 bytes a keypoint. The longer header keeps the two versions' row lengths
///   apart (see `keypoints_in`), so a keypoint count is read from a length alone.
/// - Version 1 (read only): 128 levels of 8 bits (`round(v * QUANT)`, saturating at 255).
///   136 bytes a keypoint.
///
/// docs/FORMAT.md describes the same bytes.
pub const LOCAL_MAGIC: [u8; 2] = *b"IL";
/// The version `pack` writes.
pub const LOCAL_VERSION: u8 = 2;
const GEOMETRY_BYTES: usize = 8;
/// Quantisation step of version-1 descriptors: RootSIFT values above 0.5 are rare (< 0.1%).
pub const QUANT: f32 = 512.0;
/// Quantisation step of version-2 descriptors: 16 levels over [0, 0.375]. Measured on
/// instances-dev and holidays-dev with `robust`: the same recall@1 as 8 bits (docs/FORMAT.md).
pub const QUANT4: f32 = 40.0;

/// The two stored codings of descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    /// Version 1: a byte a value.
    U8,
    /// Version 2: four bits a value.
    U4,
}

/// The coding `pack` writes: the one of `LOCAL_VERSION` (checked when compiling).
const WRITTEN: Coding = match Coding::of(LOCAL_VERSION) {
    Some(c) => c,
    None => panic!("LOCAL_VERSION has no coding"),
};

impl Coding {
    const fn of(version: u8) -> Option<Coding> {
        match version {
            1 => Some(Coding::U8),
            2 => Some(Coding::U4),
            _ => None,
        }
    }

    fn header(self) -> usize {
        match self {
            Coding::U8 => 12,
            Coding::U4 => 16,
        }
    }

    fn descriptor_bytes(self) -> usize {
        match self {
            Coding::U8 => DESCRIPTOR_LEN,
            Coding::U4 => DESCRIPTOR_LEN / 2,
        }
    }

    fn keypoint_bytes(self) -> usize {
        GEOMETRY_BYTES + self.descriptor_bytes()
    }

    /// Keypoints in a row of `len` bytes of this coding, if `len` fits one.
    fn keypoints_in(self, len: usize) -> Option<usize> {
        let (head, per) = (self.header(), self.keypoint_bytes());
        (len >= head && (len - head).is_multiple_of(per)).then(|| (len - head) / per)
    }

    /// Appends the bytes of descriptor values (whole descriptors), the inverse of `decode`.
    fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        match self {
            Coding::U8 => out.extend(
                values
                    .iter()
                    .map(|v| (v * QUANT).round().clamp(0.0, 255.0) as u8),
            ),
            Coding::U4 => {
                let level = |v: f32| (v * QUANT4).round().clamp(0.0, 15.0) as u8;
                out.extend(
                    values
                        .chunks_exact(2)
                        .map(|pair| level(pair[0]) | (level(pair[1]) << 4)),
                )
            }
        }
    }

    /// Appends one descriptor's values, decoded from its bytes.
    fn decode(self, bytes: &[u8], out: &mut Vec<f32>) {
        match self {
            Coding::U8 => out.extend(bytes.iter().map(|&v| v as f32 / QUANT)),
            Coding::U4 => out.extend(
                bytes
                    .iter()
                    .flat_map(|&b| [(b & 15) as f32 / QUANT4, (b >> 4) as f32 / QUANT4]),
            ),
        }
    }
}

/// Packs features for storage in the current version (see `LOCAL_MAGIC`). Frames are at most
/// 16383 px a side.
pub fn pack(f: &LocalFeatures) -> Vec<u8> {
    let n = f.len();
    let coding = WRITTEN;
    let mut out = Vec::with_capacity(coding.header() + n * coding.keypoint_bytes());
    out.extend_from_slice(&LOCAL_MAGIC);
    out.push(LOCAL_VERSION);
    out.push(0);
    out.extend_from_slice(&(f.width.min(u16::MAX as u32) as u16).to_le_bytes());
    out.extend_from_slice(&(f.height.min(u16::MAX as u32) as u16).to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    // Version 2's header ends in zero bytes.
    out.resize(coding.header(), 0);
    let q16 = |v: f32, step: f32| ((v * step).round().clamp(0.0, u16::MAX as f32)) as u16;
    for k in &f.keypoints {
        out.extend_from_slice(&q16(k.x, 4.0).to_le_bytes());
        out.extend_from_slice(&q16(k.y, 4.0).to_le_bytes());
        out.extend_from_slice(&q16(k.scale, 32.0).to_le_bytes());
        let turn = (k.angle / std::f32::consts::TAU * 256.0).round() as u32 % 256;
        out.push(turn as u8);
        out.push(0);
    }
    coding.encode(&f.descriptors, &mut out);
    out
}

/// How many keypoints a packed row of `len` bytes holds, read from its length alone (`None`
/// when no count fits; an empty row holds none). The versions cannot be confused: a version-2
/// length minus 12 is `4 + 72·n`, 4 modulo 8, while a version-1 length minus 12 is `136·m`,
/// 0 modulo 8.
pub fn keypoints_in(len: usize) -> Option<usize> {
    match len {
        0 => Some(0),
        _ => Coding::U4
            .keypoints_in(len)
            .or_else(|| Coding::U8.keypoints_in(len)),
    }
}

/// A view of packed features, as stored (zero-copy over the mapped segment).
#[derive(Debug, Clone, Copy)]
pub struct PackedFeatures<'a> {
    pub width: u32,
    pub height: u32,
    coding: Coding,
    geometry: &'a [u8],
    /// `len()` coded descriptors.
    descriptors: &'a [u8],
}

impl<'a> PackedFeatures<'a> {
    /// Reads the header; an empty slice (a row without local features) is `Ok(None)`.
    pub fn parse(bytes: &'a [u8]) -> Result<Option<PackedFeatures<'a>>, String> {
        if bytes.is_empty() {
            return Ok(None);
        }
        // Every version's header holds the fields read below; version 1's is the shortest.
        if bytes.len() < Coding::U8.header() || bytes[..2] != LOCAL_MAGIC {
            return Err("not packed local features (bad magic)".into());
        }
        let coding = Coding::of(bytes[2])
            .ok_or_else(|| format!("unsupported local-feature version {}", bytes[2]))?;
        let head = coding.header();
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]) as u32;
        let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        if coding.keypoints_in(bytes.len()) != Some(n) {
            return Err(format!(
                "local features of {} bytes do not hold {n} keypoints",
                bytes.len()
            ));
        }
        let geometry_end = head + n * GEOMETRY_BYTES;
        Ok(Some(PackedFeatures {
            width: u16_at(4),
            height: u16_at(6),
            coding,
            geometry: &bytes[head..geometry_end],
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

    /// The first `n` descriptors (at most `len()`) back as floats, `DESCRIPTOR_LEN` values
    /// each, close to unit L2.
    pub fn first_descriptors_f32(&self, n: usize) -> Vec<f32> {
        let n = n.min(self.len());
        let mut out = Vec::with_capacity(n * DESCRIPTOR_LEN);
        for i in 0..n {
            self.push_descriptor(i, &mut out);
        }
        out
    }

    /// Every descriptor back as floats (`len() * DESCRIPTOR_LEN` values).
    pub fn descriptors_f32(&self) -> Vec<f32> {
        self.first_descriptors_f32(self.len())
    }

    /// Appends descriptor `i` as floats to `out`.
    pub fn push_descriptor(&self, i: usize, out: &mut Vec<f32>) {
        let per = self.coding.descriptor_bytes();
        self.coding
            .decode(&self.descriptors[i * per..(i + 1) * per], out);
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
