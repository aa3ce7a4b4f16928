//! Format, encoding and delimiter detection from a file's first bytes.

use std::io::{Read, Seek, SeekFrom};

use super::DatasetError;

/// How much of a file is looked at to decide its format.
const SAMPLE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoding {
    Utf8,
    Utf16Le,
    Utf16Be,
    /// GB18030, a superset of GBK and GB2312 (what Chinese Excel and tools write).
    Gb18030,
}

impl TextEncoding {
    pub fn encoding(self) -> &'static encoding_rs::Encoding {
        match self {
            Self::Utf8 => encoding_rs::UTF_8,
            Self::Utf16Le => encoding_rs::UTF_16LE,
            Self::Utf16Be => encoding_rs::UTF_16BE,
            Self::Gb18030 => encoding_rs::GB18030,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsvDialect {
    pub delimiter: u8,
    pub encoding: TextEncoding,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv(CsvDialect),
    Xlsx,
    Xls,
    JsonArray,
    JsonLines,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Self::Csv(_) => "CSV",
            Self::Xlsx => "XLSX",
            Self::Xls => "XLS",
            Self::JsonArray => "JSON",
            Self::JsonLines => "JSON Lines",
        }
    }
}

/// Decides the format of `input` from its first bytes. Leaves the position unspecified.
pub fn sniff<R: Read + Seek + ?Sized>(input: &mut R) -> Result<Format, DatasetError> {
    input.seek(SeekFrom::Start(0))?;
    let mut sample = Vec::with_capacity(SAMPLE);
    input.take(SAMPLE as u64).read_to_end(&mut sample)?;
    let complete = sample.len() < SAMPLE;
    sniff_bytes(&sample, complete)
}

/// What a file's first bytes say it is, when that is a well-known format that is not a
/// dataset (an image, an executable, an archive, a database): `Some("PNG image")`.
pub fn binary_kind(head: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 20] = [
        (b"\x89PNG\r\n\x1a\n", "PNG image"),
        (b"\xff\xd8\xff", "JPEG image"),
        (b"GIF87a", "GIF image"),
        (b"GIF89a", "GIF image"),
        (b"II*\x00", "TIFF image"),
        (b"MM\x00*", "TIFF image"),
        (b"%PDF-", "PDF document"),
        (b"\x7fELF", "ELF executable"),
        (b"\xca\xfe\xba\xbe", "Java class or Mach-O executable"),
        (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
        (b"\xce\xfa\xed\xfe", "Mach-O executable"),
        (b"\x00asm", "WebAssembly module"),
        (b"\x1f\x8b", "gzip archive"),
        (b"\xfd7zXZ\x00", "xz archive"),
        (b"(\xb5/\xfd", "zstd archive"),
        (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
        (b"Rar!\x1a\x07", "RAR archive"),
        (b"SQLite format 3\x00", "SQLite database"),
        (b"OggS\x00", "Ogg media"),
        (b"\x1a\x45\xdf\xa3", "Matroska/WebM media"),
    ];
    if let Some((_, kind)) = MAGIC.iter().find(|(m, _)| head.starts_with(m)) {
        return Some(kind);
    }
    // "MZ" followed by binary header fields (text that merely starts with "MZ" has none).
    if head.starts_with(b"MZ") && head.len() >= 4 && head[2..4].iter().any(|&b| b < 0x09) {
        return Some("Windows executable");
    }
    if head.starts_with(b"BZh") && head.get(4..10) == Some(b"1AY&SY") {
        return Some("bzip2 archive");
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" {
        return Some(match &head[8..12] {
            b"WEBP" => "WebP image",
            b"WAVE" => "WAV audio",
            b"AVI " => "AVI video",
            _ => "RIFF media",
        });
    }
    if head.get(4..8) == Some(b"ftyp") {
        return Some("MP4/QuickTime media");
    }
    None
}

fn sniff_bytes(sample: &[u8], complete: bool) -> Result<Format, DatasetError> {
    if let Some(kind) = binary_kind(sample) {
        return Err(DatasetError::NotADataset(kind.to_string()));
    }
    if sample.starts_with(b"PK\x03\x04") {
        return Ok(Format::Xlsx);
    }
    if sample.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return Ok(Format::Xls);
    }
    let (encoding, text): (TextEncoding, std::borrow::Cow<str>) =
        if sample.starts_with(&[0xFF, 0xFE]) {
            (
                TextEncoding::Utf16Le,
                encoding_rs::UTF_16LE
                    .decode_with_bom_removal(&sample[2..])
                    .0,
            )
        } else if sample.starts_with(&[0xFE, 0xFF]) {
            (
                TextEncoding::Utf16Be,
                encoding_rs::UTF_16BE
                    .decode_with_bom_removal(&sample[2..])
                    .0,
            )
        } else {
            let body = sample.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(sample);
            // No text encoding read here has NUL bytes (UTF-16 needs its BOM).
            if let Some(offset) = body.iter().position(|&b| b == 0) {
                return Err(DatasetError::NotADataset(format!(
                    "binary data (a NUL byte at byte {}; text datasets are UTF-8, GB18030 or \
                     UTF-16 with a BOM)",
                    offset + sample.len() - body.len()
                )));
            }
            match std::str::from_utf8(body) {
                Ok(s) => (TextEncoding::Utf8, s.into()),
                // A multi-byte character cut by the end of the sample.
                Err(e) if e.error_len().is_none() && !complete => (
                    TextEncoding::Utf8,
                    std::str::from_utf8(&body[..e.valid_up_to()])
                        .unwrap_or("")
                        .into(),
                ),
                Err(_) => (
                    TextEncoding::Gb18030,
                    encoding_rs::GB18030.decode_without_bom_handling(body).0,
                ),
            }
        };
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(DatasetError::Empty);
    }
    if encoding == TextEncoding::Utf8 {
        if trimmed.starts_with('[') {
            return Ok(Format::JsonArray);
        }
        if trimmed.starts_with('{') {
            return Ok(Format::JsonLines);
        }
    }
    Ok(Format::Csv(CsvDialect {
        delimiter: sniff_delimiter(&text, complete),
        encoding,
    }))
}

const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// Picks the delimiter that splits the sampled lines most consistently: the candidate whose
/// count outside quotes is the same on the most lines, then the one with the most columns.
fn sniff_delimiter(text: &str, complete: bool) -> u8 {
    let mut lines: Vec<&str> = text.lines().collect();
    if !complete && lines.len() > 1 {
        lines.pop(); // probably cut short by the end of the sample
    }
    let lines: Vec<&str> = lines
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .take(50)
        .collect();
    let mut best: Option<(usize, usize, u8)> = None; // (lines agreeing with the header, header count, delimiter)
    for d in DELIMITERS {
        let counts: Vec<usize> = lines.iter().map(|l| count_outside_quotes(l, d)).collect();
        let Some(&header) = counts.first() else {
            continue;
        };
        if header == 0 {
            continue;
        }
        let agreeing = counts.iter().filter(|&&c| c == header).count();
        let key = (agreeing, header, d);
        if best.is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
            best = Some(key);
        }
    }
    best.map(|b| b.2).unwrap_or(b',')
}

fn count_outside_quotes(line: &str, delimiter: u8) -> usize {
    let mut in_quotes = false;
    let mut n = 0;
    for &b in line.as_bytes() {
        if b == b'"' {
            in_quotes = !in_quotes;
        } else if b == delimiter && !in_quotes {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect(s: &[u8]) -> CsvDialect {
        match sniff_bytes(s, true).unwrap() {
            Format::Csv(d) => d,
            other => panic!("expected CSV, got {other:?}"),
        }
    }

    #[test]
    fn delimiters() {
        assert_eq!(dialect(b"a,b,c\n1,2,3\n").delimiter, b',');
        assert_eq!(dialect(b"a;b;c\n1,5;2,5;3\n").delimiter, b';');
        assert_eq!(dialect(b"a\tb\n\"x,y\"\t2\n").delimiter, b'\t');
        assert_eq!(dialect(b"a|b|c\n1|2|3\n").delimiter, b'|');
        assert_eq!(dialect(b"only\n1\n").delimiter, b',');
        // A quoted comma does not count.
        assert_eq!(dialect(b"\"a,b\";c\n\"1,2\";3\n").delimiter, b';');
    }

    #[test]
    fn encodings() {
        assert_eq!(dialect(b"a,b\n").encoding, TextEncoding::Utf8);
        assert_eq!(dialect(b"\xEF\xBB\xBFa,b\n").encoding, TextEncoding::Utf8);
        let (gbk, _, _) = encoding_rs::GBK.encode("时间,源IP\n");
        assert_eq!(dialect(&gbk).encoding, TextEncoding::Gb18030);
        let mut utf16 = vec![0xFF, 0xFE];
        for u in "a;b\n1;2\n".encode_utf16() {
            utf16.extend(u.to_le_bytes());
        }
        assert_eq!(
            dialect(&utf16),
            CsvDialect {
                delimiter: b';',
                encoding: TextEncoding::Utf16Le
            }
        );
    }

    #[test]
    fn formats() {
        assert_eq!(
            sniff_bytes(b"  [{\"a\":1}]", true).unwrap(),
            Format::JsonArray
        );
        assert_eq!(
            sniff_bytes(b"\xEF\xBB\xBF{\"a\":1}\n", true).unwrap(),
            Format::JsonLines
        );
        assert_eq!(sniff_bytes(b"PK\x03\x04....", true).unwrap(), Format::Xlsx);
        assert_eq!(
            sniff_bytes(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0], true).unwrap(),
            Format::Xls
        );
        assert!(matches!(sniff_bytes(b"", true), Err(DatasetError::Empty)));
    }

    #[test]
    fn binary_files_are_not_datasets() {
        let not = |bytes: &[u8]| match sniff_bytes(bytes, true) {
            Err(e @ DatasetError::NotADataset(_)) => e.to_string(),
            other => panic!("expected not a dataset, got {other:?}"),
        };
        assert_eq!(
            not(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            "not a dataset: PNG image"
        );
        assert_eq!(
            not(b"\x7fELF\x02\x01\x01\0"),
            "not a dataset: ELF executable"
        );
        assert_eq!(not(b"MZ\x90\x00\x03"), "not a dataset: Windows executable");
        assert_eq!(not(b"%PDF-1.7\n"), "not a dataset: PDF document");
        assert_eq!(not(b"\x1f\x8b\x08\0"), "not a dataset: gzip archive");
        assert_eq!(not(b"RIFF\0\0\0\0WEBPVP8 "), "not a dataset: WebP image");
        assert!(not(b"a,b\n1,\x002\n").contains("NUL byte at byte 6"));
        // Text that merely starts like a signature is still text.
        assert!(matches!(
            sniff_bytes(b"MZone,b\n1,2\n", true),
            Ok(Format::Csv(_))
        ));
        assert!(matches!(
            sniff_bytes(b"GIF,x\n1,2\n", true),
            Ok(Format::Csv(_))
        ));
    }
}
