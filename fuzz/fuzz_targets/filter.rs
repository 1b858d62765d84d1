//! Feeds arbitrary text to the list endpoints' query parsers: `Filter::parse` and
//! `Sort::parse` (weft-model), and the whole raw query string to the REST layer's
//! `parse_read_query` (percent-decoding, `limit`/`offset`/`consistency`). A filter that
//! parses is evaluated against a few records, so evaluation runs on every tree the
//! parser can build, and checked against its negation `not (...)`.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use weft_model::filter::{Filter, Sort};

/// Records with every JSON type at top level and nested, arrays of mixed elements, and
/// the time fields sorting reads.
static RECORDS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    vec![
        json!({
            "id": "s1", "name": "web", "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-01-02T00:00:00Z", "encryptionRequired": true,
            "roleAttributes": ["http", "public", 3, null], "tags": {"env": "prod", "n": 1.5},
            "terminatorStrategy": "smartrouting", "configs": []
        }),
        json!({
            "id": "s2", "name": "Émile", "createdAt": 7, "n": -1e300,
            "tags": {"env": {"deep": [1, "two"]}}, "flag": false, "none": null
        }),
        json!({}),
        json!(["not", "an", "object"]),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let chars = text.chars().count();
    match Filter::parse(text) {
        Ok(filter) => {
            // `not (F)` matches exactly the records `F` does not (when still within the
            // length and depth limits).
            let negated = Filter::parse(&format!("not ({text})")).ok();
            for record in RECORDS.iter() {
                let matched = filter.matches(record);
                if let Some(negated) = &negated {
                    assert_eq!(negated.matches(record), !matched, "{text:?} on {record}");
                }
            }
        }
        // The position points into the text (or just past its end).
        Err(e) => assert!(e.position <= chars, "{e:?} for {chars} chars"),
    }
    match Sort::parse(text) {
        Ok(sort) => {
            for a in RECORDS.iter() {
                for b in RECORDS.iter() {
                    let _ = sort.compare(a, b);
                }
            }
        }
        Err(e) => assert!(e.position <= chars, "{e:?} for {chars} chars"),
    }
    let _ = weft_controller::http::parse_read_query(Some(text));
});
