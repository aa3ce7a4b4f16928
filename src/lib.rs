//! br-cti: a cyber-threat-intelligence data node.
//!
//! The node turns uploaded security datasets into STIX 2.1 and keeps durable records of every
//! step. The HTTP layer (`http`) is thin: it parses requests into domain types and calls the
//! storage (`store`) and dataset (`dataset`) layers, which know nothing about HTTP.

pub mod backup_cli;
pub mod cli;
pub mod config;
pub mod convert;
pub mod cti;
pub mod dataset;
pub mod hash;
pub mod hidden_danger;
pub mod http;
pub mod jobs;
pub mod report_cli;
pub mod store;
pub mod supervise;
pub mod taxii;
pub mod time_util;
pub mod users_cli;

#[cfg(test)]
mod props;
