//! What an XLS (BIFF) workbook declares must not drive an allocation. calamine reads the
//! workbook stream whole, reserves room for as many cells as a worksheet's DIMENSIONS record
//! declares, and lays each worksheet out as one dense area from its first to its last cell.
//! Before it opens a workbook, the stream's size, every worksheet's declared dimensions and
//! the area its cells really span are measured here, walking the records the way calamine will.

use std::io::{Read, Seek};

use super::{DatasetError, DatasetLimits};

/// BIFF record types.
const BOF: u16 = 0x0809;
const EOF: u16 = 0x000A;
const BOUND_SHEET: u16 = 0x0085;
const DIMENSIONS: u16 = 0x0200;
const MUL_RK: u16 = 0x00BD;
/// Records whose data starts with the row and column of one cell (the ones calamine keeps).
const CELLS: [u16; 7] = [0x0203, 0x0204, 0x00D6, 0x0205, 0x027E, 0x00FD, 0x0006];

/// Measures the workbook; an error names the limit, what was seen and where.
pub(super) fn check<R: Read + Seek>(input: R, limits: &DatasetLimits) -> Result<(), DatasetError> {
    let mut file = cfb::CompoundFile::open(input).map_err(|e| DatasetError::Spreadsheet {
        kind: "XLS",
        detail: format!("the file is not a readable XLS (compound) file: {e}"),
    })?;
    let Some(name) = ["/Workbook", "/Book"]
        .into_iter()
        .find(|n| file.is_stream(n))
    else {
        // calamine reports the missing stream.
        return Ok(());
    };
    let len = file.entry(name)?.len();
    if len > limits.xls_max_bytes {
        return Err(DatasetError::TooLarge(format!(
            "the workbook stream holds {len} bytes, more than {} (the limit of an XLS \
             workbook, which is read whole; --xls-max-bytes)",
            limits.xls_max_bytes
        )));
    }
    let mut stream = Vec::new();
    file.open_stream(name)?
        .take(limits.xls_max_bytes)
        .read_to_end(&mut stream)?;
    check_stream(&stream, limits)
}

/// The records of a BIFF stream from `pos` on: (type, data).
fn records(stream: &[u8], pos: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = stream.get(pos..).unwrap_or_default();
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let typ = u16::from_le_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
        let data = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        Some((typ, data))
    })
}

fn u16_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes([
        *data.get(at)?,
        *data.get(at + 1)?,
    ])))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn check_stream(stream: &[u8], limits: &DatasetLimits) -> Result<(), DatasetError> {
    // The globals substream names the worksheets and where each starts.
    let mut sheets = Vec::new();
    for (typ, data) in records(stream, 0) {
        match typ {
            EOF => break,
            BOUND_SHEET => {
                if let Some(pos) = u32_at(data, 0) {
                    sheets.push(pos as usize);
                }
            }
            _ => {}
        }
    }
    for (n, pos) in sheets.into_iter().enumerate() {
        if pos >= stream.len() {
            return Err(DatasetError::Spreadsheet {
                kind: "XLS",
                detail: format!(
                    "worksheet {} starts at byte {pos}, beyond the workbook stream ({} bytes)",
                    n + 1,
                    stream.len()
                ),
            });
        }
        check_sheet(stream, pos, n + 1, limits)?;
    }
    Ok(())
}

/// One worksheet: its declared dimensions and the area its cells span.
fn check_sheet(
    stream: &[u8],
    pos: usize,
    sheet: usize,
    limits: &DatasetLimits,
) -> Result<(), DatasetError> {
    let too_large = |what: String| {
        DatasetError::TooLarge(format!(
            "worksheet {sheet} {what}, more than {} cells (the limit of an XLS worksheet's \
             area, which is read whole; --xls-max-cells)",
            limits.xls_max_cells
        ))
    };
    let mut seen_bof = false;
    let mut depth = 0usize;
    // First and last row and column of the cells.
    let mut span: Option<(u32, u32, u32, u32)> = None;
    let mut cell = |row: u32, col: u32| {
        span = Some(match span {
            None => (row, row, col, col),
            Some((r0, r1, c0, c1)) => (r0.min(row), r1.max(row), c0.min(col), c1.max(col)),
        });
    };
    for (typ, data) in records(stream, pos) {
        if depth > 0 {
            match typ {
                BOF => depth += 1,
                EOF => depth -= 1,
                _ => {}
            }
            continue;
        }
        match typ {
            BOF if seen_bof => depth += 1,
            BOF => seen_bof = true,
            EOF => break,
            DIMENSIONS => {
                let area = declared_area(data).ok_or_else(|| DatasetError::Spreadsheet {
                    kind: "XLS",
                    detail: format!("worksheet {sheet} has a malformed DIMENSIONS record"),
                })?;
                if area > limits.xls_max_cells {
                    return Err(too_large(format!("declares an area of {area} cells")));
                }
            }
            MUL_RK => {
                let (Some(row), Some(first), Some(last)) = (
                    u16_at(data, 0),
                    u16_at(data, 2),
                    data.len().checked_sub(2).and_then(|at| u16_at(data, at)),
                ) else {
                    continue;
                };
                // calamine subtracts the first column from the last without a check.
                if last < first {
                    return Err(DatasetError::Spreadsheet {
                        kind: "XLS",
                        detail: format!(
                            "worksheet {sheet} has a malformed MULRK record (its last column {} \
                             is before its first {})",
                            last + 1,
                            first + 1
                        ),
                    });
                }
                cell(row, first);
                cell(row, last);
            }
            t if CELLS.contains(&t) => {
                if let (Some(row), Some(col)) = (u16_at(data, 0), u16_at(data, 2)) {
                    cell(row, col);
                }
            }
            _ => {}
        }
    }
    if let Some((r0, r1, c0, c1)) = span {
        let area = u64::from(r1 - r0 + 1) * u64::from(c1 - c0 + 1);
        if area > limits.xls_max_cells {
            return Err(too_large(format!(
                "has cells from row {} to row {} and column {} to column {}: an area of \
                 {area} cells",
                r0 + 1,
                r1 + 1,
                c0 + 1,
                c1 + 1
            )));
        }
    }
    Ok(())
}

/// The cells the reader reserves for a DIMENSIONS record, computed as calamine does but
/// without overflow; `None` when the record is malformed or its end is before its start
/// (which calamine would turn into an enormous reservation).
fn declared_area(r: &[u8]) -> Option<u64> {
    let (rf, rl, mut cf, cl) = match r.len() {
        10 => (u16_at(r, 0)?, u16_at(r, 2)?, u16_at(r, 4)?, u16_at(r, 6)?),
        14 | 16 => (u32_at(r, 0)?, u32_at(r, 4)?, u16_at(r, 8)?, u16_at(r, 10)?),
        _ => return None,
    };
    if 0xFF < cf || cl < cf {
        cf = 0;
    }
    if rl >= 1 && cl >= 1 {
        let rows = u64::from(rl - 1).checked_sub(u64::from(rf))? + 1;
        let cols = u64::from(cl - 1).checked_sub(u64::from(cf))? + 1;
        Some(rows * cols)
    } else {
        Some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(typ: u16, data: &[u8]) -> Vec<u8> {
        let mut r = typ.to_le_bytes().to_vec();
        r.extend((data.len() as u16).to_le_bytes());
        r.extend(data);
        r
    }

    /// A globals substream naming one worksheet, then that worksheet's records.
    fn workbook(sheet: &[Vec<u8>]) -> Vec<u8> {
        let bof = record(BOF, &[0u8; 16]);
        let globals_len = bof.len() + 4 + 8 + 4;
        let mut s = bof.clone();
        let mut bound = (globals_len as u32).to_le_bytes().to_vec();
        bound.extend([0, 0, 1, 0]);
        s.extend(record(BOUND_SHEET, &bound));
        s.extend(record(EOF, &[]));
        assert_eq!(s.len(), globals_len);
        s.extend(bof);
        for r in sheet {
            s.extend(r);
        }
        s.extend(record(EOF, &[]));
        s
    }

    fn dims(rf: u32, rl: u32, cf: u16, cl: u16) -> Vec<u8> {
        let mut d = rf.to_le_bytes().to_vec();
        d.extend(rl.to_le_bytes());
        d.extend(cf.to_le_bytes());
        d.extend(cl.to_le_bytes());
        d.extend([0, 0]);
        record(DIMENSIONS, &d)
    }

    fn number(row: u16, col: u16) -> Vec<u8> {
        let mut d = row.to_le_bytes().to_vec();
        d.extend(col.to_le_bytes());
        d.extend([0u8; 10]);
        record(0x0203, &d)
    }

    #[test]
    fn declared_and_real_areas_are_bounded() {
        let limits = DatasetLimits::default();
        let fine = workbook(&[dims(0, 4, 0, 6), number(0, 0), number(3, 5)]);
        check_stream(&fine, &limits).unwrap();
        let declared = workbook(&[dims(0, 0xFFFF_FFF0, 0, 0xFF), number(0, 0)]);
        let err = check_stream(&declared, &limits).unwrap_err().to_string();
        assert!(
            err.contains("worksheet 1 declares an area of 1095216656400 cells, more than 4194304"),
            "{err}"
        );
        // An end before the start: calamine would reserve an enormous area.
        let inverted = workbook(&[dims(10, 2, 0, 1)]);
        let err = check_stream(&inverted, &limits).unwrap_err().to_string();
        assert!(err.contains("malformed DIMENSIONS"), "{err}");
        let spread = workbook(&[number(0, 0), number(65_535, 255)]);
        let err = check_stream(&spread, &limits).unwrap_err().to_string();
        assert!(
            err.contains("has cells from row 1 to row 65536 and column 1 to column 256"),
            "{err}"
        );
        // The same cells within a smaller limit, and a nested chart's records ignored.
        let nested = workbook(&[
            number(0, 0),
            record(BOF, &[0u8; 16]),
            number(65_535, 255),
            record(EOF, &[]),
        ]);
        check_stream(&nested, &limits).unwrap();
        // A MULRK whose last column is before its first (calamine overflowed on it).
        let mut mulrk = 0u16.to_le_bytes().to_vec();
        mulrk.extend(5u16.to_le_bytes());
        mulrk.extend([0u8; 6]);
        mulrk.extend(2u16.to_le_bytes());
        let err = check_stream(&workbook(&[record(MUL_RK, &mulrk)]), &limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("malformed MULRK"), "{err}");
    }
}
