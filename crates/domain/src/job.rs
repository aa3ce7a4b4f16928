//! Job specifications: what a conversion or a CTI build was asked to do, validated. Saved with
//! the job (as JSON, by the store) so that a job resumed after a restart runs exactly as it
//! started.

use serde::{Deserialize, Serialize};

use crate::model::JobKind;
use crate::vocab::{
    DataType, IncentiveMechanism, IndicatorRule, IocKind, OpenSource, Tag, Tlp, TrafficType,
};

/// A conversion of a dataset to STIX files (the mapping's text included).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StixParams {
    pub stix_type: DataType,
    /// The IOC kinds the request named; `None`: the kinds found in each file.
    pub stix_iocs: Option<Vec<IocKind>>,
    pub stix_tags: Vec<Tag>,
    /// Rows per STIX file.
    pub compress: u64,
    /// The columns to keep; `None`: every column.
    pub features: Option<Vec<String>>,
    /// Literal labels of every observed-data.
    pub labels: Vec<String>,
    /// Columns whose row values label each observed-data (absent in jobs saved before).
    #[serde(default)]
    pub label_columns: Vec<String>,
    pub observed_time_micros: i64,
    pub mapping_name: Option<String>,
    pub mapping_text: String,
    /// Which observables become indicators; `None`: none (jobs saved before indicators
    /// existed resume as they started).
    #[serde(default)]
    pub indicators: Option<IndicatorRule>,
    /// The TLP marking of every object; `None`: unmarked (jobs saved before markings).
    #[serde(default)]
    pub tlp: Option<Tlp>,
    /// Days its indicators stay valid after their last sighting in this conversion's files
    /// (read by the TAXII publisher, not written into the files); `None`: the node's
    /// `--indicator-valid-days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator_valid_days: Option<u32>,
}

/// A build of the CTI records of a converted dataset.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CtiParams {
    /// `None`: each STIX record's own type.
    pub cti_type: Option<DataType>,
    pub cti_name: String,
    pub open_source: OpenSource,
    pub description: String,
    pub value: f64,
    pub incentive_mechanism: IncentiveMechanism,
    /// `None`: implied by the record's tags (5g, satellite, sdn), else not traffic.
    pub cti_traffic_type: Option<TrafficType>,
    /// `None`: each STIX record's own tags.
    pub tags: Option<Vec<Tag>>,
    /// Number of STIX records when the job was started (names are numbered `k/N`).
    pub records: u64,
}

/// What a job runs: its kind and its validated request.
#[derive(Clone, Debug, PartialEq)]
pub enum JobParams {
    Stix(StixParams),
    Cti(CtiParams),
}

impl JobParams {
    pub fn kind(&self) -> JobKind {
        match self {
            JobParams::Stix(_) => JobKind::Stix,
            JobParams::Cti(_) => JobKind::Cti,
        }
    }

    /// The JSON the store saves (the request's fields; the kind is saved beside it).
    pub fn to_json(&self) -> String {
        match self {
            JobParams::Stix(p) => serde_json::to_string(p),
            JobParams::Cti(p) => serde_json::to_string(p),
        }
        .expect("serialising plain data cannot fail")
    }

    /// Reads what [`JobParams::to_json`] saved for a job of `kind`.
    pub fn from_json(kind: JobKind, json: &str) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            JobKind::Stix => JobParams::Stix(serde_json::from_str(json)?),
            JobKind::Cti => JobParams::Cti(serde_json::from_str(json)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_saved_by_earlier_versions_still_read() {
        // As the node saved them before the vocabularies were enums (numbers and words).
        let stix = r#"{"stix_type":2,"stix_iocs":["ip","port"],"stix_tags":["honeypot"],
            "compress":100,"features":null,"labels":["x"],"observed_time_micros":0,
            "mapping_name":null,"mapping_text":"t"}"#;
        let JobParams::Stix(p) = JobParams::from_json(JobKind::Stix, stix).unwrap() else {
            panic!("a conversion")
        };
        assert_eq!(p.stix_type, DataType::Honeypot);
        assert_eq!(p.stix_iocs, Some(vec![IocKind::Ip, IocKind::Port]));
        assert!(p.label_columns.is_empty());
        assert_eq!(p.indicators, None);
        let cti = r#"{"cti_type":null,"cti_name":"n","open_source":1,"description":"",
            "value":1.5,"incentive_mechanism":3,"cti_traffic_type":3,"tags":null,"records":2}"#;
        let params = JobParams::from_json(JobKind::Cti, cti).unwrap();
        assert_eq!(params.kind(), JobKind::Cti);
        let again = JobParams::from_json(JobKind::Cti, &params.to_json()).unwrap();
        assert_eq!(again, params);
        let JobParams::Cti(p) = params else {
            panic!("a CTI build")
        };
        assert_eq!(p.cti_traffic_type, Some(TrafficType::Sdn));
        assert_eq!(p.incentive_mechanism, IncentiveMechanism::Third);
        // A value outside its vocabulary is refused, naming it.
        let bad = cti.replace(r#""open_source":1"#, r#""open_source":7"#);
        let e = JobParams::from_json(JobKind::Cti, &bad).unwrap_err();
        assert!(
            e.to_string()
                .contains("7 is not an open_source value (0-1)"),
            "{e}"
        );
    }
}
