//! A `grouping` per STIX file, named after its dataset, so that consumers show a title (MISP
//! names an event after it, OpenCTI a container) instead of a bundle id.
//!
//! The grouping is not in the file: a file is a pure function of its dataset's bytes and the
//! conversion's settings (the same bytes uploaded under two names give the same files), and a
//! name is neither. It is written beside the file's objects where a name is known: the data
//! API's bundle, the CLI's bundle, the TAXII datasets collection. Its id follows from the file,
//! the name and the marking, so the same file under the same name is one grouping everywhere;
//! its `object_refs` list every object of the file but the marking and extension definitions,
//! and are streamed through a spool file rather than held (a file may hold millions).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::vocab::{DataType, Tlp};
use serde::Deserialize;
use serde_json::json;
use stix::objects::Object;

use crate::producer::{mark, producer_epoch, producer_identity_id};

/// What names the objects of one STIX file.
#[derive(Clone, Copy, Debug)]
pub struct FileTitle<'a> {
    /// The dataset's file name, as uploaded (or given to the CLI).
    pub dataset: Option<&'a str>,
    /// The CTI record's name, once one exists.
    pub cti_name: Option<&'a str>,
    /// The dataset's SHA-256.
    pub source: &'a Sha256Hex,
    /// The file's place among the conversion's files (0-based); `None`: the whole conversion.
    pub batch: Option<u64>,
    pub data_type: DataType,
}

impl FileTitle<'_> {
    /// `CTI name — dataset.csv, STIX file 3`, `dataset.csv`, or `dataset 1a2b3c4d5e6f` when
    /// neither name is known.
    pub fn name(&self) -> String {
        let dataset = self
            .dataset
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("dataset {}", &self.source.as_str()[..12]));
        let mut name = match self.cti_name.map(str::trim).filter(|c| !c.is_empty()) {
            Some(cti) => format!("{cti} — {dataset}"),
            None => dataset,
        };
        if let Some(batch) = self.batch {
            name.push_str(&format!(", STIX file {}", batch + 1));
        }
        name
    }

    pub fn description(&self) -> String {
        let part = match self.batch {
            Some(b) => format!("STIX file {} of the conversion", b + 1),
            None => "The conversion".to_string(),
        };
        format!(
            "{part} of the {} dataset {} (SHA-256 {}) by br-cti: its observations, indicators, \
             sightings and the objects they reference.",
            english(self.data_type),
            self.dataset.unwrap_or("(unnamed)"),
            self.source
        )
    }
}

fn english(t: DataType) -> &'static str {
    match t {
        DataType::MaliciousTraffic => "malicious-traffic",
        DataType::Honeypot => "honeypot",
        DataType::Botnet => "botnet",
        DataType::ApplicationAttack => "application-attack",
        DataType::OpenSource => "open-source intelligence",
    }
}

/// The grouping of a file without its `object_refs`: `file` is the STIX file's hash (or the
/// bundle's seed), `tlp` the most restricted marking of its objects.
pub fn grouping_head(file: &str, title: &FileTitle<'_>, tlp: Option<Tlp>) -> Object {
    let name = title.name();
    let seed = format!(
        "{file}\u{0}{name}\u{0}{}",
        tlp.map(Tlp::as_str).unwrap_or_default()
    );
    let epoch = producer_epoch();
    let identity = producer_identity_id();
    let mut o = stix::objects::sdo(
        "grouping",
        stix::sdo_id("grouping", seed.as_bytes()),
        epoch,
        epoch,
        Some(&identity),
    );
    o.insert("name".into(), json!(name));
    o.insert("description".into(), json!(title.description()));
    o.insert("context".into(), json!("suspicious-activity"));
    mark(&mut o, tlp);
    o
}

/// Whether a grouping of a file lists an object of this type (not the marking and extension
/// definitions, which describe the objects rather than being data).
pub fn grouped(object_type: &str) -> bool {
    !matches!(object_type, "marking-definition" | "extension-definition")
}

/// The ids of a file's objects, spooled to an anonymous temporary file as they pass, and the
/// most restricted marking among them.
pub struct GroupingSpool {
    out: BufWriter<File>,
    refs: u64,
    tlp: Option<Tlp>,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    id: &'a str,
    #[serde(default, borrow)]
    object_marking_refs: Vec<&'a str>,
}

impl GroupingSpool {
    pub fn new() -> io::Result<Self> {
        Ok(GroupingSpool {
            out: BufWriter::new(tempfile::tempfile()?),
            refs: 0,
            tlp: None,
        })
    }

    /// Notes one object, given as its JSON line.
    pub fn note_line(&mut self, line: &[u8]) -> io::Result<()> {
        let head: Head<'_> = serde_json::from_slice(line)?;
        let tlp = Tlp::strictest(head.object_marking_refs.iter().copied());
        self.note(head.kind, head.id, tlp)
    }

    /// Notes one object.
    pub fn note(&mut self, kind: &str, id: &str, tlp: Option<Tlp>) -> io::Result<()> {
        if !grouped(kind) {
            return Ok(());
        }
        if id.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an object id holds a line break: {id:?}"),
            ));
        }
        self.out.write_all(id.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.refs += 1;
        self.tlp = self.tlp.max(tlp);
        Ok(())
    }

    /// Objects noted.
    pub fn refs(&self) -> u64 {
        self.refs
    }

    /// Writes the grouping into `bundle` (nothing when no object was noted: a grouping lists
    /// at least one).
    pub fn write_into<W: Write>(
        self,
        bundle: &mut stix::BundleWriter<W>,
        file: &str,
        title: &FileTitle<'_>,
    ) -> io::Result<()> {
        if self.refs == 0 {
            return Ok(());
        }
        let head = grouping_head(file, title, self.tlp);
        let mut spool = self.out.into_inner().map_err(|e| e.into_error())?;
        spool.rewind()?;
        let ids = BufReader::new(spool).lines();
        bundle.write_object_with_list(&head, "object_refs", ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn title(dataset: Option<&str>, cti: Option<&str>, batch: Option<u64>) -> String {
        let source = Sha256Hex::parse(&"ab".repeat(32)).unwrap();
        FileTitle {
            dataset,
            cti_name: cti,
            source: &source,
            batch,
            data_type: DataType::Honeypot,
        }
        .name()
    }

    #[test]
    fn names_say_the_dataset_the_cti_record_and_the_file() {
        assert_eq!(title(Some("hp.csv"), None, None), "hp.csv");
        assert_eq!(title(Some("hp.csv"), None, Some(2)), "hp.csv, STIX file 3");
        assert_eq!(
            title(Some("hp.csv"), Some("蜜罐 June"), Some(0)),
            "蜜罐 June — hp.csv, STIX file 1"
        );
        assert_eq!(title(None, Some(" "), None), "dataset abababababab");
    }

    #[test]
    fn a_spooled_grouping_lists_the_data_and_takes_the_strictest_marking() {
        let green = Tlp::Green.marking_id();
        let amber = Tlp::Amber.marking_id();
        let lines = [
            format!(r#"{{"type":"marking-definition","id":"{green}"}}"#),
            format!(
                r#"{{"type":"ipv4-addr","id":"ipv4-addr--1","object_marking_refs":["{green}"]}}"#
            ),
            format!(
                r#"{{"type":"indicator","id":"indicator--2","object_marking_refs":["{amber}"]}}"#
            ),
        ];
        let mut spool = GroupingSpool::new().unwrap();
        for l in &lines {
            spool.note_line(l.as_bytes()).unwrap();
        }
        assert_eq!(spool.refs(), 2);
        let source = Sha256Hex::parse(&"ab".repeat(32)).unwrap();
        let t = FileTitle {
            dataset: Some("hp.csv"),
            cti_name: None,
            source: &source,
            batch: Some(0),
            data_type: DataType::Honeypot,
        };
        let mut bundle = stix::BundleWriter::begin(Vec::new(), "bundle--x").unwrap();
        spool.write_into(&mut bundle, "f", &t).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bundle.finish().unwrap()).unwrap();
        let g = &v["objects"][0];
        assert_eq!(g["type"], "grouping");
        assert_eq!(g["name"], "hp.csv, STIX file 1");
        assert_eq!(g["context"], "suspicious-activity");
        assert_eq!(g["object_refs"], json!(["ipv4-addr--1", "indicator--2"]));
        assert_eq!(g["object_marking_refs"], json!([amber]));
        assert_eq!(g["id"], grouping_head("f", &t, Some(Tlp::Amber))["id"]);
        assert_ne!(g["id"], grouping_head("f", &t, Some(Tlp::Green))["id"]);
        // Nothing noted: no grouping.
        let mut bundle = stix::BundleWriter::begin(Vec::new(), "bundle--x").unwrap();
        GroupingSpool::new()
            .unwrap()
            .write_into(&mut bundle, "f", &t)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bundle.finish().unwrap()).unwrap();
        assert_eq!(v["objects"], json!([]));
        assert!(GroupingSpool::new().unwrap().note_line(b"{").is_err());
    }
}
