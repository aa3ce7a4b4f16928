//! Constructors for the STIX objects br-cti emits. Each returns a JSON object with `type`,
//! `spec_version` and `id` first, then the type's required properties.

use serde_json::{Map, Value, json};

use crate::id::{sco_id, sdo_id};
use crate::timestamp::Timestamp;

pub type Object = Map<String, Value>;

/// A cyber-observable object of `sco_type` with `props`, its id computed deterministically.
/// Types without id-contributing properties get an id derived from `props` the way domain
/// objects do (never random).
pub fn sco(sco_type: &str, props: Map<String, Value>) -> Object {
    let id = sco_id(sco_type, &props).unwrap_or_else(|| {
        sdo_id(
            sco_type,
            serde_json::to_string(&props).unwrap_or_default().as_bytes(),
        )
    });
    let mut o = Map::with_capacity(props.len() + 3);
    o.insert("type".into(), Value::String(sco_type.into()));
    o.insert("spec_version".into(), Value::String("2.1".into()));
    o.insert("id".into(), Value::String(id));
    o.extend(props);
    o
}

/// The common head of a domain object: type, spec_version, id, created, modified (both to the
/// millisecond, as STIX requires), and `created_by_ref` when given.
pub fn sdo(
    sdo_type: &str,
    id: String,
    created: Timestamp,
    modified: Timestamp,
    created_by_ref: Option<&str>,
) -> Object {
    let mut o = Map::new();
    o.insert("type".into(), json!(sdo_type));
    o.insert("spec_version".into(), json!("2.1"));
    o.insert("id".into(), json!(id));
    if let Some(by) = created_by_ref {
        o.insert("created_by_ref".into(), json!(by));
    }
    o.insert("created".into(), json!(created.to_millis_string()));
    o.insert("modified".into(), json!(modified.to_millis_string()));
    o
}

/// An `identity` (e.g. the producer of the data, or an organisation where something was seen).
pub fn identity(id: String, name: &str, identity_class: &str, created: Timestamp) -> Object {
    let mut o = sdo("identity", id, created, created, None);
    o.insert("name".into(), json!(name));
    o.insert("identity_class".into(), json!(identity_class));
    o
}

/// An `extension-definition` of a property-extension.
#[allow(clippy::too_many_arguments)]
pub fn property_extension_definition(
    id: String,
    created_by_ref: &str,
    created: Timestamp,
    name: &str,
    description: &str,
    schema: &str,
    version: &str,
) -> Object {
    let mut o = sdo(
        "extension-definition",
        id,
        created,
        created,
        Some(created_by_ref),
    );
    o.insert("name".into(), json!(name));
    o.insert("description".into(), json!(description));
    o.insert("schema".into(), json!(schema));
    o.insert("version".into(), json!(version));
    o.insert("extension_types".into(), json!(["property-extension"]));
    o
}

/// A bundle head (`objects` is written by [`crate::BundleWriter`]).
pub fn bundle_id(seed: &[u8]) -> String {
    sdo_id("bundle", seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sco_has_head_and_props() {
        let mut p = Map::new();
        p.insert("value".into(), json!("198.51.100.3"));
        let o = sco("ipv4-addr", p);
        assert_eq!(
            Value::Object(o).to_string(),
            r#"{"type":"ipv4-addr","spec_version":"2.1","id":"ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4","value":"198.51.100.3"}"#
        );
    }
}
