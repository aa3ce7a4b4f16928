//! What a dataset file may hold: the limits that keep a reader's memory bounded whatever the
//! file declares, and the reader wrappers that enforce the per-record ones while streaming.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The limits of one read of a dataset. Every limit is a flag of `br-cti serve`
/// (`docs/limits.md`); an error over one names it, the value seen and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatasetLimits {
    /// Bytes of one record: a CSV line or record (quoted fields may span lines), a JSON Lines
    /// line, an element of a JSON array. A reader holds one record in memory.
    pub max_record_bytes: u64,
    /// Columns of a dataset: CSV header fields, distinct keys of JSON objects. Worksheets are
    /// bounded by Excel's own 16,384.
    pub max_columns: u64,
    /// Inflated bytes of an XLSX workbook's shared strings (held in memory while it is read).
    pub xlsx_max_shared_strings_bytes: u64,
    /// Inflated bytes of all worksheets and the shared strings of an XLSX workbook together.
    pub xlsx_max_inflated_bytes: u64,
    /// Bytes of one spreadsheet cell.
    pub max_cell_bytes: u64,
    /// Bytes of an XLS workbook stream (the format is read whole, into memory).
    pub xls_max_bytes: u64,
    /// Cells of an XLS worksheet's area (rows × columns between its first and last cell, and
    /// what its DIMENSIONS record declares): the reader allocates the whole area.
    pub xls_max_cells: u64,
}

impl Default for DatasetLimits {
    fn default() -> Self {
        DatasetLimits {
            max_record_bytes: 16 << 20,
            max_columns: 16_384,
            xlsx_max_shared_strings_bytes: 128 << 20,
            xlsx_max_inflated_bytes: 4 << 30,
            max_cell_bytes: 1 << 20,
            xls_max_bytes: 128 << 20,
            xls_max_cells: 4 << 20,
        }
    }
}

/// Fails the read when a line is longer than the record limit, naming the line and the byte
/// where it started.
pub(crate) struct LineGuard<R> {
    inner: R,
    max: u64,
    line: u64,
    line_start: u64,
    offset: u64,
}

impl<R: Read> LineGuard<R> {
    pub(crate) fn new(inner: R, max: u64) -> Self {
        Self {
            inner,
            max,
            line: 1,
            line_start: 0,
            offset: 0,
        }
    }
}

impl<R: Read> Read for LineGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let max = self.max;
        let too_long = |line: u64, start: u64| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "line {line} (from byte {start}) is longer than {max} bytes, the limit of \
                     one record (--max-record-bytes)"
                ),
            )
        };
        for i in memchr::memchr_iter(b'\n', &buf[..n]) {
            let end = self.offset + i as u64;
            if end - self.line_start > max {
                return Err(too_long(self.line, self.line_start));
            }
            self.line += 1;
            self.line_start = end + 1;
        }
        self.offset += n as u64;
        if self.offset - self.line_start > max {
            return Err(too_long(self.line, self.line_start));
        }
        Ok(n)
    }
}

/// Where the record being read started, shared between a parser (which moves it at each
/// record's end) and the [`RecordGuard`] under it (which counts the bytes passed since).
#[derive(Clone, Default)]
pub(crate) struct RecordMark(Arc<MarkState>);

#[derive(Default)]
struct MarkState {
    /// Bytes the guard has handed to the parser.
    passed: AtomicU64,
    /// Where the current record started.
    start: AtomicU64,
}

impl RecordMark {
    /// The next record starts at `offset` (a position the parser reports, e.g. the CSV
    /// reader's).
    pub(crate) fn starts_at(&self, offset: u64) {
        self.0.start.store(offset, Ordering::Relaxed);
    }

    /// The next record starts after the bytes passed so far (a parser that reports no
    /// position; its read-ahead buffer is then counted in the next record, which the limit's
    /// slack absorbs).
    pub(crate) fn starts_here(&self) {
        let passed = self.0.passed.load(Ordering::Relaxed);
        self.0.start.store(passed, Ordering::Relaxed);
    }
}

/// Fails the read when the parser above has not finished a record within the limit (plus its
/// read-ahead), whatever the record's lines: a CSV field quoted over many lines, one element of
/// a JSON array.
pub(crate) struct RecordGuard<R> {
    inner: R,
    max: u64,
    slack: u64,
    what: &'static str,
    mark: RecordMark,
}

impl<R: Read> RecordGuard<R> {
    /// `read_ahead`: the parser's buffer, which is passed before a record ends. Each read is
    /// cut to at most a quarter of the limit (and the read-ahead), so that a record is caught
    /// within 1.25 times the limit whatever the buffer above.
    pub(crate) fn new(
        inner: R,
        max: u64,
        read_ahead: u64,
        what: &'static str,
    ) -> (Self, RecordMark) {
        let slack = read_ahead.min((max / 4).max(4096)).max(1);
        let mark = RecordMark::default();
        (
            Self {
                inner,
                max,
                slack,
                what,
                mark: mark.clone(),
            },
            mark,
        )
    }
}

impl<R: Read> Read for RecordGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let cap = buf.len().min(self.slack as usize);
        let n = self.inner.read(&mut buf[..cap])?;
        let state = &self.mark.0;
        let passed = state.passed.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let start = state.start.load(Ordering::Relaxed);
        if passed.saturating_sub(start) > self.max.saturating_add(self.slack) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} from byte {start} is longer than {} bytes, the limit of one record \
                     (--max-record-bytes)",
                    self.what, self.max
                ),
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_bounded_across_lines_and_the_mark_moves() {
        let data = [b'x'; 100];
        let (mut guard, mark) = RecordGuard::new(&data[..], 30, 20, "the record");
        let mut buf = [0u8; 20];
        assert_eq!(guard.read(&mut buf).unwrap(), 20);
        mark.starts_at(15);
        assert_eq!(guard.read(&mut buf).unwrap(), 20); // 25 bytes since 15
        mark.starts_here(); // 40
        assert_eq!(guard.read(&mut buf).unwrap(), 20); // 20 since 40
        let err = guard
            .read(&mut buf)
            .and_then(|_| guard.read(&mut buf))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("the record from byte 40 is longer than 30 bytes"),
            "{err}"
        );
    }
}
