//! The JSON a search answers with, one shape for the CLI (`search --json`) and the HTTP server
//! (`imgvec serve`); docs/CLI.md documents it. Every top-level object carries `schema_version`.

use serde_json::{json, Map, Value};

use crate::info::Hit;
use imgvec_storage::ImageRecord;

/// The version of every top-level JSON object imgvec prints or serves; it changes only when a
/// field changes meaning or goes away (new fields do not change it).
pub const SCHEMA_VERSION: u32 = 1;

/// `fields` (a JSON object) with `schema_version` added.
pub fn versioned(fields: Value) -> Value {
    let mut object = Map::new();
    object.insert("schema_version".into(), SCHEMA_VERSION.into());
    match fields {
        Value::Object(map) => object.extend(map),
        other => {
            object.insert("value".into(), other);
        }
    }
    Value::Object(object)
}

/// A hit: every field present, `null` where it does not apply; `rank` counts from 1.
pub fn hit(rank: usize, hit: &Hit) -> Value {
    json!({
        "rank": rank,
        "id": hit.id,
        "path": hit.path,
        "score": hit.score,
        "match": hit.matched.name(),
        "confidence": hit.confidence,
        "verdict": hit.verdict.map(|v| v.name()),
        "rank_key": hit.rank_key,
        "inliers": hit.inliers,
        "alignment": hit.alignment,
        "region": hit.region,
        "coverage": hit.coverage,
        "footprint": hit.footprint,
        "beneath": hit.beneath,
        "tier": hit.tier,
        "pairs": hit.pairs,
        "attrs": hit.attributes,
    })
}

/// A stored record as `list`, `show`, `export` and the HTTP API give it.
pub fn record(r: &ImageRecord) -> Value {
    json!({
        "id": r.id, "path": r.path, "width": r.width, "height": r.height, "format": r.format,
        "content_hash": r.content_hash.to_hex(), "ingested_at_ms": r.ingested_at_ms,
        "attrs": r.attributes, "duplicate_of": r.duplicate_of,
    })
}

/// How a query is named in a search answer.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryName {
    /// A file (the path as given), `-` for standard input, or an upload's name.
    Given(String),
    /// A stored row ("more like this"), with its stored path when the row exists.
    Stored { id: u64, path: Option<String> },
}

/// One query's answer: `{"schema_version", "query", ["query_id", "query_path"], "results" |
/// "error"}`.
pub fn search_answer(query: &QueryName, result: Result<&[Hit], &str>) -> Value {
    let mut line = match query {
        QueryName::Given(label) => json!({ "query": label }),
        QueryName::Stored { id, path } => {
            json!({ "query": format!("id:{id}"), "query_id": id, "query_path": path })
        }
    };
    match result {
        Ok(hits) => {
            let hits: Vec<Value> = hits
                .iter()
                .enumerate()
                .map(|(i, h)| hit(i + 1, h))
                .collect();
            line["results"] = hits.into();
        }
        Err(e) => line["error"] = e.into(),
    }
    versioned(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_have_every_field_and_a_version() {
        let h = Hit {
            id: 7,
            path: "/p/a.jpg".into(),
            score: 0.5,
            inliers: None,
            alignment: Some(0.8),
            verdict: Some(crate::Verdict::Aligned),
            rank_key: Some(0.7),
            matched: crate::Match::Verified,
            confidence: Some(0.9),
            pairs: None,
            region: Some([0.1, 0.2, 0.5, 0.6]),
            coverage: None,
            footprint: None,
            beneath: Some(0.97),
            tier: Some(2),
            attributes: [("k".to_string(), "v".to_string())].into(),
        };
        let by_id = QueryName::Stored {
            id: 3,
            path: Some("/p/b.jpg".into()),
        };
        let a = search_answer(&by_id, Ok(&[h]));
        assert_eq!(a["schema_version"], 1);
        assert_eq!(
            (a["query"].as_str(), a["query_id"].as_u64()),
            (Some("id:3"), Some(3))
        );
        assert_eq!(a["query_path"], "/p/b.jpg");
        let r = &a["results"][0];
        assert_eq!(
            (r["rank"].as_u64(), r["verdict"].as_str()),
            (Some(1), Some("aligned"))
        );
        assert_eq!(
            (r["match"].as_str(), r["confidence"].as_f64()),
            (Some("verified"), Some(0.9f32 as f64))
        );
        assert!(r["inliers"].is_null() && r.get("inliers").is_some());
        assert!(r["pairs"].is_null() && r.get("pairs").is_some());
        assert_eq!(r["region"].as_array().map(Vec::len), Some(4));
        assert_eq!(r["rank_key"].as_f64(), Some(0.7f32 as f64));
        assert!(r["footprint"].is_null() && r.get("coverage").is_some());
        assert_eq!(
            (r["beneath"].as_f64(), r["tier"].as_u64()),
            (Some(0.97f32 as f64), Some(2))
        );
        assert_eq!(r["attrs"]["k"], "v");
        let failed = search_answer(&QueryName::Given("q.jpg".into()), Err("no such file"));
        assert_eq!(
            (failed["query"].as_str(), failed["error"].as_str()),
            (Some("q.jpg"), Some("no such file"))
        );
        assert!(failed.get("results").is_none());
    }
}
