//! Dataset rows to STIX 2.1: the mapping table, the row converter and batching into JSON Lines
//! files. Pure computation over readers and a [`BatchSink`]: the server (durable jobs) and the
//! CLI (files on disk) supply their own sinks.

mod engine;
mod indicators;
mod json_out;
pub mod mapping;
#[cfg(test)]
mod props;

pub use engine::{
    Batch, BatchSink, ConvertError, ConvertSummary, FileStore, IocKinds, Settings, StoredFile,
    convert, describe_rejections,
};
pub use mapping::{DEFAULT_MAPPING, Mapping, MappingError, MappingFileError};
