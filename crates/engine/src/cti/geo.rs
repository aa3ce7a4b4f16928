//! Offline IP geolocation from a MaxMind-format database (GeoLite2-City, DB-IP Lite City, or
//! any `.mmdb` with the GeoIP2 City layout). Nothing is ever invented: an address the database
//! does not know is `unknown`, and private or reserved addresses are labelled as such before
//! the database is asked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use maxminddb::{Reader, geoip2};
use serde::Serialize;

/// Where an address is, as the statistics report it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Location {
    pub country: String,
    pub region: String,
    pub city: String,
    /// `"lat,lon"`, or `""` when the database gives no coordinates.
    pub loc: String,
}

pub(crate) const PRIVATE: &str = "private";
pub(crate) const RESERVED: &str = "reserved";
pub(crate) const UNKNOWN: &str = "unknown";

impl Location {
    /// A location that is only a label (private, reserved, unknown) in all three parts.
    pub fn label(label: &str) -> Self {
        Location {
            country: label.to_string(),
            region: label.to_string(),
            city: label.to_string(),
            loc: String::new(),
        }
    }

    /// `"country,region,city"`, the key of `ips_locations_map` and `ioc_locations_map`.
    pub fn key(&self) -> String {
        format!("{},{},{}", self.country, self.region, self.city)
    }
}

/// The geolocation database, if one was configured.
pub struct GeoIp {
    reader: Option<Reader<Vec<u8>>>,
    description: String,
}

impl GeoIp {
    /// No database: every public address is `unknown`.
    pub fn none() -> Self {
        GeoIp {
            reader: None,
            description: "none".to_string(),
        }
    }

    /// Opens a `.mmdb` file (read into memory once; lookups need no I/O).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = Reader::open_readfile(path)
            .map_err(|e| anyhow::anyhow!("cannot open GeoIP database {}: {e}", path.display()))?;
        let built = time::OffsetDateTime::from_unix_timestamp(reader.metadata().build_epoch as i64)
            .map(|t| t.date().to_string())
            .unwrap_or_default();
        let description = format!("{} (built {built})", reader.metadata().database_type);
        // A database without the City layout would silently answer nothing: check one
        // well-known public address decodes (an empty answer is fine, a type error is not).
        reader
            .lookup(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)))
            .and_then(|r| r.decode::<geoip2::City>())
            .map_err(|e| {
                anyhow::anyhow!(
                    "GeoIP database {} does not have the GeoIP2 City layout: {e}",
                    path.display()
                )
            })?;
        Ok(GeoIp {
            reader: Some(reader),
            description,
        })
    }

    /// What answered the lookups: the database type and build date, or `none`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Locates one address.
    pub fn locate(&self, ip: IpAddr) -> Location {
        if let Some(label) = special(ip) {
            return Location::label(label);
        }
        let Some(reader) = &self.reader else {
            return Location::label(UNKNOWN);
        };
        let city = match reader.lookup(ip).and_then(|r| r.decode::<geoip2::City>()) {
            Ok(Some(city)) => city,
            Ok(None) => return Location::label(UNKNOWN),
            Err(e) => {
                tracing::warn!(%ip, "GeoIP lookup failed: {e}");
                return Location::label(UNKNOWN);
            }
        };
        let part = |name: Option<&str>| {
            name.map(clean)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| UNKNOWN.to_string())
        };
        let country = part(city.country.names.english);
        if country == UNKNOWN && city.city.names.english.is_none() {
            return Location::label(UNKNOWN);
        }
        let region = part(city.subdivisions.first().and_then(|s| s.names.english));
        let loc = match (city.location.latitude, city.location.longitude) {
            (Some(lat), Some(lon)) => format!("{lat},{lon}"),
            _ => String::new(),
        };
        Location {
            country,
            region,
            city: part(city.city.names.english),
            loc,
        }
    }
}

/// Commas separate the parts of a location key: none may appear inside a part.
fn clean(name: &str) -> String {
    name.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `private` or `reserved` for addresses that have no place on the map.
pub(crate) fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => special_v4(v4),
            None => special_v6(v6),
        },
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    // RFC 1918, and the shared address space of carrier-grade NAT (RFC 6598).
    if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        return Some(PRIVATE);
    }
    let reserved = a == 0 // "this network"
        || ip.is_loopback()
        || ip.is_link_local()
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 224; // multicast, reserved, broadcast
    reserved.then_some(RESERVED)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if (s[0] & 0xfe00) == 0xfc00 {
        return Some(PRIVATE); // unique local
    }
    let reserved = ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0); // discard-only
    reserved.then_some(RESERVED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn labels_private_and_reserved() {
        for p in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
        ] {
            assert_eq!(special(ip(p)), Some(PRIVATE), "{p}");
        }
        for r in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.1.1",
            "192.0.2.1",
            "198.51.100.3",
            "203.0.113.9",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(special(ip(r)), Some(RESERVED), "{r}");
        }
        for public in [
            "8.8.8.8",
            "101.33.192.242",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(special(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn locates_from_a_real_mmdb_file() {
        let mut writer = mmdb_writer::Writer::new("Test-City");
        let record = serde_json::json!({
            "country": {"iso_code": "DE", "names": {"en": "Germany"}},
            "subdivisions": [{"names": {"en": "Berlin, Land"}}],
            "city": {"names": {"en": "Berlin"}},
            "location": {"latitude": 52.52, "longitude": 13.405},
        });
        writer
            .insert("5.9.0.0/16".parse::<ipnet::IpNet>().unwrap(), &record)
            .unwrap();
        let country_only = serde_json::json!({"country": {"names": {"en": "France"}}});
        writer
            .insert("2a01::/16".parse::<ipnet::IpNet>().unwrap(), &country_only)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.mmdb");
        std::fs::write(&path, writer.to_bytes().unwrap()).unwrap();
        let geo = GeoIp::open(&path).unwrap();
        assert!(geo.description().starts_with("Test-City (built "));
        let berlin = geo.locate(ip("5.9.1.2"));
        // A comma inside a name would break the "country,region,city" key.
        assert_eq!(berlin.key(), "Germany,Berlin Land,Berlin");
        assert_eq!(berlin.loc, "52.52,13.405");
        let france = geo.locate(ip("2a01::1"));
        assert_eq!(france.key(), "France,unknown,unknown");
        assert_eq!(france.loc, "");
        assert_eq!(geo.locate(ip("8.8.8.8")), Location::label(UNKNOWN));
        assert_eq!(geo.locate(ip("192.168.0.1")), Location::label(PRIVATE));

        std::fs::write(&path, b"not a database").unwrap();
        let err = GeoIp::open(&path).err().unwrap().to_string();
        assert!(err.contains("cannot open GeoIP database"), "{err}");
    }

    #[test]
    fn without_a_database_public_addresses_are_unknown() {
        let geo = GeoIp::none();
        assert_eq!(geo.locate(ip("8.8.8.8")), Location::label(UNKNOWN));
        assert_eq!(geo.locate(ip("10.0.0.1")), Location::label(PRIVATE));
        assert_eq!(Location::label(UNKNOWN).key(), "unknown,unknown,unknown");
    }
}
