//! Streaming rows of a dataset, one at a time and in constant memory (CSV, JSON Lines, JSON
//! arrays; XLSX cell by cell; XLS as a whole sheet, as the format requires).

use br_cti_domain::json::json_kind;
use std::io::SeekFrom;
use std::ops::ControlFlow;
use std::sync::Arc;

use calamine::Data;
use serde_json::{Map, Value};

use super::{
    DatasetError, DatasetLimits, Format, RecordMark, check_columns, csv_error, csv_reader,
    csv_record_read, for_each_json_line, json_array_reader, sniff, spreadsheet_error,
};
use br_cti_domain::io::ReadSeek;

/// One cell of a row: text as read (CSV), or a JSON value (JSON, spreadsheets).
#[derive(Clone, Copy, Debug)]
pub enum Cell<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl Cell<'_> {
    /// True for an empty string, a blank text cell or JSON null.
    pub(crate) fn is_blank(&self) -> bool {
        match self {
            Cell::Text(s) => s.trim().is_empty(),
            Cell::Json(Value::Null) => true,
            Cell::Json(Value::String(s)) => s.trim().is_empty(),
            Cell::Json(_) => false,
        }
    }
}

/// A row: its cells with their column names, in column order.
pub trait Row {
    fn for_each_cell(&self, f: &mut dyn FnMut(&str, Cell<'_>));
}

/// A row that owns its cells, so that it can be handed to another thread.
#[derive(Debug, Clone)]
pub enum OwnedRow {
    /// CSV: the record and the shared header.
    Text {
        header: Arc<[String]>,
        record: csv::StringRecord,
    },
    /// JSON: the row object.
    Object(Map<String, Value>),
    /// JSON Lines: the line as read, parsed where it is converted (see [`OwnedRow::with_row`]),
    /// so that parsing runs on the converting threads.
    JsonLine { line: u64, bytes: Vec<u8> },
    /// Spreadsheets: the row's non-empty cells as (header index, value), in header order.
    /// Sparse, so that a wide header does not make every row as wide.
    Sheet {
        header: Arc<[String]>,
        cells: Vec<(u32, Value)>,
    },
}

impl Row for OwnedRow {
    fn for_each_cell(&self, f: &mut dyn FnMut(&str, Cell<'_>)) {
        match self {
            OwnedRow::Text { header, record } => {
                for (name, value) in header.iter().zip(record.iter()) {
                    f(name, Cell::Text(value));
                }
            }
            OwnedRow::Object(map) => {
                for (name, value) in map {
                    f(name, Cell::Json(value));
                }
            }
            OwnedRow::Sheet { header, cells } => {
                for (i, value) in cells {
                    if let Some(name) = header.get(*i as usize) {
                        f(name, Cell::Json(value));
                    }
                }
            }
            // Unparsed: its cells are only reachable through `with_row`, which reports errors.
            OwnedRow::JsonLine { .. } => {
                let _ = self.with_row(|row| row.for_each_cell(f));
            }
        }
    }
}

impl OwnedRow {
    /// Calls `f` with the row's cells; a JSON Lines row that is not a JSON object is an error
    /// (`line N: reason`).
    pub fn with_row<T>(&self, f: impl FnOnce(&dyn Row) -> T) -> Result<T, RowError> {
        match self {
            OwnedRow::JsonLine { line, bytes } => {
                let pairs: Pairs<'_> = serde_json::from_slice(bytes).map_err(|e| {
                    RowError(format!(
                        "line {line}: {}",
                        super::strip_position(&e.to_string())
                    ))
                })?;
                Ok(f(&pairs))
            }
            other => Ok(f(other)),
        }
    }
}

/// A row that cannot be read (a JSON Lines line that is not an object): `line N: reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RowError(pub String);

/// A JSON object's members in order, keys borrowed from the input where they have no escapes
/// (cheaper than a map: no hashing, fewer allocations).
struct Pairs<'a>(Vec<(std::borrow::Cow<'a, str>, Value)>);

impl Row for Pairs<'_> {
    fn for_each_cell(&self, f: &mut dyn FnMut(&str, Cell<'_>)) {
        for (name, value) in &self.0 {
            f(name, Cell::Json(value));
        }
    }
}

struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object (one dataset row)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs<'de>, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Key(k)) = map.next_key()? {
                    pairs.push((k, map.next_value::<Value>()?));
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(V)
    }
}

/// What the row callback receives: a row, or why the row at that position cannot be read.
pub type RowResult = Result<OwnedRow, String>;

/// Reads every data row of `input` in order, calling `f(index, row)` with 0-based data row
/// indexes. Unreadable rows (a malformed JSON line, a CSV row with the wrong number of fields)
/// are passed as `Err(reason)` and reading goes on; only errors that make the rest of the file
/// unreadable end it. `f` returns `ControlFlow::Break` to stop early.
pub fn for_each_row(
    mut input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
    f: &mut dyn FnMut(u64, RowResult) -> ControlFlow<()>,
) -> Result<Format, DatasetError> {
    let format = sniff(&mut input)?;
    input.seek(SeekFrom::Start(0))?;
    match format {
        Format::Csv(dialect) => {
            let (reader, mark) = csv_reader(input, dialect, limits);
            csv_rows(reader, mark, limits, f)?
        }
        Format::JsonLines => json_lines_rows(input, limits, f)?,
        Format::JsonArray => json_array_rows(input, limits, f)?,
        Format::Xlsx => xlsx_rows(input, limits, f)?,
        Format::Xls => xls_rows(input, limits, f)?,
    }
    Ok(format)
}

fn csv_rows(
    mut reader: csv::Reader<Box<dyn std::io::Read + Send>>,
    mark: RecordMark,
    limits: &DatasetLimits,
    f: &mut dyn FnMut(u64, RowResult) -> ControlFlow<()>,
) -> Result<(), DatasetError> {
    let header = reader.headers().map_err(csv_error)?;
    check_columns(header.len(), limits, "the header row")?;
    let header: Arc<[String]> = header
        .iter()
        .enumerate()
        .map(|(i, h)| super::name_column(h, i))
        .collect();
    csv_record_read(&reader, &mark);
    let mut record = csv::StringRecord::new();
    let mut index = 0u64;
    loop {
        let read = reader.read_record(&mut record);
        csv_record_read(&reader, &mark);
        let outcome = match read {
            Ok(false) => return Ok(()),
            Ok(true) if record.len() == 1 && record[0].trim().is_empty() && header.len() > 1 => {
                continue;
            }
            Ok(true) if record.len() != header.len() => {
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                f(
                    index,
                    Err(format!(
                        "line {line}: {} fields where the header has {}",
                        record.len(),
                        header.len()
                    )),
                )
            }
            Ok(true) => f(
                index,
                Ok(OwnedRow::Text {
                    header: header.clone(),
                    record: record.clone(),
                }),
            ),
            Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                f(index, Err(csv_error(e).to_string()))
            }
            Err(e) => return Err(csv_error(e)),
        };
        index += 1;
        if outcome.is_break() {
            return Ok(());
        }
    }
}

fn json_lines_rows(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
    f: &mut dyn FnMut(u64, RowResult) -> ControlFlow<()>,
) -> Result<(), DatasetError> {
    let mut index = 0u64;
    let mut stop = false;
    for_each_json_line(input, limits, |line_no, bytes| {
        if stop {
            return Ok(());
        }
        let row = OwnedRow::JsonLine {
            line: line_no,
            bytes: bytes.to_vec(),
        };
        let outcome = f(index, Ok(row));
        index += 1;
        stop = outcome.is_break();
        Ok(())
    })
}

/// Streams the elements of a top-level JSON array; an element that is not an object is a row
/// error, malformed JSON ends the file.
fn json_array_rows(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
    f: &mut dyn FnMut(u64, RowResult) -> ControlFlow<()>,
) -> Result<(), DatasetError> {
    struct Rows<'f> {
        f: &'f mut dyn FnMut(u64, RowResult) -> ControlFlow<()>,
        mark: RecordMark,
    }
    impl<'de> serde::de::Visitor<'de> for Rows<'_> {
        type Value = ();
        fn expecting(&self, fmt: &mut std::fmt::Formatter) -> std::fmt::Result {
            fmt.write_str("a JSON array of objects")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0u64;
            while let Some(value) = seq.next_element::<Value>()? {
                self.mark.starts_here();
                let outcome = match value {
                    Value::Object(map) => (self.f)(index, Ok(OwnedRow::Object(map))),
                    other => (self.f)(
                        index,
                        Err(format!(
                            "element {} is not an object but {}",
                            index + 1,
                            json_kind(&other)
                        )),
                    ),
                };
                index += 1;
                if outcome.is_break() {
                    // Stop reading: the remaining elements are not needed.
                    return Err(serde::de::Error::custom(STOPPED));
                }
            }
            Ok(())
        }
    }
    const STOPPED: &str = "br-cti: stopped by the caller";
    let (reader, mark) = json_array_reader(input, limits);
    let mut de = serde_json::Deserializer::from_reader(reader);
    match serde::Deserializer::deserialize_seq(&mut de, Rows { f, mark }) {
        Ok(()) => de.end().map_err(|e| super::json_error(e, 0)),
        Err(e) if e.to_string().starts_with(STOPPED) => Ok(()),
        Err(e) => Err(super::json_error(e, 0)),
    }
}

/// A spreadsheet cell as JSON: integral floats become integers (spreadsheets do not tell
/// `3` from `3.0`), dates their ISO text.
fn sheet_value(d: &Data) -> Value {
    match d {
        Data::Empty => Value::Null,
        Data::Int(i) => Value::from(*i),
        Data::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Value::from(*x as i64),
        Data::Float(x) => serde_json::Number::from_f64(*x)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Data::Bool(b) => Value::Bool(*b),
        Data::String(s) => Value::String(s.clone()),
        // Serial days since 1899-12-30 (the 1900 date system).
        Data::DateTime(dt) if dt.is_datetime() => {
            match stix::Timestamp::from_unix_seconds_f64((dt.as_f64() - 25569.0) * 86400.0) {
                Some(t) => Value::String(t.to_string()),
                None => Value::from(dt.as_f64()),
            }
        }
        Data::DateTime(dt) => Value::from(dt.as_f64()),
        Data::DateTimeIso(s) | Data::DurationIso(s) => Value::String(s.clone()),
        Data::Error(e) => Value::String(format!("#{e:?}")),
    }
}

/// Header from the first non-empty row, data rows after it. Positions are absolute columns.
/// Nothing is sized by a position: rows keep only the cells they have (at most
/// [`super::MAX_SHEET_COLUMNS`]), and the header's span is bounded.
struct SheetAssembler {
    header: Option<Arc<[String]>>,
    first_col: u32,
    current_row: Option<u32>,
    cells: Vec<(u32, Value)>,
    /// The first column (1-based) of the current row that lies outside the header, or past
    /// the cells a row may have.
    outside: Option<u64>,
    index: u64,
    /// A header that cannot be used: the file is refused.
    fatal: Option<DatasetError>,
}

impl SheetAssembler {
    fn new() -> Self {
        Self {
            header: None,
            first_col: 0,
            current_row: None,
            cells: Vec::new(),
            outside: None,
            index: 0,
            fatal: None,
        }
    }

    fn push(
        &mut self,
        row: u32,
        col: u32,
        value: Value,
        f: &mut dyn FnMut(u64, RowResult) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if self.current_row.is_some_and(|r| r != row) {
            self.flush(f)?;
        }
        self.current_row = Some(row);
        if !value.is_null() {
            if self.cells.len() < super::MAX_SHEET_COLUMNS as usize {
                self.cells.push((col, value));
            } else {
                self.outside.get_or_insert(u64::from(col) + 1);
            }
        }
        ControlFlow::Continue(())
    }

    fn flush(&mut self, f: &mut dyn FnMut(u64, RowResult) -> ControlFlow<()>) -> ControlFlow<()> {
        let mut cells = std::mem::take(&mut self.cells);
        let mut outside = self.outside.take();
        if cells.is_empty() && outside.is_none() {
            return ControlFlow::Continue(());
        }
        let Some(header) = &self.header else {
            if let Some(col) = outside {
                self.fatal = Some(DatasetError::TooLarge(format!(
                    "the header row has a value in column {col}, past the {} columns a \
                     worksheet may have",
                    super::MAX_SHEET_COLUMNS
                )));
                return ControlFlow::Break(());
            }
            let names: Vec<(u32, String)> = cells
                .into_iter()
                .map(|(c, v)| {
                    (
                        c,
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect();
            self.first_col = names.iter().map(|(c, _)| *c).min().unwrap_or(0);
            match super::spread_header(names) {
                Ok(h) => self.header = Some(h.into()),
                Err(e) => {
                    self.fatal = Some(e);
                    return ControlFlow::Break(());
                }
            }
            return ControlFlow::Continue(());
        };
        // Header positions, in header order; a later cell for the same column wins.
        for cell in cells.iter_mut() {
            match cell.0.checked_sub(self.first_col) {
                Some(i) if (i as usize) < header.len() => cell.0 = i,
                _ => {
                    outside.get_or_insert(u64::from(cell.0) + 1);
                }
            }
        }
        let index = self.index;
        self.index += 1;
        if let Some(col) = outside {
            return f(
                index,
                Err(format!(
                    "a value in column {col}, outside the header's columns"
                )),
            );
        }
        cells.sort_by_key(|(i, _)| *i);
        let mut sparse: Vec<(u32, Value)> = Vec::with_capacity(cells.len());
        for (i, v) in cells {
            match sparse.last_mut() {
                Some(last) if last.0 == i => last.1 = v,
                _ => sparse.push((i, v)),
            }
        }
        f(
            index,
            Ok(OwnedRow::Sheet {
                header: header.clone(),
                cells: sparse,
            }),
        )
    }
}

fn xlsx_rows(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
    f: &mut dyn FnMut(u64, RowResult) -> ControlFlow<()>,
) -> Result<(), DatasetError> {
    super::with_first_xlsx_sheet(input, limits, |cells| {
        let mut rows = SheetAssembler::new();
        while let Some(cell) = cells
            .next_cell()
            .map_err(|e| spreadsheet_error("XLSX", e))?
        {
            let (row, col) = cell.get_position();
            let value = sheet_value(&Data::from(cell.get_value().clone()));
            if rows.push(row, col, value, f).is_break() {
                return rows.fatal.map_or(Ok(()), Err);
            }
        }
        let _ = rows.flush(f);
        rows.fatal.map_or(Ok(()), Err)
    })
}

fn xls_rows(
    input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
    f: &mut dyn FnMut(u64, RowResult) -> ControlFlow<()>,
) -> Result<(), DatasetError> {
    let range = super::first_xls_range(input, limits)?;
    let (start_row, start_col) = range.start().unwrap_or((0, 0));
    let mut rows = SheetAssembler::new();
    for (r, row) in range.rows().enumerate() {
        for (c, d) in row.iter().enumerate() {
            if rows
                .push(
                    start_row + r as u32,
                    start_col + c as u32,
                    sheet_value(d),
                    f,
                )
                .is_break()
            {
                return rows.fatal.map_or(Ok(()), Err);
            }
        }
    }
    let _ = rows.flush(f);
    rows.fatal.map_or(Ok(()), Err)
}

/// Counts data rows (header excluded), including unreadable ones: what `for_each_row` would
/// pass to its callback. Cheap for the streaming formats: CSV records are split without
/// building strings, JSON Lines are counted as non-blank lines without parsing them.
pub fn count_rows(
    mut input: Box<dyn ReadSeek>,
    limits: &DatasetLimits,
) -> Result<u64, DatasetError> {
    let format = sniff(&mut input)?;
    input.seek(SeekFrom::Start(0))?;
    match format {
        Format::Csv(dialect) => {
            let (mut reader, mark) = csv_reader(input, dialect, limits);
            let columns = reader.byte_headers().map_err(csv_error)?.len();
            check_columns(columns, limits, "the header row")?;
            let mut record = csv::ByteRecord::new();
            let mut n = 0u64;
            loop {
                csv_record_read(&reader, &mark);
                match reader.read_byte_record(&mut record) {
                    Ok(false) => return Ok(n),
                    // A blank line is skipped by the reader too.
                    Ok(true)
                        if record.len() == 1
                            && record[0].trim_ascii().is_empty()
                            && columns > 1 => {}
                    Ok(true) => n += 1,
                    Err(e) => return Err(csv_error(e)),
                }
            }
        }
        Format::JsonLines => {
            let mut n = 0u64;
            for_each_json_line(input, limits, |_, _| {
                n += 1;
                Ok(())
            })?;
            Ok(n)
        }
        Format::Xlsx => {
            // The guard's pass counts the rows of a one-sheet workbook: no second full read.
            if let Some(rows) = super::xlsx_guard::check(&mut input, limits)? {
                return Ok(rows.saturating_sub(1));
            }
            input.seek(SeekFrom::Start(0))?;
            count_read_rows(input, limits)
        }
        _ => count_read_rows(input, limits),
    }
}

/// Counts the rows by reading them.
fn count_read_rows(input: Box<dyn ReadSeek>, limits: &DatasetLimits) -> Result<u64, DatasetError> {
    let mut n = 0u64;
    for_each_row(input, limits, &mut |_, _| {
        n += 1;
        ControlFlow::Continue(())
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn collect(bytes: &[u8]) -> Vec<Result<Vec<(String, String)>, String>> {
        let mut out = Vec::new();
        for_each_row(
            Box::new(Cursor::new(bytes.to_vec())),
            &DatasetLimits::default(),
            &mut |i, row| {
                assert_eq!(i as usize, out.len());
                out.push(row.and_then(|r| {
                    r.with_row(|r| {
                        let mut cells = Vec::new();
                        r.for_each_cell(&mut |name, cell| {
                            let v = match cell {
                                Cell::Text(s) => s.to_string(),
                                Cell::Json(v) => v.to_string(),
                            };
                            cells.push((name.to_string(), v));
                        });
                        cells
                    })
                    .map_err(|e| e.0)
                }));
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn csv_rows_with_bad_ones() {
        let rows = collect(b"a,b\n1,2\n3\n\n5,6\n");
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0].as_ref().unwrap(),
            &[("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            rows[1].as_ref().unwrap_err(),
            "line 3: 1 fields where the header has 2"
        );
        assert!(rows[2].is_ok());
    }

    #[test]
    fn invalid_utf8_past_the_sniffed_sample_rejects_its_row_with_the_byte() {
        // Valid UTF-8 for the first 64 KiB (so the file is read as UTF-8), then one bad byte.
        let mut csv = b"a,b\n".to_vec();
        while csv.len() < 70 * 1024 {
            csv.extend_from_slice(b"1,2\n");
        }
        let good_rows = (csv.len() - 4) / 4;
        let offset = csv.len();
        csv.extend_from_slice(b"3,x\xffy\n5,6\n");
        let rows = collect(&csv);
        assert_eq!(rows.len(), good_rows + 2);
        let bad = rows[good_rows].as_ref().unwrap_err();
        assert!(
            bad.contains(&format!("field 2 of the record at byte {offset} is not valid text in the file's encoding (after its first 1 bytes")),
            "{bad}"
        );
        assert!(rows[good_rows + 1].is_ok());
        // JSON Lines likewise.
        let mut jsonl = Vec::new();
        while jsonl.len() < 70 * 1024 {
            jsonl.extend_from_slice(b"{\"a\":1}\n");
        }
        let n = jsonl.len() / 8;
        jsonl.extend_from_slice(b"{\"a\":\"x\xffy\"}\n");
        let rows = collect(&jsonl);
        assert_eq!(rows.len(), n + 1);
        assert!(rows[n].is_err(), "{:?}", rows[n]);
    }

    #[test]
    fn undecodable_bytes_in_other_encodings_reject_their_row() {
        // GBK: Chinese text for the first 64 KiB (so the file is read as GBK), then a lead byte
        // followed by a byte no GBK sequence has; encoding_rs would turn it into U+FFFD.
        let (line, _, _) = encoding_rs::GBK.encode("源地址,协议\n");
        let (row, _, _) = encoding_rs::GBK.encode("10.0.0.1,传输控制\n");
        let mut csv = line.to_vec();
        let mut good = 0;
        while csv.len() < 70 * 1024 {
            csv.extend_from_slice(&row);
            good += 1;
        }
        csv.extend_from_slice(b"10.0.0.2,\x81\x7f\n");
        csv.extend_from_slice(&row);
        let rows = collect(&csv);
        assert_eq!(rows.len(), good + 2);
        let bad = rows[good].as_ref().unwrap_err();
        assert!(
            bad.contains("field 2 of the record at byte") && bad.contains("is not valid text"),
            "{bad}"
        );
        assert_eq!(
            rows[good + 1].as_ref().unwrap()[1],
            ("协议".to_string(), "传输控制".to_string())
        );
        // UTF-16 with a lone surrogate.
        let mut utf16 = vec![0xFF, 0xFE];
        for u in "a,b\n1,2\n".encode_utf16() {
            utf16.extend(u.to_le_bytes());
        }
        utf16.extend([b'3', 0, b',', 0, 0x00, 0xD8, b'\n', 0]);
        let rows = collect(&utf16);
        assert_eq!(rows.len(), 2);
        assert!(rows[0].is_ok());
        assert!(rows[1].is_err(), "{:?}", rows[1]);
    }

    #[test]
    fn xlsx_rows_are_counted_as_they_are_read() {
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        sheet.write_string(0, 0, "src").unwrap();
        sheet.write_string(0, 2, "n").unwrap();
        for r in 1..60u32 {
            if r % 7 == 0 {
                continue; // a row with nothing in it
            }
            if r % 5 != 0 {
                sheet.write_string(r, 0, format!("10.0.0.{r}")).unwrap();
            }
            sheet.write_number(r, 2, f64::from(r)).unwrap();
        }
        let bytes = book.save_to_buffer().unwrap();
        let read = collect(&bytes).len() as u64;
        let counted = count_rows(Box::new(Cursor::new(bytes)), &DatasetLimits::default()).unwrap();
        assert_eq!(counted, read);
        assert_eq!(read, 59 - 8);
    }

    #[test]
    fn json_rows() {
        let rows = collect(b"{\"a\":1}\nnot json\n[1]\n{\"b\":\"x\"}\n");
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].as_ref().unwrap(), &[("a".into(), "1".into())]);
        assert!(
            rows[1]
                .as_ref()
                .unwrap_err()
                .starts_with("line 2: expected"),
            "{:?}",
            rows[1]
        );
        assert!(rows[2].is_err());
        let rows = collect(b"[{\"a\":1}, 2, {\"b\":null}]");
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[1].as_ref().unwrap_err(),
            "element 2 is not an object but a number"
        );
    }

    #[test]
    fn counts_and_stops() {
        assert_eq!(
            count_rows(
                Box::new(Cursor::new(b"a\n1\n2\n3\n".to_vec())),
                &DatasetLimits::default()
            )
            .unwrap(),
            3
        );
        let mut seen = 0;
        for_each_row(
            Box::new(Cursor::new(b"[{\"a\":1},{\"a\":2},{\"a\":3}]".to_vec())),
            &DatasetLimits::default(),
            &mut |_, _| {
                seen += 1;
                if seen == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .unwrap();
        assert_eq!(seen, 2);
    }
}
