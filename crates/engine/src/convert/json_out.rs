//! Writing the hot objects (flows, observations) straight to JSON bytes, and their canonical
//! form for ids, without building `serde_json` maps: the conversion's inner loop.

use std::sync::Arc;

use serde_json::Value;

/// A column name, shared by all the cells of that column.
pub(super) type Name = Arc<str>;
/// A dataset cell kept as data: (column name, value).
pub(super) type Column = (Name, Value);

/// Appends `s` as a JSON string (RFC 8785 escaping, which is also valid plain JSON).
pub(super) fn push_str(out: &mut Vec<u8>, s: &str) {
    stix::jcs::escape_string(s, |piece| out.extend_from_slice(piece.as_bytes()));
}

/// An object being written: `{"k":v,...}`. Keys are trusted ASCII names.
pub(super) struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub(super) fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_str(self.out, v);
        self
    }

    /// A string that needs no escaping (ids, timestamps, type names: made here, ASCII without
    /// quotes, backslashes or control characters), written without scanning.
    pub(super) fn plain(&mut self, k: &str, v: &str) -> &mut Self {
        debug_assert!(!v.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
        self.key(k);
        self.out.push(b'"');
        self.out.extend_from_slice(v.as_bytes());
        self.out.push(b'"');
        self
    }

    /// A list of strings that need no escaping (ids).
    pub(super) fn plain_list<S: AsRef<str>>(&mut self, k: &str, items: &[S]) -> &mut Self {
        self.key(k);
        self.out.push(b'[');
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            debug_assert!(
                !s.as_ref()
                    .bytes()
                    .any(|b| b < 0x20 || b == b'"' || b == b'\\')
            );
            self.out.push(b'"');
            self.out.extend_from_slice(s.as_ref().as_bytes());
            self.out.push(b'"');
        }
        self.out.push(b']');
        self
    }

    pub(super) fn u64(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self
    }

    pub(super) fn strs<S: AsRef<str>>(&mut self, k: &str, items: &[S]) -> &mut Self {
        self.key(k);
        self.out.push(b'[');
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            push_str(self.out, s.as_ref());
        }
        self.out.push(b']');
        self
    }

    /// `"extensions":{"<id>":{"extension_type":"property-extension","columns":[...]}}`
    pub(super) fn columns_extension(
        &mut self,
        extension_id: &str,
        columns: &[Column],
    ) -> &mut Self {
        self.key("extensions");
        self.out.push(b'{');
        push_str(self.out, extension_id);
        self.out
            .extend_from_slice(b":{\"extension_type\":\"property-extension\",\"columns\":[");
        for (i, (name, value)) in columns.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(b"{\"name\":");
            push_str(self.out, name);
            self.out.extend_from_slice(b",\"value\":");
            serde_json::to_writer(&mut *self.out, value).expect("writing to memory cannot fail");
            self.out.push(b'}');
        }
        self.out.extend_from_slice(b"]}}");
        self
    }

    pub(super) fn end(self) {
        self.out.push(b'}');
    }
}

/// The canonical (RFC 8785) form of the same extension, keys sorted.
pub(super) fn canonical_columns_extension(
    out: &mut String,
    extension_id: &str,
    columns: &[Column],
) {
    out.push('{');
    stix::jcs::write_string(extension_id, out);
    out.push_str(":{\"columns\":[");
    for (i, (name, value)) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        stix::jcs::write_string(name, out);
        out.push_str(",\"value\":");
        stix::jcs::write_canonical(value, out);
        out.push('}');
    }
    out.push_str("],\"extension_type\":\"property-extension\"}}");
}

/// A network-traffic object's properties.
#[derive(Default)]
pub(super) struct Flow<'a> {
    pub src_ref: Option<&'a str>,
    pub dst_ref: Option<&'a str>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub src_port: Option<u64>,
    pub dst_port: Option<u64>,
    pub protocols: &'a [String],
    pub src_byte_count: Option<u64>,
    pub dst_byte_count: Option<u64>,
    pub src_packets: Option<u64>,
    pub dst_packets: Option<u64>,
    pub src_payload_ref: Option<&'a str>,
    pub columns: &'a [Column],
}

impl Flow<'_> {
    /// The deterministic id: UUIDv5 over the canonical id-contributing properties.
    pub(super) fn id(&self, extension_id: &str, canon: &mut String) -> String {
        canon.clear();
        canon.push('{');
        let mut first = true;
        let mut key = |canon: &mut String, k: &str| {
            if !first {
                canon.push(',');
            }
            first = false;
            canon.push('"');
            canon.push_str(k);
            canon.push_str("\":");
        };
        // Sorted: dst_port, dst_ref, end, extensions, protocols, src_port, src_ref, start.
        if let Some(p) = self.dst_port {
            key(canon, "dst_port");
            canon.push_str(itoa::Buffer::new().format(p));
        }
        if let Some(r) = self.dst_ref {
            key(canon, "dst_ref");
            stix::jcs::write_string(r, canon);
        }
        if let Some(e) = &self.end {
            key(canon, "end");
            stix::jcs::write_string(e, canon);
        }
        if !self.columns.is_empty() {
            key(canon, "extensions");
            canonical_columns_extension(canon, extension_id, self.columns);
        }
        key(canon, "protocols");
        canon.push('[');
        for (i, p) in self.protocols.iter().enumerate() {
            if i > 0 {
                canon.push(',');
            }
            stix::jcs::write_string(p, canon);
        }
        canon.push(']');
        if let Some(p) = self.src_port {
            key(canon, "src_port");
            canon.push_str(itoa::Buffer::new().format(p));
        }
        if let Some(r) = self.src_ref {
            key(canon, "src_ref");
            stix::jcs::write_string(r, canon);
        }
        if let Some(s) = &self.start {
            key(canon, "start");
            stix::jcs::write_string(s, canon);
        }
        canon.push('}');
        stix::id::sco_id_from_canonical("network-traffic", canon)
    }

    pub(super) fn write(
        &self,
        id: &str,
        extension_id: &str,
        marking: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        let mut o = Obj::new(out);
        o.str("type", "network-traffic")
            .str("spec_version", "2.1")
            .str("id", id);
        if let Some(r) = self.src_ref {
            o.str("src_ref", r);
        }
        if let Some(r) = self.dst_ref {
            o.str("dst_ref", r);
        }
        if let Some(s) = &self.start {
            o.str("start", s);
        }
        if let Some(e) = &self.end {
            o.str("end", e);
        }
        if let Some(p) = self.src_port {
            o.u64("src_port", p);
        }
        if let Some(p) = self.dst_port {
            o.u64("dst_port", p);
        }
        o.strs("protocols", self.protocols);
        for (k, v) in [
            ("src_byte_count", self.src_byte_count),
            ("dst_byte_count", self.dst_byte_count),
            ("src_packets", self.src_packets),
            ("dst_packets", self.dst_packets),
        ] {
            if let Some(v) = v {
                o.u64(k, v);
            }
        }
        if let Some(a) = self.src_payload_ref {
            o.plain("src_payload_ref", a);
        }
        if !self.columns.is_empty() {
            o.columns_extension(extension_id, self.columns);
        }
        if let Some(m) = marking {
            o.plain_list("object_marking_refs", &[m]);
        }
        o.end();
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    #[test]
    fn strings_escape_as_jcs_does() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "line\nbreak\t\r\u{8}\u{c}",
            "\u{1}\u{1f}",
            "中文",
        ] {
            let mut ours = Vec::new();
            push_str(&mut ours, s);
            let mut jcs = String::new();
            stix::jcs::write_string(s, &mut jcs);
            assert_eq!(String::from_utf8(ours).unwrap(), jcs);
            assert_eq!(serde_json::from_str::<String>(&jcs).unwrap(), s);
        }
    }

    #[test]
    fn flow_matches_the_generic_path() {
        let protocols = vec!["udp".to_string(), "dns".to_string()];
        let columns = vec![
            (Name::from("tot_dur"), json!(45006000000.0)),
            (Name::from("备注"), json!("a \"b\"\n")),
            (Name::from("n"), json!(3)),
        ];
        let flow = Flow {
            src_ref: Some("ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4"),
            dst_ref: Some("ipv6-addr--1e61d36c-a16c-53b7-a80f-2a00161c96b1"),
            start: Some("2024-01-01T00:00:00Z".into()),
            src_port: Some(53),
            dst_port: Some(5353),
            protocols: &protocols,
            src_packets: Some(4),
            columns: &columns,
            ..Flow::default()
        };
        let ext = "extension-definition--f2cd5166-cc4a-443a-9ea7-40169342f23d";
        let mut canon = String::new();
        let id = flow.id(ext, &mut canon);
        let mut line = Vec::new();
        flow.write(&id, ext, None, &mut line);
        let parsed: Map<String, Value> = serde_json::from_slice(&line).unwrap();
        // The generic path (serde maps, python-stix2's algorithm) agrees on the id.
        assert_eq!(stix::sco_id("network-traffic", &parsed).unwrap(), id);
        assert_eq!(parsed["extensions"][ext]["columns"][1]["name"], "备注");
        assert_eq!(parsed["src_packets"], 4);
    }
}
