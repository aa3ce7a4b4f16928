//! Hidden dangers as STIX 2.1: a hidden danger is a sighting of a vulnerability on the assets of
//! an organisation. Per finding: `vulnerability` (name = issueName; a CVE id in the name becomes
//! an external reference), `identity` (organization, name = unitName) and the reporting
//! platform's `identity` (system, name = the reporting user) as `where_sighted_refs`,
//! an `observed-data` with the asset observables (ipv4-addr, ipv6-addr, domain-name, mac-addr),
//! the `sighting` linking them, a `note` with issueSolution, and the remaining fields in one
//! property-extension on the sighting. Ids are deterministic: the same finding exports the same
//! ids on any node; a new revision keeps its ids and advances `modified`.

use std::collections::HashSet;
use std::io::{self, Seek, SeekFrom, Write};
use std::net::IpAddr;

use serde_json::{Map, Value, json};
use sha2::Digest;
use stix::objects::{Object, identity, property_extension_definition, sco, sdo};
use stix::{BundleWriter, SdoIdBuilder, Timestamp, sdo_id};

use crate::producer::{
    PRODUCER_TLP, mark, marked_producer_identity, producer_epoch, producer_identity_id,
    tlp_marking_definition,
};
use br_cti_domain::model::StoredHiddenDanger;
use br_cti_domain::vocab::Tlp;

/// The property-extension holding the fields STIX has no property for.
pub(crate) fn extension_id() -> String {
    sdo_id("extension-definition", b"br-cti hidden danger v1")
}

fn extension_definition() -> Object {
    property_extension_definition(
        extension_id(),
        &producer_identity_id(),
        producer_epoch(),
        "br-cti hidden danger",
        "The fields of a hidden-danger report (addHiddenDanger) that have no standard STIX property.",
        "A property-extension on a sighting with: risk_id (string, the reporter's id of the \
         finding), reported_by (string, the reporting user), issue_level (integer 0-4: info, low, \
         medium, high, critical), classify (list of strings), issue_ip (string), issue_port \
         (integer), judge_state, notice_state, data_from, event_from, discover_factory (strings), \
         revision (integer), raw_event_sha256 (string, SHA-256 of the raw event as received).",
        "1.0",
    )
}

fn ms(t: i64) -> String {
    Timestamp::from_millis(t).to_millis_string()
}

/// The first CVE id in a text (`CVE-YYYY-NNNN…`), upper-cased.
pub(crate) fn cve_in(text: &str) -> Option<String> {
    let upper = text.to_ascii_uppercase();
    let bytes = upper.as_bytes();
    let mut from = 0;
    while let Some(pos) = upper[from..].find("CVE-") {
        let start = from + pos;
        let rest = &bytes[start + 4..];
        let year = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if year == 4 && rest.get(4) == Some(&b'-') {
            let seq = rest[5..].iter().take_while(|b| b.is_ascii_digit()).count();
            if seq >= 4 {
                return Some(upper[start..start + 9 + seq].to_string());
            }
        }
        from = start + 4;
    }
    None
}

fn text<'a>(data: &'a Value, key: &str) -> Option<&'a str> {
    data.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn strings<'a>(data: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    data.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn address_sco(value: &str) -> Object {
    let kind = match value.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => "ipv4-addr",
        Ok(IpAddr::V6(_)) => "ipv6-addr",
        Err(_) => "domain-name",
    };
    let mut p = Map::new();
    p.insert("value".into(), json!(value));
    sco(kind, p)
}

/// A stored hidden danger whose fields do not read back.
#[derive(Debug, thiserror::Error)]
#[error("stored hidden danger {id} is unreadable: {detail}")]
pub struct UnreadableHiddenDanger {
    pub id: i64,
    pub detail: String,
}

/// The STIX objects of one stored hidden danger (shared objects included; the caller
/// deduplicates by id).
pub fn objects(hd: &StoredHiddenDanger, tlp: Tlp) -> Result<Vec<Object>, UnreadableHiddenDanger> {
    let unreadable = |detail: String| UnreadableHiddenDanger { id: hd.id, detail };
    let data: Value = serde_json::from_str(&hd.data).map_err(|e| unreadable(e.to_string()))?;
    let producer = producer_identity_id();
    let seed = format!("{}\u{0}{}", hd.user, hd.risk_id);
    let created = Timestamp::from_millis(hd.created_at);
    let modified = Timestamp::from_millis(hd.updated_at.max(hd.created_at));
    let start =
        br_cti_domain::hidden_danger::parse_time(text(&data, "startTime").unwrap_or_default())
            .ok_or_else(|| unreadable("startTime does not parse".into()))?;
    let end = br_cti_domain::hidden_danger::parse_time(text(&data, "endTime").unwrap_or_default())
        .ok_or_else(|| unreadable("endTime does not parse".into()))?;
    let mut out = Vec::new();

    // The platform that reported it: where the finding was seen, beside the organisation.
    // Objects several hidden dangers share carry the marking in their id's seed: one id, one
    // content, whatever marking each reporting platform's findings have.
    let marked = |seed: String| format!("{seed}\u{0}{}", tlp.as_str());
    let platform_id = sdo_id(
        "identity",
        marked(format!("platform\u{0}{}", hd.user)).as_bytes(),
    );
    out.push(identity(
        platform_id.clone(),
        &hd.user,
        "system",
        producer_epoch(),
    ));

    let unit = text(&data, "unitName").unwrap_or_default();
    let org_id = sdo_id(
        "identity",
        marked(format!("organization\u{0}{unit}")).as_bytes(),
    );
    out.push(identity(
        org_id.clone(),
        unit,
        "organization",
        producer_epoch(),
    ));

    let name = text(&data, "issueName").unwrap_or_default();
    let vuln_id = sdo_id(
        "vulnerability",
        marked(format!("name\u{0}{name}")).as_bytes(),
    );
    let mut vuln = sdo(
        "vulnerability",
        vuln_id.clone(),
        producer_epoch(),
        producer_epoch(),
        Some(&producer),
    );
    vuln.insert("name".into(), json!(name));
    if let Some(cve) = cve_in(name) {
        vuln.insert(
            "external_references".into(),
            json!([{"source_name": "cve", "external_id": cve}]),
        );
    }
    out.push(vuln);

    let mut refs: Vec<String> = Vec::new();
    let mut add = |o: Object, out: &mut Vec<Object>| {
        let id = o["id"].as_str().unwrap_or_default().to_string();
        if !refs.contains(&id) {
            refs.push(id);
            out.push(o);
        }
    };
    if let Some(ip) = text(&data, "issueIP") {
        add(address_sco(ip), &mut out);
    }
    for v in strings(&data, "assetIpv4")
        .chain(strings(&data, "assetIpv6"))
        .chain(strings(&data, "assetDomain"))
    {
        add(address_sco(v), &mut out);
    }
    for mac in strings(&data, "assetMac") {
        let mut p = Map::new();
        p.insert("value".into(), json!(mac));
        add(sco("mac-addr", p), &mut out);
    }

    let od_id = sdo_id("observed-data", seed.as_bytes());
    let mut od = sdo(
        "observed-data",
        od_id.clone(),
        created,
        modified,
        Some(&producer),
    );
    od.insert("first_observed".into(), json!(ms(start)));
    od.insert("last_observed".into(), json!(ms(end)));
    od.insert("number_observed".into(), json!(1));
    od.insert("object_refs".into(), json!(refs));
    out.push(od);

    let sighting_id = sdo_id("sighting", seed.as_bytes());
    let mut s = sdo(
        "sighting",
        sighting_id.clone(),
        created,
        modified,
        Some(&producer),
    );
    if let Some(d) = text(&data, "issueDescription") {
        s.insert("description".into(), json!(d));
    }
    s.insert("first_seen".into(), json!(ms(start)));
    s.insert("last_seen".into(), json!(ms(end)));
    // One finding, reported once (a revision updates this sighting rather than adding one).
    s.insert("count".into(), json!(1));
    s.insert("sighting_of_ref".into(), json!(vuln_id));
    s.insert("observed_data_refs".into(), json!([od_id]));
    s.insert("where_sighted_refs".into(), json!([platform_id, org_id]));
    let mut ext = Map::new();
    ext.insert("extension_type".into(), json!("property-extension"));
    ext.insert("risk_id".into(), json!(hd.risk_id));
    ext.insert("reported_by".into(), json!(hd.user));
    ext.insert("issue_level".into(), data["issueLevel"].clone());
    ext.insert("classify".into(), data["classify"].clone());
    ext.insert("issue_ip".into(), data["issueIP"].clone());
    if let Some(p) = data.get("issuePort").filter(|p| !p.is_null()) {
        ext.insert("issue_port".into(), p.clone());
    }
    for (wire, prop) in [
        ("judgeState", "judge_state"),
        ("noticeState", "notice_state"),
        ("dataFrom", "data_from"),
        ("eventFrom", "event_from"),
        ("discoverFactory", "discover_factory"),
    ] {
        if let Some(v) = text(&data, wire) {
            ext.insert(prop.into(), json!(v));
        }
    }
    ext.insert("revision".into(), json!(hd.revision));
    ext.insert("raw_event_sha256".into(), json!(hd.raw_event_sha256));
    s.insert(
        "extensions".into(),
        json!({ extension_id(): Value::Object(ext) }),
    );
    out.push(s);

    if let Some(solution) = text(&data, "issueSolution") {
        let mut note = sdo(
            "note",
            sdo_id("note", seed.as_bytes()),
            created,
            modified,
            Some(&producer),
        );
        note.insert("abstract".into(), json!(format!("Solution: {name}")));
        note.insert("content".into(), json!(solution));
        note.insert("object_refs".into(), json!([sighting_id, vuln_id]));
        out.push(note);
    }
    for o in &mut out {
        mark(o, Some(tlp));
    }
    Ok(out)
}

/// The objects every export references: the producer identity, the extension definition and
/// the marking-definitions of every TLP level (reporting platforms may have any).
pub fn producer_objects() -> Vec<Object> {
    let mut extension = extension_definition();
    mark(&mut extension, Some(PRODUCER_TLP));
    let mut out = vec![marked_producer_identity(), extension];
    out.extend(Tlp::ALL.iter().map(|t| tlp_marking_definition(*t)));
    out
}

/// Writes one bundle holding every object of the hidden dangers `scan` hands over (each object
/// once) and the producer identity and extension definition they reference; memory stays
/// bounded whatever their number: objects go to `out` as they are made, and the bundle id
/// (derived from every hidden danger's user, riskId and revision) is written over a
/// placeholder of the same length at the end. Only objects that several hidden dangers can
/// share (organisations, vulnerabilities, observables) are remembered, by a 128-bit digest of
/// their id, to write them once.
pub fn write_bundle<W: Write + Seek>(
    mut out: W,
    mut tlp_of: impl FnMut(&StoredHiddenDanger) -> io::Result<Tlp>,
    scan: impl FnOnce(&mut dyn FnMut(&StoredHiddenDanger) -> io::Result<()>) -> io::Result<()>,
) -> io::Result<W> {
    const HEAD: &[u8] = b"{\"type\":\"bundle\",\"id\":\"";
    let start = out.stream_position()?;
    let placeholder = format!("bundle--{}", uuid::Uuid::nil());
    let mut bundle = BundleWriter::begin(out, &placeholder)?;
    for o in producer_objects() {
        bundle.write_object(&o)?;
    }
    let mut bundle_id = SdoIdBuilder::new("bundle");
    let mut shared: HashSet<u128> = HashSet::new();
    scan(&mut |hd| {
        bundle_id.update(format!("{}\u{0}{}\u{0}{};", hd.user, hd.risk_id, hd.revision).as_bytes());
        let tlp = tlp_of(hd)?;
        for o in objects(hd, tlp).map_err(io::Error::other)? {
            let kind = o["type"].as_str().unwrap_or_default();
            let own = matches!(kind, "observed-data" | "sighting" | "note");
            if own || shared.insert(id_digest(o["id"].as_str().unwrap_or_default())) {
                bundle.write_object(&o)?;
            }
        }
        Ok(())
    })?;
    let mut out = bundle.finish()?;
    let end = out.stream_position()?;
    let id = bundle_id.finish();
    debug_assert_eq!(id.len(), placeholder.len());
    out.seek(SeekFrom::Start(start + HEAD.len() as u64))?;
    out.write_all(id.as_bytes())?;
    out.seek(SeekFrom::Start(end))?;
    Ok(out)
}

/// 128 bits of an object id's SHA-256.
fn id_digest(id: &str) -> u128 {
    let digest = sha2::Sha256::digest(id.as_bytes());
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cve_ids() {
        assert_eq!(
            cve_in("Apache Log4j2 远程代码执行 cve-2021-44228 漏洞").as_deref(),
            Some("CVE-2021-44228")
        );
        assert_eq!(
            cve_in("CVE-21-1 and CVE-2024-123456x").as_deref(),
            Some("CVE-2024-123456")
        );
        assert_eq!(cve_in("弱口令"), None);
    }
}
