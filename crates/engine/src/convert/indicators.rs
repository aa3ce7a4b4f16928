//! Indicators from observations: the observables a dataset shows acting maliciously (the
//! rule is the conversion's [`IndicatorRule`]) become `indicator`s with a STIX pattern.
//!
//! One IOC is one indicator, whatever file or dataset shows it: the value is normalised (IPv6
//! in RFC 5952 form, host names lower-case, a URL's scheme and host lower-case) and the id is
//! derived from the pattern alone. The indicator's own properties never change (`created`,
//! `modified` and `valid_from` are the producer's epoch), so every file may carry it and every
//! copy is the same version; what a file adds is a `sighting` of it (count, first and last
//! seen, where: the node; not the observations' ids, which would repeat the attack
//! sightings' lists and cost a quarter more bytes per row), a `based-on` relationship to its observable and
//! an `indicates` relationship to each attack its rows name. Private and reserved addresses
//! and special-use names never become indicators.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use br_cti_domain::net::{is_host_name, is_public_host_name, is_public_ip};
use br_cti_domain::vocab::{IndicatorRule, IndicatorType, Tlp};
use serde_json::{Map, Value, json};
use stix::Timestamp;
use stix::objects::sdo;

use crate::producer::{node_sighting, producer_epoch};

/// An indicator of one IOC (the same for every file that shows it).
#[derive(Debug)]
pub(crate) struct Indicator {
    pub(crate) id: Arc<str>,
    pattern: String,
    name: String,
    description: String,
}

/// What one file saw of an indicator.
pub(crate) struct Indicated {
    pub(crate) indicator: Arc<Indicator>,
    /// The observable the pattern matches (an SCO of the file).
    pub(crate) observable: Arc<str>,
    /// The first observation (row) that showed it, which names this file's sighting.
    pub(crate) first_observation: String,
    /// Rows that showed it.
    pub(crate) count: u64,
    /// The last of those rows (a row naming the same observable twice counts once).
    pub(crate) last_row: u64,
    pub(crate) first: Timestamp,
    pub(crate) last: Timestamp,
    /// Ids of the attack-patterns its rows name.
    pub(crate) attacks: BTreeSet<String>,
}

/// The indicator of an observable (its SCO type and STIX value), if the rule lets that type
/// become one and the value means something outside the network that saw it.
pub(crate) fn indicator(
    rule: &IndicatorRule,
    sco_type: &str,
    value: &str,
    tlp: Option<Tlp>,
) -> Option<Indicator> {
    let ty = IndicatorType::from_word(sco_type)?;
    if !rule.types.contains(&ty) {
        return None;
    }
    let value = match ty {
        IndicatorType::Ipv4 | IndicatorType::Ipv6 => {
            let ip: IpAddr = value.parse().ok()?;
            is_public_ip(ip).then(|| ip.to_string())?
        }
        IndicatorType::Domain => {
            let name = value
                .strip_suffix('.')
                .unwrap_or(value)
                .to_ascii_lowercase();
            is_public_host_name(&name).then_some(name)?
        }
        IndicatorType::Url => normalise_url(value)?,
    };
    let pattern = stix::pattern::equals(sco_type, "value", &value);
    let what = match ty {
        IndicatorType::Ipv4 => "IPv4 address",
        IndicatorType::Ipv6 => "IPv6 address",
        IndicatorType::Domain => "domain name",
        IndicatorType::Url => "URL",
    };
    Some(Indicator {
        // The pattern and the marking: the same IOC under another marking is another object.
        id: match tlp {
            None => stix::sdo_id("indicator", pattern.as_bytes()),
            Some(t) => stix::sdo_id(
                "indicator",
                format!("{pattern}\u{0}{}", t.as_str()).as_bytes(),
            ),
        }
        .into(),
        description: format!(
            "A {what} that br-cti saw acting maliciously in a dataset (as its conversion rule \
             defines it); its sightings say in which observations, how often and when."
        ),
        pattern,
        name: value,
    })
}

/// A URL with its scheme and host in lower case, if its host is public (an address or a name).
fn normalise_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let public = if let Some(v6) = host_port.strip_prefix('[') {
        let (addr, _) = v6.split_once(']')?;
        is_public_ip(addr.parse().ok()?)
    } else {
        let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
        match host.parse::<IpAddr>() {
            Ok(ip) => is_public_ip(ip),
            Err(_) => is_host_name(host) && is_public_host_name(host),
        }
    };
    if !public {
        return None;
    }
    Some(format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase(),
        tail
    ))
}

/// The objects a file writes for one indicator it saw: the indicator, its `based-on`
/// relationship, an `indicates` relationship per attack, and the file's sighting of it.
pub(crate) fn objects(seen: &Indicated, identity: &str) -> Vec<Map<String, Value>> {
    let epoch = producer_epoch();
    let i = &seen.indicator;
    let mut indicator = sdo("indicator", i.id.to_string(), epoch, epoch, Some(identity));
    indicator.insert("name".into(), json!(i.name));
    indicator.insert("description".into(), json!(i.description));
    indicator.insert("indicator_types".into(), json!(["malicious-activity"]));
    indicator.insert("pattern".into(), json!(i.pattern));
    indicator.insert("pattern_type".into(), json!("stix"));
    indicator.insert("pattern_version".into(), json!("2.1"));
    indicator.insert("valid_from".into(), json!(epoch.to_millis_string()));
    let mut out = vec![
        indicator,
        relationship(&i.id, "based-on", &seen.observable, identity),
    ];
    for attack in &seen.attacks {
        out.push(relationship(&i.id, "indicates", attack, identity));
    }
    out.push(node_sighting(
        identity,
        &format!("{}|{}|{}", i.id, seen.first_observation, seen.count),
        &i.id,
        seen.first,
        seen.last,
        seen.count,
        None,
    ));
    out
}

/// A relationship whose id follows from its ends and type (the same in every file).
fn relationship(source: &str, kind: &str, target: &str, identity: &str) -> Map<String, Value> {
    let epoch = producer_epoch();
    let seed = format!("{source}|{kind}|{target}");
    let mut r = sdo(
        "relationship",
        stix::sdo_id("relationship", seed.as_bytes()),
        epoch,
        epoch,
        Some(identity),
    );
    r.insert("relationship_type".into(), json!(kind));
    r.insert("source_ref".into(), json!(source));
    r.insert("target_ref".into(), json!(target));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use br_cti_domain::vocab::DataType;

    fn rule() -> IndicatorRule {
        DataType::OpenSource.default_indicators()
    }

    #[test]
    fn public_values_become_one_indicator_each() {
        let a = indicator(&rule(), "ipv6-addr", "2606:4700:0:0:0:0:0:1111", None).unwrap();
        let b = indicator(&rule(), "ipv6-addr", "2606:4700::1111", None).unwrap();
        assert_eq!(a.pattern, "[ipv6-addr:value = '2606:4700::1111']");
        assert_eq!(a.id, b.id);
        assert!(a.id.starts_with("indicator--"));
        let d = indicator(&rule(), "domain-name", "Evil.COM.", None).unwrap();
        assert_eq!(d.pattern, "[domain-name:value = 'evil.com']");
        let u = indicator(&rule(), "url", "HTTP://Evil.com:8080/a'b?q=1", None).unwrap();
        assert_eq!(u.pattern, r"[url:value = 'http://evil.com:8080/a\'b?q=1']");
    }

    #[test]
    fn private_values_and_other_types_do_not() {
        for (ty, v) in [
            ("ipv4-addr", "10.1.2.3"),
            ("ipv4-addr", "100.64.0.1"),
            ("ipv6-addr", "fe80::1"),
            ("domain-name", "printer.local"),
            ("url", "http://192.168.1.1/admin"),
            ("url", "http://[fd00::1]/"),
            ("url", "http://intranet/"),
            ("mac-addr", "aa:bb:cc:dd:ee:ff"),
        ] {
            assert!(indicator(&rule(), ty, v, None).is_none(), "{ty} {v}");
        }
        let addresses = DataType::Honeypot.default_indicators();
        assert!(indicator(&addresses, "url", "http://evil.com/", None).is_none());
        let narrowed = addresses.narrowed_to(&[IndicatorType::Ipv6]);
        assert!(indicator(&narrowed, "ipv4-addr", "8.8.8.8", None).is_none());
        assert!(indicator(&narrowed, "ipv6-addr", "2606:4700::1111", None).is_some());
    }
}
