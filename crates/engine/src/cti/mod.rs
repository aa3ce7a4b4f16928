//! CTI records: what a publisher puts on a sharing chain, built from STIX records with
//! statistics that are true (occurrences counted in the STIX objects, locations from an offline
//! database or labelled unknown).

pub mod geo;
pub mod stats;

/// `cti_traffic_type` of the chain payload: 0 not traffic, 1 5G, 2 satellite, 3 SDN.
pub(crate) const TRAFFIC_TYPES: [(u8, &str); 4] =
    [(0, "not traffic"), (1, "5g"), (2, "satellite"), (3, "sdn")];

/// The traffic type a dataset's tags imply (`5g`, `satellite`, `sdn`), or 0.
pub fn traffic_type_from_tags(tags: &[String]) -> u8 {
    TRAFFIC_TYPES
        .iter()
        .skip(1)
        .find(|(_, tag)| tags.iter().any(|t| t.eq_ignore_ascii_case(tag)))
        .map(|(n, _)| *n)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_type_follows_the_tags() {
        assert_eq!(traffic_type_from_tags(&["sdn".into()]), 3);
        assert_eq!(traffic_type_from_tags(&["honeypot".into(), "5G".into()]), 1);
        assert_eq!(traffic_type_from_tags(&["satellite".into()]), 2);
        assert_eq!(traffic_type_from_tags(&["honeypot".into()]), 0);
    }
}
