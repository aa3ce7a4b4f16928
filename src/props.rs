//! Property tests of the parsers that take what clients send (besides the dataset readers,
//! `dataset::props`): the mapping table, hidden-danger items, TAXII filters and cursors. Whatever
//! they receive, they answer a value or an error, never a panic.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{Value, json};

/// The configuration of every property test: 256 cases from a fixed seed, the same cases on
/// every run (tests are deterministic); change the seed to explore.
pub(crate) fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6272_6374_6931_3200),
        ..ProptestConfig::default()
    }
}

/// Strings with the characters that trip parsers: separators, quotes, escapes, digits, wide
/// and invalid-looking characters, long runs.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9,;:\\[\\]{}\"'\\\\ ./_-]{0,40}",
        "[0-9TZ:.+-]{0,32}",
        ".{0,40}",
        Just(String::new()),
        Just("9".repeat(400)),
        Just("2024-13-45T25:61:61.9999999999Z".to_string()),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        nasty_string().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const ITEM_FIELDS: &[&str] = &[
    "riskId",
    "issueName",
    "issueLevel",
    "issueIP",
    "issuePort",
    "classify",
    "unitName",
    "assetIpv4",
    "assetIpv6",
    "assetDomain",
    "assetMac",
    "startTime",
    "endTime",
    "dataFrom",
    "eventFrom",
    "judgeState",
    "noticeState",
    "rawEvent",
    "issueSolution",
    "issueDescription",
    "discoverFactory",
];

const TAXII_KEYS: &[&str] = &[
    "added_after",
    "limit",
    "next",
    "match[id]",
    "match[type]",
    "match[version]",
    "match[spec_version]",
    "match[other]",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mapping_tables_never_panic(lines in prop::collection::vec(
        prop::collection::vec(nasty_string(), 0..6).prop_map(|cells| cells.join(",")), 0..8)
    ) {
        let text = lines.join("\n");
        let _ = crate::convert::Mapping::parse(&text);
        let _ = crate::convert::Mapping::parse(&format!(
            "dataset_field,stix_object,object_property,transformation\n{text}"
        ));
    }

    #[test]
    fn hidden_danger_items_never_panic(
        fields in prop::collection::vec((prop::sample::select(ITEM_FIELDS), json_value()), 0..24),
        base in any::<bool>(),
    ) {
        let mut item = if base {
            crate::hidden_danger::tests::valid()
        } else {
            json!({})
        };
        for (k, v) in fields {
            item[k] = v;
        }
        let raw: crate::hidden_danger::RawItem = serde_json::from_str(&item.to_string()).unwrap();
        if let Ok(hd) = crate::hidden_danger::validate(&raw) {
            let _ = hd.addresses();
        }
    }

    #[test]
    fn taxii_filters_and_cursors_never_panic(
        pairs in prop::collection::vec((prop::sample::select(TAXII_KEYS), nasty_string()), 0..6),
        id in prop::option::of(nasty_string()),
        text in nasty_string(),
    ) {
        let q: HashMap<String, String> =
            pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let _ = crate::http::taxii_query_for_tests(&q, id.as_deref());
        let _ = crate::taxii::decode_cursor(&text);
        let _ = crate::taxii::parse_us(&text);
    }
}
