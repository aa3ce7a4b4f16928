//! The node's domain: the values every other crate speaks in. Content hashes, record times,
//! the records the node keeps (files, tasks, jobs, STIX and CTI records, hidden dangers, TAXII
//! objects), and the validation of a reported hidden danger. No I/O: nothing here opens a file,
//! a socket or a database.

pub mod error;
pub mod hash;
pub mod hidden_danger;
pub mod io;
pub mod ioc;
pub mod job;
pub mod json;
pub mod model;
pub mod net;
pub mod time;
pub mod vocab;

#[cfg(test)]
mod props;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
