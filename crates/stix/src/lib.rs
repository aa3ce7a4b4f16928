//! STIX 2.1 for br-cti: canonical JSON (RFC 8785), deterministic identifiers exactly as OASIS
//! python-stix2 computes them, constructors for the objects br-cti emits, and JSON Lines and
//! bundle writers over [`std::io::Write`]. No other I/O.
//!
//! Objects are `serde_json::Map`s in insertion order: STIX is an open, extensible JSON format,
//! and a map keeps every property a producer adds while the constructors here guarantee the
//! required ones.

pub mod id;
pub mod jcs;
pub mod objects;
pub mod pattern;
pub mod timestamp;
pub mod write;

pub use id::{SCO_NAMESPACE, SdoIdBuilder, sco_id, sdo_id};
pub use jcs::{canonical_json, write_canonical};
pub use objects::Object;
pub use timestamp::Timestamp;
pub use write::{BundleWriter, write_jsonl_line};
