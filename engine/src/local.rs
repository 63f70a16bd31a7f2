//! Local features at search time: candidates found by descriptor-level voting over every
//! stored keypoint, and spatial verification of a shortlist (the `robust` preset).
//!
//! - **Voting** ([`LocalIndex`]): the stored RootSIFT descriptors of live rows (each image's
//!   strongest [`VOTING_STORED`]) in one FAISS index keyed by row id (exact below 20,000
//!   descriptors, IVF-PQ with 16-byte codes beyond), persisted under `indexes/voting/`, loaded
//!   by every handle and kept current by the writer's worker. Each query descriptor's nearest
//!   stored descriptors vote for their images (best similarity per image), votes normalised by
//!   √(descriptors indexed for the image).
//!   This finds images that the global descriptor ranks low (crops, occlusion).
//! - **Verification** ([`verify`]): query and candidate descriptors are matched with one matrix
//!   product (BLAS), Lowe's ratio test, then made one-to-one (each candidate keypoint keeps its
//!   best query keypoint, so RANSAC cannot fit a collapsed model to many-to-one matches). Every
//!   match proposes a similarity transform from its two keypoints' positions, scales and
//!   orientations (deterministic, no sampling); the best is refined by affine least squares on
//!   its inliers. The inlier count (within `inlier_px` in the candidate's frame) is the result.
//! - **Ranking**: `search::ranking` (a pure function; docs/SEARCH.md).

use std::collections::HashMap;

use imgvec_ingest::sift::{LocalFeatures, PackedFeatures, SiftParams, DESCRIPTOR_LEN};
use imgvec_storage::{Snapshot, Store};
use serde::{Deserialize, Serialize};

use crate::derived::artifact::{Body, Kind};
use crate::error::{Error, IndexError, Result};
use crate::exact;
use crate::index::knn::{knn_lists, Knn, KnnShape, EXACT_FACTORY};
use crate::index::rows::KnnRows;

/// Local features a pipeline stores per image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocalSpec {
    pub sift: SiftParams,
}

/// Stored local features, for `imgvec info`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LocalInfo {
    /// Live rows that have local features.
    pub images: u64,
    pub keypoints: u64,
    /// Bytes of packed local features of those rows (in segments and pending rows).
    pub bytes: u64,
    /// The voting and dense-window indexes as this handle holds them (nothing is loaded to
    /// report them: `rows` and `watermark` are known after a verified search).
    pub indexes: crate::search::RerankStatus,
}

/// How search verifies candidates with local features.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VerifyParams {
    /// Top results of the global ranking that are verified (0: no verification).
    pub shortlist: usize,
    /// Images found by descriptor voting that are verified too.
    pub voted: usize,
    /// Inliers a candidate needs to count as verified.
    pub min_inliers: usize,
    /// Reprojection tolerance, in pixels of the stored image's SIFT frame.
    pub inlier_px: f32,
    /// Lowe's ratio test on descriptor distances.
    pub ratio: f32,
    /// Share of the query a candidate must cover to take precedence over the global ranking
    /// (see [`Verification::coverage`]): an image pasted over part of the query (occlusion by
    /// another picture) verifies, but does not outrank the image it covers.
    #[serde(default = "default_min_coverage")]
    pub min_coverage: f32,
    /// Inliers that unrelated images reach by chance: a candidate below `min_inliers` (but with
    /// the coverage) gets the ranking bonus of its inliers beyond these, without precedence.
    #[serde(default = "default_chance_inliers")]
    pub chance_inliers: usize,
    /// Images found by dense-window search that are verified too (see `dense`; 0: no dense
    /// alignment).
    #[serde(default = "default_dense")]
    pub dense: usize,
    /// A candidate SIFT did not verify gains `alignment_weight × (alignment − floor)` in rank
    /// when its dense alignment (normalised cross-correlation) is above the floor.
    #[serde(default = "default_alignment_floor")]
    pub alignment_floor: f32,
    #[serde(default = "default_alignment_weight")]
    pub alignment_weight: f32,
    /// Verified query expansion: the query is searched again with its best `expand` verified
    /// results added to it, and the results it did not verify are ranked by their cosine with
    /// that expanded query (0: off).
    #[serde(default = "default_expand")]
    pub expand: usize,
    /// Upright fallback: an image query none of whose results verified is searched again with
    /// its quarter, half and three-quarter turns as well (`search::upright`).
    #[serde(default = "default_upright")]
    pub upright: bool,
}

/// Measured (docs/SEARCH.md): holidays-dev, whose sideways photos are stored turned.
fn default_upright() -> bool {
    true
}

/// Measured (docs/SEARCH.md): holidays-dev mAP@10 0.898 → 0.902 with 3, instances-dev unchanged.
fn default_expand() -> usize {
    3
}

fn default_dense() -> usize {
    30
}

/// Measured on instances-dev and holidays-dev together (docs/SEARCH.md, "Ranking"): unrelated
/// real photos with smooth skies or dark foregrounds align at 0.90–0.96, the degraded copies
/// alignment exists for at 0.96–0.995. Databases made before keep the floor 0.9 and weight 7
/// they recorded.
fn default_alignment_floor() -> f32 {
    0.94
}

fn default_alignment_weight() -> f32 {
    14.0
}

/// Measured on five benchmarks (docs/SEARCH.md, "Ranking"): real photos of one scene from
/// another viewpoint, and reverse crops, match over a third of the query; pasted occluders over
/// a fifth to two fifths. Databases made before keep the 0.5 they recorded.
fn default_min_coverage() -> f32 {
    0.25
}

fn default_chance_inliers() -> usize {
    4
}

impl Default for VerifyParams {
    fn default() -> Self {
        VerifyParams {
            shortlist: 30,
            voted: 30,
            min_inliers: 8,
            inlier_px: 8.0,
            ratio: 0.8,
            min_coverage: default_min_coverage(),
            chance_inliers: default_chance_inliers(),
            dense: default_dense(),
            alignment_floor: default_alignment_floor(),
            alignment_weight: default_alignment_weight(),
            expand: default_expand(),
            upright: default_upright(),
        }
    }
}

/// Nearest stored descriptors asked per query descriptor when voting.
const VOTE_NEIGHBOURS: usize = 5;
/// Query descriptors that vote: the strongest keypoints (SIFT lists them strongest first).
const VOTING_DESCRIPTORS: usize = 500;
/// Descriptors of each stored image that are indexed for voting: its strongest.
const VOTING_STORED: usize = 1000;
/// The voting index: exact below 20,000 descriptors, then IVF-PQ with 16-byte codes (24 bytes
/// a descriptor with its id, against 512 + 8 as floats).
const VOTING_SHAPE: KnnShape = KnnShape {
    dims: DESCRIPTOR_LEN,
    exact_below: 20_000,
    code_bytes: 16,
    max_lists: 2048,
};
const IVF_NPROBE: usize = 8;
/// Training descriptors: 40 a list, and enough for the PQ codebooks.
const TRAIN_PER_LIST: usize = 40;
const MIN_TRAIN: usize = 32_768;

/// The stored descriptors of the rows offered so far, for voting (record per row: its indexed
/// descriptors, 0 without local features): a persisted derived structure (`derived::slot`),
/// loaded by every handle and kept current by the writer.
pub type LocalIndex = KnnRows<u32>;

/// A row's indexed descriptors (its strongest `VOTING_STORED`), as floats.
fn voting_descriptors(p: &PackedFeatures) -> Vec<f32> {
    p.first_descriptors_f32(VOTING_STORED)
}

impl KnnRows<u32> {
    /// Builds the index over every live row of `snap` that has local features.
    pub fn build(snap: &Snapshot) -> Result<LocalIndex> {
        let rows = snap.local_rows_above(0)?;
        fn parsed(bytes: &[u8]) -> Option<PackedFeatures<'_>> {
            PackedFeatures::parse(bytes).ok().flatten()
        }
        let total: usize = rows
            .iter()
            .filter_map(|(_, b)| parsed(b))
            .map(|p| p.len().min(VOTING_STORED))
            .sum();
        let factory = VOTING_SHAPE.factory(total);
        let mut sample = Vec::new();
        if factory != EXACT_FACTORY {
            // An even sample of the descriptors (only the picked ones are converted to floats).
            let want = (knn_lists(&factory) * TRAIN_PER_LIST).max(MIN_TRAIN);
            let step = (total / want).max(1);
            let mut seen = 0usize;
            for p in rows.iter().filter_map(|(_, b)| parsed(b)) {
                for i in 0..p.len().min(VOTING_STORED) {
                    if seen.is_multiple_of(step) {
                        p.push_descriptor(i, &mut sample);
                    }
                    seen += 1;
                }
            }
        }
        let knn = Knn::train(DESCRIPTOR_LEN, &factory, &sample)?;
        let mut out = LocalIndex::new(knn, &VOTING_SHAPE, rows.len());
        out.add_rows(&rows)?;
        out.watermark = snap.max_id();
        Ok(out)
    }

    /// Adds the rows of `snap` above the watermark; returns the rows added.
    pub fn catch_up(&mut self, snap: &Snapshot) -> Result<usize> {
        let max = snap.max_id();
        if max <= self.watermark {
            return Ok(0);
        }
        let rows = snap.local_rows_above(self.watermark)?;
        self.add_rows(&rows)?;
        self.watermark = max;
        Ok(rows.len())
    }

    fn add_rows(&mut self, rows: &[(u64, &[u8])]) -> Result<()> {
        let mut data = Vec::new();
        let mut ids = Vec::new();
        for (id, bytes) in rows {
            let p = PackedFeatures::parse(bytes)
                .map_err(|e| Error::Invalid(format!("row {id}: stored local features: {e}")))?;
            let d = p.map(|p| voting_descriptors(&p)).unwrap_or_default();
            let n = d.len() / DESCRIPTOR_LEN;
            ids.extend(std::iter::repeat_n(*id, n));
            data.extend(d);
            self.rows.insert(*id, n as u32);
            if ids.len() >= crate::derived::lifecycle::ADD_CHUNK {
                self.knn.add(&ids, &data)?;
                ids.clear();
                data.clear();
            }
        }
        self.knn.add(&ids, &data)?;
        Ok(())
    }

    /// Descriptors stored.
    pub fn len(&self) -> usize {
        self.knn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images voted for by the query's descriptors, best first: each query descriptor gives
    /// each image among its nearest stored descriptors that descriptor's similarity; an
    /// image's total is divided by √(its keypoints). `accept` filters rows (deleted, filters).
    pub fn vote(
        &self,
        query: &[f32],
        top: usize,
        accept: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<(u64, f32)>> {
        let nq = (query.len() / DESCRIPTOR_LEN).min(VOTING_DESCRIPTORS);
        if nq == 0 || self.is_empty() || top == 0 {
            return Ok(Vec::new());
        }
        let k = VOTE_NEIGHBOURS.min(self.len());
        let found = self
            .knn
            .search(&query[..nq * DESCRIPTOR_LEN], k, IVF_NPROBE)?;
        let mut votes: HashMap<u64, f32> = HashMap::new();
        let mut best: Vec<(u64, f32)> = Vec::with_capacity(k);
        for neighbours in found.chunks_exact(k) {
            best.clear();
            for &(owner, sim) in neighbours.iter().flatten() {
                match best.iter_mut().find(|(o, _)| *o == owner) {
                    Some(b) => b.1 = b.1.max(sim),
                    None => best.push((owner, sim)),
                }
            }
            for &(owner, sim) in &best {
                *votes.entry(owner).or_default() += sim.max(0.0);
            }
        }
        let mut ranked: Vec<(u64, f32)> = votes
            .into_iter()
            .filter(|(id, _)| accept(*id))
            .map(|(id, v)| {
                let n = self.rows.get(&id).copied().unwrap_or(1).max(1);
                (id, v / (n as f32).sqrt())
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(top);
        Ok(ranked)
    }
}

impl crate::derived::slot::Persisted for LocalIndex {
    const KIND: Kind = Kind::Voting;
    const NAME: &'static str = "voting";

    fn build(_: &Store, snap: &Snapshot) -> Result<Self> {
        LocalIndex::build(snap)
    }

    fn catch_up(&mut self, _: &Store, snap: &Snapshot) -> Result<usize> {
        LocalIndex::catch_up(self, snap)
    }

    /// The common layout (`index::rows`) with each row's descriptor count (u32).
    fn to_bytes(&self) -> std::result::Result<Vec<u8>, IndexError> {
        KnnRows::encode(self, |n, out| out.extend_from_slice(&n.to_le_bytes()))
    }

    fn from_body(body: Body) -> std::result::Result<Self, IndexError> {
        KnnRows::decode(&body, DESCRIPTOR_LEN, |r| r.u32())
    }
}

/// Images, keypoints and bytes of the live rows' stored local features, from their lengths
/// alone (no feature byte is read).
pub fn stats(snap: &Snapshot) -> LocalInfo {
    let mut info = LocalInfo::default();
    let lens = snap.live_rows_above(
        0,
        |seg, row| Ok(Some(seg.local_len(row))),
        |chunk, row| Some(chunk.local(row).len()),
    );
    for (_, len) in lens.unwrap_or_default() {
        if let Some(n @ 1..) = imgvec_ingest::sift::keypoints_in(len) {
            info.images += 1;
            info.keypoints += n as u64;
            info.bytes += len as u64;
        }
    }
    info
}

/// Tentative correspondences: (query keypoint, candidate keypoint).
fn ratio_matches(query: &LocalFeatures, cand: &PackedFeatures, ratio: f32) -> Vec<(usize, usize)> {
    let (nq, nc) = (query.len(), cand.len());
    if nq == 0 || nc < 2 {
        return Vec::new();
    }
    // On this search thread: verification examines candidates on several (exact.rs).
    let mut sims = vec![0f32; nq * nc];
    let cand = cand.descriptors_f32();
    exact::matmul_nt_here(&query.descriptors, nq, &cand, nc, DESCRIPTOR_LEN, &mut sims);
    // Each candidate keypoint keeps only its most similar query keypoint (one-to-one).
    let mut taken: HashMap<usize, (usize, f32)> = HashMap::new();
    let ratio2 = ratio * ratio;
    for (qi, row) in sims.chunks_exact(nc).enumerate() {
        let (mut best, mut second, mut arg) = (f32::MIN, f32::MIN, 0);
        for (j, &s) in row.iter().enumerate() {
            if s > best {
                (second, best, arg) = (best, s, j);
            } else if s > second {
                second = s;
            }
        }
        // Squared distances of (near) unit vectors: d² = 2 − 2s.
        let (d1, d2) = ((2.0 - 2.0 * best).max(0.0), (2.0 - 2.0 * second).max(0.0));
        if d1 < ratio2 * d2 {
            let e = taken.entry(arg).or_insert((qi, best));
            if best > e.1 {
                *e = (qi, best);
            }
        }
    }
    let mut out: Vec<(usize, usize)> = taken.into_iter().map(|(c, (q, _))| (q, c)).collect();
    out.sort_unstable();
    out
}

/// A 2×3 affine map.
type Affine = [f32; 6];

fn apply(t: &Affine, x: f32, y: f32) -> (f32, f32) {
    (t[0] * x + t[1] * y + t[2], t[3] * x + t[4] * y + t[5])
}

fn count_inliers(t: &Affine, pts: &[([f32; 2], [f32; 2])], tol2: f32) -> usize {
    pts.iter().filter(|p| is_inlier(t, p, tol2)).count()
}

/// Whether `t` maps the query point of a match within `tol2` (squared pixels) of its match.
fn is_inlier(t: &Affine, (q, c): &([f32; 2], [f32; 2]), tol2: f32) -> bool {
    let (x, y) = apply(t, q[0], q[1]);
    (x - c[0]).powi(2) + (y - c[1]).powi(2) < tol2
}

/// Inlier pairs a verification keeps for drawing, at most.
pub const MAX_PAIRS: usize = 64;

/// The inliers of `t` as (query x, y, candidate x, y), each divided by its frame's width or
/// height (so they land on any rendering of either image); at most [`MAX_PAIRS`], spread evenly
/// over the inliers.
fn inlier_pairs(
    t: &Affine,
    pts: &[([f32; 2], [f32; 2])],
    tol2: f32,
    query: (u32, u32),
    cand: (u32, u32),
) -> Vec<[f32; 4]> {
    let inliers: Vec<&([f32; 2], [f32; 2])> =
        pts.iter().filter(|p| is_inlier(t, p, tol2)).collect();
    let step = inliers.len().div_ceil(MAX_PAIRS).max(1);
    let (qw, qh) = (query.0.max(1) as f32, query.1.max(1) as f32);
    let (cw, ch) = (cand.0.max(1) as f32, cand.1.max(1) as f32);
    inliers
        .iter()
        .step_by(step)
        .map(|(q, c)| [q[0] / qw, q[1] / qh, c[0] / cw, c[1] / ch])
        .collect()
}

/// Least-squares affine map of the inliers of `t` (normal equations, solved per output row).
fn refit(t: &Affine, pts: &[([f32; 2], [f32; 2])], tol2: f32) -> Option<Affine> {
    let mut ata = [[0f64; 3]; 3];
    let (mut atx, mut aty) = ([0f64; 3], [0f64; 3]);
    let mut n = 0;
    for (q, c) in pts {
        let (x, y) = apply(t, q[0], q[1]);
        if (x - c[0]).powi(2) + (y - c[1]).powi(2) >= tol2 {
            continue;
        }
        n += 1;
        let a = [q[0] as f64, q[1] as f64, 1.0];
        for i in 0..3 {
            for j in 0..3 {
                ata[i][j] += a[i] * a[j];
            }
            atx[i] += a[i] * c[0] as f64;
            aty[i] += a[i] * c[1] as f64;
        }
    }
    if n < 3 {
        return None;
    }
    let inv = invert3(ata)?;
    let solve = |b: [f64; 3]| -> [f32; 3] {
        let mut x = [0f32; 3];
        for (i, xi) in x.iter_mut().enumerate() {
            *xi = (0..3).map(|j| inv[i][j] * b[j]).sum::<f64>() as f32;
        }
        x
    };
    let (r0, r1) = (solve(atx), solve(aty));
    Some([r0[0], r0[1], r0[2], r1[0], r1[1], r1[2]])
}

fn invert3(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() < 1e-9 {
        return None;
    }
    // Adjugate over the determinant; cyclic indices carry the cofactor signs.
    let mut inv = [[0f64; 3]; 3];
    for (i, row) in inv.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let (a, b) = ((j + 1) % 3, (j + 2) % 3);
            let (c, d) = ((i + 1) % 3, (i + 2) % 3);
            *v = (m[a][c] * m[b][d] - m[a][d] * m[b][c]) / det;
        }
    }
    Some(inv)
}

/// Hypotheses tried per candidate at most (the matches with the most similar descriptors
/// come first in a ratio-tested list anyway; this bounds the quadratic cost).
const MAX_HYPOTHESES: usize = 300;

/// What spatial verification found for one candidate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verification {
    /// One-to-one ratio-test matches consistent with one affine map.
    pub inliers: usize,
    /// Share of the query's frame that the candidate's frame covers under that map (0 without
    /// a map). A query that shows the stored image (crop, rotation, occlusion of it) is
    /// covered wholly; another image pasted over part of the query covers only that part.
    pub coverage: f32,
    /// The bounding box of that covered part of the query (left, top, right, bottom, each
    /// divided by the query's width or height; `None` without a map): what of the query the
    /// candidate explains (search::residual).
    pub footprint: Option<[f32; 4]>,
    /// Some of the inliers, for drawing (see [`MAX_PAIRS`]).
    pub pairs: Vec<[f32; 4]>,
}

/// Spatially verifies `cand` against the query (see the module docs).
pub fn verify(query: &LocalFeatures, cand: &PackedFeatures, params: &VerifyParams) -> Verification {
    let matches = ratio_matches(query, cand, params.ratio);
    if matches.len() < 3 {
        return Verification::default();
    }
    let pts: Vec<([f32; 2], [f32; 2])> = matches
        .iter()
        .map(|&(q, c)| {
            let (a, b) = (query.keypoints[q], cand.keypoint(c));
            ([a.x, a.y], [b.x, b.y])
        })
        .collect();
    let tol2 = params.inlier_px * params.inlier_px;
    let mut best: (usize, Affine) = (0, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    for &(q, c) in matches.iter().take(MAX_HYPOTHESES) {
        let (a, b) = (query.keypoints[q], cand.keypoint(c));
        if a.scale <= 0.0 || b.scale <= 0.0 {
            continue;
        }
        // Pixel frames have y down and angles are measured y up: the rotation taking the
        // query to the candidate is (query angle − candidate angle) in pixel coordinates.
        let s = b.scale / a.scale;
        let phi = a.angle - b.angle;
        let (sin, cos) = phi.sin_cos();
        let (m00, m01, m10, m11) = (s * cos, -s * sin, s * sin, s * cos);
        let t = [
            m00,
            m01,
            b.x - (m00 * a.x + m01 * a.y),
            m10,
            m11,
            b.y - (m10 * a.x + m11 * a.y),
        ];
        let n = count_inliers(&t, &pts, tol2);
        if n > best.0 {
            best = (n, t);
        }
    }
    // Local optimisation: affine refits on the inliers while they grow.
    for _ in 0..3 {
        let Some(t) = refit(&best.1, &pts, tol2) else {
            break;
        };
        let n = count_inliers(&t, &pts, tol2);
        if n <= best.0 {
            break;
        }
        best = (n, t);
    }
    if best.0 < 3 {
        return Verification::default();
    }
    let (coverage, footprint) = coverage(&best.1, cand, query);
    Verification {
        inliers: best.0,
        coverage,
        footprint,
        pairs: inlier_pairs(
            &best.1,
            &pts,
            tol2,
            (query.width, query.height),
            (cand.width, cand.height),
        ),
    }
}

/// Share of the query frame covered by the candidate frame mapped through the inverse of `t`
/// (query → candidate): the candidate rectangle's image in the query, clipped to the query
/// rectangle (Sutherland–Hodgman), over the query's area; and that clipped part's bounding box
/// in fractions of the query's sides.
fn coverage(t: &Affine, cand: &PackedFeatures, query: &LocalFeatures) -> (f32, Option<[f32; 4]>) {
    let det = t[0] * t[4] - t[1] * t[3];
    if det.abs() < 1e-9 || query.width == 0 || query.height == 0 {
        return (0.0, None);
    }
    // Inverse affine: candidate → query.
    let inv = [
        t[4] / det,
        -t[1] / det,
        (t[1] * t[5] - t[4] * t[2]) / det,
        -t[3] / det,
        t[0] / det,
        (t[3] * t[2] - t[0] * t[5]) / det,
    ];
    let (cw, ch) = (cand.width as f32, cand.height as f32);
    let mut poly: Vec<(f32, f32)> = [(0.0, 0.0), (cw, 0.0), (cw, ch), (0.0, ch)]
        .iter()
        .map(|&(x, y)| apply(&inv, x, y))
        .collect();
    let (qw, qh) = (query.width as f32, query.height as f32);
    // Clip against x ≥ 0, x ≤ qw, y ≥ 0, y ≤ qh.
    let edges: [(usize, f32, bool); 4] = [
        (0, 0.0, true),
        (0, qw, false),
        (1, 0.0, true),
        (1, qh, false),
    ];
    for (axis, bound, keep_above) in edges {
        let inside = |p: (f32, f32)| {
            let v = if axis == 0 { p.0 } else { p.1 };
            if keep_above {
                v >= bound
            } else {
                v <= bound
            }
        };
        let mut out = Vec::with_capacity(poly.len() + 2);
        for i in 0..poly.len() {
            let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
            let (ia, ib) = (inside(a), inside(b));
            if ia {
                out.push(a);
            }
            if ia != ib {
                let (va, vb) = if axis == 0 { (a.0, b.0) } else { (a.1, b.1) };
                let f = (bound - va) / (vb - va);
                out.push((a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1)));
            }
        }
        poly = out;
        if poly.is_empty() {
            return (0.0, None);
        }
    }
    let twice: f32 = (0..poly.len())
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum();
    let (mut lo, mut hi) = ((qw, qh), (0f32, 0f32));
    for &(x, y) in &poly {
        lo = (lo.0.min(x), lo.1.min(y));
        hi = (hi.0.max(x), hi.1.max(y));
    }
    let bbox = [lo.0 / qw, lo.1 / qh, hi.0 / qw, hi.1 / qh].map(|v| v.clamp(0.0, 1.0));
    ((twice.abs() / 2.0 / (qw * qh)).clamp(0.0, 1.0), Some(bbox))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgvec_ingest::sift::{extract, pack};

    fn photo() -> image::RgbImage {
        image::RgbImage::from_fn(320, 240, |x, y| {
            let (xf, yf) = (x as f32, y as f32);
            let a = ((xf * 0.13).sin() * (yf * 0.05).cos() * 70.0) as i32;
            let b = (((xf - 90.0).powi(2) + (yf - 70.0).powi(2)).sqrt() * 0.21).sin() * 50.0;
            let c = if (x / 19 + y / 29) % 4 == 0 { 60 } else { 0 };
            let v = (100 + a + b as i32 + c).clamp(0, 255) as u8;
            image::Rgb([v, v / 2, 255 - v])
        })
    }

    fn textures() -> Vec<image::RgbImage> {
        (0..4u32)
            .map(|k| {
                image::RgbImage::from_fn(320, 240, |x, y| {
                    let (xf, yf) = (x as f32, y as f32);
                    let f = 0.05 + 0.03 * k as f32;
                    let a = ((xf * f).sin() * (yf * (0.11 - 0.02 * k as f32)).cos() * 70.0) as i32;
                    let c = if (x / (11 + 6 * k) + y / (23 - 3 * k)) % 3 == 0 {
                        70
                    } else {
                        0
                    };
                    let d = (((xf - 40.0 * k as f32).powi(2) + (yf - 100.0).powi(2)).sqrt()
                        * (0.1 + 0.05 * k as f32))
                        .sin()
                        * 40.0;
                    let v = (100 + a + c + d as i32).clamp(0, 255) as u8;
                    image::Rgb([v, v, v])
                })
            })
            .collect()
    }

    fn snapshot_of(features: &[LocalFeatures], first_id: u64) -> Snapshot {
        let mut chunk = imgvec_storage::PendingChunk {
            dims: 1,
            local_offsets: vec![0],
            ..Default::default()
        };
        for (i, f) in features.iter().enumerate() {
            chunk.ids.push(first_id + i as u64);
            chunk.vectors.push(1.0);
            chunk.local.extend(pack(f));
            chunk.local_offsets.push(chunk.local.len() as u64);
        }
        Snapshot::from_chunks(vec![std::sync::Arc::new(chunk)], Default::default())
    }

    #[test]
    fn voting_finds_the_image_a_crop_comes_from_and_catches_up() {
        let p = SiftParams::default();
        let imgs = textures();
        let features: Vec<LocalFeatures> = imgs.iter().map(|i| extract(i, &p)).collect();
        let crop_of = |k: usize| {
            let c = image::imageops::crop_imm(&imgs[k], 40, 30, 200, 150).to_image();
            extract(&image::imageops::rotate90(&c), &p)
        };
        // Rows 1..=3 hold images 0..3; image 3 arrives later, as row 4.
        let mut index = LocalIndex::build(&snapshot_of(&features[..3], 1)).unwrap();
        assert_eq!(index.watermark, 3);
        assert_eq!(
            index.len(),
            features[..3].iter().map(|f| f.len()).sum::<usize>()
        );
        for k in 0..3 {
            let votes = index.vote(&crop_of(k).descriptors, 2, &|_| true).unwrap();
            assert_eq!(votes[0].0, k as u64 + 1, "{votes:?}");
            assert!(
                votes.len() < 2 || votes[0].1 > 1.2 * votes[1].1,
                "{votes:?}"
            );
        }
        // Filtered rows (deleted, or outside the caller's filters) get no votes.
        let votes = index
            .vote(&crop_of(1).descriptors, 3, &|id| id != 2)
            .unwrap();
        assert!(votes.iter().all(|(id, _)| *id != 2));
        // Catching up adds only the rows above the watermark.
        let chunks = [
            snapshot_of(&features[..3], 1),
            snapshot_of(&features[3..], 4),
        ]
        .iter()
        .flat_map(|s| s.pending().to_vec())
        .collect();
        let both = Snapshot::from_chunks(chunks, Default::default());
        index.catch_up(&both).unwrap();
        assert_eq!(index.watermark, 4);
        assert_eq!(index.len(), features.iter().map(|f| f.len()).sum::<usize>());
        let votes = index.vote(&crop_of(3).descriptors, 1, &|_| true).unwrap();
        assert_eq!(votes[0].0, 4);
    }

    #[test]
    fn verifies_a_turned_crop_and_rejects_an_unrelated_image() {
        let p = SiftParams::default();
        let img = photo();
        let stored = pack(&extract(&img, &p));
        let stored = PackedFeatures::parse(&stored).unwrap().unwrap();
        // A crop of the stored image, turned a quarter: same content, new geometry.
        let crop = image::imageops::crop_imm(&img, 60, 40, 200, 160).to_image();
        let query = extract(&image::imageops::rotate90(&crop), &p);
        let params = VerifyParams::default();
        let v = verify(&query, &stored, &params);
        assert!(v.inliers >= 30, "{v:?} for a turned crop");
        // The stored image covers all of a crop of it.
        assert!(v.coverage > 0.95, "{v:?} for a turned crop");
        // Pasted into a bigger canvas, the stored image covers only its part of the query.
        let mut canvas = image::RgbImage::from_pixel(640, 480, image::Rgb([40, 40, 40]));
        image::imageops::overlay(&mut canvas, &img, 300, 200);
        let v = verify(&extract(&canvas, &p), &stored, &params);
        let share = (320.0 * 240.0) / (640.0 * 480.0);
        assert!(
            v.inliers >= 30 && (v.coverage - share).abs() < 0.05,
            "{v:?} for a pasted copy"
        );
        // Unrelated texture: a few chance matches at most.
        let other = image::RgbImage::from_fn(320, 240, |x, y| {
            let v = ((x * 7 + y * 13) % 97 + (x * y) % 31) as u8 * 2;
            image::Rgb([v, 255 - v, v / 3])
        });
        let unrelated = verify(&extract(&other, &p), &stored, &params).inliers;
        assert!(
            unrelated < params.min_inliers,
            "{unrelated} inliers for an unrelated image"
        );
    }
}
