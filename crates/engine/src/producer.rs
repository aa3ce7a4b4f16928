//! The producer of the node's STIX: one identity (`br-cti`), created at one time, that every
//! object the node makes names as its creator (dataset conversions and hidden dangers alike).

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
