//! Network names and addresses as the node recognises them, in dataset cells and in reported
//! hidden dangers alike: one host-name rule, one MAC address parser.

/// A host name: DNS labels of ASCII letters, digits, `-` and `_` (service labels such as
/// `_dmarc`), 1-63 bytes each and not starting or ending with `-`, at most 253 bytes in all
/// (IDNs as punycode; one trailing dot allowed), and not an address in disguise (an all-digit
/// last label would make "999.1.1.1" a host name).
pub fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !s
            .rsplit('.')
            .next()
            .unwrap_or("")
            .bytes()
            .all(|b| b.is_ascii_digit())
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`, `aa-bb-…` (one separator throughout) or
/// `aabb.ccdd.eeff`; normalised to lowercase colons (the STIX form).
pub fn normalise_mac(s: &str) -> Option<String> {
    let hex: String = if s.len() == 17 {
        let sep = s.as_bytes()[2];
        if sep != b':' && sep != b'-' {
            return None;
        }
        let parts: Vec<&str> = s.split(sep as char).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return None;
        }
        parts.concat()
    } else if s.len() == 14 {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
            return None;
        }
        parts.concat()
    } else {
        return None;
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(
        (0..6)
            .map(|i| &hex[i * 2..i * 2 + 2])
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// Whether an address means the same thing everywhere on the Internet: not private (RFC 1918,
/// unique local), shared (carrier-grade NAT), loopback, link-local, documentation, benchmarking,
/// multicast, reserved, unspecified or broadcast. Only such addresses become indicators; the
/// others name a machine only inside the network that saw them. An IPv4-mapped or
/// NAT64-embedded IPv6 address is judged by its IPv4 address.
pub fn is_public_ip(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => is_public_ipv4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ipv4(v4);
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public_ipv4(std::net::Ipv4Addr::new(a, b, c, d));
            }
            let in_prefix = |prefix: u128, len: u32| {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                u128::from(v6) & mask == prefix & mask
            };
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || s[0] & 0xfe00 == 0xfc00 // unique local, fc00::/7
                || s[0] & 0xffc0 == 0xfe80 // link-local, fe80::/10
                || s[0] & 0xffc0 == 0xfec0 // site-local (deprecated), fec0::/10
                || in_prefix(0x0100_0000_0000_0000_0000_0000_0000_0000, 64) // discard, 100::/64
                || in_prefix(0x2001_0db8_0000_0000_0000_0000_0000_0000, 32) // documentation
                || in_prefix(0x3fff_0000_0000_0000_0000_0000_0000_0000, 20) // documentation (RFC 9637)
                || in_prefix(0x2001_0000_0000_0000_0000_0000_0000_0000, 32) // Teredo
                || in_prefix(0x2001_0010_0000_0000_0000_0000_0000_0000, 28) // ORCHID
                || in_prefix(0x2001_0020_0000_0000_0000_0000_0000_0000, 28) // ORCHIDv2
                || in_prefix(0x2002_0000_0000_0000_0000_0000_0000_0000, 16) // 6to4
                || in_prefix(0, 96)) // IPv4-compatible (deprecated) and the rest of ::/96
        }
    }
}

fn is_public_ipv4(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network"
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || (a == 100 && b & 0xc0 == 64) // shared address space (CGNAT), 100.64/10
        || ip.is_loopback()
        || ip.is_link_local()
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0/24
        || ip.is_documentation() // 192.0.2/24, 198.51.100/24, 203.0.113/24
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 198 && b & 0xfe == 18) // benchmarking, 198.18/15
        || ip.is_multicast()
        || a >= 240) // reserved, and the broadcast address
}

/// Whether a host name can name a machine on the Internet: not a special-use or
/// reserved-for-private-use name (`localhost`, `.local`, `.internal`, `.home.arpa`, `.test`,
/// `.example`, `.invalid`, `.onion`, the `example.com/net/org` domains, reverse-lookup names,
/// nor a single label).
pub fn is_public_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    const SPECIAL_TLDS: [&str; 11] = [
        "localhost",
        "local",
        "internal",
        "test",
        "example",
        "invalid",
        "onion",
        "lan",
        "home",
        "corp",
        "intranet",
    ];
    const SPECIAL_DOMAINS: [&str; 5] = [
        "example.com",
        "example.net",
        "example.org",
        "home.arpa",
        "arpa",
    ];
    let Some((_, tld)) = name.rsplit_once('.') else {
        return false;
    };
    !SPECIAL_TLDS.contains(&tld)
        && !SPECIAL_DOMAINS
            .iter()
            .any(|d| name == *d || name.ends_with(&format!(".{d}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_host_names() {
        assert_eq!(
            normalise_mac("aabb.ccdd.eeff").unwrap(),
            "aa:bb:cc:dd:ee:ff"
        );
        assert!(normalise_mac("aa:bb-cc:dd:ee:ff").is_none());
        assert!(normalise_mac("gg:bb:cc:dd:ee:ff").is_none());
        assert!(is_host_name("xn--fiqs8s.cn"));
        assert!(!is_host_name("-a.com"));
        assert!(!is_host_name("1.2.3.4"));
    }

    #[test]
    fn host_names_take_service_labels_and_need_no_dot() {
        assert!(is_host_name("_dmarc.example.com"));
        assert!(is_host_name("intranet"));
        assert!(is_host_name("web.example.com."));
        assert!(!is_host_name(""));
        assert!(!is_host_name("a..b"));
        assert!(!is_host_name(&format!("{}.com", "a".repeat(64))));
        assert_eq!(
            normalise_mac("AA-BB-CC-DD-EE-FF").unwrap(),
            "aa:bb:cc:dd:ee:ff"
        );
    }

    #[test]
    fn public_addresses() {
        let public = |s: &str| is_public_ip(s.parse().unwrap());
        for p in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(public(p), "{p} is public");
        }
        for p in [
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "2001::1",
            "2002:c000:0204::1",
            "::8.8.8.8",
        ] {
            assert!(!public(p), "{p} is not public");
        }
    }

    #[test]
    fn public_host_names() {
        for h in [
            "evil.com",
            "c2.bad-domain.cn",
            "WWW.Example.co.uk",
            "x.org.",
        ] {
            assert!(is_public_host_name(h), "{h}");
        }
        for h in [
            "localhost",
            "printer.local",
            "db.internal",
            "a.test",
            "example.com",
            "www.example.org",
            "router.home.arpa",
            "1.0.168.192.in-addr.arpa",
            "abc.onion",
            "intranet",
        ] {
            assert!(!is_public_host_name(h), "{h}");
        }
    }
}
