//! What verifying one query observed that does not depend on its global vectors, kept for the
//! rest of its search batch.
//!
//! The upright fallback (upright.rs) searches a query that verified nothing again with its
//! turns. The turns change the query's global vectors, so the shortlist and every candidate's
//! cosine, but not its local features: descriptor voting finds the same images, and a candidate
//! examined before matches with SIFT and aligns densely exactly as it did. The second pass
//! takes those from here, and the upright query's global vector, and runs only the decode, the
//! model on the three turns, the retrieval and the candidates it adds.
//!
//! Valid within one batch: a row's stored local features never change under its id (a
//! replaced image gets a new id), and a row deleted meanwhile is left out by the caller.
//!
//! A query given as features (`Query::Features`, the shards of a sharded search, docs/RAY.md)
//! is searched in several calls: its candidates, their verification, the expansion's
//! candidates and verification, and the upright retry with its turns — the same local
//! features each time. What examining each candidate found depends only on those features,
//! the candidate's stored features and the verification settings, and so does its alignment
//! with the query with given parts left out (looking beneath pasted pictures, made in one call
//! and needed again in the next), so the handle keeps both (recent.rs) under a key of the
//! features and the settings, and each later call starts from what the earlier ones examined.
//! Votes are not kept across calls: they depend on the rows, the filter (attributes can change
//! under the same rows) and the voting index's state.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::Searcher;
use crate::local::{Verification, VerifyParams};
use crate::options::{Query, SearchOptions};
use crate::pipeline::QueryLocal;

/// Images found by voting, with their votes.
type Voted = Vec<(u64, f32)>;

/// How a candidate was examined: its id, whether it was matched with SIFT, and whether it had a
/// dense plane to align on with which hint (the bits of its best window's turn, when found):
/// verified expansion aligns without the hint, so the same candidate can be examined two ways.
pub(crate) type Examination = (u64, bool, Option<Option<u32>>);

/// What examining one candidate found before its cosine is weighed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    /// The SIFT match (default when not matched with SIFT).
    pub verification: Verification,
    /// Dense alignment's score and where it placed the query, when it ran.
    pub alignment: Option<(f32, Option<[f32; 4]>)>,
    /// The brightness gap to a verified candidate's plane (0 when not measured).
    pub brightness_gap: f32,
}

/// A candidate's alignment with the query with parts of it left out (looking beneath pasted
/// pictures, rerank.rs): its score and where it placed the query.
pub(crate) type MaskedAlignment = (f32, Option<[f32; 4]>);

/// What examining candidates found: each candidate by how, and each candidate's alignment with
/// the query with parts left out, by the candidate and those parts (their bits).
#[derive(Default)]
pub(crate) struct Examined {
    by_how: Mutex<HashMap<Examination, Observed>>,
    masked: Mutex<HashMap<(u64, Vec<u32>), MaskedAlignment>>,
}

/// One query's observations (shared by the passes of its batch).
#[derive(Default)]
pub(crate) struct Observations {
    /// The query's local features, extracted once.
    local: OnceLock<QueryLocal>,
    /// The query's own global vector (its unturned variant), made once: the turned pass
    /// starts its variants from it.
    upright: OnceLock<Vec<f32>>,
    /// The images voting found, for the number asked.
    voted: Mutex<Option<(usize, Voted)>>,
    /// Each candidate examined, by how (shared with the handle's other calls for a feature
    /// query).
    examined: Arc<Examined>,
}

impl Observations {
    /// New observations that share what `examined` holds.
    pub fn sharing(examined: Arc<Examined>) -> Observations {
        Observations {
            examined,
            ..Observations::default()
        }
    }

    /// Observations of a query whose local features are known already (made of the same image
    /// before).
    pub fn knowing(local: QueryLocal) -> Observations {
        Observations {
            local: OnceLock::from(local),
            ..Observations::default()
        }
    }

    /// The query's local features: made by `make` the first time.
    pub fn local(&self, make: impl FnOnce() -> QueryLocal) -> QueryLocal {
        self.local.get_or_init(make).clone()
    }

    /// The query's own global vector, when a pass made it.
    pub fn upright(&self) -> Option<&[f32]> {
        self.upright.get().map(Vec::as_slice)
    }

    /// Keeps the query's own global vector (the first pass's is kept).
    pub fn keep_upright(&self, vector: &[f32]) {
        let _ = self.upright.set(vector.to_vec());
    }

    /// The `n` images voting found: found by `vote` the first time `n` is asked for.
    pub fn voted<E>(&self, n: usize, vote: impl FnOnce() -> Result<Voted, E>) -> Result<Voted, E> {
        if let Some((asked, found)) = self.voted.lock().as_ref() {
            if *asked == n {
                return Ok(found.clone());
            }
        }
        let found = vote()?;
        *self.voted.lock() = Some((n, found.clone()));
        Ok(found)
    }

    /// What examining a candidate so (`how`) found: found by `examine` the first time. Safe to
    /// call from several threads (for different candidates).
    pub fn examined<E>(
        &self,
        how: Examination,
        examine: impl FnOnce() -> Result<Observed, E>,
    ) -> Result<Observed, E> {
        if let Some(seen) = self.examined.by_how.lock().get(&how) {
            return Ok(seen.clone());
        }
        let seen = examine()?;
        self.examined.by_how.lock().insert(how, seen.clone());
        Ok(seen)
    }

    /// Candidate `id`'s alignment with the query with `parts` left out: made by `align` the
    /// first time. A sharded search's shards align their candidates so in the call that looks
    /// beneath and again in the call that ranks the pick (docs/RAY.md). Safe to call from several
    /// threads (for different candidates).
    pub fn masked(
        &self,
        id: u64,
        parts: &[[f32; 4]],
        align: impl FnOnce() -> MaskedAlignment,
    ) -> MaskedAlignment {
        let key = (id, parts.iter().flatten().map(|v| v.to_bits()).collect());
        if let Some(found) = self.examined.masked.lock().get(&key) {
            return *found;
        }
        let found = align();
        self.examined.masked.lock().insert(key, found);
        found
    }

    /// How many candidates were examined (tests).
    #[cfg(test)]
    pub fn examined_count(&self) -> usize {
        self.examined.by_how.lock().len()
    }
}

/// What examining a feature query's candidates depends on besides the candidates' own stored
/// features: the query's local features and the verification settings (not `expand` or
/// `upright`, which decide only what is examined).
pub(crate) fn key(local: &QueryLocal, params: &VerifyParams) -> blake3::Hash {
    let params = VerifyParams {
        expand: 0,
        upright: false,
        ..*params
    };
    let mut h = blake3::Hasher::new();
    h.update(&bincode::serialize(local).expect("local features always serialize"));
    h.update(format!("{params:?}").as_bytes());
    h.finalize()
}

impl Searcher<'_> {
    /// Each query's observations for a search with `opts`: new ones, except that a verified
    /// feature query with local features shares what this handle's earlier calls examined of
    /// the same features with the same settings.
    pub(super) fn observations(
        &self,
        queries: &[Query],
        opts: &SearchOptions,
    ) -> Vec<Arc<Observations>> {
        let (_, _, verify) = self.settings(opts);
        queries
            .iter()
            .map(|q| match (q, &verify) {
                (Query::Features(f), Some(params)) => match f.local() {
                    Some(local) => {
                        let kept = (self.spaces.examined())
                            .get_or_insert(key(local, params), Examined::default);
                        Arc::new(Observations::sharing(kept))
                    }
                    None => Arc::default(),
                },
                _ => Arc::default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_observation_is_made_once() {
        let seen = Observations::default();
        let calls = std::cell::Cell::new(0);
        let vote = |ids: Vec<(u64, f32)>| {
            calls.set(calls.get() + 1);
            Ok::<_, ()>(ids)
        };
        assert_eq!(seen.voted(2, || vote(vec![(1, 3.0)])), Ok(vec![(1, 3.0)]));
        assert_eq!(seen.voted(2, || vote(vec![(9, 9.0)])), Ok(vec![(1, 3.0)]));
        assert_eq!(calls.get(), 1);
        // Another number asked for votes again.
        assert_eq!(seen.voted(5, || vote(vec![(9, 9.0)])), Ok(vec![(9, 9.0)]));
        assert_eq!(calls.get(), 2);

        let observed = |inliers| Observed {
            verification: Verification {
                inliers,
                ..Verification::default()
            },
            ..Observed::default()
        };
        let hinted = (7, true, Some(Some(3f32.to_bits())));
        let got = seen.examined(hinted, || Ok::<_, ()>(observed(12))).unwrap();
        assert_eq!(got.verification.inliers, 12);
        let again = seen.examined(hinted, || Ok::<_, ()>(observed(99))).unwrap();
        assert_eq!(again.verification.inliers, 12);
        // Without SIFT, or aligned without the hint, it is another observation; an error is not
        // kept.
        assert!(seen.examined((7, false, None), || Err(())).is_err());
        for (i, how) in [(7, false, None), (7, true, Some(None))]
            .into_iter()
            .enumerate()
        {
            let other = seen.examined(how, || Ok::<_, ()>(observed(i))).unwrap();
            assert_eq!(other.verification.inliers, i);
        }
        assert_eq!(seen.examined_count(), 3);

        // A masked alignment is made once for a candidate and the parts left out; other parts,
        // or another candidate, are aligned anew.
        let aligned = std::cell::Cell::new(0);
        let align = |score: f32| {
            aligned.set(aligned.get() + 1);
            (score, None)
        };
        let parts = [[0.1, 0.1, 0.5, 0.5]];
        let other = [[0.1, 0.1, 0.5, 0.6]];
        assert_eq!(seen.masked(7, &parts, || align(0.9)).0, 0.9);
        assert_eq!(seen.masked(7, &parts, || align(0.1)).0, 0.9);
        assert_eq!(seen.masked(7, &other, || align(0.5)).0, 0.5);
        assert_eq!(seen.masked(8, &parts, || align(0.7)).0, 0.7);
        assert_eq!(aligned.get(), 3);
        // Observations sharing the same examined set see them.
        let shared = Arc::new(Examined::default());
        let (a, b) = (
            Observations::sharing(shared.clone()),
            Observations::sharing(shared),
        );
        a.masked(7, &parts, || align(0.3));
        assert_eq!(b.masked(7, &parts, || align(0.4)).0, 0.3);
    }
}
