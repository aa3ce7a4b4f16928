//! The engine: what the node does to data, with no storage and no network. Dataset readers
//! (format and encoding detection, bounded streaming rows), the row → STIX conversion and its
//! mapping table, CTI statistics and offline GeoIP, hidden dangers as STIX, and the panic
//! isolation the converting threads run under.

pub mod convert;
pub mod cti;
pub mod dataset;
pub mod grouping;
pub mod hidden_danger_stix;
mod producer;
pub mod supervise;

pub use producer::tlp_marking_definition;
