//! The producer of the node's STIX: one identity (`br-cti`), created at one time, that every
//! object the node makes names as its creator (dataset conversions and hidden dangers alike).

use br_cti_domain::vocab::Tlp;
use stix::Timestamp;
use stix::objects::{Object, identity};

/// When the producer objects (identity, extension definitions) were defined; also the
/// `created` of objects that carry no time of their own (attack patterns, threat actors,
/// vulnerabilities).
const PRODUCER_EPOCH_MICROS: i64 = 1_795_392_000_000_000; // 2026-11-23T00:00:00Z

pub(crate) fn producer_epoch() -> Timestamp {
    Timestamp::from_micros(PRODUCER_EPOCH_MICROS)
}

/// The identity that creates br-cti's objects.
pub(crate) fn producer_identity_id() -> String {
    stix::sdo_id("identity", b"br-cti data node")
}

/// The identity object itself.
pub(crate) fn producer_identity() -> Object {
    identity(producer_identity_id(), "br-cti", "system", producer_epoch())
}

/// The marking every producer object (identity, extension definitions) carries: they describe
/// the node, are the same in every file and bundle, and are public.
pub(crate) const PRODUCER_TLP: Tlp = Tlp::Clear;

/// The identity with its marking (what files and bundles hold).
pub(crate) fn marked_producer_identity() -> Object {
    let mut o = producer_identity();
    mark(&mut o, Some(PRODUCER_TLP));
    o
}

/// Adds `object_marking_refs` for a TLP level (nothing for `None`).
pub(crate) fn mark(object: &mut Object, tlp: Option<Tlp>) {
    if let Some(t) = tlp {
        object.insert(
            "object_marking_refs".into(),
            serde_json::json!([t.marking_id()]),
        );
    }
}

/// A sighting by the node (`identity`, also where it was seen) of `of`: `count` times from
/// `first` to `last`, in the `observed` observations when they are listed; `seed` names it.
pub(crate) fn node_sighting(
    identity: &str,
    seed: &str,
    of: &str,
    first: Timestamp,
    last: Timestamp,
    count: u64,
    observed: Option<&[String]>,
) -> Object {
    use serde_json::json;
    let mut s = stix::objects::sdo(
        "sighting",
        stix::sdo_id("sighting", seed.as_bytes()),
        first,
        last,
        Some(identity),
    );
    s.insert("first_seen".into(), json!(first.to_string()));
    s.insert("last_seen".into(), json!(last.to_string()));
    s.insert("count".into(), json!(count));
    s.insert("sighting_of_ref".into(), json!(of));
    if let Some(observed) = observed {
        s.insert("observed_data_refs".into(), json!(observed));
    }
    s.insert("where_sighted_refs".into(), json!([identity]));
    s
}

/// A TLP 2.0 marking-definition, exactly as the OASIS TLP 2.0 extension publishes it.
pub fn tlp_marking_definition(tlp: Tlp) -> Object {
    use serde_json::json;
    let mut o = Object::new();
    o.insert("type".into(), json!("marking-definition"));
    o.insert("spec_version".into(), json!("2.1"));
    o.insert("id".into(), json!(tlp.marking_id()));
    o.insert("created".into(), json!("2022-10-01T00:00:00.000Z"));
    o.insert("name".into(), json!(tlp.name()));
    o.insert(
        "extensions".into(),
        json!({
            "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d": {
                "extension_type": "property-extension",
                "tlp_2_0": tlp.as_str(),
            }
        }),
    );
    o
}

/// The marking-definitions a file or bundle holds: the producer objects' and, when another,
/// the data's.
pub(crate) fn marking_definitions(tlp: Option<Tlp>) -> Vec<Object> {
    let mut out = vec![tlp_marking_definition(PRODUCER_TLP)];
    if let Some(t) = tlp.filter(|t| *t != PRODUCER_TLP) {
        out.push(tlp_marking_definition(t));
    }
    out
}
