//! Metadata filters: which rows a search may return. A [`Filter`] is evaluated once per batch
//! into the set of allowed ids (a pre-filter), so candidate generation tests set membership
//! instead of reading and parsing a record per candidate.

use std::collections::HashSet;

use imgvec_storage::Store;

use crate::error::Result;
use crate::options::Filter;

impl Filter {
    /// The ids of the live records that pass; `None` when the filter allows every row. A path
    /// prefix is one range scan of the path index; attributes read the records it leaves (or
    /// every record, without a prefix).
    pub(crate) fn allowed(&self, store: &Store) -> Result<Option<HashSet<u64>>> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut allowed = HashSet::new();
        match &self.path_prefix {
            Some(prefix) => {
                for id in store.ids_with_path_prefix(prefix)? {
                    let passes = self.attributes.is_empty()
                        || store.get(id)?.is_some_and(|rec| self.matches(&rec));
                    if passes {
                        allowed.insert(id);
                    }
                }
            }
            None => {
                for rec in store.records()? {
                    if self.matches(&rec) {
                        allowed.insert(rec.id);
                    }
                }
            }
        }
        Ok(Some(allowed))
    }
}

#[cfg(test)]
mod tests {
    use imgvec_storage::ImageRecord;

    use super::*;

    fn record(path: &str, attrs: &[(&str, &str)]) -> ImageRecord {
        ImageRecord {
            id: 1,
            path: path.into(),
            path_bytes: None,
            content_hash: Default::default(),
            width: 1,
            height: 1,
            format: "png".into(),
            ingested_at_ms: 0,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            duplicate_of: None,
        }
    }

    #[test]
    fn filter_table() {
        let filter = |prefix: Option<&str>, attrs: &[(&str, &str)]| Filter {
            path_prefix: prefix.map(str::to_string),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let cases = [
            (filter(None, &[]), record("/a/x.jpg", &[]), true),
            (filter(Some("/a/"), &[]), record("/a/x.jpg", &[]), true),
            (filter(Some("/b/"), &[]), record("/a/x.jpg", &[]), false),
            (
                filter(None, &[("k", "v")]),
                record("/a/x.jpg", &[("k", "v")]),
                true,
            ),
            (
                filter(None, &[("k", "v")]),
                record("/a/x.jpg", &[("k", "w")]),
                false,
            ),
            (filter(None, &[("k", "v")]), record("/a/x.jpg", &[]), false),
            (
                filter(Some("/a"), &[("k", "v"), ("j", "1")]),
                record("/a/x.jpg", &[("k", "v"), ("j", "1"), ("z", "2")]),
                true,
            ),
        ];
        for (f, rec, want) in cases {
            assert_eq!(f.matches(&rec), want, "{f:?} on {rec:?}");
        }
        assert!(filter(None, &[]).is_empty() && !filter(Some(""), &[]).is_empty());
    }
}
