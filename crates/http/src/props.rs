//! Property tests of the TAXII request parsers (filters, cursors, instants): whatever a client
//! sends, they answer a value or an error, never a panic.

use std::collections::HashMap;

use proptest::prelude::*;

use br_cti_domain::testing::{nasty_string, proptest_config};

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
    #![proptest_config(proptest_config())]

    #[test]
    fn taxii_filters_and_cursors_never_panic(
        pairs in prop::collection::vec((prop::sample::select(TAXII_KEYS), nasty_string()), 0..6),
        id in prop::option::of(nasty_string()),
        text in nasty_string(),
    ) {
        let q: HashMap<String, String> =
            pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let _ = crate::taxii_query_for_tests(&q, id.as_deref());
        let _ = br_cti_app::taxii::decode_cursor(&text);
        let _ = br_cti_app::taxii::parse_us(&text);
    }
}
