//! Helpers for the tests of this crate and of the crates above it (feature `testing`).

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::hidden_danger::{HiddenDanger, RawItem, validate};
use crate::job::{CtiParams, JobParams, StixParams};
use crate::vocab::{DataType, IncentiveMechanism, IocKind, OpenSource, Tag};

/// The parameters of a conversion (a honeypot dataset, 5 rows per file).
pub fn stix_params() -> JobParams {
    JobParams::Stix(StixParams {
        stix_type: DataType::Honeypot,
        stix_iocs: Some(vec![IocKind::Ip]),
        stix_tags: vec![Tag::Honeypot],
        compress: 5,
        features: None,
        labels: vec!["label".into()],
        label_columns: Vec::new(),
        observed_time_micros: 0,
        mapping_name: None,
        mapping_text: "mapping".into(),
        indicators: Some(DataType::Honeypot.default_indicators()),
        tlp: Some(crate::vocab::Tlp::Green),
        indicator_valid_days: None,
    })
}

/// The parameters of a CTI build.
pub fn cti_params() -> JobParams {
    JobParams::Cti(CtiParams {
        cti_type: None,
        cti_name: "name".into(),
        open_source: OpenSource::Open,
        description: String::new(),
        value: 0.0,
        incentive_mechanism: IncentiveMechanism::First,
        cti_traffic_type: None,
        tags: None,
        records: 1,
    })
}

/// A valid hidden danger with this riskId.
pub fn sample(risk_id: &str) -> HiddenDanger {
    let mut v = valid();
    v["riskId"] = Value::String(risk_id.to_string());
    validate(&item(v)).unwrap()
}

/// A wire item from its JSON.
pub fn item(v: Value) -> RawItem {
    serde_json::from_str(&v.to_string()).unwrap()
}

/// A valid wire item.
pub fn valid() -> Value {
    serde_json::json!({
        "riskId": "r-1", "issueName": "Apache Log4j2 远程代码执行 CVE-2021-44228", "issueLevel": 4,
        "issueIP": "10.1.2.3", "issuePort": 8080, "classify": ["主机漏洞", "WEB漏洞"],
        "unitName": "安恒电子商务有限公司", "startTime": "2024-06-01 08:00:00",
        "endTime": "2024-06-01 09:30:00", "dataFrom": "平台A", "judgeState": "judgeStateTrue",
        "noticeState": "noticeStateNone", "rawEvent": {"a": [1, 2], "b": "x"},
        "assetMac": ["AA-BB-CC-DD-EE-FF"], "assetIpv4": ["10.1.2.3"], "assetDomain": ["web.example.com"]
    })
}

/// The configuration of every property test: 256 cases from a fixed seed, the same cases on
/// every run (tests are deterministic); change the seed to explore.
pub fn proptest_config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: 256,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6272_6374_6931_3200),
        ..proptest::test_runner::Config::default()
    }
}

/// Strings with the characters that trip parsers: separators, quotes, escapes, digits, wide
/// and invalid-looking characters, long runs.
pub fn nasty_string() -> impl Strategy<Value = String> {
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

pub fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
