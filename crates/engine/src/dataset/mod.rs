//! Dataset readers: format and encoding detection from the content, and column names.
//!
//! Supported: CSV (comma, semicolon, tab or pipe; UTF-8 with or without BOM, UTF-16 with BOM,
//! GBK/GB18030), XLSX and XLS (first worksheet), JSON (an array of objects) and JSON Lines.
//! The format is decided by the bytes, never by the file name: front ends upload JSON Lines as
//! `.txt`.

mod limits;
#[cfg(test)]
mod props;
mod rows;
mod sniff;
mod xls_guard;
pub(crate) mod xlsx_guard;

pub use limits::DatasetLimits;
pub(crate) use limits::{LineGuard, RecordGuard, RecordMark};

pub use rows::{Cell, OwnedRow, Row, RowError, RowResult, count_rows, for_each_row};
pub use sniff::{CsvDialect, Format, TextEncoding, binary_kind, sniff};

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use calamine::{Reader, Xls, Xlsx};
use indexmap::IndexSet;
use serde::de::IgnoredAny;

use br_cti_domain::io::ReadSeek;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("the file is empty")]
    Empty,
    /// A well-known binary format (an image, an executable, an archive) or binary data.
    #[error("not a dataset: {0}")]
    NotADataset(String),
    /// Over a limit of what a file may hold or declare; the text names the limit and the place.
    #[error("{0}")]
    TooLarge(String),
    #[error("the file has no columns: {0}")]
    NoColumns(String),
    #[error("CSV error at line {line}: {detail}")]
    Csv { line: u64, detail: String },
    #[error("JSON error at line {line}, column {column}: {detail}")]
    Json {
        line: u64,
        column: u64,
        detail: String,
    },
    #[error("{kind} error: {detail}")]
    Spreadsheet { kind: &'static str, detail: String },
    #[error("read error: {0}")]
    Io(#[from] io::Error),
}

/// The column names of a dataset, in order. For JSON and JSON Lines: the union of the
/// top-level keys of all objects, in first-seen order.
pub fn features(
    mut input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
) -> Result<Vec<String>, DatasetError> {
    let format = sniff(&mut input)?;
    input.seek(SeekFrom::Start(0))?;
    let columns = match format {
        Format::Csv(dialect) => csv_header(input, dialect, limits)?,
        Format::Xlsx => xlsx_header(input, limits)?,
        Format::Xls => xls_header(input, limits)?,
        Format::JsonArray => json_array_keys(input, limits)?,
        Format::JsonLines => json_lines_keys(input, limits)?,
    };
    if columns.is_empty() {
        return Err(DatasetError::NoColumns(format!(
            "no column names were found in this {} file",
            format.name()
        )));
    }
    Ok(columns)
}

/// Blank header cells get a positional name (`column_3` for the third column) so that the
/// `;`-joined list stays unambiguous.
fn name_column(raw: &str, index: usize) -> String {
    let name = raw.trim();
    if name.is_empty() {
        format!("column_{}", index + 1)
    } else {
        name.to_string()
    }
}

/// The read-ahead of the text readers (CSV, JSON Lines, JSON arrays).
const TEXT_BUFFER: usize = 256 * 1024;

/// A CSV reader over the decoded text of `input` (UTF-8 after decoding, BOM removed). UTF-8
/// files are read as they are, not decoded: a byte sequence that is not UTF-8 is then an error
/// of its record (with its position), never silently replaced. Lines and records are bounded
/// by the record limit; the caller moves the returned mark after each record
/// ([`csv_record_read`]).
pub(crate) fn csv_reader(
    input: Box<dyn ReadSeek>,
    dialect: CsvDialect,
    limits: &DatasetLimits,
) -> (csv::Reader<Box<dyn Read + Send>>, RecordMark) {
    let input = LineGuard::new(input, limits.max_record_bytes);
    let decoded: Box<dyn Read + Send> = match dialect.encoding {
        TextEncoding::Utf8 => Box::new(SkipBom::new(input)),
        other => Box::new(StrictDecoder::new(input, other.encoding())),
    };
    let (guarded, mark) = RecordGuard::new(
        decoded,
        limits.max_record_bytes,
        TEXT_BUFFER as u64,
        "the CSV record",
    );
    let reader = csv::ReaderBuilder::new()
        .delimiter(dialect.delimiter)
        .flexible(true)
        .has_headers(true)
        .buffer_capacity(TEXT_BUFFER)
        .from_reader(Box::new(guarded) as Box<dyn Read + Send>);
    (reader, mark)
}

/// A record was read: the next one starts where the reader is.
pub(crate) fn csv_record_read<R: Read>(reader: &csv::Reader<R>, mark: &RecordMark) {
    mark.starts_at(reader.position().byte());
}

/// Refuses more columns than the limit.
pub(crate) fn check_columns(
    columns: usize,
    limits: &DatasetLimits,
    what: &str,
) -> Result<(), DatasetError> {
    if columns as u64 > limits.max_columns {
        return Err(DatasetError::TooLarge(format!(
            "{what} has {columns} columns, more than {} (the limit of columns, --max-columns)",
            limits.max_columns
        )));
    }
    Ok(())
}

fn csv_error(e: csv::Error) -> DatasetError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    let detail = match e.kind() {
        csv::ErrorKind::Utf8 { err, pos } => format!(
            "field {} of the record at byte {} is not valid text in the file's encoding (after \
             its first {} bytes)",
            err.field() + 1,
            pos.as_ref().map(|p| p.byte()).unwrap_or(0),
            err.valid_up_to()
        ),
        _ => e.to_string(),
    };
    DatasetError::Csv { line, detail }
}

fn csv_header(
    input: Box<dyn ReadSeek>,
    dialect: CsvDialect,
    limits: &DatasetLimits,
) -> Result<Vec<String>, DatasetError> {
    let (mut reader, _) = csv_reader(input, dialect, limits);
    let header = reader.headers().map_err(csv_error)?;
    check_columns(header.len(), limits, "the header row")?;
    if header.iter().all(|h| h.trim().is_empty()) {
        return Ok(Vec::new());
    }
    Ok(header
        .iter()
        .enumerate()
        .map(|(i, h)| name_column(h, i))
        .collect())
}

fn spreadsheet_error(kind: &'static str, e: impl std::fmt::Display) -> DatasetError {
    DatasetError::Spreadsheet {
        kind,
        detail: e.to_string(),
    }
}

/// Runs `f` over the cells of the first worksheet of an XLSX workbook, streamed.
pub(crate) fn with_first_xlsx_sheet<T>(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
    f: impl FnOnce(
        &mut calamine::XlsxCellReader<'_, BufReader<Box<dyn ReadSeek>>>,
    ) -> Result<T, DatasetError>,
) -> Result<T, DatasetError> {
    let mut input = input;
    xlsx_guard::check(&mut input, limits)?;
    input.seek(SeekFrom::Start(0))?;
    // As for XLS: a panic of the third-party reader is this file's error.
    crate::supervise::catch(|| {
        let mut book: Xlsx<_> = Xlsx::new(BufReader::with_capacity(256 * 1024, input))
            .map_err(|e| spreadsheet_error("XLSX", e))?;
        let Some(sheet) = book.sheet_names().first().cloned() else {
            return Err(DatasetError::NoColumns(
                "the workbook has no worksheet".into(),
            ));
        };
        let mut cells = book
            .worksheet_cells_reader(&sheet)
            .map_err(|e| spreadsheet_error("XLSX", e))?;
        f(&mut cells)
    })
    .unwrap_or_else(|panic| Err(reader_failed("XLSX", &panic.0)))
}

/// A third-party reader that panicked on this file.
fn reader_failed(kind: &'static str, panic: &str) -> DatasetError {
    tracing::warn!("the {kind} reader panicked on a file: {panic}");
    DatasetError::Spreadsheet {
        kind,
        detail: format!("the file is malformed: the {kind} reader failed on it ({panic})"),
    }
}

fn xlsx_header(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
) -> Result<Vec<String>, DatasetError> {
    with_first_xlsx_sheet(input, limits, |cells| {
        let mut header: Vec<(u32, String)> = Vec::new();
        let mut header_row = None;
        while let Some(cell) = cells
            .next_cell()
            .map_err(|e| spreadsheet_error("XLSX", e))?
        {
            let (row, col) = cell.get_position();
            let value = calamine::Data::from(cell.get_value().clone());
            if value == calamine::Data::Empty {
                continue;
            }
            match header_row {
                None => header_row = Some(row),
                Some(r) if r != row => break,
                Some(_) => {}
            }
            if header.len() >= MAX_SHEET_COLUMNS as usize {
                return Err(DatasetError::TooLarge(format!(
                    "the header row has more than {MAX_SHEET_COLUMNS} cells, the columns a \
                     worksheet may have"
                )));
            }
            header.push((col, value.to_string()));
        }
        spread_header(header)
    })
}

/// The first worksheet of an XLS workbook (the format is read whole, after the guard has
/// measured what it declares and holds).
pub(crate) fn first_xls_range(
    mut input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
) -> Result<calamine::Range<calamine::Data>, DatasetError> {
    xls_guard::check(&mut input, limits)?;
    input.seek(SeekFrom::Start(0))?;
    // A malformed workbook the guard lets through may still make calamine panic (an
    // unchecked subtraction, an index): that is this file's error, not the node's.
    crate::supervise::catch(|| {
        let mut book: Xls<_> =
            Xls::new(BufReader::new(input)).map_err(|e| spreadsheet_error("XLS", e))?;
        book.worksheet_range_at(0)
            .ok_or_else(|| DatasetError::NoColumns("the workbook has no worksheet".into()))?
            .map_err(|e| spreadsheet_error("XLS", e))
    })
    .unwrap_or_else(|panic| Err(reader_failed("XLS", &panic.0)))
}

fn xls_header(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
) -> Result<Vec<String>, DatasetError> {
    let range = first_xls_range(input, limits)?;
    let start_col = range.start().map(|(_, c)| c).unwrap_or(0);
    let header = range
        .rows()
        .find(|row| row.iter().any(|c| *c != calamine::Data::Empty))
        .map(|row| {
            row.iter()
                .enumerate()
                .filter(|(_, c)| **c != calamine::Data::Empty)
                .map(|(i, c)| (start_col + i as u32, c.to_string()))
                .collect()
        })
        .unwrap_or_default();
    spread_header(header)
}

/// Header cells by column position to names, blank positions in between named by position.
/// Columns of a worksheet, at most (Excel's own limit).
pub(crate) const MAX_SHEET_COLUMNS: u32 = 16_384;

fn spread_header(cells: Vec<(u32, String)>) -> Result<Vec<String>, DatasetError> {
    let Some(last) = cells.iter().map(|(c, _)| *c).max() else {
        return Ok(Vec::new());
    };
    let first = cells.iter().map(|(c, _)| *c).min().unwrap_or(0);
    // A cell's position is what the file declares: it must not size an allocation.
    let span = u64::from(last - first) + 1;
    if span > u64::from(MAX_SHEET_COLUMNS) {
        return Err(DatasetError::TooLarge(format!(
            "the header row spans {span} columns (from column {} to column {}); a worksheet \
             has at most {MAX_SHEET_COLUMNS}",
            u64::from(first) + 1,
            u64::from(last) + 1
        )));
    }
    let mut names = vec![String::new(); span as usize];
    for (col, name) in cells {
        names[(col - first) as usize] = name;
    }
    Ok(names
        .iter()
        .enumerate()
        .map(|(i, n)| name_column(n, i))
        .collect())
}

fn json_error(e: serde_json::Error, line_offset: u64) -> DatasetError {
    DatasetError::Json {
        line: e.line() as u64 + line_offset,
        column: e.column() as u64,
        detail: strip_position(&e.to_string()),
    }
}

/// serde_json appends " at line L column C" to its messages; we report the position ourselves.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

type KeySet = IndexSet<String>;

/// Keys of one JSON object, without building its values; at most the column limit of
/// distinct keys over all objects.
struct ObjectKeys<'a> {
    keys: &'a mut KeySet,
    max: u64,
}

impl<'de> serde::de::DeserializeSeed<'de> for ObjectKeys<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ObjectKeys<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object (one dataset row)")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !self.keys.contains(key.as_ref()) {
                if self.keys.len() as u64 >= self.max {
                    return Err(serde::de::Error::custom(format_args!(
                        "the objects have more than {} distinct keys (the limit of columns, \
                         --max-columns)",
                        self.max
                    )));
                }
                self.keys.insert(key.into_owned());
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Visits the elements of the top-level array one at a time (constant memory).
struct ArrayKeys<'a> {
    keys: &'a mut KeySet,
    max: u64,
    mark: RecordMark,
}

impl<'de> serde::de::Visitor<'de> for ArrayKeys<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of objects")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let max = self.max;
        while seq
            .next_element_seed(ObjectKeys {
                keys: &mut *self.keys,
                max,
            })?
            .is_some()
        {
            self.mark.starts_here();
        }
        Ok(())
    }
}

/// A reader of a top-level JSON array whose elements are bounded by the record limit; the
/// caller moves the mark after each element.
pub(crate) fn json_array_reader(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
) -> (impl Read, RecordMark) {
    let (guarded, mark) = RecordGuard::new(
        SkipBom::new(input),
        limits.max_record_bytes,
        TEXT_BUFFER as u64,
        "the element of the JSON array",
    );
    (BufReader::with_capacity(TEXT_BUFFER, guarded), mark)
}

fn json_array_keys(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
) -> Result<Vec<String>, DatasetError> {
    let mut keys = KeySet::new();
    let (reader, mark) = json_array_reader(input, limits);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let visitor = ArrayKeys {
        keys: &mut keys,
        max: limits.max_columns,
        mark,
    };
    serde::Deserializer::deserialize_seq(&mut de, visitor).map_err(|e| json_error(e, 0))?;
    de.end().map_err(|e| json_error(e, 0))?;
    Ok(keys.into_iter().collect())
}

fn json_lines_keys(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
) -> Result<Vec<String>, DatasetError> {
    let mut keys = KeySet::new();
    for_each_json_line(input, limits, |_, line| {
        let mut de = serde_json::Deserializer::from_slice(line);
        let seed = ObjectKeys {
            keys: &mut keys,
            max: limits.max_columns,
        };
        serde::de::DeserializeSeed::deserialize(seed, &mut de)?;
        de.end()
    })?;
    Ok(keys.into_iter().collect())
}

/// Calls `f(line_number, bytes)` for every non-blank line (1-based numbers, BOM removed).
/// Errors from `f` are reported at that line.
pub(crate) fn for_each_json_line(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), serde_json::Error>,
) -> Result<(), DatasetError> {
    let mut reader = BufReader::with_capacity(
        TEXT_BUFFER,
        SkipBom::new(LineGuard::new(input, limits.max_record_bytes)),
    );
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        line_no += 1;
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        f(line_no, line).map_err(|e| json_error(e, line_no - 1))?;
    }
}

/// Decodes a text in another encoding to UTF-8 without replacing what cannot be decoded: a
/// malformed sequence becomes the byte 0xFF, which is never UTF-8, so that the CSV reader
/// rejects the record that holds it (with its position), as it does for a UTF-8 file with a
/// bad byte; nothing is silently turned into U+FFFD.
pub(crate) struct StrictDecoder<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    input: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    done: bool,
    /// A marker for a malformed sequence that did not fit in the last read.
    marker_pending: bool,
}

impl<R: Read> StrictDecoder<R> {
    pub(crate) fn new(inner: R, encoding: &'static encoding_rs::Encoding) -> Self {
        StrictDecoder {
            inner,
            decoder: encoding.new_decoder_with_bom_removal(),
            input: vec![0u8; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            done: false,
            marker_pending: false,
        }
    }
}

/// Stands for a malformed sequence in the decoded text (never valid UTF-8).
const MALFORMED: u8 = 0xFF;

impl<R: Read> Read for StrictDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.marker_pending {
            self.marker_pending = false;
            buf[0] = MALFORMED;
            return Ok(1);
        }
        loop {
            if self.done {
                return Ok(0);
            }
            if self.start == self.end && !self.eof {
                let n = self.inner.read(&mut self.input)?;
                self.start = 0;
                self.end = n;
                self.eof = n == 0;
            }
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(
                &self.input[self.start..self.end],
                buf,
                self.eof,
            );
            self.start += read;
            match result {
                encoding_rs::DecoderResult::Malformed(_, _) => {
                    if written < buf.len() {
                        buf[written] = MALFORMED;
                        return Ok(written + 1);
                    }
                    self.marker_pending = true;
                    return Ok(written);
                }
                encoding_rs::DecoderResult::OutputFull if written == 0 => {
                    return Err(io::Error::other("read buffer too small to decode into"));
                }
                encoding_rs::DecoderResult::OutputFull => return Ok(written),
                encoding_rs::DecoderResult::InputEmpty => {
                    if self.eof {
                        self.done = true;
                    }
                    if written > 0 || self.done {
                        return Ok(written);
                    }
                }
            }
        }
    }
}

/// Drops a leading UTF-8 byte-order mark.
pub(crate) struct SkipBom<R> {
    inner: R,
    checked: bool,
}

impl<R: Read> SkipBom<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            checked: false,
        }
    }
}

impl<R: Read> Read for SkipBom<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.checked {
            self.checked = true;
            let mut head = [0u8; 3];
            let mut got = 0;
            while got < 3 {
                let n = self.inner.read(&mut head[got..])?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            if got == 3 && head == [0xEF, 0xBB, 0xBF] {
                return self.read(buf);
            }
            let n = got.min(buf.len());
            buf[..n].copy_from_slice(&head[..n]);
            if n < got {
                // A caller buffer shorter than 3 bytes: not used by our readers.
                return Err(io::Error::other("read buffer too small"));
            }
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn feats(bytes: &[u8]) -> Result<Vec<String>, DatasetError> {
        features(
            Box::new(Cursor::new(bytes.to_vec())),
            &DatasetLimits::default(),
        )
    }

    #[test]
    fn lines_longer_than_the_limit_are_refused() {
        let mut long = b"a,b\n1,2\n".to_vec();
        long.extend(std::iter::repeat_n(
            b'x',
            (DatasetLimits::default().max_record_bytes + 10) as usize,
        ));
        long.extend_from_slice(b",3\n");
        let mut rows = 0;
        let err = crate::dataset::for_each_row(
            Box::new(Cursor::new(long.clone())),
            &DatasetLimits::default(),
            &mut |_, _| {
                rows += 1;
                std::ops::ControlFlow::Continue(())
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 3 (from byte 8) is longer than 16777216 bytes"),
            "{err}"
        );
        let mut jsonl = b"{\"a\":1}\n{\"a\":\"".to_vec();
        jsonl.extend(std::iter::repeat_n(
            b'x',
            (DatasetLimits::default().max_record_bytes + 10) as usize,
        ));
        jsonl.extend_from_slice(b"\"}\n");
        let err = count_rows(Box::new(Cursor::new(jsonl)), &DatasetLimits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2 (from byte 8) is longer than"), "{err}");
    }

    /// Reads every row with these limits; the error of the read, if any.
    fn read_all(bytes: &[u8], limits: &DatasetLimits) -> Result<u64, String> {
        let mut rows = 0;
        crate::dataset::for_each_row(
            Box::new(Cursor::new(bytes.to_vec())),
            limits,
            &mut |_, _| {
                rows += 1;
                std::ops::ControlFlow::Continue(())
            },
        )
        .map(|_| rows)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn records_and_columns_are_bounded_whatever_their_lines() {
        let small = DatasetLimits {
            max_record_bytes: 1024,
            max_columns: 8,
            ..DatasetLimits::default()
        };
        // A quoted CSV field over many short lines: each line is short, the record is not.
        let mut csv = b"a,b\n1,\"".to_vec();
        for _ in 0..40_000 {
            csv.extend_from_slice(b"short line\n");
        }
        csv.extend_from_slice(b"\"\n2,3\n");
        let err = read_all(&csv, &small).unwrap_err();
        assert!(
            err.contains("the CSV record from byte 4 is longer than 1024 bytes"),
            "{err}"
        );
        assert_eq!(read_all(&csv, &DatasetLimits::default()), Ok(2));
        let err = count_rows(Box::new(Cursor::new(csv)), &small)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--max-record-bytes"), "{err}");
        // One element of a JSON array, pretty-printed over many lines.
        let mut json = b"[{\"a\":1},\n{\"a\":[".to_vec();
        for i in 0..200_000 {
            json.extend_from_slice(format!("{i},\n").as_bytes());
        }
        json.extend_from_slice(b"0]}]");
        let err = read_all(&json, &small).unwrap_err();
        assert!(
            err.contains("the element of the JSON array from byte"),
            "{err}"
        );
        assert!(features(Box::new(Cursor::new(json.clone())), &small).is_err());
        assert_eq!(read_all(&json, &DatasetLimits::default()), Ok(2));
        // Columns: a CSV header, the keys of JSON objects.
        let wide: Vec<String> = (0..9).map(|i| format!("c{i}")).collect();
        let header = format!("{}\n", wide.join(","));
        let err = features(Box::new(Cursor::new(header.clone().into_bytes())), &small)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the header row has 9 columns, more than 8"),
            "{err}"
        );
        assert!(read_all(header.as_bytes(), &small).is_err());
        let lines: String = (0..9).map(|i| format!("{{\"k{i}\":1}}\n")).collect();
        let err = features(Box::new(Cursor::new(lines.into_bytes())), &small)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 8 distinct keys"), "{err}");
    }

    #[test]
    fn csv_variants() {
        assert_eq!(feats(b"a,b,c\n1,2,3\n").unwrap(), ["a", "b", "c"]);
        assert_eq!(feats(b"\xEF\xBB\xBFa;b\n1;2\n").unwrap(), ["a", "b"]);
        assert_eq!(feats(b"a\tb c\n1\t2\n").unwrap(), ["a", "b c"]);
        assert_eq!(feats(b"a|b\n1|2\n").unwrap(), ["a", "b"]);
        assert_eq!(feats(b"x,,z\n").unwrap(), ["x", "column_2", "z"]);
        let (gbk, _, _) = encoding_rs::GBK.encode("源IP,目的IP,协议\n1.1.1.1,2.2.2.2,TCP\n");
        assert_eq!(feats(&gbk).unwrap(), ["源IP", "目的IP", "协议"]);
    }

    #[test]
    fn json_variants() {
        assert_eq!(
            feats(b"[{\"a\":1,\"b\":[1,2]},{\"c\":{\"x\":1},\"a\":2}]").unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(
            feats(b"{\"time\":1,\"src\":\"x\"}\n\n{\"dst\":\"y\",\"time\":2}\n").unwrap(),
            ["time", "src", "dst"]
        );
        let err = feats(b"{\"a\":1}\n{\"b\":\n").unwrap_err();
        assert!(matches!(err, DatasetError::Json { line: 2, .. }), "{err}");
        let err = feats(b"[{\"a\":1}, 5]").unwrap_err();
        assert!(err.to_string().contains("a JSON object"), "{err}");
    }

    #[test]
    fn empty_inputs() {
        assert!(matches!(feats(b"").unwrap_err(), DatasetError::Empty));
        assert!(matches!(
            feats(b" \n\r\n").unwrap_err(),
            DatasetError::Empty
        ));
        assert!(matches!(
            feats(b"[]").unwrap_err(),
            DatasetError::NoColumns(_)
        ));
        assert!(matches!(
            feats(b",,\n").unwrap_err(),
            DatasetError::NoColumns(_)
        ));
    }

    #[test]
    fn broken_spreadsheet() {
        let err = feats(b"PK\x03\x04garbage").unwrap_err();
        assert!(
            matches!(err, DatasetError::Spreadsheet { kind: "XLSX", .. }),
            "{err}"
        );
    }
}
