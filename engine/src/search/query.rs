//! The featurize stage: each query becomes its unit vectors (one per augmentation variant) and,
//! when the search needs them, its local features — through the same featurizer as ingest.

use std::sync::Arc;

use imgvec_ingest::decode;
use imgvec_ingest::sift::{PackedFeatures, SiftParams};
use imgvec_storage::{Snapshot, Store};

use super::observed::Observations;
use super::rerank::Probe;
use crate::dense::DenseQuery;
use crate::error::{Error, Result};
use crate::options::AugmentExt;
use crate::options::{Augment, Query};
use crate::pipeline::{Featurizer, QueryLocal};

/// An image query's features, made once and searched in any database made like the one that
/// made them: one vector per augmentation variant, and the local features when the search
/// needs them. Crosses processes as bytes ([`to_bytes`](Self::to_bytes)).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QueryFeatures {
    vectors: Vec<Vec<f32>>,
    local: Option<QueryLocal>,
}

/// Format tag of [`QueryFeatures::to_bytes`] (2: the dense query keeps its plane).
const FEATURES_MAGIC: &[u8; 8] = b"IVQRY\0\0\x02";

impl QueryFeatures {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = FEATURES_MAGIC.to_vec();
        bincode::serialize_into(&mut out, self).expect("features always serialize");
        out
    }

    /// Features from [`to_bytes`](Self::to_bytes); anything else is `InvalidArgument`.
    pub fn from_bytes(bytes: &[u8]) -> Result<QueryFeatures> {
        let body = bytes
            .strip_prefix(FEATURES_MAGIC.as_slice())
            .ok_or_else(|| Error::Invalid("not imgvec query features".into()))?;
        let features: QueryFeatures = bincode::deserialize(body)
            .map_err(|e| Error::Invalid(format!("damaged query features: {e}")))?;
        if let Some(local) = &features.local {
            let sift = &local.features;
            let want = sift.keypoints.len() * imgvec_ingest::sift::DESCRIPTOR_LEN;
            if sift.descriptors.len() != want {
                return Err(Error::Invalid(format!(
                    "damaged query features: {} descriptor values for {} keypoints",
                    sift.descriptors.len(),
                    sift.keypoints.len()
                )));
            }
            if let Some(dense) = &local.dense {
                dense
                    .check()
                    .map_err(|e| Error::Invalid(format!("damaged query features: {e}")))?;
            }
        }
        Ok(features)
    }

    /// The query's local features, when it has them.
    pub(crate) fn local(&self) -> Option<&QueryLocal> {
        self.local.as_ref()
    }

    /// The features of one prepared query (its error when it has none).
    pub(crate) fn of(prepared: PreparedQuery) -> Result<QueryFeatures> {
        Ok(QueryFeatures {
            vectors: prepared.vectors?,
            local: prepared.local,
        })
    }
}

/// One query, ready to search.
pub(crate) struct PreparedQuery {
    /// One unit vector per augmentation variant (the query itself first), or why there is none.
    pub vectors: Result<Vec<Vec<f32>>>,
    /// Local features, when the search verifies or the view fuses a VLAD.
    pub local: Option<QueryLocal>,
    /// What verifying it observed, shared with the other passes of its batch.
    pub seen: Arc<Observations>,
}

impl PreparedQuery {
    /// The query as verification sees it, when it has local features.
    pub fn probe(&self) -> Option<Probe<'_>> {
        self.local.as_ref().map(|local| Probe {
            local,
            seen: &self.seen,
        })
    }
}

/// Featurizes a batch: decodes image queries, runs the model once over every variant of every
/// image query, and reads id queries from `snap`. With `local` (the pipeline's SIFT settings,
/// when the search needs local features), queries get their local features too. `seen`: each
/// query's observations from an earlier pass of its batch (its local features are not
/// extracted again, and verification starts from what it observed), or none.
pub(crate) fn featurize(
    featurizer: &Featurizer,
    store: &Store,
    snap: &Snapshot,
    queries: &[Query],
    augment: Augment,
    local: Option<&SiftParams>,
    seen: &[Arc<Observations>],
) -> Vec<PreparedQuery> {
    let mut out: Vec<PreparedQuery> = Vec::with_capacity(queries.len());
    let mut images = Vec::new(); // (query index, variant)
    for (i, q) in queries.iter().enumerate() {
        let decoded = match q {
            Query::Id(id) => {
                out.push(by_id(store, snap, *id, local.is_some()));
                continue;
            }
            Query::Features(f) => {
                out.push(PreparedQuery {
                    vectors: Ok(f.vectors.clone()),
                    local: f.local.clone().filter(|_| local.is_some()),
                    seen: Arc::default(),
                });
                continue;
            }
            Query::Path(p) => imgvec_ingest::read_image_file(p)
                .map_err(|e| e.to_string())
                .and_then(|b| decode(&b).map_err(|e| e.to_string()))
                .map_err(|reason| Error::Image {
                    path: p.display().to_string(),
                    reason,
                }),
            Query::Bytes(b) => decode(b).map_err(|e| Error::Image {
                path: "<bytes>".into(),
                reason: e.to_string(),
            }),
        };
        match decoded {
            Ok(img) => {
                let local = local.map(|p| match seen.get(i) {
                    Some(seen) => seen.local(|| Featurizer::query_local(&img.rgb, p)),
                    None => Featurizer::query_local(&img.rgb, p),
                });
                // A later pass of the batch has the unturned variant's vector already.
                let known: Vec<Vec<f32>> = seen
                    .get(i)
                    .and_then(|s| s.upright())
                    .map(<[f32]>::to_vec)
                    .into_iter()
                    .collect();
                let variants = augment.variants(&img.rgb).into_iter().skip(known.len());
                images.extend(variants.map(|v| (i, v)));
                out.push(PreparedQuery {
                    vectors: Ok(known),
                    local,
                    seen: Arc::default(),
                });
            }
            Err(e) => out.push(PreparedQuery {
                vectors: Err(e),
                local: None,
                seen: Arc::default(),
            }),
        }
    }
    if !images.is_empty() {
        let refs: Vec<&image::RgbImage> = images.iter().map(|(_, img)| img).collect();
        match featurizer.embed_images(&refs) {
            Ok(vectors) => {
                for ((i, _), v) in images.iter().zip(vectors) {
                    if let Ok(list) = &mut out[*i].vectors {
                        list.push(v);
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (i, _) in &images {
                    out[*i].vectors = Err(Error::Invalid(msg.clone()));
                }
            }
        }
    }
    for ((prepared, seen), q) in out.iter_mut().zip(seen).zip(queries) {
        if let (Query::Path(_) | Query::Bytes(_), Ok(vectors)) = (q, &prepared.vectors) {
            if let Some(own) = vectors.first() {
                seen.keep_upright(own);
            }
        }
        prepared.seen = seen.clone();
    }
    out
}

/// A stored image as a query: its stored vector and local features, and its thumbnail made
/// ready for dense alignment.
fn by_id(store: &Store, snap: &Snapshot, id: u64, local: bool) -> PreparedQuery {
    let packed = match local {
        true => snap.local(id),
        false => Ok(None),
    };
    let local = match &packed {
        Ok(Some(bytes)) => PackedFeatures::parse(bytes)
            .ok()
            .flatten()
            .map(|p| QueryLocal {
                features: p.unpack(),
                dense: store
                    .thumbnail(id)
                    .ok()
                    .flatten()
                    .and_then(|b| decode(&b).ok())
                    .map(|img| DenseQuery::new(&img.rgb)),
            }),
        _ => None,
    };
    let vectors = match store.get(id) {
        Err(e) => Err(e.into()),
        Ok(None) => Err(Error::NoSuchId(id)),
        Ok(Some(_)) if snap.is_deleted(id) => Err(Error::NoSuchId(id)),
        Ok(Some(_)) => match (packed, snap.vector(id)) {
            (Err(e), _) | (_, Err(e)) => Err(e.into()),
            (_, Ok(Some(v))) => Ok(vec![v.to_vec()]),
            (_, Ok(None)) => Err(Error::Invalid(format!(
                "live row {id} has no vector in any segment or pending row"
            ))),
        },
    };
    PreparedQuery {
        vectors,
        local,
        seen: Arc::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgvec_ingest::sift::{Keypoint, LocalFeatures, DESCRIPTOR_LEN};

    fn features(keypoints: usize, descriptor_values: usize) -> QueryFeatures {
        let kp = Keypoint {
            x: 1.0,
            y: 2.0,
            scale: 1.5,
            angle: 0.0,
            response: 0.1,
        };
        QueryFeatures {
            vectors: vec![vec![1.0, 0.0]],
            local: Some(QueryLocal {
                features: LocalFeatures {
                    width: 64,
                    height: 48,
                    keypoints: vec![kp; keypoints],
                    descriptors: vec![0.1; descriptor_values],
                },
                dense: None,
            }),
        }
    }

    #[test]
    fn features_received_misshapen_are_refused() {
        let good = features(3, 3 * DESCRIPTOR_LEN);
        assert!(QueryFeatures::from_bytes(&good.to_bytes()).is_ok());
        let bad = features(3, 2 * DESCRIPTOR_LEN);
        let err = QueryFeatures::from_bytes(&bad.to_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("descriptor values for 3 keypoints"),
            "{err}"
        );
        assert!(QueryFeatures::from_bytes(b"IVQRY\0\0\x02garbage").is_err());
    }
}
