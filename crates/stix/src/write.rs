//! Writers: JSON Lines (one compact object per line, `\n` after each) and bundles.

use std::io::{self, Write};

use serde::Serialize;

/// Writes `object` as one compact JSON line.
pub fn write_jsonl_line<W: Write, T: Serialize + ?Sized>(
    out: &mut W,
    object: &T,
) -> io::Result<()> {
    serde_json::to_writer(&mut *out, object)?;
    out.write_all(b"\n")
}

/// Streams `{"type":"bundle","id":..,"objects":[..]}` one object at a time.
pub struct BundleWriter<W: Write> {
    out: W,
    first: bool,
}

impl<W: Write> BundleWriter<W> {
    pub fn begin(mut out: W, bundle_id: &str) -> io::Result<Self> {
        out.write_all(b"{\"type\":\"bundle\",\"id\":")?;
        serde_json::to_writer(&mut out, bundle_id)?;
        out.write_all(b",\"objects\":[")?;
        Ok(Self { out, first: true })
    }

    pub fn write_object<T: Serialize + ?Sized>(&mut self, object: &T) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.out, object)?;
        Ok(())
    }

    /// Writes an object that is already serialised JSON (e.g. a line of a JSON Lines file).
    pub fn write_raw(&mut self, json: &[u8]) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",")?;
        }
        self.first = false;
        self.out.write_all(json)
    }

    /// Writes `head` with one more property, `key`, a list of strings streamed from `items`
    /// (a grouping's `object_refs` over a file of millions of objects, never held at once).
    /// `head` must not hold `key`.
    pub fn write_object_with_list<I, S>(
        &mut self,
        head: &serde_json::Map<String, serde_json::Value>,
        key: &str,
        items: I,
    ) -> io::Result<()>
    where
        I: IntoIterator<Item = io::Result<S>>,
        S: AsRef<str>,
    {
        debug_assert!(!head.contains_key(key));
        if !self.first {
            self.out.write_all(b",")?;
        }
        self.first = false;
        let text = serde_json::to_string(head)?;
        // `{...}` without its closing brace, then `,"key":[...]}`.
        let open = &text[..text.len() - 1];
        self.out.write_all(open.as_bytes())?;
        if head.is_empty() {
            self.out.write_all(b"\"")?;
        } else {
            self.out.write_all(b",\"")?;
        }
        self.out.write_all(key.as_bytes())?;
        self.out.write_all(b"\":[")?;
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            serde_json::to_writer(&mut self.out, item?.as_ref())?;
        }
        self.out.write_all(b"]}")
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(b"]}")?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_with_a_streamed_list() {
        let mut w = BundleWriter::begin(Vec::new(), "bundle--1").unwrap();
        w.write_object(&json!({"type": "x"})).unwrap();
        let head = json!({"type": "grouping", "name": "a \"b\""});
        let items = ["x--1", "y\"2"].map(|s| Ok::<_, io::Error>(s.to_string()));
        w.write_object_with_list(head.as_object().unwrap(), "object_refs", items)
            .unwrap();
        let empty = serde_json::Map::new();
        w.write_object_with_list(&empty, "l", std::iter::empty::<io::Result<&str>>())
            .unwrap();
        let out = w.finish().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["objects"],
            json!([{"type": "x"},
                {"type": "grouping", "name": "a \"b\"", "object_refs": ["x--1", "y\"2"]},
                {"l": []}])
        );
    }

    #[test]
    fn jsonl_and_bundle() {
        let mut out = Vec::new();
        write_jsonl_line(&mut out, &json!({"a": 1})).unwrap();
        write_jsonl_line(&mut out, &json!({"b": "x"})).unwrap();
        assert_eq!(out, b"{\"a\":1}\n{\"b\":\"x\"}\n");
        let mut b = BundleWriter::begin(Vec::new(), "bundle--x").unwrap();
        b.write_object(&json!({"a": 1})).unwrap();
        b.write_raw(b"{\"b\":2}").unwrap();
        let bytes = b.finish().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"type": "bundle", "id": "bundle--x", "objects": [{"a": 1}, {"b": 2}]})
        );
    }
}
