//! Hidden dangers (described in `docs/hidden-danger.md`): vulnerability findings other
//! platforms report in signed batches. This module turns an item of the wire into a validated
//! [`HiddenDanger`] or says exactly what is wrong with it; it knows nothing about HTTP or
//! storage.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use time::macros::{format_description, offset};

use crate::json::json_kind;
use crate::net::{is_host_name, normalise_mac};
use crate::vocab::{IssueLevel, JudgeState, NoticeState, Worded};

/// Per-item error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ItemCode {
    MissingField,
    FieldTooLong,
    InvalidEnum,
    InvalidIssueIp,
    InvalidTime,
    DuplicateInBatch,
    InvalidParam,
}

impl ItemCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingField => "MISSING_FIELD",
            Self::FieldTooLong => "FIELD_TOO_LONG",
            Self::InvalidEnum => "INVALID_ENUM",
            Self::InvalidIssueIp => "INVALID_ISSUE_IP",
            Self::InvalidTime => "INVALID_TIME",
            Self::DuplicateInBatch => "DUPLICATE_IN_BATCH",
            Self::InvalidParam => "INVALID_PARAM",
        }
    }
}

/// Why one item was refused: the code and a message naming the field.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemError {
    pub code: ItemCode,
    pub message: String,
}

fn err(code: ItemCode, message: impl Into<String>) -> ItemError {
    ItemError {
        code,
        message: message.into(),
    }
}

pub(crate) const CLASSIFY: [&str; 5] =
    ["主机漏洞", "基线漏洞", "WEB漏洞", "数据库漏洞", "其他漏洞"];
/// Items in each asset array, at most.
pub(crate) const MAX_ASSETS: usize = 100;

/// A validated hidden danger, with the wire's field names.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HiddenDanger {
    pub risk_id: String,
    pub issue_name: String,
    pub issue_level: IssueLevel,
    #[serde(rename = "issueIP")]
    pub issue_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue_port: Option<u16>,
    pub classify: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue_solution: Option<String>,
    pub unit_name: String,
    pub asset_domain: Vec<String>,
    pub asset_ipv4: Vec<String>,
    pub asset_ipv6: Vec<String>,
    pub asset_mac: Vec<String>,
    pub start_time: String,
    pub end_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discover_factory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_from: Option<String>,
    pub data_from: String,
    pub judge_state: JudgeState,
    pub notice_state: NoticeState,
    /// Not serialised with the rest: kept apart, byte for byte.
    #[serde(skip)]
    pub raw_event: String,
    #[serde(skip)]
    pub start_ms: i64,
    #[serde(skip)]
    pub end_ms: i64,
}

impl HiddenDanger {
    /// SHA-256 (hex) of `rawEvent`'s bytes.
    pub fn raw_event_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.raw_event.as_bytes()))
    }

    /// The validated fields as stored and shown: JSON with the wire's names, `rawEvent` apart.
    pub fn fields_json(&self) -> String {
        serde_json::to_string(self).expect("serialising plain data cannot fail")
    }

    /// What "the same report again" means: two reports of one `riskId` are the same when their
    /// validated fields and their raw event are byte for byte the same, that is when this
    /// digest is. A store keeps it with the record and answers `Unchanged` (no new revision)
    /// when a report's digest equals the stored one.
    pub fn content_digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.fields_json().as_bytes());
        h.update([0]);
        h.update(self.raw_event.as_bytes());
        hex::encode(h.finalize())
    }

    /// Every address the finding names (issueIP when it is one, and the asset addresses).
    pub fn addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if self.issue_ip.parse::<IpAddr>().is_ok() {
            out.push(self.issue_ip.clone());
        }
        for ip in self.asset_ipv4.iter().chain(&self.asset_ipv6) {
            if !out.contains(ip) {
                out.push(ip.clone());
            }
        }
        out
    }
}

/// One item of `dataValues`, its fields kept as the raw JSON they were sent as.
pub type RawItem = indexmap::IndexMap<String, Box<RawValue>>;

struct Fields<'a> {
    item: &'a RawItem,
}

impl<'a> Fields<'a> {
    fn value(&self, name: &str) -> Result<Option<Value>, ItemError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
                Ok(Value::Null) => Ok(None),
                Ok(v) => Ok(Some(v)),
                Err(e) => Err(err(ItemCode::InvalidParam, format!("{name}: {e}"))),
            },
        }
    }

    /// A text field: a string (numbers are taken as their text), counted in characters.
    fn text(&self, name: &str, max: usize, required: bool) -> Result<Option<String>, ItemError> {
        let s = match self.value(name)? {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Err(err(
                    ItemCode::InvalidParam,
                    format!("{name}: expected a string, got {}", json_kind(&other)),
                ));
            }
        };
        let s = s.filter(|s| !s.trim().is_empty());
        match s {
            None if required => Err(err(ItemCode::MissingField, format!("{name} is required"))),
            None => Ok(None),
            Some(s) => {
                // Text that no database can keep as it is (PostgreSQL refuses it).
                if s.contains('\0') {
                    return Err(err(
                        ItemCode::InvalidParam,
                        format!("{name} holds the character U+0000 (NUL)"),
                    ));
                }
                let n = s.chars().count();
                if n > max {
                    return Err(err(
                        ItemCode::FieldTooLong,
                        format!("{name} has {n} characters; at most {max}"),
                    ));
                }
                Ok(Some(s))
            }
        }
    }

    fn required(&self, name: &str, max: usize) -> Result<String, ItemError> {
        Ok(self.text(name, max, true)?.expect("required"))
    }

    fn strings(&self, name: &str) -> Result<Vec<String>, ItemError> {
        match self.value(name)? {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                if items.len() > MAX_ASSETS {
                    return Err(err(
                        ItemCode::FieldTooLong,
                        format!("{name} has {} entries; at most {MAX_ASSETS}", items.len()),
                    ));
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s.trim().to_string()),
                        other => Err(err(
                            ItemCode::InvalidParam,
                            format!("{name}[{i}]: expected a string, got {}", json_kind(&other)),
                        )),
                    })
                    .collect()
            }
            Some(other) => Err(err(
                ItemCode::InvalidParam,
                format!(
                    "{name}: expected an array of strings, got {}",
                    json_kind(&other)
                ),
            )),
        }
    }
}

/// Parses `yyyy-MM-dd HH:mm:ss`, read as UTC+08:00; milliseconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    let t = time::PrimitiveDateTime::parse(
        s,
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    )
    .ok()?;
    Some((t.assume_offset(offset!(+8)).unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Validates one item. Checks run in the order of the spec's table, so the first problem is
/// reported.
pub fn validate(item: &RawItem) -> Result<HiddenDanger, ItemError> {
    let f = Fields { item };
    let risk_id = f.required("riskId", 50)?;
    let issue_name = f.required("issueName", 100)?;
    let issue_level = match f.value("issueLevel")? {
        None => return Err(err(ItemCode::MissingField, "issueLevel is required")),
        Some(Value::Number(n)) => n.as_u64().and_then(IssueLevel::from_number),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(IssueLevel::from_number),
        Some(_) => None,
    }
    .ok_or_else(|| {
        err(
            ItemCode::InvalidEnum,
            "issueLevel must be 0, 1, 2, 3 or 4 (信息, 低危, 中危, 高危, 紧急)",
        )
    })?;
    let issue_ip = f.required("issueIP", 100)?.trim().to_string();
    if issue_ip.parse::<IpAddr>().is_err() && !is_host_name(&issue_ip) {
        return Err(err(
            ItemCode::InvalidIssueIp,
            format!(
                "issueIP {issue_ip:?} is not an IPv4 or IPv6 address or a host name (no URL, no port)"
            ),
        ));
    }
    let issue_port = match f.value("issuePort")? {
        None => None,
        Some(v) => {
            let port = match &v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) if s.trim().is_empty() => None,
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            match port {
                Some(p) if p <= 65535 => Some(p as u16),
                None if v.as_str().is_some_and(|s| s.trim().is_empty()) => None,
                _ => {
                    return Err(err(
                        ItemCode::InvalidParam,
                        format!("issuePort {v} is not a port (0-65535)"),
                    ));
                }
            }
        }
    };
    let classify_raw = match f.value("classify")? {
        None => return Err(err(ItemCode::MissingField, "classify is required")),
        Some(_) => f.strings("classify")?,
    };
    let mut classify: Vec<String> = Vec::new();
    for c in classify_raw {
        if !CLASSIFY.contains(&c.as_str()) {
            return Err(err(
                ItemCode::InvalidEnum,
                format!("classify: {c:?} is not one of {}", CLASSIFY.join(", ")),
            ));
        }
        if !classify.contains(&c) {
            classify.push(c);
        }
    }
    if classify.is_empty() {
        return Err(err(
            ItemCode::MissingField,
            "classify must name at least one type",
        ));
    }
    let issue_description = f.text("issueDescription", 1000, false)?;
    let issue_solution = f.text("issueSolution", 1000, false)?;
    let unit_name = f.required("unitName", 100)?;
    let asset_domain = f.strings("assetDomain")?;
    if let Some(bad) = asset_domain.iter().find(|d| !is_host_name(d)) {
        return Err(err(
            ItemCode::InvalidParam,
            format!("assetDomain: {bad:?} is not a domain name"),
        ));
    }
    let asset_ipv4 = f.strings("assetIpv4")?;
    if let Some(bad) = asset_ipv4.iter().find(|a| a.parse::<Ipv4Addr>().is_err()) {
        return Err(err(
            ItemCode::InvalidParam,
            format!("assetIpv4: {bad:?} is not an IPv4 address"),
        ));
    }
    let asset_ipv6 = f.strings("assetIpv6")?;
    if let Some(bad) = asset_ipv6.iter().find(|a| a.parse::<Ipv6Addr>().is_err()) {
        return Err(err(
            ItemCode::InvalidParam,
            format!("assetIpv6: {bad:?} is not an IPv6 address"),
        ));
    }
    let mut asset_mac = Vec::new();
    for m in f.strings("assetMac")? {
        asset_mac.push(normalise_mac(&m).ok_or_else(|| {
            err(
                ItemCode::InvalidParam,
                format!("assetMac: {m:?} is not a MAC address"),
            )
        })?);
    }
    let start_time = f.required("startTime", 20)?;
    let start_ms = parse_time(&start_time).ok_or_else(|| {
        err(
            ItemCode::InvalidTime,
            format!("startTime {start_time:?} is not a time as yyyy-MM-dd HH:mm:ss"),
        )
    })?;
    let end_time = f.required("endTime", 20)?;
    let end_ms = parse_time(&end_time).ok_or_else(|| {
        err(
            ItemCode::InvalidTime,
            format!("endTime {end_time:?} is not a time as yyyy-MM-dd HH:mm:ss"),
        )
    })?;
    if end_ms < start_ms {
        return Err(err(
            ItemCode::InvalidTime,
            format!("endTime {end_time} is before startTime {start_time}"),
        ));
    }
    let discover_factory = f.text("discoverFactory", 20, false)?;
    let event_from = f.text("eventFrom", 20, false)?;
    let data_from = f.required("dataFrom", 50)?;
    let judge_state: JudgeState = enumerated(&f, "judgeState")?;
    let notice_state: NoticeState = enumerated(&f, "noticeState")?;
    let raw_event = match item.get("rawEvent") {
        None => None,
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Null) => None,
            Ok(Value::String(s)) => Some(s),
            // An object (or any other JSON) is kept in its serialised form, exactly as sent.
            Ok(_) => Some(raw.get().to_string()),
            Err(e) => return Err(err(ItemCode::InvalidParam, format!("rawEvent: {e}"))),
        },
    }
    .filter(|s| !s.is_empty())
    .ok_or_else(|| err(ItemCode::MissingField, "rawEvent is required"))?;
    if raw_event.contains('\0') {
        return Err(err(
            ItemCode::InvalidParam,
            "rawEvent holds the character U+0000 (NUL)",
        ));
    }
    Ok(HiddenDanger {
        risk_id,
        issue_name,
        issue_level,
        issue_ip,
        issue_port,
        classify,
        issue_description,
        issue_solution,
        unit_name,
        asset_domain,
        asset_ipv4,
        asset_ipv6,
        asset_mac,
        start_time,
        end_time,
        discover_factory,
        event_from,
        data_from,
        judge_state,
        notice_state,
        raw_event,
        start_ms,
        end_ms,
    })
}

fn enumerated<T: Worded>(f: &Fields<'_>, name: &str) -> Result<T, ItemError> {
    let v = f.text(name, 64, true)?.expect("required");
    T::from_word(&v).ok_or_else(|| {
        err(
            ItemCode::InvalidEnum,
            format!("{name}: {v:?} is not one of {}", T::words()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::{item, valid};

    fn code(v: Value) -> ItemCode {
        validate(&item(v)).unwrap_err().code
    }

    #[test]
    fn a_valid_item() {
        let hd = validate(&item(valid())).unwrap();
        assert_eq!(hd.issue_level, IssueLevel::Critical);
        assert_eq!(hd.asset_mac, ["aa:bb:cc:dd:ee:ff"]);
        // The object is kept as it was sent, byte for byte.
        assert_eq!(hd.raw_event, r#"{"a":[1,2],"b":"x"}"#);
        assert_eq!(hd.start_ms, 1_717_200_000_000);
    }

    #[test]
    fn lengths_are_characters() {
        let mut v = valid();
        v["unitName"] = Value::String("单".repeat(100));
        assert!(validate(&item(v.clone())).is_ok());
        v["unitName"] = Value::String("单".repeat(101));
        let e = validate(&item(v)).unwrap_err();
        assert_eq!(e.code, ItemCode::FieldTooLong);
        assert!(e.message.contains("unitName has 101 characters"), "{e:?}");
    }

    #[test]
    fn each_rule_has_its_code() {
        let with = |k: &str, x: Value| {
            let mut v = valid();
            v[k] = x;
            v
        };
        let without = |k: &str| {
            let mut v = valid();
            v.as_object_mut().unwrap().remove(k);
            v
        };
        assert_eq!(code(without("riskId")), ItemCode::MissingField);
        // U+0000 in a text: refused, naming the field (no database keeps it as it is); in an
        // object it stays escaped, as sent.
        for field in ["riskId", "unitName", "rawEvent"] {
            let e = validate(&item(with(field, "a\u{0}b".into()))).unwrap_err();
            assert_eq!(e.code, ItemCode::InvalidParam, "{field}");
            assert!(e.message.contains(&format!("{field} holds")), "{e:?}");
        }
        assert!(validate(&item(with("rawEvent", serde_json::json!({"x": "a\u{0}b"})))).is_ok());
        assert_eq!(code(with("issueName", "".into())), ItemCode::MissingField);
        assert_eq!(code(with("issueLevel", 5.into())), ItemCode::InvalidEnum);
        assert_eq!(code(with("issueLevel", "9".into())), ItemCode::InvalidEnum);
        assert!(validate(&item(with("issueLevel", "3".into()))).is_ok());
        for bad in [
            "http://a.com/x",
            "a.com:80",
            "1.2.3.999",
            "a b",
            "10.0.0.1:80",
        ] {
            assert_eq!(
                code(with("issueIP", bad.into())),
                ItemCode::InvalidIssueIp,
                "{bad}"
            );
        }
        for good in ["2001:db8::1", "host-1.example.cn", "server01"] {
            assert!(
                validate(&item(with("issueIP", good.into()))).is_ok(),
                "{good}"
            );
        }
        assert_eq!(
            code(with("issuePort", 70000.into())),
            ItemCode::InvalidParam
        );
        assert_eq!(
            code(with("classify", serde_json::json!(["未知"]))),
            ItemCode::InvalidEnum
        );
        assert_eq!(
            code(with("classify", serde_json::json!([]))),
            ItemCode::MissingField
        );
        assert_eq!(
            code(with("classify", "主机漏洞".into())),
            ItemCode::InvalidParam
        );
        assert_eq!(
            code(with("startTime", "2024-02-30 08:00:00".into())),
            ItemCode::InvalidTime
        );
        assert_eq!(
            code(with("startTime", "2024-06-01T08:00:00".into())),
            ItemCode::InvalidTime
        );
        assert_eq!(
            code(with("endTime", "2024-06-01 07:59:59".into())),
            ItemCode::InvalidTime
        );
        assert_eq!(
            code(with("judgeState", "yes".into())),
            ItemCode::InvalidEnum
        );
        assert_eq!(
            code(with("noticeState", "noticeStateX".into())),
            ItemCode::InvalidEnum
        );
        assert_eq!(
            code(with("assetIpv4", serde_json::json!(["::1"]))),
            ItemCode::InvalidParam
        );
        assert_eq!(
            code(with("assetIpv6", serde_json::json!(["1.2.3.4"]))),
            ItemCode::InvalidParam
        );
        assert_eq!(
            code(with("assetMac", serde_json::json!(["aa:bb:cc:dd:ee"]))),
            ItemCode::InvalidParam
        );
        assert_eq!(
            code(with("discoverFactory", "x".repeat(21).into())),
            ItemCode::FieldTooLong
        );
        assert_eq!(code(without("rawEvent")), ItemCode::MissingField);
        assert_eq!(
            code(with("issueDescription", "描".repeat(1001).into())),
            ItemCode::FieldTooLong
        );
    }
}
