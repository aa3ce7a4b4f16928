//! STIX patterns (STIX 2.1 part 9): the one comparison the node writes, an object property
//! equal to a string.

/// `[object_type:path = 'value']`, the value quoted as the pattern grammar's string literal
/// wants it: `\` and `'` each take a backslash, every other character stands for itself.
pub fn equals(object_type: &str, path: &str, value: &str) -> String {
    let mut out = String::with_capacity(object_type.len() + path.len() + value.len() + 10);
    out.push('[');
    out.push_str(object_type);
    out.push(':');
    out.push_str(path);
    out.push_str(" = '");
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str("']");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            equals("ipv4-addr", "value", "8.8.8.8"),
            "[ipv4-addr:value = '8.8.8.8']"
        );
        assert_eq!(
            equals("url", "value", r"http://x.com/a'b\c"),
            r"[url:value = 'http://x.com/a\'b\\c']"
        );
    }
}
