//! Property tests of hidden-danger validation: whatever an item holds, it becomes a value or
//! an error, never a panic.

use proptest::prelude::*;
use serde_json::json;

use crate::hidden_danger::{RawItem, validate};
use crate::testing::{json_value, proptest_config, valid};

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

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn hidden_danger_items_never_panic(
        fields in prop::collection::vec((prop::sample::select(ITEM_FIELDS), json_value()), 0..24),
        base in any::<bool>(),
    ) {
        let mut item = if base { valid() } else { json!({}) };
        for (k, v) in fields {
            item[k] = v;
        }
        let raw: RawItem = serde_json::from_str(&item.to_string()).unwrap();
        if let Ok(hd) = validate(&raw) {
            let _ = hd.addresses();
        }
    }
}
