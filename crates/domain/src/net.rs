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
}
