//! The mapping table: which dataset column goes to which STIX property.
//!
//! Format (the old br-cti table's): CSV with a header `dataset_field,stix_object,
//! object_property,transformation`; lines starting with `#` are comments. Column names are
//! matched exactly (case matters: `protocol` and `Protocol` are two entries).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// The default table, embedded in the binary.
pub const DEFAULT_MAPPING: &str = include_str!("default_mapping.csv");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    Src,
    Dst,
}

/// Where a column's value goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The flow's source or destination address (`src_ref`/`dst_ref`): an ipv4-addr,
    /// ipv6-addr or domain-name object chosen by the value.
    Address(End),
    /// An address observed in the row that is not a flow end.
    Observable,
    Port(End),
    Protocols,
    Packets(End),
    ByteCount(End),
    FlowStart,
    FlowEnd,
    FirstObserved,
    LastObserved,
    Url,
    Payload,
    /// The payload artifact's `mime_type`, when the value is a media type (else data).
    MimeType,
    AttackPattern,
    ThreatActor,
    /// Kept in the property-extension (explicitly).
    Extension,
}

#[derive(Debug, Clone)]
pub struct Mapping {
    by_column: HashMap<String, Target>,
    digest: String,
}

#[derive(Debug, thiserror::Error)]
#[error("mapping line {line}: {detail}")]
pub struct MappingError {
    pub line: u64,
    pub detail: String,
}

fn target_of(field: &str, object: &str, property: &str) -> Result<Target, String> {
    let lower_field = field.to_ascii_lowercase();
    let guess_end = || {
        if lower_field.starts_with("src")
            || lower_field.starts_with("source")
            || lower_field.starts_with("s_")
        {
            Some(End::Src)
        } else if lower_field.starts_with("dst")
            || lower_field.starts_with("dest")
            || lower_field.starts_with("d_")
        {
            Some(End::Dst)
        } else {
            None
        }
    };
    let norm_object: String = object
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    Ok(match (norm_object.as_str(), property) {
        ("networktraffic", "src_ref") => Target::Address(End::Src),
        ("networktraffic", "dst_ref") => Target::Address(End::Dst),
        ("networktraffic", "src_port") => Target::Port(End::Src),
        ("networktraffic", "dst_port") => Target::Port(End::Dst),
        ("networktraffic", "protocols") => Target::Protocols,
        ("networktraffic", "src_packets") => Target::Packets(End::Src),
        ("networktraffic", "dst_packets") => Target::Packets(End::Dst),
        ("networktraffic", "src_byte_count") => Target::ByteCount(End::Src),
        ("networktraffic", "dst_byte_count") => Target::ByteCount(End::Dst),
        ("networktraffic", "start") => Target::FlowStart,
        ("networktraffic", "end") => Target::FlowEnd,
        // The old table's form: an address object's value; its role comes from the name.
        ("ipv4address" | "ipv6address" | "domainname" | "ipv4addr" | "ipv6addr", "value") => {
            guess_end()
                .map(Target::Address)
                .unwrap_or(Target::Observable)
        }
        ("url", "value") => Target::Url,
        ("artifact", "payload_bin") => Target::Payload,
        ("artifact", "mime_type") => Target::MimeType,
        ("attackpattern", "name") => Target::AttackPattern,
        ("threatactor", "name") => Target::ThreatActor,
        ("observeddata", "first_observed") => Target::FirstObserved,
        ("observeddata", "last_observed") => Target::LastObserved,
        ("extension" | "none", _) => Target::Extension,
        _ => {
            return Err(format!(
                "{object}.{property} is not a supported target (see the README's mapping section)"
            ));
        }
    })
}

const TRANSFORMATIONS: &[&str] = &["none", "list", "base64", "iso", "ip", "url", "label", ""];

/// Why a mapping file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MappingFileError {
    #[error("cannot read mapping {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("mapping {path}: {cause}")]
    Table { path: String, cause: MappingError },
}

impl Mapping {
    /// Reads and checks a mapping table file (a node's `--mapping`, a named mapping in the data
    /// directory, the CLI's `--mapping`); answers its text (what a job keeps) and the table.
    pub fn read_file(path: &std::path::Path) -> Result<(String, Mapping), MappingFileError> {
        let text = std::fs::read_to_string(path).map_err(|cause| MappingFileError::Read {
            path: path.display().to_string(),
            cause,
        })?;
        let mapping = Mapping::parse(&text).map_err(|cause| MappingFileError::Table {
            path: path.display().to_string(),
            cause,
        })?;
        Ok((text, mapping))
    }

    pub fn default_table() -> Self {
        Self::parse(DEFAULT_MAPPING).expect("the embedded mapping is valid")
    }

    pub fn parse(text: &str) -> Result<Self, MappingError> {
        let mut reader = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header = reader.headers().map_err(|e| MappingError {
            line: 1,
            detail: e.to_string(),
        })?;
        let expected = [
            "dataset_field",
            "stix_object",
            "object_property",
            "transformation",
        ];
        if header.iter().take(4).ne(expected.iter().copied()) {
            return Err(MappingError {
                line: 1,
                detail: format!("the header must be `{}`", expected.join(",")),
            });
        }
        let mut by_column = HashMap::new();
        let mut canonical = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| MappingError {
                line: e.position().map(|p| p.line()).unwrap_or(0),
                detail: e.to_string(),
            })?;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            let err = |detail: String| MappingError { line, detail };
            if record.len() < 3 {
                return Err(err(format!("{} fields; expected 4", record.len())));
            }
            let (field, object, property) = (&record[0], &record[1], &record[2]);
            let transformation = record.get(3).unwrap_or("");
            if field.is_empty() {
                return Err(err("dataset_field is empty".into()));
            }
            if !TRANSFORMATIONS.contains(&transformation) {
                return Err(err(format!(
                    "unknown transformation {transformation:?} (one of none, list, base64, iso, ip, url, label)"
                )));
            }
            let target = target_of(field, object, property).map_err(err)?;
            if by_column.insert(field.to_string(), target).is_some() {
                return Err(err(format!("dataset_field {field:?} is listed twice")));
            }
            canonical.push(format!("{field}\u{1f}{target:?}"));
        }
        canonical.sort();
        let digest = hex::encode(Sha256::digest(canonical.join("\u{1e}").as_bytes()));
        Ok(Self { by_column, digest })
    }

    pub fn target(&self, column: &str) -> Option<Target> {
        self.by_column.get(column).copied()
    }

    /// A digest of what the mapping does (not of its text: comments and order do not count).
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_fixes_the_old_defects() {
        let m = Mapping::default_table();
        assert_eq!(m.target("src"), Some(Target::Address(End::Src)));
        assert_eq!(m.target("dst"), Some(Target::Address(End::Dst)));
        assert_eq!(m.target("Protocol"), Some(Target::Protocols));
        assert_eq!(m.target("port_no"), None);
        assert_eq!(m.target("action"), None);
        assert_eq!(m.target("payload"), Some(Target::Payload));
    }

    #[test]
    fn old_table_format_is_accepted() {
        let old = include_str!("../../../../tests/fixtures/br-cti-feature-mapping.csv");
        let m = Mapping::parse(old).unwrap();
        assert_eq!(m.target("src"), Some(Target::Address(End::Src)));
        assert_eq!(m.target("destinationIP"), Some(Target::Address(End::Dst)));
        assert_eq!(m.target("time"), Some(Target::FirstObserved));
    }

    #[test]
    fn errors_name_the_line() {
        let e = Mapping::parse(
            "dataset_field,stix_object,object_property,transformation\na,Foo,bar,none\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.detail.contains("Foo.bar"), "{e}");
        let e = Mapping::parse("x,y\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = Mapping::parse(
            "dataset_field,stix_object,object_property,transformation\na,URL,value,rot13\n",
        )
        .unwrap_err();
        assert!(e.detail.contains("rot13"));
    }

    #[test]
    fn digest_ignores_comments_and_order() {
        let a = Mapping::parse("dataset_field,stix_object,object_property,transformation\na,URL,value,url\nb,NetworkTraffic,protocols,list\n").unwrap();
        let b = Mapping::parse("dataset_field,stix_object,object_property,transformation\n# c\nb,NetworkTraffic,protocols,list\na,URL,value,url\n").unwrap();
        assert_eq!(a.digest(), b.digest());
    }
}
