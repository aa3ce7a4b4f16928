//! The application: the node's configuration, the durable job scheduler (conversions and CTI
//! builds), the TAXII collections and their publisher, and the signs, replay cache and rate
//! limits of the report interface; the use cases of conversions and CTI builds (`conversion`)
//! and the one error they answer (`error`). It sees storage only through the `br-cti-store`
//! traits.

pub mod config;
pub mod conversion;
pub mod error;
pub mod hidden_danger_auth;
pub mod jobs;
pub mod reports;
pub mod taxii;
pub mod users;
