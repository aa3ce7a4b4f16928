//! What an XLSX file declares must not drive an allocation. Before calamine opens a workbook
//! (it reserves room for as many shared strings as `uniqueCount` says, and holds them all in
//! memory), the XML parts it will read are inflated once, as a stream, and measured: their
//! inflated size, the longest text between two tags (a cell), and the shared strings really
//! present against the count declared.

use std::io::{Read, Seek};

use super::{DatasetError, DatasetLimits};

const SHARED_STRINGS: &str = "xl/sharedstrings.xml";

/// Measures the workbook's XML parts; an error names the part, the limit and what was seen.
/// Answers, for a workbook of one worksheet, how many of its rows hold a value (the header
/// row included), which the same pass counts.
pub(crate) fn check<R: Read + Seek>(
    input: R,
    limits: &DatasetLimits,
) -> Result<Option<u64>, DatasetError> {
    let mut zip = zip::ZipArchive::new(input)
        .map_err(|e| spreadsheet("the file is not a readable XLSX (ZIP) archive", e))?;
    let mut total: u64 = 0;
    let mut worksheets: Vec<u64> = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| spreadsheet("a part of the workbook cannot be read", e))?;
        let part = entry
            .name()
            .map_err(|e| spreadsheet("a part of the workbook has an unreadable name", e))?
            .to_string();
        let name = part.to_ascii_lowercase();
        let shared = name == SHARED_STRINGS;
        let worksheet = name.starts_with("xl/worksheets/") && name.ends_with(".xml");
        if !shared && !worksheet {
            continue;
        }
        let mut scan = Scan::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| spreadsheet(&format!("{part} cannot be inflated"), e))?;
            if n == 0 {
                break;
            }
            scan.feed(&buf[..n], !shared)
                .map_err(|e| DatasetError::TooLarge(format!("{part}: {e}")))?;
            total += n as u64;
            if shared && scan.bytes > limits.xlsx_max_shared_strings_bytes {
                return Err(DatasetError::TooLarge(format!(
                    "{part} inflates to more than {} bytes (the limit for the shared strings \
                     of a workbook, --xlsx-max-shared-strings-bytes)",
                    limits.xlsx_max_shared_strings_bytes
                )));
            }
            if total > limits.xlsx_max_inflated_bytes {
                return Err(DatasetError::TooLarge(format!(
                    "the worksheets inflate to more than {} bytes (the limit for a workbook, \
                     --xlsx-max-inflated-bytes; reached in {part})",
                    limits.xlsx_max_inflated_bytes
                )));
            }
            if scan.longest_text > limits.max_cell_bytes {
                return Err(DatasetError::TooLarge(format!(
                    "{part} has a cell of more than {} bytes (the limit for one cell, \
                     --max-cell-bytes) at inflated byte {}",
                    limits.max_cell_bytes, scan.bytes
                )));
            }
        }
        if shared
            && let Some(declared) = scan.unique_count
            && declared > scan.string_items
        {
            return Err(DatasetError::TooLarge(format!(
                "{part} declares uniqueCount=\"{declared}\" but holds {} strings",
                scan.string_items
            )));
        }
        if worksheet {
            worksheets.push(scan.rows_with_values);
        }
    }
    Ok(match worksheets[..] {
        [rows] => Some(rows),
        _ => None,
    })
}

fn spreadsheet(what: &str, e: impl std::fmt::Display) -> DatasetError {
    DatasetError::Spreadsheet {
        kind: "XLSX",
        detail: format!("{what}: {e}"),
    }
}

/// Streaming measurements of one XML part.
#[derive(Default)]
struct Scan {
    bytes: u64,
    /// Bytes since the last `<`, and the most seen.
    text: u64,
    longest_text: u64,
    /// `<si>` elements (shared string items), counted across chunk boundaries.
    string_items: u64,
    /// The last bytes of the previous chunk, to match a tag cut by a boundary.
    tail: Vec<u8>,
    /// The start of the part, until `uniqueCount` is found or 4 KiB were seen.
    head: Vec<u8>,
    unique_count: Option<u64>,
    /// Inside `<…>`.
    in_tag: bool,
    /// The tag being read (worksheets only).
    tag: Vec<u8>,
    /// Whether a cell of the current row has a value, and the rows that had one.
    row_has_value: bool,
    rows_with_values: u64,
    /// Row elements seen, and the cells of the current one.
    rows_seen: u64,
    cells_in_row: u64,
}

/// Rows and columns of a worksheet (Excel's limits).
const MAX_ROWS: u64 = 1_048_576;
const MAX_COLUMNS: u64 = 16_384;

/// Checks a cell (`B7`) or row (`7`) reference against the limits of a worksheet: a reader
/// turns it into numbers, and a huge one must not overflow or size anything.
fn check_reference(r: &[u8]) -> Result<(), String> {
    let letters = r.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let (col, row) = r.split_at(letters);
    let shown = || String::from_utf8_lossy(r).into_owned();
    if row.is_empty() || row.len() > 7 || !row.iter().all(u8::is_ascii_digit) || letters > 3 {
        return Err(format!(
            "the cell reference \"{}\" is not one of a worksheet (at most column XFD, row {MAX_ROWS})",
            shown()
        ));
    }
    let col_n = col.iter().fold(0u64, |n, b| {
        n * 26 + u64::from(b.to_ascii_uppercase() - b'A' + 1)
    });
    let row_n = row.iter().fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    if col_n > MAX_COLUMNS || row_n > MAX_ROWS || row_n == 0 {
        return Err(format!(
            "the cell reference \"{}\" is beyond a worksheet's {MAX_COLUMNS} columns or {MAX_ROWS} rows",
            shown()
        ));
    }
    Ok(())
}

impl Scan {
    /// Measures a chunk; with `references` (worksheets), also checks the cell and row
    /// references; without (shared strings), counts the string items. Walks the chunk from one
    /// `<` or `>` to the next (memchr), not byte by byte: worksheets inflate to hundreds of MB.
    fn feed(&mut self, chunk: &[u8], references: bool) -> Result<(), String> {
        self.bytes += chunk.len() as u64;
        if self.unique_count.is_none() && self.head.len() < 4096 {
            self.head
                .extend_from_slice(&chunk[..chunk.len().min(4096 - self.head.len())]);
            self.unique_count = declared_unique_count(&self.head);
        }
        let mut pos = 0;
        for i in memchr::memchr2_iter(b'<', b'>', chunk) {
            self.segment(&chunk[pos..i], references)?;
            if chunk[i] == b'<' {
                self.in_tag = true;
                self.text = 0;
                self.tag.clear();
            } else if self.in_tag {
                self.in_tag = false;
                if references {
                    check_tag(&self.tag)?;
                    self.count_row()?;
                }
            } else {
                self.segment(b">", references)?; // a `>` in text is text
            }
            pos = i + 1;
        }
        self.segment(&chunk[pos..], references)?;
        if !references {
            // `<si>`, `<si ` or `<si/>`: the tail of the last chunk joined to this one's start.
            // (A 4-byte match in `joined` always spans the boundary: neither side holds 4.)
            let mut joined = std::mem::take(&mut self.tail);
            joined.extend_from_slice(&chunk[..chunk.len().min(3)]);
            self.string_items += count_items(&joined);
            self.string_items += count_items(chunk);
            self.tail = chunk[chunk.len().saturating_sub(3)..].to_vec();
        }
        Ok(())
    }

    /// Follows rows through the tag just closed: a row counts when a cell in it has a value
    /// (`<v>` or an inline string), as a reader then sees a row; a row may have at most
    /// [`MAX_COLUMNS`] cells.
    #[inline]
    fn count_row(&mut self) -> Result<(), String> {
        let tag = &self.tag[..];
        let named = |name: &[u8]| {
            tag.starts_with(name)
                && tag
                    .get(name.len())
                    .is_none_or(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'/'))
        };
        let empty = tag.last() == Some(&b'/');
        if named(b"c") {
            self.cells_in_row += 1;
            if self.cells_in_row > MAX_COLUMNS {
                return Err(format!(
                    "row {} has more than {MAX_COLUMNS} cells, the columns a worksheet may have",
                    self.rows_seen
                ));
            }
        } else if named(b"row") {
            self.rows_seen += 1;
            self.cells_in_row = 0;
            self.row_has_value = false;
        } else if (named(b"v") || named(b"is")) && !empty {
            self.row_has_value = true;
        } else if named(b"/row") && self.row_has_value {
            self.rows_with_values += 1;
            self.row_has_value = false;
        }
        Ok(())
    }

    /// Bytes between two of `<`, `>`: text, or part of a tag.
    #[inline]
    fn segment(&mut self, bytes: &[u8], references: bool) -> Result<(), String> {
        if self.in_tag {
            // The start of each tag is enough: a reference is an early attribute.
            if references && self.tag.len() < TAG_PREFIX_BYTES {
                let take = bytes.len().min(TAG_PREFIX_BYTES - self.tag.len());
                self.tag.extend_from_slice(&bytes[..take]);
            }
        } else {
            self.text += bytes.len() as u64;
            self.longest_text = self.longest_text.max(self.text);
        }
        Ok(())
    }
}

/// Bytes of a tag's start examined for its reference (`<c r="B7" s="1" t="s">`).
const TAG_PREFIX_BYTES: usize = 256;

/// Checks the `r` attribute of a cell's or a row's tag (`c …`, `row …`), if it has one.
#[inline]
fn check_tag(tag: &[u8]) -> Result<(), String> {
    if !(tag.starts_with(b"c ") || tag.starts_with(b"row ")) {
        return Ok(());
    }
    let mut i = 1;
    while i + 3 < tag.len() {
        if tag[i] == b'r'
            && tag[i + 1] == b'='
            && tag[i + 2] == b'"'
            && matches!(tag[i - 1], b' ' | b'\t' | b'\n' | b'\r')
        {
            let value = &tag[i + 3..];
            let end = memchr::memchr(b'"', value).unwrap_or(value.len());
            return check_reference(&value[..end.min(20)]);
        }
        i += 1;
    }
    Ok(())
}

fn count_items(bytes: &[u8]) -> u64 {
    bytes
        .windows(4)
        .filter(|w| &w[..3] == b"<si" && matches!(w[3], b'>' | b' ' | b'/' | b'\t' | b'\n' | b'\r'))
        .count() as u64
}

/// `uniqueCount="N"` in the start of the `sst` element.
fn declared_unique_count(head: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(head).ok().or_else(|| {
        // A multi-byte character cut at the end of the sample.
        std::str::from_utf8(&head[..head.len().saturating_sub(3)]).ok()
    })?;
    let at = text.find("uniqueCount=")? + "uniqueCount=".len();
    let rest = text[at..].get(1..)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    // Not yet whole (the sample ends inside the value): read on.
    if !rest[digits.len()..].starts_with(['"', '\'']) {
        return None;
    }
    // A number too large for u64 is as false as any other lie.
    Some(digits.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_counted_across_chunk_boundaries() {
        let xml = b"<sst uniqueCount=\"3\"><si><t>a</t></si><si><t>b</t></si><si/></sst>";
        for split in 1..xml.len() {
            let mut scan = Scan::default();
            scan.feed(&xml[..split], false).unwrap();
            scan.feed(&xml[split..], false).unwrap();
            assert_eq!(scan.string_items, 3, "split at {split}");
            assert_eq!(scan.unique_count, Some(3));
        }
        assert_eq!(
            declared_unique_count(b"<sst uniqueCount=\"1000000000000\">"),
            Some(1_000_000_000_000)
        );
        assert_eq!(declared_unique_count(b"<sst count='2'>"), None);
    }

    #[test]
    fn rows_with_values_are_counted() {
        let xml = br#"<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>h</t></is></c></row><row r="2"/><row r="3"><c r="A3" s="1"/></row><row r="4"><c r="A4"><v>7</v></c></row><row r="5"><c r="A5"><v/></c></row></sheetData>"#;
        for split in [1, 17, 40, 90, xml.len() - 3] {
            let mut scan = Scan::default();
            scan.feed(&xml[..split], true).unwrap();
            scan.feed(&xml[split..], true).unwrap();
            assert_eq!(scan.rows_with_values, 2, "split at {split}");
        }
    }

    #[test]
    fn references_are_checked_in_tags_only() {
        let sheet = |cell: &str| {
            format!(
                r#"<row r="1"><c r="{cell}" t="inlineStr"><is><t>say r="x" here</t></is></c></row>"#
            )
        };
        for good in ["A1", "XFD1048576", "b7"] {
            let mut scan = Scan::default();
            assert_eq!(scan.feed(sheet(good).as_bytes(), true), Ok(()), "{good}");
        }
        for bad in [
            "ZZZZZZZZZZ1",
            "XFE1",
            "A1048577",
            "A0",
            "A99999999999",
            "1A",
        ] {
            let mut scan = Scan::default();
            let err = scan.feed(sheet(bad).as_bytes(), true).unwrap_err();
            assert!(err.contains("cell reference"), "{bad}: {err}");
        }
    }
}
