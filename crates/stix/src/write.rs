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
