//! The statistics of a CTI record, computed from its STIX file: how often each IP address
//! occurs, and where the addresses are.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::geo::{GeoIp, Location};

/// The statistics of one CTI record, with the key names of the old server.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Statistics {
    /// IP address → occurrences in the STIX objects.
    pub ioc_ips_map: BTreeMap<String, u64>,
    /// IP address → `"country,region,city"`.
    pub ips_locations_map: BTreeMap<String, String>,
    /// IP address → its location in parts.
    pub ips_locations_info_map: BTreeMap<String, Location>,
    /// `"country,region,city"` → IP occurrences there.
    pub ioc_locations_map: BTreeMap<String, u64>,
    /// The database that located the addresses (`none` without one).
    pub geoip_database: String,
}

impl Statistics {
    /// Locates every address of `counts` once and sums the occurrences per location.
    pub fn build(counts: BTreeMap<String, u64>, geo: &GeoIp) -> Self {
        let mut stats = Statistics {
            geoip_database: geo.description().to_string(),
            ..Default::default()
        };
        for (ip, n) in &counts {
            let location = match ip.parse::<IpAddr>() {
                Ok(addr) => geo.locate(addr),
                Err(_) => Location::label(super::geo::UNKNOWN),
            };
            let key = location.key();
            *stats.ioc_locations_map.entry(key.clone()).or_default() += n;
            stats.ips_locations_map.insert(ip.clone(), key);
            stats.ips_locations_info_map.insert(ip.clone(), location);
        }
        stats.ioc_ips_map = counts;
        stats
    }
}

/// Counts occurrences of the given addresses (one per item).
pub fn count<'a>(ips: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut counts: FxHashMap<&str, u64> = FxHashMap::default();
    for ip in ips {
        *counts.entry(ip).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(ip, n)| (ip.to_string(), n))
        .collect()
}

/// What a STIX file holds, as far as the statistics need it.
#[derive(Debug, Default, PartialEq)]
pub struct StixScan {
    /// IP address → the number of observations (`observed-data`) that reference it.
    pub ip_counts: BTreeMap<String, u64>,
    pub objects: u64,
}

#[derive(Deserialize)]
struct ScanObject<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    value: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    object_refs: Vec<Cow<'a, str>>,
}

fn is_address_id(id: &str) -> bool {
    id.starts_with("ipv4-addr--") || id.starts_with("ipv6-addr--")
}

/// A STIX file that cannot be read or scanned: the line and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScanError(pub String);

/// Reads a STIX JSON Lines file and counts, for every IP address object, how many
/// observations reference it. Memory is proportional to the distinct addresses, not the file.
pub fn scan_stix(input: impl BufRead) -> Result<StixScan, ScanError> {
    scan(input).map_err(ScanError)
}

fn scan(input: impl BufRead) -> Result<StixScan, String> {
    let mut refs: FxHashMap<String, u64> = FxHashMap::default();
    let mut values: FxHashMap<String, String> = FxHashMap::default();
    let mut objects = 0u64;
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("reading line {}: {e}", n + 1))?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let obj: ScanObject<'_> = serde_json::from_slice(&line)
            .map_err(|e| format!("line {}: not a STIX object: {e}", n + 1))?;
        objects += 1;
        match obj.kind.as_ref() {
            "ipv4-addr" | "ipv6-addr" => {
                if let Some(v) = obj.value {
                    values.insert(obj.id.into_owned(), v.into_owned());
                }
            }
            "observed-data" => {
                for r in obj.object_refs.iter().filter(|r| is_address_id(r)) {
                    match refs.get_mut(r.as_ref()) {
                        Some(c) => *c += 1,
                        None => {
                            refs.insert(r.to_string(), 1);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut ip_counts = BTreeMap::new();
    for (id, n) in refs {
        let value = values
            .get(&id)
            .ok_or_else(|| format!("{id} is referenced but not defined in the file"))?;
        *ip_counts.entry(value.clone()).or_default() += n;
    }
    Ok(StixScan { ip_counts, objects })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_references_from_observations() {
        let a = "ipv4-addr--11111111-1111-5111-8111-111111111111";
        let b = "ipv6-addr--22222222-2222-5222-8222-222222222222";
        let file = format!(
            "{{\"type\":\"ipv4-addr\",\"id\":\"{a}\",\"value\":\"8.8.8.8\"}}\n\
             {{\"type\":\"observed-data\",\"id\":\"observed-data--1\",\"object_refs\":[\"{a}\",\"{b}\",\"network-traffic--x\"]}}\n\
             {{\"type\":\"observed-data\",\"id\":\"observed-data--2\",\"object_refs\":[\"{a}\"]}}\n\
             \n\
             {{\"type\":\"ipv6-addr\",\"id\":\"{b}\",\"value\":\"2001:db8::1\"}}\n"
        );
        let scan = scan_stix(file.as_bytes()).unwrap();
        assert_eq!(scan.objects, 4);
        assert_eq!(
            scan.ip_counts,
            BTreeMap::from([("2001:db8::1".into(), 1), ("8.8.8.8".into(), 2)])
        );
    }

    #[test]
    fn dangling_references_and_bad_lines_are_errors() {
        let err = scan_stix(
            &b"{\"type\":\"observed-data\",\"id\":\"o\",\"object_refs\":[\"ipv4-addr--9\"]}\n"[..],
        )
        .unwrap_err();
        assert!(err.0.contains("ipv4-addr--9"), "{err}");
        let err = scan_stix(&b"{\"type\":1}\n"[..]).unwrap_err();
        assert!(err.0.starts_with("line 1:"), "{err}");
    }

    #[test]
    fn statistics_sum_occurrences_per_location() {
        let counts = count(["10.0.0.1", "8.8.8.8", "10.0.0.2", "10.0.0.1"]);
        let stats = Statistics::build(counts, &GeoIp::none());
        assert_eq!(stats.ioc_ips_map["10.0.0.1"], 2);
        assert_eq!(
            stats.ips_locations_map["8.8.8.8"],
            "unknown,unknown,unknown"
        );
        assert_eq!(stats.ioc_locations_map["private,private,private"], 3);
        assert_eq!(stats.ioc_locations_map["unknown,unknown,unknown"], 1);
        assert_eq!(stats.ips_locations_info_map["10.0.0.2"].country, "private");
        assert_eq!(stats.geoip_database, "none");
    }
}
