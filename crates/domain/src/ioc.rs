//! The node's IOC registry: what every dataset file says of each indicator, folded into one
//! state per indicator whose changes become new versions of it.
//!
//! A STIX file is a pure function of its dataset and settings, so the indicator it carries is
//! the same in every file (its id follows from its pattern and marking, its times are the
//! producer's epoch). What grows as datasets arrive (when the IOC was first and last seen, in
//! how many files, how sure the node is) lives here, and the TAXII publisher writes each
//! change as a new version of the indicator: `created` kept, `modified` growing,
//! `valid_from`/`valid_until` and `confidence` from the state.

use std::fmt;

use crate::hash::Sha256Hex;
use crate::vocab::DataType;

/// What one dataset file says of one indicator: its sighting there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IocSighting {
    /// `indicator--<uuid>`.
    pub indicator: String,
    /// The STIX file that sighted it.
    pub file: Sha256Hex,
    /// The sighting's `first_seen` and `last_seen`, microseconds since the Unix epoch.
    pub first_us: i64,
    pub last_us: i64,
    /// Its `count`: observations (rows) that showed the IOC.
    pub count: u64,
    /// How sure a dataset of this file's type makes the node (0-100).
    pub confidence: Confidence,
    /// Until when this sighting makes the indicator valid: `last_us` plus the validity its
    /// conversion asked for (or the node's), microseconds.
    pub valid_until_us: i64,
}

/// The registry's state of one indicator: everything the files that sighted it say, folded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IocState {
    pub indicator: String,
    /// The earliest `first_seen` and the latest `last_seen` of its sightings.
    pub first_us: i64,
    pub last_us: i64,
    /// Files that sighted it, and their observations together.
    pub files: u64,
    pub observations: u64,
    /// The highest confidence of those files' types.
    pub confidence: Confidence,
    /// The latest `valid_until_us` of its sightings.
    pub valid_until_us: i64,
    /// The `modified` of its current version (grew with each change), microseconds.
    pub modified_us: i64,
}

impl IocState {
    /// An indicator no file has sighted yet.
    pub fn empty(indicator: &str) -> Self {
        IocState {
            indicator: indicator.to_string(),
            first_us: i64::MAX,
            last_us: i64::MIN,
            files: 0,
            observations: 0,
            confidence: Confidence(0),
            valid_until_us: i64::MIN,
            modified_us: i64::MIN,
        }
    }

    /// Folds in a sighting not folded before. When what the indicator's version says changes
    /// (its first sighting, its validity, its confidence; or it is new), `modified_us`
    /// becomes `now_us`, or the last one plus 1 µs if that is not earlier, and the answer is
    /// true.
    pub fn fold(&mut self, s: &IocSighting, now_us: i64) -> bool {
        let said = |st: &IocState| (st.first_us, st.valid_until_us, st.confidence);
        let before = said(self);
        self.first_us = self.first_us.min(s.first_us);
        self.last_us = self.last_us.max(s.last_us);
        self.valid_until_us = self.valid_until_us.max(s.valid_until_us);
        self.confidence = self.confidence.max(s.confidence);
        self.files += 1;
        self.observations = self.observations.saturating_add(s.count);
        let changed = self.files == 1 || before != said(self);
        if changed {
            self.modified_us = now_us.max(self.modified_us.saturating_add(1));
        }
        changed
    }
}

/// A STIX confidence value, 0 (none) to 100 (certain).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Confidence(u8);

impl Confidence {
    pub fn new(value: u8) -> Result<Self, ConfidenceOutOfRange> {
        if value <= 100 {
            Ok(Confidence(value))
        } else {
            Err(ConfidenceOutOfRange(value.into()))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// A stored value (the registry's column), refused when out of range.
    pub fn from_stored(value: i64) -> Result<Self, ConfidenceOutOfRange> {
        u8::try_from(value)
            .ok()
            .filter(|v| *v <= 100)
            .map(Confidence)
            .ok_or(ConfidenceOutOfRange(value))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("confidence {0} is outside 0-100")]
pub struct ConfidenceOutOfRange(pub i64);

/// How the node turns registry states into indicator versions: how long an indicator stays
/// valid after its last sighting, and how sure each dataset type makes the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndicatorPolicy {
    valid_days: u32,
    /// By `DataType` number - 1.
    confidence: [Confidence; 5],
}

/// The longest validity the node accepts (ten years).
pub const MAX_VALID_DAYS: u32 = 3650;

/// A validity in days as a store keeps it (a conversion's `stix_indicator_valid_days`),
/// refused when outside 1 to [`MAX_VALID_DAYS`]: the store was written by something else.
pub fn stored_valid_days(days: i64) -> Result<u32, String> {
    u32::try_from(days)
        .ok()
        .filter(|d| (1..=MAX_VALID_DAYS).contains(d))
        .ok_or_else(|| format!("a job's indicator_valid_days {days} is outside 1-{MAX_VALID_DAYS}"))
}

impl Default for IndicatorPolicy {
    /// Valid 30 days after the last sighting. Confidence (STIX 0-100): honeypot 80 (nothing
    /// legitimate touches a honeypot), botnet 75, malicious traffic 70 and application attacks
    /// 70 (labels of detectors and datasets, which err), open-source intelligence 60 (feeds of
    /// every quality).
    fn default() -> Self {
        let c = Confidence;
        IndicatorPolicy {
            valid_days: 30,
            confidence: [c(70), c(80), c(75), c(70), c(60)],
        }
    }
}

impl IndicatorPolicy {
    pub fn valid_days(&self) -> u32 {
        self.valid_days
    }

    pub fn confidence(&self, of: DataType) -> Confidence {
        self.confidence[usize::from(of.number()) - 1]
    }

    /// The validity after the last sighting, 1 to [`MAX_VALID_DAYS`] days.
    pub fn with_valid_days(mut self, days: u32) -> Result<Self, String> {
        if !(1..=MAX_VALID_DAYS).contains(&days) {
            return Err(format!(
                "an indicator's validity is 1 to {MAX_VALID_DAYS} days, not {days}"
            ));
        }
        self.valid_days = days;
        Ok(self)
    }

    pub fn with_confidence(mut self, of: DataType, confidence: Confidence) -> Self {
        self.confidence[usize::from(of.number()) - 1] = confidence;
        self
    }

    /// How long after its last sighting an indicator stays valid, microseconds: `days` when a
    /// conversion asked for them, else the node's.
    pub fn valid_for_us(&self, days: Option<u32>) -> i64 {
        i64::from(days.unwrap_or(self.valid_days)) * 86_400 * 1_000_000
    }
}

/// `TYPE=N`: a dataset type's number (1-5, the API's `stix_type`) and a confidence 0-100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeConfidence(pub DataType, pub Confidence);

impl std::str::FromStr for TypeConfidence {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ty, value) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not TYPE=CONFIDENCE (like 2=85)"))?;
        let ty = ty
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(DataType::from_number)
            .ok_or_else(|| format!("{ty:?} is not a dataset type (1-5, as `stix_type`)"))?;
        let value = value
            .trim()
            .parse::<u8>()
            .ok()
            .and_then(|v| Confidence::new(v).ok())
            .ok_or_else(|| format!("{value:?} is not a confidence (0-100)"))?;
        Ok(TypeConfidence(ty, value))
    }
}

impl fmt::Display for TypeConfidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.0.number(), self.1.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_validity_outside_its_range_is_refused_with_its_value() {
        assert_eq!(stored_valid_days(1), Ok(1));
        assert_eq!(stored_valid_days(3650), Ok(3650));
        for bad in [0, -1, 3651, i64::from(u32::MAX) + 1] {
            let e = stored_valid_days(bad).unwrap_err();
            assert!(e.contains(&bad.to_string()) && e.contains("1-3650"), "{e}");
        }
    }

    #[test]
    fn the_policy_has_a_confidence_per_type_and_bounded_validity() {
        let p = IndicatorPolicy::default();
        assert_eq!(p.confidence(DataType::Honeypot).get(), 80);
        assert_eq!(p.confidence(DataType::OpenSource).get(), 60);
        assert_eq!(p.valid_for_us(None), 30 * 86_400_000_000);
        assert_eq!(p.valid_for_us(Some(2)), 2 * 86_400_000_000);
        let p = p
            .with_confidence(DataType::OpenSource, Confidence::new(95).unwrap())
            .with_valid_days(7)
            .unwrap();
        assert_eq!(p.confidence(DataType::OpenSource).get(), 95);
        assert_eq!(p.confidence(DataType::Botnet).get(), 75);
        assert_eq!(p.valid_days(), 7);
        assert!(
            IndicatorPolicy::default()
                .with_valid_days(0)
                .unwrap_err()
                .contains("1 to 3650 days")
        );
        assert!(IndicatorPolicy::default().with_valid_days(3651).is_err());
    }

    #[test]
    fn folding_keeps_the_widest_window_and_the_highest_confidence() {
        let s = |file: char, first, last, count, c| IocSighting {
            indicator: "indicator--1".into(),
            file: Sha256Hex::parse(&file.to_string().repeat(64)).unwrap(),
            first_us: first,
            last_us: last,
            count,
            confidence: Confidence(c),
            valid_until_us: last + 10,
        };
        let mut state = IocState::empty("indicator--1");
        assert!(state.fold(&s('a', 100, 200, 3, 60), 1_000));
        assert_eq!(
            (
                state.first_us,
                state.last_us,
                state.files,
                state.observations
            ),
            (100, 200, 1, 3)
        );
        assert_eq!(state.modified_us, 1_000);
        // Inside the window, no higher confidence: counted, but the version stays.
        assert!(!state.fold(&s('b', 120, 180, 2, 50), 2_000));
        assert_eq!(
            (state.files, state.observations, state.modified_us),
            (2, 5, 1_000)
        );
        // A later sighting under a clock that went back: `modified` still grows.
        assert!(state.fold(&s('c', 150, 300, 1, 80), 500));
        assert_eq!(state.modified_us, 1_001);
        assert_eq!((state.first_us, state.last_us), (100, 300));
        assert_eq!(state.valid_until_us, 310);
        assert_eq!(state.confidence, Confidence(80));
        // A sighting inside the window that asks for a longer validity: a new version.
        let longer = IocSighting {
            valid_until_us: 900,
            ..s('d', 200, 250, 1, 10)
        };
        assert!(state.fold(&longer, 600));
        assert_eq!((state.last_us, state.valid_until_us), (300, 900));
    }

    #[test]
    fn type_confidences_parse_and_name_what_is_wrong() {
        let t: TypeConfidence = "2=85".parse().unwrap();
        assert_eq!(t, TypeConfidence(DataType::Honeypot, Confidence(85)));
        assert_eq!(t.to_string(), "2=85");
        assert!(
            "2".parse::<TypeConfidence>()
                .unwrap_err()
                .contains("TYPE=CONFIDENCE")
        );
        assert!(
            "6=50"
                .parse::<TypeConfidence>()
                .unwrap_err()
                .contains("dataset type")
        );
        assert!(
            "1=101"
                .parse::<TypeConfidence>()
                .unwrap_err()
                .contains("0-100")
        );
        assert_eq!(Confidence::new(101), Err(ConfidenceOutOfRange(101)));
        assert_eq!(Confidence::from_stored(-1), Err(ConfidenceOutOfRange(-1)));
        assert_eq!(Confidence::from_stored(100).unwrap().get(), 100);
    }
}
