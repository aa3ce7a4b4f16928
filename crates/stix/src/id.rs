//! STIX identifiers.
//!
//! Cyber-observable objects: UUIDv5 in the OASIS namespace over the canonical JSON of the
//! object's id-contributing properties that are present (python-stix2's algorithm).
//! Domain objects: version-4 UUIDs whose 122 free bits come from a SHA-256 of what the object
//! stands for, so that output is reproducible and the validator is satisfied.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::jcs::write_canonical;

/// `00abedb4-aa42-466c-9c01-fed23315a9b7`, the STIX 2.1 namespace for SCO identifiers.
pub const SCO_NAMESPACE: Uuid = Uuid::from_u128(0x00abedb4_aa42_466c_9c01_fed23315a9b7);

/// The id-contributing properties of each SCO type (STIX 2.1 section 6), `None` for types
/// that have none (their ids are random).
pub fn id_contributing_properties(sco_type: &str) -> Option<&'static [&'static str]> {
    Some(match sco_type {
        "artifact" => &["hashes", "payload_bin"],
        "autonomous-system" => &["number"],
        "directory" => &["path"],
        "domain-name" | "email-addr" | "ipv4-addr" | "ipv6-addr" | "mac-addr" | "url" => &["value"],
        "email-message" => &["from_ref", "subject", "body"],
        "file" => &["hashes", "name", "extensions", "parent_directory_ref"],
        "mutex" => &["name"],
        "network-traffic" => &[
            "start",
            "end",
            "src_ref",
            "dst_ref",
            "src_port",
            "dst_port",
            "protocols",
            "extensions",
        ],
        "software" => &["name", "cpe", "swid", "vendor", "version"],
        "user-account" => &["account_type", "user_id", "account_login"],
        "windows-registry-key" => &["key", "values"],
        "x509-certificate" => &["hashes", "serial_number"],
        _ => return None,
    })
}

/// Of several hashes only one contributes: MD5, else SHA-1, else SHA-256, else SHA-512, else
/// the first one given.
fn choose_one_hash(hashes: &Map<String, Value>) -> Option<(String, Value)> {
    for k in ["MD5", "SHA-1", "SHA-256", "SHA-512"] {
        if let Some(v) = hashes.get(k) {
            return Some((k.to_string(), v.clone()));
        }
    }
    hashes.iter().next().map(|(k, v)| (k.clone(), v.clone()))
}

/// The deterministic id of an SCO of type `sco_type` with properties `props` (any `id` or
/// `type` in `props` is ignored). `None` when the type has no id-contributing properties or
/// none of them is present (python-stix2 then draws a random UUIDv4).
pub fn sco_id(sco_type: &str, props: &Map<String, Value>) -> Option<String> {
    let contributing = id_contributing_properties(sco_type)?;
    let mut streamlined = Map::new();
    for &key in contributing {
        let Some(value) = props.get(key) else {
            continue;
        };
        if key == "hashes" {
            if let Some((k, v)) = value.as_object().and_then(choose_one_hash) {
                let mut one = Map::new();
                one.insert(k, v);
                streamlined.insert(key.to_string(), Value::Object(one));
            }
        } else {
            streamlined.insert(key.to_string(), value.clone());
        }
    }
    if streamlined.is_empty() {
        return None;
    }
    let mut canonical = String::with_capacity(64);
    write_canonical(&Value::Object(streamlined), &mut canonical);
    Some(sco_id_from_canonical(sco_type, &canonical))
}

/// The id of an SCO whose streamlined canonical JSON is already known (a fast path for
/// callers that build it directly, e.g. `{"value":"198.51.100.3"}`).
pub fn sco_id_from_canonical(sco_type: &str, canonical: &str) -> String {
    // UUIDv5 = SHA-1(namespace || name) with version and variant bits set. Computed with the
    // `sha1` crate, which uses the CPU's SHA instructions (the `uuid` crate's portable SHA-1
    // took a tenth of the conversion's run time).
    let mut h = <sha1::Sha1 as sha1::Digest>::new();
    sha1::Digest::update(&mut h, SCO_NAMESPACE.as_bytes());
    sha1::Digest::update(&mut h, canonical.as_bytes());
    let digest = sha1::Digest::finalize(h);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    typed_id(sco_type, uuid::Builder::from_sha1_bytes(bytes).into_uuid())
}

/// `type--uuid`, formatted without `fmt` machinery (ids are made for every row).
fn typed_id(object_type: &str, uuid: Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid.hyphenated().encode_lower(&mut buf);
    let mut id = String::with_capacity(object_type.len() + 2 + text.len());
    id.push_str(object_type);
    id.push_str("--");
    id.push_str(text);
    id
}

/// A reproducible version-4 UUID id for a domain object (SDO, SRO, bundle, ...): the UUID's
/// free bits are the first bytes of SHA-256(`type` NUL `seed`).
pub fn sdo_id(sdo_type: &str, seed: &[u8]) -> String {
    let mut id = SdoIdBuilder::new(sdo_type);
    id.update(seed);
    id.finish()
}

/// [`sdo_id`] for a seed that arrives in pieces (a seed too large to hold): the same id as
/// `sdo_id(sdo_type, &pieces.concat())`.
pub struct SdoIdBuilder {
    sdo_type: String,
    hash: Sha256,
}

impl SdoIdBuilder {
    pub fn new(sdo_type: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(sdo_type.as_bytes());
        hash.update([0]);
        SdoIdBuilder {
            sdo_type: sdo_type.to_string(),
            hash,
        }
    }

    pub fn update(&mut self, piece: &[u8]) {
        self.hash.update(piece);
    }

    pub fn finish(self) -> String {
        let digest = self.hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        typed_id(
            &self.sdo_type,
            uuid::Builder::from_random_bytes(bytes).into_uuid(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn stix_spec_test_vector() {
        assert_eq!(
            sco_id("ipv4-addr", &obj(json!({"value": "198.51.100.3"}))).unwrap(),
            "ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4"
        );
    }

    #[test]
    fn v5_matches_the_uuid_crate() {
        for name in ["{\"value\":\"a\"}", "", "{\"value\":\"\u{4e2d}\"}"] {
            let ours = sco_id_from_canonical("url", name);
            assert_eq!(
                ours,
                format!("url--{}", Uuid::new_v5(&SCO_NAMESPACE, name.as_bytes()))
            );
        }
    }

    #[test]
    fn only_one_hash_counts() {
        let a = sco_id(
            "artifact",
            &obj(json!({"hashes": {"SHA-256": "aa", "MD5": "bb"}})),
        )
        .unwrap();
        let b = sco_id("artifact", &obj(json!({"hashes": {"MD5": "bb"}}))).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn no_contributing_properties() {
        assert_eq!(sco_id("process", &obj(json!({"pid": 1}))), None);
        assert_eq!(sco_id("url", &obj(json!({}))), None);
    }

    #[test]
    fn sdo_ids_are_version_4_and_stable() {
        let a = sdo_id("observed-data", b"row 1");
        assert_eq!(a, sdo_id("observed-data", b"row 1"));
        let mut pieces = SdoIdBuilder::new("observed-data");
        pieces.update(b"ro");
        pieces.update(b"w 1");
        assert_eq!(pieces.finish(), a);
        assert_ne!(a, sdo_id("observed-data", b"row 2"));
        let uuid = Uuid::parse_str(a.strip_prefix("observed-data--").unwrap()).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
    }
}
