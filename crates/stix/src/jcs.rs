//! RFC 8785 JSON Canonicalization Scheme: object keys sorted by their UTF-16 code units,
//! no insignificant white space, strings with the minimal escapes, and numbers written as
//! ECMAScript's `Number.prototype.toString` writes them (`45006000000.0` becomes
//! `45006000000`, `1e21` becomes `1e+21`).
//!
//! Integers are written with all their digits, as python-stix2's canonicaliser writes Python
//! integers, so that identifiers agree with it.

use serde_json::{Map, Number, Value};

/// The canonical form of `value`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::with_capacity(128);
    write_canonical(value, &mut out);
    out
}

/// Appends the canonical form of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(k, out);
        out.push(':');
        write_canonical(v, out);
    }
    out.push('}');
}

fn write_number(n: &Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        out.push_str(itoa::Buffer::new().format(i));
    } else if let Some(u) = n.as_u64() {
        out.push_str(itoa::Buffer::new().format(u));
    } else if let Some(f) = n.as_f64() {
        write_f64(f, out);
    }
}

/// ECMAScript formatting of a finite double (JSON has no NaN or infinity).
pub fn write_f64(f: f64, out: &mut String) {
    if f == 0.0 {
        out.push('0'); // also -0
        return;
    }
    let mut buf = ryu_js::Buffer::new();
    out.push_str(buf.format_finite(f));
}

/// A JSON string with the escapes RFC 8785 prescribes: `\"`, `\\`, `\b \f \n \r \t`, other
/// control characters as `\u00xx`; everything else as itself. The pieces (quotes included)
/// go to `emit` in order, so that one escaper serves every kind of output.
pub fn escape_string(s: &str, mut emit: impl FnMut(&str)) {
    emit("\"");
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        emit(s);
        emit("\"");
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `i` is a character boundary.
        emit(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let code = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ];
            emit(std::str::from_utf8(&code).expect("ASCII"));
        } else {
            emit(esc);
        }
        start = i + 1;
    }
    emit(&s[start..]);
    emit("\"");
}

/// [`escape_string`] into a `String`.
pub fn write_string(s: &str, out: &mut String) {
    escape_string(s, |piece| out.push_str(piece));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_the_ecmascript_way() {
        let cases = [
            (json!(45006000000.0), "45006000000"),
            (json!(1e21), "1e+21"),
            (json!(0.1), "0.1"),
            (json!(-0.0), "0"),
            (json!(1.5e-7), "1.5e-7"),
            (json!(123456789012345680000.0), "123456789012345680000"),
            (json!(42), "42"),
            (json!(-7), "-7"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(1697326037.992695), "1697326037.992695"),
        ];
        for (v, want) in cases {
            assert_eq!(canonical_json(&v), want, "{v}");
        }
    }

    #[test]
    fn rfc8785_sample() {
        // The example of RFC 8785 section 3.2.2 (less the numbers that JSON parsers disagree on).
        let v: Value = serde_json::from_str(
            r#"{"literals": [null, true, false], "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/"}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"literals":[null,true,false],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+FB33 sorts after U+1F600 in UTF-8 byte order but before it in UTF-16.
        let v = json!({"\u{1F600}": 1, "\u{FB33}": 2, "a": 3, "\r": 4, "1": 5, "\u{80}": 6});
        assert_eq!(
            canonical_json(&v),
            "{\"\\r\":4,\"1\":5,\"a\":3,\"\u{80}\":6,\"\u{1F600}\":1,\"\u{FB33}\":2}"
        );
    }
}
