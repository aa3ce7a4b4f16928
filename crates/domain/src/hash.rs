//! Content hashes as they appear on the wire: 64 lowercase hexadecimal characters (SHA-256).

use std::fmt;

/// A SHA-256 digest written as 64 lowercase hex characters. Parsing accepts upper case and
/// normalises it, and rejects anything else before it can reach a file system path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hex(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("is empty; expected 64 hexadecimal characters (a SHA-256)")]
    Empty,
    #[error("has {0} characters; expected 64 hexadecimal characters (a SHA-256)")]
    Length(usize),
    #[error("has a non-hexadecimal character {0:?} at position {1}")]
    NotHex(char, usize),
}

impl Sha256Hex {
    pub fn parse(s: &str) -> Result<Self, HashError> {
        if s.is_empty() {
            return Err(HashError::Empty);
        }
        if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(HashError::NotHex(c, i + 1));
        }
        if s.len() != 64 {
            return Err(HashError::Length(s.len()));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// Wraps a digest computed by this process.
    pub fn from_digest(bytes: &[u8]) -> Self {
        debug_assert_eq!(bytes.len(), 32);
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// As its 64 hex characters (how every record shows a hash).
impl serde::Serialize for Sha256Hex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let upper = "D8A3274FA87314FDFFC4EB038639DA7076B1E66098EBD397F941A5775D3AAE1D";
        let h = Sha256Hex::parse(upper).unwrap();
        assert_eq!(h.as_str(), upper.to_ascii_lowercase());
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Sha256Hex::parse(""), Err(HashError::Empty));
        assert_eq!(Sha256Hex::parse("abc"), Err(HashError::Length(3)));
        let traversal = format!("../{}", "a".repeat(61));
        assert_eq!(Sha256Hex::parse(&traversal), Err(HashError::NotHex('.', 1)));
    }
}
