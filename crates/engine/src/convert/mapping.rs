//! The mapping table: which dataset column goes to which STIX property.
//!
//! Format (the old br-cti table's): CSV with a header `dataset_field,stix_object,
//! object_property,transformation`; lines starting with `#` are comments. Column names are
//! matched exactly (case matters: `protocol` and `Protocol` are two entries).
//!
//! Two more kinds of row name attacks rather than map columns:
//! - `COLUMN=VALUE,AttackName,NAME,` gives the attack a row names with that value (a numeric
//!   class label, say) a readable name: `label=1,AttackName,DDoS flood,`.
//! - `NAME,AttackTechnique,SOURCE,ID,` links attacks so named (compared ignoring case, spaces
//!   and punctuation) to a technique of MITRE ATT&CK (`mitre-attack`, `T1498` or `T1498.001`)
//!   or CAPEC (`capec`, `CAPEC-66`): the attack-pattern carries it in `external_references`.

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
    /// `column=value` → the attack's readable name.
    attack_names: HashMap<String, String>,
    /// Attack name (normalised, see [`technique_key`]) → the technique it is.
    techniques: HashMap<String, Technique>,
    digest: String,
}

/// A technique of a public catalogue that an attack name stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Technique {
    /// `mitre-attack` or `capec`.
    pub source_name: String,
    /// `T1498`, `T1498.001`, `CAPEC-66`.
    pub external_id: String,
    pub url: String,
}

impl Technique {
    fn parse(source: &str, id: &str) -> Result<Technique, String> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let url = match source {
            "mitre-attack" => {
                let (main, sub) = match id.split_once('.') {
                    Some((m, s)) => (m, Some(s)),
                    None => (id, None),
                };
                let ok = main.len() == 5
                    && main.starts_with('T')
                    && digits(&main[1..])
                    && sub.is_none_or(|s| s.len() == 3 && digits(s));
                if !ok {
                    return Err(format!(
                        "{id:?} is not an ATT&CK technique id (T1234 or T1234.001)"
                    ));
                }
                match sub {
                    Some(sub) => format!("https://attack.mitre.org/techniques/{main}/{sub}/"),
                    None => format!("https://attack.mitre.org/techniques/{main}/"),
                }
            }
            "capec" => {
                let n = id
                    .strip_prefix("CAPEC-")
                    .filter(|n| digits(n))
                    .ok_or_else(|| format!("{id:?} is not a CAPEC id (CAPEC-66)"))?;
                format!("https://capec.mitre.org/data/definitions/{n}.html")
            }
            other => {
                return Err(format!(
                    "technique source {other:?} is not mitre-attack or capec"
                ));
            }
        };
        Ok(Technique {
            source_name: source.to_string(),
            external_id: id.to_string(),
            url,
        })
    }
}

/// How attack names are compared with the technique rows: lower case, letters and digits
/// only (`HTTP GET flood`, `http-get-flood` and `HttpGetFlood` are one name).
pub fn technique_key(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
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
        let mut attack_names = HashMap::new();
        let mut techniques = HashMap::new();
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
            if object.eq_ignore_ascii_case("AttackName") {
                if !field.contains('=') || property.is_empty() {
                    return Err(err(format!(
                        "an AttackName row is `COLUMN=VALUE,AttackName,NAME` ({field:?}, {property:?})"
                    )));
                }
                if attack_names
                    .insert(field.to_string(), property.to_string())
                    .is_some()
                {
                    return Err(err(format!("attack name {field:?} is listed twice")));
                }
                canonical.push(format!("name\u{1f}{field}\u{1f}{property}"));
                continue;
            }
            if object.eq_ignore_ascii_case("AttackTechnique") {
                let technique = Technique::parse(property, transformation).map_err(err)?;
                let key = technique_key(field);
                if key.is_empty() {
                    return Err(err(format!(
                        "attack name {field:?} has no letters or digits"
                    )));
                }
                canonical.push(format!(
                    "technique\u{1f}{key}\u{1f}{}\u{1f}{}",
                    technique.source_name, technique.external_id
                ));
                if techniques.insert(key, technique).is_some() {
                    return Err(err(format!("attack name {field:?} is listed twice")));
                }
                continue;
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
        Ok(Self {
            by_column,
            attack_names,
            techniques,
            digest,
        })
    }

    pub fn target(&self, column: &str) -> Option<Target> {
        self.by_column.get(column).copied()
    }

    /// The readable name of the attack a row names with `value` in `column`, if the table
    /// gives one.
    pub fn attack_name(&self, column: &str, value: &str) -> Option<&str> {
        if self.attack_names.is_empty() {
            return None;
        }
        self.attack_names
            .get(&format!("{column}={value}"))
            .map(String::as_str)
    }

    /// The technique an attack name stands for, if the table lists it.
    pub fn technique(&self, attack: &str) -> Option<&Technique> {
        self.techniques.get(&technique_key(attack))
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
    fn attack_names_and_techniques() {
        let m = Mapping::default_table();
        assert_eq!(m.attack_name("label", "1"), Some("DDoS flood"));
        assert_eq!(m.attack_name("label", "2"), None);
        let t = m.technique("DDoS flood").unwrap();
        assert_eq!(
            (t.source_name.as_str(), t.external_id.as_str()),
            ("mitre-attack", "T1498")
        );
        assert_eq!(t.url, "https://attack.mitre.org/techniques/T1498/");
        assert_eq!(m.technique("Port-Scan").unwrap().external_id, "T1046");
        let sqli = m.technique("SQL injection").unwrap();
        assert_eq!(sqli.url, "https://capec.mitre.org/data/definitions/66.html");
        assert!(m.technique("HTTP GET请求访问").is_none());
        let head = "dataset_field,stix_object,object_property,transformation\n";
        let sub = Mapping::parse(&format!(
            "{head}syn flood,AttackTechnique,mitre-attack,T1498.001\n"
        ))
        .unwrap();
        assert_eq!(
            sub.technique("SYN-Flood").unwrap().url,
            "https://attack.mitre.org/techniques/T1498/001/"
        );
        for (row, needle) in [
            (
                "x,AttackTechnique,mitre-attack,1498",
                "not an ATT&CK technique id",
            ),
            ("x,AttackTechnique,capec,66", "not a CAPEC id"),
            ("x,AttackTechnique,d3fend,D3-X", "not mitre-attack or capec"),
            ("label,AttackName,DDoS,", "COLUMN=VALUE"),
        ] {
            let e = Mapping::parse(&format!("{head}{row}\n")).unwrap_err();
            assert_eq!(e.line, 2);
            assert!(e.detail.contains(needle), "{row}: {e}");
        }
        // The names and techniques are part of what the mapping does.
        let a = Mapping::parse(&format!("{head}label=1,AttackName,A,\n")).unwrap();
        let b = Mapping::parse(&format!("{head}label=1,AttackName,B,\n")).unwrap();
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn digest_ignores_comments_and_order() {
        let a = Mapping::parse("dataset_field,stix_object,object_property,transformation\na,URL,value,url\nb,NetworkTraffic,protocols,list\n").unwrap();
        let b = Mapping::parse("dataset_field,stix_object,object_property,transformation\n# c\nb,NetworkTraffic,protocols,list\na,URL,value,url\n").unwrap();
        assert_eq!(a.digest(), b.digest());
    }
}
