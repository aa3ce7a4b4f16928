//! CTI records: what a publisher puts on a sharing chain, built from STIX records with
//! statistics that are true (occurrences counted in the STIX objects, locations from an offline
//! database or labelled unknown).

pub mod geo;
pub mod stats;
